"""Which workflow carries each kind of operation. Each area's module registers its kinds when imported; the
engine imports every module of this package before launching, so adding a kind touches its own module only."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

Workflow = Callable[[str], Awaitable[str]]

_workflows: dict[str, Workflow] = {}


def register(kind: str, workflow: Workflow) -> None:
    if kind in _workflows and _workflows[kind] is not workflow:
        raise RuntimeError(f"two workflows for the operation kind {kind!r}")
    _workflows[kind] = workflow


def workflow_for(kind: str) -> Workflow:
    try:
        return _workflows[kind]
    except KeyError:
        known = ", ".join(sorted(_workflows))
        raise LookupError(f"no workflow carries operations of kind {kind!r}; known: {known}") from None


def kinds() -> list[str]:
    return sorted(_workflows)

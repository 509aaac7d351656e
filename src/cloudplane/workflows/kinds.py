"""Which workflow carries each kind of operation. Each area's module registers its kinds when imported; the
engine imports every module of this package before it runs anything, so adding a kind touches its own module only
(and its line of events in domain/events.py)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cloudplane.workflows.steps import Changes, Job

Body = Callable[["Job"], Awaitable[None]]
# What a failed run changes besides ending its operation (cleanup included), given the failure's message.
OnFailure = Callable[["Job", str], Awaitable["Changes"]]


@dataclass(frozen=True)
class Workflow:
    body: Body
    on_failure: OnFailure


_workflows: dict[str, Workflow] = {}


def register(kind: str, body: Body, on_failure: OnFailure) -> None:
    workflow = Workflow(body, on_failure)
    if kind in _workflows and _workflows[kind] != workflow:
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

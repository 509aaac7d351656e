"""Owns the DBOS runtime: configure it for a Core, launch it (recovering what a crash interrupted), stop it."""

from __future__ import annotations

import logging

from dbos import DBOS, SetWorkflowID

from cloudplane import __version__
from cloudplane.core import Core
from cloudplane.db.engine import workflow_engine

log = logging.getLogger(__name__)
_core: Core | None = None


def current_core() -> Core:
    if _core is None:
        raise RuntimeError("the workflow engine is not configured; call workflows.engine.configure(core)")
    return _core


def configure(core: Core) -> None:
    global _core
    _core = core
    from cloudplane.workflows import operations  # noqa: F401  registers the workflows before launch

    url = core.settings.workflow_database_url
    DBOS(
        config={
            "name": "cloudplane",
            "system_database_url": url,
            "system_database_engine": workflow_engine(url),
            # A fixed version lets a restarted (or upgraded) process recover workflows a crash interrupted.
            "application_version": __version__,
            "log_level": core.settings.log_level,
        }
    )


def launch() -> None:
    DBOS.launch()
    resume_unfinished()


def resume_unfinished() -> None:
    """Start the workflow of every unfinished operation. DBOS recovers workflows it had begun; this also covers
    an operation committed just before a crash, whose workflow never started. Starting twice is a no-op."""
    from cloudplane.services.operations import unfinished_operation_ids

    for op_id in unfinished_operation_ids(current_core().db):
        start_operation(op_id)


def start_operation(op_id: str) -> None:
    from cloudplane.workflows.operations import run_operation

    with SetWorkflowID(op_id):
        DBOS.start_workflow(run_operation, op_id)


def shutdown() -> None:
    global _core
    DBOS.destroy(destroy_registry=False)
    _core = None

"""Owns the DBOS runtime: configure it for a Core, launch it (recovering what a crash interrupted, starting the
dispatcher), stop it."""

from __future__ import annotations

import importlib
import logging
import pkgutil
import socket

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


def executor_id(core: Core) -> str:
    """This process's DBOS executor id: as configured, else this host and port, which a restarted process has
    again, so it recovers its own unfinished work at once."""
    return core.settings.executor_id or f"{socket.gethostname()}:{core.settings.port}"


def _register_workflows() -> None:
    """Import every module of the workflows package: each registers the workflows of its area."""
    import cloudplane.workflows as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def configure(core: Core) -> None:
    global _core
    _core = core
    _register_workflows()
    url = core.settings.workflow_database_url
    DBOS(
        config={
            "name": "cloudplane",
            "system_database_url": url,
            "system_database_engine": workflow_engine(url),
            # A fixed version lets a restarted (or upgraded) process recover workflows a crash interrupted.
            "application_version": __version__,
            "executor_id": executor_id(core),
            "log_level": core.settings.log_level,
        }
    )


def launch() -> None:
    from cloudplane.workflows import dispatcher

    DBOS.launch()
    dispatcher.start(current_core())


def start_operation(op_id: str, kind: str) -> None:
    """Start the workflow of `kind` for the operation; starting one already started is a no-op."""
    from cloudplane.workflows.kinds import workflow_for

    with SetWorkflowID(op_id):
        DBOS.start_workflow(workflow_for(kind), op_id)


def shutdown() -> None:
    global _core
    from cloudplane.workflows import dispatcher

    dispatcher.stop()
    DBOS.destroy(destroy_registry=False)
    _core = None

"""The workflow engine: runs each operation's workflow in this process, durably.

The Operation row is the workflow's durable state. Running one starts with a claim, one conditional UPDATE that
makes it `running` under this process's executor id; every later write of the run is fenced by that id
(workflows/steps.py), so two processes never both change what one operation does. A workflow records where it got
to (`stage`, the server's provider ref) in the same transaction as the change itself, and every provider call is
idempotent (providers/base.py), so a run that stops anywhere (a crash, a kill, a takeover) is finished by running
it again: by this process when it restarts under the same executor id, by the dispatcher's sweep when the hand-off
never happened, or by another process when this one's heartbeat stops (workflows/dispatcher.py).

Workflows run as tasks of one event loop in a thread of its own, so neither their database calls nor their
provider calls ever hold up the API's event loop; at most `operation_concurrency` run at once, the rest stay
pending for the sweep.

Why not a general durable-execution library (DBOS, which this replaced): it keeps a second record of every step
beside ours, and on a two-core machine its bookkeeping capped a two-step workflow near 150 a second on SQLite
(bench/README.md), below what a burst of creates needs. Our operations are short runs of idempotent calls whose
results the database records anyway.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
import threading
from collections.abc import Iterable

from cloudplane.core import Core

log = logging.getLogger(__name__)
_engine: Engine | None = None


def executor_id(core: Core) -> str:
    """This process's executor id: as configured, else this host and port, which a restarted process has again, so
    it takes up its own unfinished work at once."""
    return core.settings.executor_id or f"{socket.gethostname()}:{core.settings.port}"


class Engine:
    """One process's runner of operations."""

    def __init__(self, core: Core) -> None:
        self.core = core
        self.executor_id = executor_id(core)
        self.concurrency = core.settings.operation_concurrency
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._ready = threading.Event()
        # Touched only on the engine's loop: the operations running here, so one never runs twice at once.
        self._running: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        self._thread = threading.Thread(target=self._serve, name="cloudplane-workflows", daemon=True)
        self._thread.start()
        self._ready.wait()
        log.info(
            "workflow engine running as executor %s, up to %d operations at once", self.executor_id, self.concurrency
        )

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop = loop
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop running: unfinished operations stay as they are, for this executor's next life or a takeover."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None or not thread.is_alive():
            return

        async def cancel_all() -> None:
            tasks = list(self._running.values())
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            loop.stop()

        asyncio.run_coroutine_threadsafe(cancel_all(), loop)
        thread.join(timeout)

    def submit(self, op_ids: Iterable[str]) -> None:
        """Run these operations here, each unless it runs already (thread-safe, returns at once). An operation
        another process holds, or one that has finished, is left alone by the claim."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the workflow engine is not running")
        loop.call_soon_threadsafe(self._spawn, tuple(op_ids))

    def _spawn(self, op_ids: tuple[str, ...]) -> None:
        from cloudplane.workflows import steps

        assert self._loop is not None
        for op_id in op_ids:
            if op_id in self._running:
                continue
            if len(self._running) >= self.concurrency:
                # Left as it is (pending, or running under this executor); the next sweep offers it again.
                log.info("%d operations running: operation %s waits for the next sweep", len(self._running), op_id)
                return
            task = self._loop.create_task(steps.execute(self.core, self.executor_id, op_id))
            self._running[op_id] = task
            task.add_done_callback(functools.partial(self._done, op_id))

    def _done(self, op_id: str, task: asyncio.Task[None]) -> None:
        self._running.pop(op_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("operation %s: its run failed unexpectedly", op_id, exc_info=task.exception())

    def running(self) -> int:
        return len(self._running)

    def runs(self, op_id: str) -> bool:
        """Whether this process is running that operation now."""
        return op_id in self._running


def current() -> Engine | None:
    return _engine


def current_core() -> Core:
    if _engine is None:
        raise RuntimeError("the workflow engine is not configured; call workflows.engine.configure(core)")
    return _engine.core


def _register_workflows() -> None:
    """Import every module of the workflows package: each registers the workflows of its area."""
    import importlib
    import pkgutil

    import cloudplane.workflows as package

    for module in pkgutil.iter_modules(package.__path__):
        importlib.import_module(f"{package.__name__}.{module.name}")


def configure(core: Core) -> None:
    global _engine
    _register_workflows()
    _engine = Engine(core)


def launch() -> None:
    """Start running operations, then the dispatcher (which first takes up what this executor left unfinished)."""
    from cloudplane.workflows import dispatcher

    engine = _engine
    if engine is None:
        raise RuntimeError("the workflow engine is not configured; call workflows.engine.configure(core)")
    engine.start()
    dispatcher.start(engine)


def start_operation(op_id: str, kind: str) -> None:
    """Run the committed operation here now (its `kind` picks its workflow when it runs). Raises when the engine
    does not run; the dispatcher's sweep then starts it."""
    from cloudplane.workflows.kinds import workflow_for

    workflow_for(kind)  # an unknown kind fails here, in the request that made it, not later in the engine
    engine = _engine
    if engine is None:
        raise RuntimeError("the workflow engine is not configured")
    engine.submit((op_id,))


def shutdown() -> None:
    global _engine
    from cloudplane.workflows import dispatcher

    dispatcher.stop()
    if _engine is not None:
        _engine.stop()
    _engine = None

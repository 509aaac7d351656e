"""The workflow engine: runs each operation's workflow in this process, durably.

The Operation row is the workflow's durable state. Running one starts with a claim, one conditional UPDATE that
makes it `running` under this process's executor id; every later write of the run is fenced by that id
(workflows/steps.py), so two processes never both change what one operation does. A workflow records where it got
to (`stage`, the server's provider ref) in the same transaction as the change itself, and every provider call is
idempotent (providers/base.py), so a run that stops anywhere (a crash, a kill, a takeover) is finished by running
it again: by this process when it restarts under the same executor id, by the dispatcher's sweep when the hand-off
never happened, or by another process when this one's heartbeat stops (workflows/dispatcher.py).

Workflows run as tasks of the serving process's event loop, beside its requests: on SQLite their database calls
take microseconds and run inline, as the requests' do, and no work is handed between threads (with CPython's GIL,
every hand-off between two busy threads can wait a whole switch interval, 5 ms); their provider calls are
asynchronous, and blocking drivers (LXC, libvirt) use threads of their own. At most `operation_concurrency` run at
once; the rest stay pending for the sweep.

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
from collections.abc import Awaitable, Callable, Iterable

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
        self._loop_thread: int | None = None
        # Touched only on the engine's loop: the operations running here, so one never runs twice at once.
        self._running: dict[str, asyncio.Task[None]] = {}
        self._side_tasks: set[asyncio.Task[None]] = set()

    def start(self, loop: asyncio.AbstractEventLoop | None = None) -> None:
        """Run on `loop` (the API's own: a serving process), or on a loop in a thread of its own (tests, tools)."""
        if loop is not None:
            self._loop, self._loop_thread = loop, threading.get_ident()
        else:
            self._thread = threading.Thread(target=self._serve, name="cloudplane-workflows", daemon=True)
            self._thread.start()
            self._ready.wait()
        log.info(
            "workflow engine running as executor %s, up to %d operations at once", self.executor_id, self.concurrency
        )

    def _serve(self) -> None:
        loop = asyncio.new_event_loop()
        asyncio.set_event_loop(loop)
        self._loop, self._loop_thread = loop, threading.get_ident()
        self._ready.set()
        try:
            loop.run_forever()
        finally:
            loop.close()

    async def _cancel_all(self) -> None:
        tasks = [*self._running.values(), *self._side_tasks]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def stop(self, timeout: float = 10.0) -> None:
        """Stop running (from another thread than the engine's loop): unfinished operations stay as they are, for
        this executor's next life or a takeover."""
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        if self._thread is None:  # on a loop that is not ours: cancel, and let its owner close it
            asyncio.run_coroutine_threadsafe(self._cancel_all(), loop).result(timeout)
            return
        if self._thread.is_alive():
            future = asyncio.run_coroutine_threadsafe(self._cancel_all(), loop)
            future.add_done_callback(lambda _: loop.call_soon_threadsafe(loop.stop))
            self._thread.join(timeout)

    async def aclose(self) -> None:
        """Stop running, from the engine's own loop (a serving process's shutdown)."""
        await self._cancel_all()

    def has_room(self) -> bool:
        """Whether an operation accepted now would start at once (thread-safe; a hint, not a reservation)."""
        return self._loop is not None and len(self._running) < self.concurrency

    def submit(self, op_ids: Iterable[str], *, held: bool = False) -> None:
        """Run these operations here, each unless it runs already (thread-safe, returns at once). An operation
        another process holds, or one that has finished, is left alone by the claim. `held`: the request that made
        them recorded them as this executor's already, so no claim is needed."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the workflow engine is not running")
        if threading.get_ident() == self._loop_thread:
            loop.call_soon(self._spawn, tuple(op_ids), held)  # a request served on the engine's own loop
        else:
            loop.call_soon_threadsafe(self._spawn, tuple(op_ids), held)

    def _spawn(self, op_ids: tuple[str, ...], held: bool) -> None:
        from cloudplane.workflows import steps

        assert self._loop is not None
        for op_id in op_ids:
            if op_id in self._running:
                continue
            if len(self._running) >= self.concurrency:
                # Left as it is (pending, or running under this executor); the next sweep offers it again.
                log.info("%d operations running: operation %s waits for the next sweep", len(self._running), op_id)
                return
            task = self._loop.create_task(steps.execute(self.core, self.executor_id, op_id, held=held))
            self._running[op_id] = task
            task.add_done_callback(functools.partial(self._done, op_id))

    def _done(self, op_id: str, task: asyncio.Task[None]) -> None:
        self._running.pop(op_id, None)
        if not task.cancelled() and task.exception() is not None:
            log.error("operation %s: its run failed unexpectedly", op_id, exc_info=task.exception())

    def spawn(self, work: Callable[[], Awaitable[None]], name: str) -> None:
        """Run `work` as a task of the engine's loop (thread-safe, returns at once), beside the operations; its
        failure is logged. Not durable: for work a crash may lose (workflows/schedules.py `Ran.then`)."""
        loop = self._loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the workflow engine is not running")

        async def logged() -> None:
            try:
                await work()
            except Exception:
                log.exception("%s failed", name)

        def start() -> None:
            task = loop.create_task(logged(), name=name)
            self._side_tasks.add(task)  # a reference, so the task is not collected while it runs
            task.add_done_callback(self._side_tasks.discard)

        loop.call_soon_threadsafe(start)

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
    """Start running operations, then the dispatcher (which first takes up what this executor left unfinished).
    Called from a running event loop (a serving process), the engine runs its workflows on that loop: beside the
    requests, with no thread to hand work to and from; else on a loop in a thread of its own."""
    from cloudplane.workflows import dispatcher

    engine = _engine
    if engine is None:
        raise RuntimeError("the workflow engine is not configured; call workflows.engine.configure(core)")
    try:
        loop: asyncio.AbstractEventLoop | None = asyncio.get_running_loop()
    except RuntimeError:
        loop = None
    engine.start(loop)
    dispatcher.start(engine)


def holder() -> str | None:
    """The executor id a request may record a new operation under, so that this process runs it at once without
    claiming it: this process's, when its engine runs and has room. None: record it pending, for any process."""
    engine = _engine
    return engine.executor_id if engine is not None and engine.has_room() else None


def start_operation(op_id: str, kind: str, *, held: bool = False) -> None:
    """Run the committed operation here now (its `kind` picks its workflow when it runs); `held`: it was recorded
    as this executor's. Raises when the engine does not run; the dispatcher's sweep then starts it."""
    from cloudplane.workflows.kinds import workflow_for

    workflow_for(kind)  # an unknown kind fails here, in the request that made it, not later in the engine
    engine = _engine
    if engine is None:
        raise RuntimeError("the workflow engine is not configured")
    engine.submit((op_id,), held=held)


def shutdown() -> None:
    """Stop the dispatcher and the engine (not from the engine's own loop: see `ashutdown`)."""
    global _engine
    from cloudplane.workflows import dispatcher

    dispatcher.stop()
    if _engine is not None:
        _engine.stop()
    _engine = None


async def ashutdown() -> None:
    """`shutdown`, from the loop the engine runs on."""
    global _engine
    from cloudplane.workflows import dispatcher

    await asyncio.to_thread(dispatcher.stop)
    if _engine is not None:
        await _engine.aclose()
    _engine = None

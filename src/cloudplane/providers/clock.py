"""The clock a simulated provider keeps its time by: the system's by default, or one a test moves by hand.

`now()` is wall-clock UTC, not a monotonic reading, because the simulators store their deadlines (a machine's
`ready_at`) in the database, and a deadline must still mean the same after a restart or in another process.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
from datetime import UTC, datetime, timedelta
from typing import Protocol


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...

    async def sleep(self, seconds: float) -> None:
        """Return once `seconds` have passed on this clock."""
        ...


class SystemClock:
    """Real time: `datetime.now(UTC)` and `asyncio.sleep`."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


SYSTEM_CLOCK = SystemClock()


class ManualClock:
    """Time that moves only when told: `advance(seconds)` moves it on and wakes every sleeper whose time has
    come, in the order they would wake. With `autoadvance`, a sleep moves the clock itself and returns at once
    (for code under test that sleeps while nobody is there to advance the clock)."""

    def __init__(self, start: datetime | None = None, *, autoadvance: bool = False) -> None:
        self._now = start or datetime.now(UTC)
        self._lock = threading.Lock()  # autoadvancing sleeps may come from several threads' loops at once
        self.autoadvance = autoadvance
        self._order = itertools.count()
        self._sleepers: list[tuple[datetime, int, asyncio.Future[None]]] = []

    def now(self) -> datetime:
        return self._now

    @property
    def sleepers(self) -> int:
        """How many sleeps are waiting for time to move on."""
        return sum(not future.done() for _, _, future in self._sleepers)

    async def until_sleeping(self, count: int = 1, *, turns: int = 1000) -> None:
        """Let the event loop run until `count` sleeps wait on this clock: a test's way to know that the code it
        started has got as far as waiting, before it moves time on."""
        for _ in range(turns):
            if self.sleepers >= count:
                return
            await asyncio.sleep(0)
        raise TimeoutError(f"{self.sleepers} of {count} sleeps waiting after {turns} turns of the loop")

    async def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            await asyncio.sleep(0)
            return
        if self.autoadvance:
            self.advance(seconds)
            await asyncio.sleep(0)
            return
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._sleepers, (self._now + timedelta(seconds=seconds), next(self._order), future))
        await future

    def advance(self, seconds: float) -> None:
        """Move time on by `seconds` and wake the sleepers due by then; they run at the loop's next turn."""
        if seconds < 0:
            raise ValueError("a clock does not go back")
        with self._lock:
            self._now += timedelta(seconds=seconds)
        while self._sleepers and self._sleepers[0][0] <= self._now:
            _, _, future = heapq.heappop(self._sleepers)
            if not future.done():  # a cancelled sleep is simply dropped
                future.set_result(None)

"""How late the serving process's event loop runs what is due: a task sleeps a short period, over and over, and
records how much later than asked it woke. Anything that blocks the loop (a synchronous query, a long computation)
delays every request by as much, and shows here, in /metrics, whatever caused it."""

from __future__ import annotations

import asyncio

from prometheus_client import CollectorRegistry, Gauge, Histogram

from cloudplane.observability import METRICS

# A stall is seen whole from its start to its end, less at most one period (it may begin just after a wake-up).
PERIOD_S = 0.025


class LoopLag:
    """The lags one process's loop has shown: each wake-up's, and the longest since the process started."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.lags = Histogram(
            "cloudplane_event_loop_lag_seconds",
            f"How much later than due the event loop woke a task sleeping {PERIOD_S * 1000:g} ms at a time.",
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, float("inf")),
            registry=registry,
        )
        self.longest_gauge = Gauge(
            "cloudplane_event_loop_lag_max_seconds",
            "The longest the event loop has been late since the process started: its worst stall.",
            registry=registry,
        )
        self.longest = 0.0

    def record(self, lag_s: float) -> None:
        self.lags.observe(lag_s)
        if lag_s > self.longest:
            self.longest = lag_s
            self.longest_gauge.set(lag_s)


LOOP_LAG = LoopLag(METRICS.registry)


async def watch_loop(period_s: float = PERIOD_S, lag: LoopLag = LOOP_LAG) -> None:
    """Measure the running loop's lag every `period_s` seconds until cancelled."""
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + period_s
        await asyncio.sleep(period_s)
        lag.record(max(0.0, loop.time() - due))


def start_loop_watch() -> asyncio.Task[None]:
    """Watch this process's event loop from now on (the serving process starts it with the reconciler)."""
    return asyncio.create_task(watch_loop(), name="cloudplane-loop-watch")

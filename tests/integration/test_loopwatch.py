"""The event-loop lag monitor: a stall of the serving loop shows in /metrics, whatever caused it."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from fastapi import routing
from prometheus_client import CollectorRegistry

from cloudplane.app import build_routes, create_app
from cloudplane.loopwatch import LoopLag, watch_loop


async def test_a_blocked_loop_is_seen_as_a_stall_at_least_as_long_less_one_period() -> None:
    registry = CollectorRegistry()
    lag = LoopLag(registry)
    period = 0.01
    watcher = asyncio.create_task(watch_loop(period, lag))
    try:
        await asyncio.sleep(period * 5)  # the watcher is asleep now, due to wake within a period
        time.sleep(0.2)  # what a synchronous query on the loop does to everything else
        await asyncio.sleep(period * 5)
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)

    def value(name: str, **labels: str) -> float:
        return registry.get_sample_value(name, labels) or 0.0

    # It cannot have woken before the block ended, and was due at most a period after the block began.
    assert value("cloudplane_event_loop_lag_max_seconds") >= 0.2 - period
    # Each wake-up is in the histogram; the stall in a bucket above 100 ms.
    assert value("cloudplane_event_loop_lag_seconds_count") >= 3
    assert (
        value("cloudplane_event_loop_lag_seconds_count") - value("cloudplane_event_loop_lag_seconds_bucket", le="0.1")
        >= 1
    )


async def test_the_serving_process_lag_is_exposed_in_metrics(client) -> None:
    exposed = (await client.get("/metrics")).text
    assert "# TYPE cloudplane_event_loop_lag_max_seconds gauge" in exposed
    assert "# TYPE cloudplane_event_loop_lag_seconds histogram" in exposed


async def test_routes_are_built_before_serving_not_on_the_loop_by_the_first_requests(core, monkeypatch) -> None:
    """FastAPI builds a router's routes (dependencies, schemas) when the first request reaches it: a stall of the
    loop that every request arriving then waits out. The serving process builds them all before it serves."""
    app = create_app(core)
    build_routes(app)
    built: list[str] = []
    build = routing._EffectiveRouteContext.from_api_route

    def counted(cls: type, **kwargs: Any) -> Any:
        built.append(kwargs["original_route"].path)
        return build(**kwargs)

    monkeypatch.setattr(routing._EffectiveRouteContext, "from_api_route", classmethod(counted))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        assert (await c.get("/health")).status_code == 200
        assert (await c.get("/api/servers")).status_code == 401  # another router: no key
        assert (await c.get("/api/v1/vps")).status_code == 401
    assert built == []

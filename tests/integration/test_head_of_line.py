"""No head-of-line blocking: a slow read does not hold up the requests that arrive behind it."""

from __future__ import annotations

import asyncio
from typing import Any

from sqlalchemy import text

from cloudplane.services import servers

# Counts to ten million in SQLite: seconds of work, however fast the machine, against a getServer's milliseconds.
SLOW_QUERY = text(
    "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 10000000) SELECT count(*) FROM n"
)


async def test_a_slow_list_does_not_delay_a_get_behind_it(client, tenant, core, monkeypatch, create_running_server):
    server = await create_running_server(tenant)
    order: list[str] = []
    slow_started = asyncio.Event()
    loop = asyncio.get_running_loop()
    real_list = servers.list_servers

    def slow_list(core_: Any, *args: Any, **kwargs: Any) -> Any:
        loop.call_soon_threadsafe(slow_started.set)  # called on the event loop or, on PostgreSQL, a thread
        with core_.db.connect() as conn:
            conn.execute(SLOW_QUERY)
        order.append("slow read done")
        return real_list(core_, *args, **kwargs)

    monkeypatch.setattr(servers, "list_servers", slow_list)

    async def fast_get() -> None:
        await slow_started.wait()
        reply = await client.get(f"/api/servers/{server['id']}", headers=tenant.headers)
        assert reply.status_code == 200, reply.text
        order.append("fast get answered")

    slow = asyncio.create_task(client.get("/api/v1/vps", headers=tenant.headers))
    await asyncio.gather(fast_get(), slow)
    assert slow.result().status_code == 200, slow.result().text
    # Ordering only: the get, sent while the slow read ran, was answered before that read ended.
    assert order == ["fast get answered", "slow read done"]


async def test_a_read_moved_off_the_loop_still_answers_with_its_errors(client, tenant, core, monkeypatch) -> None:
    from cloudplane.observability import METRICS

    real_get = servers.get_server

    def slow_get(core_: Any, *args: Any, **kwargs: Any) -> Any:
        with core_.db.connect() as conn:
            conn.execute(SLOW_QUERY)
        return real_get(core_, *args, **kwargs)

    monkeypatch.setattr(servers, "get_server", slow_get)
    moved = METRICS.reads_moved_off_loop._value.get()
    reply = await client.get("/api/servers/999999999", headers=tenant.headers)
    # Run again on a thread, the read is the same call: a missing server is still the face's 404.
    assert reply.status_code == 404, reply.text
    assert reply.json()["code"] == "NOT_FOUND"
    if core.db.is_sqlite:
        assert METRICS.reads_moved_off_loop._value.get() == moved + 1


async def test_a_read_that_ran_past_its_budget_goes_straight_to_a_thread_next_time(client, tenant, core, monkeypatch):
    from cloudplane.observability import METRICS

    real_get = servers.get_server
    calls: list[str] = []

    def slow_get(core_: Any, *args: Any, **kwargs: Any) -> Any:
        calls.append("called")
        with core_.db.connect() as conn:
            conn.execute(SLOW_QUERY)
        return real_get(core_, *args, **kwargs)

    monkeypatch.setattr(servers, "get_server", slow_get)
    moved = METRICS.reads_moved_off_loop._value.get()
    for _ in range(2):
        assert (await client.get("/api/servers/999999999", headers=tenant.headers)).status_code == 404
    if core.db.is_sqlite:
        # Interrupted once on the loop, then run on a thread twice: the budget is not spent again.
        assert (len(calls), METRICS.reads_moved_off_loop._value.get()) == (3, moved + 1)
    else:
        assert len(calls) == 2

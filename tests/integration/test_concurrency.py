"""The state machine under concurrency: of twenty simultaneous actions on one server exactly one wins."""

from __future__ import annotations

import asyncio
import dataclasses
from collections import Counter

from tests.conftest import eventually


async def test_twenty_concurrent_actions_one_accepted_nineteen_409(client, tenant, core, create_running_server) -> None:
    server = await create_running_server(tenant)
    url = f"/api/servers/{server['id']}"
    actions = ["stop", "reboot"] * 10
    # Slow provider calls keep the winner's workflow in flight while the other nineteen arrive; at time scale 0 a
    # loaded machine could otherwise finish it in between, and a later action would rightly be accepted.
    simulator = core.providers.get("simulator")
    saved = simulator.config
    simulator.config = dataclasses.replace(saved, latency_ms=400)
    try:
        responses = await asyncio.gather(*(client.post(f"{url}/{a}", headers=tenant.headers) for a in actions))
    finally:
        simulator.config = saved
    codes = Counter(r.status_code for r in responses)
    assert codes == {200: 1, 409: 19}, codes
    assert all(r.json()["code"] == "INVALID_STATE" for r in responses if r.status_code == 409)

    async def get():
        return (await client.get(url, headers=tenant.headers)).json()

    await eventually(get, lambda s: s["task_state"] is None)


async def test_concurrent_deletes_make_one_operation(client, tenant, core, create_running_server) -> None:
    from sqlalchemy import func, select

    from cloudplane.db.tables import Operation

    server = await create_running_server(tenant)
    responses = await asyncio.gather(
        *(client.delete(f"/api/servers/{server['id']}", headers=tenant.headers) for _ in range(10))
    )
    assert Counter(r.status_code for r in responses)[204] == 1
    assert all(r.status_code in (204, 409, 404) for r in responses)
    with core.db.read() as s:
        deletes = s.scalar(
            select(func.count())
            .select_from(Operation)
            .where(Operation.server_id == server["id"], Operation.kind == "delete")
        )
    assert deletes == 1

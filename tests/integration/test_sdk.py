"""The Python SDK against the real app: the async client over ASGI, the sync client over HTTP to the same app
served by uvicorn on a loopback port; every action returns its resource and operation, waits end, errors are
typed."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
import uvicorn
from httpx import ASGITransport

from cloudplane import sdk
from tests.conftest import Tenant
from tests.e2e.conftest import free_port
from tests.integration.test_letscloud_ssh_keys import ed25519_public_key

SERVER = {"plan": "basic-1gb", "image": "ubuntu-22-04", "location": "nyc1"}


@pytest.fixture
async def client(app: Any, tenant: Tenant) -> Any:
    async with sdk.AsyncClient(
        "http://testserver", tenant.api_key, transport=ASGITransport(app=app), poll_interval_s=0.02
    ) as c:
        yield c


@pytest.fixture(scope="module")
def served(app: Any) -> Iterator[str]:
    """The suite's app on a loopback port (lifespan off: the session's engine already runs)."""
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, lifespan="off", log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


async def test_async_server_lifecycle(client: sdk.AsyncClient) -> None:
    seen: list[sdk.Operation] = []
    server, op = await client.servers.create(label="sdk web", **SERVER)
    assert isinstance(server, sdk.Server) and server.label == "sdk web" and server.root_password
    assert op is not None and op.kind == "create" and op.target_id == server.id
    done = await op.wait(timeout=30, on_progress=seen.append)
    assert done.status == "succeeded" and done.progress == 100
    assert seen and seen[-1].status == "succeeded"
    assert [o.progress for o in seen] == sorted(o.progress for o in seen)
    assert (await client.servers.get(server.id)).status == "running"
    assert (await client.servers.find("sdk web")).id == server.id

    stopped, op = await client.servers.stop(server.id)
    assert stopped.id == server.id and op.kind == "stop"
    await op.wait(timeout=30)
    assert (await client.servers.get(server.id)).status == "stopped"
    with pytest.raises(sdk.InvalidState) as refused:
        await client.servers.stop(server.id)
    assert refused.value.status == 409 and refused.value.code == "INVALID_STATE"
    _, op = await client.servers.start(server.id)
    await client.operations.wait(op.id, timeout=30)
    assert (await client.servers.get(server.id)).status == "running"

    snapshot, op = await client.snapshots.create(server.id, label="before upgrade")
    assert snapshot.label == "before upgrade" and op is not None and op.kind == "snapshot"
    await op.wait(timeout=30)
    found = await client.snapshots.find(server.id, "before upgrade")
    assert found.id == snapshot.id and found.status == "available"
    _, op = await client.snapshots.delete(server.id, snapshot.id)
    assert op is not None
    await op.wait(timeout=30)

    recent = await client.operations.list(limit=10)
    assert {"create", "stop", "start", "snapshot"} <= {o.kind for o in recent}

    gone, op = await client.servers.delete(server.id)
    assert gone is None and op.kind == "delete"
    await op.wait(timeout=30)
    with pytest.raises(sdk.NotFound) as missing:
        await client.servers.get(server.id)
    assert missing.value.status == 404 and missing.value.code == "NOT_FOUND"


async def test_typed_errors(client: sdk.AsyncClient, make_tenant: Any, app: Any) -> None:
    with pytest.raises(sdk.ValidationError) as invalid:
        await client.servers.create(label="x", password="short", **SERVER)
    assert invalid.value.status == 422 and invalid.value.field == "password"
    with pytest.raises(sdk.NotFound):
        await client.servers.find("no such server")
    with pytest.raises(sdk.NotFound):
        await client.operations.get("00000000-0000-0000-0000-000000000000")
    async with sdk.AsyncClient("http://testserver", "cp_wrong", transport=ASGITransport(app=app)) as stranger:
        with pytest.raises(sdk.Unauthorized) as refused:
            await stranger.servers.list()
    assert refused.value.status == 401


async def test_names_and_ambiguity(client: sdk.AsyncClient) -> None:
    one = await client.ssh_keys.create(title="laptop", public_key=ed25519_public_key())
    await client.ssh_keys.create(title="laptop", public_key=ed25519_public_key())
    with pytest.raises(sdk.Ambiguous) as ambiguous:
        await client.ssh_keys.find("laptop")
    assert len(ambiguous.value.details["matches"]) == 2
    assert (await client.ssh_keys.find(str(one.id))).id == one.id
    assert one.id in {k.id for k in await client.ssh_keys.list()}
    await client.ssh_keys.delete(one.id)
    assert (await client.ssh_keys.find("laptop")).id != one.id


async def test_catalog(client: sdk.AsyncClient) -> None:
    plans = await client.plans.list()
    assert "basic-1gb" in {p.slug for p in plans}
    assert all(p.price_monthly.as_tuple() for p in plans)  # Decimal, never float
    assert "ubuntu-22-04" in {i.slug for i in await client.images.list()}
    assert "nyc1" in {loc.slug for loc in await client.locations.list()}
    assert (await client.account.get()).email


def test_sync_client_over_http(served: str, tenant: Tenant) -> None:
    with sdk.Client(served, tenant.api_key, poll_interval_s=0.02) as client:
        progress: list[int] = []
        server, op = client.servers.create(label="sync web", **SERVER)
        done = op.wait(timeout=30, on_progress=lambda o: progress.append(o.progress))
        assert done.status == "succeeded" and progress[-1] == 100
        _, op = client.servers.reboot(server.id)
        assert op.wait(timeout=30).status == "succeeded"
        _, op = client.servers.delete(server.id)
        op.wait(timeout=30)
        with pytest.raises(sdk.NotFound):
            client.servers.get(server.id)

"""Shared fixtures: one Core and workflow engine per session (the engine is a process singleton), a fresh database,
and accounts made per test so tests stay independent without restarting the engine."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import itertools
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, text

from cloudplane.config import Settings
from cloudplane.core import Core
from cloudplane.services.accounts import Principal, create_api_key, create_user

PG_URL = os.environ.get("CLOUDPLANE_DATABASE_URL", "")


def reset_postgres(url: str) -> None:
    """Start from empty schemas so every run sees a freshly migrated database."""
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@contextlib.contextmanager
def scratch_database(tmp_path: Path, purpose: str) -> Iterator[str]:
    """An empty database of the caller's own: a file on SQLite, a new database beside the suite's on PostgreSQL
    (dropped afterwards)."""
    if not PG_URL.startswith("postgresql"):
        yield f"sqlite:///{tmp_path / f'{purpose}.sqlite'}"
        return
    name = f"cloudplane_{purpose}_{uuid.uuid4().hex[:8]}"
    admin = create_engine(PG_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield PG_URL.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def database_url(tmp_path_factory: pytest.TempPathFactory) -> str:
    if PG_URL.startswith("postgresql"):
        reset_postgres(PG_URL)
        return PG_URL
    return f"sqlite:///{tmp_path_factory.mktemp('db') / 'cloudplane.sqlite'}"


@pytest.fixture(scope="session")
def core(database_url: str) -> Any:
    from cloudplane.app import prepare
    from cloudplane.workflows import engine

    # Rate limits are off for the shared app (tests poll fast from one account); tests of limits switch them on.
    settings = Settings(
        database_url=database_url,
        simulator_time_scale=0.0,
        public_base_url="https://cloud.test",
        rate_limits_enabled=False,
    )
    core = Core.build(settings)
    prepare(core)
    engine.configure(core)
    engine.launch()
    yield core
    engine.shutdown()
    core.db.dispose()


@pytest.fixture(scope="session")
def sim_db(core: Core) -> Any:
    """The simulator's own store (a separate SQLite file, or the same PostgreSQL database)."""
    return core.providers.get("simulator").db


@pytest.fixture(scope="session")
def app(core: Core) -> Any:
    from cloudplane.app import create_app

    return create_app(core)


@pytest.fixture
async def client(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


class FakeClock:
    """A monotonic clock (`time.monotonic`'s stand-in) that moves only when a test moves `now`."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


_emails = itertools.count()


@dataclass
class Tenant:
    principal: Principal
    api_key: str
    email: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}


@pytest.fixture
def make_tenant(core: Core) -> Callable[[], Tenant]:
    def make(role: str = "user") -> Tenant:
        email = f"user{next(_emails)}-{time.monotonic_ns()}@example.com"
        user = create_user(core.db, email=email, name="Test User", role=role)
        _, key = create_api_key(core.db, user_id=user.id)
        return Tenant(Principal(user.account_id, user.id, role), key, email)

    return make


@pytest.fixture
def tenant(make_tenant: Callable[[], Tenant]) -> Tenant:
    return make_tenant()


async def eventually(
    probe: Callable[[], Awaitable[Any]], predicate: Callable[[Any], bool], timeout: float = 30.0
) -> Any:
    """Poll `probe` until `predicate` holds; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = await probe()
        if predicate(value):
            return value
        await asyncio.sleep(0.02)
    raise AssertionError(f"condition not reached in {timeout}s; last value: {value!r}")


SERVER_BODY = {
    "label": "My Web Server",
    "plan_slug": "basic-1gb",
    "image_slug": "ubuntu-22-04",
    "location_slug": "nyc1",
    "hostname": "webserver-01",
}


@pytest.fixture
def create_running_server(client: httpx.AsyncClient) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def create(tenant: Tenant, **overrides: Any) -> dict[str, Any]:
        r = await client.post("/api/servers", json={**SERVER_BODY, **overrides}, headers=tenant.headers)
        assert r.status_code == 201, r.text
        server_id = r.json()["id"]

        async def get() -> dict[str, Any]:
            return (await client.get(f"/api/servers/{server_id}", headers=tenant.headers)).json()

        return await eventually(get, lambda s: s["status"] == "running" and s["task_state"] is None)

    return create


ROOT = Path(__file__).resolve().parent.parent


def lxc_test_network(index: int) -> tuple[str, str]:
    """A bridge name and address range (a /26) of this test run's own, 0 <= index < 8: traffic goes only to
    machines the tests made, and two runs on one host (a developer's and CI's) never share a bridge or a range,
    except when their process ids agree modulo 256."""
    assert 0 <= index < 8
    pid = os.getpid()
    return f"cpt{pid % 10**6}x{index}", f"10.{214 + index // 4}.{pid % 256}.{index % 4 * 64}/26"


LXC_TEST_BRIDGE, LXC_TEST_SUBNET = lxc_test_network(0)


@pytest.fixture(scope="session")
def lxc_host_ready(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LxcTestHost]:
    """This host prepared for LXC once per session: a bridge and range of the tests' own, the busybox image."""
    try:
        import lxc  # noqa: F401
    except ImportError as error:
        # CI installs LXC and the bindings; missing, the LXC contract must fail, never skip silently.
        pytest.fail(
            f"the lxc bindings are not importable ({error}): apt-get install lxc lxc-dev pkg-config busybox-static "
            "dropbear-bin, then pip install 'cloudplane[lxc]'",
            pytrace=False,
        )
    if os.geteuid() != 0:
        pytest.fail("the LXC provider's tests need root (system containers and a bridge)", pytrace=False)
    from cloudplane.providers import lxc_host

    host = LxcTestHost(
        network=lxc_host.Network.parse(LXC_TEST_BRIDGE, LXC_TEST_SUBNET),
        images_path=tmp_path_factory.mktemp("lxc-images"),
    )
    lxc_host.ensure_bridge(host.network)
    lxc_host.build_busybox_image(host.images_path)
    lxcfs = lxc_host.ensure_lxcfs()
    if lxcfs == "not installed":
        pytest.fail("lxcfs is not installed: apt-get install lxcfs", pytrace=False)
    yield host
    lxc_host.remove_bridge(LXC_TEST_BRIDGE)  # lxcfs stays: it is the host's, shared with every other LXC user


@dataclass
class LxcTestHost:
    network: Any
    images_path: Path

    def provider(self, lxc_path: Path, **options: Any) -> Any:
        from cloudplane.providers.lxc import LxcConfig, LxcProvider

        return LxcProvider(LxcConfig(lxc_path, self.images_path, self.network, **options))


def destroy_lxc_leftovers(provider: Any) -> None:
    """Whatever a failed test left running goes, so no container or veth outlives the test."""

    async def destroy_all() -> None:
        for machine in await provider.list():
            await provider.delete(machine.ref)

    # Its own thread and loop: callable from sync teardown and from inside a running test loop alike.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, destroy_all()).result()


def _redis_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as conn:
            conn.sendall(b"PING\r\n")
            return conn.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """CLOUDPLANE_TEST_REDIS_URL when set, else a redis-server of the session's own on a free loopback port."""
    configured = os.environ.get("CLOUDPLANE_TEST_REDIS_URL")
    if configured:
        yield configured
        return
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed: apt-get install redis-server (or set CLOUDPLANE_TEST_REDIS_URL)",
            pytrace=False,
        )
    workdir = tmp_path_factory.mktemp("redis")
    # No persistence: the data dies with the session.
    server, port = serve_on_free_port(
        lambda port: [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        _redis_answers,
        f"redis-server ({binary})",
    )
    yield f"redis://127.0.0.1:{port}/0"
    stop_server(server)


def serve_on_free_port(
    command: Callable[[int], list[str]], answers: Callable[[int], bool], what: str
) -> tuple[subprocess.Popen[bytes], int]:
    """A server process of the tests' own, `command(port)` on a free loopback port, once `answers(port)`."""
    for _ in range(3):  # another process may take the free port before the server binds it
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = probe.getsockname()[1]
        server = subprocess.Popen(command(port), stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 15
        while server.poll() is None and time.monotonic() < deadline and not answers(port):
            time.sleep(0.02)
        if server.poll() is None and answers(port):
            return server, port
        server.kill()
        server.wait()
    pytest.fail(f"{what} did not start on a free loopback port", pytrace=False)


def stop_server(server: subprocess.Popen[bytes]) -> None:
    server.terminate()
    try:
        server.wait(timeout=10)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


# localstripe (a stateful fake of Stripe's API) bound to loopback only (its own command binds every interface) and
# keeping its store in memory (its command pickles it to /tmp/localstripe.pickle after every write).
_LOCALSTRIPE = (
    "import sys; from aiohttp import web; from localstripe.resources import store; "
    "store.dump_to_disk = lambda: None; from localstripe.server import app; "
    "web.run_app(app, host='127.0.0.1', port=int(sys.argv[1]), print=None)"
)


def _listens(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def localstripe() -> Iterator[str]:
    """The URL of a localstripe of the session's own, on a free loopback port."""
    try:
        import localstripe  # noqa: F401
    except ImportError:
        pytest.skip("localstripe is not installed: pip install -e '.[test]' (it is in the test extra)")
    server, port = serve_on_free_port(
        lambda port: [sys.executable, "-c", _LOCALSTRIPE, str(port)], _listens, "localstripe"
    )
    yield f"http://127.0.0.1:{port}"
    stop_server(server)

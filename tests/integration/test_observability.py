"""Request ids, the JSON log lines of a request, and /metrics scraped and parsed as Prometheus reads it."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import structlog
from prometheus_client.parser import text_string_to_metric_families

from cloudplane import context
from cloudplane.api.common.ratelimit import RateLimiter
from cloudplane.core import Core
from cloudplane.observability import flush_logs
from tests.conftest import Tenant


def samples(text: str, name: str) -> dict[tuple[tuple[str, str], ...], float]:
    """Every sample called `name` in a scrape, by its sorted labels."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name:
                found[tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def scrape(client: httpx.AsyncClient, **headers: str) -> str:
    r = await client.get("/metrics", headers=headers)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/plain")
    return r.text


def requests_counted(text: str, method: str, route: str, status: str) -> float:
    labels = (("method", method), ("route", route), ("status", status))
    return samples(text, "cloudplane_http_requests_total").get(labels, 0.0)


async def test_a_sane_request_id_is_echoed(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.get("/api/plans", headers={**tenant.headers, "X-Request-ID": "trace-42:a.b_c-d"})
    assert r.headers["X-Request-ID"] == "trace-42:a.b_c-d"


@pytest.mark.parametrize("sent", [None, b"", b"has space", b"x" * 129, b"semi;colon", "é".encode("latin-1")])
async def test_a_missing_or_odd_request_id_is_replaced(client: httpx.AsyncClient, sent: bytes | None) -> None:
    headers = {} if sent is None else {b"X-Request-ID": sent}
    r = await client.get("/health", headers=headers)
    made = r.headers["X-Request-ID"]
    assert len(made) == 32 and int(made, 16) >= 0


async def test_error_replies_carry_the_request_id(client: httpx.AsyncClient, tenant: Tenant) -> None:
    for r in (
        await client.get("/api/servers", headers={"X-Request-ID": "unauth-1"}),  # 401
        await client.get("/no/such/path", headers={"X-Request-ID": "unauth-1"}),  # 404
        await client.post(
            "/api/ssh-keys",
            content=b"x" * (1024 * 1024 + 1),
            headers={**tenant.headers, "X-Request-ID": "unauth-1", "Content-Type": "application/json"},
        ),  # 413 from the body limit
    ):
        assert r.status_code in (401, 404, 413)
        assert r.headers["X-Request-ID"] == "unauth-1"


async def test_a_500_carries_the_request_id(core: Core) -> None:
    from cloudplane.app import create_app

    app = create_app(core)

    @app.get("/boom", include_in_schema=False)
    def boom() -> None:
        raise RuntimeError("boom")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        before = requests_counted(await scrape(c), "GET", "/boom", "500")
        r = await c.get("/boom", headers={"X-Request-ID": "crash-1"})
        assert r.status_code == 500
        assert r.headers["X-Request-ID"] == "crash-1"
        assert requests_counted(await scrape(c), "GET", "/boom", "500") == before + 1


async def test_a_429_carries_the_request_id_and_is_counted(core: Core, tenant: Tenant) -> None:
    from cloudplane.app import create_app

    app = create_app(core)
    app.state.ratelimiter = RateLimiter()
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        before = samples(await scrape(c), "cloudplane_rate_limit_refusals_total")
        login = {"email": "nobody@example.com", "password": "wrong-password"}
        assert {(await c.post("/api/v1/auth/login", json=login)).status_code for _ in range(10)} == {401}
        r = await c.post("/api/v1/auth/login", json=login, headers={"X-Request-ID": "limited-1"})
        assert r.status_code == 429 and r.headers["X-Request-ID"] == "limited-1"
        # The per-IP limit of the sign-in routes: 100 in 15 minutes, the eleven sign-ins above included.
        junk = {"refresh_token": "not-a-token"}
        assert {(await c.post("/api/v1/auth/refresh", json=junk)).status_code for _ in range(89)} == {401}
        r = await c.post("/api/v1/auth/refresh", json=junk, headers={"X-Request-ID": "limited-2"})
        assert r.status_code == 429 and r.headers["X-Request-ID"] == "limited-2"
        # The free tier's 60 requests a minute per account.
        assert {(await c.get("/api/plans", headers=tenant.headers)).status_code for _ in range(60)} == {200}
        assert (await c.get("/api/plans", headers=tenant.headers)).status_code == 429
        after = samples(await scrape(c), "cloudplane_rate_limit_refusals_total")
        for scope in ("login", "ip", "account"):
            assert after[(("scope", scope),)] == before.get((("scope", scope),), 0.0) + 1


async def test_the_request_id_is_in_the_request_context(core: Core) -> None:
    from cloudplane.app import create_app

    app = create_app(core)
    seen: list[context.RequestContext] = []

    @app.get("/whoami", include_in_schema=False)
    async def whoami() -> dict[str, str]:
        seen.append(context.current())
        return {}

    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        await c.get("/whoami", headers={"X-Request-ID": "ctx-1"})
    assert (seen[0].request_id, seen[0].client_ip) == ("ctx-1", "203.0.113.7")
    assert context.current().request_id is None


async def test_metrics_count_requests_by_route_template_and_status(
    client: httpx.AsyncClient, tenant: Tenant, create_running_server: Any
) -> None:
    server = await create_running_server(tenant)
    before = await scrape(client)
    await client.get(f"/api/servers/{server['id']}?page=1", headers=tenant.headers)
    await client.get(f"/api/servers/{server['id']}", headers=tenant.headers)
    await client.get("/api/servers/999999999", headers=tenant.headers)
    await client.get("/really/not/here/123")
    after = await scrape(client)

    for status, count in (("200", 2), ("404", 1)):
        delta = requests_counted(after, "GET", "/api/servers/{server_id}", status) - requests_counted(
            before, "GET", "/api/servers/{server_id}", status
        )
        assert delta == count
    assert requests_counted(after, "GET", "unmatched", "404") == requests_counted(before, "GET", "unmatched", "404") + 1
    routes = {dict(labels)["route"] for labels in samples(after, "cloudplane_http_requests_total")}
    assert not any("999999999" in route or "?" in route or "really" in route for route in routes), routes
    durations = samples(after, "cloudplane_http_request_duration_seconds_count")
    assert durations[(("method", "GET"), ("route", "/api/servers/{server_id}"))] >= 3


async def test_operation_and_provider_metrics_are_exposed(client: httpx.AsyncClient) -> None:
    from cloudplane.observability import operation_finished, provider_call_failed

    before = await scrape(client)
    operation_finished("server.create", "succeeded", 2.0)
    provider_call_failed("simulator", "create")
    after = await scrape(client)
    kind = (("kind", "server.create"), ("outcome", "succeeded"))
    counted = samples(after, "cloudplane_operations_total")[kind] - samples(before, "cloudplane_operations_total").get(
        kind, 0.0
    )
    assert counted == 1
    assert samples(after, "cloudplane_operation_duration_seconds_count")[kind] >= 1
    assert samples(after, "cloudplane_provider_errors_total")[(("call", "create"), ("provider", "simulator"))] >= 1


async def test_metrics_are_in_no_openapi_document(client: httpx.AsyncClient) -> None:
    for document in ("/api/openapi.json", "/api/v1/openapi.json", "/api/v1/gpu/openapi.json"):
        assert "/metrics" not in (await client.get(document)).json()["paths"]


async def test_with_a_metrics_token_metrics_need_it(core: Core) -> None:
    from cloudplane.app import create_app

    app = create_app(core)
    app.state.core = dataclasses.replace(core, settings=core.settings.model_copy(update={"metrics_token": "scrape-it"}))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        refused = await c.get("/metrics")
        assert refused.status_code == 401 and refused.headers["WWW-Authenticate"] == "Bearer"
        assert (await c.get("/metrics", headers={"Authorization": "Bearer wrong"})).status_code == 401
        assert (await c.get("/metrics", headers={"Authorization": "Basic scrape-it"})).status_code == 401
        r = await c.get("/metrics", headers={"Authorization": "Bearer scrape-it"})
        assert r.status_code == 200 and "cloudplane_http_requests_total" in r.text


@contextlib.contextmanager
def as_served() -> Iterator[None]:
    """The root's handlers as in a serving process, where ours is the only one: pytest's capture handlers step
    aside (pytest adds them for each phase of a test, so this is used inside the test)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = [h for h in saved if h.name == "cloudplane"]
    try:
        yield
    finally:
        root.handlers = saved


@pytest.fixture
def log_buffer(core: Core) -> Iterator[io.StringIO]:
    """The process's logging configured as a serving process does, into a buffer; put back afterwards."""
    from cloudplane.observability import QUIET_LOGGERS, configure_logging

    names = ["", "uvicorn", "uvicorn.error", "uvicorn.access", *QUIET_LOGGERS]
    saved = {
        n: (logging.getLogger(n).handlers[:], logging.getLogger(n).level, logging.getLogger(n).propagate) for n in names
    }
    flags = ("_srcfile", "logThreads", "logProcesses", "logMultiprocessing")  # what records look up
    saved_flags = {flag: getattr(logging, flag) for flag in flags}
    buffer = io.StringIO()
    configure_logging("DEBUG", "json", stream=buffer)
    try:
        yield buffer
    finally:
        root = logging.getLogger()
        for handler in root.handlers[:]:
            if handler.name == "cloudplane":
                root.removeHandler(handler)
                handler.close()
        for name, (handlers, level, propagate) in saved.items():
            logger = logging.getLogger(name)
            logger.handlers, logger.propagate = handlers, propagate
            logger.setLevel(level)
        for flag, value in saved_flags.items():
            setattr(logging, flag, value)
        structlog.reset_defaults()


async def test_the_access_line_reaches_every_other_handler_as_a_record(
    client: httpx.AsyncClient, tenant: Tenant, log_buffer: io.StringIO
) -> None:
    """Alone on the root, our handler takes the access line rendered; beside another handler the line goes through
    logging, so that handler gets its record, and ours writes the same JSON line as before."""

    class Keep(logging.Handler):
        records: list[logging.LogRecord] = []

        def emit(self, record: logging.LogRecord) -> None:
            self.records.append(record)

    other = Keep()
    with as_served():
        logging.getLogger().addHandler(other)
        await client.get("/api/servers/777", headers={**tenant.headers, "X-Request-ID": "both-ways"})
        logging.getLogger().removeHandler(other)
        await client.get("/api/servers/778", headers={**tenant.headers, "X-Request-ID": "direct"})
    flush_logs()
    access = [r for r in other.records if r.name == "cloudplane.access"]
    assert len(access) == 1 and access[0].__dict__["route"] == "/api/servers/{server_id}", other.records
    assert access[0].__dict__["status"] == 404 and access[0].getMessage() == "request"
    lines = [json.loads(line) for line in log_buffer.getvalue().splitlines()]
    written = {line["request_id"]: line for line in lines if line.get("logger") == "cloudplane.access"}
    assert set(written) == {"both-ways", "direct"}
    shape = {k: v for k, v in written["both-ways"].items() if k not in ("timestamp", "duration_ms", "request_id")}
    assert shape == {k: v for k, v in written["direct"].items() if k not in ("timestamp", "duration_ms", "request_id")}
    assert list(written["both-ways"]) == list(written["direct"])  # the same fields, in the same order


async def test_access_log_lines_are_json_with_the_route_template(
    client: httpx.AsyncClient, tenant: Tenant, log_buffer: io.StringIO
) -> None:
    with as_served():
        await client.get("/api/servers/12345?secret=query", headers={**tenant.headers, "X-Request-ID": "log-line-1"})
    logging.getLogger("cloudplane.somewhere").warning("a stdlib line")
    # A credential that slips into a message or a field is masked all the same.
    logging.getLogger("cloudplane.careless").warning("key %s, Bearer abc.def", tenant.api_key, extra={"status": 1})
    structlog.get_logger("cloudplane.careless").warning("structlog line", password="hunter2-hunter2")
    flush_logs()  # lines below WARNING are written by the handler's thread
    lines = [json.loads(line) for line in log_buffer.getvalue().splitlines()]
    access = [line for line in lines if line.get("logger") == "cloudplane.access"]
    assert access, lines
    line = access[-1]
    assert {k: line[k] for k in ("event", "level", "method", "route", "status", "request_id", "client_ip")} == {
        "event": "request",
        "level": "info",
        "method": "GET",
        "route": "/api/servers/{server_id}",
        "status": 404,
        "request_id": "log-line-1",
        "client_ip": "127.0.0.1",
    }
    assert isinstance(line["duration_ms"], float) and line["timestamp"].endswith("Z")
    assert "secret=query" not in log_buffer.getvalue() and tenant.api_key not in log_buffer.getvalue()
    assert any(line["event"] == "a stdlib line" and "request_id" not in line for line in lines)
    assert any(line["event"] == "key [redacted], [redacted]" for line in lines), lines
    assert any(line["event"] == "structlog line" and line["password"] == "[redacted]" for line in lines), lines
    assert "hunter2" not in log_buffer.getvalue()

"""`Idempotency-Key` on POST: one key, one execution per account; retries replay the stored reply."""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from cloudplane.api.common.bodylimit import BodyLimitMiddleware
from cloudplane.api.common.idempotency import IdempotencyMiddleware, Sealer, fingerprint, key_hash
from cloudplane.db.tables import IdempotencyRecord, utcnow
from tests.conftest import SERVER_BODY

MIB = 1024 * 1024


def test_the_app_wires_the_guards_outermost_first(app: Any) -> None:
    # The body limit must wrap idempotency (which reads the whole body); the conftest `client` goes through both.
    order = [m.cls for m in app.user_middleware]
    assert order.index(BodyLimitMiddleware) < order.index(IdempotencyMiddleware)


def keyed(tenant: Any, key: str) -> dict[str, str]:
    return {**tenant.headers, "Idempotency-Key": key}


async def server_count(client: httpx.AsyncClient, tenant: Any) -> int:
    r = await client.get("/api/servers", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()["total"]


def stored_rows(core: Any, tenant: Any, key: str) -> int:
    with core.db.read() as s:
        hashed = key_hash(tenant.principal.account_id, key)
        return s.scalar(select(func.count()).select_from(IdempotencyRecord).where(IdempotencyRecord.key_hash == hashed))


async def test_same_key_and_body_replays_the_reply(client, tenant) -> None:
    first = await client.post("/api/servers", json=SERVER_BODY, headers=keyed(tenant, "create-1"))
    assert first.status_code == 201, first.text
    assert "idempotent-replayed" not in first.headers
    again = await client.post("/api/servers", json=SERVER_BODY, headers=keyed(tenant, "create-1"))
    assert again.status_code == 201
    assert again.headers["idempotent-replayed"] == "true"
    assert again.headers["content-type"] == first.headers["content-type"]
    # Byte for byte, the generated root password included.
    assert again.content == first.content
    assert await server_count(client, tenant) == 1


async def test_same_key_with_another_body_is_422_and_creates_nothing(client, tenant) -> None:
    first = await client.post("/api/servers", json=SERVER_BODY, headers=keyed(tenant, "create-2"))
    assert first.status_code == 201, first.text
    other = await client.post("/api/servers", json={**SERVER_BODY, "label": "Other"}, headers=keyed(tenant, "create-2"))
    assert other.status_code == 422, other.text
    payload = other.json()
    assert payload["code"] == "VALIDATION_ERROR" and payload["details"]["field"] == "Idempotency-Key"
    assert "different request" in payload["error"]
    # Another path with the same key and body is another request too.
    elsewhere = await client.post("/api/ssh-keys", json=SERVER_BODY, headers=keyed(tenant, "create-2"))
    assert elsewhere.status_code == 422 and elsewhere.json()["details"]["field"] == "Idempotency-Key"
    assert await server_count(client, tenant) == 1


def one_execution(replies: list[httpx.Response]) -> tuple[httpx.Response, list[httpx.Response]]:
    """Of concurrent identical keyed POSTs, the one that ran (201) and those refused while it ran (409, retry in a
    second); every other reply must be a replay of the first."""
    originals = [r for r in replies if r.status_code == 201 and "idempotent-replayed" not in r.headers]
    replays = [r for r in replies if r.status_code == 201 and r.headers.get("idempotent-replayed") == "true"]
    in_flight = [r for r in replies if r.status_code == 409]
    assert len(originals) == 1, Counter(r.status_code for r in replies)
    assert len(originals) + len(replays) + len(in_flight) == len(replies), [r.text for r in replies]
    assert all(r.content == originals[0].content for r in replays)
    assert all(r.headers["retry-after"] == "1" for r in in_flight)
    return originals[0], in_flight


async def test_fifty_concurrent_identical_posts_make_one_server(client, tenant) -> None:
    headers = keyed(tenant, "burst-50")
    replies = await asyncio.gather(*(client.post("/api/servers", json=SERVER_BODY, headers=headers) for _ in range(50)))
    original, in_flight = one_execution(replies)
    assert all(r.json()["code"] == "CONFLICT" for r in in_flight)
    assert await server_count(client, tenant) == 1
    # Once settled, every retry is a replay.
    late = await client.post("/api/servers", json=SERVER_BODY, headers=headers)
    assert late.status_code == 201 and late.content == original.content


async def test_keys_are_per_account(client, make_tenant) -> None:
    alice, bob = make_tenant(), make_tenant()
    a = await client.post("/api/servers", json=SERVER_BODY, headers=keyed(alice, "shared-key"))
    b = await client.post("/api/servers", json=SERVER_BODY, headers=keyed(bob, "shared-key"))
    assert a.status_code == b.status_code == 201
    assert "idempotent-replayed" not in b.headers
    assert a.json()["id"] != b.json()["id"]
    assert await server_count(client, alice) == 1 and await server_count(client, bob) == 1


async def test_a_4xx_reply_is_stored_and_replayed(client, tenant) -> None:
    bad = {**SERVER_BODY, "plan_slug": "no-such-plan"}
    first = await client.post("/api/servers", json=bad, headers=keyed(tenant, "bad-plan"))
    assert first.status_code == 400, first.text
    again = await client.post("/api/servers", json=bad, headers=keyed(tenant, "bad-plan"))
    assert again.status_code == 400 and again.headers["idempotent-replayed"] == "true"
    assert again.content == first.content
    # The key stays bound to the request it answered.
    fixed = await client.post("/api/servers", json=SERVER_BODY, headers=keyed(tenant, "bad-plan"))
    assert fixed.status_code == 422
    assert await server_count(client, tenant) == 0


async def test_without_the_header_nothing_changes(client, tenant) -> None:
    replies = [await client.post("/api/servers", json=SERVER_BODY, headers=tenant.headers) for _ in range(2)]
    assert [r.status_code for r in replies] == [201, 201]
    assert all("idempotent-replayed" not in r.headers for r in replies)
    assert await server_count(client, tenant) == 2


@pytest.mark.parametrize("key", ["", "k" * 256, "has space", "tab\tkey", "café"], ids=repr)
async def test_an_invalid_key_is_422(client, tenant, key) -> None:
    headers = [*tenant.headers.items(), ("Idempotency-Key", key.encode("utf-8"))]
    r = await client.post("/api/servers", json=SERVER_BODY, headers=headers)
    assert r.status_code == 422, r.text
    assert r.json()["code"] == "VALIDATION_ERROR" and r.json()["details"]["field"] == "Idempotency-Key"
    assert await server_count(client, tenant) == 0


async def test_the_longest_valid_key_is_accepted(client, tenant) -> None:
    r = await client.post("/api/servers", json=SERVER_BODY, headers=keyed(tenant, "~" * 255))
    assert r.status_code == 201, r.text


async def test_the_key_twice_in_one_request_is_422(client, tenant) -> None:
    headers = [*tenant.headers.items(), ("Idempotency-Key", "one"), ("Idempotency-Key", "two")]
    r = await client.post("/api/servers", json=SERVER_BODY, headers=headers)
    assert r.status_code == 422 and r.json()["details"]["field"] == "Idempotency-Key"


@pytest.mark.parametrize("authorization", [None, "Bearer not-a-real-key"])
async def test_an_unauthenticated_request_gets_401_and_claims_nothing(client, core, tenant, authorization) -> None:
    key = f"anon-{authorization is None}"
    headers = {"Idempotency-Key": key} | ({"Authorization": authorization} if authorization else {})
    r = await client.post("/api/servers", json=SERVER_BODY, headers=headers)
    assert r.status_code == 401 and r.json()["code"] == "UNAUTHORIZED"
    assert stored_rows(core, tenant, key) == 0
    ok = await client.post("/api/servers", json=SERVER_BODY, headers=keyed(tenant, key))
    assert ok.status_code == 201 and "idempotent-replayed" not in ok.headers


async def test_an_oversized_body_with_a_key_is_413_and_claims_nothing(client, core, tenant) -> None:
    key = "too-big"
    for content in (b"x" * (MIB + 1), _chunks(b"x" * (MIB + 1))):
        r = await client.post("/api/servers", content=content, headers=keyed(tenant, key))
        assert r.status_code == 413 and r.json()["code"] == "PAYLOAD_TOO_LARGE"
    assert stored_rows(core, tenant, key) == 0


async def _chunks(body: bytes) -> AsyncIterator[bytes]:
    for start in range(0, len(body), 64 * 1024):
        yield body[start : start + 64 * 1024]


async def test_an_expired_record_is_replaced(client, core, tenant) -> None:
    body = json.dumps(SERVER_BODY).encode()
    scope = {"method": "POST", "path": "/api/servers", "query_string": b""}
    with core.db.write() as s:
        for key, status in (("stale-done", "done"), ("stale-claim", "in_flight")):
            sealer = Sealer.derive(tenant.principal.account_id, key, fingerprint(scope, body))
            s.add(
                IdempotencyRecord(
                    account_id=tenant.principal.account_id,
                    key_hash=sealer.key_hash,
                    fingerprint=sealer.fingerprint,
                    status=status,
                    response_status=201,
                    response_sealed=sealer.seal([], b"{}"),
                    expires_at=utcnow() - timedelta(seconds=1),
                )
            )
    headers = {**tenant.headers, "Content-Type": "application/json"}
    for key in ("stale-done", "stale-claim"):
        r = await client.post("/api/servers", content=body, headers={**headers, "Idempotency-Key": key})
        assert r.status_code == 201 and "idempotent-replayed" not in r.headers, r.text
    assert await server_count(client, tenant) == 2


class Scripted:
    """A tiny app whose POST /api/thing answers from a script, to reach replies the project routes never give."""

    def __init__(self, core: Any, script: list[Any]) -> None:
        self.script = script
        self.calls = 0
        self.entered = asyncio.Event()
        self.proceed = asyncio.Event()
        self.proceed.set()
        app = Starlette(routes=[Route("/api/thing", self.thing, methods=["POST"])])
        app.state.core = core
        # Wrapped from outside, as a deployment might: the middleware finds the Core down the chain.
        self.asgi = IdempotencyMiddleware(app)

    async def thing(self, request: Request) -> Response:
        self.calls += 1
        step = self.script[min(self.calls, len(self.script)) - 1]
        self.entered.set()
        await self.proceed.wait()
        if isinstance(step, Exception):
            raise step
        return JSONResponse({"call": self.calls, "body": (await request.body()).decode()}, **step)

    def client(self) -> httpx.AsyncClient:
        transport = httpx.ASGITransport(app=self.asgi, raise_app_exceptions=False)
        return httpx.AsyncClient(transport=transport, base_url="http://testserver")


async def test_5xx_and_retry_later_replies_are_not_stored(core, tenant) -> None:
    script = [
        {"status_code": 503},
        RuntimeError("boom"),
        {"status_code": 429},
        {"status_code": 409},
        {"status_code": 201},
    ]
    app = Scripted(core, script)
    async with app.client() as c:
        statuses = [
            (await c.post("/api/thing", content=b"same", headers=keyed(tenant, "flaky"))).status_code for _ in script
        ]
        assert statuses == [503, 500, 429, 409, 201]
        replay = await c.post("/api/thing", content=b"same", headers=keyed(tenant, "flaky"))
    assert replay.status_code == 201 and replay.headers["idempotent-replayed"] == "true"
    assert replay.json() == {"call": 5, "body": "same"}
    assert app.calls == 5


async def test_a_key_in_flight_is_409_with_retry_after(core, tenant) -> None:
    app = Scripted(core, [{"status_code": 201}])
    app.proceed.clear()
    async with app.client() as c:
        first = asyncio.create_task(c.post("/api/thing", content=b"x", headers=keyed(tenant, "slow")))
        try:
            await asyncio.wait_for(app.entered.wait(), 10)
            # Bounded: were the second request let through, it would wait on `proceed` like the first.
            busy = await asyncio.wait_for(c.post("/api/thing", content=b"x", headers=keyed(tenant, "slow")), 10)
        finally:
            app.proceed.set()
        done = await first
        replay = await c.post("/api/thing", content=b"x", headers=keyed(tenant, "slow"))
    assert busy.status_code == 409 and busy.headers["retry-after"] == "1"
    assert busy.json()["code"] == "CONFLICT" and "still being processed" in busy.json()["error"]
    assert done.status_code == 201 and replay.status_code == 201 and replay.content == done.content
    assert app.calls == 1


async def test_replayed_headers_keep_the_meaningful_ones(core, tenant) -> None:
    headers = {"Location": "/api/thing/1", "X-RateLimit-Remaining": "3", "Set-Cookie": "s=1"}
    app = Scripted(core, [{"status_code": 201, "headers": headers}])
    async with app.client() as c:
        first = await c.post("/api/thing", content=b"h", headers=keyed(tenant, "headers"))
        replay = await c.post("/api/thing", content=b"h", headers=keyed(tenant, "headers"))
    assert first.headers["x-ratelimit-remaining"] == "3"
    assert replay.headers["location"] == "/api/thing/1"
    assert replay.headers["content-type"] == "application/json"
    assert replay.headers["content-length"] == str(len(first.content))
    assert "x-ratelimit-remaining" not in replay.headers and "set-cookie" not in replay.headers


def _row_text(core: Any, tenant: Any, key: str) -> bytes:
    """Every column of the key's stored row, as the database holds them."""
    with core.db.read() as s:
        row = s.execute(
            select(IdempotencyRecord.__table__).where(
                IdempotencyRecord.key_hash == key_hash(tenant.principal.account_id, key)
            )
        ).one()
    return b"\0".join(value if isinstance(value, bytes) else str(value).encode() for value in row)


async def test_a_replayed_create_server_leaves_no_root_password_nor_key_in_the_database(client, core, tenant) -> None:
    key = "5f0c6a2e-9b1d-4f7e-8a3c-create-server"
    first = await client.post("/api/servers", json=SERVER_BODY, headers=keyed(tenant, key))
    assert first.status_code == 201, first.text
    password = first.json()["root_password"]
    assert password
    again = await client.post("/api/servers", json=SERVER_BODY, headers=keyed(tenant, key))
    assert again.headers["idempotent-replayed"] == "true" and again.json()["root_password"] == password
    stored = _row_text(core, tenant, key)
    assert password.encode() not in stored and key.encode() not in stored
    assert b"root_password" not in stored and b"webserver-01" not in stored, "the whole reply is sealed"


async def test_a_replayed_api_key_creation_leaves_no_key_in_the_database(client, core, tenant) -> None:
    key = "0d9e8f7a-api-key-creation"
    first = await client.post("/api/v1/api-keys", json={"name": "ci"}, headers=keyed(tenant, key))
    assert first.status_code == 201, first.text
    made = first.json()["data"]["key"]
    again = await client.post("/api/v1/api-keys", json={"name": "ci"}, headers=keyed(tenant, key))
    assert again.headers["idempotent-replayed"] == "true" and again.json()["data"]["key"] == made
    stored = _row_text(core, tenant, key)
    assert made.encode() not in stored and key.encode() not in stored


async def test_a_stored_reply_opens_only_with_its_key_and_request(core, tenant) -> None:
    digest = fingerprint({"method": "POST", "path": "/api/thing", "query_string": b""}, b"body")
    sealer = Sealer.derive(tenant.principal.account_id, "right-key", digest)
    sealed = sealer.seal([("location", "/x")], b"secret reply")
    assert sealer.open(sealed) == ([("location", "/x")], b"secret reply")
    other_digest = fingerprint({"method": "POST", "path": "/api/thing", "query_string": b""}, b"other")
    for other in (
        Sealer.derive(tenant.principal.account_id, "wrong-key", digest),
        Sealer.derive(tenant.principal.account_id + 1, "right-key", digest),
        Sealer.derive(tenant.principal.account_id, "right-key", other_digest),
    ):
        assert other.open(sealed) is None
    assert Sealer.derive(tenant.principal.account_id, "right-key", other_digest).fingerprint != sealer.fingerprint

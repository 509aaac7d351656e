"""JSON bodies are capped at 1 MiB: past it a 413 in the face's envelope, whether the size is announced or streamed."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import httpx
import pytest

from cloudplane.api.common.bodylimit import BodyLimitMiddleware
from tests.conftest import SERVER_BODY

MIB = 1024 * 1024


def server_body_of_size(size: int) -> bytes:
    """A server-create JSON body of exactly `size` bytes (the label is padded)."""
    bare = json.dumps({**SERVER_BODY, "label": ""}).encode()
    body = json.dumps({**SERVER_BODY, "label": "x" * (size - len(bare))}).encode()
    assert len(body) == size
    return body


async def in_chunks(body: bytes, size: int = 64 * 1024) -> AsyncIterator[bytes]:
    # A generator body makes httpx send it chunked, without Content-Length.
    for start in range(0, len(body), size):
        yield body[start : start + size]


def assert_413_envelope(r: httpx.Response) -> None:
    assert r.status_code == 413, r.text
    payload = r.json()
    assert set(payload) == {"error", "code", "details"}
    assert payload["code"] == "PAYLOAD_TOO_LARGE"
    assert payload["details"]["limit_bytes"] == MIB
    assert "1 MiB" in payload["error"]


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_one_byte_over_a_mib_is_413_in_the_envelope(client, tenant, chunked) -> None:
    body = server_body_of_size(MIB + 1)
    headers = {**tenant.headers, "Content-Type": "application/json"}
    r = await client.post("/api/servers", content=in_chunks(body) if chunked else body, headers=headers)
    assert "content-length" not in r.request.headers if chunked else r.request.headers["content-length"] == str(MIB + 1)
    assert_413_envelope(r)
    listed = await client.get("/api/servers", headers=tenant.headers)
    assert listed.json()["total"] == 0


@pytest.mark.parametrize("chunked", [False, True], ids=["content-length", "chunked"])
async def test_a_body_of_exactly_a_mib_is_processed(client, tenant, chunked) -> None:
    body = server_body_of_size(MIB)
    headers = {**tenant.headers, "Content-Type": "application/json"}
    r = await client.post("/api/servers", content=in_chunks(body) if chunked else body, headers=headers)
    # The route validated it (the label is far too long), so it got the whole body.
    assert r.status_code == 422, r.text
    assert r.json()["details"]["field"] == "label"


async def test_an_action_route_that_reads_no_body_still_gets_413(client, tenant) -> None:
    r = await client.post(
        "/api/servers/1/start", content=b"x" * (MIB + 1), headers={**tenant.headers, "Content-Type": "text/plain"}
    )
    assert_413_envelope(r)


async def test_the_app_never_sees_more_than_the_cap() -> None:
    seen: list[int] = []

    async def counting_app(scope, receive, send) -> None:
        total = 0
        while True:
            message = await receive()
            total += len(message.get("body", b""))
            seen.append(total)
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    limited = BodyLimitMiddleware(counting_app, max_bytes=100)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=limited), base_url="http://testserver") as c:
        r = await c.post("/api/anything", content=in_chunks(b"y" * 1000, size=30))
        assert r.status_code == 413 and r.json()["details"]["limit_bytes"] == 100
        assert seen and max(seen) <= 100

        seen.clear()
        r = await c.post("/api/anything", content=b"y" * 101)
        assert r.status_code == 413 and seen == []  # refused from Content-Length, before the app ran

        r = await c.post("/api/anything", content=in_chunks(b"y" * 100, size=30))
        assert r.status_code == 200 and max(seen) == 100

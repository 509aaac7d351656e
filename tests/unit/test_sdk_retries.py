"""The SDK's retry policy against a real HTTP server on loopback that answers from a script: 429 with Retry-After,
503, then 200; the Idempotency-Key stays the same across retries and a POST without one is never sent twice."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from cloudplane import sdk
from cloudplane.sdk.protocol import IDEMPOTENCY_HEADER, Reply, Request, RetryPolicy, TransportFailure, call

SERVER_JSON = {
    "id": 7,
    "label": "web",
    "hostname": "web",
    "status": "running",
    "task_state": None,
    "ip_address": "192.0.2.7",
    "private_ip": None,
    "plan": {"slug": "basic-1gb"},
    "image": {"slug": "ubuntu-22-04"},
    "location": {"slug": "nyc1"},
}
FAST = RetryPolicy(attempts=4, base_s=0.01, cap_s=0.05)


@dataclass
class Script:
    """Replies to give, in order, and what each request carried."""

    replies: list[tuple[int, dict[str, str], Any]] = field(default_factory=list)
    seen: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    times: list[float] = field(default_factory=list)


@pytest.fixture
def scripted() -> Iterator[tuple[str, Script]]:
    script = Script()

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(length)
            script.seen.append((self.command, self.path, {k.lower(): v for k, v in self.headers.items()}))
            script.times.append(time.monotonic())
            status, headers, body = script.replies.pop(0) if script.replies else (500, {}, {"error": "unscripted"})
            payload = json.dumps(body).encode() if body is not None else b""
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_DELETE = _answer

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", script
    server.shutdown()
    server.server_close()


def busy(status: int, retry_after: str | None = None) -> tuple[int, dict[str, str], Any]:
    headers = {"Retry-After": retry_after} if retry_after is not None else {}
    return status, headers, {"error": "slow down", "code": "RATE_LIMITED" if status == 429 else "UNAVAILABLE"}


def test_429_waits_for_retry_after_then_succeeds(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.replies = [busy(429, "1"), (200, {}, SERVER_JSON)]
    with sdk.Client(url, "cp_test", retry=FAST) as client:
        assert client.servers.get(7).label == "web"
    assert [m for m, _, _ in script.seen] == ["GET", "GET"]
    assert script.times[1] - script.times[0] >= 1.0  # Retry-After honoured, though the backoff alone is 10 ms


def test_post_retried_after_503_with_the_same_idempotency_key(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.replies = [busy(503), busy(429, "0"), (201, {}, SERVER_JSON)]
    with sdk.Client(url, "cp_test", retry=FAST) as client:
        server, operation = client.servers.create(label="web", plan="basic-1gb", image="ubuntu-22-04", location="nyc1")
    assert server.id == 7 and operation is None
    keys = [headers.get(IDEMPOTENCY_HEADER.lower()) for _, _, headers in script.seen]
    assert len(keys) == 3 and keys[0] and len(set(keys)) == 1
    # A second logical call carries a key of its own.
    script.replies = [(201, {}, SERVER_JSON)]
    with sdk.Client(url, "cp_test", retry=FAST) as client:
        client.servers.create(label="web", plan="basic-1gb", image="ubuntu-22-04", location="nyc1")
    assert script.seen[-1][2][IDEMPOTENCY_HEADER.lower()] != keys[0]


def test_post_without_a_key_is_never_retried(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.replies = [busy(503, "0"), (201, {}, SERVER_JSON)]
    with sdk.Client(url, "cp_test", retry=FAST) as client, pytest.raises(sdk.ServiceUnavailable) as failed:
        client.run(call(Request("POST", "/servers", json={}), client.policy))
    assert len(script.seen) == 1 and failed.value.retry_after == 0


def test_gives_up_after_the_attempts_and_on_a_long_retry_after(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.replies = [busy(503)] * 4
    with sdk.Client(url, "cp_test", retry=FAST) as client, pytest.raises(sdk.ServiceUnavailable):
        client.servers.get(7)
    assert len(script.seen) == 4
    script.replies = [busy(429, "3600")]
    with sdk.Client(url, "cp_test", retry=FAST) as client, pytest.raises(sdk.RateLimited) as limited:
        client.servers.get(7)
    assert len(script.seen) == 5 and limited.value.retry_after == 3600 and limited.value.code == "RATE_LIMITED"


def test_errors_other_than_429_and_503_are_not_retried(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.replies = [(500, {}, {"error": "boom", "code": "INTERNAL_ERROR", "details": {}})]
    with sdk.Client(url, "cp_test", retry=FAST) as client, pytest.raises(sdk.ServerError) as failed:
        client.servers.get(7)
    assert len(script.seen) == 1 and failed.value.code == "INTERNAL_ERROR"


async def test_async_client_retries_the_same_way(scripted: tuple[str, Script]) -> None:
    url, script = scripted
    script.replies = [busy(503, "0"), busy(503), (200, {}, SERVER_JSON)]
    async with sdk.AsyncClient(url, "cp_test", retry=FAST) as client:
        _, operation = await client.servers.reboot(7)
    assert operation is None and len(script.seen) == 3
    assert len({headers[IDEMPOTENCY_HEADER.lower()] for _, _, headers in script.seen}) == 1


def test_connection_refused_is_retried_for_a_get_then_raised() -> None:
    from tests.e2e.conftest import free_port

    with sdk.Client(f"http://127.0.0.1:{free_port()}", "cp_test", retry=FAST) as client:
        with pytest.raises(sdk.ConnectionFailed):
            client.servers.list()


def test_backoff_is_capped_and_jittered() -> None:
    get = Request("GET", "/servers")
    failure = TransportFailure("reset")
    low = RetryPolicy(attempts=20, base_s=1, cap_s=8, random=lambda: 0.0)
    high = RetryPolicy(attempts=20, base_s=1, cap_s=8, random=lambda: 1.0)
    assert [low.delay(get, failure, n) for n in (1, 2, 3, 4, 5, 10)] == [0.5, 1, 2, 4, 4, 4]
    assert [high.delay(get, failure, n) for n in (1, 2, 3, 4, 5, 10)] == [1, 2, 4, 8, 8, 8]
    assert high.delay(get, failure, 20) is None
    assert high.delay(Request("POST", "/servers"), failure, 1) is None
    assert high.delay(Request.post("/servers"), failure, 1) == 1
    conflict = Reply(409, {"retry-after": "1"}, b"")
    assert high.delay(Request.post("/servers"), conflict, 1) == pytest.approx(1.1)  # same key still running
    assert high.delay(get, conflict, 1) is None
    assert high.delay(get, Reply(400, {}, b""), 1) is None

"""Rate limiting in process memory: the limiter's counting, and its dependencies and header middleware on a small
FastAPI app of their own (the project app's wiring is tested with the routes)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Annotated

import httpx
import pytest
from fastapi import Depends, FastAPI, Request
from fastapi.responses import StreamingResponse

from cloudplane.api.common.faces import install_error_handlers
from cloudplane.api.common.ratelimit import (
    ANONYMOUS_AUTH_LIMIT,
    TIER_LIMITS,
    RateLimiter,
    RateLimitHeadersMiddleware,
    RateLimitState,
    count_principal,
    enforce_anonymous_limit,
    rate_limit_headers,
)
from cloudplane.domain.errors import RateLimited, Unauthorized
from cloudplane.services.accounts import Principal

RATE_LIMIT_HEADERS = ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset")


async def test_tier_limits_follow_the_vibecaas_table() -> None:
    assert TIER_LIMITS == {
        "free": ("60/minute", "1000/hour"),
        "hobby": ("120/minute", "2000/hour"),
        "pro": ("300/minute", "5000/hour"),
        "team": ("600/minute", "10000/hour"),
        "enterprise": (),
    }
    assert ANONYMOUS_AUTH_LIMIT == "100/15 minutes"


async def test_free_tier_admits_sixty_a_minute_then_refuses_with_retry_after() -> None:
    limiter = RateLimiter()
    states = [await limiter.hit("account:1", TIER_LIMITS["free"]) for _ in range(60)]

    assert [s.remaining for s in states if s] == list(range(59, -1, -1))
    assert all(s is not None and s.limit == 60 for s in states)
    with pytest.raises(RateLimited) as refused:
        await limiter.hit("account:1", TIER_LIMITS["free"])

    error = refused.value
    assert error.status_code == 429 and error.code == "RATE_LIMITED"
    assert 1 <= int(error.headers["Retry-After"]) <= 60
    assert error.headers["X-RateLimit-Limit"] == "60"
    assert error.headers["X-RateLimit-Remaining"] == "0"
    assert 0 < int(error.headers["X-RateLimit-Reset"]) - time.time() <= 61
    assert error.details["retry_after_s"] == int(error.headers["Retry-After"])


async def test_state_reports_the_window_with_fewest_remaining() -> None:
    limiter = RateLimiter()
    first = await limiter.hit("account:1", ("5/minute", "3/hour"))
    assert first is not None
    assert (first.limit, first.remaining) == (3, 2)
    assert 3595 <= first.reset_epoch - time.time() <= 3601
    # Another key has windows of its own.
    other = await limiter.hit("account:2", ("5/minute", "3/hour"))
    assert other is not None and other.remaining == 2


async def test_enterprise_is_unlimited() -> None:
    limiter = RateLimiter()
    results = [await limiter.hit("account:1", TIER_LIMITS["enterprise"]) for _ in range(2000)]
    assert results == [None] * 2000


async def test_every_window_is_checked_before_any_is_consumed() -> None:
    limiter = RateLimiter()
    for _ in range(2):
        await limiter.hit("account:1", ("2/minute",))

    # The hour window comes first: a limiter that consumed window by window would spend from it here.
    for _ in range(3):
        with pytest.raises(RateLimited):
            await limiter.hit("account:1", ("10/hour", "2/minute"))

    state = await limiter.hit("account:1", ("10/hour",))
    assert state is not None and state.remaining == 9


async def test_refusal_waits_for_the_latest_exhausted_window() -> None:
    limiter = RateLimiter()
    await limiter.hit("account:1", ("1/minute", "1/hour"))
    with pytest.raises(RateLimited) as refused:
        await limiter.hit("account:1", ("1/minute", "1/hour"))
    assert refused.value.headers["X-RateLimit-Limit"] == "1"
    assert 3595 <= int(refused.value.headers["Retry-After"]) <= 3600


async def test_retry_after_is_honest() -> None:
    limiter = RateLimiter()
    for _ in range(2):
        await limiter.hit("ip:10.0.0.1", ("2/second",))
    with pytest.raises(RateLimited) as refused:
        await limiter.hit("ip:10.0.0.1", ("2/second",))

    retry_after_s = int(refused.value.headers["Retry-After"])
    assert retry_after_s == 1
    await asyncio.sleep(retry_after_s + 0.05)
    assert await limiter.hit("ip:10.0.0.1", ("2/second",)) is not None


async def test_concurrent_requests_never_exceed_the_limit() -> None:
    limiter = RateLimiter()

    async def attempt() -> bool:
        try:
            await limiter.hit("account:1", ("50/minute",))
        except RateLimited:
            return False
        return True

    admitted = await asyncio.gather(*(attempt() for _ in range(200)))
    assert sum(admitted) == 50


async def test_reset_forgets_counts() -> None:
    limiter = RateLimiter()
    await limiter.hit("account:1", ("1/minute",))
    await limiter.reset()
    assert await limiter.hit("account:1", ("1/minute",)) is not None


async def test_rate_limit_headers() -> None:
    state = RateLimitState(limit=60, remaining=45, reset_epoch=1704067200)
    assert rate_limit_headers(state) == {
        "X-RateLimit-Limit": "60",
        "X-RateLimit-Remaining": "45",
        "X-RateLimit-Reset": "1704067200",
    }


async def principal_from_test_headers(request: Request) -> Principal:
    if "x-account" not in request.headers:
        raise Unauthorized("Missing credentials")
    return Principal(
        account_id=int(request.headers["x-account"]), user_id=1, role="user", tier=request.headers["x-tier"]
    )


async def limited_principal(request: Request) -> Principal:
    # What the project's `current_principal` does after authenticating: count the caller.
    principal = await principal_from_test_headers(request)
    await count_principal(request, principal)
    return principal


def small_app() -> FastAPI:
    app = FastAPI()
    app.state.ratelimiter = RateLimiter()
    install_error_handlers(app)
    app.add_middleware(RateLimitHeadersMiddleware)

    @app.get("/things")
    async def list_things(principal: Annotated[Principal, Depends(limited_principal)]) -> dict[str, int]:
        return {"account_id": principal.account_id}

    @app.get("/stream", dependencies=[Depends(limited_principal)])
    async def stream() -> StreamingResponse:
        async def chunks() -> AsyncIterator[bytes]:
            for part in (b"one,", b"two,", b"three"):
                yield part

        return StreamingResponse(chunks(), media_type="text/plain")

    @app.post("/auth/login", dependencies=[Depends(enforce_anonymous_limit)])
    async def login() -> dict[str, bool]:
        return {"ok": True}

    @app.get("/open")
    async def open_route() -> dict[str, bool]:
        return {"ok": True}

    return app


@pytest.fixture
async def small_client() -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=small_app(), client=("203.0.113.7", 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
        yield c


def account(account_id: int, tier: str = "free") -> dict[str, str]:
    return {"x-account": str(account_id), "x-tier": tier}


async def test_admitted_responses_carry_rate_limit_headers(small_client: httpx.AsyncClient) -> None:
    first = await small_client.get("/things", headers=account(1))
    second = await small_client.get("/things", headers=account(1))

    assert first.status_code == 200, first.text
    assert first.headers["x-ratelimit-limit"] == "60"
    assert first.headers["x-ratelimit-remaining"] == "59"
    assert second.headers["x-ratelimit-remaining"] == "58"
    assert 0 < int(first.headers["x-ratelimit-reset"]) - time.time() <= 61
    assert first.json() == {"account_id": 1}


async def test_exhausted_tier_is_refused_in_the_default_envelope(small_client: httpx.AsyncClient) -> None:
    for _ in range(60):
        assert (await small_client.get("/things", headers=account(1))).status_code == 200

    refused = await small_client.get("/things", headers=account(1))

    assert refused.status_code == 429
    body = refused.json()
    assert set(body) == {"error", "code", "details"}
    assert body["code"] == "RATE_LIMITED"
    assert body["details"]["retry_after_s"] == int(refused.headers["retry-after"]) >= 1
    # Exactly one value per header: the error's own, not also the middleware's.
    assert refused.headers.get_list("x-ratelimit-remaining") == ["0"]
    assert refused.headers.get_list("x-ratelimit-limit") == ["60"]
    assert len(refused.headers.get_list("x-ratelimit-reset")) == 1
    # Another account still has its whole budget.
    other = await small_client.get("/things", headers=account(2))
    assert other.status_code == 200 and other.headers["x-ratelimit-remaining"] == "59"


async def test_tiers_get_their_own_limits(small_client: httpx.AsyncClient) -> None:
    pro = await small_client.get("/things", headers=account(1, "pro"))
    unknown = await small_client.get("/things", headers=account(2, "platinum"))
    enterprise = await small_client.get("/things", headers=account(3, "enterprise"))

    assert pro.headers["x-ratelimit-limit"] == "300"
    assert unknown.headers["x-ratelimit-limit"] == "60"
    assert enterprise.status_code == 200
    assert not any(name in enterprise.headers for name in RATE_LIMIT_HEADERS)


async def test_uncounted_requests_carry_no_rate_limit_headers(small_client: httpx.AsyncClient) -> None:
    unauthenticated = await small_client.get("/things")
    unlimited_route = await small_client.get("/open")

    assert unauthenticated.status_code == 401
    assert not any(name in unauthenticated.headers for name in RATE_LIMIT_HEADERS)
    assert unlimited_route.status_code == 200
    assert not any(name in unlimited_route.headers for name in RATE_LIMIT_HEADERS)


async def test_streamed_bodies_pass_through_with_headers(small_client: httpx.AsyncClient) -> None:
    r = await small_client.get("/stream", headers=account(1))
    assert r.status_code == 200
    assert r.text == "one,two,three"
    assert r.headers["x-ratelimit-remaining"] == "59"


async def test_anonymous_auth_routes_are_limited_per_ip(small_client: httpx.AsyncClient) -> None:
    for expected_remaining in range(99, -1, -1):
        r = await small_client.post("/auth/login")
        assert r.status_code == 200
        assert r.headers["x-ratelimit-remaining"] == str(expected_remaining)
    assert r.headers["x-ratelimit-limit"] == "100"
    assert 890 <= int(r.headers["x-ratelimit-reset"]) - time.time() <= 901

    refused = await small_client.post("/auth/login")
    assert refused.status_code == 429
    assert refused.json()["code"] == "RATE_LIMITED"
    assert 1 <= int(refused.headers["retry-after"]) <= 900

    # The same app seen from another address still admits.
    app = small_client._transport.app  # type: ignore[attr-defined]
    other_ip = httpx.ASGITransport(app=app, client=("198.51.100.9", 5000))
    async with httpx.AsyncClient(transport=other_ip, base_url="http://testserver") as other:
        assert (await other.post("/auth/login")).status_code == 200


async def test_no_limiter_means_rate_limiting_is_off() -> None:
    app = small_app()
    app.state.ratelimiter = None
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        responses = [await c.get("/things", headers=account(1)) for _ in range(61)]
        responses += [await c.post("/auth/login") for _ in range(101)]
    assert {r.status_code for r in responses} == {200}
    assert not any(name in r.headers for r in responses for name in RATE_LIMIT_HEADERS)


@pytest.fixture
def limited_client(app, client):
    """The project app with a fresh in-memory limiter switched on."""
    saved = app.state.ratelimiter
    app.state.ratelimiter = RateLimiter()
    yield client
    app.state.ratelimiter = saved


async def test_the_project_app_limits_every_authenticated_route_by_tier(limited_client, make_tenant) -> None:
    tenant = make_tenant()
    replies = [await limited_client.get("/api/plans", headers=tenant.headers) for _ in range(61)]
    assert [r.status_code for r in replies[:60]] == [200] * 60
    assert replies[0].headers["x-ratelimit-limit"] == "60" and replies[59].headers["x-ratelimit-remaining"] == "0"
    refused = replies[60]
    assert refused.status_code == 429 and refused.json()["code"] == "RATE_LIMITED"
    assert int(refused.headers["retry-after"]) >= 1
    other = make_tenant()
    assert (await limited_client.get("/api/plans", headers=other.headers)).status_code == 200, "limits are per account"


async def test_the_project_app_limits_anonymous_sign_in_by_ip(limited_client) -> None:
    codes = [
        (
            await limited_client.post("/api/v1/auth/login", json={"email": f"x{i}@example.com", "password": "wrong"})
        ).status_code
        for i in range(101)
    ]
    assert codes[:100] == [401] * 100 and codes[100] == 429


async def test_ten_failed_sign_ins_lock_the_login_for_a_while(limited_client) -> None:
    body = {"email": f"lock-{time.monotonic_ns()}@example.com", "password": "correct horse battery"}
    assert (await limited_client.post("/api/v1/auth/register", json=body)).status_code == 201
    for _ in range(10):
        wrong = await limited_client.post("/api/v1/auth/login", json={**body, "password": "wrong password"})
        assert wrong.status_code == 401
    right = await limited_client.post("/api/v1/auth/login", json=body)
    assert right.status_code == 429 and int(right.headers["retry-after"]) > 60
    assert right.json()["error"]["code"] == "RATE_LIMITED"
    # Another login name is not affected.
    other = {"email": f"free-{time.monotonic_ns()}@example.com", "password": "correct horse battery"}
    await limited_client.post("/api/v1/auth/register", json=other)
    assert (await limited_client.post("/api/v1/auth/login", json=other)).status_code == 200


@pytest.fixture
def client_with_redis_down(app, client):
    """The project app counting in a Redis that is not there (nothing listens on port 1)."""
    saved = app.state.ratelimiter
    app.state.ratelimiter = RateLimiter("redis://127.0.0.1:1/0")
    yield client
    app.state.ratelimiter = saved


async def test_with_the_store_down_requests_are_admitted_uncounted(client_with_redis_down, make_tenant) -> None:
    tenant = make_tenant()
    reply = await client_with_redis_down.get("/api/plans", headers=tenant.headers)
    assert reply.status_code == 200
    assert not any(name in reply.headers for name in RATE_LIMIT_HEADERS)


async def test_with_the_store_down_sign_in_is_refused_until_it_can_be_counted(client_with_redis_down) -> None:
    # Failing open here would let a password guesser go uncounted: 503 in the face's envelope, with Retry-After.
    reply = await client_with_redis_down.post(
        "/api/v1/auth/login", json={"email": "nobody@example.com", "password": "whatever it is"}
    )
    assert reply.status_code == 503, reply.text
    assert reply.json()["error"]["code"] == "SERVICE_UNAVAILABLE" and reply.headers["retry-after"] == "5"


async def test_failed_sign_ins_count_per_account_whichever_name_is_used(limited_client) -> None:
    stamp = time.monotonic_ns()
    body = {"email": f"Acct-{stamp}@example.com", "username": f"acct{stamp}", "password": "correct horse battery"}
    assert (await limited_client.post("/api/v1/auth/register", json=body)).status_code == 201
    # Ten failures spread over the email in two cases, the username and the OAuth form.
    names = [body["email"], body["email"].lower(), body["email"].upper(), body["username"]] * 2 + [body["username"]]
    for name in names:
        wrong = await limited_client.post("/api/v1/auth/login", json={"username": name, "password": "wrong password"})
        assert wrong.status_code == 401, wrong.text
    form = await limited_client.post("/api/v1/auth/token", data={"username": body["email"], "password": "wrong one"})
    assert form.status_code == 401
    for name in (body["username"], body["email"].lower()):
        right = await limited_client.post("/api/v1/auth/login", json={"username": name, "password": body["password"]})
        assert right.status_code == 429, (name, right.text)
    right = await limited_client.post(
        "/api/v1/auth/token", data={"username": body["username"], "password": body["password"]}
    )
    assert right.status_code == 429


async def test_unknown_names_are_locked_like_known_ones(limited_client) -> None:
    stamp = time.monotonic_ns()
    known = {"email": f"known-{stamp}@example.com", "password": "correct horse battery"}
    assert (await limited_client.post("/api/v1/auth/register", json=known)).status_code == 201
    unknown = f"nobody-{stamp}@example.com"
    replies: dict[str, list[int]] = {}
    for name in (known["email"], unknown):
        replies[name] = [
            (await limited_client.post("/api/v1/auth/login", json={"email": name, "password": "wrong"})).status_code
            for _ in range(11)
        ]
    assert replies[known["email"]] == replies[unknown] == [401] * 10 + [429]

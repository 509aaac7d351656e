"""Per-tier request limits on the `limits` library: in process memory by default, Redis when several API processes
must share one budget; a refusal is a `RateLimited` (429) carrying `Retry-After` and `X-RateLimit-*` headers."""

from __future__ import annotations

import logging
import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from functools import cache
from typing import Any

from fastapi import Request
from limits import RateLimitItem, parse
from limits.aio.storage import RedisStorage
from limits.aio.strategies import MovingWindowRateLimiter as AsyncMovingWindow
from limits.storage import MemoryStorage
from limits.strategies import MovingWindowRateLimiter as MovingWindow
from limits.util import WindowStats
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudplane.domain.errors import RateLimited, ServiceUnavailable, Unauthorized
from cloudplane.observability import rate_limit_refused
from cloudplane.services.accounts import Principal
from cloudplane.services.auth import login_subject

log = logging.getLogger(__name__)

# VibeCaaS "Rate Limits": requests per minute and per hour; enterprise is unlimited.
TIER_LIMITS: dict[str, tuple[str, ...]] = {
    "free": ("60/minute", "1000/hour"),
    "hobby": ("120/minute", "2000/hour"),
    "pro": ("300/minute", "5000/hour"),
    "team": ("600/minute", "10000/hour"),
    "enterprise": (),
}

# CloudVPS "Rate Limiting": 100 requests per 15-minute window per IP address (the anonymous auth routes).
ANONYMOUS_AUTH_LIMIT = "100/15 minutes"

STATE_KEY = "ratelimit"


@dataclass(frozen=True)
class RateLimitState:
    """The most constraining window after a request was admitted (the one with the fewest requests left)."""

    limit: int
    remaining: int
    reset_epoch: int


def rate_limit_headers(state: RateLimitState) -> dict[str, str]:
    return {
        "X-RateLimit-Limit": str(state.limit),
        "X-RateLimit-Remaining": str(state.remaining),
        "X-RateLimit-Reset": str(state.reset_epoch),
    }


# Limit strings come from a handful of constants, so each is parsed once for the life of the process.
_parse_item = cache(parse)


class _InlineStrategy:
    """The synchronous in-memory strategy behind the async interface. Its calls never suspend, so a whole `hit`
    (check every window, then consume) runs without the event loop switching to another request: atomic within a
    process, and without the thread hop an executor would add to every request."""

    def __init__(self, strategy: MovingWindow) -> None:
        self.strategy = strategy

    async def get_window_stats(self, item: RateLimitItem, *identifiers: str) -> WindowStats:
        return self.strategy.get_window_stats(item, *identifiers)

    async def hit(self, item: RateLimitItem, *identifiers: str) -> bool:
        return self.strategy.hit(item, *identifiers)


class RateLimiter:
    """Counts requests per key against one or more windows (e.g. per minute and per hour).

    Moving window rather than fixed window: it is exact (never more than N requests in any span of the window,
    where a fixed window admits up to 2N around a window boundary), a refused request writes nothing, and the
    reset time is when the oldest counted request leaves the window, so `Retry-After` is precise. Its cost is one
    timestamp per admitted request per window (at most 10,000 for the team tier's hour), which this service's
    account counts afford. On Redis each acquire is one Lua script (read the N-th newest entry, push if it is
    outside the window), so two processes can never both take the last slot.
    """

    def __init__(self, redis_url: str | None = None, *, key_prefix: str = "cloudplane-ratelimit") -> None:
        self._storage: MemoryStorage | RedisStorage
        self._strategy: _InlineStrategy | AsyncMovingWindow
        self._redis_pool: Any = None
        # What a store that cannot be reached raises (memory never does).
        self._store_errors: tuple[type[BaseException], ...] = (OSError,)
        self._last_store_warning = 0.0
        if redis_url:
            import redis.asyncio  # the optional `redis` extra; only needed when a Redis URL is configured
            import redis.exceptions

            # Our own pool, so shutdown can close it without reaching into limits' internals. Short timeouts: a
            # Redis that hangs must not hang every request with it.
            self._redis_pool = redis.asyncio.ConnectionPool.from_url(
                redis_url.removeprefix("async+"), socket_connect_timeout=1.0, socket_timeout=1.0
            )
            self._store_errors = (OSError, redis.exceptions.RedisError)
            # limits selects its async storage by the `async+` scheme, and would default to the coredis client.
            self._storage = RedisStorage(
                "async+" + redis_url.removeprefix("async+"),
                implementation="redispy",
                key_prefix=key_prefix,
                connection_pool=self._redis_pool,
            )
            self._strategy = AsyncMovingWindow(self._storage)
        else:
            self._storage = MemoryStorage()
            self._strategy = _InlineStrategy(MovingWindow(self._storage))

    async def hit(
        self, key: str, limits: Sequence[str], *, fail_open: bool = True, refusing: bool = True
    ) -> RateLimitState | None:
        """Count one request for `key` in every window of `limits`; None when `limits` is empty (unlimited).

        When the store cannot be reached the request is admitted uncounted (fail open: a Redis outage must not
        take the API down with it), or with `fail_open=False` refused with 503 and Retry-After.

        Raises RateLimited when any window is exhausted (counted in /metrics as a refusal unless `refusing` is
        False: a caller that only records something, and ignores a full window, refuses no one). Every window is checked before any is consumed, so a
        refused request costs nothing. With Redis another process may take the last slot between the check and
        the consume; windows are consumed most constrained first so that race almost always refuses before
        consuming anything, and each consume is atomic, so no window ever admits more than its limit.
        """
        if not limits:
            return None
        items = [_parse_item(text) for text in limits]
        try:
            stats = {item: await self._strategy.get_window_stats(item, key) for item in items}
            exhausted = [item for item in items if stats[item].remaining < 1]
            if exhausted:
                raise _refusal(key, exhausted, stats, counted=refusing)
            for item in sorted(items, key=lambda item: stats[item].remaining):
                if not await self._strategy.hit(item, key):
                    stats_now = {item: await self._strategy.get_window_stats(item, key)}
                    raise _refusal(key, [item], stats_now, counted=refusing)
        except self._store_errors as error:
            self._store_unreachable(error, fail_open)
            return None
        return _state_after_hit(items, stats)

    async def check(self, key: str, limits: Sequence[str], *, fail_open: bool = True) -> None:
        """Raise RateLimited if any window of `limits` is exhausted for `key`, without counting anything."""
        items = [_parse_item(text) for text in limits]
        try:
            stats = {item: await self._strategy.get_window_stats(item, key) for item in items}
        except self._store_errors as error:
            self._store_unreachable(error, fail_open)
            return
        exhausted = [item for item in items if stats[item].remaining < 1]
        if exhausted:
            raise _refusal(key, exhausted, stats)

    def _store_unreachable(self, error: BaseException, fail_open: bool) -> None:
        now = time.monotonic()
        if now - self._last_store_warning > 30:  # once in a while, not once per request
            self._last_store_warning = now
            log.warning("rate-limit store unreachable (%s); %s", error, "admitting" if fail_open else "refusing")
        if not fail_open:
            raise ServiceUnavailable(
                "The rate-limit store cannot be reached, so this request, which must be counted, cannot be served "
                "now; try again shortly",
                retry_after_s=5,
            )

    async def reset(self) -> None:
        """Forget every count (tests). On Redis this deletes only the keys under this limiter's `key_prefix`."""
        if isinstance(self._storage, RedisStorage):
            await self._storage.reset()
        else:
            self._storage.reset()

    async def aclose(self) -> None:
        """Close the Redis connections (call at application shutdown); nothing to do in memory."""
        if self._redis_pool is not None:
            await self._redis_pool.aclose()


def _state_after_hit(items: list[RateLimitItem], stats: dict[RateLimitItem, WindowStats]) -> RateLimitState:
    now = time.time()
    states = []
    for item in items:
        before = stats[item]
        # An empty window has no oldest request: this one starts it (limits then reports a meaningless start).
        reset = before.reset_time if before.remaining < item.amount else now + item.get_expiry()
        states.append(RateLimitState(item.amount, before.remaining - 1, math.ceil(reset)))
    return min(states, key=lambda state: (state.remaining, -state.reset_epoch))


# The metrics' name for what a key counts, by its prefix.
_REFUSAL_SCOPES = {"account": "account", "ip": "ip", "login-failures": "login"}


def _refusal(
    key: str, exhausted: list[RateLimitItem], stats: dict[RateLimitItem, WindowStats], *, counted: bool = True
) -> RateLimited:
    """The 429 for `key`, counted in /metrics under the scope the key's prefix names."""
    if counted:
        prefix = key.partition(":")[0]
        rate_limit_refused(_REFUSAL_SCOPES.get(prefix, prefix))
    # The request can pass only once every exhausted window has a free slot, so wait for the latest of them.
    item = max(exhausted, key=lambda item: stats[item].reset_time)
    reset = stats[item].reset_time
    retry_after_s = max(1, math.ceil(reset - time.time()))
    error = RateLimited(
        f"Rate limit exceeded: {item.amount} requests per {_window_text(item)}. Retry in {retry_after_s} s.",
        retry_after_s=retry_after_s,
        limit=item.amount,
        window=_window_text(item),
    )
    error.headers.update(rate_limit_headers(RateLimitState(item.amount, 0, math.ceil(reset))))
    return error


def _window_text(item: RateLimitItem) -> str:
    unit = item.GRANULARITY.name
    return unit if item.multiples == 1 else f"{item.multiples} {unit}s"


class RateLimitHeadersMiddleware:
    """Adds `X-RateLimit-*` to a response whose request was counted: a rate-limit dependency left its
    `RateLimitState` in `request.state`, which Starlette keeps in `scope["state"]`. Headers only; bodies pass
    through untouched."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        # Create the dict here so the route's `request.state` and this middleware share the same object.
        request_state: dict[str, Any] = scope.setdefault("state", {})

        async def send_with_headers(message: Message) -> None:
            state = request_state.get(STATE_KEY)
            if message["type"] == "http.response.start" and isinstance(state, RateLimitState):
                extra = [(name.lower().encode(), value.encode()) for name, value in rate_limit_headers(state).items()]
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def _limiter(request: Request) -> RateLimiter | None:
    # None is the explicit "rate limiting off" (the test suite, benchmarks); a missing attribute is a wiring bug.
    return request.app.state.ratelimiter


async def count_principal(request: Request, principal: Principal) -> None:
    """Count the request against the caller's account and tier; an unknown tier gets the free tier's limits.
    Called by the authentication dependency, so every authenticated route is limited."""
    limiter = _limiter(request)
    if limiter is not None:
        state = await limiter.hit(
            f"account:{principal.account_id}", TIER_LIMITS.get(principal.tier, TIER_LIMITS["free"])
        )
        if state is not None:
            request.state.ratelimit = state


# Failed sign-ins per account, whichever name it signs in with (email, username, any case of the email), and per
# name for names no account has, so known and unknown names answer alike: after ten in fifteen minutes even the
# right password waits. The per-IP limit of the sign-in routes bounds guessing across many accounts.
LOGIN_FAILURE_LIMIT = ("10/15 minutes",)


@asynccontextmanager
async def login_attempt(request: Request, login: str) -> AsyncIterator[None]:
    """Wrap a password check: refuse while the account `login` names (or the unknown name) has too many recent
    failures, count a failure (Unauthorized)."""
    limiter = _limiter(request)
    key = ""
    if limiter is not None:
        subject = await run_in_threadpool(login_subject, request.app.state.core.db, login)
        key = f"login-failures:{subject}"
        # Fail closed: with the store down a password guesser would otherwise go uncounted.
        await limiter.check(key, LOGIN_FAILURE_LIMIT, fail_open=False)
    try:
        yield
    except Unauthorized:
        if limiter is not None:
            with suppress(RateLimited):  # already full: the failure is on record
                await limiter.hit(key, LOGIN_FAILURE_LIMIT, refusing=False)
        raise


async def enforce_anonymous_limit(request: Request) -> None:
    """Count the request against the client's IP address (behind a proxy, name it in CLOUDPLANE_TRUSTED_PROXIES
    so the address is the client's, not the proxy's)."""
    limiter = _limiter(request)
    if limiter is not None:
        host = request.client.host if request.client else "unknown"
        request.state.ratelimit = await limiter.hit(f"ip:{host}", (ANONYMOUS_AUTH_LIMIT,))

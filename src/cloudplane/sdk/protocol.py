"""The SDK's sans-IO core: what to send, whether and when to send it again, and what a reply means. It does no
I/O itself; every call is a generator (a "plan") that yields instructions, a `Request` to exchange or a `Sleep`,
and receives their outcome. The sync and async clients only carry instructions out, so this rule lives once."""

from __future__ import annotations

import json
import random
import uuid
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from decimal import Decimal
from email.utils import parsedate_to_datetime
from typing import Any, TypeVar

from cloudplane.sdk.errors import ConnectionFailed, error_from_reply

T = TypeVar("T")

IDEMPOTENCY_HEADER = "Idempotency-Key"
# Methods whose repetition changes nothing more than the first call did (RFC 9110 9.2.2).
IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "PUT", "DELETE"})


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    json: Any = None
    params: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def post(cls, path: str, body: Any = None) -> Request:
        """A POST carrying a fresh Idempotency-Key: one key per logical call, the same on each of its retries, so
        the service runs it at most once however often it is sent."""
        return cls("POST", path, json=body, headers={IDEMPOTENCY_HEADER: str(uuid.uuid4())})

    @property
    def safe_to_repeat(self) -> bool:
        """Idempotent by method, or a POST/PATCH the service deduplicates by its Idempotency-Key. A POST without
        the key is never sent twice: the service may have acted on the first one."""
        return self.method in IDEMPOTENT_METHODS or IDEMPOTENCY_HEADER in self.headers


@dataclass(frozen=True)
class Reply:
    status: int
    headers: dict[str, str]  # names in lower case
    body: bytes

    def data(self) -> Any:
        """The JSON body, numbers with a fraction as Decimal (prices stay exact), or None if there is none."""
        if not self.body:
            return None
        try:
            return json.loads(self.body, parse_float=Decimal)
        except ValueError:
            return {"error": self.body.decode("utf-8", "replace")[:500]}

    def retry_after(self) -> float | None:
        """Retry-After in seconds, given as seconds or as an HTTP date."""
        value = self.headers.get("retry-after")
        if not value:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            pass
        try:
            from datetime import UTC, datetime

            return max(0.0, (parsedate_to_datetime(value) - datetime.now(UTC)).total_seconds())
        except (TypeError, ValueError):
            return None


@dataclass(frozen=True)
class TransportFailure:
    """The exchange failed before any reply (connection refused or reset, timeout)."""

    error: str


@dataclass(frozen=True)
class Sleep:
    seconds: float


Outcome = Reply | TransportFailure | None
Plan = Generator[Request | Sleep, Outcome, T]


@dataclass(frozen=True)
class RetryPolicy:
    """When to send a request again: on 429 and 503 (and a 409 the service marks with Retry-After while it is
    still running the same Idempotency-Key), and on transport failures, only for requests safe to repeat. Waits
    grow from `base_s`, doubling, capped at `cap_s`, each a random half to all of that (jitter); a Retry-After the
    service gives is waited for in full, unless it is longer than `max_retry_after_s` (then the error is raised
    with its retry_after, for the caller to decide)."""

    attempts: int = 5
    base_s: float = 0.5
    cap_s: float = 30.0
    max_retry_after_s: float = 120.0
    random: Callable[[], float] = random.random

    def delay(self, request: Request, outcome: Reply | TransportFailure, attempt: int) -> float | None:
        """Seconds to wait before sending `request` again after its `attempt`-th outcome; None: don't."""
        if attempt >= self.attempts or not request.safe_to_repeat:
            return None
        retry_after = None
        if isinstance(outcome, Reply):
            retry_after = outcome.retry_after()
            busy_with_same_key = (
                outcome.status == 409 and retry_after is not None and IDEMPOTENCY_HEADER in request.headers
            )
            if outcome.status not in (429, 503) and not busy_with_same_key:
                return None
        ceiling = min(self.cap_s, self.base_s * 2 ** (attempt - 1))
        backoff = ceiling * (0.5 + self.random() / 2)
        if retry_after is None:
            return backoff
        if retry_after > self.max_retry_after_s:
            return None
        return retry_after + backoff / 10  # never earlier than asked; a little spread so callers don't stampede


def exchange(request: Request, policy: RetryPolicy) -> Plan[Reply]:
    """Send `request`, again while `policy` says so; the last reply (of any status)."""
    attempt = 0
    while True:
        attempt += 1
        outcome = yield request
        assert outcome is not None
        wait = policy.delay(request, outcome, attempt)
        if wait is None:
            if isinstance(outcome, TransportFailure):
                raise ConnectionFailed(f"{request.method} {request.path}: {outcome.error}", code="CONNECTION_FAILED")
            return outcome
        yield Sleep(wait)


def call(request: Request, policy: RetryPolicy) -> Plan[tuple[Any, Reply]]:
    """Send `request` (with retries); its JSON body and reply, or the typed error an error reply means."""
    reply = yield from exchange(request, policy)
    data = reply.data()
    if reply.status >= 400:
        raise error_from_reply(reply.status, data, reply.retry_after())
    return data, reply


@dataclass
class Done:
    value: Any


def advance(plan: Plan[Any], outcome: Outcome) -> Request | Sleep | Done:
    """Give `plan` the outcome of its last instruction; its next instruction, or Done with its result."""
    try:
        return plan.send(outcome)
    except StopIteration as finished:
        return Done(finished.value)

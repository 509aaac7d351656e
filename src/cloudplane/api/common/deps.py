"""Dependencies every face uses: the Core, the calling principal, pagination."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

from fastapi import Depends, Query, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool

from cloudplane import context
from cloudplane.api.common.ids import MAX_ID, Id
from cloudplane.api.common.ratelimit import count_principal
from cloudplane.core import Core
from cloudplane.domain.errors import Unauthorized
from cloudplane.observability import METRICS
from cloudplane.services.accounts import Principal, authenticate_api_key, cached_principal
from cloudplane.services.auth import authenticate_access_token, cached_access_principal, looks_like_jwt

T = TypeVar("T")


async def get_core(request: Request) -> Core:
    return request.app.state.core


CoreDep = Annotated[Core, Depends(get_core)]


def bearer_token(authorization: str | None) -> str | None:
    """The credential of an `Authorization: Bearer <credential>` header, or None for any other header."""
    scheme, _, credentials = (authorization or "").partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


async def principal_from_header(core: Core, authorization: str | None) -> Principal:
    """Who sends this `Authorization` header; raises Unauthorized. Also used by middleware (idempotency)."""
    token = bearer_token(authorization)
    if token is None:
        raise Unauthorized("Missing credentials: send `Authorization: Bearer <your API key or access token>`")
    return await principal_from_token(core, token)


def request_credential(headers: Mapping[str, str]) -> str | None:
    """The credential a request carries: the bearer of `Authorization`, else (the native LetsCloud dialect's way)
    the `api-token` header when there is no `Authorization`. For middleware that must know the caller before the
    route does (idempotency); routes read the header of their own face."""
    if "authorization" in headers:
        return bearer_token(headers["authorization"])
    return (headers.get("api-token") or "").strip() or None


async def principal_from_token(core: Core, token: str) -> Principal:
    """Who holds this credential (an API key or an access token), however the face carries it; raises
    Unauthorized."""
    # A recently verified key or token costs no I/O and no thread hop; a miss does its database work in the
    # threadpool. Either kind of credential works on every face.
    if looks_like_jwt(token):
        if (principal := cached_access_principal(core.db, token)) is not None:
            return principal
        return await run_in_threadpool(authenticate_access_token, core.db, token)
    if (principal := cached_principal(token)) is not None:
        return principal
    return await run_in_threadpool(authenticate_api_key, core.db, token)


async def current_principal(request: Request, core: CoreDep) -> Principal:
    """The authenticated caller, counted against the rate limit of their tier."""
    principal = await principal_from_header(core, request.headers.get("authorization"))
    context.bind(actor_user_id=principal.user_id)
    await count_principal(request, principal)
    return principal


PrincipalDep = Annotated[Principal, Depends(current_principal)]


__all__ = ["MAX_ID", "Id"]  # the id rule lives in ids.py; faces import it from here too


@dataclass(frozen=True)
class Pagination:
    page: int
    per_page: int


async def pagination(
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1")] = 1,
    per_page: Annotated[int, Query(ge=1, le=100, description="Items per page (at most 100)")] = 20,
) -> Pagination:
    return Pagination(page=page, per_page=per_page)


PageDep = Annotated[Pagination, Depends(pagination)]


# How long a read may hold the event loop before it is moved off it (see `read`), and how long a read that was
# moved then goes straight to a thread, rather than spend its budget on the loop again first.
INLINE_READ_BUDGET_S = 0.01
MOVED_READS_STAY_S = 30.0
_moved_until: dict[Callable[..., Any], float] = {}


async def read(core: Core, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a read-only service call from an async route. On SQLite it runs inline: a WAL read never waits on a
    lock and most take well under a millisecond, less than the thread hand-off would (a hop per request halved
    throughput in bench/). A read still running after INLINE_READ_BUDGET_S is interrupted by SQLite and run again
    on a thread (a read is safe to repeat), so one slow read never holds up the requests behind it; calls of the
    same service function then go to a thread at once for MOVED_READS_STAY_S. On PostgreSQL each query is a
    network round trip, so it goes to the threadpool."""
    if core.db.is_sqlite and _moved_until.get(fn, 0.0) < time.monotonic():
        with core.db.read_budget(INLINE_READ_BUDGET_S) as budget:
            try:
                return fn(*args, **kwargs)
            except Exception:
                if not budget.tripped:
                    raise
        _moved_until[fn] = time.monotonic() + MOVED_READS_STAY_S
        METRICS.reads_moved_off_loop.inc()
    return await run_in_threadpool(fn, *args, **kwargs)


async def write(core: Core, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a service call that writes, from an async route. On SQLite it runs inline, like the workflows on the
    same loop: a write transaction is short, writers of the process queue on the file's lock, and handing the call
    to a thread and back costs more than it does (each hand-off between two busy threads can wait out the GIL's
    5 ms switch interval). Several processes sharing one SQLite file wait on each other inside SQLite; use
    PostgreSQL for that. On PostgreSQL each query is a network round trip, so it goes to the threadpool."""
    if core.db.is_sqlite:
        return fn(*args, **kwargs)
    return await run_in_threadpool(fn, *args, **kwargs)


def reply(model: BaseModel, status_code: int = 200) -> Response:
    """Serialize a response model once, in pydantic's Rust core. Returning the model itself would make FastAPI
    validate it again against `response_model` (a deep copy of every nested object) before serializing."""
    return Response(model.model_dump_json(), status_code=status_code, media_type="application/json")

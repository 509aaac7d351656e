"""Who and what the current request is, for code far from the request (events, audit log, logs, headers).

The request middleware calls `begin(...)` at the start of each request and `end(...)` after it; the
authentication dependency binds the caller; services read it when they record events and bind the operation they
accepted; log lines take the request id from it. Outside a request (workflows, the reconciler) every value is None.

The holder is one mutable object per request, not a new value per `bind`: sync routes run in a worker thread
on a copy of the context, and what they bind (the operation they accepted) must still reach the middleware.
"""

from __future__ import annotations

from contextvars import ContextVar, Token
from dataclasses import dataclass


@dataclass
class RequestContext:
    request_id: str | None = None
    client_ip: str | None = None
    # The authenticated caller, once known.
    actor_user_id: int | None = None
    # The long action this request accepted, for the reply's Operation-Location header.
    operation_id: str | None = None


_current: ContextVar[RequestContext] = ContextVar("cloudplane_request")


def current() -> RequestContext:
    try:
        return _current.get()
    except LookupError:
        holder = RequestContext()
        _current.set(holder)
        return holder


def bind(**values: object) -> None:
    """Add to the current request's context."""
    holder = current()
    for name, value in values.items():
        if not hasattr(holder, name):
            raise AttributeError(f"RequestContext has no field {name!r}")
        setattr(holder, name, value)


def begin(request_id: str, client_ip: str | None) -> Token[RequestContext]:
    """Give the request starting in this context a holder of its own, never one shared with concurrent requests."""
    return _current.set(RequestContext(request_id=request_id, client_ip=client_ip))


def end(token: Token[RequestContext]) -> None:
    """Back to what this context held before `begin`."""
    _current.reset(token)


def request_id() -> str | None:
    """The current request's id, or None outside a request (and without making a holder, as `current()` would)."""
    holder = _current.get(None)
    return holder.request_id if holder is not None else None

"""Request bodies capped while they stream in: past the cap the app sees no more bytes and the caller gets a 413
in the envelope of the face that owns the path."""

from __future__ import annotations

import re
from collections.abc import Sequence

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudplane.api.common.faces import render_error
from cloudplane.domain.errors import PayloadTooLarge

DEFAULT_MAX_BYTES = 1024 * 1024


class BodyTooLargeSignal(HTTPException):
    """Raised from `receive` once the cap is passed. An HTTPException, so FastAPI's body parsing re-raises it as
    is (anything else it turns into a 400) and its handlers answer quietly; their reply is dropped for ours."""

    def __init__(self) -> None:
        super().__init__(status_code=413, detail="Request body too large")


def _size(n: int) -> str:
    if n % (1024 * 1024) == 0:
        return f"{n // (1024 * 1024)} MiB"
    if n % 1024 == 0:
        return f"{n // 1024} KiB"
    return f"{n} bytes"


def _content_length(scope: Scope) -> int | None:
    values = [v for k, v in scope.get("headers", ()) if k == b"content-length"]
    if len(values) != 1:
        return None
    try:
        return int(values[0])
    except ValueError:
        return None


def _has_transfer_encoding(scope: Scope) -> bool:
    return any(k == b"transfer-encoding" for k, _ in scope.get("headers", ()))


class BodyLimitMiddleware:
    """Answer 413 when a request body passes `max_bytes`: at once from Content-Length, else while counting.
    `larger` gives the few routes that carry files a limit of their own: (a regular expression the whole path
    matches, its limit in bytes)."""

    def __init__(
        self, app: ASGIApp, max_bytes: int = DEFAULT_MAX_BYTES, larger: Sequence[tuple[str, int]] = ()
    ) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.larger = [(re.compile(pattern), limit) for pattern, limit in larger]

    def limit_for(self, path: str) -> int:
        for pattern, limit in self.larger:
            if pattern.fullmatch(path):
                return limit
        return self.max_bytes

    def error(self, limit: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"Request body too large: the limit is {_size(limit)}", limit_bytes=limit)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        max_bytes = self.limit_for(scope.get("path", ""))
        length = _content_length(scope)
        if length is not None and length > max_bytes:
            await render_error(scope, self.error(max_bytes))(scope, receive, send)
            return
        if length is not None or not _has_transfer_encoding(scope):
            # The server hands the app at most Content-Length bytes, and none without it unless the body comes in
            # chunks: only a chunked body needs counting (and only its request pays for the wrappers).
            await self.app(scope, receive, send)
            return

        received = 0
        overflowed = False
        started = False

        async def limited_receive() -> Message:
            nonlocal received, overflowed
            if overflowed:
                raise BodyTooLargeSignal
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > max_bytes:
                    overflowed = True
                    raise BodyTooLargeSignal
            return message

        async def guarded_send(message: Message) -> None:
            nonlocal started
            # Whatever the app answers to the interrupted body (its own 413, a 400, a 500) gives way to our 413.
            if overflowed and not started:
                return
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not overflowed or started:
                raise
        if overflowed and not started:
            await render_error(scope, self.error(max_bytes))(scope, receive, send)

"""`/mcp`: the MCP tools over streamable HTTP, for the bearer's account (an API key or an access token, as on
every face), counted against the caller's rate limit like any request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from cachetools import TTLCache
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http import MCP_SESSION_ID_HEADER
from mcp.server.streamable_http_manager import (
    DEFAULT_MAX_SESSIONS,
    DEFAULT_SESSION_IDLE_TIMEOUT,
    StreamableHTTPASGIApp,
)
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from cloudplane.api.common.deps import principal_from_header
from cloudplane.api.common.faces import render_error
from cloudplane.api.common.ratelimit import count_principal
from cloudplane.domain.errors import CloudplaneError, NotFound, ServiceUnavailable, Unauthorized
from cloudplane.mcp.server import Caller, build_server

PATH = "/mcp"
# Where the verified caller of a request waits for the tools that request calls.
_PRINCIPAL = "cloudplane.principal"


async def identify(ctx: Context) -> Caller:
    """The caller of this tool call: the principal the endpoint verified for the HTTP request that carries it."""
    scope = getattr(ctx.request_context.request, "scope", None) or {}
    principal = scope.get(_PRINCIPAL)
    if principal is None:  # never reached through the endpoint, which refuses such requests
        raise Unauthorized("Missing credentials: send `Authorization: Bearer <your API key or access token>`")
    return Caller(core=scope["app"].state.core, principal=principal)


class McpEndpoint:
    """The ASGI endpoint of `/mcp`: checks the bearer, then hands the request to the SDK's session manager."""

    def __init__(self) -> None:
        self.server: MCPServer = build_server(identify)
        self.sessions: StreamableHTTPASGIApp | None = None
        # Each session's account, noted when its id is handed out: a session opened with one account's credentials
        # is unknown to any other (its server-to-client requests, elicitations, go to its owner only). Kept as long
        # as the SDK keeps an idle session, and renewed by each request that uses it.
        self._owners: TTLCache[str, int] = TTLCache(maxsize=DEFAULT_MAX_SESSIONS, ttl=DEFAULT_SESSION_IDLE_TIMEOUT)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Run a session manager for the app's lifetime (its lifespan enters this; a manager runs only once)."""
        # The SDK's Starlette app is not used, only the session manager it makes. DNS-rebinding protection is off: it
        # guards servers that trust any local caller, and every request here must carry the caller's own bearer.
        self.server.streamable_http_app(
            streamable_http_path=PATH,
            transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
        )
        manager = self.server.session_manager
        async with manager.run():
            self.sessions = StreamableHTTPASGIApp(manager)
            try:
                yield
            finally:
                self.sessions = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope)
        try:
            principal = await principal_from_header(request.app.state.core, request.headers.get("authorization"))
            await count_principal(request, principal)
        except CloudplaneError as e:
            if isinstance(e, Unauthorized):
                e.headers.setdefault("WWW-Authenticate", 'Bearer realm="cloudplane"')
            await render_error(scope, e)(scope, receive, send)
            return
        if self.sessions is None:
            await render_error(scope, ServiceUnavailable("MCP is not running in this process yet"))(
                scope, receive, send
            )
            return
        session_id = request.headers.get(MCP_SESSION_ID_HEADER)
        if session_id is not None and self._owners.get(session_id, principal.account_id) != principal.account_id:
            # Another account's session is as unknown here as one that never existed (the SDK's own answer).
            await render_error(scope, NotFound("Session not found", session_id=session_id))(scope, receive, send)
            return
        scope[_PRINCIPAL] = principal
        await self.sessions(scope, receive, send_claiming(send, self._owners, principal.account_id))


def send_claiming(send: Send, owners: TTLCache[str, int], account_id: int) -> Send:
    """`send`, noting the account of the session a reply names (the one it opens, or one already the account's)."""

    async def claiming(message: Message) -> None:
        if message["type"] == "http.response.start":
            for name, value in message.get("headers", ()):
                if name.lower() == MCP_SESSION_ID_HEADER.encode():
                    owners[value.decode("latin-1")] = account_id
        await send(message)

    return claiming

"""`/mcp`: the MCP tools over streamable HTTP, for the bearer's account (an API key or an access token, as on
every face), counted against the caller's rate limit like any request."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from mcp.server.mcpserver import Context, MCPServer
from mcp.server.streamable_http_manager import StreamableHTTPASGIApp
from mcp.server.transport_security import TransportSecuritySettings
from starlette.requests import Request
from starlette.types import Receive, Scope, Send

from cloudplane.api.common.deps import principal_from_header
from cloudplane.api.common.faces import render_error
from cloudplane.api.common.ratelimit import count_principal
from cloudplane.domain.errors import CloudplaneError, ServiceUnavailable, Unauthorized
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
        scope[_PRINCIPAL] = principal
        await self.sessions(scope, receive, send)

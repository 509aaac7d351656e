"""The ASGI application: every face mounted on one Core, plus health and the API documents."""

from __future__ import annotations

import asyncio
import functools
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import yaml
from fastapi import FastAPI, Request, routing
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.openapi.utils import get_openapi
from fastapi.responses import HTMLResponse, JSONResponse, Response
from sqlalchemy import text
from starlette.middleware.cors import CORSMiddleware
from starlette.routing import Route
from starlette.types import ASGIApp

from cloudplane import __version__
from cloudplane.api.accounts.routes import router as accounts_router
from cloudplane.api.cloudvps.admin import router as cloudvps_admin_router
from cloudplane.api.cloudvps.backups import router as cloudvps_backups_router
from cloudplane.api.cloudvps.billing import router as cloudvps_billing_router
from cloudplane.api.cloudvps.envelope import cloudvps_renderer
from cloudplane.api.cloudvps.monitoring import router as cloudvps_monitoring_router
from cloudplane.api.cloudvps.network import router as cloudvps_network_router
from cloudplane.api.cloudvps.support import BODY_LIMITS as SUPPORT_BODY_LIMITS
from cloudplane.api.cloudvps.support import admin_router as cloudvps_support_admin_router
from cloudplane.api.cloudvps.support import router as cloudvps_support_router
from cloudplane.api.cloudvps.users import router as cloudvps_users_router
from cloudplane.api.cloudvps.vps import router as cloudvps_vps_router
from cloudplane.api.cloudvps.webhooks import router as cloudvps_webhooks_router
from cloudplane.api.common.bodylimit import BodyLimitMiddleware
from cloudplane.api.common.faces import default_renderer, install_error_handlers, register_dialect, register_prefix
from cloudplane.api.common.idempotency import IdempotencyMiddleware
from cloudplane.api.common.ratelimit import RateLimiter, RateLimitHeadersMiddleware
from cloudplane.api.console import router as console_router
from cloudplane.api.gpumgr.routes import router as gpumgr_router
from cloudplane.api.letscloud.openapi_doc import build_openapi
from cloudplane.api.letscloud.routes import router as letscloud_router
from cloudplane.api.letscloud_native import routes as letscloud_native
from cloudplane.api.letscloud_native.envelope import is_native, native_renderer
from cloudplane.api.operations.audit import router as audit_router
from cloudplane.api.operations.routes import OperationLocationMiddleware
from cloudplane.api.operations.routes import letscloud_router as letscloud_operations_router
from cloudplane.api.operations.routes import v1_router as operations_router
from cloudplane.api.payments.routes import router as payments_router
from cloudplane.api.payments.routes import vibecaas_router as subscription_router
from cloudplane.api.vibecaas.apps import router as vibecaas_apps_router
from cloudplane.api.vibecaas.deployments import router as vibecaas_deployments_router
from cloudplane.api.vibecaas.users import router as vibecaas_users_router
from cloudplane.config import Settings, get_settings
from cloudplane.core import Core
from cloudplane.dashboard import router as dashboard_router
from cloudplane.db.migrate import upgrade
from cloudplane.loopwatch import start_loop_watch
from cloudplane.mcp.http import PATH as MCP_PATH
from cloudplane.mcp.http import McpEndpoint
from cloudplane.observability import RequestObservabilityMiddleware, configure_logging
from cloudplane.observability import router as metrics_router
from cloudplane.services.accounts import bootstrap_admin_key
from cloudplane.services.catalog import assign_location_providers, seed_catalog
from cloudplane.services.mail import start_mail_sender
from cloudplane.workflows import engine
from cloudplane.workflows.reconciler import start_reconciler
from cloudplane.workflows.webhooks import start_sender

log = logging.getLogger(__name__)


def prepare(core: Core) -> str | None:
    """Migrate, seed the catalog, put each location on its provider, and on an empty database return a one-time
    admin API key."""
    upgrade(core.settings.database_url)
    seed_catalog(core.db)
    assign_location_providers(core.db, core.settings)
    core.catalog.refresh()
    return bootstrap_admin_key(core.db)


def start(settings: Settings) -> Core:
    """Everything a serving process needs, in order: logging, database, catalog, workflow engine (which takes up what
    this executor left unfinished)."""
    configure_logging(settings.log_level, settings.log_format)
    core = Core.build(settings)
    bootstrap_key = prepare(core)
    if bootstrap_key:
        print(
            "\nCloudplane: first start on an empty database. An admin (admin@localhost) was created with this API key,"
            " shown only once:\n\n    " + bootstrap_key + "\n\nUse it as `Authorization: Bearer <key>`.\n",
            flush=True,
        )
    engine.configure(core)
    engine.launch()
    return core


@functools.cache
def _v1_schema(app: FastAPI) -> dict:
    contexts = [c for c in routing.iter_route_contexts(app.routes) if (c.path or "").startswith("/api/v1/")]
    return get_openapi(
        title="Cloudplane /api/v1 (CloudVPS Pro, VibeCaaS, GPU Cloud Manager)",
        version=__version__,
        description="Sign-in, users and API keys shared by the /api/v1 documents.",
        routes=contexts,
    )


def v1_document(app: FastAPI, base_url: str) -> dict:
    """The OpenAPI document of every /api/v1 route, with this service's URL and bearer authentication."""
    document = dict(_v1_schema(app))
    document["servers"] = [{"url": base_url.rstrip("/")}]
    components = dict(document.get("components", {}))
    components["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
    document["components"] = components
    document["security"] = [{"bearer": []}]
    paths = {path: dict(item) for path, item in document["paths"].items()}
    for path, security in ANONYMOUS_V1_ROUTES.items():
        paths[path]["post"] = {**paths[path]["post"], "security": security}
    document["paths"] = paths
    return document


GPU_PATHS = ("/api/v1/providers", "/api/v1/gpu-models", "/api/v1/offers", "/api/v1/instances")


def gpu_document(app: FastAPI, base_url: str) -> dict:
    """The GPU Cloud Manager's own document: its routes of the /api/v1 document, under its title."""
    document = v1_document(app, base_url)
    document["info"] = {
        "title": "GPU Cloud Manager API (Cloudplane)",
        "version": __version__,
        "description": "Search GPU offers across providers and run GPU instances.",
    }
    document["paths"] = {p: item for p, item in document["paths"].items() if p.startswith(GPU_PATHS)}
    return document


# Sign-in routes need no credentials; refresh and logout may carry a token as bearer.
ANONYMOUS_V1_ROUTES: dict[str, list[dict[str, list[str]]]] = {
    "/api/v1/auth/register": [],
    "/api/v1/auth/login": [],
    "/api/v1/auth/token": [],
    "/api/v1/auth/refresh": [{}, {"bearer": []}],
    "/api/v1/auth/logout": [{}, {"bearer": []}],
}


def build_routes(app: FastAPI) -> None:
    """Build every route's dependencies and schemas now, before serving. FastAPI builds them on the first request
    that reaches each router, on the event loop: a few hundred milliseconds that every request arriving then waits."""
    for _ in routing.iter_route_contexts([*app.routes, *letscloud_native.router.routes]):
        pass


def freeze_start_up_objects() -> None:
    """Leave what start-up made (modules, classes, schemas, routes: most of the heap, alive as long as the process)
    out of every later garbage collection. A full collection holds the GIL, so the event loop, while it walks the
    heap: 50-150 ms with these objects in it, a few ms without, and background work (a reconciler pass) that makes
    many short-lived objects sets one off every few seconds."""
    gc.collect()
    gc.freeze()


# What a browser app on another origin may send and read (CLOUDPLANE_CORS_ORIGINS).
CORS_METHODS = ["GET", "POST", "PUT", "PATCH", "DELETE"]
CORS_REQUEST_HEADERS = ["Authorization", "Content-Type", "Idempotency-Key", "X-Request-ID", "api-token"]
CORS_EXPOSED_HEADERS = [
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Retry-After",
    "X-Request-ID",
    "Operation-Location",
    "Location",
    "Idempotent-Replayed",
]


class CloudplaneApp(FastAPI):
    def build_middleware_stack(self) -> ASGIApp:
        # Outside even Starlette's ServerErrorMiddleware, so a 500 too carries its X-Request-ID and is counted.
        return RequestObservabilityMiddleware(super().build_middleware_stack())


def create_app(core: Core | None = None) -> FastAPI:
    """With a Core, the caller owns start-up and shutdown (tests); without one the app starts itself."""

    mcp_endpoint = McpEndpoint()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        async with mcp_endpoint.running():
            if core is not None:
                app.state.core = core
                yield
                return
            async with serving(app):
                yield

    @asynccontextmanager
    async def serving(app: FastAPI) -> AsyncIterator[None]:
        app.state.core = start(get_settings())
        build_routes(app)
        freeze_start_up_objects()
        background = (
            start_reconciler(app.state.core),
            start_mail_sender(app.state.core),
            start_sender(app.state.core),
        )
        tasks = [start_loop_watch(), *(task for task in background if task is not None)]
        try:
            yield
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await engine.ashutdown()
            app.state.core.db.dispose()
            if app.state.ratelimiter is not None:
                await app.state.ratelimiter.aclose()

    app = CloudplaneApp(
        title="Cloudplane",
        version=__version__,
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    if core is not None:
        app.state.core = core
    settings = core.settings if core is not None else get_settings()
    app.state.ratelimiter = (
        RateLimiter(settings.redis_url, key_prefix=settings.rate_limit_key_prefix)
        if settings.rate_limits_enabled
        else None
    )
    app.add_middleware(RateLimitHeadersMiddleware)
    app.add_middleware(OperationLocationMiddleware)
    # The last added is outermost: the body limit must wrap idempotency, which reads the whole body.
    app.add_middleware(IdempotencyMiddleware)
    # Routes that carry files (support messages) take larger bodies; the files' own limit is checked as they decode.
    app.add_middleware(BodyLimitMiddleware, larger=SUPPORT_BODY_LIMITS)
    if settings.cors_origin_list:
        # Outermost of ours: a preflight is answered before any other work, and every reply (refusals included)
        # carries the headers a browser needs to show it to the page.
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origin_list,
            allow_methods=CORS_METHODS,
            allow_headers=CORS_REQUEST_HEADERS,
            expose_headers=CORS_EXPOSED_HEADERS,
            allow_credentials=False,
            max_age=600,
        )
    install_error_handlers(app)
    register_prefix("/api", default_renderer)
    register_prefix("/api/v1", cloudvps_renderer)
    # The native LetsCloud dialect shares /api with the GPT-Actions face: ahead of every route, for its requests only.
    register_dialect(is_native, native_renderer)
    app.router.routes.insert(0, letscloud_native.mount())
    app.include_router(letscloud_router, prefix="/api", tags=["LetsCloud"])
    app.include_router(letscloud_operations_router, prefix="/api", tags=["LetsCloud"])
    app.include_router(operations_router, prefix="/api/v1")
    app.include_router(audit_router, prefix="/api/v1")
    app.include_router(accounts_router, prefix="/api/v1")
    app.include_router(cloudvps_users_router, prefix="/api/v1")
    app.include_router(cloudvps_vps_router, prefix="/api/v1")
    app.include_router(cloudvps_backups_router, prefix="/api/v1")
    app.include_router(cloudvps_network_router, prefix="/api/v1")
    app.include_router(cloudvps_monitoring_router, prefix="/api/v1")
    app.include_router(cloudvps_support_router, prefix="/api/v1")
    app.include_router(cloudvps_billing_router, prefix="/api/v1")
    app.include_router(console_router)
    app.include_router(dashboard_router)
    app.include_router(vibecaas_users_router, prefix="/api/v1")
    app.include_router(vibecaas_apps_router, prefix="/api/v1")
    app.include_router(vibecaas_deployments_router, prefix="/api/v1")
    app.include_router(gpumgr_router, prefix="/api/v1")
    app.include_router(payments_router, prefix="/api/v1")
    app.include_router(subscription_router, prefix="/api/v1")
    app.include_router(cloudvps_admin_router, prefix="/api/v1")
    app.include_router(cloudvps_support_admin_router, prefix="/api/v1")
    app.include_router(cloudvps_webhooks_router, prefix="/api/v1")
    app.include_router(metrics_router)
    # The MCP tools over streamable HTTP (GET, POST and DELETE of one path, as the SDK serves it).
    app.router.routes.append(Route(MCP_PATH, mcp_endpoint, methods=["GET", "POST", "DELETE"], include_in_schema=False))

    @app.get("/health", include_in_schema=False)
    def health(request: Request) -> JSONResponse:
        try:
            with request.app.state.core.db.read() as s:
                s.execute(text("SELECT 1"))
        except Exception:  # noqa: BLE001 - health reports, never raises
            log.exception("health check: database unreachable")
            return JSONResponse({"status": "unhealthy", "service": "cloudplane", "version": __version__}, 503)
        return JSONResponse({"status": "healthy", "service": "cloudplane", "version": __version__})

    def letscloud_document(request: Request) -> dict:
        settings = request.app.state.core.settings
        base = settings.public_base_url or str(request.base_url)
        return build_openapi(base)

    @app.get("/api/openapi.json", include_in_schema=False)
    def letscloud_openapi_json(request: Request) -> JSONResponse:
        return JSONResponse(letscloud_document(request))

    @app.get("/api/openapi.yaml", include_in_schema=False)
    def letscloud_openapi_yaml(request: Request) -> Response:
        body = yaml.safe_dump(letscloud_document(request), sort_keys=False, allow_unicode=True)
        return Response(body, media_type="application/yaml")

    @app.get("/api/v1/openapi.json", include_in_schema=False)
    def v1_openapi(request: Request) -> JSONResponse:
        return JSONResponse(
            v1_document(request.app, request.app.state.core.settings.public_base_url or str(request.base_url))
        )

    @app.get("/api/v1/gpu/openapi.json", include_in_schema=False)
    def gpu_openapi(request: Request) -> JSONResponse:
        return JSONResponse(
            gpu_document(request.app, request.app.state.core.settings.public_base_url or str(request.base_url))
        )

    @app.get("/api/v1/docs", include_in_schema=False)
    def v1_docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/api/v1/openapi.json", title="Cloudplane /api/v1")

    @app.get("/api/docs", include_in_schema=False)
    def letscloud_docs() -> HTMLResponse:
        return get_swagger_ui_html(openapi_url="/api/openapi.json", title="LetsCloud API (Cloudplane)")

    return app

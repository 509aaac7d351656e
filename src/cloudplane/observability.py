"""Logs, request ids and metrics: one JSON log line per event of the process, an `X-Request-ID` on every request,
and Prometheus counters and histograms behind `GET /metrics`."""

from __future__ import annotations

import functools
import hmac
import logging
import re
import sys
import time
import uuid
from typing import IO, Any

import structlog
from fastapi import APIRouter, FastAPI, Request, routing
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudplane import context
from cloudplane.domain.errors import Unauthorized

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# Libraries that log SQL parameters, URLs with query strings or request bodies at INFO or DEBUG: never below
# WARNING, whatever the level, so no secret reaches a log line through them.
QUIET_LOGGERS = ("sqlalchemy", "httpx", "httpcore", "urllib3", "python_multipart", "multipart", "asyncio")

# Fields of foreign (stdlib) records worth keeping: our access log's, and what DBOS adds to its own records.
_RECORD_EXTRAS = ("method", "route", "status", "duration_ms", "client_ip", "executorID", "operationUUID")

# Anything shaped like a credential is masked even when it reaches a message: API keys, JWTs, bearer values.
_SECRET_SHAPES = re.compile(
    r"cp_[A-Za-z0-9_-]{16,}|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*|(?i:bearer)\s+[^\s\"',]+"
)
_SECRET_KEYS = re.compile(r"password|secret|token|authorization|api_key|apikey|cookie", re.IGNORECASE)

_HANDLER_NAME = "cloudplane"


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    return _SECRET_KEYS.search(key) is not None


def _redact(_: Any, __: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
    for key, value in event_dict.items():
        if _secret_key(key):
            event_dict[key] = "[redacted]"
        elif isinstance(value, str) and ("cp_" in value or "eyJ" in value or "earer" in value):
            event_dict[key] = _SECRET_SHAPES.sub("[redacted]", value)
    return event_dict


def configure_logging(level: str = "INFO", log_format: str = "json", stream: IO[str] | None = None) -> None:
    """Make every log line of the process one JSON object (or, with `console`, a readable line): structlog's
    loggers and stdlib logging alike (uvicorn, DBOS, SQLAlchemy, `logging.getLogger(__name__)`), each with
    timestamp, level, logger, event and the request id of the request it was logged in. Safe to call again."""
    shared: list[structlog.typing.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
    ]
    renderer: structlog.typing.Processor = (
        structlog.dev.ConsoleRenderer(colors=False) if log_format == "console" else structlog.processors.JSONRenderer()
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder(_RECORD_EXTRAS)],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _redact,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            *shared,
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream if stream is not None else sys.stderr)
    handler.name = _HANDLER_NAME
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.name == _HANDLER_NAME]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    # uvicorn (configured before the app starts) and DBOS bring handlers of their own, with their own formats:
    # theirs go, and their records reach the root handler. A NullHandler keeps DBOS from adding its console one.
    for name in ("uvicorn", "uvicorn.error", "dbos"):
        logger = logging.getLogger(name)
        logger.handlers = [logging.NullHandler()] if name == "dbos" else []
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    # Our middleware writes the access log (route templates, no query strings); uvicorn's stays off: without a
    # handler anywhere above it uvicorn does not even format it.
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


access_log = logging.getLogger("cloudplane.access")


class Metrics:
    """Cloudplane's own registry (not prometheus_client's global one), one per process: the functions below are
    called from workflows and providers that know no app, and every app of the process exposes the same counts."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.http_requests = Counter(
            "cloudplane_http_requests_total",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.http_duration = Histogram(
            "cloudplane_http_request_duration_seconds",
            "Time from the request's arrival to the end of its reply, by method and route template.",
            ("method", "route"),
            registry=self.registry,
        )
        self.operations = Counter(
            "cloudplane_operations_total",
            "Operations (long actions) finished, by kind and outcome.",
            ("kind", "outcome"),
            registry=self.registry,
        )
        self.operation_duration = Histogram(
            "cloudplane_operation_duration_seconds",
            "Time an operation took from creation to its end, by kind and outcome.",
            ("kind", "outcome"),
            buckets=(0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, float("inf")),
            registry=self.registry,
        )
        self.provider_errors = Counter(
            "cloudplane_provider_errors_total",
            "Provider calls that failed, by provider and call.",
            ("provider", "call"),
            registry=self.registry,
        )
        self.rate_limit_refusals = Counter(
            "cloudplane_rate_limit_refusals_total",
            "Requests refused by a rate limit, by scope (account, ip, login).",
            ("scope",),
            registry=self.registry,
        )


METRICS = Metrics()


def operation_finished(kind: str, outcome: str, seconds: float) -> None:
    """Count an operation that ended (`outcome`: succeeded, failed, ...) and how long it took."""
    METRICS.operations.labels(kind, outcome).inc()
    METRICS.operation_duration.labels(kind, outcome).observe(seconds)


def provider_call_failed(provider: str, call: str) -> None:
    METRICS.provider_errors.labels(provider, call).inc()


def rate_limit_refused(scope: str) -> None:
    """`scope`: account, ip or login."""
    METRICS.rate_limit_refusals.labels(scope).inc()


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
UNMATCHED = "unmatched"


class RouteTemplates:
    """The full template (`/api/servers/{server_id}`) of a request's route. FastAPI's matched route knows only its
    path inside its router, so the app's route table, walked once, gives the path it is served at."""

    def __init__(self) -> None:
        self._routes: list[routing.RouteContext] | None = None
        self._by_route: dict[int, list[tuple[re.Pattern[str], str]]] = {}

    def _load(self, app: FastAPI) -> None:
        self._routes = list(routing.iter_route_contexts(app.routes))
        self._by_route = {}
        for ctx in self._routes:
            if ctx.path:
                self._by_route.setdefault(id(ctx.original_route), []).append((compile_path(ctx.path)[0], ctx.path))

    def template(self, scope: Scope) -> str:
        app = scope.get("app")
        if not isinstance(app, FastAPI):
            return UNMATCHED
        if self._routes is None:
            self._load(app)
        path = scope.get("path", "")
        route = scope.get("route")
        if route is not None:
            candidates = self._by_route.get(id(route))
            if candidates is None:  # a route added after the first request
                self._load(app)
                candidates = self._by_route.get(id(route), [])
            if len(candidates) == 1:
                return candidates[0][1]
            for pattern, template in candidates:
                if pattern.match(path):
                    return template
        # Answered before routing (a body too large, an idempotent replay): the route the path would have taken.
        method = scope.get("method")
        fallback = None
        for ctx in self._routes or ():
            if ctx.path and compile_path(ctx.path)[0].match(path):
                if method in (ctx.methods or ()):
                    return ctx.path
                fallback = fallback or ctx.path
        return fallback or UNMATCHED


def request_id_from(scope: Scope) -> str:
    """The caller's `X-Request-ID` when it is sane (1-128 of [A-Za-z0-9._:-]), else a new one."""
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            text = value.decode("latin-1")
            if _SANE_REQUEST_ID.fullmatch(text):
                return text
            break
    return uuid.uuid4().hex


class RequestObservabilityMiddleware:
    """Outermost: gives each request its id (bound to the logs and to `cloudplane.context`, set on the reply,
    error replies included), writes one access-log line and counts the request by route template and status."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.routes = RouteTemplates()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request_id = request_id_from(scope)
        client = scope.get("client")
        client_ip = client[0] if client else None
        tokens = structlog.contextvars.bind_contextvars(request_id=request_id)
        context.reset()  # a holder of this request's own, never one shared with concurrent requests
        context.bind(request_id=request_id, client_ip=client_ip)
        status = 500  # what the caller sees when the app fails before answering
        header = (b"x-request-id", request_id.encode("latin-1"))

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = [(k, v) for k, v in message.get("headers", ()) if k.lower() != b"x-request-id"]
                message = {**message, "headers": [*headers, header]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            method = scope["method"] if scope["method"] in _METHODS else "other"
            route = self.routes.template(scope)
            METRICS.http_requests.labels(method, route, str(status)).inc()
            METRICS.http_duration.labels(method, route).observe(seconds)
            if access_log.isEnabledFor(logging.INFO):
                access_log.info(
                    "request",
                    extra={
                        "method": method,
                        "route": route,
                        "status": status,
                        "duration_ms": round(seconds * 1000, 2),
                        "client_ip": client_ip,
                    },
                )
            context.reset()
            structlog.contextvars.reset_contextvars(**tokens)


def _metrics_token(request: Request) -> str | None:
    return request.app.state.core.settings.metrics_token


router = APIRouter()


@router.get("/metrics", include_in_schema=False)
def metrics(request: Request) -> Response:
    """Prometheus text format; with CLOUDPLANE_METRICS_TOKEN set, only for `Authorization: Bearer <token>`."""
    token = _metrics_token(request)
    if token:
        scheme, _, presented = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(presented.strip().encode(), token.encode()):
            error = Unauthorized("Send the metrics token as `Authorization: Bearer <token>`")
            error.headers["WWW-Authenticate"] = "Bearer"
            raise error
    return Response(generate_latest(METRICS.registry), media_type=CONTENT_TYPE_LATEST)

"""Logs, request ids and metrics: one JSON log line per event of the process, an `X-Request-ID` on every request,
and Prometheus counters and histograms behind `GET /metrics`."""

from __future__ import annotations

import contextlib
import functools
import hmac
import json
import logging
import os
import re
import sys
import threading
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import IO, Any

import orjson
import structlog
from fastapi import APIRouter, FastAPI, Request, routing
from fastapi.responses import Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from starlette.routing import compile_path
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudplane import context
from cloudplane.domain.errors import Unauthorized
from cloudplane.domain.times import iso_z

REQUEST_ID_HEADER = "X-Request-ID"
_SANE_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")

# Libraries that log SQL parameters, URLs with query strings or request bodies at INFO or DEBUG: never below
# WARNING, whatever the level, so no secret reaches a log line through them.
QUIET_LOGGERS = ("sqlalchemy", "httpx", "httpcore", "urllib3", "python_multipart", "multipart", "asyncio")

# Fields of stdlib records worth keeping: the request id the handler took from the caller's context, and our
# access log's.
_RECORD_EXTRAS = ("request_id", "method", "route", "status", "duration_ms", "client_ip")

# Anything shaped like a credential is masked even when it reaches a message: API keys, JWTs, bearer values.
_SECRET_SHAPES = re.compile(
    r"cp_[A-Za-z0-9_-]{16,}|eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*|(?i:bearer)\s+[^\s\"',]+"
)
_SECRET_KEYS = re.compile(r"password|secret|token|authorization|api_key|apikey|cookie", re.IGNORECASE)

_HANDLER_NAME = "cloudplane"


@functools.lru_cache(maxsize=1024)
def _secret_key(key: str) -> bool:
    return _SECRET_KEYS.search(key) is not None


def _may_hold_secret(text: str) -> bool:
    """Whether `text` has the start of a credential's shape (cheaper than the expression, which then decides)."""
    return "cp_" in text or "eyJ" in text or "earer" in text


def _redact(_: Any, __: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
    for key, value in event_dict.items():
        if _secret_key(key):
            event_dict[key] = "[redacted]"
        elif isinstance(value, str) and _may_hold_secret(value):
            event_dict[key] = _SECRET_SHAPES.sub("[redacted]", value)
    return event_dict


def _json_default(value: Any) -> Any:
    return iso_z(value) if isinstance(value, datetime) else repr(value)


def json_line(event: Mapping[str, Any]) -> str:
    """`event` as one line of JSON: by orjson, at a fraction of json's cost (times in UTC with Z, anything else it
    does not know as its repr); by json for the rare value orjson refuses (an integer beyond 64 bits)."""
    try:
        return orjson.dumps(event, default=_json_default, option=orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:
        return json.dumps(event, default=_json_default)


def _structlog_json(event: Mapping[str, Any], **_: Any) -> str:
    return json_line(event)


def _add_request_id(_: Any, __: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """A structlog event's request id, from the request context of the thread that logs it."""
    if (request_id := context.request_id()) is not None:
        event_dict.setdefault("request_id", request_id)
    return event_dict


def _record_timestamp(_: Any, __: str, event_dict: structlog.typing.EventDict) -> structlog.typing.EventDict:
    """When a stdlib record was made (it is rendered later, on the writer thread)."""
    event_dict["timestamp"] = iso_z(datetime.fromtimestamp(event_dict["_record"].created, UTC))
    return event_dict


def _from_structlog(record: logging.LogRecord) -> bool:
    # structlog's wrap_for_formatter passes its event dict as the message, with these two extras.
    return hasattr(record, "_logger") and hasattr(record, "_name")


class JsonLines(logging.Formatter):
    """One JSON object per record: timestamp, level, logger, event, request id and the extras above, a traceback as
    `exception`, credentials masked. A stdlib record (the access line, uvicorn's, ours) is rendered here:
    structlog's ProcessorFormatter copies every record and runs it through nine processors, which made the access
    line a tenth of a request's cost. An event of a structlog logger goes through structlog's chain (`structlog`)."""

    def __init__(self, structlog_formatter: structlog.stdlib.ProcessorFormatter) -> None:
        super().__init__()
        self.structlog_formatter = structlog_formatter

    def format(self, record: logging.LogRecord) -> str:
        if _from_structlog(record):
            return self.structlog_formatter.format(record)
        line: dict[str, Any] = {
            "event": record.getMessage(),
            "level": record.levelname.lower(),
            "logger": record.name,
            "timestamp": datetime.fromtimestamp(record.created, UTC),
        }
        fields = record.__dict__
        for key in _RECORD_EXTRAS:
            if key in fields:
                line[key] = fields[key]
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        if record.stack_info:
            line["stack_info"] = record.stack_info
        return rendered(line)


def rendered(line: dict[str, Any]) -> str:
    """A line of JsonLines' (event, level, logger, timestamp and the extras above) as JSON, credentials masked."""
    text = json_line(line)
    # Its keys are JsonLines' names, none a credential's: only a value can hold one, and then the line shows it.
    return json_line(_redact(None, "", line)) if _may_hold_secret(text) else text


class QueuedLines(logging.Handler):
    """The root handler. The logging thread only takes note of a record, with the request id of its context; a
    thread of the handler's own renders the lines and writes them, those of `interval_s` in one write. So a slow
    reader of the output (a full pipe, a stalled log shipper) never stalls the event loop; only once `max_pending`
    lines wait does a caller wait, as it would on a plain stream. A record at WARNING or above returns once it is
    written, so that the line before a crash is not lost. A forked child writes its lines itself."""

    def __init__(self, stream: IO[str], *, interval_s: float = 0.02, max_pending: int = 10_000) -> None:
        super().__init__()
        self.stream = stream
        self.interval_s = interval_s
        self.max_pending = max_pending
        self._lock = threading.Lock()
        self._has_lines = threading.Condition(self._lock)
        self._has_room = threading.Condition(self._lock)
        self._progress = threading.Condition(self._lock)
        self._hurry = threading.Event()
        self._pending: list[logging.LogRecord | str] = []
        self._queued = self._written = 0
        self._closing = False
        self._pid = os.getpid()
        self._writer = threading.Thread(target=self._write_lines, name="cloudplane-log-writer", daemon=True)
        self._writer.start()

    def handle(self, record: logging.LogRecord) -> bool:
        # Without the handler's lock: emit is safe from any thread, and a lock would line every logging thread up.
        if rv := self.filter(record):
            self.emit(record)
        return bool(rv)

    def emit(self, record: logging.LogRecord) -> None:
        try:
            if not _from_structlog(record):
                # The arguments may change after this call returns; the message may not.
                record.msg, record.args = record.getMessage(), ()
            if (request_id := context.request_id()) is not None:
                record.request_id = request_id
            self._enqueue(record, wait=record.levelno >= logging.WARNING)
        except Exception:  # noqa: BLE001 - logging never raises into the caller
            self.handleError(record)

    def put_line(self, line: str) -> None:
        """Queue a line rendered already (ending in a newline), written like a record's: the access line's way in,
        without a LogRecord (see `log_request`)."""
        self._enqueue(line, wait=False)

    def _enqueue(self, item: logging.LogRecord | str, *, wait: bool) -> None:
        if os.getpid() != self._pid or threading.current_thread() is self._writer:
            self._write([item])
            return
        with self._lock:
            while len(self._pending) >= self.max_pending and not self._closing:
                self._has_room.wait()
            if self._closing:
                ticket = None
            else:
                self._pending.append(item)
                self._queued += 1
                ticket = self._queued
                if len(self._pending) == 1:  # the writer waits only when there was nothing to write
                    self._has_lines.notify()
        if ticket is None:
            self._write([item])
        elif wait:
            self._wait_written(ticket)

    def flush(self) -> None:
        """Return once every line queued so far is written (or after a few seconds, should the writer be stuck)."""
        if os.getpid() == self._pid and threading.current_thread() is not self._writer:
            with self._lock:
                ticket = self._queued
            self._wait_written(ticket)
        with contextlib.suppress(Exception):
            self.stream.flush()

    def close(self) -> None:
        """Write what is queued, then stop the writer."""
        with self._lock:
            self._closing = True
            self._has_lines.notify()
            self._has_room.notify_all()
        self._hurry.set()
        if threading.current_thread() is not self._writer:
            self._writer.join(timeout=5)
        super().close()

    def _wait_written(self, ticket: int, timeout_s: float = 5.0) -> None:
        self._hurry.set()
        with self._lock:
            self._progress.wait_for(lambda: self._written >= ticket or not self._writer.is_alive(), timeout_s)

    def _write_lines(self) -> None:
        while True:
            with self._lock:
                while not self._pending and not self._closing:
                    self._has_lines.wait()
                batch, self._pending = self._pending, []
                self._has_room.notify_all()
            self._write(batch)
            with self._lock:
                self._written += len(batch)
                self._progress.notify_all()
                if self._closing and not self._pending:
                    return
            # Let the next lines gather for one write, unless someone waits for them.
            self._hurry.wait(self.interval_s)
            self._hurry.clear()

    def _write(self, items: list[logging.LogRecord | str]) -> None:
        lines = []
        for item in items:
            if isinstance(item, str):
                lines.append(item)
                continue
            try:
                lines.append(self.format(item) + "\n")
            except Exception:  # noqa: BLE001
                self.handleError(item)
        if lines:
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except Exception:  # noqa: BLE001
                last = items[-1]
                self.handleError(last if isinstance(last, logging.LogRecord) else logging.makeLogRecord({"msg": last}))


def line_formatter(log_format: str = "json") -> logging.Formatter:
    """What renders a record as a line: JSON (`JsonLines`), or with `console` a readable line."""
    structlog_formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=[
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            _record_timestamp,
            structlog.stdlib.ExtraAdder(_RECORD_EXTRAS),
        ],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            _redact,
            structlog.processors.format_exc_info,
            structlog.dev.ConsoleRenderer(colors=False)
            if log_format == "console"
            else structlog.processors.JSONRenderer(serializer=_structlog_json),
        ],
    )
    return structlog_formatter if log_format == "console" else JsonLines(structlog_formatter)


def configure_logging(level: str = "INFO", log_format: str = "json", stream: IO[str] | None = None) -> None:
    """Make every log line of the process one JSON object (or, with `console`, a readable line): structlog's
    loggers and stdlib logging alike (uvicorn, SQLAlchemy, `logging.getLogger(__name__)`), each with
    timestamp, level, logger, event and the request id of the request it was logged in. Safe to call again."""
    structlog.configure(
        processors=[
            structlog.stdlib.filter_by_level,
            structlog.contextvars.merge_contextvars,
            _add_request_id,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            structlog.stdlib.PositionalArgumentsFormatter(),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = QueuedLines(stream if stream is not None else sys.stderr)
    handler.name = _HANDLER_NAME
    handler.setFormatter(line_formatter(log_format))
    root = logging.getLogger()
    for old in [h for h in root.handlers if h.name == _HANDLER_NAME]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(level.upper())
    # No line shows the caller's file, line, thread or process, so no record looks for them: the stack walk and
    # lookups they cost come on every line, the access line of every request included (the logging HOWTO's
    # "Optimization" section).
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False
    # uvicorn (configured before the app starts) brings handlers of its own, with its own format: they go, and its
    # records reach the root handler.
    for name in ("uvicorn", "uvicorn.error"):
        logger = logging.getLogger(name)
        logger.handlers = []
        logger.propagate = True
        logger.setLevel(logging.NOTSET)
    # Our middleware writes the access log (route templates, no query strings); uvicorn's stays off: without a
    # handler anywhere above it uvicorn does not even format it.
    access = logging.getLogger("uvicorn.access")
    access.handlers = []
    access.propagate = False
    for name in QUIET_LOGGERS:
        logging.getLogger(name).setLevel(max(logging.WARNING, root.level))


def flush_logs() -> None:
    """Return once every line logged so far is written."""
    for handler in logging.getLogger().handlers:
        if handler.name == _HANDLER_NAME:
            handler.flush()


access_log = logging.getLogger("cloudplane.access")
_cloudplane_log = logging.getLogger("cloudplane")


def _sole_json_handler() -> QueuedLines | None:
    """The root's JSON handler when it is the only place a record of `access_log` would reach (as
    `configure_logging` leaves it): then the access line can be handed to it rendered."""
    handlers = logging.root.handlers
    if len(handlers) != 1 or access_log.handlers or _cloudplane_log.handlers or access_log.filters:
        return None
    handler = handlers[0]
    if isinstance(handler, QueuedLines) and isinstance(handler.formatter, JsonLines) and not handler.filters:
        return handler
    return None


def log_request(method: str, route: str, status: int, seconds: float, client_ip: str | None) -> None:
    """The access line of a request, at INFO. Written on every request, so made here as the JSON line JsonLines
    would make of its record, without the record: a LogRecord, and rendering it on the handler's thread, cost a
    tenth of a small request (bench_letscloud.py's CPU per request). Anywhere else (other handlers, another
    format) it goes through logging as any line does."""
    if not access_log.isEnabledFor(logging.INFO):
        return
    fields = {"method": method, "route": route, "status": status, "duration_ms": round(seconds * 1000, 2)}
    handler = _sole_json_handler()
    if handler is None:
        access_log.info("request", extra={**fields, "client_ip": client_ip})
        return
    line: dict[str, Any] = {"event": "request", "level": "info", "logger": access_log.name}
    line["timestamp"] = datetime.now(UTC)
    if (request_id := context.request_id()) is not None:
        line["request_id"] = request_id
    line.update(fields)
    line["client_ip"] = client_ip
    handler.put_line(rendered(line) + "\n")


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
        self.reads_moved_off_loop = Counter(
            "cloudplane_reads_moved_off_loop_total",
            "SQLite reads that ran past their time on the event loop and were run again on a thread.",
            registry=self.registry,
        )
        # A request's two children, by (method, route, status): `labels()` checks and locks on every call.
        self._http_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}

    def http_request(self, method: str, route: str, status: int, seconds: float) -> None:
        """Count one answered request and how long it took."""
        key = (method, route, status)
        children = self._http_children.get(key)
        if children is None:
            children = self._http_children[key] = (
                self.http_requests.labels(method, route, str(status)),
                self.http_duration.labels(method, route),
            )
        children[0].inc()
        children[1].observe(seconds)


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
    return os.urandom(16).hex()  # uuid4's randomness, without building a UUID


class RequestObservabilityMiddleware:
    """Outermost: gives each request its id (in `cloudplane.context`, where the log lines find it, and on the
    reply, error replies included), writes one access-log line and counts the request by route template and status."""

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
        token = context.begin(request_id=request_id, client_ip=client_ip)
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
            METRICS.http_request(method, route, status, seconds)
            log_request(method, route, status, seconds, client_ip)
            context.end(token)


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

"""Errors rendered in the envelope of the face that owns the route.

Several faces share path prefixes (`/api/v1/...`), so the face is a property of the route itself: each face's
router uses a route class that names its error renderer, and one handler per error type asks the route.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI, Request, routing
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from sqlalchemy.exc import DataError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import compile_path

from cloudplane.domain.errors import CloudplaneError, Forbidden, NotFound, Unauthorized, ValidationFailed

log = logging.getLogger(__name__)

Renderer = Callable[[CloudplaneError], JSONResponse]
# A route's `responses=`: the extra replies the OpenAPI document shows for it, by status code.
Responses = dict[int | str, dict[str, Any]]


class RequestInvalid(ValidationFailed):
    """A request body or parameter the face's schema refused: it names the face's own fields already."""


def face_details(error: CloudplaneError, field_names: Mapping[str, str]) -> dict[str, Any]:
    """The error's details with its neutral field id (services say "plan", "ssh_keys[1]") under the name the face
    gives that field ("plan_slug", "plan_id"); ids the mapping does not name are the face's names too."""
    field = error.details.get("field")
    if not isinstance(field, str) or isinstance(error, RequestInvalid):
        return error.details
    base, bracket, index = field.partition("[")
    if base not in field_names:
        return error.details
    return {**error.details, "field": field_names[base] + bracket + index}


# What LetsCloud calls the fields whose neutral ids differ from its own names.
LETSCLOUD_FIELDS = {"plan": "plan_slug", "image": "image_slug", "location": "location_slug"}


def default_renderer(error: CloudplaneError) -> JSONResponse:
    return JSONResponse(
        {"error": error.message, "code": error.code, "details": face_details(error, LETSCLOUD_FIELDS)},
        status_code=error.status_code,
    )


def face_route_class(renderer: Renderer) -> type[APIRoute]:
    return type("FaceRoute", (APIRoute,), {"render_error": staticmethod(renderer)})


# Path prefixes whose unmatched URLs (404/405, no route) still belong to one face.
_prefix_renderers: list[tuple[str, Renderer]] = []
# Faces that share a prefix with another and are told apart by the request itself (a header): asked first.
_dialects: list[tuple[Callable[[Any], bool], Renderer]] = []


def register_dialect(is_dialect: Callable[[Any], bool], renderer: Renderer) -> None:
    """A face chosen by `is_dialect(scope)` rather than by path: its renderer for every error of such a request
    that no route of its own rendered (before routing: a body too large, a bad Idempotency-Key)."""
    if all(registered is not is_dialect for registered, _ in _dialects):
        _dialects.append((is_dialect, renderer))


def register_prefix(prefix: str, renderer: Renderer) -> None:
    _prefix_renderers.append((prefix, renderer))
    _prefix_renderers.sort(key=lambda item: -len(item[0]))


def renderer_for_path(path: str) -> Renderer:
    """The renderer of the face owning a path prefix; for code that runs before routing (middleware)."""
    for prefix, candidate in _prefix_renderers:
        if path == prefix or path.startswith(prefix + "/"):
            return candidate
    return default_renderer


def render_error(scope_or_request: Any, error: CloudplaneError) -> JSONResponse:
    """Render `error` in the envelope of the face that owns the request, with any headers the error carries."""
    scope = scope_or_request.scope if isinstance(scope_or_request, Request) else scope_or_request
    renderer = (
        getattr(scope.get("route"), "render_error", None)
        or next((r for is_dialect, r in _dialects if is_dialect(scope)), None)
        or renderer_for_path(scope.get("path", ""))
    )
    response = renderer(error)
    for name, value in error.headers.items():
        response.headers[name] = value
    return response


def _renderer_for(request: Request) -> Renderer:
    return lambda error: render_error(request, error)


def _field_of(loc: tuple[Any, ...]) -> str:
    parts = [str(p) for p in loc if p not in ("body", "query", "path", "header")]
    return ".".join(parts) or str(loc[-1] if loc else "body")


def validation_error(exc: RequestValidationError) -> RequestInvalid:
    errors = [
        {"field": _field_of(tuple(e.get("loc", ()))), "message": e.get("msg", "invalid"), "type": e.get("type")}
        for e in exc.errors()
    ]
    first = errors[0] if errors else {"field": "body", "message": "invalid request"}
    return RequestInvalid(
        f"Validation failed: {first['field']}: {first['message']}",
        field=first["field"],
        message=first["message"],
        errors=errors,
    )


def allowed_methods(app: FastAPI, path: str) -> list[str]:
    return sorted(
        {
            method
            for ctx in routing.iter_route_contexts(app.routes)
            if ctx.path is not None and compile_path(ctx.path)[0].match(path)
            for method in ctx.methods or ()
        }
    )


ADMIN_PATHS = ("/api/v1/admin/",)


async def _unless_admin(request: Request) -> CloudplaneError | None:
    """Why this caller may not see what is under an admin path (401 or 403), or None for an admin."""
    from cloudplane.api.common.deps import principal_from_header

    try:
        principal = await principal_from_header(request.app.state.core, request.headers.get("authorization"))
    except CloudplaneError as refusal:
        return refusal
    return None if principal.is_admin else Forbidden("This needs the admin role")


def install_error_handlers(app: FastAPI) -> None:
    async def on_domain_error(request: Request, exc: CloudplaneError) -> JSONResponse:
        return _renderer_for(request)(exc)

    async def on_validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _renderer_for(request)(validation_error(exc))

    async def on_http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code in (404, 405) and request.url.path.startswith(ADMIN_PATHS):
            # Which admin routes exist (and with which methods) is for admins to learn: a user gets 403 for any.
            refusal = await _unless_admin(request)
            if refusal is not None:
                return _renderer_for(request)(refusal)
        if exc.status_code == 404:
            error: CloudplaneError = NotFound("No such endpoint", path=request.url.path)
        elif exc.status_code == 401:
            error = Unauthorized(str(exc.detail))
        else:
            error = CloudplaneError(str(exc.detail))
            error.status_code = exc.status_code
            error.code = {405: "METHOD_NOT_ALLOWED", 400: "BAD_REQUEST", 413: "PAYLOAD_TOO_LARGE"}.get(
                exc.status_code, "HTTP_ERROR"
            )
        response = _renderer_for(request)(error)
        for name, value in (exc.headers or {}).items():
            response.headers[name] = value
        if exc.status_code == 405:
            # Starlette names only the methods of the first route matching the path; list them all.
            response.headers["Allow"] = ", ".join(allowed_methods(request.app, request.url.path))
        return response

    async def on_data_error(request: Request, exc: DataError) -> JSONResponse:
        # The database refused a value the schemas let through; PostgreSQL's text cannot hold NUL, for one.
        if "NUL" in str(exc.orig):
            error = ValidationFailed("Text cannot contain the NUL character (\\u0000); remove it and try again")
            return _renderer_for(request)(error)
        return await on_unexpected(request, exc)

    async def on_unexpected(request: Request, exc: Exception) -> JSONResponse:
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return _renderer_for(request)(CloudplaneError("Internal server error"))

    app.add_exception_handler(CloudplaneError, on_domain_error)  # type: ignore[arg-type]
    app.add_exception_handler(RequestValidationError, on_validation)  # type: ignore[arg-type]
    app.add_exception_handler(StarletteHTTPException, on_http)  # type: ignore[arg-type]
    app.add_exception_handler(DataError, on_data_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, on_unexpected)

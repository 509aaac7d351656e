"""The CloudVPS envelope. Its error shape, `{"success": false, "error": {"code", "message", "details"}}`, also
satisfies VibeCaaS (`{"error": {...}}`), so routes both documents share render errors with it."""

from __future__ import annotations

from typing import Any

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from cloudplane.api.common.faces import face_details
from cloudplane.domain.errors import CloudplaneError

# CloudVPS names some codes differently from the core.
_CODES = {
    "BAD_REQUEST": "INVALID_REQUEST",
    "INTERNAL_ERROR": "SYSTEM_ERROR",
    "INVALID_STATE": "CONFLICT",
    "SUSPENDED": "CONFLICT",
}
# What CloudVPS calls the fields whose neutral ids differ from its own names (a VPS's label is its name).
CLOUDVPS_FIELDS = {"plan": "plan_id", "image": "operating_system", "label": "name", "server": "vps_id"}


def cloudvps_renderer(error: CloudplaneError) -> JSONResponse:
    return JSONResponse(
        {
            "success": False,
            "error": {
                "code": _CODES.get(error.code, error.code),
                "message": error.message,
                "details": face_details(error, CLOUDVPS_FIELDS),
            },
        },
        status_code=error.status_code,
    )


class Envelope(BaseModel):
    success: bool = True
    message: str | None = None
    data: Any = None


def ok(data: Any, *, status_code: int = 200, message: str | None = None, **extra: Any) -> Response:
    """A success reply; `extra` adds top-level members (pagination, or another document's fields)."""
    body = Envelope(data=data, message=message).model_dump(mode="json", exclude_none=True)
    body.update(extra)
    return JSONResponse(body, status_code=status_code)


class Pagination(BaseModel):
    """The `pagination` member of a CloudVPS list reply."""

    page: int
    limit: int
    total: int
    has_next: bool
    has_prev: bool

    @classmethod
    def of(cls, page: int, limit: int, total: int) -> Pagination:
        return cls(page=page, limit=limit, total=total, has_next=page * limit < total, has_prev=page > 1)

"""The VibeCaaS error envelope and its error codes."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from cloudplane.domain.errors import CloudplaneError

_CODES = {"NOT_FOUND": "RESOURCE_NOT_FOUND", "BAD_REQUEST": "VALIDATION_ERROR", "INVALID_STATE": "CONFLICT"}


def vibecaas_renderer(error: CloudplaneError) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": _CODES.get(error.code, error.code), "message": error.message, "details": error.details}},
        status_code=error.status_code,
    )

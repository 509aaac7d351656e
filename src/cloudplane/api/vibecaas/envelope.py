"""The VibeCaaS error envelope and its error codes, and how its lists tell where a page is."""

from __future__ import annotations

import math
from typing import Any

from fastapi.responses import JSONResponse

from cloudplane.domain.errors import CloudplaneError
from cloudplane.services.pages import Page


def page_fields(result: Page[Any]) -> dict[str, int]:
    """A list reply's fields beside its `items`: the document's total, page and pages, and the page size."""
    return {
        "total": result.total,
        "page": result.page,
        "pages": math.ceil(result.total / result.per_page),
        "limit": result.per_page,
    }


_CODES = {"NOT_FOUND": "RESOURCE_NOT_FOUND", "BAD_REQUEST": "VALIDATION_ERROR", "INVALID_STATE": "CONFLICT"}


def vibecaas_renderer(error: CloudplaneError) -> JSONResponse:
    return JSONResponse(
        {"error": {"code": _CODES.get(error.code, error.code), "message": error.message, "details": error.details}},
        status_code=error.status_code,
    )

"""The native dialect's envelope, `{"success", "message", "data"}` on every reply, and how a request is known to be
in the dialect.

LetsCloud's clients treat `success != true` as an error and show `message`; they decode `data` into the type the
route returns, so an error's `data` is null (an object where a list is expected would break the decoding), and
every reply has a body (an empty one breaks the client), deletes included.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from starlette.types import Scope

from cloudplane.api.common.faces import face_details
from cloudplane.domain.errors import CloudplaneError

HEADER = b"api-token"
# Where the dialect lives: LetsCloud's base, not the /api/v1 documents' base beneath it.
BASE = "/api"
OTHER_BASE = "/api/v1"
# What the native dialect calls the fields whose neutral ids differ from its own names.
NATIVE_FIELDS = {"plan": "plan_slug", "image": "image_slug", "location": "location_slug", "ssh_keys": "ssh_slug"}


def is_native(scope: Scope) -> bool:
    """A request under /api (not /api/v1) carrying `api-token` and no `Authorization`: the two LetsCloud dialects
    share the base, and this header is what tells the native one apart."""
    path = scope.get("path", "")
    if not path.startswith(BASE + "/") or path == OTHER_BASE or path.startswith(OTHER_BASE + "/"):
        return False
    names = {name for name, _ in scope.get("headers", ())}
    return HEADER in names and b"authorization" not in names


def native_renderer(error: CloudplaneError) -> JSONResponse:
    """An error as the native clients read one: `success` false and the message to show, with the core's code and
    the field (by its native name) beside them for whoever reads more."""
    details = face_details(error, NATIVE_FIELDS)
    body: dict[str, Any] = {"success": False, "message": error.message, "data": None, "code": error.code}
    if isinstance(details.get("field"), str):
        body["field"] = details["field"]
    return JSONResponse(body, status_code=error.status_code)


def ok(message: str, data: BaseModel | Sequence[BaseModel] | None = None, *, status_code: int = 200) -> Response:
    """A success reply: the message a client shows, and the data (null for an action, a delete included)."""
    if isinstance(data, Sequence):
        payload: Any = [item.model_dump(mode="json") for item in data]
    else:
        payload = None if data is None else data.model_dump(mode="json")
    return JSONResponse({"success": True, "message": message, "data": payload}, status_code=status_code)

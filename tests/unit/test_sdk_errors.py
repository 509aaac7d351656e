"""Error replies in both envelopes the service speaks become the SDK's typed errors, code, details and field kept."""

from __future__ import annotations

from cloudplane import sdk
from cloudplane.sdk.errors import error_from_reply


def test_letscloud_envelope() -> None:
    e = error_from_reply(
        422, {"error": "Invalid password", "code": "VALIDATION_ERROR", "details": {"field": "password"}}, None
    )
    assert isinstance(e, sdk.ValidationError) and e.field == "password" and e.code == "VALIDATION_ERROR"
    assert str(e) == "Invalid password (password) [VALIDATION_ERROR]"
    state = error_from_reply(409, {"error": "already stopped", "code": "INVALID_STATE", "details": {}}, None)
    assert isinstance(state, sdk.InvalidState) and isinstance(state, sdk.Conflict) and state.status == 409
    assert type(error_from_reply(409, {"error": "busy", "code": "CONFLICT"}, None)) is sdk.Conflict


def test_v1_envelope_and_bodies_without_one() -> None:
    e = error_from_reply(
        404, {"success": False, "error": {"code": "NOT_FOUND", "message": "No such operation", "details": {}}}, None
    )
    assert isinstance(e, sdk.NotFound) and e.message == "No such operation" and e.code == "NOT_FOUND"
    limited = error_from_reply(429, {"error": "slow down", "code": "RATE_LIMITED"}, 7.0)
    assert isinstance(limited, sdk.RateLimited) and limited.retry_after == 7.0
    bare = error_from_reply(502, None, None)
    assert isinstance(bare, sdk.ServerError) and bare.code == "HTTP_502" and bare.details == {}
    assert isinstance(error_from_reply(503, "down", 1.0), sdk.ServiceUnavailable)

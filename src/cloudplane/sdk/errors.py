"""Typed errors of the SDK: each carries the service's stable `code`, its message, its `details` (with the `field`
a validation error names) and the HTTP status."""

from __future__ import annotations

from typing import Any


class CloudplaneError(Exception):
    """A request the service refused or could not answer."""

    def __init__(
        self, message: str, *, status: int = 0, code: str = "ERROR", details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.code = code
        self.details = details or {}

    @property
    def field(self) -> str | None:
        """The request field the error is about, if it names one."""
        field = self.details.get("field")
        return field if isinstance(field, str) else None

    def __str__(self) -> str:
        where = f" ({self.field})" if self.field else ""
        return f"{self.message}{where} [{self.code}]"


class BadRequest(CloudplaneError):
    pass


class Unauthorized(CloudplaneError):
    pass


class Forbidden(CloudplaneError):
    pass


class PaymentRequired(CloudplaneError):
    pass


class NotFound(CloudplaneError):
    pass


class Conflict(CloudplaneError):
    pass


class InvalidState(Conflict):
    """The action is not allowed from the object's current state (a server already stopped ...)."""


class ValidationError(CloudplaneError):
    """The request was malformed; `field` names the part to fix."""


class RateLimited(CloudplaneError):
    """Too many requests: try again after `retry_after` seconds (the SDK already retried as far as it would)."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ServerError(CloudplaneError):
    pass


class ServiceUnavailable(ServerError):
    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class ConnectionFailed(CloudplaneError):
    """The service could not be reached (refused, reset, timed out)."""


class OperationFailed(CloudplaneError):
    """An operation the SDK waited for ended in failure; `operation` is how it ended."""

    def __init__(self, message: str, *, operation: Any, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.operation = operation


class OperationTimeout(CloudplaneError, TimeoutError):
    """An operation was still running when the wait's timeout passed; `operation` is how it was last seen."""

    def __init__(self, message: str, *, operation: Any, **kwargs: Any) -> None:
        super().__init__(message, code="OPERATION_TIMEOUT", **kwargs)
        self.operation = operation


# Codes first (a 409 may be a plain conflict or an invalid state), then the status.
_BY_CODE: dict[str, type[CloudplaneError]] = {"INVALID_STATE": InvalidState}
_BY_STATUS: dict[int, type[CloudplaneError]] = {
    400: BadRequest,
    401: Unauthorized,
    402: PaymentRequired,
    403: Forbidden,
    404: NotFound,
    409: Conflict,
    413: BadRequest,
    422: ValidationError,
    429: RateLimited,
    503: ServiceUnavailable,
}


def error_from_reply(status: int, body: Any, retry_after: float | None) -> CloudplaneError:
    """The typed error for an error reply in either envelope the service speaks: LetsCloud's
    `{error, code, details}` or /api/v1's `{success: false, error: {code, message, details}}`."""
    details: Any
    message, code, details = f"HTTP {status}", f"HTTP_{status}", None
    if isinstance(body, dict):
        inner = body.get("error")
        if isinstance(inner, dict):
            message, code, details = inner.get("message", message), inner.get("code", code), inner.get("details")
        else:
            message, code, details = str(inner or message), body.get("code", code), body.get("details")
    kind = _BY_CODE.get(code) or _BY_STATUS.get(status) or (ServerError if status >= 500 else CloudplaneError)
    extra: dict[str, Any] = {"retry_after": retry_after} if kind in (RateLimited, ServiceUnavailable) else {}
    details = details if isinstance(details, dict) else {}
    return kind(message, status=status, code=str(code), details=details, **extra)


class Ambiguous(CloudplaneError):
    """A name matches more than one object; `details["matches"]` lists their ids: use one of them."""

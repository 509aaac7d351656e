"""One error hierarchy for the whole core; each face renders it in its own envelope."""

from __future__ import annotations

from typing import Any


class CloudplaneError(Exception):
    """A failure the caller can act on: a stable `code`, an HTTP status and a message with details."""

    code = "INTERNAL_ERROR"
    status_code = 500

    def __init__(self, message: str, /, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        # HTTP headers the reply must carry whatever the face (Retry-After, WWW-Authenticate ...).
        self.headers: dict[str, str] = {}

    # Workflow steps record their exceptions by pickling; keep details and flags such as `retryable` intact.
    def __reduce__(self) -> tuple[Any, ...]:
        return (_restore_error, (type(self), dict(self.__dict__)))


class BadRequest(CloudplaneError):
    code = "BAD_REQUEST"
    status_code = 400


class Unauthorized(CloudplaneError):
    code = "UNAUTHORIZED"
    status_code = 401


class Forbidden(CloudplaneError):
    code = "FORBIDDEN"
    status_code = 403


class NotFound(CloudplaneError):
    code = "NOT_FOUND"
    status_code = 404


class Conflict(CloudplaneError):
    code = "CONFLICT"
    status_code = 409


class InvalidState(Conflict):
    """The action is not allowed from the object's current state."""

    code = "INVALID_STATE"


class Suspended(Conflict):
    """An administrator suspended the object: its owner can change nothing until it is unsuspended."""

    code = "SUSPENDED"


class NoAddressPool(Conflict):
    """The location has no pool of extra addresses."""

    code = "NO_ADDRESS_POOL"


class AddressPoolExhausted(Conflict):
    """Every address of the location's pool is taken."""

    code = "ADDRESS_POOL_EXHAUSTED"


class QuotaExceeded(CloudplaneError):
    """The account's tier does not allow this much; `details` name the field, the limit and the tier."""

    code = "QUOTA_EXCEEDED"
    status_code = 403


class PaymentRequired(CloudplaneError):
    """The change costs money and the account has no way to pay (no payment method, no payment gateway)."""

    code = "PAYMENT_REQUIRED"
    status_code = 402


class PaymentFailed(CloudplaneError):
    """A charge was tried and refused; the message is the gateway's reason ("Your card was declined.")."""

    code = "PAYMENT_ERROR"
    status_code = 402


class ValidationFailed(CloudplaneError):
    code = "VALIDATION_ERROR"
    status_code = 422


class PayloadTooLarge(CloudplaneError):
    """A request body, or a file inside one, is larger than its limit; `details` name the limit (and the field)."""

    code = "PAYLOAD_TOO_LARGE"
    status_code = 413


class RateLimited(CloudplaneError):
    code = "RATE_LIMITED"
    status_code = 429

    def __init__(self, message: str, /, retry_after_s: int, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.headers["Retry-After"] = str(retry_after_s)


class ServiceUnavailable(CloudplaneError):
    """Something this service depends on (Redis ...) cannot be reached; the request may succeed shortly."""

    code = "SERVICE_UNAVAILABLE"
    status_code = 503

    def __init__(self, message: str, /, retry_after_s: int = 5, **details: Any) -> None:
        super().__init__(message, retry_after_s=retry_after_s, **details)
        self.headers["Retry-After"] = str(retry_after_s)


class ProviderError(CloudplaneError):
    """A compute provider failed; `retryable` says whether trying again may help."""

    code = "PROVIDER_ERROR"
    status_code = 502

    def __init__(self, message: str, /, retryable: bool = True, **details: Any) -> None:
        super().__init__(message, **details)
        self.retryable = retryable


class ProxmoxError(ProviderError):
    """A Proxmox VE cluster failed or refused a call (the CloudVPS document's `PROXMOX_ERROR`)."""

    code = "PROXMOX_ERROR"


def _restore_error(cls: type[CloudplaneError], state: dict[str, Any]) -> CloudplaneError:
    error = cls.__new__(cls)
    Exception.__init__(error, state["message"])
    error.__dict__.update(state)
    return error

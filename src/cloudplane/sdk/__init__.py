"""The Cloudplane Python SDK: `Client(base_url, token)` (and `AsyncClient`) over the LetsCloud API, every action
returning its resource and Operation, `operation.wait(timeout, on_progress)`, typed errors, and retries of 429/503
with capped, jittered backoff that honour Retry-After (a POST only with the Idempotency-Key the SDK sets)."""

from cloudplane.sdk.client import AsyncClient, Client
from cloudplane.sdk.errors import (
    Ambiguous,
    BadRequest,
    CloudplaneError,
    Conflict,
    ConnectionFailed,
    Forbidden,
    InvalidState,
    NotFound,
    OperationFailed,
    OperationTimeout,
    PaymentRequired,
    RateLimited,
    ServerError,
    ServiceUnavailable,
    Unauthorized,
    ValidationError,
)
from cloudplane.sdk.models import Accepted, Account, Image, Location, Operation, Plan, Server, Snapshot, SSHKey
from cloudplane.sdk.protocol import RetryPolicy

__all__ = [
    "Accepted",
    "Account",
    "Ambiguous",
    "AsyncClient",
    "BadRequest",
    "Client",
    "CloudplaneError",
    "Conflict",
    "ConnectionFailed",
    "Forbidden",
    "Image",
    "InvalidState",
    "Location",
    "NotFound",
    "Operation",
    "OperationFailed",
    "OperationTimeout",
    "PaymentRequired",
    "Plan",
    "RateLimited",
    "RetryPolicy",
    "Server",
    "ServerError",
    "ServiceUnavailable",
    "Snapshot",
    "SSHKey",
    "Unauthorized",
    "ValidationError",
]

"""Wire shapes of sign-in, users and API keys, as supersets of what CloudVPS Pro and VibeCaaS document."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cloudplane.api.common.ids import parse_id
from cloudplane.api.common.schemas import Request as BaseRequest
from cloudplane.db.tables import ApiKey
from cloudplane.domain.tiers import QUOTAS
from cloudplane.domain.times import iso_z
from cloudplane.services.auth import EMAIL, MAX_PASSWORD, MIN_PASSWORD, USERNAME, Tokens
from cloudplane.services.users import UserView


class Request(BaseRequest):
    model_config = ConfigDict(extra="forbid")


# The rules services/auth.py enforces, stated in the schema so the documents tell clients.
EMAIL_PATTERN = EMAIL.pattern
USERNAME_PATTERN = USERNAME.pattern
Password = Field(min_length=MIN_PASSWORD, max_length=MAX_PASSWORD)


class RegisterRequest(Request):
    """CloudVPS sends name/email/password; VibeCaaS email/username/password/full_name."""

    email: str = Field(min_length=3, max_length=320, pattern=EMAIL_PATTERN)
    password: str = Password
    name: str | None = Field(default=None, min_length=1, max_length=200)
    full_name: str | None = Field(default=None, min_length=1, max_length=200)
    username: str | None = Field(default=None, pattern=USERNAME_PATTERN)


class LoginRequest(Request):
    """CloudVPS signs in with email, VibeCaaS with username (an email works there too)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "anyOf": [
                {"required": ["email"], "properties": {"email": {"type": "string"}}},
                {"required": ["username"], "properties": {"username": {"type": "string"}}},
            ]
        },
    )

    email: str | None = Field(default=None, min_length=1, max_length=320)
    username: str | None = Field(default=None, min_length=1, max_length=320)
    password: str = Field(min_length=1, max_length=1024)

    @model_validator(mode="after")
    def _one_login(self) -> LoginRequest:
        if not (self.email or self.username):
            raise ValueError("send email or username")
        return self

    @property
    def login(self) -> str:
        return self.email or self.username or ""


class RefreshRequest(Request):
    refresh_token: str | None = Field(default=None, max_length=4096)


class ProfileUpdate(Request):
    name: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"\S")
    full_name: str | None = Field(default=None, min_length=1, max_length=200, pattern=r"\S")
    email: str | None = Field(default=None, max_length=320, pattern=EMAIL_PATTERN)
    username: str | None = Field(default=None, pattern=USERNAME_PATTERN)


class PasswordChange(Request):
    current_password: str = Field(min_length=1, max_length=1024)
    new_password: str = Password


class ApiKeyCreate(Request):
    name: str = Field(default="api", min_length=1, max_length=200)


class TierUpdate(Request):
    tier: str = Field(max_length=20)


class ErrorBody(BaseModel):
    code: str
    message: str
    details: dict[str, Any]


class ErrorEnvelope(BaseModel):
    success: bool = False
    error: ErrorBody


_ERROR_DESCRIPTIONS = {
    400: "The body is not valid JSON",
    401: "Missing, invalid or expired credentials",
    402: "Payment needed (`PAYMENT_REQUIRED`: no way to pay) or refused (`PAYMENT_ERROR`: the gateway's reason)",
    403: "Not allowed (the admin role is needed, or the account is suspended)",
    404: "No such object in your account",
    409: "Conflicts with what exists (already registered, taken)",
    422: "The request breaks a rule: `error.details.field` names the field",
    429: "Too many requests; retry after `Retry-After` seconds",
    502: "A service Cloudplane depends on (a provider, Stripe) failed; try again",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Error replies for the OpenAPI document, all in the envelope the routes render."""
    return {code: {"model": ErrorEnvelope, "description": _ERROR_DESCRIPTIONS[code]} for code in codes}


def user_id(view_or_id: UserView | int) -> str:
    return f"user-{view_or_id if isinstance(view_or_id, int) else view_or_id.user.id}"


def parse_user_id(value: str) -> int:
    number = parse_id(value.removeprefix("user-"))
    return -1 if number is None else number


def user_json(view: UserView) -> dict[str, Any]:
    """Every user field either document shows: CloudVPS (name, role, status) and VibeCaaS (username, full_name,
    tier, quotas)."""
    user, account = view.user, view.account
    return {
        "id": user_id(view),
        "email": user.email,
        "name": user.name,
        "full_name": user.name,
        "username": user.username,
        "role": user.role,
        "status": user.status,
        "tier": account.tier,
        "created_at": iso_z(user.created_at),
        "quotas": QUOTAS[account.tier].as_dict(),
    }


def token_json(tokens: Tokens, view: UserView) -> dict[str, Any]:
    """The CloudVPS login envelope and, at the top level, the OAuth2 token fields VibeCaaS clients read."""
    data = {
        "token": tokens.access_token,
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "token_type": "bearer",
        "expires_in": tokens.expires_in,
        "user": user_json(view),
    }
    return {
        "success": True,
        "data": data,
        "access_token": tokens.access_token,
        "refresh_token": tokens.refresh_token,
        "token_type": "bearer",
        "expires_in": tokens.expires_in,
    }


class ApiKeyOut(BaseModel):
    id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None

    @classmethod
    def of(cls, key: ApiKey) -> ApiKeyOut:
        return cls(
            id=key.id, name=key.name, prefix=key.prefix, created_at=key.created_at, last_used_at=key.last_used_at
        )

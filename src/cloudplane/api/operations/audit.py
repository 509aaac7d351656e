"""`GET /api/v1/admin/audit-logs`: who did what to which object, from where, in which request; read from the
events outbox (admins only)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query, Response
from pydantic import BaseModel, Field

from cloudplane.api.accounts.schemas import errors
from cloudplane.api.cloudvps.envelope import Pagination, cloudvps_renderer
from cloudplane.api.common.deps import MAX_ID, CoreDep, PrincipalDep, read, reply
from cloudplane.api.common.faces import face_route_class
from cloudplane.services import events
from cloudplane.services.events import AuditEntry

router = APIRouter(route_class=face_route_class(cloudvps_renderer), tags=["Admin"], responses=errors(401, 403, 422))


class Actor(BaseModel):
    type: str = Field(description="user, or system for what Cloudplane did by itself (a workflow, the reconciler)")
    user_id: str | None
    email: str | None


class AuditTarget(BaseModel):
    type: str
    id: str


class AuditLogOut(BaseModel):
    id: str
    action: str = Field(description="The event, e.g. vps.start_requested, vps.started, user.suspended")
    actor: Actor
    account_id: str | None
    target: AuditTarget
    operation_id: str | None
    ip_address: str | None
    request_id: str | None
    details: dict[str, Any]
    created_at: datetime


class AuditLogReply(BaseModel):
    success: bool = True
    data: list[AuditLogOut]
    pagination: Pagination


def audit_out(entry: AuditEntry) -> AuditLogOut:
    return AuditLogOut(
        id=entry.id,
        action=entry.type,
        actor=Actor(
            type="user" if entry.actor_user_id is not None else "system",
            user_id=f"user-{entry.actor_user_id}" if entry.actor_user_id is not None else None,
            email=entry.actor_email,
        ),
        account_id=str(entry.account_id) if entry.account_id is not None else None,
        target=AuditTarget(type=entry.target_type, id=entry.target_id),
        operation_id=entry.operation_id,
        ip_address=entry.client_ip,
        request_id=entry.request_id,
        details=entry.data,
        created_at=entry.created_at,
    )


@router.get("/admin/audit-logs", response_model=AuditLogReply)
async def list_audit_logs(
    core: CoreDep,
    principal: PrincipalDep,
    page: Annotated[int, Query(ge=1, le=1_000_000)] = 1,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    action: Annotated[
        str | None,
        Query(max_length=64, pattern=r"^[a-z_.]+$", description="An event (vps.started) or a prefix ending in a dot"),
    ] = None,
    user_id: Annotated[str | None, Query(pattern=r"^(user-)?[0-9]{1,19}$", description="The actor")] = None,
    target_type: Annotated[str | None, Query(max_length=40, pattern=r"^[a-z_]+$")] = None,
    target_id: Annotated[str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_-]+$")] = None,
    start_date: Annotated[datetime | None, Query(description="From this time (ISO 8601)")] = None,
    end_date: Annotated[datetime | None, Query(description="Until this time (ISO 8601)")] = None,
) -> Response:
    """Every recorded action, newest first (admins only)."""
    actor = int(user_id.removeprefix("user-")) if user_id else None
    result = await read(
        core,
        events.list_audit_log,
        core.db,
        principal,
        page=page,
        per_page=limit,
        action=action,
        actor_user_id=actor if actor is not None and actor <= MAX_ID else -1 if actor is not None else None,
        target_type=target_type,
        target_id=target_id,
        since=start_date,
        until=end_date,
    )
    return reply(
        AuditLogReply(
            data=[audit_out(e) for e in result.items],
            pagination=Pagination.of(page, limit, result.total),
        )
    )

"""CloudVPS admin routes: platform stats, system health, every tenant's VPS and their suspension, one user read and
edited. Every path under /admin is for admins: a user gets 403 whether or not the path exists
(faces.install_error_handlers)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cloudplane.api.accounts import schemas as w
from cloudplane.api.cloudvps.envelope import Pagination, cloudvps_renderer, ok
from cloudplane.api.cloudvps.vps import VpsActionReply, VpsId, VpsOut, VpsStatus, parse_vps_id, vps_out
from cloudplane.api.common.deps import CoreDep, PrincipalDep, read, reply, write
from cloudplane.api.common.faces import face_route_class
from cloudplane.services import admin, suspension, users

router = APIRouter(
    route_class=face_route_class(cloudvps_renderer),
    tags=["Admin"],
    responses=w.errors(400, 401, 403, 404, 409, 422, 429),
)


class AdminUserUpdate(w.ProfileUpdate):
    role: str | None = w.Field(default=None, max_length=20)
    tier: str | None = w.Field(default=None, max_length=20)


@router.get("/admin/stats")
async def admin_stats(core: CoreDep, principal: PrincipalDep) -> Response:
    """Users by status, live servers by status and provider, operations in flight and failed in the last day."""
    return ok(await run_in_threadpool(admin.stats, core, principal))


@router.get("/admin/system/health")
async def admin_health(core: CoreDep, principal: PrincipalDep) -> Response:
    """The database and each configured provider checked now, what is not configured yet said so, host metrics."""
    return ok(await admin.health(core, principal))


class AdminVpsOut(VpsOut):
    user_id: str | None = Field(description='The owner, e.g. "user-123"')
    user_email: str | None = Field(description="The owner's email address")


class AdminVpsListReply(BaseModel):
    success: bool = True
    data: list[AdminVpsOut]
    pagination: Pagination


@router.get("/admin/vps", response_model=AdminVpsListReply)
async def admin_list_vps(
    core: CoreDep,
    principal: PrincipalDep,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1")] = 1,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page (at most 100)")] = 20,
    status: Annotated[VpsStatus | None, Query(description="Only VPSs in this status")] = None,
    user_id: Annotated[str | None, Query(max_length=40, description='Only this user\'s VPSs, e.g. "user-123"')] = None,
    location: Annotated[
        str | None, Query(max_length=100, description="Only VPSs in this location (slug) or region")
    ] = None,
    search: Annotated[str | None, Query(max_length=255, description="Only VPSs whose name contains this")] = None,
) -> Response:
    """Every tenant's VPS, newest first, each with its owner."""
    result = await read(
        core,
        admin.list_servers,
        core,
        principal,
        page=page,
        per_page=limit,
        state=status,
        user_id=w.parse_user_id(user_id) if user_id is not None else None,
        location=location,
        search=search,
    )
    now = datetime.now(UTC)
    data = [
        vps_out(
            item.server,
            now,
            AdminVpsOut,
            user_id=w.user_id(item.user_id) if item.user_id is not None else None,
            user_email=item.email,
        )
        for item in result.items
    ]
    return reply(AdminVpsListReply(data=data, pagination=Pagination.of(page, limit, result.total)))


@router.post("/admin/vps/{vps_id}/suspend", response_model=VpsActionReply)
async def admin_suspend_vps(vps_id: VpsId, core: CoreDep, principal: PrincipalDep) -> Response:
    """Suspend a VPS: its owner can change nothing until it is unsuspended, and a running VPS is frozen."""
    server = await write(core, suspension.suspend_server, core, principal, parse_vps_id(vps_id))
    return reply(VpsActionReply(data=vps_out(server, datetime.now(UTC), VpsOut), message="VPS is being suspended"))


@router.post("/admin/vps/{vps_id}/unsuspend", response_model=VpsActionReply)
async def admin_unsuspend_vps(vps_id: VpsId, core: CoreDep, principal: PrincipalDep) -> Response:
    """Lift a VPS's suspension: it runs again if it was running, and stays stopped if it was stopped."""
    server = await write(core, suspension.unsuspend_server, core, principal, parse_vps_id(vps_id))
    return reply(VpsActionReply(data=vps_out(server, datetime.now(UTC), VpsOut), message="VPS is being unsuspended"))


@router.get("/admin/users/{user_id}")
def admin_get_user(user_id: str, core: CoreDep, principal: PrincipalDep) -> Response:
    return ok(w.user_json(users.admin_get_user(core.db, principal, w.parse_user_id(user_id))))


@router.put("/admin/users/{user_id}")
def admin_update_user(user_id: str, body: AdminUserUpdate, core: CoreDep, principal: PrincipalDep) -> Response:
    """Edit a user's name, email, username, role (user or admin) or tier."""
    view = users.admin_update_user(
        core.db,
        principal,
        w.parse_user_id(user_id),
        name=body.name or body.full_name,
        email=body.email,
        username=body.username,
        role=body.role,
        tier=body.tier,
    )
    return ok(w.user_json(view))

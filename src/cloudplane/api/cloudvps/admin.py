"""CloudVPS admin routes: platform stats, system health, one user read and edited. Every path under /admin is for
admins: a user gets 403 whether or not the path exists (faces.install_error_handlers)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from cloudplane.api.accounts import schemas as w
from cloudplane.api.cloudvps.envelope import cloudvps_renderer, ok
from cloudplane.api.common.deps import CoreDep, PrincipalDep
from cloudplane.api.common.faces import face_route_class
from cloudplane.services import admin, users

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

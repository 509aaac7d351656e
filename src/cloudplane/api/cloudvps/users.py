"""CloudVPS user routes: /api/v1/users/profile and /api/v1/users/change-password."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import Response

from cloudplane.api.accounts import schemas as w
from cloudplane.api.cloudvps.envelope import cloudvps_renderer, ok
from cloudplane.api.common.deps import CoreDep, PrincipalDep
from cloudplane.api.common.faces import face_route_class
from cloudplane.services import auth, users

router = APIRouter(
    route_class=face_route_class(cloudvps_renderer),
    tags=["CloudVPS users"],
    responses=w.errors(400, 401, 403, 409, 422, 429),
)


def profile_json(view: users.UserView) -> dict:
    return {**w.user_json(view), "stripe_customer_id": view.account.stripe_customer_id}


@router.get("/users/profile")
def get_profile(core: CoreDep, principal: PrincipalDep) -> Response:
    return ok(profile_json(users.get_user(core.db, principal)))


@router.put("/users/profile")
def update_profile(body: w.ProfileUpdate, core: CoreDep, principal: PrincipalDep) -> Response:
    view = users.update_profile(
        core.db, principal, name=body.name or body.full_name, email=body.email, username=body.username
    )
    return ok(profile_json(view))


@router.post("/users/change-password")
def change_password(body: w.PasswordChange, core: CoreDep, principal: PrincipalDep) -> Response:
    """Set a new password; every signed-in session of this user ends (sign in again)."""
    ended = auth.change_password(core.db, principal, body.current_password, body.new_password)
    return ok({"password_changed": True, "sessions_ended": ended}, message="Password changed; sign in again")

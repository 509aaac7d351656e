"""VibeCaaS user routes: /api/v1/users/me, with tier and quotas."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from cloudplane.api.accounts import schemas as w
from cloudplane.api.common.deps import CoreDep, PrincipalDep
from cloudplane.api.common.faces import face_route_class
from cloudplane.api.vibecaas.envelope import vibecaas_renderer
from cloudplane.services import users

router = APIRouter(
    route_class=face_route_class(vibecaas_renderer),
    tags=["VibeCaaS users"],
    responses=w.errors(400, 401, 403, 409, 422, 429),
)


@router.get("/users/me")
def get_me(core: CoreDep, principal: PrincipalDep) -> JSONResponse:
    return JSONResponse(w.user_json(users.get_user(core.db, principal)))


@router.put("/users/me")
def update_me(body: w.ProfileUpdate, core: CoreDep, principal: PrincipalDep) -> JSONResponse:
    view = users.update_profile(
        core.db, principal, name=body.full_name or body.name, email=body.email, username=body.username
    )
    return JSONResponse(w.user_json(view))

"""Sign-in (/api/v1/auth/*), API keys and admin user routes."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Form, Request, Response
from fastapi.responses import JSONResponse
from starlette.concurrency import run_in_threadpool

from cloudplane.api.accounts import schemas as w
from cloudplane.api.cloudvps.envelope import cloudvps_renderer, ok
from cloudplane.api.common.deps import CoreDep, Id, PageDep, PrincipalDep, bearer_token
from cloudplane.api.common.faces import face_route_class
from cloudplane.api.common.ratelimit import enforce_anonymous_limit, login_attempt
from cloudplane.api.common.schemas import StorableText
from cloudplane.domain.errors import Unauthorized
from cloudplane.services import auth, users
from cloudplane.services.accounts import create_api_key

router = APIRouter(route_class=face_route_class(cloudvps_renderer), responses=w.errors(400, 401, 403, 404, 422, 429))
# Sign-in routes are anonymous: they count against the caller's IP address (CloudVPS: 100 per 15 minutes).
auth_router = APIRouter(
    route_class=face_route_class(cloudvps_renderer),
    dependencies=[Depends(enforce_anonymous_limit)],
    responses=w.errors(400, 401, 403, 409, 422, 429),
)


@auth_router.post("/auth/register", status_code=201, tags=["Auth"])
def register(body: w.RegisterRequest, core: CoreDep) -> JSONResponse:
    """Create a user (with an account of its own) and sign them in."""
    user = auth.register(
        core.db, email=body.email, password=body.password, name=body.name or body.full_name, username=body.username
    )
    tokens = auth.login(core.db, user.email, body.password)
    view = users.view_of(core.db, user.id)
    return JSONResponse({**w.token_json(tokens, view), **w.user_json(view)}, status_code=201)


@auth_router.post("/auth/login", tags=["Auth"])
async def login(request: Request, body: w.LoginRequest, core: CoreDep) -> JSONResponse:
    """Sign in with email (CloudVPS) or username (VibeCaaS) and password."""
    async with login_attempt(request, body.login):
        tokens = await run_in_threadpool(auth.login, core.db, body.login, body.password)
    view = await run_in_threadpool(users.view_of, core.db, tokens.user.id)
    return JSONResponse(w.token_json(tokens, view))


@auth_router.post("/auth/token", tags=["Auth"])
async def token(
    request: Request,
    core: CoreDep,
    username: Annotated[StorableText, Form(min_length=1, max_length=320)],
    password: Annotated[StorableText, Form(min_length=1, max_length=1024)],
) -> JSONResponse:
    """OAuth2 password flow (form encoded), as VibeCaaS documents it."""
    async with login_attempt(request, username):
        tokens = await run_in_threadpool(auth.login, core.db, username, password)
    return JSONResponse(
        {
            "access_token": tokens.access_token,
            "token_type": "bearer",
            "expires_in": tokens.expires_in,
            "refresh_token": tokens.refresh_token,
        }
    )


@auth_router.post("/auth/refresh", tags=["Auth"])
def refresh(request: Request, core: CoreDep, body: w.RefreshRequest | None = None) -> JSONResponse:
    """Swap a refresh token (in the body, or as the bearer token) for a new pair; the old one stops working. A valid
    access token as the bearer token (as both documents show it) renews its session the same way."""
    presented = (body.refresh_token if body else None) or bearer_token(request.headers.get("authorization"))
    if not presented:
        raise Unauthorized(
            "Send the refresh token as `refresh_token` in the body, or the access or refresh token as the bearer token"
        )
    if not (body and body.refresh_token) and auth.token_type(presented) == "access":
        tokens = auth.refresh_session(core.db, presented)
    else:
        tokens = auth.refresh(core.db, presented)
    return JSONResponse(w.token_json(tokens, users.view_of(core.db, tokens.user.id)))


@auth_router.post("/auth/logout", tags=["Auth"])
def logout(request: Request, core: CoreDep, body: w.RefreshRequest | None = None) -> Response:
    """End this session: its access and refresh tokens stop working."""
    bearer = bearer_token(request.headers.get("authorization"))
    auth.logout(
        core.db,
        access_token=bearer if bearer and auth.looks_like_jwt(bearer) else None,
        refresh_token=body.refresh_token if body else None,
    )
    return ok({"signed_out": True}, message="Signed out")


router.include_router(auth_router)


@router.get("/api-keys", tags=["API keys"])
async def list_api_keys(core: CoreDep, principal: PrincipalDep) -> Response:
    keys = await run_in_threadpool(users.list_api_keys, core.db, principal)
    return ok([w.ApiKeyOut.of(k).model_dump(mode="json") for k in keys])


@router.post("/api-keys", status_code=201, tags=["API keys"])
def create_key(core: CoreDep, principal: PrincipalDep, body: w.ApiKeyCreate | None = None) -> Response:
    """Make an API key; the key itself is in this reply only."""
    key, plain = create_api_key(core.db, user_id=principal.user_id, name=body.name if body else "api")
    return ok({**w.ApiKeyOut.of(key).model_dump(mode="json"), "key": plain}, status_code=201)


@router.delete("/api-keys/{key_id}", status_code=204, response_class=Response, tags=["API keys"])
def revoke_key(key_id: Id, core: CoreDep, principal: PrincipalDep) -> Response:
    users.revoke_api_key(core.db, principal, key_id)
    return Response(status_code=204)


@router.get("/admin/users", tags=["Admin"])
def admin_list_users(core: CoreDep, principal: PrincipalDep, page: PageDep) -> Response:
    """All users (admin only)."""
    views, total = users.list_users(core.db, principal, page=page.page, per_page=page.per_page)
    return ok(
        [w.user_json(v) for v in views],
        pagination={
            "page": page.page,
            "limit": page.per_page,
            "total": total,
            "has_next": page.page * page.per_page < total,
            "has_prev": page.page > 1,
        },
    )


@router.put("/admin/users/{user_id}/tier", tags=["Admin"])
def admin_set_tier(user_id: str, body: w.TierUpdate, core: CoreDep, principal: PrincipalDep) -> Response:
    """Change a user's subscription tier (admin only)."""
    view = users.set_tier(core.db, principal, w.parse_user_id(user_id), body.tier)
    return ok(w.user_json(view), **w.user_json(view))


@router.post("/admin/users/{user_id}/suspend", tags=["Admin"])
def admin_suspend(user_id: str, core: CoreDep, principal: PrincipalDep) -> Response:
    """Suspend a user: their keys and tokens stop working, and every server of theirs is suspended (admin only)."""
    return ok(w.user_json(users.set_status(core.db, principal, w.parse_user_id(user_id), "suspended")))


@router.post("/admin/users/{user_id}/activate", tags=["Admin"])
@router.post("/admin/users/{user_id}/unsuspend", tags=["Admin"])
def admin_activate(user_id: str, core: CoreDep, principal: PrincipalDep) -> Response:
    """Lift a user's suspension, and their servers' (admin only)."""
    return ok(w.user_json(users.set_status(core.db, principal, w.parse_user_id(user_id), "active")))

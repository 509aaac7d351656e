"""VibeCaaS deployment routes (/api/v1/deployments): builds of an app's git source into releases, in that
document's shapes. A deployment is carried by an operation (its `operation` field), which a client can also wait
on at /api/v1/operations/{id}."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field

from cloudplane.api.accounts.schemas import ErrorEnvelope, errors
from cloudplane.api.common.deps import CoreDep, PrincipalDep, read, reply
from cloudplane.api.common.faces import Responses, face_route_class
from cloudplane.api.common.schemas import Request as BaseRequest
from cloudplane.api.operations.routes import OperationOut, v1_operation
from cloudplane.api.vibecaas.envelope import page_fields, vibecaas_renderer
from cloudplane.services import deployments
from cloudplane.services.apps import TEXT_FIELDS
from cloudplane.services.deployments import COMMIT, DeploymentView
from cloudplane.services.pages import Page

router = APIRouter(
    route_class=face_route_class(vibecaas_renderer),
    tags=["VibeCaaS deployments"],
    responses=errors(400, 401, 403, 422, 429),
)
_NO_SUCH: Responses = {404: {"model": ErrorEnvelope, "description": "No such deployment in your account"}}
DeploymentStatus = Literal["pending", "building", "built", "failed"]
DeploymentId = Annotated[str, Path(description="The deployment's id, a UUID")]


class DeploymentCreate(BaseRequest):
    model_config = ConfigDict(extra="forbid", strict=True)

    app_id: str = Field(max_length=45, description="The application to build, one of yours")
    source: Literal["github", "git"] = Field(
        default="github", description="Where the source is: the app's github_repo (any git URL the operator allows)"
    )
    branch: str | None = Field(
        default=None,
        pattern=TEXT_FIELDS["branch"][0].pattern,
        max_length=TEXT_FIELDS["branch"][1],
        description="The branch to build; default: the app's branch",
    )
    commit: str | None = Field(
        default=None,
        pattern=COMMIT.pattern,
        description="A commit id (4-40 hex digits) on the branch to build instead of its head",
    )


class DeploymentOut(BaseModel):
    id: str
    app_id: str
    source: str
    source_url: str = Field(description="The git URL fetched (the app's github_repo when it was asked for)")
    branch: str
    commit: str | None = Field(description="The commit asked for; null: the branch's head")
    commit_sha: str | None = Field(description="The commit built, once fetched")
    framework: str | None = Field(description="The framework found in the repository, once fetched")
    status: DeploymentStatus = Field(description="pending, building, then built or failed")
    error: str | None = Field(description="Why it failed, ending with the build log's last lines")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    operation: OperationOut | None = Field(description="The operation carrying it: progress and outcome")


class DeploymentList(BaseModel):
    items: list[DeploymentOut]
    total: int
    page: int
    pages: int
    limit: int


class DeploymentLog(BaseModel):
    deployment_id: str
    status: DeploymentStatus
    log: str = Field(description="The build's output so far (its last MiB)")


def deployment_out(view: DeploymentView) -> DeploymentOut:
    d = view.deployment
    return DeploymentOut(
        id=d.id,
        app_id=d.app_id,
        source=d.source,
        source_url=d.source_url,
        branch=d.branch,
        commit=d.commit_requested,
        commit_sha=d.commit_sha,
        framework=d.framework,
        status=d.status,  # type: ignore[arg-type]
        error=d.error,
        created_at=d.created_at,
        started_at=d.started_at,
        finished_at=d.finished_at,
        operation=v1_operation(view.operation) if view.operation else None,
    )


def deployment_list(result: Page[DeploymentView]) -> DeploymentList:
    return DeploymentList(items=[deployment_out(v) for v in result.items], **page_fields(result))


@router.get("/deployments", response_model=DeploymentList)
async def list_deployments(
    core: CoreDep,
    principal: PrincipalDep,
    app_id: Annotated[str | None, Query(max_length=45, description="Only this application's")] = None,
    status: Annotated[DeploymentStatus | None, Query(description="Only deployments in this status")] = None,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1")] = 1,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page (at most 100)")] = 20,
) -> Response:
    """Your deployments, newest first."""
    result = await read(
        core, deployments.list_deployments, core, principal, page=page, per_page=limit, app_id=app_id, status=status
    )
    return reply(deployment_list(result))


@router.post(
    "/deployments",
    status_code=202,
    response_model=DeploymentOut,
    responses={404: {"model": ErrorEnvelope, "description": "No such application in your account"}},
)
def create_deployment(body: DeploymentCreate, core: CoreDep, principal: PrincipalDep) -> Response:
    """Build the app's git source (its github_repo at `branch` or `commit`) into a release. It is "pending" at once,
    "building" while its operation runs and "built" or "failed" (with the log's tail) at the end."""
    view = deployments.create_deployment(core, principal, **body.model_dump())
    return reply(deployment_out(view), 202)


@router.get("/deployments/{deployment_id}", response_model=DeploymentOut, responses=_NO_SUCH)
async def get_deployment(deployment_id: DeploymentId, core: CoreDep, principal: PrincipalDep) -> Response:
    return reply(deployment_out(await read(core, deployments.get_deployment, core, principal, deployment_id)))


@router.get("/deployments/{deployment_id}/logs", response_model=DeploymentLog, responses=_NO_SUCH)
async def get_deployment_logs(deployment_id: DeploymentId, core: CoreDep, principal: PrincipalDep) -> Response:
    """The build's log: the commands run and their output."""
    d = (await read(core, deployments.get_deployment, core, principal, deployment_id)).deployment
    return reply(DeploymentLog(deployment_id=d.id, status=d.status, log=d.log or ""))  # type: ignore[arg-type]

"""Operations as resources: `/api/v1/operations` (CloudVPS envelope) and `/api/operations/{id}` (LetsCloud, the
extra `getOperation` of its document), so a client or a GPT can wait for any long action to finish.

Each face names an operation's target in its own ids: LetsCloud `{"type": "server", "id": 12}`, /api/v1
`{"type": "vps", "id": "vps-12"}` (a snapshot is a CloudVPS `backup`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from cloudplane import context
from cloudplane.api.accounts.schemas import ErrorEnvelope, errors
from cloudplane.api.cloudvps.envelope import Pagination, cloudvps_renderer
from cloudplane.api.common.deps import CoreDep, PrincipalDep, read, reply
from cloudplane.api.common.faces import default_renderer, face_route_class
from cloudplane.services import operations
from cloudplane.services.operations import OperationView

OperationId = Annotated[
    str, Path(min_length=36, max_length=36, pattern=r"^[0-9a-f-]{36}$", description="The operation's id (a UUID)")
]
OperationStatus = Literal["pending", "running", "succeeded", "failed"]


class OperationError(BaseModel):
    code: str
    message: str


class TargetOut(BaseModel):
    type: str = Field(description="What the operation acts on: server or snapshot (vps or backup on /api/v1)")
    id: int | str


class OperationOut(BaseModel):
    id: str
    kind: str = Field(description="create, start, stop, reboot, delete, snapshot, delete_snapshot, restore, rent")
    status: OperationStatus
    progress: int = Field(ge=0, le=100, description="Percent done")
    target: TargetOut
    error: OperationError | None = Field(description="Why it failed; null unless status is failed")
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None


# Target names and ids as each face shows them.
V1_TARGETS = {"server": ("vps", "vps-"), "snapshot": ("backup", "backup-")}
V1_TARGET_TYPES = {face: core for core, (face, _) in V1_TARGETS.items()}


def _out(op: OperationView, target: TargetOut) -> OperationOut:
    return OperationOut(
        id=op.id,
        kind=op.kind,
        status=op.status,  # type: ignore[arg-type]
        progress=op.progress,
        target=target,
        error=OperationError(code=op.error_code or "OPERATION_FAILED", message=op.error_message or "failed")
        if op.status == "failed"
        else None,
        created_at=op.created_at,
        started_at=op.started_at,
        finished_at=op.finished_at,
    )


def v1_operation(op: OperationView) -> OperationOut:
    name, prefix = V1_TARGETS.get(op.target_type, (op.target_type, ""))
    return _out(op, TargetOut(type=name, id=f"{prefix}{op.target_id}"))


def letscloud_operation(op: OperationView) -> OperationOut:
    target_id: int | str = int(op.target_id) if op.target_id.isascii() and op.target_id.isdigit() else op.target_id
    return _out(op, TargetOut(type=op.target_type, id=target_id))


class OperationReply(BaseModel):
    success: bool = True
    data: OperationOut


class OperationListReply(BaseModel):
    success: bool = True
    data: list[OperationOut]
    pagination: Pagination


v1_router = APIRouter(
    route_class=face_route_class(cloudvps_renderer), tags=["Operations"], responses=errors(401, 422, 429)
)


def _v1_target(target_type: str | None, target_id: str | None) -> tuple[str | None, str | None]:
    """The core's name and id of a target given in /api/v1's words ("vps", "vps-12"; a prefixed id names its type
    by itself); the core's own words work too. An id that names nothing matches nothing."""
    core_type = V1_TARGET_TYPES.get(target_type, target_type) if target_type else None
    if target_id is None:
        return core_type, None
    for candidate, (_, prefix) in V1_TARGETS.items():
        if target_id.startswith(prefix) and core_type in (None, candidate):
            return candidate, target_id.removeprefix(prefix)
    return core_type, target_id


@v1_router.get("/operations", response_model=OperationListReply)
async def list_operations(
    core: CoreDep,
    principal: PrincipalDep,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1")] = 1,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page (at most 100)")] = 20,
    status: Annotated[OperationStatus | None, Query(description="Only operations in this status")] = None,
    target_type: Annotated[
        str | None, Query(max_length=40, pattern=r"^[a-z_]+$", description="vps or backup (server, snapshot)")
    ] = None,
    target_id: Annotated[
        str | None, Query(max_length=64, pattern=r"^[A-Za-z0-9_-]+$", description='e.g. "vps-12"')
    ] = None,
) -> Response:
    """Your operations, newest first."""
    core_type, core_id = _v1_target(target_type, target_id)
    result = await read(
        core,
        operations.list_operations,
        core.db,
        principal,
        page=page,
        per_page=limit,
        status=status,
        target_type=core_type,
        target_id=core_id,
    )
    return reply(
        OperationListReply(
            data=[v1_operation(op) for op in result.items],
            pagination=Pagination.of(page, limit, result.total),
        )
    )


_NO_SUCH_OPERATION: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorEnvelope, "description": "No such operation in your account"}
}


@v1_router.get("/operations/{operation_id}", response_model=OperationReply, responses=_NO_SUCH_OPERATION)
async def get_operation(operation_id: OperationId, core: CoreDep, principal: PrincipalDep) -> Response:
    op = await read(core, operations.get_operation, core.db, principal, operation_id)
    return reply(OperationReply(data=v1_operation(op)))


letscloud_router = APIRouter(route_class=face_route_class(default_renderer))


@letscloud_router.get("/operations/{operation_id}", operation_id="getOperation", response_model=OperationOut)
async def letscloud_get_operation(operation_id: OperationId, core: CoreDep, principal: PrincipalDep) -> Response:
    return reply(letscloud_operation(await read(core, operations.get_operation, core.db, principal, operation_id)))


class OperationLocationMiddleware:
    """A reply to a request that accepted a long action says which operation carries it: `Operation-Location`
    (and `Location` on a 202), at the operations route of the face that answered."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        base = "/api/v1" if scope.get("path", "").startswith("/api/v1/") else "/api"

        async def send_with_location(message: Message) -> None:
            if message["type"] == "http.response.start":
                op_id = context.current().operation_id
                if op_id and message["status"] < 300:
                    location = f"{base}/operations/{op_id}".encode()
                    headers = [*message.get("headers", ()), (b"operation-location", location)]
                    if message["status"] == 202:
                        headers.append((b"location", location))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_location)

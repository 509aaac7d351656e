"""GPU Cloud Manager routes: parse, call the gpu service, shape the reply."""

from __future__ import annotations

import json
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from cloudplane.api.common.deps import MAX_ID, CoreDep, PrincipalDep
from cloudplane.api.common.faces import face_route_class
from cloudplane.domain.errors import CloudplaneError, NotFound
from cloudplane.domain.states import ServerStatus
from cloudplane.providers.marketplace import Offer, OfferQuery
from cloudplane.services import gpu, servers
from cloudplane.services.servers import ServerView


def gpumgr_renderer(error: CloudplaneError) -> JSONResponse:
    body: dict[str, Any] = {"success": False, "error": error.message}
    if error.details:
        body["details"] = error.details
    return JSONResponse(body, status_code=error.status_code)


class ErrorReply(BaseModel):
    success: bool = False
    error: str
    details: dict[str, Any] | None = None


_ERRORS = {
    code: {"model": ErrorReply, "description": text}
    for code, text in {
        400: "Invalid request data",
        401: "Missing or invalid API key",
        404: "No such provider, offer or instance",
        409: "Not possible in the instance's (or offer's) current state",
        422: "A field breaks a rule; `details.field` names it",
        429: "Too many requests",
    }.items()
}
router = APIRouter(route_class=face_route_class(gpumgr_renderer), tags=["GPU Cloud Manager"], responses=_ERRORS)

# Instance ids carry the provider: "vast_12" is server 12 rented from vast_ai.
ID_PREFIX = {"vast_ai": "vast"}
KNOWN_GPU_MODELS = [
    "H100 SXM",
    "H100 PCIe",
    "A100 SXM4 80GB",
    "A100 PCIe 40GB",
    "L40S",
    "L4",
    "A10",
    "RTX 6000 Ada",
    "A6000",
    "RTX 4090",
    "RTX 4080",
    "RTX 3090",
    "V100",
    "T4",
]


def ok(data: Any, message: str, status_code: int = 200, **extra: Any) -> JSONResponse:
    body: dict[str, Any] = {"success": True, "message": message}
    if data is not None:
        body["data"] = data
    return JSONResponse({**body, **extra}, status_code=status_code)


def instance_id(server: ServerView) -> str:
    return f"{ID_PREFIX.get(server.provider, server.provider)}_{server.id}"


def parse_instance_id(value: str) -> int:
    _, _, number = value.rpartition("_")
    if not number.isdigit() or not 0 < int(number) <= MAX_ID:
        raise NotFound("Instance not found", instance_id=value)
    return int(number)


def offer_json(offer: Offer) -> dict[str, Any]:
    return {
        "id": f"{ID_PREFIX.get(offer.provider, offer.provider)}_{offer.offer_id}",
        "provider": offer.provider,
        "provider_id": offer.offer_id,
        "name": offer.name,
        "status": "available" if offer.available else "offline",
        "gpu_model": offer.gpu_model,
        "gpu_count": offer.gpu_count,
        "gpu_ram_gb": offer.gpu_ram_gb,
        "cpu_count": offer.cpu_count,
        "ram_gb": offer.ram_gb,
        "storage_gb": offer.storage_gb,
        "price_per_hour": offer.price_per_hour,
        "region": offer.region,
        "available": offer.available,
        "provider_data": {"machine_id": offer.machine_id, "reliability": offer.reliability, **offer.extra},
    }


_STATUS = {
    ServerStatus.CREATING: "loading",
    ServerStatus.RUNNING: "running",
    ServerStatus.STOPPED: "stopped",
    ServerStatus.ERROR: "error",
    ServerStatus.DELETED: "destroyed",
}
_TASK_STATUS = {"starting": "loading", "stopping": "stopping", "deleting": "destroying"}


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


def instance_json(server: ServerView) -> dict[str, Any]:
    details = json.loads(server.provider_data or "{}")
    return {
        "id": instance_id(server),
        "provider": server.provider,
        "provider_id": server.provider_ref,
        "name": server.label,
        "status": _TASK_STATUS.get(server.task_state or "", _STATUS.get(server.status, server.status)),  # type: ignore[call-overload]
        "gpu_model": server.gpu_model,
        "gpu_count": server.gpu_count,
        "cpu_count": server.cpu_count,
        "ram_gb": _number(server.ram_gb),
        "storage_gb": _number(server.storage_gb),
        "price_per_hour": _number(server.price_per_hour),
        "region": server.region,
        "offer_id": server.offer_id,
        "created_at": server.created_at.isoformat().replace("+00:00", "Z"),
        "updated_at": server.updated_at.isoformat().replace("+00:00", "Z"),
        "error": server.error_message,
        "provider_data": {k: v for k, v in details.items() if v is not None},
    }


class InstanceCreate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    provider: str = Field(min_length=1, max_length=50)
    offer_id: str = Field(min_length=1, max_length=100)
    image: str = Field(min_length=1, max_length=500)
    label: str = Field(default="GPU instance", min_length=1, max_length=255, pattern=r"\S")
    onstart_script: str | None = Field(default=None, max_length=65536)
    ssh_key: str | None = Field(default=None, max_length=16384)


InstanceId = Annotated[str, Path(max_length=100, description='Instance id, e.g. "vast_12"')]


@router.get("/providers")
async def list_providers(core: CoreDep, principal: PrincipalDep) -> JSONResponse:
    return ok(sorted(core.providers.markets), "Providers retrieved successfully")


@router.get("/gpu-models")
async def list_gpu_models(principal: PrincipalDep) -> JSONResponse:
    """GPU models worth searching for (any model name works in the search)."""
    return ok(KNOWN_GPU_MODELS, "GPU models retrieved successfully")


@router.get("/offers/search")
async def search_offers(
    core: CoreDep,
    principal: PrincipalDep,
    provider: Annotated[str | None, Query(max_length=50)] = None,
    gpu_model: Annotated[str | None, Query(max_length=100)] = None,
    min_gpu_count: Annotated[int | None, Query(ge=1, le=64)] = None,
    max_price: Annotated[float | None, Query(ge=0, le=100_000)] = None,
    region: Annotated[str | None, Query(max_length=100)] = None,
    available: bool | None = None,
    sort: Literal["price", "reliability"] | None = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> JSONResponse:
    """Offers from every provider (or one), merged and sorted; a provider that failed is named in `errors`."""
    query = OfferQuery(
        gpu_model=gpu_model,
        min_gpu_count=min_gpu_count,
        max_price=max_price,
        region=region,
        available=available,
        sort=sort or "price",
        limit=limit,
    )
    result = await gpu.search_offers(core, query, provider)
    extra = {"errors": result.errors} if result.errors else {}
    return ok([offer_json(o) for o in result.offers], "Offers retrieved successfully", **extra)


@router.get("/instances")
async def list_instances(core: CoreDep, principal: PrincipalDep) -> JSONResponse:
    page = await run_in_threadpool(gpu.list_instances, core, principal, page=1, per_page=100)
    return ok([instance_json(s) for s in page.items], "Instances retrieved successfully", total=page.total)


@router.post("/instances", status_code=201)
async def create_instance(
    request: Request, body: InstanceCreate, core: CoreDep, principal: PrincipalDep
) -> JSONResponse:
    """Rent an offer: the instance is recorded at once (status "loading") and becomes "running" when the
    provider has started it."""
    offer = await gpu.find_offer(core, body.provider, body.offer_id)
    server = await run_in_threadpool(
        gpu.rent,
        core,
        principal,
        offer,
        image=body.image,
        label=body.label,
        onstart_script=body.onstart_script,
        ssh_key=body.ssh_key,
    )
    return ok(instance_json(server), "Instance created successfully", status_code=201)


@router.get("/instances/{instance_id}")
async def get_instance(instance_id: InstanceId, core: CoreDep, principal: PrincipalDep) -> JSONResponse:
    server = await run_in_threadpool(gpu.get_instance, core, principal, parse_instance_id(instance_id))
    return ok(instance_json(server), "Instance retrieved successfully")


async def _act(core: CoreDep, principal: PrincipalDep, instance_id: str, action: str) -> None:
    server_id = parse_instance_id(instance_id)
    await run_in_threadpool(gpu.get_instance, core, principal, server_id)
    await run_in_threadpool(servers.server_action, core, principal, server_id, action)


@router.post("/instances/{instance_id}/start")
async def start_instance(instance_id: InstanceId, core: CoreDep, principal: PrincipalDep) -> JSONResponse:
    await _act(core, principal, instance_id, "start")
    return ok(None, "Instance started successfully")


@router.post("/instances/{instance_id}/stop")
async def stop_instance(instance_id: InstanceId, core: CoreDep, principal: PrincipalDep) -> JSONResponse:
    await _act(core, principal, instance_id, "stop")
    return ok(None, "Instance stopped successfully")


@router.delete("/instances/{instance_id}")
async def destroy_instance(instance_id: InstanceId, core: CoreDep, principal: PrincipalDep) -> JSONResponse:
    await _act(core, principal, instance_id, "delete")
    return ok(None, "Instance destroyed successfully")

"""GPU Cloud Manager routes: parse, call the gpu service, shape the reply."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool

from cloudplane.api.common.deps import CoreDep, PrincipalDep, read, write
from cloudplane.api.common.faces import Responses, face_route_class
from cloudplane.api.common.ids import parse_id
from cloudplane.api.common.schemas import Request as BaseRequest
from cloudplane.domain.errors import CloudplaneError, NotFound
from cloudplane.domain.times import iso_z
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


_ERRORS: Responses = {
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
    number = parse_id(value.rpartition("_")[2])
    if number is None:
        raise NotFound("Instance not found", instance_id=value)
    return number


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


def _number(value: Decimal | None) -> float | None:
    # The document writes figures and prices as JSON numbers (1.50); they have a few decimal places, which a float
    # prints exactly.
    return None if value is None else float(value)


def instance_json(server: ServerView) -> dict[str, Any]:
    return {
        "id": instance_id(server),
        "provider": server.provider,
        "provider_id": server.provider_ref,
        "name": server.label,
        "status": server.words.gpu,
        "gpu_model": server.gpu.model if server.gpu else None,
        "gpu_count": server.gpu.count if server.gpu else None,
        "cpu_count": server.specs.cpu,
        "ram_gb": _number(server.specs.ram_gb),
        "storage_gb": _number(server.specs.disk_gb),
        "price_per_hour": _number(server.prices.hourly),
        "region": server.region,
        "offer_id": server.offer_id,
        "created_at": iso_z(server.created_at),
        "updated_at": iso_z(server.updated_at),
        "error": server.error_message,
        "provider_data": {k: v for k, v in server.details.items() if v is not None},
        "operation_id": server.operation_id,
    }


class InstanceCreate(BaseRequest):
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
    # Only an "errors" key: it goes to the reply body, never to `status_code`.
    extra: dict[str, Any] = {"errors": result.errors} if result.errors else {}
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
    server = await write(
        core,
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
    server = await read(core, gpu.get_instance, core, principal, parse_instance_id(instance_id))
    return ok(instance_json(server), "Instance retrieved successfully")


async def _act(core: CoreDep, principal: PrincipalDep, instance_id: str, action: str) -> str | None:
    """Run the action; the id of the operation carrying it out."""
    server_id = parse_instance_id(instance_id)
    await read(core, gpu.get_instance, core, principal, server_id)
    server = await write(core, servers.server_action, core, principal, server_id, action)
    return server.operation_id


@router.post("/instances/{instance_id}/start")
async def start_instance(instance_id: InstanceId, core: CoreDep, principal: PrincipalDep) -> JSONResponse:
    operation_id = await _act(core, principal, instance_id, "start")
    return ok(None, "Instance started successfully", operation_id=operation_id)


@router.post("/instances/{instance_id}/stop")
async def stop_instance(instance_id: InstanceId, core: CoreDep, principal: PrincipalDep) -> JSONResponse:
    operation_id = await _act(core, principal, instance_id, "stop")
    return ok(None, "Instance stopped successfully", operation_id=operation_id)


@router.delete("/instances/{instance_id}")
async def destroy_instance(instance_id: InstanceId, core: CoreDep, principal: PrincipalDep) -> JSONResponse:
    operation_id = await _act(core, principal, instance_id, "delete")
    return ok(None, "Instance destroyed successfully", operation_id=operation_id)

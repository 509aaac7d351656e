"""CloudVPS Pro's VPS and plan routes (/api/v1/vps, /api/v1/plans): servers and catalog plans under the names and
shapes of that document. A VPS is a `Server`, so every server of the account is one, rented GPU instances too."""

from __future__ import annotations

import calendar
from datetime import UTC, datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, TypeVar

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from cloudplane.api.accounts.schemas import ErrorEnvelope, errors
from cloudplane.api.cloudvps.envelope import Pagination, cloudvps_renderer
from cloudplane.api.common.deps import CoreDep, PrincipalDep, read, reply, write
from cloudplane.api.common.faces import Responses, face_route_class
from cloudplane.api.common.ids import parse_id
from cloudplane.api.common.schemas import Request as BaseRequest
from cloudplane.api.letscloud.openapi_doc import HOSTNAME_PATTERN
from cloudplane.core import Core
from cloudplane.db.tables import Image, Location, Plan
from cloudplane.domain.errors import NotFound
from cloudplane.domain.pricing import CENT, annual_from_monthly
from cloudplane.services import servers
from cloudplane.services.accounts import Principal
from cloudplane.services.catalog import CatalogView
from cloudplane.services.servers import ServerView, plan_terms

_STATE_CONFLICT: Responses = {409: {"model": ErrorEnvelope, "description": "Not possible in the VPS's current state"}}
_NO_SUCH_VPS: Responses = {404: {"model": ErrorEnvelope, "description": "No such VPS in your account"}}
router = APIRouter(
    route_class=face_route_class(cloudvps_renderer),
    tags=["CloudVPS VPS"],
    responses=errors(400, 401, 403, 422, 429),
)

DEFAULT_IMAGE = "ubuntu-22-04"
PLAN_FEATURES = ["SSD Storage", "99.9% Uptime", "24/7 Support"]
# Taglines of the seeded CloudVPS plans; any other plan is described by its figures.
PLAN_DESCRIPTIONS = {
    "starter": "Perfect for small websites",
    "professional": "For growing sites and web applications",
    "business": "For busy stores, databases and teams",
    "enterprise": "For demanding production workloads",
}
# Money is Decimal up to here; the document writes prices as JSON numbers (19.99). A price has a few decimal
# places, and a float prints such a value exactly.
Money = Annotated[Decimal, PlainSerializer(float, return_type=float)]

VpsStatus = Literal[
    "creating",
    "running",
    "stopped",
    "starting",
    "stopping",
    "rebooting",
    "rebuilding",
    "restoring",
    "deleting",
    "error",
    "suspended",
]
VpsId = Annotated[str, Path(description='The VPS id, e.g. "vps-123" (a bare "123" works too)')]
PlanId = Annotated[str, Path(description='The plan id, e.g. "plan-starter" (the bare catalog slug works too)')]


class Request(BaseRequest):
    model_config = ConfigDict(extra="forbid")


class VpsCreate(Request):
    name: str = Field(min_length=1, max_length=255, pattern=r"\S")
    plan_id: str = Field(min_length=1, max_length=80, description='"plan-<slug>", as GET /plans lists them')
    operating_system: str | None = Field(
        default=None,
        min_length=1,
        max_length=80,
        description='An image slug such as "ubuntu-22.04" (dots or dashes); Ubuntu 22.04 when left out',
    )
    location: str | None = Field(
        default=None, min_length=1, max_length=64, description="A location slug; the first available when left out"
    )
    ssh_keys: list[Annotated[str, Field(min_length=1, max_length=16384)]] = Field(
        default_factory=list,
        max_length=50,
        description="OpenSSH public key lines; each is added to your account's keys unless it is there already",
    )
    hostname: str | None = Field(default=None, max_length=253, pattern=HOSTNAME_PATTERN)


class VpsRebuild(Request):
    operating_system: str | None = Field(
        default=None,
        min_length=1,
        max_length=80,
        description='An image slug such as "centos-8" (dots or dashes); the one the VPS runs when left out',
    )
    ssh_keys: list[Annotated[str, Field(min_length=1, max_length=16384)]] | None = Field(
        default=None,
        max_length=50,
        description="OpenSSH public key lines for root, each added to your account's keys unless it is there "
        "already; the VPS's keys when left out, none with []",
    )


class VpsUpdate(Request):
    name: str = Field(min_length=1, max_length=255, pattern=r"\S")


class Specifications(BaseModel):
    cpu: int | None
    ram: int | float | None = Field(description="GB")
    storage: int | float | None = Field(description="GB")
    bandwidth: int | None = Field(description="GB per month; null for rented GPU instances, which meter none")


class VpsPricing(BaseModel):
    monthly_price: Money
    currency: str
    hourly_price: Money | None = Field(description="Rented GPU instances bill by the hour; null for monthly plans")


class Gpu(BaseModel):
    model: str
    count: int


class SshKeyRef(BaseModel):
    id: int
    title: str
    fingerprint: str


class VpsOut(BaseModel):
    id: str
    name: str
    status: VpsStatus
    ip_address: str | None
    private_ip: str | None
    operating_system: str
    specifications: Specifications
    pricing: VpsPricing
    created_at: datetime
    next_billing_date: datetime
    hostname: str
    location: str | None
    plan_id: str | None = Field(description="Null for a rented GPU instance, which has no catalog plan")
    gpu: Gpu | None
    ssh_keys: list[SshKeyRef]
    error_message: str | None
    operation_id: str | None = Field(
        default=None, description="The operation carrying out the action this reply accepted; null on reads"
    )


class VpsCreated(VpsOut):
    root_password: str | None = Field(description="The generated root password; shown only in this reply")


V = TypeVar("V", bound=VpsOut)


class VpsReply(BaseModel):
    success: bool = True
    data: VpsOut


class VpsActionReply(VpsReply):
    message: str


class VpsRebuilt(VpsOut):
    root_password: str = Field(description="The new root password; shown only in this reply")


class VpsRebuiltReply(BaseModel):
    success: bool = True
    message: str
    data: VpsRebuilt


class VpsCreatedReply(BaseModel):
    success: bool = True
    message: str
    data: VpsCreated


class VpsListReply(BaseModel):
    success: bool = True
    data: list[VpsOut]
    pagination: Pagination


class PlanSpecifications(BaseModel):
    cpu: int
    ram: int | float = Field(description="GB")
    storage: int = Field(description="GB")
    bandwidth: int = Field(description="GB per month")


class PlanPricing(BaseModel):
    monthly: Money
    annually: Money
    currency: str


class PlanOut(BaseModel):
    id: str
    name: str
    description: str
    specifications: PlanSpecifications
    pricing: PlanPricing
    features: list[str]
    available: bool = Field(description="False for a retired plan, which existing VPSs keep but new ones cannot use")


class PlanReply(BaseModel):
    success: bool = True
    data: PlanOut


class PlanListReply(BaseModel):
    success: bool = True
    data: list[PlanOut]


def parse_vps_id(value: str) -> int:
    number = parse_id(value.removeprefix("vps-"))
    if number is None:
        raise NotFound("VPS not found", vps_id=value)
    return number


def _gb(value: Decimal | None) -> int | float | None:
    """GB as the document writes them: 4, or 1.5 for what is not whole."""
    if value is None:
        return None
    value = value.quantize(CENT)
    return int(value) if value == value.to_integral_value() else float(value)


def _add_months(moment: datetime, months: int) -> datetime:
    index = moment.month - 1 + months
    year, month = moment.year + index // 12, index % 12 + 1
    return moment.replace(year=year, month=month, day=min(moment.day, calendar.monthrange(year, month)[1]))


def next_billing_date(created_at: datetime, now: datetime) -> datetime:
    """The first monthly anniversary of `created_at` after `now`, and never the creation day itself; one made on
    the 31st renews on the last day of shorter months."""
    months = max(1, (now.year - created_at.year) * 12 + now.month - created_at.month)
    due = _add_months(created_at, months)
    return due if due > now else _add_months(created_at, months + 1)


def plan_out(plan: Plan) -> PlanOut:
    specs, prices = plan_terms(plan)
    ram = _gb(specs.ram_gb)
    return PlanOut(
        id=f"plan-{plan.slug}",
        name=plan.name,
        description=PLAN_DESCRIPTIONS.get(
            plan.slug, f"{plan.cpu} vCPU, {ram} GB RAM and {plan.disk_gb} GB SSD storage"
        ),
        specifications=PlanSpecifications(
            cpu=plan.cpu, ram=ram or 0, storage=plan.disk_gb, bandwidth=specs.bandwidth_gb or 0
        ),
        pricing=PlanPricing(
            monthly=prices.monthly, annually=annual_from_monthly(prices.monthly), currency=prices.currency
        ),
        features=PLAN_FEATURES,
        available=plan.available,
    )


def find_plan(catalog: CatalogView, plan_id: str, *, for_sale: bool = False) -> Plan:
    # "plan-x" names slug "x"; a bare slug works too, and is tried second in case a slug itself starts "plan-".
    for slug in (plan_id.removeprefix("plan-"), plan_id):
        plan = catalog.by_slug("plan", slug)
        if plan is not None and (plan.available or not for_sale):
            return plan  # type: ignore[return-value]
    raise NotFound("Plan not found; GET /plans lists the plans", field="plan_id", plan_id=plan_id)


def find_image(catalog: CatalogView, operating_system: str | None, location: Location | None = None) -> Image:
    available = [i for i in catalog.images if i.available]
    if operating_system is None:
        # The default is one the location (or, with none given, some location) can boot.
        offered = catalog.images_at(location) if location else [i for i in catalog.offered_images if i.available]
        default = catalog.by_slug("image", DEFAULT_IMAGE)
        if default in offered:
            return default
        if offered:
            return offered[0]
    else:
        # The document writes "ubuntu-22.04" where the catalog's slug is "ubuntu-22-04".
        wanted = operating_system.strip().lower().replace(".", "-")
        for image in available:
            if image.slug in (wanted, operating_system):
                return image
    raise NotFound(
        "Operating system not found",
        field="operating_system",
        operating_system=operating_system,
        available=[i.slug for i in available],
    )


def image_slug(catalog: CatalogView, operating_system: str) -> str:
    """The catalog slug the document's name stands for: "ubuntu-22.04" is the catalog's "ubuntu-22-04"."""
    if catalog.by_slug("image", operating_system) is not None:
        return operating_system
    return operating_system.strip().lower().replace(".", "-")


def find_location(catalog: CatalogView, location: str) -> Location:
    available = [loc for loc in catalog.locations if loc.available]
    for candidate in available:
        if candidate.slug == location.strip().lower():
            return candidate
    raise NotFound("Location not found", field="location", location=location, available=[loc.slug for loc in available])


def default_location(catalog: CatalogView, plan: Plan, image: Image) -> Location:
    """The first location whose provider can make this plan with this image (else the first taking servers, which
    then refuses saying what it offers)."""
    for candidate in catalog.open_locations:
        if catalog.serves(candidate, plan=plan, image=image):
            return candidate
    if catalog.open_locations:
        return catalog.open_locations[0]
    raise NotFound("Location not found", field="location", location=None, available=[])


def vps_out(server: ServerView, now: datetime, model: type[V], **extra: Any) -> V:
    return model(
        id=f"vps-{server.id}",
        name=server.label,
        status=server.words.state,  # type: ignore[arg-type]
        ip_address=server.ipv4,
        private_ip=server.private_ipv4,
        operating_system=server.image_name,
        specifications=Specifications(
            cpu=server.specs.cpu,
            ram=_gb(server.specs.ram_gb),
            storage=_gb(server.specs.disk_gb),
            bandwidth=server.specs.bandwidth_gb,
        ),
        pricing=VpsPricing(
            monthly_price=server.prices.monthly,
            currency=server.prices.currency,
            hourly_price=server.prices.hourly,
        ),
        created_at=server.created_at,
        next_billing_date=next_billing_date(server.created_at, now),
        hostname=server.hostname,
        location=server.location.slug if server.location else server.region,
        plan_id=f"plan-{server.plan.slug}" if server.plan else None,
        gpu=Gpu(model=server.gpu.model, count=server.gpu.count) if server.gpu else None,
        ssh_keys=[SshKeyRef(id=k.id, title=k.title, fingerprint=k.fingerprint) for k in server.ssh_keys],
        error_message=server.error_message,
        operation_id=server.operation_id,
        **extra,
    )


SORT_KEYS = {"created_at": "created_at", "name": "label", "status": "state"}


@router.get("/vps", response_model=VpsListReply)
async def list_vps(
    core: CoreDep,
    principal: PrincipalDep,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1")] = 1,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page (at most 100)")] = 20,
    status: Annotated[VpsStatus | None, Query(description="Only VPSs in this status")] = None,
    sort: Annotated[Literal["created_at", "name", "status"], Query(description="Sort field")] = "created_at",
    order: Annotated[Literal["asc", "desc"], Query(description="Newest first unless asked otherwise")] = "desc",
) -> Response:
    result = await read(
        core,
        servers.list_servers,
        core,
        principal,
        page=page,
        per_page=limit,
        state=status,
        sort=SORT_KEYS[sort],
        descending=order == "desc",
    )
    now = datetime.now(UTC)
    return reply(
        VpsListReply(
            data=[vps_out(s, now, VpsOut) for s in result.items],
            pagination=Pagination.of(page, limit, result.total),
        )
    )


@router.post(
    "/vps",
    status_code=201,
    response_model=VpsCreatedReply,
    responses={404: {"model": ErrorEnvelope, "description": "No such plan, operating system or location"}},
)
async def create_vps(body: VpsCreate, core: CoreDep, principal: PrincipalDep) -> Response:
    """Create a VPS: it is "creating" at once and "running" when its machine has started. The root password is
    in this reply only."""
    catalog = core.catalog.view()
    # The document's ids and defaults, resolved to catalog slugs: an unknown plan is its 404.
    plan = find_plan(catalog, body.plan_id, for_sale=True)
    location = find_location(catalog, body.location) if body.location is not None else None
    image = find_image(catalog, body.operating_system, location)
    location = location or default_location(catalog, plan, image)
    server, root_password = await write(
        core,
        servers.create_server,
        core,
        principal,
        label=body.name,
        plan=plan.slug,
        image=image.slug,
        location=location.slug,
        hostname=body.hostname,
        public_keys=body.ssh_keys,
    )
    data = vps_out(server, datetime.now(UTC), VpsCreated, root_password=root_password)
    return reply(VpsCreatedReply(message="VPS creation started", data=data), 201)


@router.get("/vps/{vps_id}", response_model=VpsReply, responses=_NO_SUCH_VPS)
async def get_vps(vps_id: VpsId, core: CoreDep, principal: PrincipalDep) -> Response:
    server = await read(core, servers.get_server, core, principal, parse_vps_id(vps_id))
    return reply(VpsReply(data=vps_out(server, datetime.now(UTC), VpsOut)))


@router.put("/vps/{vps_id}", response_model=VpsActionReply, responses=_NO_SUCH_VPS)
async def update_vps(vps_id: VpsId, body: VpsUpdate, core: CoreDep, principal: PrincipalDep) -> Response:
    server = await write(core, servers.rename_server, core, principal, parse_vps_id(vps_id), body.name)
    return reply(VpsActionReply(data=vps_out(server, datetime.now(UTC), VpsOut), message="VPS updated"))


async def _act(core: Core, principal: Principal, vps_id: str, action: str, message: str) -> Response:
    server = await write(core, servers.server_action, core, principal, parse_vps_id(vps_id), action)
    return reply(VpsActionReply(data=vps_out(server, datetime.now(UTC), VpsOut), message=message))


@router.delete(
    "/vps/{vps_id}",
    response_model=VpsActionReply,
    responses={**_NO_SUCH_VPS, **_STATE_CONFLICT},
)
async def delete_vps(
    vps_id: VpsId,
    core: CoreDep,
    principal: PrincipalDep,
    force: Annotated[
        bool, Query(description="Accepted for compatibility: this API never asks for a confirmation")
    ] = False,
) -> Response:
    """Start deleting the VPS: the reply shows it "deleting"; it is gone (404) once its machine is."""
    return await _act(core, principal, vps_id, "delete", "VPS deletion started")


@router.post(
    "/vps/{vps_id}/start",
    response_model=VpsActionReply,
    responses={**_NO_SUCH_VPS, **_STATE_CONFLICT},
)
async def start_vps(vps_id: VpsId, core: CoreDep, principal: PrincipalDep) -> Response:
    return await _act(core, principal, vps_id, "start", "VPS is starting")


@router.post(
    "/vps/{vps_id}/stop",
    response_model=VpsActionReply,
    responses={**_NO_SUCH_VPS, **_STATE_CONFLICT},
)
async def stop_vps(vps_id: VpsId, core: CoreDep, principal: PrincipalDep) -> Response:
    return await _act(core, principal, vps_id, "stop", "VPS is stopping")


@router.post(
    "/vps/{vps_id}/restart",
    response_model=VpsActionReply,
    responses={**_NO_SUCH_VPS, **_STATE_CONFLICT},
)
async def restart_vps(vps_id: VpsId, core: CoreDep, principal: PrincipalDep) -> Response:
    return await _act(core, principal, vps_id, "reboot", "VPS is restarting")


@router.post(
    "/vps/{vps_id}/rebuild",
    response_model=VpsRebuiltReply,
    responses={**_NO_SUCH_VPS, **_STATE_CONFLICT},
)
async def rebuild_vps(vps_id: VpsId, body: VpsRebuild, core: CoreDep, principal: PrincipalDep) -> Response:
    """Re-image the VPS's disk with the operating system asked for (or the one it runs), new SSH keys (or the ones
    it has) and a new root password, in this reply only. Its address, size and backups stay. A running VPS is
    stopped, rebuilt and started again; a stopped one stays stopped. The reply shows it "rebuilding"."""
    os_slug = None if body.operating_system is None else image_slug(core.catalog.view(), body.operating_system)
    server, root_password = await write(
        core,
        servers.rebuild_server,
        core,
        principal,
        parse_vps_id(vps_id),
        image=os_slug,
        public_keys=body.ssh_keys,
    )
    data = vps_out(server, datetime.now(UTC), VpsRebuilt, root_password=root_password)
    return reply(VpsRebuiltReply(message="VPS rebuild started", data=data))


@router.get("/plans", tags=["CloudVPS plans"], response_model=PlanListReply)
async def list_plans(core: CoreDep, principal: PrincipalDep) -> Response:
    """The plans a new VPS can have, in some location (the catalog is small, so one page)."""
    return reply(PlanListReply(data=[plan_out(p) for p in core.catalog.view().offered_plans if p.available]))


@router.get(
    "/plans/{plan_id}",
    tags=["CloudVPS plans"],
    response_model=PlanReply,
    responses={404: {"model": ErrorEnvelope, "description": "No such plan"}},
)
async def get_plan(plan_id: PlanId, core: CoreDep, principal: PrincipalDep) -> Response:
    return reply(PlanReply(data=plan_out(find_plan(core.catalog.view(), plan_id))))

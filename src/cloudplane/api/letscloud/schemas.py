"""LetsCloud wire schemas: requests forbid unknown fields, responses are allowlists."""

from __future__ import annotations

import re
import weakref
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal, cast

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer
from sqlalchemy import Row

from cloudplane.api.common.deps import MAX_ID
from cloudplane.api.common.schemas import Request as BaseRequest
from cloudplane.db.tables import Account, Image, Location, Plan, Snapshot, SSHKey, User
from cloudplane.domain.pricing import money_text
from cloudplane.services.billing import Balance
from cloudplane.services.recommendations import Recommendation, Report
from cloudplane.services.servers import ServerView


class Request(BaseRequest):
    model_config = ConfigDict(extra="forbid")


class ServerCreate(Request):
    label: str = Field(min_length=1, max_length=255)
    plan_slug: str = Field(min_length=1, max_length=64)
    image_slug: str = Field(min_length=1, max_length=64)
    location_slug: str = Field(min_length=1, max_length=64)
    hostname: str | None = Field(default=None, max_length=253)
    password: str | None = Field(default=None, min_length=8, max_length=128)
    ssh_keys: list[Annotated[int, Field(ge=1, le=MAX_ID)]] = Field(default_factory=list, max_length=50)


class SSHKeyCreate(Request):
    title: str = Field(min_length=1, max_length=200)
    key: str = Field(min_length=1, max_length=16384)


class SnapshotCreate(Request):
    label: str = Field(min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=2000)


# Prices are Decimal up to here; the document's type is number, so they go out as JSON numbers. A price has a few
# decimal places, and a float prints such a value exactly (19.99, not 19.989999...).
Money = Annotated[Decimal, PlainSerializer(float, return_type=float)]


class PlanOut(BaseModel):
    slug: str
    name: str
    ram: int
    cpu: int
    disk: int
    price: Money
    available: bool

    @classmethod
    def of(cls, p: Plan) -> PlanOut:
        return cls(
            slug=p.slug,
            name=p.name,
            ram=p.ram_mb,
            cpu=p.cpu,
            disk=p.disk_gb,
            price=p.price_monthly,
            available=p.available,
        )


Architecture = Literal["x86_64", "arm64"]


class ImageOut(BaseModel):
    slug: str
    name: str
    distribution: str
    version: str
    architecture: Architecture
    available: bool

    @classmethod
    def of(cls, i: Image) -> ImageOut:
        return cls(
            slug=i.slug,
            name=i.name,
            distribution=i.distribution,
            version=i.version,
            # The column is a plain string; validation here refuses any other architecture.
            architecture=cast(Architecture, i.architecture),
            available=i.available,
        )


class LocationOut(BaseModel):
    slug: str
    name: str
    country: str
    region: str
    available: bool

    @classmethod
    def of(cls, loc: Location) -> LocationOut:
        return cls(slug=loc.slug, name=loc.name, country=loc.country, region=loc.region, available=loc.available)


class SSHKeyOut(BaseModel):
    id: int
    title: str
    fingerprint: str
    public_key: str
    created_at: datetime

    @classmethod
    def of(cls, k: SSHKey | Row[Any]) -> SSHKeyOut:
        return cls(id=k.id, title=k.title, fingerprint=k.fingerprint, public_key=k.public_key, created_at=k.created_at)


WireSnapshotStatus = Literal["creating", "available", "error", "deleting"]


class SnapshotOut(BaseModel):
    id: int
    label: str
    description: str | None
    size: int = Field(description="Size of the snapshot in GB; 0 until it is available")
    status: WireSnapshotStatus
    server_id: int
    created_at: datetime

    @classmethod
    def of(cls, s: Snapshot | Row[Any]) -> SnapshotOut:
        return cls(
            id=s.id,
            label=s.label,
            description=s.description,
            size=s.size_gb or 0,
            status=s.status if s.status != "deleted" else "deleting",  # type: ignore[arg-type]
            server_id=s.server_id,
            created_at=s.created_at,
        )


# The document's enum, and "suspended" for a server an administrator suspended (every face says so).
WireServerStatus = Literal["running", "stopped", "starting", "stopping", "rebooting", "error", "suspended"]


def _rented_specs(server: ServerView) -> tuple[PlanOut, ImageOut, LocationOut]:
    """A GPU instance rented from a marketplace has no catalog plan, image or location: describe what was rented
    in the same shapes, so LetsCloud clients see it like any server."""
    gpu = f"{server.gpu.count}x {server.gpu.model}" if server.gpu else "1x GPU"
    name, _, tag = server.image_name.partition(":")
    region = server.region or "unknown"
    return (
        PlanOut.model_construct(
            slug=re.sub(r"[^a-z0-9]+", "-", f"gpu-{gpu}".lower()).strip("-"),
            name=f"{gpu} ({server.provider})",
            ram=int((server.specs.ram_gb or 0) * 1024),
            cpu=server.specs.cpu or 0,
            disk=int(server.specs.disk_gb or 0),
            price=server.prices.monthly,
            available=False,
        ),
        ImageOut.model_construct(
            slug=server.image_name,
            name=server.image_name,
            distribution=name,
            version=tag or "latest",
            architecture="x86_64",
            available=False,
        ),
        LocationOut.model_construct(slug=region.lower(), name=region, country="", region=region, available=False),
    )


_catalog_models: weakref.WeakKeyDictionary[Any, BaseModel] = weakref.WeakKeyDictionary()


def _catalog_out(model: Any, row: Plan | Image | Location) -> Any:
    """The wire model of a catalog row, made once for as long as the catalog keeps that row."""
    out = _catalog_models.get(row)
    if out is None:
        out = _catalog_models[row] = model.of(row)
    return out


class ServerOut(BaseModel):
    id: int
    label: str
    hostname: str
    status: WireServerStatus
    task_state: str | None = Field(description="What the server is busy with right now, if anything")
    ip_address: str | None
    private_ip: str | None
    plan: PlanOut
    image: ImageOut
    location: LocationOut
    created_at: datetime
    updated_at: datetime
    ssh_keys: list[SSHKeyOut]
    snapshots: list[SnapshotOut]

    @classmethod
    def of(cls, server: ServerView, **extra: Any) -> Any:
        # Built without validation: every value comes from our own rows, and this runs for each server of
        # every list. The catalog parts are built once per catalog row.
        if server.plan is None or server.image is None or server.location is None:
            plan, image, location = _rented_specs(server)
        else:
            plan = _catalog_out(PlanOut, server.plan)
            image = _catalog_out(ImageOut, server.image)
            location = _catalog_out(LocationOut, server.location)
        return cls.model_construct(
            id=server.id,
            label=server.label,
            hostname=server.hostname,
            status=server.words.letscloud,
            task_state=server.words.letscloud_task,
            ip_address=server.ipv4,
            private_ip=server.private_ipv4,
            plan=plan,
            image=image,
            location=location,
            created_at=server.created_at,
            updated_at=server.updated_at,
            ssh_keys=[SSHKeyOut.of(k) for k in server.ssh_keys],
            snapshots=[SnapshotOut.of(s) for s in server.snapshots],
            **extra,
        )


class ServerAccepted(ServerOut):
    """The reply to an accepted action: the server, and the operation that carries the action out."""

    operation_id: str | None = Field(
        default=None, description="The operation carrying this action out: poll GET /operations/{id} until it ends"
    )

    @classmethod
    def of(cls, server: ServerView, **extra: Any) -> Any:
        return super().of(server, operation_id=server.operation_id, **extra)


class ServerCreated(ServerAccepted):
    root_password: str | None = Field(default=None, description="The generated root password; shown only in this reply")


class ServerList(BaseModel):
    servers: list[ServerOut]
    total: int
    page: int
    per_page: int


class SSHKeyList(BaseModel):
    ssh_keys: list[SSHKeyOut]
    total: int
    page: int
    per_page: int


class SnapshotList(BaseModel):
    snapshots: list[SnapshotOut]
    total: int
    page: int
    per_page: int


class PlanList(BaseModel):
    plans: list[PlanOut]
    total: int
    page: int
    per_page: int


class ImageList(BaseModel):
    images: list[ImageOut]
    total: int
    page: int
    per_page: int


class LocationList(BaseModel):
    locations: list[LocationOut]
    total: int
    page: int
    per_page: int


class AccountOut(BaseModel):
    id: int
    email: str
    name: str
    company: str | None
    balance: Money = Field(description="Credit minus what is owed: unpaid invoices and this month's costs so far")
    currency: str
    created_at: datetime
    credit: Money = Field(description="Payments and credits not yet spent on invoices")
    unpaid_invoices: Money = Field(description="The total of invoices pending or overdue")
    month_costs: Money = Field(description="This month's costs so far (GET /api/v1/billing/usage `estimated_cost`)")

    @classmethod
    def of(cls, account: Account, user: User, money: Balance) -> AccountOut:
        """The account as getAccountInfo shows it: `balance` is the credit less what is owed (services/billing.py)."""
        return cls(
            id=account.id,
            email=user.email,
            name=account.name,
            company=account.company,
            balance=money.balance,
            currency=account.currency,
            created_at=account.created_at,
            credit=money.credit,
            unpaid_invoices=money.unpaid_invoices,
            month_costs=money.month_cost,
        )


class RecommendationAction(BaseModel):
    description: str
    request: str | None = Field(description='The API call that does it, e.g. "POST /api/servers/12/stop"')
    body: dict[str, Any] | None = Field(description="The call's JSON body, if it takes one")


class RecommendationOut(BaseModel):
    kind: str
    resource_type: str
    resource_id: int
    label: str
    evidence: dict[str, Any] = Field(description="The figures the recommendation was read from")
    action: RecommendationAction
    # A string here, as the brief of this extra operation asks: exact to the cent, whatever the client's JSON.
    monthly_saving: str
    currency: str
    confidence: str
    why: str

    @classmethod
    def of(cls, r: Recommendation, currency: str) -> RecommendationOut:
        return cls(
            kind=r.kind,
            resource_type=r.resource_type,
            resource_id=r.resource_id,
            label=r.label,
            evidence=r.evidence,
            action=RecommendationAction(description=r.action.description, request=r.action.request, body=r.action.body),
            monthly_saving=money_text(r.monthly_saving),
            currency=currency,
            confidence=r.confidence,
            why=r.why,
        )


class RecommendationList(BaseModel):
    days: int
    start: datetime
    end: datetime
    currency: str
    total_monthly_saving: str
    recommendations: list[RecommendationOut]
    notes: list[str] = Field(description="What could not be judged, and why (too little history...)")

    @classmethod
    def of(cls, report: Report) -> RecommendationList:
        return cls(
            days=report.days,
            start=report.start,
            end=report.end,
            currency=report.currency,
            total_monthly_saving=money_text(report.total_monthly_saving),
            recommendations=[RecommendationOut.of(r, report.currency) for r in report.recommendations],
            notes=report.notes,
        )

"""LetsCloud wire schemas: requests forbid unknown fields, responses are allowlists."""

from __future__ import annotations

import json
import re
import weakref
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from cloudplane.api.common.deps import MAX_ID
from cloudplane.db.tables import Image, Location, Plan, Snapshot, SSHKey
from cloudplane.domain.pricing import HOURS_PER_MONTH
from cloudplane.domain.states import ServerStatus, TaskState
from cloudplane.services.catalog import CatalogView
from cloudplane.services.servers import ServerView


class Request(BaseModel):
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


class PlanOut(BaseModel):
    slug: str
    name: str
    ram: int
    cpu: int
    disk: int
    price: float
    available: bool

    @classmethod
    def of(cls, p: Plan) -> PlanOut:
        return cls(
            slug=p.slug,
            name=p.name,
            ram=p.ram_mb,
            cpu=p.cpu,
            disk=p.disk_gb,
            price=float(p.price_monthly),
            available=p.available,
        )


class ImageOut(BaseModel):
    slug: str
    name: str
    distribution: str
    version: str
    architecture: Literal["x86_64", "arm64"]
    available: bool

    @classmethod
    def of(cls, i: Image) -> ImageOut:
        return cls(
            slug=i.slug,
            name=i.name,
            distribution=i.distribution,
            version=i.version,
            architecture=i.architecture,
            available=i.available,  # type: ignore[arg-type]
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
    def of(cls, k: SSHKey) -> SSHKeyOut:
        return cls(id=k.id, title=k.title, fingerprint=k.fingerprint, public_key=k.public_key, created_at=k.created_at)


WireSnapshotStatus = Literal["creating", "available", "error", "deleting"]


class SnapshotOut(BaseModel):
    id: int
    label: str
    description: str | None
    size: int | None
    status: WireSnapshotStatus
    server_id: int
    created_at: datetime

    @classmethod
    def of(cls, s: Snapshot) -> SnapshotOut:
        return cls(
            id=s.id,
            label=s.label,
            description=s.description,
            size=s.size_gb,
            status=s.status if s.status != "deleted" else "deleting",  # type: ignore[arg-type]
            server_id=s.server_id,
            created_at=s.created_at,
        )


WireServerStatus = Literal["running", "stopped", "starting", "stopping", "rebooting", "error"]

# The document's status enum has no "creating" or "deleting"; show the nearest state it knows, and the exact
# one in `task_state`.
_TASK_TO_WIRE = {
    TaskState.STARTING: "starting",
    TaskState.STOPPING: "stopping",
    TaskState.REBOOTING: "rebooting",
    TaskState.DELETING: "stopping",
}
_STATUS_TO_WIRE = {
    ServerStatus.CREATING: "starting",
    ServerStatus.RUNNING: "running",
    ServerStatus.STOPPED: "stopped",
    ServerStatus.ERROR: "error",
    ServerStatus.DELETED: "stopped",
}


def wire_status(status: str, task_state: str | None) -> str:
    if task_state in _TASK_TO_WIRE:
        return _TASK_TO_WIRE[task_state]  # type: ignore[index]
    return _STATUS_TO_WIRE[status]  # type: ignore[index]


def _rented_specs(server: ServerView) -> tuple[PlanOut, ImageOut, LocationOut]:
    """A GPU instance rented from a marketplace has no catalog plan, image or location: describe what was rented
    in the same shapes, so LetsCloud clients see it like any server."""
    details = json.loads(server.provider_data or "{}")
    gpu = f"{server.gpu_count or 1}x {server.gpu_model or 'GPU'}"
    image_ref = str(details.get("image") or "unknown")
    name, _, tag = image_ref.partition(":")
    region = server.region or "unknown"
    return (
        PlanOut(
            slug=re.sub(r"[^a-z0-9]+", "-", f"gpu-{gpu}".lower()).strip("-"),
            name=f"{gpu} ({server.provider})",
            ram=int((server.ram_gb or 0) * 1024),
            cpu=server.cpu_count or 0,
            disk=int(server.storage_gb or 0),
            price=round(float(server.price_per_hour or 0) * HOURS_PER_MONTH, 2),
            available=False,
        ),
        ImageOut(
            slug=image_ref,
            name=image_ref,
            distribution=name,
            version=tag or "latest",
            architecture="x86_64",
            available=False,
        ),
        LocationOut(slug=region.lower(), name=region, country="", region=region, available=False),
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
    def of(cls, server: ServerView, catalog: CatalogView) -> ServerOut:
        # Built without validation: every value comes from our own rows, and this runs for each server of
        # every list. The catalog parts are built once per catalog row.
        if server.plan_id is None:
            plan, image, location = _rented_specs(server)
        else:
            plan = _catalog_out(PlanOut, catalog.plan(server.plan_id))
            image = _catalog_out(ImageOut, catalog.image(server.image_id))  # type: ignore[arg-type]
            location = _catalog_out(LocationOut, catalog.location(server.location_id))  # type: ignore[arg-type]
        return cls.model_construct(
            id=server.id,
            label=server.label,
            hostname=server.hostname,
            status=wire_status(server.status, server.task_state),  # type: ignore[arg-type]
            task_state=server.task_state if server.status != ServerStatus.CREATING else "creating",
            ip_address=server.ipv4,
            private_ip=server.private_ipv4,
            plan=plan,
            image=image,
            location=location,
            created_at=server.created_at,
            updated_at=server.updated_at,
            ssh_keys=[SSHKeyOut.of(k) for k in server.ssh_keys],
            snapshots=[SnapshotOut.of(s) for s in server.snapshots],
        )


class ServerCreated(ServerOut):
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
    balance: float
    currency: str
    created_at: datetime

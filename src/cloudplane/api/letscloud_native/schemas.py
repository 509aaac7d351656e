"""Native LetsCloud wire schemas, as the official Go client (letscloud-go) declares them: ids, slugs and money
are strings, sizes and counts integers, flags booleans. Requests forbid unknown fields; responses are allowlists."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel, Field

from cloudplane.api.common.schemas import Request
from cloudplane.db.tables import Image, Location, Plan, SSHKey
from cloudplane.domain.pricing import CURRENCY, money_text, transfer_allowance_gb
from cloudplane.domain.states import ServerStatus, SnapshotStatus
from cloudplane.services.catalog import CatalogView
from cloudplane.services.servers import ServerView
from cloudplane.services.snapshots import SnapshotView


class SSHKeyCreate(Request):
    title: str = Field(min_length=1, max_length=200)
    # Without a key the service makes a pair and returns its private half, once.
    key: str | None = Field(default=None, max_length=16384)


class SSHKeyDelete(Request):
    slug: str = Field(min_length=1, max_length=200)


class InstanceCreate(Request):
    location_slug: str = Field(min_length=1, max_length=64)
    plan_slug: str = Field(min_length=1, max_length=64)
    image_slug: str = Field(min_length=1, max_length=64)
    # The Go client sends "" when no hostname is set: the label's then.
    hostname: str = Field(default="", max_length=253)
    label: str = Field(min_length=1, max_length=255)
    # A key's slug or title.
    ssh_slug: str | None = Field(default=None, max_length=200)
    # The rule is services/passwords.py's check_root_password (8 to 128 characters, no control characters).
    password: str | None = Field(default=None, max_length=128)


class PasswordReset(Request):
    password: str = Field(max_length=128)


class SnapshotLabel(Request):
    label: str = Field(min_length=1, max_length=255)


class ProfileOut(BaseModel):
    name: str
    company_name: str
    email: str
    currency: str
    balance: str


class LocationOut(BaseModel):
    slug: str
    country: str
    city: str
    available: bool

    @classmethod
    def of(cls, location: Location, available: bool) -> LocationOut:
        return cls(slug=location.slug, country=location.country, city=location.name, available=available)


class PlanOut(BaseModel):
    slug: str
    shortcode: str
    currencycode: str
    core: int
    memory: int = Field(description="MB")
    disk: int = Field(description="GB")
    bandwidth: int = Field(description="Monthly transfer, GB")
    monthly_value: str

    @classmethod
    def of(cls, plan: Plan) -> PlanOut:
        return cls(
            slug=plan.slug,
            shortcode=plan.slug,
            currencycode=CURRENCY,
            core=plan.cpu,
            memory=plan.ram_mb,
            disk=plan.disk_gb,
            bandwidth=transfer_allowance_gb(plan.ram_mb),
            monthly_value=money_text(Decimal(plan.price_monthly)),
        )


class LocationPlans(BaseModel):
    slug: str
    country: str
    city: str
    plans: list[PlanOut]


class ImageOut(BaseModel):
    slug: str
    distro: str
    os: str

    @classmethod
    def of(cls, image: Image) -> ImageOut:
        return cls(slug=image.slug, distro=image.name, os=image.distribution)


class SSHKeyOut(BaseModel):
    slug: str
    title: str
    public_key: str
    # Only in the reply that made the pair; empty otherwise (the service never keeps it).
    private_key: str = ""

    @classmethod
    def of(cls, key: SSHKey, private_key: str = "") -> SSHKeyOut:
        return cls(slug=str(key.id), title=key.title, public_key=key.public_key, private_key=private_key)


class IPAddressOut(BaseModel):
    address: str


class InstanceOut(BaseModel):
    identifier: str
    booted: bool
    built: bool
    locked: bool
    suspended: bool
    memory: int = Field(description="MB")
    total_disk_size: int = Field(description="GB")
    cpus: int
    label: str
    ip_addresses: list[IPAddressOut]
    template_label: str
    hostname: str
    # Only in the reply that created the instance with a generated password; empty otherwise (never kept).
    initial_root_password: str
    location: LocationOut

    @classmethod
    def of(cls, server: ServerView, catalog: CatalogView, initial_root_password: str = "") -> InstanceOut:
        if server.location is not None:
            # Available as GET /locations shows it: open to new servers now.
            location = LocationOut.of(server.location, catalog.is_open(server.location))
        else:  # rented from a marketplace: its region is all there is
            region = server.region or "unknown"
            location = LocationOut(slug=region.lower(), country="", city=region, available=False)
        return cls(
            identifier=str(server.id),
            booted=server.status == ServerStatus.RUNNING and server.suspended_at is None,
            built=server.status in (ServerStatus.RUNNING, ServerStatus.STOPPED),
            locked=server.task_state is not None,
            suspended=server.suspended_at is not None,
            memory=int((server.specs.ram_gb or 0) * 1024),
            total_disk_size=int(server.specs.disk_gb or 0),
            cpus=server.specs.cpu or 0,
            label=server.label,
            ip_addresses=[IPAddressOut(address=a) for a in (server.ipv4, server.private_ipv4) if a],
            template_label=server.image_name,
            hostname=server.hostname,
            initial_root_password=initial_root_password,
            location=location,
        )


class SnapshotOut(BaseModel):
    slug: str
    label: str
    os_reference: str = Field(description="The image of the server it was taken of")
    reference: str = Field(description="The identifier of the instance it was taken of")
    size: int = Field(description="GB; 0 until it is taken")
    build: bool = Field(description="Finished: it can be restored")
    locations: list[str]

    @classmethod
    def of(cls, snapshot: SnapshotView) -> SnapshotOut:
        return cls(
            slug=str(snapshot.id),
            label=snapshot.label,
            os_reference=snapshot.image or "",
            reference=str(snapshot.server_id),
            size=snapshot.size_gb or 0,
            build=snapshot.status == SnapshotStatus.AVAILABLE,
            locations=[snapshot.location] if snapshot.location else [],
        )

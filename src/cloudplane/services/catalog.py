"""The catalog of locations, plans and images: seeded on first start, read through an in-memory snapshot that
also knows what each location's provider can make."""

from __future__ import annotations

import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import NoReturn

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from cloudplane.config import ConfigurationError, Settings
from cloudplane.db.engine import Database
from cloudplane.db.tables import Image, Location, Plan
from cloudplane.domain.errors import ValidationFailed
from cloudplane.providers.base import Capabilities, ImageInfo
from cloudplane.providers.registry import ProviderRegistry

log = logging.getLogger(__name__)

SEED_LOCATIONS = [
    ("nyc1", "New York", "United States", "New York"),
    ("sfo2", "San Francisco", "United States", "California"),
    ("mia1", "Miami", "United States", "Florida"),
    ("fra1", "Frankfurt", "Germany", "Hesse"),
    ("lon1", "London", "United Kingdom", "England"),
    ("sao1", "Sao Paulo", "Brazil", "Sao Paulo"),
    ("sgp1", "Singapore", "Singapore", "Singapore"),
]
# slug, name, cpu, ram_mb, disk_gb, monthly USD
SEED_PLANS = [
    ("basic-1gb", "Basic 1GB", 1, 1024, 25, 5.00),
    ("basic-2gb", "Basic 2GB", 1, 2048, 50, 10.00),
    ("standard-2gb", "Standard 2GB", 2, 2048, 60, 15.00),
    ("standard-4gb", "Standard 4GB", 2, 4096, 80, 24.00),
    ("performance-8gb", "Performance 8GB", 4, 8192, 160, 48.00),
    ("performance-16gb", "Performance 16GB", 8, 16384, 320, 96.00),
    # CloudVPS Pro's plans: Starter as its document prices it, Professional as its VPS and invoice examples do.
    ("starter", "Starter VPS", 1, 2048, 20, 9.99),
    ("professional", "Professional VPS", 2, 4096, 50, 19.99),
    ("business", "Business VPS", 4, 8192, 100, 39.99),
    ("enterprise", "Enterprise VPS", 8, 16384, 200, 79.99),
]
# slug, name, distribution, version
SEED_IMAGES = [
    ("ubuntu-22-04", "Ubuntu 22.04 LTS", "Ubuntu", "22.04"),
    ("ubuntu-24-04", "Ubuntu 24.04 LTS", "Ubuntu", "24.04"),
    ("debian-12", "Debian 12", "Debian", "12"),
    ("rocky-9", "Rocky Linux 9", "Rocky Linux", "9"),
    ("almalinux-9", "AlmaLinux 9", "AlmaLinux", "9"),
    ("fedora-41", "Fedora 41", "Fedora", "41"),
]


def seed_catalog(db: Database) -> None:
    """Fill an empty catalog; an operator's later edits are never overwritten."""
    with db.write() as s:
        if not s.scalar(select(func.count()).select_from(Location)):
            s.add_all(Location(slug=a, name=b, country=c, region=d) for a, b, c, d in SEED_LOCATIONS)
        if not s.scalar(select(func.count()).select_from(Plan)):
            s.add_all(
                Plan(slug=a, name=b, cpu=c, ram_mb=r, disk_gb=d, price_monthly=p) for a, b, c, r, d, p in SEED_PLANS
            )
        if not s.scalar(select(func.count()).select_from(Image)):
            s.add_all(Image(slug=a, name=b, distribution=c, version=d) for a, b, c, d in SEED_IMAGES)


def assign_location_providers(db: Database, settings: Settings) -> None:
    """Make each location's `provider` follow CLOUDPLANE_LOCATION_PROVIDERS (default_provider where it names none).
    Servers keep the provider they were made on. A location the setting names that the catalog lacks stops the
    start, naming the locations there are."""
    with db.write() as s:
        slugs = set(s.scalars(select(Location.slug)))
        for location, provider in settings.location_providers.items():
            if location not in slugs:
                raise ConfigurationError(
                    f"CLOUDPLANE_LOCATION_PROVIDERS entry {location}={provider}: no location {location!r}; the "
                    f"locations are: {', '.join(sorted(slugs))}"
                )
        wanted = {slug: settings.location_providers.get(slug, settings.default_provider) for slug in slugs}
        for provider in set(wanted.values()):
            s.execute(
                update(Location)
                .where(Location.slug.in_([slug for slug, p in wanted.items() if p == provider]))
                .where(Location.provider != provider)
                .values(provider=provider)
            )


@dataclass(frozen=True)
class CatalogView:
    locations: tuple[Location, ...]
    plans: tuple[Plan, ...]
    images: tuple[Image, ...]
    # What the provider of each location can make, for the providers that run here; a location whose provider is
    # absent takes no new servers.
    capabilities: Mapping[str, Capabilities]
    # Locations that take new servers: not retired, their provider runs here and serves some plan and image.
    open_locations: tuple[Location, ...] = field(init=False, default=())
    # Plans and images (retired ones too, which the lists show as unavailable) some open location can make.
    offered_plans: tuple[Plan, ...] = field(init=False, default=())
    offered_images: tuple[Image, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        for name, rows in (("location", self.locations), ("plan", self.plans), ("image", self.images)):
            object.__setattr__(self, f"_{name}_by_id", {r.id: r for r in rows})
            object.__setattr__(self, f"_{name}_by_slug", {r.slug: r for r in rows})
        open_ = tuple(loc for loc in self.locations if self.plans_at(loc) and self.images_at(loc))
        object.__setattr__(self, "open_locations", open_)
        object.__setattr__(
            self, "offered_plans", tuple(p for p in self.plans if any(self.serves(loc, plan=p) for loc in open_))
        )
        object.__setattr__(
            self, "offered_images", tuple(i for i in self.images if any(self.serves(loc, image=i) for loc in open_))
        )

    def location(self, id_: int) -> Location:
        return self._location_by_id[id_]  # type: ignore[attr-defined]

    def plan(self, id_: int) -> Plan:
        return self._plan_by_id[id_]  # type: ignore[attr-defined]

    def image(self, id_: int) -> Image:
        return self._image_by_id[id_]  # type: ignore[attr-defined]

    def by_slug(self, kind: str, slug: str) -> Location | Plan | Image | None:
        return getattr(self, f"_{kind}_by_slug").get(slug)

    def serves(self, location: Location, *, plan: Plan | None = None, image: Image | None = None) -> bool:
        """Whether a new server can go to this location, with this plan and image if given."""
        capabilities = self.capabilities.get(location.provider) if location.available else None
        return (
            capabilities is not None
            and (plan is None or capabilities.fits(plan.cpu, plan.ram_mb))
            and (image is None or capabilities.boots(image.slug))
        )

    def plans_at(self, location: Location) -> list[Plan]:
        return [p for p in self.plans if p.available and self.serves(location, plan=p)]

    def images_at(self, location: Location) -> list[Image]:
        return [i for i in self.images if i.available and self.serves(location, image=i)]

    def is_open(self, location: Location) -> bool:
        return location in self.open_locations

    def check_placement(self, location: Location, plan: Plan, image: Image) -> None:
        """Refuse (422, naming the field and the choices there) a server its location's provider cannot make."""
        if not self.is_open(location):
            refuse("location", location.slug, "takes no new servers now", [loc.slug for loc in self.open_locations])
        if not self.serves(location, image=image):
            refuse(
                "image", image.slug, f"is not offered in {location.slug}", [i.slug for i in self.images_at(location)]
            )
        if not self.serves(location, plan=plan):
            refuse("plan", plan.slug, f"is not offered in {location.slug}", [p.slug for p in self.plans_at(location)])


def refuse(kind: str, slug: str, why: str, choices: list[str]) -> NoReturn:
    raise ValidationFailed(
        f"{kind.capitalize()} {slug!r} {why}; choose one of: {', '.join(choices) or 'none'}",
        field=kind,
        choices=choices,
    )


def add_provider_images(db: Database, capabilities: Mapping[str, Capabilities]) -> None:
    """Put in the catalog the images a provider has that it lacks (an image built or imported on a host), named
    after their slug until an operator edits them; rows already there, retired ones too, are left as they are."""
    offered = {slug for c in capabilities.values() for slug in c.images or () if len(slug) <= 64}
    info = {slug: i for c in capabilities.values() for slug, i in c.image_info.items()}
    with db.read() as s:
        missing = sorted(offered - set(s.scalars(select(Image.slug))))
    if not missing:
        return
    default = ImageInfo(name="", distribution="", version="")
    try:
        with db.write() as s:
            s.add_all(
                Image(
                    slug=slug,
                    name=(info.get(slug, default).name or slug)[:200],
                    distribution=(info.get(slug, default).distribution or slug)[:100],
                    version=info.get(slug, default).version[:50],
                )
                for slug in missing
            )
    except IntegrityError:
        pass  # another process added them at the same moment


class Catalog:
    """Catalog rows change rarely and are read on every server reply, so they are cached until `invalidate()`
    or `refresh()`."""

    def __init__(self, db: Database, providers: ProviderRegistry) -> None:
        self._db = db
        self._providers = providers
        self._view: CatalogView | None = None
        self._lock = threading.Lock()

    def view(self) -> CatalogView:
        return self._view or self.refresh()

    def refresh(self) -> CatalogView:
        """Read the rows again and ask each location's provider what it can make now (a libvirt host may have gained
        an image). Readers keep the previous view until the new one is in place; the reconciler refreshes on each
        pass, so this runs outside requests."""
        with self._lock:
            capabilities = self._capabilities()
            add_provider_images(self._db, capabilities)
            with self._db.read() as s:
                self._view = CatalogView(
                    locations=tuple(s.scalars(select(Location).order_by(Location.id))),
                    plans=tuple(s.scalars(select(Plan).order_by(Plan.id))),
                    images=tuple(s.scalars(select(Image).order_by(Image.id))),
                    capabilities=capabilities,
                )
            return self._view

    def _capabilities(self) -> dict[str, Capabilities]:
        """What each location's provider can make now; one that cannot say is left out, closing its locations."""
        with self._db.read() as s:
            names = sorted(set(s.scalars(select(Location.provider))))
        capabilities = {}
        for name in filter(self._providers.usable, names):
            try:
                capabilities[name] = self._providers.get(name).capabilities
            except Exception:  # noqa: BLE001 - one provider failing must not take the catalog down
                log.exception("provider %s cannot say what it can make; its locations take no new servers", name)
        return capabilities

    def invalidate(self) -> None:
        self._view = None

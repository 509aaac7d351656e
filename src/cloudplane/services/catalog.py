"""The catalog of locations, plans and images: seeded on first start, read through an in-memory snapshot."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from sqlalchemy import func, select

from cloudplane.db.engine import Database
from cloudplane.db.tables import Image, Location, Plan

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


@dataclass(frozen=True)
class CatalogView:
    locations: tuple[Location, ...]
    plans: tuple[Plan, ...]
    images: tuple[Image, ...]

    def __post_init__(self) -> None:
        for name, rows in (("location", self.locations), ("plan", self.plans), ("image", self.images)):
            object.__setattr__(self, f"_{name}_by_id", {r.id: r for r in rows})
            object.__setattr__(self, f"_{name}_by_slug", {r.slug: r for r in rows})

    def location(self, id_: int) -> Location:
        return self._location_by_id[id_]  # type: ignore[attr-defined]

    def plan(self, id_: int) -> Plan:
        return self._plan_by_id[id_]  # type: ignore[attr-defined]

    def image(self, id_: int) -> Image:
        return self._image_by_id[id_]  # type: ignore[attr-defined]

    def by_slug(self, kind: str, slug: str) -> Location | Plan | Image | None:
        return getattr(self, f"_{kind}_by_slug").get(slug)


class Catalog:
    """Catalog rows change rarely and are read on every server reply, so they are cached until `invalidate()`."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._view: CatalogView | None = None
        self._lock = threading.Lock()

    def view(self) -> CatalogView:
        view = self._view
        if view is None:
            with self._lock, self._db.read() as s:
                view = self._view = CatalogView(
                    locations=tuple(s.scalars(select(Location).order_by(Location.id))),
                    plans=tuple(s.scalars(select(Plan).order_by(Plan.id))),
                    images=tuple(s.scalars(select(Image).order_by(Image.id))),
                )
        return view

    def invalidate(self) -> None:
        self._view = None

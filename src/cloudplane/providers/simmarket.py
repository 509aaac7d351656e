"""A simulated GPU marketplace shaped like Vast.ai: a seeded catalog of offers, rentals that boot, stop and
start with Vast.ai's status words, and injectable faults. Nothing here rents real hardware.

It is presented under the provider name given (default "vast_ai", the name the GPU Cloud Manager document uses in
its examples), but it says what it is everywhere a person looks: offer names, `extra["simulated"]`, status texts,
the `.invalid` SSH hosts and the never-routed 198.18.0.0/15 addresses. Its offers and instances live in tables of
its own (`simmkt_*`) so that a crash of the control plane loses no rental, as with a real marketplace.
"""

from __future__ import annotations

import asyncio
import ipaddress
import random
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any, cast

from sqlalchemy import (
    Column,
    CursorResult,
    DateTime,
    Float,
    Integer,
    MetaData,
    Row,
    Select,
    String,
    Table,
    Text,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from cloudplane.db.engine import Database
from cloudplane.domain.errors import NotFound, ProviderError
from cloudplane.domain.times import assume_utc
from cloudplane.providers.base import SUPPORTED, Features, MachineState, Pacing
from cloudplane.providers.clock import SYSTEM_CLOCK, Clock
from cloudplane.providers.marketplace import (
    Instance,
    MarketFeature,
    Offer,
    OfferQuery,
    RentRequest,
    gpu_model_matches,
)

metadata = MetaData()

simmkt_offers = Table(
    "simmkt_offers",
    metadata,
    Column("offer_id", String(20), primary_key=True),
    Column("machine_id", Integer, nullable=False),
    Column("gpu_model", String(64), nullable=False),
    Column("gpu_count", Integer, nullable=False),
    Column("gpu_ram_gb", Float, nullable=False),
    Column("cpu_count", Integer, nullable=False),
    Column("ram_gb", Float, nullable=False),
    Column("storage_gb", Float, nullable=False),
    Column("price_per_hour", Float, nullable=False),
    Column("region", String(32), nullable=False),
    Column("reliability", Float, nullable=False),
    Column("compute_cap", Integer, nullable=False),
    Column("dlperf", Float, nullable=False),
    Column("score", Float, nullable=False),
    # The token of the rent holding the offer; NULL while it is on the market.
    Column("rented_by", String(100)),
)

simmkt_instances = Table(
    "simmkt_instances",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token", String(100), unique=True, nullable=False),
    Column("offer_id", String(20), nullable=False),
    Column("status", String(20), nullable=False),
    Column("target_status", String(20)),
    Column("ready_at", DateTime(timezone=True)),
    Column("label", String(255), nullable=False),
    Column("image", String(255), nullable=False),
    Column("onstart_script", Text),
    Column("ssh_key", Text),
    Column("disk_gb", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
    # Never reuse the id of a destroyed instance: a stale reference must not reach a newer rental.
    sqlite_autoincrement=True,
)

# Vast.ai's `actual_status` words that the simulator uses, and what they mean.
SIM_PENDING_STATUSES = frozenset({"loading"})
SIM_FAILED_STATUSES = frozenset({"exited"})
SIM_STATES: dict[str, MachineState] = {
    "loading": MachineState.PROVISIONING,
    "running": MachineState.RUNNING,
    "stopped": MachineState.STOPPED,
    "exited": MachineState.ERROR,
}

# The GPU Cloud Manager document's example offer: its curl rents offer 12345 on a fresh server.
DOCUMENT_OFFER_ID = "12345"
CATALOG_SIZE = 150
# Seconds, before time_scale: pulling the image on first boot; restarting a stopped container (image cached).
FIRST_BOOT_S = 20.0
RESTART_S = 8.0
# Hosts come and go: each offer is on or off the market for one period at a time, decided by the seed.
AVAILABILITY_PERIOD_S = 600.0
AVAILABLE_SHARE = 0.85
PUBLIC_NET = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544 benchmarking range: never routed
SSH_DOMAIN = "sim.vast.invalid"  # RFC 2606 reserved TLD: never resolves

REGIONS = ("US-East", "US-West", "US-Central", "CA-East", "EU-Central", "EU-West", "EU-North", "Asia-East")
REGION_WEIGHTS = (22, 16, 10, 5, 16, 12, 7, 12)

# (model, VRAM GB, USD per GPU-hour low-high, compute capability as the document writes it, DLPerf per GPU,
#  share of the catalog, datacenter card?)
GPU_MODELS: tuple[tuple[str, float, tuple[float, float], int, float, int, bool], ...] = (
    ("H100 SXM", 80, (1.90, 2.90), 90, 95.0, 9, True),
    ("H100 PCIe", 80, (1.60, 2.40), 90, 75.0, 6, True),
    ("A100 80GB", 80, (0.90, 1.60), 80, 45.0, 10, True),
    ("A100 40GB", 40, (0.60, 1.10), 80, 38.0, 6, True),
    ("L40S", 48, (0.70, 1.10), 89, 50.0, 8, True),
    ("RTX 6000 Ada", 48, (0.65, 1.00), 89, 48.0, 6, False),
    ("RTX A6000", 48, (0.40, 0.70), 86, 30.0, 8, False),
    ("RTX 4090", 24, (0.30, 0.75), 89, 40.0, 20, False),
    ("RTX 4080", 16, (0.18, 0.35), 89, 28.0, 8, False),
    ("RTX 3090", 24, (0.15, 0.35), 86, 22.0, 14, False),
    ("A10", 24, (0.25, 0.45), 86, 18.0, 6, True),
    ("L4", 24, (0.20, 0.40), 89, 14.0, 6, True),
    ("V100", 16, (0.15, 0.35), 70, 16.0, 5, True),
    ("T4", 16, (0.08, 0.18), 75, 6.0, 6, True),
)


def generate_catalog(seed: int) -> list[dict[str, Any]]:
    """The simulated market's offers, the same for the same seed: the document's offer 12345 and 149 more."""
    rng = random.Random(seed)
    catalog: list[dict[str, Any]] = [
        {
            "offer_id": DOCUMENT_OFFER_ID,
            "machine_id": 67890,
            "gpu_model": "RTX 4090",
            "gpu_count": 1,
            "gpu_ram_gb": 24.0,
            "cpu_count": 8,
            "ram_gb": 32.0,
            "storage_gb": 100.0,
            "price_per_hour": 1.50,
            "region": "US-East",
            "reliability": 0.95,
            "compute_cap": 89,
            "dlperf": 42.0,
            "score": 8.5,
        }
    ]
    offer_ids = {DOCUMENT_OFFER_ID}
    machine_ids = {67890}
    weights = [spec[5] for spec in GPU_MODELS]
    while len(catalog) < CATALOG_SIZE:
        model, vram_gb, (low, high), compute_cap, dlperf_per_gpu, _, datacenter = rng.choices(GPU_MODELS, weights)[0]
        if datacenter:
            gpu_count = rng.choices((1, 2, 4, 8), (3, 2, 3, 4))[0]
            cpu_per_gpu = rng.choice((8, 12, 16, 24, 32))
            ram_per_gpu = rng.choice((64, 96, 128, 256))
            storage_gb = rng.choice((500, 1000, 2000, 4000))
        else:
            gpu_count = rng.choices((1, 2, 4, 8), (8, 4, 3, 1))[0]
            cpu_per_gpu = rng.choice((4, 6, 8, 12, 16))
            ram_per_gpu = rng.choice((16, 32, 48, 64))
            storage_gb = rng.choice((50, 100, 200, 500, 1000, 2000))
        offer_id = str(rng.randint(1_000_000, 9_999_999))
        machine_id = rng.randint(10_000, 99_999)
        if offer_id in offer_ids or machine_id in machine_ids:
            continue
        offer_ids.add(offer_id)
        machine_ids.add(machine_id)
        price = round(rng.uniform(low, high) * gpu_count, 3)
        reliability = round(rng.uniform(0.80, 0.999), 4)
        dlperf = round(dlperf_per_gpu * gpu_count * rng.uniform(0.85, 1.10), 1)
        catalog.append(
            {
                "offer_id": offer_id,
                "machine_id": machine_id,
                "gpu_model": model,
                "gpu_count": gpu_count,
                "gpu_ram_gb": float(vram_gb),
                "cpu_count": min(cpu_per_gpu * gpu_count, 256),
                "ram_gb": float(min(ram_per_gpu * gpu_count, 2048)),
                "storage_gb": float(storage_gb),
                "price_per_hour": price,
                "region": rng.choices(REGIONS, REGION_WEIGHTS)[0],
                "reliability": reliability,
                "compute_cap": compute_cap,
                "dlperf": dlperf,
                # Vast.ai ranks by value for money weighted by reliability; this is the same idea.
                "score": round(dlperf / price * reliability / 10, 1),
            }
        )
    return catalog


def region_matches(wanted: str, region: str) -> bool:
    """Case-insensitive; "US" also matches "US-East" and "US-West"."""
    wanted, region = wanted.strip().lower(), region.lower()
    return region == wanted or region.startswith(f"{wanted}-")


def sort_and_limit(offers: list[Offer], query: OfferQuery, default_key: Callable[[Offer], Any]) -> list[Offer]:
    """`query.sort` (cheapest or most reliable first), else `default_key`; then at most `query.limit`."""
    if query.sort == "price":
        offers.sort(key=lambda o: (o.price_per_hour, -o.reliability, o.offer_id))
    elif query.sort == "reliability":
        offers.sort(key=lambda o: (-o.reliability, o.price_per_hour, o.offer_id))
    else:
        offers.sort(key=default_key)
    return offers[: max(query.limit, 0)]


class SimulatedMarketplace:
    """An in-process GPU marketplace with Vast.ai's shapes and timings. See the module docstring."""

    simulated = True
    # Vast.ai's own answers: a rented instance stops (keeping its disk) and starts again.
    features = Features(MarketFeature, {MarketFeature.START: SUPPORTED, MarketFeature.STOP: SUPPORTED})

    def __init__(
        self,
        db: Database,
        *,
        name: str = "vast_ai",
        seed: int = 42,
        time_scale: float = 1.0,
        error_rate: float = 0.0,
        boot_failure_rate: float = 0.0,
        clock: Clock | None = None,
    ) -> None:
        self.db = db
        self.clock = clock or SYSTEM_CLOCK
        self.name = name
        self.seed = seed
        self.time_scale = time_scale
        self.error_rate = error_rate
        self.boot_failure_rate = boot_failure_rate
        # Separate streams, so whether a boot fails does not shift which later calls fail, and vice versa.
        self._fault_rng = random.Random(f"{seed}:faults")
        self._boot_rng = random.Random(f"{seed}:boots")
        self._rng_lock = threading.Lock()
        self.pacing = Pacing.scaled(time_scale)
        self._display_name = "Vast.ai" if name == "vast_ai" else name
        metadata.create_all(db.write_engine)
        self._stock_catalog()

    def __repr__(self) -> str:
        return f"SimulatedMarketplace(name={self.name!r}, seed={self.seed})"

    def _stock_catalog(self) -> None:
        """Fill the market on first start only: later starts keep the offers, and which are rented, as stored."""
        with self.db.read() as s:
            stocked = s.execute(select(func.count()).select_from(simmkt_offers)).scalar_one()
        if stocked:
            return
        try:
            with self.db.write() as s:
                if not s.execute(select(func.count()).select_from(simmkt_offers)).scalar_one():
                    s.execute(insert(simmkt_offers), generate_catalog(self.seed))
        except IntegrityError:
            pass  # another process stocked it at the same moment

    def _roll(self, rng: random.Random) -> float:
        with self._rng_lock:
            return rng.random()

    async def _call(self, operation: str) -> None:
        """Injected faults, drawn from the seeded stream: the same calls fail for the same seed."""
        if self.error_rate and self._roll(self._fault_rng) < self.error_rate:
            raise ProviderError(f"Simulated {self._display_name} error during {operation} (injected fault)")

    def _delay(self, seconds: float) -> timedelta:
        return timedelta(seconds=seconds * self.time_scale)

    def _on_market_now(self, offer_id: str) -> bool:
        """Whether the host is listed right now (ignoring rentals). Offer 12345 always is, as the document's
        example must work on a fresh server."""
        if offer_id == DOCUMENT_OFFER_ID:
            return True
        period = AVAILABILITY_PERIOD_S * self.time_scale
        period_index = int(self.clock.now().timestamp() // period) if period > 0 else 0
        return random.Random(f"{self.seed}:{offer_id}:{period_index}").random() < AVAILABLE_SHARE

    def _offer(self, row: Row[Any]) -> Offer:
        return Offer(
            provider=self.name,
            offer_id=row.offer_id,
            machine_id=row.machine_id,
            name=f"Simulated {self._display_name} machine {row.machine_id}",
            gpu_model=row.gpu_model,
            gpu_count=row.gpu_count,
            gpu_ram_gb=row.gpu_ram_gb,
            cpu_count=row.cpu_count,
            ram_gb=row.ram_gb,
            storage_gb=row.storage_gb,
            price_per_hour=row.price_per_hour,
            region=row.region,
            available=row.rented_by is None and self._on_market_now(row.offer_id),
            reliability=row.reliability,
            extra={
                "compute_cap": row.compute_cap,
                "dlperf": row.dlperf,
                "score": row.score,
                "simulated": True,
            },
        )

    async def search_offers(self, query: OfferQuery) -> list[Offer]:
        """Every offer matching all filters of `query`; default order is best score first, as on Vast.ai."""
        await self._call("search_offers")
        with self.db.read() as s:
            rows = s.execute(select(simmkt_offers)).all()
        offers = [self._offer(row) for row in rows]
        if query.gpu_model:
            offers = [o for o in offers if gpu_model_matches(query.gpu_model, o.gpu_model)]
        if query.min_gpu_count is not None:
            offers = [o for o in offers if o.gpu_count >= query.min_gpu_count]
        if query.max_price is not None:
            offers = [o for o in offers if o.price_per_hour <= query.max_price]
        if query.region:
            offers = [o for o in offers if region_matches(query.region, o.region)]
        if query.available:
            offers = [o for o in offers if o.available]
        return sort_and_limit(offers, query, default_key=lambda o: (-o.extra["score"], o.offer_id))

    @staticmethod
    def _instance_query() -> Select[Any]:
        return select(
            simmkt_instances,
            simmkt_offers.c.machine_id,
            simmkt_offers.c.gpu_model,
            simmkt_offers.c.gpu_count,
            simmkt_offers.c.cpu_count,
            simmkt_offers.c.ram_gb,
            simmkt_offers.c.price_per_hour,
            simmkt_offers.c.region,
        ).join_from(simmkt_instances, simmkt_offers, simmkt_instances.c.offer_id == simmkt_offers.c.offer_id)

    def _status_detail(self, row: Row[Any]) -> str:
        if row.status == "loading":
            message = f"simulated host is loading {row.image} and starting the container"
        elif row.status == "running":
            message = f"simulated container {row.image}/ssh is up"
        elif row.status == "stopped":
            message = "simulated container halted; the disk is kept and storage still bills"
        else:
            message = "simulated container exited while booting"
        return f"{row.status} (simulated): {message}"

    def _instance(self, row: Row[Any]) -> Instance:
        return Instance(
            provider=self.name,
            instance_id=str(row.id),
            offer_id=row.offer_id,
            machine_id=row.machine_id,
            state=SIM_STATES[row.status],
            status_detail=self._status_detail(row),
            label=row.label,
            gpu_model=row.gpu_model,
            gpu_count=row.gpu_count,
            cpu_count=row.cpu_count,
            ram_gb=row.ram_gb,
            storage_gb=float(row.disk_gb),
            price_per_hour=row.price_per_hour,
            region=row.region,
            image=row.image,
            onstart_script=row.onstart_script,
            ssh_host=f"ssh{row.id % 9 + 1}.{SSH_DOMAIN}",
            ssh_port=10_000 + row.id % 50_000,
            # Vast.ai instances share their host's address, so it follows the machine.
            public_ipaddr=str(PUBLIC_NET[row.machine_id % (PUBLIC_NET.num_addresses - 2) + 1]),
            token=row.token,
        )

    def _settle(self, row: Row[Any] | None) -> Row[Any] | None:
        """Finish a boot whose time has come; the clock, not a background task, drives the simulation."""
        if row is None or row.status not in SIM_PENDING_STATUSES:
            return row
        ready_at = assume_utc(row.ready_at)
        if ready_at is not None and ready_at > self.clock.now():
            return row
        with self.db.write() as s:
            s.execute(
                update(simmkt_instances)
                .where(simmkt_instances.c.id == row.id, simmkt_instances.c.status == row.status)
                .values(status=row.target_status, target_status=None, ready_at=None)
            )
            return s.execute(self._instance_query().where(simmkt_instances.c.id == row.id)).first()

    def _row(self, instance_id: str) -> Row[Any] | None:
        if not instance_id.isdigit():
            return None
        with self.db.read() as s:
            row = s.execute(self._instance_query().where(simmkt_instances.c.id == int(instance_id))).first()
        return self._settle(row)

    def _require(self, instance_id: str) -> Row[Any]:
        row = self._row(instance_id)
        if row is None:
            raise NotFound(f"No simulated instance {instance_id}", ref=instance_id)
        return row

    @staticmethod
    def _unavailable(offer_id: str) -> ProviderError:
        return ProviderError(
            f"Offer {offer_id} is no longer available on the simulated market",
            retryable=False,
            reason="offer_unavailable",
            offer_id=offer_id,
        )

    async def rent(self, request: RentRequest) -> Instance:
        """Rent an offer: it leaves the market and the instance boots ("loading") for ~20 s x time_scale.
        Idempotent on `request.token` (see `MarketplaceProvider.rent`); the offer is claimed and the instance
        recorded in one transaction, so a failure leaves neither behind. Unknown offer: `NotFound`."""
        await self._call("rent")
        existing = await self.find_by_token(request.token)
        if existing is not None:
            return existing
        with self.db.read() as s:
            offer = s.execute(select(simmkt_offers).where(simmkt_offers.c.offer_id == request.offer_id)).first()
        if offer is None:
            raise NotFound(f"No simulated offer {request.offer_id}", ref=request.offer_id)
        if request.disk_gb > offer.storage_gb:
            raise ProviderError(
                f"Offer {request.offer_id} has {offer.storage_gb:g} GB of disk; {request.disk_gb} GB asked",
                retryable=False,
                reason="disk_too_large",
            )
        if offer.rented_by is None and not self._on_market_now(offer.offer_id):
            raise self._unavailable(request.offer_id)
        boots = not (self.boot_failure_rate and self._roll(self._boot_rng) < self.boot_failure_rate)
        claimed = False
        try:
            with self.db.write() as s:
                result = s.execute(
                    update(simmkt_offers)
                    .where(simmkt_offers.c.offer_id == offer.offer_id, simmkt_offers.c.rented_by.is_(None))
                    .values(rented_by=request.token)
                )
                # An UPDATE returns a CursorResult; Session.execute is typed as returning the base Result.
                claimed = bool(cast(CursorResult[Any], result).rowcount)
                if claimed:
                    s.execute(
                        insert(simmkt_instances).values(
                            token=request.token,
                            offer_id=offer.offer_id,
                            status="loading",
                            target_status="running" if boots else "exited",
                            ready_at=self.clock.now() + self._delay(FIRST_BOOT_S),
                            label=request.label,
                            image=request.image,
                            onstart_script=request.onstart_script,
                            ssh_key=request.ssh_key,
                            disk_gb=request.disk_gb,
                            created_at=self.clock.now(),
                        )
                    )
        except IntegrityError:
            pass  # a concurrent retry with the same token won; its instance is found below
        instance = await self.find_by_token(request.token)
        if instance is None:
            raise self._unavailable(request.offer_id)
        return instance

    async def find_by_token(self, token: str) -> Instance | None:
        with self.db.read() as s:
            row = s.execute(self._instance_query().where(simmkt_instances.c.token == token)).first()
        row = self._settle(row)
        return None if row is None else self._instance(row)

    async def get_instance(self, instance_id: str) -> Instance | None:
        await self._call("get_instance")
        row = self._row(instance_id)
        return None if row is None else self._instance(row)

    async def list_instances(self) -> list[Instance]:
        await self._call("list_instances")

        def _list() -> list[Instance]:
            with self.db.read() as s:
                rows = s.execute(self._instance_query().order_by(simmkt_instances.c.id)).all()
            settled = (self._settle(row) for row in rows)
            return [self._instance(row) for row in settled if row is not None]  # None: deleted while being listed

        # In a thread, as a real marketplace's reply is awaited: the reconciler asks for it once per batch of servers.
        return await asyncio.to_thread(_list)

    async def start(self, instance_id: str) -> None:
        """A stopped (or exited) instance reloads for ~8 s x time_scale, then runs. Idempotent."""
        await self._call("start")
        row = self._require(instance_id)
        if row.status in ("running", "loading"):
            return
        with self.db.write() as s:
            s.execute(
                update(simmkt_instances)
                .where(simmkt_instances.c.id == row.id, simmkt_instances.c.status == row.status)
                .values(status="loading", target_status="running", ready_at=self.clock.now() + self._delay(RESTART_S))
            )

    async def stop(self, instance_id: str) -> None:
        """The container halts at once, as Vast.ai's does within seconds; the disk and the rental are kept.
        Stopping during boot cancels the boot. Idempotent."""
        await self._call("stop")
        row = self._require(instance_id)
        if row.status == "stopped":
            return
        with self.db.write() as s:
            s.execute(
                update(simmkt_instances)
                .where(simmkt_instances.c.id == row.id)
                .values(status="stopped", target_status=None, ready_at=None)
            )

    async def destroy(self, instance_id: str) -> None:
        """Delete the instance and put its offer back on the market, in one transaction. Idempotent."""
        await self._call("destroy")
        if not instance_id.isdigit():
            return
        with self.db.write() as s:
            token = s.execute(
                select(simmkt_instances.c.token).where(simmkt_instances.c.id == int(instance_id))
            ).scalar_one_or_none()
            if token is None:
                return
            s.execute(delete(simmkt_instances).where(simmkt_instances.c.id == int(instance_id)))
            s.execute(update(simmkt_offers).where(simmkt_offers.c.rented_by == token).values(rented_by=None))

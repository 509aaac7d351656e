"""One `harness` per compute driver under test: the driver, how it makes a machine, refs it never issued, and its
way to fail a create half way. The marketplace-backed compute makes its machines by renting through its market."""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from cloudplane.db.engine import Database
from cloudplane.providers.base import CreateRequest, Machine, Provider
from cloudplane.providers.market_compute import MarketplaceCompute
from cloudplane.providers.marketplace import OfferQuery, RentRequest
from cloudplane.providers.simmarket import SimulatedMarketplace
from cloudplane.providers.simulator import SimulatorConfig, SimulatorProvider
from tests.conftest import LxcTestHost, destroy_lxc_leftovers
from tests.fakeproxmox import TEMPLATES, TOKEN_ID, TOKEN_SECRET, FakeProxmox

TEST_HOST = Path(__file__).resolve().parent.parent / "fixtures" / "libvirt" / "testhost.xml"


@dataclass
class Harness:
    provider: Provider
    # Well-formed refs the provider never issued: the unknown-id tests must reach the lookup, not a parse error.
    unknown_ref: str
    unknown_snapshot_ref: str
    # Within this context the next create fails after the provider has made something; None where the driver
    # refuses create (a rented instance is made by its marketplace, whose faults its own tests cover).
    failing_create: Callable[[], contextlib.AbstractContextManager[None]] | None
    # True: the provider removes what a failed create made. False: the failure is only in the reply, and a
    # retry with the same token finds the machine (both allowed by `Provider.create`).
    failed_create_leaves_nothing: bool
    # A catalog image the provider can boot.
    image: str = "debian-12"
    # How a machine is made, where it is not the driver's own create: idempotent on the request's token.
    make: Callable[[CreateRequest], Awaitable[Machine]] | None = None

    async def create(self, request: CreateRequest) -> Machine:
        return await (self.make or self.provider.create)(request)


def simulator_harness(tmp_path: Path) -> Iterator[Harness]:
    db = Database(f"sqlite:///{tmp_path / 'simulator.sqlite'}")
    provider = SimulatorProvider(db, SimulatorConfig(time_scale=0))

    @contextlib.contextmanager
    def failing_create() -> Iterator[None]:
        # The simulator's create is one insert, so its only part-way failure is the lost reply after the insert.
        provider.config.ghost_create_rate = 1.0
        try:
            yield
        finally:
            provider.config.ghost_create_rate = 0.0

    yield Harness(provider, "sim-999999", "simsnap-999999", failing_create, failed_create_leaves_nothing=False)
    db.dispose()


def libvirt_harness(monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    try:
        import libvirt
    except ImportError as error:
        # CI installs libvirt-python; a missing binding must show as a failure, never as a silent skip.
        pytest.fail(
            f"libvirt-python is not importable ({error}): apt-get install libvirt-dev pkg-config, then "
            "pip install 'libvirt-python>=9.0'",
            pytrace=False,
        )
    from cloudplane.providers.libvirt import LibvirtProvider

    # A fresh connection per test: the test driver keeps its host in memory per connection.
    provider = LibvirtProvider(f"test://{TEST_HOST}")

    @contextlib.contextmanager
    def failing_create() -> Iterator[None]:
        # The domain is defined, then starting it fails: the provider must undefine it again.
        def refuse_to_start(self: object, *args: object) -> int:
            raise libvirt.libvirtError("injected: the domain failed to start")

        with monkeypatch.context() as patch:
            patch.setattr(libvirt.virDomain, "create", refuse_to_start)
            yield

    yield Harness(
        provider,
        "00000000-0000-4000-8000-000000000000",
        "00000000-0000-4000-8000-000000000000/cps-0000000000000000",
        failing_create,
        failed_create_leaves_nothing=True,
    )
    provider.close()


def lxc_harness(host: LxcTestHost, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    import lxc

    provider = host.provider(tmp_path / "lxc")

    @contextlib.contextmanager
    def failing_create() -> Iterator[None]:
        # The container is built, then LXC fails to start it: the provider must remove it again.
        with monkeypatch.context() as patch:
            patch.setattr(lxc.Container, "start", lambda self, *args, **kwargs: False)
            yield

    yield Harness(
        provider,
        "cp-0000000000000000",
        "cp-0000000000000000/cps-0000000000000000",
        failing_create,
        failed_create_leaves_nothing=True,
        image="busybox",
    )
    destroy_lxc_leftovers(provider)


def proxmox_provider(fake: FakeProxmox, **options: Any) -> Any:
    from cloudplane.providers.proxmox import ProxmoxProvider

    return ProxmoxProvider(
        fake.url,
        options.pop("token_id", TOKEN_ID),
        options.pop("token_secret", TOKEN_SECRET),
        node="pve",
        templates=TEMPLATES,
        verify_tls=fake.ca_file,
        task_poll_s=0.01,
        **options,
    )


def proxmox_harness() -> Iterator[Harness]:
    fake = FakeProxmox()

    @contextlib.contextmanager
    def failing_create() -> Iterator[None]:
        # The VM is cloned and configured, then its start task fails: the provider must destroy it again.
        fake.failing_tasks.add("qmstart")
        try:
            yield
        finally:
            fake.failing_tasks.discard("qmstart")

    yield Harness(proxmox_provider(fake), "999999", "999999/cps-0000000000000000", failing_create, True)
    fake.close()


def marketplace_harness(tmp_path: Path) -> Iterator[Harness]:
    db = Database(f"sqlite:///{tmp_path / 'market.sqlite'}")
    market = SimulatedMarketplace(db, time_scale=0)
    compute = MarketplaceCompute(market)

    async def rent(request: CreateRequest) -> Machine:
        # What the GPU face does: rent an offer the market has now, labelled with the server's hostname. A retry
        # with the same token returns the instance already rented, whichever offer it picks this time.
        offers = await market.search_offers(OfferQuery(available=True, limit=1000))
        offer = next(o for o in offers if o.storage_gb >= request.disk_gb)
        instance = await market.rent(
            RentRequest(
                token=request.token,
                offer_id=offer.offer_id,
                image=request.image,
                label=request.hostname,
                disk_gb=request.disk_gb,
            )
        )
        return compute.machine(instance)

    yield Harness(
        compute,
        "999999999",
        "999999999/snapshot",
        failing_create=None,
        failed_create_leaves_nothing=True,
        image="pytorch/pytorch:latest",
        make=rent,
    )
    db.dispose()


@pytest.fixture(params=["simulator", "libvirt", "lxc", "marketplace", "proxmox"])
def harness(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Harness]:
    if request.param == "simulator":
        yield from simulator_harness(tmp_path)
    elif request.param == "libvirt":
        yield from libvirt_harness(monkeypatch)
    elif request.param == "marketplace":
        yield from marketplace_harness(tmp_path)
    elif request.param == "proxmox":
        yield from proxmox_harness()
    else:
        yield from lxc_harness(request.getfixturevalue("lxc_host_ready"), tmp_path, monkeypatch)

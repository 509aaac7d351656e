"""The simulated GPU marketplace: a seeded catalog, every search filter, rentals that boot, stop, start and
survive a restart, idempotent rents, and seeded faults. Time is a ManualClock the tests move on."""

from __future__ import annotations

import asyncio
import ipaddress
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from cloudplane.db.engine import Database
from cloudplane.domain.errors import NotFound, ProviderError
from cloudplane.providers.base import MachineState
from cloudplane.providers.clock import ManualClock
from cloudplane.providers.marketplace import Offer, OfferQuery, RentRequest
from cloudplane.providers.simmarket import (
    AVAILABILITY_PERIOD_S,
    DOCUMENT_OFFER_ID,
    FIRST_BOOT_S,
    RESTART_S,
    SIM_FAILED_STATUSES,
    SIM_PENDING_STATUSES,
    SIM_STATES,
    SimulatedMarketplace,
)

EVERYTHING = OfferQuery(limit=1000)
START = datetime(2030, 1, 1, tzinfo=UTC)  # the start of a listing period


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'market.sqlite'}")
    yield database
    database.dispose()


@pytest.fixture
def other_db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'other.sqlite'}")
    yield database
    database.dispose()


def rent_request(offer_id: str = DOCUMENT_OFFER_ID, token: str | None = None, **changes) -> RentRequest:
    fields = {"image": "pytorch/pytorch:latest", "label": "Training Instance", **changes}
    return RentRequest(token=token or str(uuid.uuid4()), offer_id=offer_id, **fields)


async def test_the_catalog_is_the_same_for_the_same_seed(db, other_db, tmp_path) -> None:
    first = await SimulatedMarketplace(db, seed=7, time_scale=0).search_offers(EVERYTHING)
    second = await SimulatedMarketplace(other_db, seed=7, time_scale=0).search_offers(EVERYTHING)
    assert len(first) == 150
    assert first == second
    assert len({o.offer_id for o in first}) == 150

    third_db = Database(f"sqlite:///{tmp_path / 'third.sqlite'}")
    try:
        reseeded = await SimulatedMarketplace(third_db, seed=8, time_scale=0).search_offers(EVERYTHING)
    finally:
        third_db.dispose()
    assert {o.offer_id for o in reseeded} != {o.offer_id for o in first}
    assert DOCUMENT_OFFER_ID in {o.offer_id for o in reseeded}


async def test_the_catalog_looks_like_a_real_gpu_market(db) -> None:
    offers = await SimulatedMarketplace(db, time_scale=0).search_offers(EVERYTHING)
    models = {o.gpu_model for o in offers}
    assert {"H100 SXM", "A100 80GB", "L40S", "RTX 4090", "RTX 3090", "T4"} <= models
    assert {o.gpu_count for o in offers} == {1, 2, 4, 8}
    assert len({o.region for o in offers}) >= 6
    assert all(0.8 <= o.reliability <= 0.999 for o in offers)
    assert all(o.extra["simulated"] is True and o.name.startswith("Simulated Vast.ai machine") for o in offers)
    h100 = [o.price_per_hour / o.gpu_count for o in offers if o.gpu_model.startswith("H100")]
    t4 = [o.price_per_hour / o.gpu_count for o in offers if o.gpu_model == "T4"]
    assert min(h100) > max(t4)  # prices per GPU follow the card, not chance


async def test_offer_12345_is_the_documents_example(db) -> None:
    market = SimulatedMarketplace(db, time_scale=0)
    assert market.simulated is True
    [offer] = [o for o in await market.search_offers(EVERYTHING) if o.offer_id == DOCUMENT_OFFER_ID]
    assert offer == Offer(
        provider="vast_ai",
        offer_id="12345",
        machine_id=67890,
        name="Simulated Vast.ai machine 67890",
        gpu_model="RTX 4090",
        gpu_count=1,
        gpu_ram_gb=24.0,
        cpu_count=8,
        ram_gb=32.0,
        storage_gb=100.0,
        price_per_hour=1.50,
        region="US-East",
        available=True,
        reliability=0.95,
        extra={"compute_cap": 89, "dlperf": 42.0, "score": 8.5, "simulated": True},
    )
    # The document's own search finds it.
    found = await market.search_offers(OfferQuery(gpu_model="RTX 4090", max_price=2.0, available=True))
    assert DOCUMENT_OFFER_ID in {o.offer_id for o in found}


async def test_every_filter_sort_and_the_limit(db) -> None:
    market = SimulatedMarketplace(db, time_scale=0)
    everything = await market.search_offers(EVERYTHING)

    rtx = await market.search_offers(OfferQuery(gpu_model="rtx 4090", limit=1000))
    assert rtx and {o.gpu_model for o in rtx} == {"RTX 4090"}
    assert len(rtx) == sum(o.gpu_model == "RTX 4090" for o in everything)
    a100 = await market.search_offers(OfferQuery(gpu_model="A100", limit=1000))
    assert {o.gpu_model for o in a100} == {"A100 80GB", "A100 40GB"}
    a10 = await market.search_offers(OfferQuery(gpu_model="A10", limit=1000))
    assert {o.gpu_model for o in a10} == {"A10"}

    big = await market.search_offers(OfferQuery(min_gpu_count=4, limit=1000))
    assert big and all(o.gpu_count >= 4 for o in big)
    assert len(big) == sum(o.gpu_count >= 4 for o in everything)

    cheap = await market.search_offers(OfferQuery(max_price=0.5, limit=1000))
    assert cheap and all(o.price_per_hour <= 0.5 for o in cheap)

    frankfurt = await market.search_offers(OfferQuery(region="eu-central", limit=1000))
    assert frankfurt and {o.region for o in frankfurt} == {"EU-Central"}
    europe = await market.search_offers(OfferQuery(region="EU", limit=1000))
    assert {o.region for o in europe} == {r for r in (o.region for o in everything) if r.startswith("EU-")}

    available = await market.search_offers(OfferQuery(available=True, limit=1000))
    assert available and all(o.available for o in available)
    assert len(available) == sum(o.available for o in everything) < len(everything)

    by_price = await market.search_offers(OfferQuery(sort="price", limit=1000))
    assert [o.price_per_hour for o in by_price] == sorted(o.price_per_hour for o in everything)
    by_reliability = await market.search_offers(OfferQuery(sort="reliability", limit=1000))
    assert [o.reliability for o in by_reliability] == sorted((o.reliability for o in everything), reverse=True)
    default = await market.search_offers(OfferQuery(limit=1000))
    assert [o.extra["score"] for o in default] == sorted((o.extra["score"] for o in everything), reverse=True)

    assert len(await market.search_offers(OfferQuery())) == 50
    assert len(await market.search_offers(OfferQuery(limit=3))) == 3
    combined = await market.search_offers(
        OfferQuery(gpu_model="RTX 4090", min_gpu_count=1, max_price=2.0, region="US", available=True, sort="price")
    )
    assert combined[0].price_per_hour <= combined[-1].price_per_hour
    assert all(o.region.startswith("US-") and o.available and o.price_per_hour <= 2.0 for o in combined)


async def test_availability_moves_with_time_except_for_offer_12345(db) -> None:
    clock = ManualClock(START)
    market = SimulatedMarketplace(db, clock=clock)

    async def listed() -> dict[str, bool]:
        return {o.offer_id: o.available for o in await market.search_offers(EVERYTHING)}

    periods = [await listed()]
    clock.advance(AVAILABILITY_PERIOD_S - 0.1)
    assert await listed() == periods[0]  # one period: the same hosts listed throughout
    for _ in range(3):
        clock.advance(AVAILABILITY_PERIOD_S)
        periods.append(await listed())
    assert all(period[DOCUMENT_OFFER_ID] for period in periods)
    assert all(period != periods[0] for period in periods[1:])


async def test_a_rent_loads_then_runs(db) -> None:
    clock = ManualClock(START)
    market = SimulatedMarketplace(db, clock=clock)
    instance = await market.rent(rent_request(onstart_script="echo hi", ssh_key="ssh-ed25519 AAAA me"))
    assert instance.state == MachineState.PROVISIONING
    assert instance.status_detail.startswith("loading (simulated)")
    assert (instance.offer_id, instance.machine_id) == (DOCUMENT_OFFER_ID, 67890)
    assert (instance.gpu_model, instance.gpu_count, instance.cpu_count, instance.ram_gb) == ("RTX 4090", 1, 8, 32.0)
    assert (instance.price_per_hour, instance.region, instance.storage_gb) == (1.5, "US-East", 20.0)
    assert (instance.label, instance.image, instance.onstart_script) == (
        "Training Instance",
        "pytorch/pytorch:latest",
        "echo hi",
    )
    assert instance.ssh_host.endswith(".sim.vast.invalid")
    assert instance.ssh_port == 10_000 + int(instance.instance_id)
    assert ipaddress.ip_address(instance.public_ipaddr) in ipaddress.ip_network("198.18.0.0/15")

    clock.advance(FIRST_BOOT_S - 0.1)  # pulling the image takes its time
    assert (await market.get_instance(instance.instance_id)).state == MachineState.PROVISIONING
    clock.advance(0.1)
    running = await market.get_instance(instance.instance_id)
    assert running.state == MachineState.RUNNING
    assert running.status_detail.startswith("running (simulated)")
    assert [i.instance_id for i in await market.list_instances()] == [instance.instance_id]


async def test_rent_is_idempotent_on_its_token(db) -> None:
    market = SimulatedMarketplace(db, time_scale=0)
    token = str(uuid.uuid4())
    first, second = await asyncio.gather(market.rent(rent_request(token=token)), market.rent(rent_request(token=token)))
    again = await market.rent(rent_request(token=token))
    assert first.instance_id == second.instance_id == again.instance_id
    assert len(await market.list_instances()) == 1
    assert (await market.find_by_token(token)).instance_id == first.instance_id
    assert await market.find_by_token("never-used") is None


async def test_renting_takes_the_offer_off_the_market_until_destroyed(db) -> None:
    market = SimulatedMarketplace(db, time_scale=0)

    def listed(offers):
        return {o.offer_id: o.available for o in offers}

    instance = await market.rent(rent_request())
    assert listed(await market.search_offers(EVERYTHING))[DOCUMENT_OFFER_ID] is False
    assert DOCUMENT_OFFER_ID not in listed(await market.search_offers(OfferQuery(available=True, limit=1000)))
    with pytest.raises(ProviderError) as caught:
        await market.rent(rent_request())  # another token: someone else wants the same machine
    assert not caught.value.retryable
    assert caught.value.details["reason"] == "offer_unavailable"

    await market.destroy(instance.instance_id)
    await market.destroy(instance.instance_id)  # idempotent
    await market.destroy("no-such-instance")
    assert await market.get_instance(instance.instance_id) is None
    assert listed(await market.search_offers(EVERYTHING))[DOCUMENT_OFFER_ID] is True
    second = await market.rent(rent_request())
    assert int(second.instance_id) > int(instance.instance_id)  # ids are never reused


async def test_rent_refuses_what_the_market_cannot_give(db) -> None:
    market = SimulatedMarketplace(db, time_scale=0)
    with pytest.raises(NotFound):
        await market.rent(rent_request(offer_id="999"))
    with pytest.raises(ProviderError) as caught:
        await market.rent(rent_request(disk_gb=5000))
    assert not caught.value.retryable
    unlisted = [o for o in await market.search_offers(EVERYTHING) if not o.available]
    with pytest.raises(ProviderError):
        await market.rent(rent_request(offer_id=unlisted[0].offer_id))
    assert await market.list_instances() == []


async def test_stop_and_start(db) -> None:
    clock = ManualClock(START)
    market = SimulatedMarketplace(db, time_scale=0.5, clock=clock)  # first boot 10 s, restart 4 s

    async def state() -> MachineState:
        return (await market.get_instance(instance.instance_id)).state

    instance = await market.rent(rent_request())
    clock.advance(FIRST_BOOT_S * 0.5)
    assert await state() == MachineState.RUNNING

    await market.stop(instance.instance_id)
    stopped = await market.get_instance(instance.instance_id)
    assert stopped.state == MachineState.STOPPED
    assert "storage still bills" in stopped.status_detail
    await market.stop(instance.instance_id)

    await market.start(instance.instance_id)
    assert await state() == MachineState.PROVISIONING
    clock.advance(RESTART_S * 0.5 - 0.1)
    await market.start(instance.instance_id)  # while loading: a no-op, the restart keeps its deadline
    assert await state() == MachineState.PROVISIONING
    clock.advance(0.1)
    assert await state() == MachineState.RUNNING
    await market.start(instance.instance_id)
    assert await state() == MachineState.RUNNING

    with pytest.raises(NotFound):
        await market.start("424242")
    with pytest.raises(NotFound):
        await market.stop("not-a-number")


async def test_rentals_survive_a_crash_of_the_control_plane(tmp_path) -> None:
    url = f"sqlite:///{tmp_path / 'crash.sqlite'}"
    before = Database(url)
    token = str(uuid.uuid4())
    rented = await SimulatedMarketplace(before, clock=ManualClock(START)).rent(rent_request(token=token))
    assert rented.state == MachineState.PROVISIONING
    before.dispose()  # the process is gone; only the file remains

    after = Database(url)
    try:
        # Another process, after the boot's time: the deadline was stored, so the instance has booted meanwhile.
        market = SimulatedMarketplace(after, clock=ManualClock(START + timedelta(seconds=FIRST_BOOT_S)))
        found = await market.find_by_token(token)
        assert found is not None and found.instance_id == rented.instance_id
        assert found.state == MachineState.RUNNING
        offers = {o.offer_id: o for o in await market.search_offers(EVERYTHING)}
        assert offers[DOCUMENT_OFFER_ID].available is False
        # The workflow re-runs its rent step after the crash: no second rental.
        assert (await market.rent(rent_request(token=token))).instance_id == rented.instance_id
        assert len(await market.list_instances()) == 1
    finally:
        after.dispose()


async def test_injected_faults_are_deterministic_under_the_seed(db, other_db) -> None:
    async def pattern(database: Database) -> list[bool]:
        market = SimulatedMarketplace(database, seed=3, time_scale=0, error_rate=0.5)
        outcomes = []
        for _ in range(30):
            try:
                await market.search_offers(OfferQuery(limit=1))
                outcomes.append(True)
            except ProviderError as error:
                assert error.retryable
                assert "Simulated" in error.message and "injected" in error.message
                outcomes.append(False)
        return outcomes

    first, second = await pattern(db), await pattern(other_db)
    assert first == second
    assert True in first and False in first


async def test_a_boot_that_fails_ends_exited(db) -> None:
    clock = ManualClock(START)
    market = SimulatedMarketplace(db, boot_failure_rate=1.0, clock=clock)
    instance = await market.rent(rent_request())
    assert instance.state == MachineState.PROVISIONING
    clock.advance(FIRST_BOOT_S)
    failed = await market.get_instance(instance.instance_id)
    assert failed.state == MachineState.ERROR
    assert failed.status_detail.startswith("exited (simulated)")


def test_the_state_table_covers_every_status() -> None:
    assert SIM_PENDING_STATUSES | SIM_FAILED_STATUSES <= set(SIM_STATES)
    assert {SIM_STATES[s] for s in SIM_PENDING_STATUSES} == {MachineState.PROVISIONING}
    assert {SIM_STATES[s] for s in SIM_FAILED_STATUSES} == {MachineState.ERROR}


async def test_another_provider_name_is_shown_as_given(db) -> None:
    market = SimulatedMarketplace(db, name="gpu_sim", time_scale=0)
    [offer] = await market.search_offers(OfferQuery(limit=1))
    assert offer.provider == "gpu_sim"
    assert offer.name.startswith("Simulated gpu_sim machine")

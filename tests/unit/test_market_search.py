"""MarketSearch with fake marketplaces: merged and sorted offers, partial failures, timeouts and the cache."""

from __future__ import annotations

import asyncio

import pytest

from cloudplane.domain.errors import NotFound, ProviderError
from cloudplane.providers.market_search import MarketSearch
from cloudplane.providers.marketplace import Offer, OfferQuery
from tests.conftest import FakeClock


def offer(provider: str, offer_id: str, price: float, reliability: float = 0.9) -> Offer:
    return Offer(
        provider=provider,
        offer_id=offer_id,
        machine_id=None,
        name=f"{provider} machine {offer_id}",
        gpu_model="RTX 4090",
        gpu_count=1,
        gpu_ram_gb=24.0,
        cpu_count=8,
        ram_gb=32.0,
        storage_gb=100.0,
        price_per_hour=price,
        region="US-East",
        available=True,
        reliability=reliability,
    )


class FakeMarket:
    def __init__(self, name: str, offers=(), *, delay_s: float = 0.0, error: Exception | None = None) -> None:
        self.name = name
        self.offers = list(offers)
        self.delay_s = delay_s
        self.error = error
        self.queries: list[OfferQuery] = []

    async def search_offers(self, query: OfferQuery) -> list[Offer]:
        self.queries.append(query)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.error is not None:
            raise self.error
        return self.offers[: query.limit]


@pytest.fixture
def markets() -> dict[str, FakeMarket]:
    return {
        "alpha": FakeMarket("alpha", [offer("alpha", "a1", 1.20, 0.99), offer("alpha", "a2", 0.40, 0.85)]),
        "beta": FakeMarket("beta", [offer("beta", "b1", 0.80, 0.97), offer("beta", "b2", 2.50, 0.999)]),
        "slow": FakeMarket("slow", [offer("slow", "s1", 0.01)], delay_s=5.0),
        "broken": FakeMarket("broken", error=ProviderError("Broken marketplace is down", retryable=True)),
    }


async def test_offers_are_merged_cheapest_first_and_failures_reported(markets) -> None:
    search = MarketSearch(markets, timeout_s=0.05)
    started = asyncio.get_running_loop().time()
    result = await search.search(OfferQuery())
    assert asyncio.get_running_loop().time() - started < 1.0  # the slow market did not hold the search up

    assert [(o.provider, o.offer_id) for o in result.offers] == [
        ("alpha", "a2"),
        ("beta", "b1"),
        ("alpha", "a1"),
        ("beta", "b2"),
    ]
    assert set(result.errors) == {"slow", "broken"}
    assert result.errors["broken"] == "Broken marketplace is down"
    assert "0.05 s" in result.errors["slow"]


async def test_reliability_sort_and_the_limit_apply_to_the_merged_list(markets) -> None:
    search = MarketSearch({name: markets[name] for name in ("alpha", "beta")})
    result = await search.search(OfferQuery(sort="reliability", limit=3))
    assert [o.offer_id for o in result.offers] == ["b2", "a1", "b1"]
    assert result.errors == {}


async def test_one_named_provider_only(markets) -> None:
    search = MarketSearch(markets, timeout_s=0.05)
    result = await search.search(OfferQuery(), provider="beta")
    assert {o.provider for o in result.offers} == {"beta"}
    assert markets["alpha"].queries == []
    with pytest.raises(NotFound):
        await search.search(OfferQuery(), provider="nobody")


async def test_a_repeat_within_the_ttl_is_served_from_the_cache(markets) -> None:
    clock = FakeClock()
    search = MarketSearch({"alpha": markets["alpha"]}, cache_ttl_s=15.0, clock=clock)
    query = OfferQuery(gpu_model="RTX 4090")

    first = await search.search(query)
    clock.now += 14.9
    second = await search.search(query)
    assert second.offers == first.offers
    assert len(markets["alpha"].queries) == 1

    await search.search(OfferQuery(gpu_model="RTX 4090", max_price=1.0))  # another query, its own entry
    assert len(markets["alpha"].queries) == 2

    clock.now += 0.2  # the first entry has expired
    await search.search(query)
    assert len(markets["alpha"].queries) == 3


async def test_failures_are_not_cached(markets) -> None:
    clock = FakeClock()
    search = MarketSearch({"broken": markets["broken"], "slow": markets["slow"]}, timeout_s=0.05, clock=clock)
    await search.search(OfferQuery())
    markets["broken"].error = None
    markets["broken"].offers = [offer("broken", "x1", 0.5)]
    markets["slow"].delay_s = 0.0

    result = await search.search(OfferQuery())
    assert result.errors == {}
    assert {o.offer_id for o in result.offers} == {"x1", "s1"}
    assert len(markets["broken"].queries) == 2 and len(markets["slow"].queries) == 2


async def test_an_unexpected_exception_is_reported_not_raised(markets) -> None:
    markets["alpha"].error = RuntimeError("KeyError deep inside a parser")
    search = MarketSearch({"alpha": markets["alpha"], "beta": markets["beta"]})
    result = await search.search(OfferQuery())
    assert result.errors == {"alpha": "alpha failed to search offers"}
    assert {o.provider for o in result.offers} == {"beta"}


async def test_no_providers_no_offers() -> None:
    result = await MarketSearch({}).search(OfferQuery())
    assert (result.offers, result.errors) == ([], {})

"""One offer search across every GPU marketplace at once: concurrent, bounded in time, briefly cached."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cachetools import TTLCache

from cloudplane.domain.errors import CloudplaneError, NotFound
from cloudplane.providers.marketplace import MarketplaceProvider, Offer, OfferQuery

logger = logging.getLogger(__name__)

# Distinct queries remembered at once; past this the oldest go first, so odd queries cannot grow memory.
MAX_CACHED_QUERIES = 512


@dataclass(frozen=True)
class SearchResult:
    offers: list[Offer]
    # Provider name -> why its offers are missing; the other providers' offers are still in `offers`.
    errors: dict[str, str] = field(default_factory=dict)


def _cheapest_first(offer: Offer) -> tuple[float, float, str, str]:
    return (offer.price_per_hour, -offer.reliability, offer.provider, offer.offer_id)


def _most_reliable_first(offer: Offer) -> tuple[float, float, str, str]:
    return (-offer.reliability, offer.price_per_hour, offer.provider, offer.offer_id)


def merge_offers(offers: list[Offer], query: OfferQuery) -> list[Offer]:
    """Sorted by `query.sort` (cheapest first unless it says "reliability"), then cut to `query.limit`."""
    key = _most_reliable_first if query.sort == "reliability" else _cheapest_first
    return sorted(offers, key=key)[: max(query.limit, 0)]


class MarketSearch:
    """Fans a query out to the marketplaces. One slow or failing provider costs at most `timeout_s` and is
    reported in `SearchResult.errors`; it never fails the search. Answers are reused for `cache_ttl_s` per
    (provider, query); failures are not remembered, so the next search asks that provider again."""

    def __init__(
        self,
        providers: dict[str, MarketplaceProvider],
        *,
        timeout_s: float = 5.0,
        cache_ttl_s: float = 15.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.providers = providers
        self.timeout_s = timeout_s
        self.cache_ttl_s = cache_ttl_s
        # Used on the event loop only, so no lock. ttl 0 keeps nothing (TTLCache needs a positive maxsize).
        self._cache: TTLCache[tuple[str, OfferQuery], list[Offer]] | None = (
            TTLCache(maxsize=MAX_CACHED_QUERIES, ttl=cache_ttl_s, timer=clock) if cache_ttl_s > 0 else None
        )

    def _cached(self, key: tuple[str, OfferQuery]) -> list[Offer] | None:
        return self._cache.get(key) if self._cache is not None else None

    def _remember(self, key: tuple[str, OfferQuery], offers: list[Offer]) -> None:
        if self._cache is not None:
            self._cache[key] = offers

    async def _search_one(self, name: str, query: OfferQuery) -> list[Offer]:
        key = (name, query)
        cached = self._cached(key)
        if cached is not None:
            return cached
        offers = await asyncio.wait_for(self.providers[name].search_offers(query), timeout=self.timeout_s)
        self._remember(key, offers)
        return offers

    async def search(self, query: OfferQuery, provider: str | None = None) -> SearchResult:
        """Offers from every provider (or only `provider`; an unknown name raises `NotFound`), merged."""
        if provider is not None and provider not in self.providers:
            raise NotFound(f"Unknown GPU provider {provider!r}", provider=provider)
        names = [provider] if provider is not None else list(self.providers)
        answers = await asyncio.gather(*(self._search_one(name, query) for name in names), return_exceptions=True)
        offers: list[Offer] = []
        errors: dict[str, str] = {}
        for name, answer in zip(names, answers, strict=True):
            if isinstance(answer, TimeoutError):
                errors[name] = f"{name} did not answer within {self.timeout_s:g} s"
            elif isinstance(answer, CloudplaneError):
                errors[name] = answer.message
            elif isinstance(answer, BaseException):
                if not isinstance(answer, Exception):
                    raise answer  # cancellation and exits are not a provider's failure
                logger.warning("offer search on %s failed: %r", name, answer)
                errors[name] = f"{name} failed to search offers"
            else:
                offers.extend(answer)
        if errors:
            logger.info("offer search partial: %s", errors)
        return SearchResult(offers=merge_offers(offers, query), errors=errors)

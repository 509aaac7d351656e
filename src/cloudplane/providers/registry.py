"""Provider instances by name, built from settings once per process."""

from __future__ import annotations

from cloudplane.config import Settings
from cloudplane.db.engine import Database
from cloudplane.domain.errors import NotFound, ProviderError
from cloudplane.providers.base import Provider
from cloudplane.providers.market_compute import MarketplaceCompute
from cloudplane.providers.market_search import MarketSearch
from cloudplane.providers.marketplace import MarketplaceProvider
from cloudplane.providers.simmarket import SimulatedMarketplace
from cloudplane.providers.simulator import SimulatorConfig, SimulatorProvider
from cloudplane.providers.vastai import VastAIProvider


class ProviderRegistry:
    """Compute providers by name, and GPU marketplaces (each also reachable as compute, for its instances)."""

    def __init__(self, providers: dict[str, Provider], markets: dict[str, MarketplaceProvider] | None = None) -> None:
        self.markets = dict(markets or {})
        self._providers = {**providers, **{name: MarketplaceCompute(m) for name, m in self.markets.items()}}
        self.market_search = MarketSearch(self.markets)

    def get(self, name: str) -> Provider:
        try:
            return self._providers[name]
        except KeyError:
            raise ProviderError(f"Provider {name!r} is not configured", retryable=False) from None

    def market(self, name: str) -> MarketplaceProvider:
        try:
            return self.markets[name]
        except KeyError:
            raise NotFound(
                f"Unknown provider {name!r}; the providers are: {', '.join(sorted(self.markets))}", provider=name
            ) from None

    def names(self) -> list[str]:
        return sorted(self._providers)


def build_registry(settings: Settings, db: Database) -> ProviderRegistry:
    simulator = SimulatorProvider(
        db if db.url == settings.simulator_database_url else Database(settings.simulator_database_url),
        SimulatorConfig(
            time_scale=settings.simulator_time_scale,
            seed=settings.simulator_seed,
            error_rate=settings.simulator_error_rate,
            latency_ms=settings.simulator_latency_ms,
            ghost_create_rate=settings.simulator_ghost_create_rate,
        ),
    )
    markets: dict[str, MarketplaceProvider] = {}
    if settings.vastai_api_key:
        markets["vast_ai"] = VastAIProvider(settings.vastai_api_key)
    else:
        # No Vast.ai key: a simulation of its marketplace serves under the same name, so the GPU Cloud Manager
        # document's examples (provider=vast_ai) work on a fresh install. Its offers say they are simulated.
        markets["vast_ai"] = SimulatedMarketplace(
            simulator.db,
            name="vast_ai",
            seed=settings.simulator_seed,
            time_scale=settings.simulator_time_scale,
            error_rate=settings.simulator_error_rate,
        )
    return ProviderRegistry({simulator.name: simulator}, markets)

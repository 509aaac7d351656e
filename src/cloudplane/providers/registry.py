"""Provider instances by name, built from settings once per process."""

from __future__ import annotations

from cloudplane.config import Settings
from cloudplane.db.engine import Database
from cloudplane.domain.errors import ProviderError
from cloudplane.providers.base import Provider
from cloudplane.providers.simulator import SimulatorConfig, SimulatorProvider


class ProviderRegistry:
    def __init__(self, providers: dict[str, Provider]) -> None:
        self._providers = providers

    def get(self, name: str) -> Provider:
        try:
            return self._providers[name]
        except KeyError:
            raise ProviderError(f"Provider {name!r} is not configured", retryable=False) from None

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
    return ProviderRegistry({simulator.name: simulator})

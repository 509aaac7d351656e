"""Provider instances by name, built from settings once per process: only those a location runs on, through a
table of factories that import their provider lazily, so a host without libvirt-python or the lxc bindings runs
the others."""

from __future__ import annotations

import logging
from collections.abc import Callable

from cloudplane.config import ConfigurationError, Settings
from cloudplane.db.engine import Database
from cloudplane.domain.errors import NotFound, ProviderError
from cloudplane.providers.base import Feature, Provider, check_declared
from cloudplane.providers.market_compute import MarketplaceCompute
from cloudplane.providers.market_search import MarketSearch
from cloudplane.providers.marketplace import MarketFeature, MarketplaceProvider
from cloudplane.providers.simmarket import SimulatedMarketplace
from cloudplane.providers.simulator import SimulatorConfig, SimulatorProvider
from cloudplane.providers.vastai import VastAIProvider

log = logging.getLogger(__name__)


class ProviderRegistry:
    """Compute providers by name, and GPU marketplaces (each also reachable as compute, for its instances)."""

    def __init__(
        self,
        providers: dict[str, Provider],
        markets: dict[str, MarketplaceProvider] | None = None,
        unavailable: dict[str, str] | None = None,
    ) -> None:
        # A driver without a complete feature table would have its undeclared features guessed: refuse it here.
        for market in (markets or {}).values():
            check_declared(market, MarketFeature)
        for provider in providers.values():
            check_declared(provider, Feature)
        self.markets = dict(markets or {})
        self._providers = {**providers, **{name: MarketplaceCompute(m) for name, m in self.markets.items()}}
        self.market_search = MarketSearch(self.markets)
        # Providers a location runs on that could not be built here, with the reason (logged at start).
        self.unavailable = dict(unavailable or {})

    def get(self, name: str) -> Provider:
        try:
            return self._providers[name]
        except KeyError:
            reason = self.unavailable.get(name, "not configured")
            raise ProviderError(f"Provider {name!r} cannot be used: {reason}", retryable=False) from None

    def usable(self, name: str) -> bool:
        return name in self._providers

    def market(self, name: str) -> MarketplaceProvider:
        try:
            return self.markets[name]
        except KeyError:
            raise NotFound(
                f"Unknown provider {name!r}; the providers are: {', '.join(sorted(self.markets))}", provider=name
            ) from None

    def names(self) -> list[str]:
        return sorted(self._providers)


def _simulator(settings: Settings, db: Database) -> SimulatorProvider:
    return SimulatorProvider(
        db if db.url == settings.simulator_database_url else Database(settings.simulator_database_url),
        SimulatorConfig(
            time_scale=settings.simulator_time_scale,
            seed=settings.simulator_seed,
            error_rate=settings.simulator_error_rate,
            latency_ms=settings.simulator_latency_ms,
            ghost_create_rate=settings.simulator_ghost_create_rate,
        ),
    )


def _libvirt(settings: Settings, db: Database) -> Provider:
    from cloudplane.providers.libvirt import LibvirtProvider

    return LibvirtProvider(
        settings.libvirt_uri,
        pool=settings.libvirt_pool,
        network=settings.libvirt_network,
        domain_type=settings.libvirt_domain_type,
        stop_timeout_s=settings.libvirt_stop_timeout_s,
    )


def _lxc(settings: Settings, db: Database) -> Provider:
    from cloudplane.providers.lxc import LxcProvider

    return LxcProvider.from_settings(settings)


def _proxmox(settings: Settings, db: Database) -> Provider:
    from cloudplane.providers.proxmox import ProxmoxProvider

    missing = [
        f"CLOUDPLANE_PROXMOX_{name.upper()}"
        for name in ("url", "token_id", "token_secret")
        if not getattr(settings, f"proxmox_{name}")
    ]
    if missing:
        raise ConfigurationError(f"the proxmox provider needs {', '.join(missing)}")
    assert settings.proxmox_url and settings.proxmox_token_id and settings.proxmox_token_secret
    return ProxmoxProvider(
        settings.proxmox_url,
        settings.proxmox_token_id,
        settings.proxmox_token_secret,
        node=settings.proxmox_node,
        templates=settings.proxmox_templates,
        default_template=settings.proxmox_template_vmid,
        storage=settings.proxmox_storage,
        full_clone=settings.proxmox_full_clone,
        verify_tls=(settings.proxmox_ca_file or True) if settings.proxmox_verify_tls else False,
        disk=settings.proxmox_disk,
        ipconfig0=settings.proxmox_ipconfig0,
        stop_timeout_s=settings.proxmox_stop_timeout_s,
        task_poll_s=settings.proxmox_task_poll_s,
    )


PROVIDER_FACTORIES: dict[str, Callable[[Settings, Database], Provider]] = {
    "simulator": _simulator,
    "libvirt": _libvirt,
    "lxc": _lxc,
    "proxmox": _proxmox,
}


def configured_providers(settings: Settings) -> set[str]:
    """The providers the locations run on; a name with no factory stops the start, naming the choices."""
    choices = ", ".join(sorted(PROVIDER_FACTORIES))
    if settings.default_provider not in PROVIDER_FACTORIES:
        raise ConfigurationError(
            f"CLOUDPLANE_DEFAULT_PROVIDER={settings.default_provider}: no such provider; the providers are: {choices}"
        )
    for location, name in settings.location_providers.items():
        if name not in PROVIDER_FACTORIES:
            raise ConfigurationError(
                f"CLOUDPLANE_LOCATION_PROVIDERS entry {location}={name}: no such provider; the providers are: {choices}"
            )
    return {settings.default_provider, *settings.location_providers.values()}


def build_registry(settings: Settings, db: Database) -> ProviderRegistry:
    """The simulator always (its store also holds the simulated marketplace, and servers made on it before their
    location moved elsewhere keep working), plus every provider a location runs on. A provider that cannot be
    built here (bindings missing, bad settings) does not stop the start: its locations take no new servers, and
    the reason is logged and kept in `unavailable`."""
    simulator = _simulator(settings, db)
    providers: dict[str, Provider] = {"simulator": simulator}
    unavailable: dict[str, str] = {}
    for name in sorted(configured_providers(settings) - {"simulator"}):
        try:
            providers[name] = PROVIDER_FACTORIES[name](settings, db)
        except Exception as error:  # noqa: BLE001 - any failure makes the provider unavailable, with its reason
            unavailable[name] = getattr(error, "message", None) or f"{type(error).__name__}: {error}"
            log.exception("provider %s cannot run here; its locations take no new servers", name)
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
    return ProviderRegistry(providers, markets, unavailable)

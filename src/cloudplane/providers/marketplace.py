"""The GPU marketplace contract: search offers, rent one, then drive the rented instance; dataclasses in and out."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Literal, Protocol

from cloudplane.providers.base import Features, MachineState

OfferSort = Literal["price", "reliability"]


class MarketFeature(StrEnum):
    """The calls a marketplace may lack (some GPU clouds cannot stop an instance, only destroy it). Searching,
    renting, reading and destroying make a marketplace, so they are not optional. Every marketplace declares each
    one; a rented instance's compute face refuses what its marketplace refuses."""

    START = "start"
    STOP = "stop"

    @property
    def phrase(self) -> str:
        """The feature as a verb phrase: "<subject> cannot <phrase>"."""
        return f"{self.value} instances"


@dataclass(frozen=True)
class Offer:
    """One machine (or slice of one) a marketplace offers for rent; `offer_id` is the provider's ask id."""

    provider: str
    offer_id: str
    machine_id: int | None
    name: str
    gpu_model: str
    gpu_count: int
    gpu_ram_gb: float
    cpu_count: int
    ram_gb: float
    storage_gb: float
    price_per_hour: float  # USD for the whole offer, all GPUs together
    region: str
    available: bool
    reliability: float  # 0-1, the provider's own measure of the host
    # Provider figures with no common meaning (compute_cap, score, dlperf ...), shown to users as they are.
    extra: dict[str, Any] = field(default_factory=dict, hash=False)


@dataclass(frozen=True)
class OfferQuery:
    """Filters for `search_offers`; every field is optional. Hashable, so it can key a cache."""

    gpu_model: str | None = None  # case-insensitive, whole words: "RTX 4090", "A100", "H100"
    min_gpu_count: int | None = None
    max_price: float | None = None  # USD per hour for the whole offer
    region: str | None = None
    available: bool | None = None  # True keeps only offers that can be rented now; otherwise no filter
    sort: OfferSort | None = None  # None: the provider's own order
    limit: int = 50


@dataclass(frozen=True)
class RentRequest:
    # Derived from the Operation id: a retried rent with the same token finds the instance already rented.
    token: str
    offer_id: str
    image: str
    label: str
    onstart_script: str | None = None
    ssh_key: str | None = None
    disk_gb: int = 20


@dataclass(frozen=True, kw_only=True)
class Instance:
    """A rented instance. `status_detail` is the provider's own status text; `state` is its meaning."""

    provider: str
    instance_id: str
    offer_id: str | None = None  # not every provider reports it after the rent
    machine_id: int | None = None
    state: MachineState
    status_detail: str
    label: str = ""
    gpu_model: str = ""
    gpu_count: int = 0
    cpu_count: int = 0
    ram_gb: float = 0.0
    storage_gb: float = 0.0
    price_per_hour: float = 0.0
    region: str = ""
    image: str = ""
    onstart_script: str | None = None
    ssh_host: str | None = None
    ssh_port: int | None = None
    public_ipaddr: str | None = None
    token: str | None = None


def gpu_model_matches(wanted: str, model: str) -> bool:
    """Case-insensitive match on whole words, so "A100" finds "A100 80GB" but "A10" does not."""

    def words(text: str) -> str:
        return " ".join(text.lower().replace("_", " ").split())

    return f" {words(wanted)} " in f" {words(model)} "


class MarketplaceProvider(Protocol):
    """A GPU marketplace. Each call may raise `ProviderError`; `retryable` says whether trying again may help."""

    name: str
    features: Features[MarketFeature]

    async def search_offers(self, query: OfferQuery) -> list[Offer]:
        """Offers matching every filter of `query`, in its sort order, at most `query.limit` of them. Read-only."""
        ...

    async def rent(self, request: RentRequest) -> Instance:
        """Rent the offer; billing starts now. Idempotent on `request.token`: the token is written into the
        instance's label (or metadata) and the call first asks `find_by_token`, so a retry returns the instance
        already rented instead of renting a second, paid one. A retry must never skip that look-up. Returns
        before the instance runs (state PROVISIONING); poll `get_instance`. An offer someone else took raises a
        non-retryable `ProviderError` with details reason="offer_unavailable"."""
        ...

    async def find_by_token(self, token: str) -> Instance | None:
        """The instance a rent with this token made, if it still exists."""
        ...

    async def get_instance(self, instance_id: str) -> Instance | None:
        """The instance's current state, or None if the provider has no such instance."""
        ...

    async def list_instances(self) -> list[Instance]:
        """Every instance this account rents (for reconciliation)."""
        ...

    async def start(self, instance_id: str) -> None:
        """Idempotent: starting a running or loading instance is a no-op. Unknown instance: `NotFound`."""
        ...

    async def stop(self, instance_id: str) -> None:
        """Idempotent: stopping a stopped instance is a no-op. Storage keeps billing while stopped."""
        ...

    async def destroy(self, instance_id: str) -> None:
        """Idempotent: destroying an unknown instance succeeds. Billing ends and the disk is gone."""
        ...

"""A rented GPU instance driven like any server: adapts a marketplace provider to the compute interface, so the
server workflows (start, stop, delete, status polling) work on it unchanged."""

from __future__ import annotations

import builtins
from collections.abc import AsyncIterator, Sequence

from cloudplane.providers.base import (
    SUPPORTED,
    Capabilities,
    CreateRequest,
    Feature,
    Features,
    FirewallRule,
    Machine,
    Metrics,
    RebuildRequest,
    SnapshotInfo,
    pacing_of,
    pages_of,
    refusal,
    refused,
)
from cloudplane.providers.marketplace import Instance, MarketFeature, MarketplaceProvider
from cloudplane.providers.terminal import Terminal

NO_SNAPSHOTS = "marketplace instances are containers on someone else's host: no disk snapshots"


class MarketplaceCompute:
    capabilities = Capabilities()

    def __init__(self, market: MarketplaceProvider) -> None:
        self.market = market
        self.name = market.name
        self.pacing = pacing_of(market)
        # Start and stop are the marketplace's own calls, so its answer is this face's answer.
        self.features = Features(
            Feature,
            {
                Feature.CREATE: refused("rent an offer instead (POST /api/v1/instances)"),
                Feature.START: market.features[MarketFeature.START],
                Feature.STOP: market.features[MarketFeature.STOP],
                Feature.REBOOT: refused("the marketplace offers stop and start, not reboot"),
                Feature.DELETE: SUPPORTED,
                Feature.SNAPSHOT: refused(NO_SNAPSHOTS),
                Feature.RESTORE: refused(NO_SNAPSHOTS),
                Feature.DELETE_SNAPSHOT: refused(NO_SNAPSHOTS),
                Feature.METRICS: refused("the marketplace reports no metrics"),
                Feature.REBUILD: refused("a rented instance keeps the image it was rented with: rent another"),
                Feature.RESIZE: refused("a rented instance is the size of its offer: rent a bigger offer"),
                Feature.SUSPEND: refused("the marketplace offers stop and start, not suspend"),
                Feature.RESUME: refused("the marketplace offers stop and start, not suspend"),
                Feature.CONSOLE: refused(f"not implemented yet on {market.name} instances"),
                Feature.FIREWALL: refused(f"a {market.name} instance is filtered by its host, not by Cloudplane"),
                Feature.EXTRA_IPS: refused(f"a {market.name} instance has the addresses of the host it is rented on"),
                Feature.RESET_PASSWORD: refused(
                    f"a {market.name} instance is reached with the SSH key it was rented with; it has no root password"
                ),
            },
        )

    @staticmethod
    def machine(instance: Instance) -> Machine:
        return Machine(
            ref=instance.instance_id,
            state=instance.state,
            hostname=instance.label,
            public_ipv4=instance.public_ipaddr,
            token=instance.token,
        )

    async def get(self, ref: str) -> Machine | None:
        instance = await self.market.get_instance(ref)
        return None if instance is None else self.machine(instance)

    async def find_by_token(self, token: str) -> Machine | None:
        instance = await self.market.find_by_token(token)
        return None if instance is None else self.machine(instance)

    async def list(self) -> list[Machine]:
        return [self.machine(i) for i in await self.market.list_instances()]

    def list_pages(self, size: int) -> AsyncIterator[builtins.list[Machine]]:
        """A marketplace lists an account's rentals in one reply."""
        return pages_of(self.list, size)

    async def get_many(self, refs: Sequence[str]) -> builtins.list[Machine]:
        """One listing, filtered: a marketplace has no call for several instances, and one call per instance would
        be a request per server."""
        wanted = set(refs)
        return [machine for machine in await self.list() if machine.ref in wanted]

    async def start(self, ref: str) -> None:
        # A marketplace that refuses start refuses it itself, with the reason this face declares.
        await self.market.start(ref)

    async def stop(self, ref: str) -> None:
        await self.market.stop(ref)

    async def delete(self, ref: str) -> None:
        await self.market.destroy(ref)

    async def create(self, request: CreateRequest) -> Machine:
        raise refusal(self, Feature.CREATE)

    async def reboot(self, ref: str) -> None:
        raise refusal(self, Feature.REBOOT)

    async def snapshot(self, ref: str, token: str) -> SnapshotInfo:
        raise refusal(self, Feature.SNAPSHOT)

    async def delete_snapshot(self, snapshot_ref: str) -> None:
        raise refusal(self, Feature.DELETE_SNAPSHOT)

    async def restore(self, ref: str, snapshot_ref: str) -> None:
        raise refusal(self, Feature.RESTORE)

    async def metrics(self, ref: str) -> Metrics:
        raise refusal(self, Feature.METRICS)

    async def rebuild(self, ref: str, request: RebuildRequest) -> None:
        raise refusal(self, Feature.REBUILD)

    async def suspend(self, ref: str) -> None:
        raise refusal(self, Feature.SUSPEND)

    async def resume(self, ref: str) -> None:
        raise refusal(self, Feature.RESUME)

    async def console(self, ref: str) -> Terminal:
        raise refusal(self, Feature.CONSOLE)

    async def set_firewall(self, ref: str, rules: Sequence[FirewallRule]) -> None:
        raise refusal(self, Feature.FIREWALL)

    async def add_address(self, ref: str, address: str) -> None:
        raise refusal(self, Feature.EXTRA_IPS)

    async def set_root_password(self, ref: str, password_hash: str) -> None:
        raise refusal(self, Feature.RESET_PASSWORD)

"""A rented GPU instance driven like any server: adapts a marketplace provider to the compute interface, so the
server workflows (start, stop, delete, status polling) work on it unchanged."""

from __future__ import annotations

from cloudplane.domain.errors import ProviderError
from cloudplane.providers.base import Capabilities, CreateRequest, Machine, Metrics, SnapshotInfo, pacing_of
from cloudplane.providers.marketplace import Instance, MarketplaceProvider

NO_SNAPSHOTS = "marketplace instances are containers on someone else's host: no disk snapshots"


class MarketplaceCompute:
    capabilities = Capabilities(
        unsupported={
            "create": "rent an offer instead (POST /api/v1/instances)",
            "reboot": "the marketplace offers stop and start, not reboot",
            "snapshot": NO_SNAPSHOTS,
            "restore": NO_SNAPSHOTS,
            "metrics": "the marketplace reports no metrics",
        }
    )

    def __init__(self, market: MarketplaceProvider) -> None:
        self.market = market
        self.name = market.name
        self.pacing = pacing_of(market)

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

    async def start(self, ref: str) -> None:
        await self.market.start(ref)

    async def stop(self, ref: str) -> None:
        await self.market.stop(ref)

    async def delete(self, ref: str) -> None:
        await self.market.destroy(ref)

    async def _unsupported(self, operation: str) -> None:
        raise ProviderError(self.capabilities.unsupported[operation], retryable=False)

    async def create(self, request: CreateRequest) -> Machine:
        await self._unsupported("create")
        raise AssertionError

    async def reboot(self, ref: str) -> None:
        await self._unsupported("reboot")

    async def snapshot(self, ref: str, token: str) -> SnapshotInfo:
        await self._unsupported("snapshot")
        raise AssertionError

    async def delete_snapshot(self, snapshot_ref: str) -> None:
        await self._unsupported("snapshot")

    async def restore(self, ref: str, snapshot_ref: str) -> None:
        await self._unsupported("restore")

    async def metrics(self, ref: str) -> Metrics:
        await self._unsupported("metrics")
        raise AssertionError

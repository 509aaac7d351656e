"""The provider contract: a few async calls taking and returning dataclasses, capabilities declared up front."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol


class MachineState(StrEnum):
    """Provider-neutral machine states; each provider maps its own states onto these in one table."""

    PROVISIONING = "provisioning"
    RUNNING = "running"
    STARTING = "starting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    REBOOTING = "rebooting"
    RESTORING = "restoring"
    ERROR = "error"
    DELETED = "deleted"


TRANSITIONAL_STATES = frozenset(
    {
        MachineState.PROVISIONING,
        MachineState.STARTING,
        MachineState.STOPPING,
        MachineState.REBOOTING,
        MachineState.RESTORING,
    }
)


def token_hash(token: str) -> str:
    """16 hex digits naming what a request token made (a machine, a snapshot) at a provider: the same on every
    process, and a hash, not a prefix, because tokens derived from operation ids may share long prefixes."""
    return hashlib.sha256(token.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class CreateRequest:
    # Derived from the Operation id: a retried create with the same token returns the machine already made.
    token: str
    name: str
    hostname: str
    cpu: int
    ram_mb: int
    disk_gb: int
    image: str
    location: str
    ssh_public_keys: tuple[str, ...] = ()
    root_password_hash: str | None = None


@dataclass(frozen=True)
class Machine:
    ref: str
    state: MachineState
    hostname: str
    public_ipv4: str | None = None
    private_ipv4: str | None = None
    token: str | None = None


@dataclass(frozen=True)
class SnapshotInfo:
    ref: str
    machine_ref: str
    size_gb: int


@dataclass(frozen=True)
class Metrics:
    cpu_percent: float
    memory_used_mb: int
    disk_read_bytes: int
    disk_write_bytes: int
    net_rx_bytes: int
    net_tx_bytes: int


@dataclass(frozen=True)
class ImageInfo:
    """How a provider describes an image it has (one built or imported on its host), for the catalog."""

    name: str
    distribution: str
    version: str


@dataclass(frozen=True)
class Capabilities:
    """What a provider can do; anything missing is listed in `unsupported` with the reason.

    `images` and the maxima say what it can make: the catalog offers, and `create_server` accepts, only the plans
    and images the provider of a location serves.
    """

    unsupported: dict[str, str] = field(default_factory=dict)
    # Catalog image slugs the provider can boot; None: any image of the catalog.
    images: frozenset[str] | None = None
    # What the provider knows of some of those images; the catalog names a new image after it.
    image_info: dict[str, ImageInfo] = field(default_factory=dict)
    # The largest machine it can make (a host's cores and memory); None: no limit.
    max_cpu: int | None = None
    max_ram_mb: int | None = None

    def supports(self, operation: str) -> bool:
        return operation not in self.unsupported

    def boots(self, image: str) -> bool:
        return self.images is None or image in self.images

    def fits(self, cpu: int, ram_mb: int) -> bool:
        return (self.max_cpu is None or cpu <= self.max_cpu) and (self.max_ram_mb is None or ram_mb <= self.max_ram_mb)


@dataclass(frozen=True)
class Pacing:
    """How often a workflow polls the provider for a machine's state, and how long it waits before giving up."""

    poll_interval_s: float = 1.0
    timeout_s: float = 900.0

    @classmethod
    def scaled(cls, time_scale: float) -> Pacing:
        """A simulation's pace: its delays shrink with `time_scale`, so do the waits (0 = as fast as possible)."""
        return cls(poll_interval_s=min(2.0, max(0.02, time_scale)), timeout_s=900.0 * max(time_scale, 0.05))


DEFAULT_PACING = Pacing()


def pacing_of(provider: object) -> Pacing:
    return getattr(provider, "pacing", DEFAULT_PACING)


class Provider(Protocol):
    name: str
    capabilities: Capabilities
    # Optional: providers without it are polled at DEFAULT_PACING.
    # pacing: Pacing

    async def create(self, request: CreateRequest) -> Machine:
        """Make a machine. Idempotent on `request.token`: a retry returns the existing machine, never a second.
        May return before the machine runs (state PROVISIONING); poll `get`. On a failure part way the provider
        removes what it made, except when the failure is only in the reply (then the retry finds it)."""
        ...

    async def get(self, ref: str) -> Machine | None:
        """The machine's current state, or None if the provider has no such machine."""
        ...

    async def find_by_token(self, token: str) -> Machine | None:
        """The machine a create with this token made, if any; used to clean up after a failed create."""
        ...

    async def list(self) -> list[Machine]:
        """Every machine this provider holds for Cloudplane (for reconciliation)."""
        ...

    async def start(self, ref: str) -> None:
        """Idempotent: starting a running machine is a no-op."""
        ...

    async def stop(self, ref: str) -> None:
        """Idempotent: stopping a stopped machine is a no-op."""
        ...

    async def reboot(self, ref: str) -> None: ...

    async def delete(self, ref: str) -> None:
        """Idempotent: deleting an unknown machine succeeds. Deletes the machine's snapshots with it."""
        ...

    async def snapshot(self, ref: str, token: str) -> SnapshotInfo:
        """Idempotent on `token`, like create."""
        ...

    async def delete_snapshot(self, snapshot_ref: str) -> None:
        """Idempotent: an unknown snapshot is already gone."""
        ...

    async def restore(self, ref: str, snapshot_ref: str) -> None:
        """Roll the (stopped) machine's disk back to the snapshot; the machine stays stopped."""
        ...

    async def metrics(self, ref: str) -> Metrics: ...

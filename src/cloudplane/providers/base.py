"""The provider contract: a few async calls taking and returning dataclasses, features declared up front."""

from __future__ import annotations

import builtins
import hashlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from cloudplane.domain.errors import InvalidState, ProviderError


class MachineState(StrEnum):
    """Provider-neutral machine states; each provider maps its own states onto these in one table."""

    PROVISIONING = "provisioning"
    RUNNING = "running"
    STARTING = "starting"
    STOPPING = "stopping"
    STOPPED = "stopped"
    # Frozen in memory by `suspend` (LXC's freezer, a paused libvirt domain): it runs again where it stopped once
    # resumed.
    SUSPENDED = "suspended"
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
class RebuildRequest:
    """What a rebuild puts on a machine's fresh disk; the machine keeps its ref, hostname, address, size and
    snapshots."""

    # Derived from the Operation id, like a create's: names what the rebuild makes at the provider.
    token: str
    image: str
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


if TYPE_CHECKING:
    from cloudplane.providers.terminal import Terminal


@dataclass(frozen=True)
class Metrics:
    """A machine's counters now. Bytes are totals since the machine last started (they restart from 0 then);
    `cpu_percent` is of the machine's own CPUs since the driver's previous reading of it (0.0 on the first)."""

    cpu_percent: float
    memory_used_mb: int
    disk_read_bytes: int
    disk_write_bytes: int
    net_rx_bytes: int
    net_tx_bytes: int
    # What the machine's disk holds; None: the driver cannot tell.
    disk_used_mb: int | None = None
    # Seconds since the machine last started; None: the driver cannot tell.
    uptime_s: int | None = None


@dataclass(frozen=True)
class FirewallRule:
    """One inbound rule: traffic from `source` (an IPv4 CIDR) of `protocol` ("tcp", "udp" or "icmp") to ports
    `port_from`..`port_to` (both None: every port; always None for icmp) is accepted or dropped (`action`)."""

    action: str
    protocol: str
    source: str = "0.0.0.0/0"
    port_from: int | None = None
    port_to: int | None = None


@dataclass(frozen=True)
class ImageInfo:
    """How a provider describes an image it has (one built or imported on its host), for the catalog."""

    name: str
    distribution: str
    version: str


class Feature(StrEnum):
    """What a compute driver may be asked to do beyond get/list/find_by_token. Every driver declares each one."""

    CREATE = "create"
    START = "start"
    STOP = "stop"
    REBOOT = "reboot"
    DELETE = "delete"
    SNAPSHOT = "snapshot"
    RESTORE = "restore"
    DELETE_SNAPSHOT = "delete_snapshot"
    METRICS = "metrics"
    SUSPEND = "suspend"
    RESUME = "resume"
    # Filter the machine's inbound traffic by the server's firewall rules (`set_firewall`).
    FIREWALL = "firewall"
    # Give the machine an extra IPv4 address besides its own (`add_address`).
    EXTRA_IPS = "extra_ips"
    # Set the root password of the running machine's system (`set_root_password`).
    RESET_PASSWORD = "reset_password"
    REBUILD = "rebuild"
    CONSOLE = "console"
    # Declared ahead of its call: every driver refuses it until an issue adds the call and implements it.
    RESIZE = "resize"

    @property
    def phrase(self) -> str:
        """The feature as a verb phrase: "<subject> cannot <phrase>"."""
        return _PHRASES.get(self, self.value)


_PHRASES = {
    Feature.DELETE_SNAPSHOT: "delete snapshots",
    Feature.METRICS: "report metrics",
    Feature.CONSOLE: "open a console",
    Feature.FIREWALL: "filter traffic with firewall rules",
    Feature.EXTRA_IPS: "attach extra IP addresses",
    Feature.RESET_PASSWORD: "reset the root password",
}

# The server state machine's actions (domain/states.py ACTIONS) and the feature each needs from the provider.
ACTION_FEATURES: Mapping[str, Feature] = {
    "start": Feature.START,
    "stop": Feature.STOP,
    "reboot": Feature.REBOOT,
    "delete": Feature.DELETE,
    "snapshot": Feature.SNAPSHOT,
    "restore": Feature.RESTORE,
    "rebuild": Feature.REBUILD,
    "reset_password": Feature.RESET_PASSWORD,
}


@dataclass(frozen=True)
class Support:
    """A driver's answer for one feature: supported (no reason), or refused with a reason a user can act on."""

    reason: str | None = None

    @property
    def supported(self) -> bool:
        return self.reason is None


SUPPORTED = Support()


def refused(reason: str) -> Support:
    if not reason.strip():
        raise ValueError("a refused feature needs a reason a user can act on")
    return Support(reason.strip())


def not_implemented_yet(driver: str) -> Support:
    return refused(f"not implemented yet on {driver}")


F = TypeVar("F", bound=StrEnum)


class Features(Mapping[F, Support], Generic[F]):
    """Every feature of one interface (`kind`), each declared supported or refused. Built in the driver's class
    body or constructor, so a driver that leaves a feature out fails at import or construction: nothing is
    supported by omission."""

    def __init__(self, kind: type[F], declared: Mapping[F, Support]) -> None:
        missing = [f.value for f in kind if f not in declared]
        foreign = [str(f) for f in declared if not isinstance(f, kind)]
        problems = [f"undeclared: {', '.join(missing)}"] if missing else []
        problems += [f"not a {kind.__name__}: {', '.join(foreign)}"] if foreign else []
        if problems:
            raise TypeError(
                f"a {kind.__name__} table must declare every feature, each SUPPORTED or refused(reason): "
                + "; ".join(problems)
            )
        self.kind = kind
        self._table = {f: declared[f] for f in kind}

    def __getitem__(self, feature: F) -> Support:
        return self._table[feature]

    def __iter__(self) -> Iterator[F]:
        return iter(self._table)

    def __len__(self) -> int:
        return len(self._table)

    def __repr__(self) -> str:
        return f"Features({self.kind.__name__}, {self._table!r})"

    def supports(self, feature: F) -> bool:
        return self._table[feature].supported

    def refusals(self) -> dict[F, str]:
        """The refused features and their reasons."""
        return {f: s.reason for f, s in self._table.items() if s.reason is not None}


class Declares(Protocol[F]):
    """A driver of any interface: its name and its feature table."""

    name: str

    @property
    def features(self) -> Features[F]: ...


def check_declared(driver: object, kind: type[StrEnum]) -> None:
    """Refuse a driver built without a complete `kind` feature table (a registry checks each it is given)."""
    features = getattr(driver, "features", None)
    if not isinstance(features, Features) or features.kind is not kind:
        raise TypeError(
            f"driver {getattr(driver, 'name', type(driver).__name__)!r} declares no {kind.__name__} table: "
            f"give it features = Features({kind.__name__}, {{...}}) naming every feature"
        )


def require_feature(driver: Declares[F], feature: F, *, subject: str, **details: Any) -> None:
    """The one check before dispatching a feature: InvalidState, carrying the driver's reason, if it refuses.

    `subject` is what the user asked about ("vast_ai servers"), so the error reads "<subject> cannot <feature>:
    <reason>"; `details` go into the error with the provider and the feature."""
    # A plain name ("snapshot") becomes its member, and a name the interface does not have fails loudly here.
    feature = driver.features.kind(feature)
    support = driver.features[feature]
    if support.reason is not None:
        phrase = getattr(feature, "phrase", feature.value)
        raise InvalidState(
            f"{subject} cannot {phrase}: {support.reason}", **details, provider=driver.name, feature=feature.value
        )


def refusal(driver: Declares[F], feature: F) -> ProviderError:
    """What a driver's call of a feature it refuses raises: its declared reason, not worth a retry."""
    reason = driver.features[feature].reason
    if reason is None:
        raise AssertionError(f"{driver.name} supports {feature.value}: it cannot refuse it")
    return ProviderError(reason, retryable=False, provider=driver.name, feature=feature.value)


@dataclass(frozen=True)
class Capabilities:
    """What a provider can make, for the catalog: what it can do is its `features`.

    `images` and the maxima say what it can make: the catalog offers, and `create_server` accepts, only the plans
    and images the provider of a location serves.
    """

    # Catalog image slugs the provider can boot; None: any image of the catalog.
    images: frozenset[str] | None = None
    # What the provider knows of some of those images; the catalog names a new image after it.
    image_info: dict[str, ImageInfo] = field(default_factory=dict)
    # The largest machine it can make (a host's cores and memory); None: no limit.
    max_cpu: int | None = None
    max_ram_mb: int | None = None

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


async def pages_of(listing: Callable[[], Awaitable[list[Machine]]], size: int) -> AsyncIterator[list[Machine]]:
    """`Provider.list_pages` for a provider that answers with its whole inventory at once (a host's domains, an
    account's rentals): that answer, `size` machines at a time."""
    machines = await listing()
    for start in range(0, len(machines), size):
        yield machines[start : start + size]


def pacing_of(provider: object) -> Pacing:
    return getattr(provider, "pacing", DEFAULT_PACING)


class Provider(Protocol):
    """A compute driver. Calls of a feature it refuses raise a non-retryable ProviderError with the declared
    reason; callers check `require_feature` first, so a user learns the reason before anything changes."""

    name: str
    features: Features[Feature]

    @property
    def capabilities(self) -> Capabilities:
        """What it can make, for the catalog (a host's images and size: may be read afresh each time)."""
        ...

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
        """Every machine this provider holds for Cloudplane, at once: for a few machines; a fleet is walked with
        `list_pages`."""
        ...

    def list_pages(self, size: int) -> AsyncIterator[builtins.list[Machine]]:
        """The machines `list` returns, at most `size` at a time, so that a caller walking a large inventory (the
        reconciler looking for machines no server owns) holds one page, not the fleet. Read-only. A machine that
        exists from the first page to the last is in exactly one page; one made or removed meanwhile may or may
        not be. The page being read must not block the event loop, however many machines there are."""
        ...

    async def get_many(self, refs: Sequence[str]) -> builtins.list[Machine]:
        """The machines among `refs`, in any order, each at most once: what `get` would answer for each ref, with
        the refs it would answer None for (no such machine, not one of Cloudplane's, a ref it never issues) left
        out, never raised. Read-only and in as few round trips as the provider allows: the reconciler asks for a
        batch of servers' machines at a time."""
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

    async def rebuild(self, ref: str, request: RebuildRequest) -> None:
        """Give the (stopped) machine a fresh disk made from `request.image` as a create would, with the request's
        keys and root password hash; the machine keeps its ref, hostname, address, size and snapshots, and stays
        stopped. A machine in any other state is refused, and so is an image the provider lacks, both before
        anything changes (non-retryable). A failure part way leaves the old disk or the new one, never neither.
        A retry re-images again: harmless while the machine stays stopped (nothing ran on the fresh disk), and the
        rebuild workflow never calls it once it has started the machine again."""
        ...

    async def metrics(self, ref: str) -> Metrics: ...

    async def console(self, ref: str) -> Terminal:
        """A terminal on the running machine (a shell, or its serial console), for one session: the caller closes
        it. A machine that is not running is refused (non-retryable)."""
        ...

    async def suspend(self, ref: str) -> None:
        """Freeze a running machine in memory (state SUSPENDED): its processes stop where they are, nothing is
        lost. Idempotent: suspending a suspended machine is a no-op. A machine in any other state is refused
        (non-retryable): a stopped machine needs no freezing."""
        ...

    async def set_firewall(self, ref: str, rules: Sequence[FirewallRule]) -> None:
        """Replace the machine's inbound filter, at once and as a whole. No rules: every inbound packet passes. With
        rules: an inbound packet (to any of the machine's addresses) is decided by the first rule it matches, and
        dropped when it matches none, except replies to connections the machine opened itself. Idempotent: applying
        the same rules again changes nothing. The rules stay until replaced or the machine is deleted, across its
        restarts."""
        ...

    async def add_address(self, ref: str, address: str) -> None:
        """Give the machine `address` (IPv4, from its location's pool) besides its own, running or stopped: at once
        if it runs, and kept across its restarts, restores and rebuilds. Its firewall rules cover the address too.
        Idempotent: adding an address it has changes nothing. Refused (non-retryable) for an address the provider
        cannot route to the machine. The address goes with the machine when it is deleted."""
        ...

    async def set_root_password(self, ref: str, password_hash: str) -> None:
        """Give root of the running machine's system this password (`password_hash`: SHA-512 crypt, as /etc/shadow
        holds it), at once and for good: kept across restarts, gone with a rebuild or a restore of an older disk.
        Idempotent: setting the same hash again changes nothing. A machine that is not running is refused
        (non-retryable): the password is set inside its system, which must be up."""
        ...

    async def resume(self, ref: str) -> None:
        """Thaw a suspended machine: it runs again (RUNNING) from where it was frozen. Idempotent: resuming a
        running machine is a no-op; a machine in any other state is refused (non-retryable)."""
        ...

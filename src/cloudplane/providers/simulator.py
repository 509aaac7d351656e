"""The simulator: a cloud that runs inside Cloudplane, with realistic timings, seeded faults and durable state.

Its inventory lives in tables of its own (`sim_*`) so that, like a real cloud, it outlives a crash of the
control plane: the crash test checks that no machine is doubled there. Timings are real-cloud-like seconds
multiplied by `time_scale` (0 in tests), on an injectable clock (`providers/clock.py`) that tests move by
hand. With the same seed the same faults hit the same calls.
"""

from __future__ import annotations

import asyncio
import builtins
import ipaddress
import json
import random
import socket
import threading
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import (
    Column,
    DateTime,
    Integer,
    MetaData,
    Row,
    Select,
    String,
    Table,
    Text,
    bindparam,
    delete,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from cloudplane.db.engine import Database
from cloudplane.domain.errors import NotFound, ProviderError
from cloudplane.domain.times import assume_utc
from cloudplane.providers.base import (
    SUPPORTED,
    TRANSITIONAL_STATES,
    Capabilities,
    CreateRequest,
    Feature,
    Features,
    FirewallRule,
    Machine,
    MachineState,
    Metrics,
    Pacing,
    RebuildRequest,
    SnapshotInfo,
    not_implemented_yet,
)
from cloudplane.providers.clock import SYSTEM_CLOCK, Clock
from cloudplane.providers.terminal import SimulatedTerminal, Terminal

metadata = MetaData()

sim_machines = Table(
    "sim_machines",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token", String(100), unique=True, nullable=False),
    Column("hostname", String(253), nullable=False),
    Column("state", String(20), nullable=False),
    Column("target_state", String(20)),
    Column("ready_at", DateTime(timezone=True)),
    Column("cpu", Integer, nullable=False),
    Column("ram_mb", Integer, nullable=False),
    Column("disk_gb", Integer, nullable=False),
    Column("image", String(64), nullable=False),
    Column("location", String(64), nullable=False),
    Column("ssh_keys", Text, nullable=False, default=""),
    Column("disk_generation", Integer, nullable=False, default=0),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

sim_snapshots = Table(
    "sim_snapshots",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("token", String(100), unique=True, nullable=False),
    Column("machine_id", Integer, nullable=False),
    Column("size_gb", Integer, nullable=False),
    Column("disk_generation", Integer, nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False),
)

# Each machine's inbound rules as its last `set_firewall` gave them (a JSON list); no row: no rules.
sim_firewalls = Table(
    "sim_firewalls",
    metadata,
    Column("machine_id", Integer, primary_key=True),
    Column("rules", Text, nullable=False),
)

# Each machine's extra addresses, as `add_address` gave them.
sim_addresses = Table(
    "sim_addresses",
    metadata,
    Column("machine_id", Integer, primary_key=True),
    Column("address", String(15), primary_key=True),
)

# Each machine's root password hash, as `set_root_password` last gave it (one given at create or rebuild is not kept:
# nothing logs in to a simulated machine, and a burst of creates should not pay for a row it never reads).
sim_passwords = Table(
    "sim_passwords",
    metadata,
    Column("machine_id", Integer, primary_key=True),
    Column("password_hash", String(255), nullable=False),
)

# Prebuilt statements: a burst of creates runs these hundreds of times a second.
_BY_ID = select(sim_machines).where(sim_machines.c.id == bindparam("b_id"))
_BY_TOKEN = select(sim_machines).where(sim_machines.c.token == bindparam("b_token"))
_INSERT = insert(sim_machines).returning(*sim_machines.c)
_SETTLE = (
    update(sim_machines)
    .where(sim_machines.c.id == bindparam("b_id"), sim_machines.c.state == bindparam("b_state"))
    .values(state=sim_machines.c.target_state, target_state=None, ready_at=None)
    .returning(*sim_machines.c)
)
_CHANGE = update(sim_machines).where(sim_machines.c.id == bindparam("b_id"))  # SET from the parameters' keys
_SNAPSHOT_BY_TOKEN = select(sim_snapshots).where(sim_snapshots.c.token == bindparam("b_token"))
_SNAPSHOT_BY_ID = select(sim_snapshots).where(sim_snapshots.c.id == bindparam("b_id"))
# What a machine's description and `_settle` need, and no more: lists read a fleet of them.
_LISTED = select(
    sim_machines.c.id,
    sim_machines.c.token,
    sim_machines.c.hostname,
    sim_machines.c.state,
    sim_machines.c.target_state,
    sim_machines.c.ready_at,
)

# Seconds a real cloud takes for each transition, before scaling.
TIMINGS = {
    MachineState.PROVISIONING: 6.0,
    MachineState.STARTING: 3.0,
    MachineState.STOPPING: 2.0,
    MachineState.REBOOTING: 4.0,
    MachineState.RESTORING: 3.0,
    "snapshot": 2.0,
}
PUBLIC_NET = ipaddress.IPv4Network("198.18.0.0/15")  # RFC 2544 benchmarking range: never routed
PRIVATE_NET = ipaddress.IPv4Network("10.0.0.0/8")


def address(network: ipaddress.IPv4Network, offset: int) -> str:
    """The network's address at `offset`, wrapping round past its last one (a cloud hands addresses out again).
    Plain integer work: a reconciler pass formats two per machine of the fleet."""
    return socket.inet_ntoa((int(network.network_address) + offset % network.num_addresses).to_bytes(4, "big"))


@dataclass
class SimulatorConfig:
    time_scale: float = 1.0
    seed: int = 42
    error_rate: float = 0.0
    latency_ms: float = 0.0
    ghost_create_rate: float = 0.0
    # Probability that a new machine fails to boot and ends in the error state.
    boot_failure_rate: float = 0.0


class SimulatorProvider:
    """An in-process cloud. Named for what it is: nothing here touches real compute."""

    name = "simulator"
    capabilities = Capabilities()
    features = Features(
        Feature,
        {
            Feature.CREATE: SUPPORTED,
            Feature.START: SUPPORTED,
            Feature.STOP: SUPPORTED,
            Feature.REBOOT: SUPPORTED,
            Feature.DELETE: SUPPORTED,
            Feature.SNAPSHOT: SUPPORTED,
            Feature.RESTORE: SUPPORTED,
            Feature.DELETE_SNAPSHOT: SUPPORTED,
            Feature.METRICS: SUPPORTED,
            Feature.REBUILD: SUPPORTED,
            Feature.RESIZE: not_implemented_yet("the simulator"),
            Feature.SUSPEND: SUPPORTED,
            Feature.RESUME: SUPPORTED,
            Feature.CONSOLE: SUPPORTED,
            Feature.FIREWALL: SUPPORTED,
            Feature.EXTRA_IPS: SUPPORTED,
            Feature.RESET_PASSWORD: SUPPORTED,
        },
    )

    def __init__(self, db: Database, config: SimulatorConfig | None = None, *, clock: Clock | None = None) -> None:
        self.db = db
        self.config = config or SimulatorConfig()
        self.clock = clock or SYSTEM_CLOCK
        self._rng = random.Random(self.config.seed)
        self._rng_lock = threading.Lock()
        metadata.create_all(db.write_engine)

    @property
    def pacing(self) -> Pacing:
        return Pacing.scaled(self.config.time_scale)

    def _roll(self) -> float:
        with self._rng_lock:
            return self._rng.random()

    async def _call(self, operation: str) -> None:
        """Latency and injected faults, the same for every call."""
        if self.config.latency_ms:
            await self.clock.sleep(self.config.latency_ms / 1000 * (0.5 + self._roll()))
        if self.config.error_rate and self._roll() < self.config.error_rate:
            raise ProviderError(f"Simulated provider error during {operation}", retryable=True)

    def _delay(self, what: str | MachineState) -> timedelta:
        return timedelta(seconds=TIMINGS[what] * self.config.time_scale)

    @staticmethod
    def _machine(row: Row[Any]) -> Machine:
        offset = row.id
        return Machine(
            ref=f"sim-{row.id}",
            state=MachineState(row.state),
            hostname=row.hostname,
            public_ipv4=address(PUBLIC_NET, offset),
            private_ipv4=address(PRIVATE_NET, offset),
            token=row.token,
        )

    @staticmethod
    def _id_or_none(ref: str) -> int | None:
        return int(ref[4:]) if ref.startswith("sim-") and ref[4:].isascii() and ref[4:].isdigit() else None

    @classmethod
    def _id(cls, ref: str) -> int:
        machine_id = cls._id_or_none(ref)
        if machine_id is None:
            raise NotFound(f"No simulated machine {ref}", ref=ref)
        return machine_id

    def _settle(self, row: Row[Any] | None) -> Row[Any] | None:
        """Finish a transition whose time has come; the clock, not a background task, drives the simulator."""
        if row is None or MachineState(row.state) not in TRANSITIONAL_STATES:
            return row
        ready_at = assume_utc(row.ready_at)
        if ready_at is not None and ready_at > self.clock.now():
            return row
        with self.db.begin() as conn:
            settled = conn.execute(_SETTLE, {"b_id": row.id, "b_state": row.state}).first()
            # None: another caller settled it first (or it was deleted); read what it is now.
            return settled if settled is not None else conn.execute(_BY_ID, {"b_id": row.id}).first()

    def _row(self, ref: str) -> Row[Any] | None:
        with self.db.connect() as conn:
            row = conn.execute(_BY_ID, {"b_id": self._id(ref)}).first()
        return self._settle(row)

    def _require(self, ref: str) -> Row[Any]:
        row = self._row(ref)
        if row is None:
            raise NotFound(f"No simulated machine {ref}", ref=ref)
        return row

    def _transition(self, ref: str, via: MachineState, to: MachineState, *, allowed: set[MachineState]) -> None:
        row = self._require(ref)
        state = MachineState(row.state)
        if state in (via, to):
            return  # already on its way or there: the call is idempotent
        if state not in allowed:
            raise ProviderError(f"Cannot go to {to} from {state}", retryable=state in TRANSITIONAL_STATES)
        self._begin(row.id, via, to)

    def _begin(self, machine_id: int, via: MachineState, to: MachineState, **changes: object) -> None:
        """Enter `via` now; `_settle` moves the machine on to `to` once the transition's time has passed (at once,
        with no time to pass)."""
        delay = self._delay(via)
        state = {"state": via, "target_state": to, "ready_at": self.clock.now() + delay} if delay else {"state": to}
        with self.db.begin() as conn:
            conn.execute(_CHANGE, {"b_id": machine_id, **state, **changes})

    async def create(self, request: CreateRequest) -> Machine:
        await self._call("create")
        machine, made = await self.db.run(self._create, request)
        if made and self.config.ghost_create_rate and self._roll() < self.config.ghost_create_rate:
            raise ProviderError("Simulated timeout: the create may or may not have happened", retryable=True)
        return machine

    def _create(self, request: CreateRequest) -> tuple[Machine, bool]:
        """The machine of this request's token, and whether this call made it (a retry finds it made: the insert
        meets the token's unique index). One statement, its own transaction: a first call, the common case, is
        one round trip on PostgreSQL."""
        boots = not (self.config.boot_failure_rate and self._roll() < self.config.boot_failure_rate)
        target = MachineState.RUNNING if boots else MachineState.ERROR
        now, delay = self.clock.now(), self._delay(MachineState.PROVISIONING)
        try:
            (row,) = self.db.write_alone(
                _INSERT,
                {
                    "token": request.token,
                    "hostname": request.hostname,
                    # With no time to pass (time scale 0) the machine is where provisioning would take it.
                    "state": MachineState.PROVISIONING if delay else target,
                    "target_state": target if delay else None,
                    "ready_at": now + delay if delay else None,
                    "cpu": request.cpu,
                    "ram_mb": request.ram_mb,
                    "disk_gb": request.disk_gb,
                    "image": request.image,
                    "location": request.location,
                    "ssh_keys": "\n".join(request.ssh_public_keys),
                    "disk_generation": 0,
                    "created_at": now,
                },
            )
            return self._machine(row), True
        except IntegrityError:  # made already, by an earlier call or a concurrent retry: return its machine
            found = self._find_by_token(request.token)
            assert found is not None
            return found, False

    async def find_by_token(self, token: str) -> Machine | None:
        return await self.db.run(self._find_by_token, token)

    def _find_by_token(self, token: str) -> Machine | None:
        with self.db.connect() as conn:
            row = conn.execute(_BY_TOKEN, {"b_token": token}).first()
        row = self._settle(row)
        return None if row is None else self._machine(row)

    async def get(self, ref: str) -> Machine | None:
        await self._call("get")
        # One row by its key: on SQLite inline (microseconds, which a thread hop would multiply; workflows poll
        # with it), on PostgreSQL off the loop.
        machine_id = self._id_or_none(ref)
        if machine_id is None:
            return None
        return await self.db.run(self._get, machine_id)

    def _get(self, machine_id: int) -> Machine | None:
        with self.db.connect() as conn:
            row = conn.execute(_BY_ID, {"b_id": machine_id}).first()
        row = self._settle(row)
        return None if row is None else self._machine(row)

    def _machines(self, query: Select[Any]) -> tuple[list[Machine], list[int]]:
        """The machines the query reads, each settled first, and the ids it read. Blocking: called in a thread, as a
        page of a large inventory takes a while."""
        with self.db.read() as s:
            rows = s.execute(query).all()
        settled = (self._settle(r) for r in rows)
        # None: deleted while being read.
        return [self._machine(r) for r in settled if r is not None], [r.id for r in rows]

    async def list(self) -> list[Machine]:
        return [machine async for page in self.list_pages(1000) for machine in page]

    async def list_pages(self, size: int) -> AsyncIterator[builtins.list[Machine]]:
        """In id order, one keyset query (and its thread) per page."""
        await self._call("list")
        after = 0
        while True:
            query = _LISTED.where(sim_machines.c.id > after).order_by(sim_machines.c.id).limit(size)
            machines, ids = await asyncio.to_thread(self._machines, query)
            if machines:
                yield machines
            if len(ids) < size:
                return
            after = ids[-1]

    async def get_many(self, refs: Sequence[str]) -> builtins.list[Machine]:
        await self._call("get_many")
        return await self._read_machines(refs)

    async def _read_machines(self, refs: Sequence[str]) -> builtins.list[Machine]:
        """The machines of these refs, read in a thread: the reconciler asks for hundreds at a time."""
        ids = {i for i in map(self._id_or_none, refs) if i is not None}
        if not ids:
            return []
        machines, _ = await asyncio.to_thread(self._machines, _LISTED.where(sim_machines.c.id.in_(ids)))
        return machines

    async def start(self, ref: str) -> None:
        await self._call("start")
        await self.db.run(
            self._transition, ref, MachineState.STARTING, MachineState.RUNNING, allowed={MachineState.STOPPED}
        )

    async def stop(self, ref: str) -> None:
        await self._call("stop")
        await self.db.run(
            self._transition, ref, MachineState.STOPPING, MachineState.STOPPED, allowed={MachineState.RUNNING}
        )

    async def reboot(self, ref: str) -> None:
        await self._call("reboot")
        await self.db.run(self._reboot, ref)

    def _reboot(self, ref: str) -> None:
        row = self._require(ref)
        if MachineState(row.state) == MachineState.REBOOTING:
            return
        if MachineState(row.state) != MachineState.RUNNING:
            raise ProviderError(f"Cannot reboot a machine that is {row.state}", retryable=False)
        self._begin(row.id, MachineState.REBOOTING, MachineState.RUNNING)

    async def suspend(self, ref: str) -> None:
        """Recorded as the machine's state at once: freezing takes no time worth simulating."""
        await self._call("suspend")
        await self.db.run(self._freeze, ref, "suspend", MachineState.RUNNING, MachineState.SUSPENDED)

    async def resume(self, ref: str) -> None:
        await self._call("resume")
        await self.db.run(self._freeze, ref, "resume", MachineState.SUSPENDED, MachineState.RUNNING)

    def _freeze(self, ref: str, verb: str, source: MachineState, target: MachineState) -> None:
        row = self._require(ref)
        state = MachineState(row.state)
        if state == target:
            return
        if state != source:
            raise ProviderError(f"Cannot {verb} a machine that is {state}", retryable=False)
        with self.db.begin() as conn:
            conn.execute(_CHANGE, {"b_id": row.id, "state": target})

    async def delete(self, ref: str) -> None:
        await self._call("delete")
        await self.db.run(self._delete, self._id(ref))

    def _delete(self, machine_id: int) -> None:
        with self.db.begin() as conn:
            conn.execute(delete(sim_snapshots).where(sim_snapshots.c.machine_id == machine_id))
            conn.execute(delete(sim_firewalls).where(sim_firewalls.c.machine_id == machine_id))
            conn.execute(delete(sim_addresses).where(sim_addresses.c.machine_id == machine_id))
            conn.execute(delete(sim_passwords).where(sim_passwords.c.machine_id == machine_id))
            conn.execute(delete(sim_machines).where(sim_machines.c.id == machine_id))

    async def set_firewall(self, ref: str, rules: Sequence[FirewallRule]) -> None:
        """Recorded with the machine (nothing is filtered: no traffic reaches a simulated machine)."""
        await self._call("set_firewall")
        await self.db.run(self._set_firewall, ref, json.dumps([vars(r) for r in rules]) if rules else None)

    def _set_firewall(self, ref: str, rules: str | None) -> None:
        machine_id = self._require(ref).id
        with self.db.begin() as conn:
            conn.execute(delete(sim_firewalls).where(sim_firewalls.c.machine_id == machine_id))
            if rules is not None:
                conn.execute(insert(sim_firewalls).values(machine_id=machine_id, rules=rules))

    def firewall(self, ref: str) -> builtins.list[FirewallRule]:
        """The rules the machine filters by (what the tests look at, as one would look at a real host)."""
        with self.db.connect() as conn:
            rules = conn.scalar(select(sim_firewalls.c.rules).where(sim_firewalls.c.machine_id == self._id(ref)))
        return [FirewallRule(**r) for r in json.loads(rules)] if rules else []

    async def add_address(self, ref: str, address: str) -> None:
        """Recorded with the machine; any IPv4 address is routable to a simulated machine."""
        await self._call("add_address")
        await self.db.run(self._add_address, ref, str(ipaddress.IPv4Address(address)))

    def _add_address(self, ref: str, address: str) -> None:
        machine_id = self._require(ref).id
        try:
            with self.db.begin() as conn:
                conn.execute(insert(sim_addresses).values(machine_id=machine_id, address=address))
        except IntegrityError:  # it has the address already: nothing to change
            pass

    def addresses(self, ref: str) -> builtins.list[str]:
        """The machine's extra addresses, lowest first (what the tests look at)."""
        with self.db.connect() as conn:
            rows = conn.scalars(select(sim_addresses.c.address).where(sim_addresses.c.machine_id == self._id(ref)))
            return sorted(rows, key=lambda a: int(ipaddress.IPv4Address(a)))

    async def set_root_password(self, ref: str, password_hash: str) -> None:
        """Recorded with the machine, at once, as a running system's `chpasswd` would."""
        await self._call("set_root_password")
        await self.db.run(self._set_root_password, ref, password_hash)

    def _set_root_password(self, ref: str, password_hash: str) -> None:
        row = self._require(ref)
        if MachineState(row.state) != MachineState.RUNNING:
            raise ProviderError(f"Cannot set the root password of a machine that is {row.state}", retryable=False)
        with self.db.begin() as conn:
            conn.execute(delete(sim_passwords).where(sim_passwords.c.machine_id == row.id))
            conn.execute(insert(sim_passwords).values(machine_id=row.id, password_hash=password_hash))

    def root_password_hash(self, ref: str) -> str | None:
        """The hash `set_root_password` last gave the machine (what the tests look at)."""
        with self.db.connect() as conn:
            return conn.scalar(select(sim_passwords.c.password_hash).where(sim_passwords.c.machine_id == self._id(ref)))

    async def snapshot(self, ref: str, token: str) -> SnapshotInfo:
        await self._call("snapshot")
        row, snap = await self.db.run(self._machine_and_snapshot, ref, token)
        if snap is None:
            await self.clock.sleep(self._delay("snapshot").total_seconds())
            snap = await self.db.run(self._take_snapshot, row, token)
            if snap is None:  # deleted (with its machine, say) between our insert and this read
                raise ProviderError(f"Simulated snapshot of {ref} vanished while it was taken", retryable=True)
        return SnapshotInfo(ref=f"simsnap-{snap.id}", machine_ref=ref, size_gb=snap.size_gb)

    def _machine_and_snapshot(self, ref: str, token: str) -> tuple[Row[Any], Row[Any] | None]:
        row = self._require(ref)
        with self.db.connect() as conn:
            return row, conn.execute(_SNAPSHOT_BY_TOKEN, {"b_token": token}).first()

    def _take_snapshot(self, row: Row[Any], token: str) -> Row[Any] | None:
        size = max(1, row.disk_gb // 10 + row.disk_generation)
        try:
            with self.db.begin() as conn:
                conn.execute(
                    insert(sim_snapshots).values(
                        token=token,
                        machine_id=row.id,
                        size_gb=size,
                        disk_generation=row.disk_generation,
                        created_at=self.clock.now(),
                    )
                )
        except IntegrityError:
            pass
        with self.db.connect() as conn:
            return conn.execute(_SNAPSHOT_BY_TOKEN, {"b_token": token}).first()

    @staticmethod
    def _snapshot_id(snapshot_ref: str) -> int:
        if not snapshot_ref.startswith("simsnap-") or not snapshot_ref[8:].isdigit():
            raise NotFound(f"No simulated snapshot {snapshot_ref}", ref=snapshot_ref)
        return int(snapshot_ref[8:])

    async def delete_snapshot(self, snapshot_ref: str) -> None:
        await self._call("delete_snapshot")
        await self.db.run(self._delete_snapshot, self._snapshot_id(snapshot_ref))

    def _delete_snapshot(self, snapshot_id: int) -> None:
        with self.db.begin() as conn:
            conn.execute(delete(sim_snapshots).where(sim_snapshots.c.id == snapshot_id))

    async def restore(self, ref: str, snapshot_ref: str) -> None:
        await self._call("restore")
        await self.db.run(self._restore, ref, snapshot_ref)

    def _restore(self, ref: str, snapshot_ref: str) -> None:
        row = self._require(ref)
        with self.db.connect() as conn:
            snap = conn.execute(_SNAPSHOT_BY_ID, {"b_id": self._snapshot_id(snapshot_ref)}).first()
        if snap is None or snap.machine_id != row.id:
            raise ProviderError(f"Snapshot {snapshot_ref} does not belong to {ref}", retryable=False)
        if MachineState(row.state) not in (MachineState.STOPPED, MachineState.RESTORING):
            raise ProviderError(f"Cannot restore a machine that is {row.state}", retryable=False)
        self._begin(row.id, MachineState.RESTORING, MachineState.STOPPED, disk_generation=snap.disk_generation)

    async def console(self, ref: str) -> Terminal:
        """A shell that says it is simulated (providers/terminal.py): it answers a few commands, runs none."""
        await self._call("console")
        row = await self.db.run(self._require, ref)
        if MachineState(row.state) != MachineState.RUNNING:
            raise ProviderError(f"Cannot open a console on a machine that is {row.state}", retryable=False)
        return SimulatedTerminal(row.hostname)

    async def rebuild(self, ref: str, request: RebuildRequest) -> None:
        """Records the new image and keys and moves the disk on to a generation of its own (its snapshots keep
        theirs), at once: a simulated disk has nothing to copy. The password hash is not kept: nothing logs in."""
        await self._call("rebuild")
        await self.db.run(self._rebuild, ref, request)

    def _rebuild(self, ref: str, request: RebuildRequest) -> None:
        row = self._require(ref)
        if MachineState(row.state) != MachineState.STOPPED:
            raise ProviderError(f"Cannot rebuild a machine that is {row.state}; stop it first", retryable=False)
        with self.db.begin() as conn:
            newest = conn.scalar(
                select(func.max(sim_snapshots.c.disk_generation)).where(sim_snapshots.c.machine_id == row.id)
            )
            conn.execute(
                _CHANGE,
                {
                    "b_id": row.id,
                    "image": request.image,
                    "ssh_keys": "\n".join(request.ssh_public_keys),
                    "disk_generation": max(row.disk_generation, newest or 0) + 1,
                },
            )

    async def metrics(self, ref: str) -> Metrics:
        await self._call("metrics")
        row = await self.db.run(self._require, ref)
        running = MachineState(row.state) == MachineState.RUNNING
        # Deterministic per machine and minute, so repeated reads in one minute agree.
        now = self.clock.now()
        rng = random.Random(f"{self.config.seed}-{row.id}-{now:%Y%m%d%H%M}")
        uptime_s = max(0.0, (now - (assume_utc(row.created_at) or now)).total_seconds())
        return Metrics(
            cpu_percent=round(rng.uniform(2, 60), 1) if running else 0.0,
            memory_used_mb=int(row.ram_mb * rng.uniform(0.2, 0.8)) if running else 0,
            disk_read_bytes=int(uptime_s * 2048),
            disk_write_bytes=int(uptime_s * 1024),
            net_rx_bytes=int(uptime_s * 4096),
            net_tx_bytes=int(uptime_s * 1536),
            # An image's few GB, growing by a little a day up to most of the disk.
            disk_used_mb=min(int(row.disk_gb * 1024 * 0.9), 1800 + int(uptime_s / 86400 * 50)),
            uptime_s=int(uptime_s) if running else None,
        )

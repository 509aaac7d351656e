"""The LXC provider: system containers on this host, driven through the `lxc` Python bindings (liblxc).

A server is a container under `lxc_path` named `cp-<hash of the create token>`, with the plan's CPU and memory as
cgroup limits, a fixed address on Cloudplane's own bridge, the hostname asked for, the chosen SSH keys installed
for root and the image's SSH daemon started by its init. Snapshots are LXC snapshots (copies of the rootfs); a
snapshot's ref is `<container>/<snapshot id>`, the id being a hash of the snapshot token kept in LXC's comment file.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import fcntl
import ipaddress
import json
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from cachetools import TTLCache

from cloudplane.domain.errors import NotFound, ProviderError
from cloudplane.providers import lxc_firewall, lxc_host
from cloudplane.providers.base import (
    SUPPORTED,
    Capabilities,
    CreateRequest,
    Feature,
    Features,
    FirewallRule,
    ImageInfo,
    Machine,
    MachineState,
    Metrics,
    Pacing,
    RebuildRequest,
    SnapshotInfo,
    not_implemented_yet,
    pages_of,
    token_hash,
)
from cloudplane.providers.terminal import PtyTerminal, Terminal

try:
    import lxc
except ImportError:  # the provider refuses to start without it; importing this module stays cheap and safe
    lxc = None

if TYPE_CHECKING:
    from cloudplane.config import Settings

T = TypeVar("T")

CONTAINER_PREFIX = "cp-"
SNAPSHOT_PREFIX = "cps-"
# How long a container's disk use, once measured, is reported as it was (metrics).
DISK_USAGE_TTL_S = 600.0
REF_PATTERN = re.compile(r"^cp-[0-9a-f]{16}$")
SNAPSHOT_REF_PATTERN = re.compile(r"^(cp-[0-9a-f]{16})/(cps-[0-9a-f]{16})$")
# Beside the container's LXC config: marks the container as Cloudplane's and records what made it.
MARKER = "cloudplane.json"
# Beside it: the container's firewall rules as last set, applied again at each start (the host may have rebooted).
FIREWALL_FILE = "firewall.json"
LOCK_FILE = ".cloudplane.lock"
# lxccontainer.h: KEEPNAME | KEEPMACADDR | KEEPBDEVTYPE | MAYBE_SNAPSHOT | ALLOW_RUNNING (not exported by the
# bindings), the flags LXC's own snapshot uses plus leave to copy a running container.
CLONE_FLAGS = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 6)

STATES = {
    "STOPPED": MachineState.STOPPED,
    "STARTING": MachineState.STARTING,
    "RUNNING": MachineState.RUNNING,
    "STOPPING": MachineState.STOPPING,
    "ABORTING": MachineState.STOPPING,
    "FREEZING": MachineState.STOPPING,
    "FROZEN": MachineState.SUSPENDED,  # frozen by `suspend` (LXC's freezer): `resume` thaws it, `stop` stops it
    "THAWED": MachineState.RUNNING,
}


def container_name(token: str) -> str:
    return f"{CONTAINER_PREFIX}{token_hash(token)}"


def snapshot_id(token: str) -> str:
    return f"{SNAPSHOT_PREFIX}{token_hash(token)}"


@dataclass(frozen=True)
class LxcConfig:
    lxc_path: Path
    images_path: Path
    network: lxc_host.Network
    stop_timeout_s: float = 10.0


class LxcProvider:
    """Containers carrying a `cloudplane.json` marker under `lxc_path`; anything else there is never touched.

    Calls run in worker threads, one at a time per container; creates (which pick an address) also hold a file
    lock, so several Cloudplane processes on one host never hand out the same address.
    """

    # Local calls: a container is running a few milliseconds after its start.
    pacing = Pacing(poll_interval_s=0.05, timeout_s=120.0)
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
            Feature.RESIZE: not_implemented_yet("lxc"),
            Feature.SUSPEND: SUPPORTED,
            Feature.RESUME: SUPPORTED,
            Feature.CONSOLE: SUPPORTED,
            Feature.FIREWALL: SUPPORTED,
            Feature.EXTRA_IPS: SUPPORTED,
            Feature.RESET_PASSWORD: SUPPORTED,
        },
    )

    def __init__(self, config: LxcConfig, *, name: str = "lxc") -> None:
        if lxc is None:
            raise ProviderError(
                "The lxc Python bindings are not installed: apt-get install lxc lxc-dev pkg-config, then "
                "pip install 'cloudplane[lxc]'",
                retryable=False,
            )
        self.name = name
        self.config = config
        self._locks: dict[str, threading.Lock] = {}
        self._locks_guard = threading.Lock()
        self._cpu_samples: dict[str, tuple[float, int]] = {}
        # What each container's root file system holds: walking a whole system's files (tens of thousands) at every
        # metrics sample would cost more than the sample, and disk use moves slowly.
        self._disk_used: TTLCache[str, int] = TTLCache(maxsize=100_000, ttl=DISK_USAGE_TTL_S)
        config.lxc_path.mkdir(parents=True, exist_ok=True)

    @classmethod
    def from_settings(cls, settings: Settings) -> LxcProvider:
        return cls(
            LxcConfig(
                lxc_path=Path(settings.lxc_path),
                images_path=Path(settings.lxc_images_path),
                network=lxc_host.Network.parse(settings.lxc_bridge, settings.lxc_subnet),
                stop_timeout_s=settings.lxc_stop_timeout_s,
            )
        )

    @property
    def capabilities(self) -> Capabilities:
        # Everything but the images: those are what this host has built or imported, read afresh each time.
        images = {slug: lxc_host.read_image(self.config.images_path, slug) or {} for slug in self.images()}
        return Capabilities(
            images=frozenset(images),
            image_info={
                slug: ImageInfo(meta.get("name", ""), meta.get("distribution", ""), str(meta.get("version", "")))
                for slug, meta in images.items()
            },
        )

    def images(self) -> list[str]:
        """The image slugs this host has built or imported (`cloudplane host prepare`)."""
        return lxc_host.local_images(self.config.images_path)

    # -- plumbing --------------------------------------------------------------------------------------------

    def _lock_for(self, name: str) -> threading.Lock:
        with self._locks_guard:
            return self._locks.setdefault(name, threading.Lock())

    async def _run(self, name: str, fn: Callable[..., T], *args: Any) -> T:
        def locked() -> T:
            with self._lock_for(name):
                return fn(*args)

        return await asyncio.to_thread(locked)

    @contextlib.contextmanager
    def _host_lock(self) -> Iterator[None]:
        with open(self.config.lxc_path / LOCK_FILE, "a") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    def _container(self, name: str) -> Any:
        return lxc.Container(name, str(self.config.lxc_path))

    def _marker(self, name: str) -> dict | None:
        try:
            return json.loads((self.config.lxc_path / name / MARKER).read_text())
        except (OSError, ValueError):
            return None

    def _lookup(self, ref: str) -> Any:
        container = self._lookup_or_none(ref)
        if container is None:
            raise NotFound(f"No LXC container {ref} on this host", ref=ref)
        return container

    def _lookup_or_none(self, ref: str) -> Any:
        if not REF_PATTERN.match(ref) or self._marker(ref) is None:
            return None
        container = self._container(ref)
        return container if container.defined else None

    def _machine(self, container: Any) -> Machine:
        marker = self._marker(container.name) or {}
        return Machine(
            ref=container.name,
            state=STATES.get(container.state, MachineState.ERROR),
            hostname=marker.get("hostname", container.name),
            # The server's one address, on Cloudplane's bridge: route or NAT that range to make servers reachable
            # from outside the host.
            public_ipv4=marker.get("ipv4"),
            token=marker.get("token"),
        )

    def _names(self) -> list[str]:
        path = self.config.lxc_path
        if not path.is_dir():
            return []
        return sorted(p.name for p in path.iterdir() if REF_PATTERN.match(p.name) and (p / MARKER).is_file())

    # -- create ----------------------------------------------------------------------------------------------

    async def create(self, request: CreateRequest) -> Machine:
        name = container_name(request.token)
        return await self._run(name, self._create, name, request)

    def _create(self, name: str, request: CreateRequest) -> Machine:
        existing = self._lookup_or_none(name)
        if existing is None:
            image = self._image(request.image)
            lxc_host.ensure_bridge(self.config.network)
            with self._host_lock():
                address = self._free_address()
                self._build(name, request, image, address)
            existing = self._container(name)
        if existing.state == "STOPPED" and not (self.config.lxc_path / name / "started").exists():
            # The first start belongs to the create: a container that never started is a create half done.
            if not _start_and_wait(existing):
                self._destroy(name)
                raise ProviderError(f"LXC could not start the new container {name}; it was removed", retryable=True)
            (self.config.lxc_path / name / "started").touch()
        return self._machine(existing)

    def _image(self, slug: str) -> dict:
        """The image's description; a non-retryable error naming the host's images when it lacks it."""
        image = lxc_host.read_image(self.config.images_path, slug)
        if image is None:
            raise ProviderError(
                f"Image {slug!r} is not on this LXC host (it has: {', '.join(self.images()) or 'none'}); "
                "run `cloudplane host prepare`",
                retryable=False,
            )
        return image

    def _free_address(self) -> ipaddress.IPv4Address:
        taken = {a for n in self._names() for a in _addresses(self._marker(n) or {})}
        for address in self.config.network.container_addresses():
            if str(address) not in taken:
                return address
        raise ProviderError(f"No free address left in {self.config.network.subnet}; widen lxc_subnet", retryable=False)

    def _build(self, name: str, request: CreateRequest, image: dict, address: ipaddress.IPv4Address) -> None:
        """Assemble the container in a staging directory and rename it into place: a half-built container is
        never visible under its name, and a crash leaves only a `.staging-*` directory to sweep."""
        path = self.config.lxc_path
        staging = Path(tempfile.mkdtemp(prefix=f".staging-{name}-", dir=path))
        try:
            self._make_rootfs(
                staging / "rootfs",
                request.image,
                request.hostname,
                address,
                request.ssh_public_keys,
                request.root_password_hash,
            )
            final = path / name
            (staging / "config").write_text(
                self._lxc_config(final / "rootfs", request.hostname, request.cpu, request.ram_mb, image, [str(address)])
            )
            (staging / MARKER).write_text(
                json.dumps(
                    {
                        "token": request.token,
                        "name": request.name,
                        "hostname": request.hostname,
                        "image": request.image,
                        "ipv4": str(address),
                        "cpu": request.cpu,
                        "ram_mb": request.ram_mb,
                        "created_at": time.time(),
                    }
                )
            )
            os.chmod(staging, 0o755)
            staging.rename(final)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)

    def _make_rootfs(
        self,
        rootfs: Path,
        image: str,
        hostname: str,
        address: ipaddress.IPv4Address,
        ssh_public_keys: Sequence[str],
        root_password_hash: str | None,
    ) -> None:
        """A copy of the image's root filesystem with the machine's hostname, address, root's keys and password."""
        subprocess_copy(self.config.images_path / image / "rootfs", rootfs)
        _write_identity(rootfs, hostname, str(address))
        ssh = rootfs / "root/.ssh"
        ssh.mkdir(parents=True, exist_ok=True)
        os.chmod(ssh, 0o700)
        (ssh / "authorized_keys").write_text("".join(f"{k.strip()}\n" for k in ssh_public_keys))
        os.chmod(ssh / "authorized_keys", 0o600)
        if root_password_hash:
            _write_root_password(rootfs, root_password_hash)

    def _lxc_config(
        self, rootfs: Path, hostname: str, cpu: int, ram_mb: int, image: dict, addresses: Sequence[str]
    ) -> str:
        """The container's LXC config; `addresses` its own first, then its extra ones."""
        network = self.config.network
        period_us = 100_000
        lines = [
            "lxc.include = /usr/share/lxc/config/common.conf",
            f"lxc.rootfs.path = dir:{rootfs}",
            f"lxc.uts.name = {hostname[:63]}",
            "lxc.autodev = 1",
            "lxc.tty.max = 1",
            "lxc.pty.max = 16",
            "lxc.mount.auto = cgroup:mixed proc:mixed sys:ro",
            "lxc.net.0.type = veth",
            f"lxc.net.0.link = {network.bridge}",
            "lxc.net.0.flags = up",
            *self._address_lines(addresses),
            f"lxc.net.0.ipv4.gateway = {network.gateway}",
            # The plan's size as cgroup (v1 and v2) limits: CPU as a CFS quota of `cpu` cores, memory in bytes.
            f"lxc.cgroup.cpu.cfs_period_us = {period_us}",
            f"lxc.cgroup.cpu.cfs_quota_us = {cpu * period_us}",
            f"lxc.cgroup.memory.limit_in_bytes = {ram_mb * 1024 * 1024}",
            f"lxc.cgroup2.cpu.max = {cpu * period_us} {period_us}",
            f"lxc.cgroup2.memory.max = {ram_mb * 1024 * 1024}",
            *image.get("lxc_config", []),
        ]
        # Only the controller lines of the cgroup version this host mounts: LXC refuses unknown controllers.
        version = "lxc.cgroup2." if _cgroup2_only() else "lxc.cgroup."
        other = "lxc.cgroup." if version == "lxc.cgroup2." else "lxc.cgroup2."
        return "\n".join(line for line in lines if not line.startswith(other)) + "\n"

    async def find_by_token(self, token: str) -> Machine | None:
        return await self.get(container_name(token))

    def _get(self, ref: str) -> Machine | None:
        with self._lock_for(ref):
            container = self._lookup_or_none(ref)
            return None if container is None else self._machine(container)

    async def get(self, ref: str) -> Machine | None:
        return await asyncio.to_thread(self._get, ref)

    async def get_many(self, refs: Sequence[str]) -> builtins.list[Machine]:
        def _get_many() -> list[Machine]:
            found = (self._get(ref) for ref in dict.fromkeys(refs))
            return [machine for machine in found if machine is not None]

        return await asyncio.to_thread(_get_many)

    async def list(self) -> list[Machine]:
        def _list() -> list[Machine]:
            machines = []
            for name in self._names():
                container = self._container(name)
                if container.defined:
                    machines.append(self._machine(container))
            return machines

        return await asyncio.to_thread(_list)

    def list_pages(self, size: int) -> AsyncIterator[builtins.list[Machine]]:
        """A host's containers are listed at once; a host holds what its cores and memory fit."""
        return pages_of(self.list, size)

    # -- power -----------------------------------------------------------------------------------------------

    async def start(self, ref: str) -> None:
        def _start() -> None:
            container = self._lookup(ref)
            if container.state == "FROZEN":
                container.unfreeze()
            elif container.state == "STOPPED" and not _start_and_wait(container):
                raise ProviderError(f"LXC could not start {ref}", retryable=True)
            if (self.config.lxc_path / ref / FIREWALL_FILE).exists():
                self._apply_firewall(ref, self._firewall(ref))

        await self._run(ref, _start)

    async def stop(self, ref: str) -> None:
        def _stop() -> None:
            container = self._lookup(ref)
            if container.state == "STOPPED":
                return
            if container.state == "FROZEN":
                container.unfreeze()
            # Ask init to halt (the image's lxc.signal.halt); past the timeout pull the plug.
            if not container.shutdown(max(1, math.ceil(self.config.stop_timeout_s))) and container.state != "STOPPED":
                container.stop()
            self._cpu_samples.pop(ref, None)
            self._disk_used.pop(ref, None)

        await self._run(ref, _stop)

    async def reboot(self, ref: str) -> None:
        def _reboot() -> None:
            container = self._lookup(ref)
            if container.state != "RUNNING":
                raise ProviderError(
                    f"{ref} is {container.state.lower()}; only a running container reboots", retryable=False
                )
            if not container.reboot():
                raise ProviderError(f"LXC could not reboot {ref}", retryable=True)

        await self._run(ref, _reboot)

    async def suspend(self, ref: str) -> None:
        """LXC's freezer: every process of the container stops where it is (its cgroup frozen), memory kept."""

        def _suspend() -> None:
            container = self._lookup(ref)
            if container.state == "FROZEN":
                return
            if container.state != "RUNNING":
                raise ProviderError(
                    f"{ref} is {container.state.lower()}; only a running container is suspended", retryable=False
                )
            if not container.freeze():
                raise ProviderError(f"LXC could not freeze {ref}", retryable=True)

        await self._run(ref, _suspend)

    async def resume(self, ref: str) -> None:
        def _resume() -> None:
            container = self._lookup(ref)
            if container.state == "RUNNING":
                return
            if container.state != "FROZEN":
                raise ProviderError(
                    f"{ref} is {container.state.lower()}; only a frozen container is resumed", retryable=False
                )
            if not container.unfreeze():
                raise ProviderError(f"LXC could not thaw {ref}", retryable=True)

        await self._run(ref, _resume)

    async def delete(self, ref: str) -> None:
        def _delete() -> None:
            if self._marker(ref) is not None:  # never a container Cloudplane did not make
                self._destroy(ref)

        if REF_PATTERN.match(ref):
            await self._run(ref, _delete)

    def _destroy(self, name: str) -> None:
        """Stop the container, drop its snapshots, then the container itself; whatever is left is removed."""
        path = self.config.lxc_path / name
        if not path.exists():
            return
        if (path / FIREWALL_FILE).exists():
            self._apply_firewall(name, [])
        container = self._container(name)
        if container.defined:
            if container.state == "FROZEN":
                container.unfreeze()
            if container.state != "STOPPED":
                container.stop()
            for directory in self._snapshot_dirs(name):
                snapshot = lxc.Container(directory.name, str(directory.parent))
                if snapshot.defined:
                    snapshot.destroy()
            container.destroy()
        # Rename before removing, so a crash part way never leaves a half-deleted container under its name.
        doomed = self.config.lxc_path / f".deleting-{name}-{time.monotonic_ns()}"
        with contextlib.suppress(FileNotFoundError):
            path.rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)
        self._cpu_samples.pop(name, None)
        self._disk_used.pop(name, None)

    # -- firewall --------------------------------------------------------------------------------------------

    async def set_firewall(self, ref: str, rules: Sequence[FirewallRule]) -> None:
        """Recorded beside the container, then applied on the host (lxc_firewall.py)."""

        def _set_firewall() -> None:
            self._lookup(ref)
            (self.config.lxc_path / ref / FIREWALL_FILE).write_text(json.dumps([vars(r) for r in rules]))
            self._apply_firewall(ref, rules)

        await self._run(ref, _set_firewall)

    def _firewall(self, name: str) -> builtins.list[FirewallRule]:
        try:
            return [FirewallRule(**r) for r in json.loads((self.config.lxc_path / name / FIREWALL_FILE).read_text())]
        except (OSError, ValueError):
            return []

    def _apply_firewall(self, name: str, rules: Sequence[FirewallRule]) -> None:
        addresses = _addresses(self._marker(name) or {})
        if addresses:
            lxc_firewall.apply(self.config.network.bridge, name, addresses, rules)

    # -- extra addresses -------------------------------------------------------------------------------------

    def _address_lines(self, addresses: Sequence[str]) -> builtins.list[str]:
        # LXC takes the key once per address, the first being the one its gateway route leaves from.
        prefix = self.config.network.subnet.prefixlen
        return [f"lxc.net.0.ipv4.address = {a}/{prefix}" for a in addresses]

    def _write_addresses(self, name: str, addresses: Sequence[str]) -> None:
        """The container's config with exactly these address lines, where the first of them was."""
        config = self.config.lxc_path / name / "config"
        lines = config.read_text().splitlines()
        at = next((i for i, ln in enumerate(lines) if ln.startswith("lxc.net.0.ipv4.address")), None)
        kept = [ln for ln in lines if not ln.startswith("lxc.net.0.ipv4.address")]
        at = len(kept) if at is None else at
        _write_atomically(config, "\n".join([*kept[:at], *self._address_lines(addresses), *kept[at:]]) + "\n")

    async def add_address(self, ref: str, address: str) -> None:
        """Recorded in the marker and the container's config (so a start gives it again), filtered by the
        container's firewall before it is reachable, then added inside the running container (`ip addr add`
        through `lxc-attach`). Only addresses of the bridge's subnet: the host routes nothing else to it."""

        def _add_address() -> None:
            container = self._lookup(ref)
            network = self.config.network
            try:
                ip = ipaddress.IPv4Address(address)
            except ValueError:
                raise ProviderError(f"{address!r} is not an IPv4 address", retryable=False) from None
            if ip not in network.subnet or ip in (network.gateway, network.subnet.broadcast_address):
                raise ProviderError(
                    f"{address} is not a container address of {network.bridge}'s subnet {network.subnet}: give LXC "
                    f"locations a pool inside it (its top quarter, {network.extra_pool.text}, is kept for them)",
                    retryable=False,
                )
            marker = self._marker(ref) or {}
            extra = [*marker.get("extra_ipv4", [])]
            if str(ip) != marker.get("ipv4") and str(ip) not in extra:
                extra.append(str(ip))
                marker = {**marker, "extra_ipv4": extra}
                _write_atomically(self.config.lxc_path / ref / MARKER, json.dumps(marker))
            self._write_addresses(ref, _addresses(marker))
            if (self.config.lxc_path / ref / FIREWALL_FILE).exists():
                self._apply_firewall(ref, self._firewall(ref))
            if container.state == "RUNNING":
                self._add_inside(ref, f"{ip}/{network.subnet.prefixlen}")

        await self._run(ref, _add_address)

    def _add_inside(self, ref: str, cidr: str) -> None:
        done = subprocess.run(
            ["lxc-attach", "-P", str(self.config.lxc_path), "-n", ref, "--clear-env", "-v", f"PATH={CONTAINER_PATH}",
             "--", "ip", "addr", "add", cidr, "dev", "eth0"],
            capture_output=True, text=True, check=False,
        )  # fmt: skip
        if done.returncode != 0 and "File exists" not in done.stderr:  # it has it already (a re-run)
            raise ProviderError(f"Could not add {cidr} inside {ref}: {done.stderr.strip()}", retryable=True)

    # -- root password ---------------------------------------------------------------------------------------

    async def set_root_password(self, ref: str, password_hash: str) -> None:
        """`chpasswd -e` inside the running container (`lxc-attach`, a clean environment), fed the hash on its
        standard input: the container's own tool writes its own /etc/shadow, as an administrator would. A system
        without chpasswd (the BusyBox image has none) gets root's line of its /etc/shadow written as create writes
        it, through the host's view of its root filesystem."""

        def _set_root_password() -> None:
            container = self._lookup(ref)
            if container.state != "RUNNING":
                raise ProviderError(
                    f"{ref} is {container.state.lower()}; its root password is set inside it, so start it first",
                    retryable=False,
                )
            done = subprocess.run(
                ["lxc-attach", "-P", str(self.config.lxc_path), "-n", ref, "--clear-env", "-v", f"PATH={CONTAINER_PATH}",
                 "--", "/bin/sh", "-c", f"command -v chpasswd >/dev/null || exit {NO_CHPASSWD}; exec chpasswd -e"],
                input=f"root:{password_hash}\n", capture_output=True, text=True, check=False, timeout=30,
            )  # fmt: skip
            if done.returncode == NO_CHPASSWD:
                _write_root_password(self.config.lxc_path / ref / "rootfs", password_hash)
            elif done.returncode != 0:
                raise ProviderError(
                    f"chpasswd inside {ref} failed: {done.stderr.strip() or done.returncode}", retryable=True
                )

        await self._run(ref, _set_root_password)

    # -- snapshots -------------------------------------------------------------------------------------------

    def _snapshots(self, container: Any) -> dict[str, str]:
        """Cloudplane snapshot id -> LXC snapshot name (snap0, snap1...), read from the comment files.

        Read from the directory, not `snapshot_list()`: liblxc's bindings crash the process on a snapshot whose
        `ts` file is missing (one interrupted while being taken)."""
        found = {}
        for directory in self._snapshot_dirs(container.name):
            with contextlib.suppress(OSError):
                comment = (directory / "comment").read_text().strip()
                if comment.startswith(SNAPSHOT_PREFIX) and (directory / "ts").is_file():
                    found[comment] = directory.name
        return found

    def _snapshot_dirs(self, name: str) -> builtins.list[Path]:
        snaps = self.config.lxc_path / name / "snaps"
        return sorted(p for p in snaps.iterdir() if p.is_dir()) if snaps.is_dir() else []

    async def snapshot(self, ref: str, token: str) -> SnapshotInfo:
        def _snapshot() -> SnapshotInfo:
            container = self._lookup(ref)
            sid = snapshot_id(token)
            lxc_name = self._snapshots(container).get(sid)
            if lxc_name is None:
                lxc_name = self._take_snapshot(container, sid)
            size = _tree_size(self.config.lxc_path / ref / "snaps" / lxc_name)
            return SnapshotInfo(ref=f"{ref}/{sid}", machine_ref=ref, size_gb=max(1, math.ceil(size / 2**30)))

        return await self._run(ref, _snapshot)

    def _take_snapshot(self, container: Any, sid: str) -> str:
        """LXC's own snapshot layout (`snaps/snapN/{config,rootfs,ts,comment}`, which `snapshot_list`,
        `snapshot_restore` and `snapshot_destroy` read), made with a clone so that a running container can be
        snapshotted too: LXC's `snapshot()` refuses running directory-backed containers. The container is frozen
        while its rootfs is copied, so the snapshot is consistent."""
        snaps = self.config.lxc_path / container.name / "snaps"
        snaps.mkdir(exist_ok=True)
        lxc_name = next(f"snap{i}" for i in range(10_000) if not (snaps / f"snap{i}").exists())
        frozen = container.state == "RUNNING" and _freeze(container)
        try:
            clone = container.clone(lxc_name, config_path=str(snaps), flags=CLONE_FLAGS)
        finally:
            if frozen:
                _thaw(container)
        if not clone:
            shutil.rmtree(snaps / lxc_name, ignore_errors=True)
            raise ProviderError(f"LXC could not snapshot {container.name}", retryable=True)
        (snaps / lxc_name / "ts").write_text(time.strftime("%Y:%m:%d %H:%M:%S"))
        (snaps / lxc_name / "comment").write_text(sid + "\n")
        return lxc_name

    def _parse_snapshot_ref(self, snapshot_ref: str) -> tuple[str, str] | None:
        match = SNAPSHOT_REF_PATTERN.match(snapshot_ref)
        return (match.group(1), match.group(2)) if match else None

    async def delete_snapshot(self, snapshot_ref: str) -> None:
        parsed = self._parse_snapshot_ref(snapshot_ref)
        if parsed is None:
            return
        ref, sid = parsed

        def _delete_snapshot() -> None:
            container = self._lookup_or_none(ref)
            lxc_name = None if container is None else self._snapshots(container).get(sid)
            if lxc_name is not None and not container.snapshot_destroy(lxc_name):
                raise ProviderError(f"LXC could not delete snapshot {snapshot_ref}", retryable=True)

        await self._run(ref, _delete_snapshot)

    async def restore(self, ref: str, snapshot_ref: str) -> None:
        def _restore() -> None:
            container = self._lookup(ref)
            parsed = self._parse_snapshot_ref(snapshot_ref)
            lxc_name = self._snapshots(container).get(parsed[1]) if parsed and parsed[0] == ref else None
            if lxc_name is None:
                raise NotFound(f"Container {ref} has no snapshot {snapshot_ref}", snapshot=snapshot_ref)
            if container.state != "STOPPED":
                raise ProviderError(
                    f"{ref} is {container.state.lower()}; stop it before restoring a snapshot", retryable=False
                )
            kept = {f: self.config.lxc_path / ref / f for f in (MARKER, FIREWALL_FILE)}
            saved = {f: p.read_bytes() for f, p in kept.items() if p.exists()}
            if not container.snapshot_restore(lxc_name, ref):
                raise ProviderError(f"LXC could not restore {snapshot_ref}", retryable=True)
            for f, content in saved.items():  # LXC rebuilds the directory on restore
                kept[f].write_bytes(content)
            # ...and names the restored container (its config, its /etc/hostname and /etc/hosts) after the container:
            # the server keeps its own name.
            identity = json.loads(saved.get(MARKER, b"{}"))
            if identity.get("hostname") and identity.get("ipv4"):
                restored = self._container(ref)
                restored.set_config_item("lxc.uts.name", identity["hostname"][:63])
                restored.save_config()
                _write_identity(self.config.lxc_path / ref / "rootfs", identity["hostname"], identity["ipv4"])
                # ...and gives it the addresses it has now: extra ones added since the snapshot stay.
                self._write_addresses(ref, _addresses(identity))
            (self.config.lxc_path / ref / "started").touch()

        await self._run(ref, _restore)

    # -- console ---------------------------------------------------------------------------------------------

    async def console(self, ref: str) -> Terminal:
        """A login shell in the running container, on a pseudo-terminal of the host (`lxc-attach`), with a clean
        environment: nothing of Cloudplane's own environment reaches the container."""
        state = await self._run(ref, lambda: self._lookup(ref).state)
        if state != "RUNNING":
            raise ProviderError(f"{ref} is {state.lower()}; a console needs it running", retryable=False)
        return await PtyTerminal.spawn(
            [
                "lxc-attach", "-P", str(self.config.lxc_path), "-n", ref, "--clear-env",
                "-v", "TERM=xterm", "-v", "HOME=/root", "-v", f"PATH={CONTAINER_PATH}",
                "--", "/bin/sh", "-l",
            ]
        )  # fmt: skip

    # -- rebuild ---------------------------------------------------------------------------------------------

    async def rebuild(self, ref: str, request: RebuildRequest) -> None:
        """A fresh root filesystem copied from the image (as create makes one), with the hostname and address the
        container has and the request's keys and password, swapped in for the old one; the config is written
        again for the image with the container's limits, and the marker names the new image. Snapshots (under
        `snaps/`) are left as they are."""
        await self._run(ref, self._rebuild, ref, request)

    def _rebuild(self, ref: str, request: RebuildRequest) -> None:
        container = self._lookup(ref)
        if container.state != "STOPPED":
            raise ProviderError(f"{ref} is {container.state.lower()}; stop it before rebuilding it", retryable=False)
        image = self._image(request.image)
        directory = self.config.lxc_path / ref
        marker = self._marker(ref) or {}
        hostname, address = marker.get("hostname", ref), ipaddress.IPv4Address(marker["ipv4"])
        rootfs, fresh, old = directory / "rootfs", directory / ".rebuild-rootfs", directory / ".old-rootfs"
        # What an earlier rebuild cut short left: a crash between the two renames leaves only the old rootfs aside.
        if not rootfs.exists() and old.exists():
            old.rename(rootfs)
        for leftover in (fresh, old):
            shutil.rmtree(leftover, ignore_errors=True)
        try:
            self._make_rootfs(
                fresh, request.image, hostname, address, request.ssh_public_keys, request.root_password_hash
            )
        except BaseException:
            shutil.rmtree(fresh, ignore_errors=True)
            raise
        config = self._lxc_config(
            rootfs, hostname, marker.get("cpu", 1), marker.get("ram_mb", 512), image, _addresses(marker)
        )
        _write_atomically(directory / "config", config)
        rootfs.rename(old)
        fresh.rename(rootfs)
        _write_atomically(directory / MARKER, json.dumps({**marker, "image": request.image, "rebuilt_at": time.time()}))
        shutil.rmtree(old, ignore_errors=True)
        self._cpu_samples.pop(ref, None)
        self._disk_used.pop(ref, None)

    # -- metrics ---------------------------------------------------------------------------------------------

    async def metrics(self, ref: str) -> Metrics:
        return await self._run(ref, self._metrics, ref)

    def _disk_used_mb(self, container: Any) -> int:
        used = self._disk_used.get(container.name)
        if used is None:
            used = self._disk_used[container.name] = (
                _tree_size(Path(container.config_file_name).parent / "rootfs") // 2**20
            )
        return used

    def _metrics(self, ref: str) -> Metrics:
        container = self._lookup(ref)
        if container.state not in ("RUNNING", "FROZEN"):
            return Metrics(0.0, 0, 0, 0, 0, 0)
        usage_ns = _cpu_usage_ns(container)
        now = time.monotonic()
        previous = self._cpu_samples.get(ref)
        self._cpu_samples[ref] = (now, usage_ns)
        cpu_percent = 0.0
        cores = max(1, (self._marker(ref) or {}).get("cpu", 1))
        if previous is not None and now > previous[0]:
            used = (usage_ns - previous[1]) / 1e9 / (now - previous[0])
            cpu_percent = min(100.0, max(0.0, 100.0 * used / cores))
        read, written = _disk_bytes(container)
        # The host end of the veth: what it receives the container sent, and the other way round.
        veth = _read(container.get_running_config_item, "lxc.net.0.veth.pair")
        return Metrics(
            cpu_percent=round(cpu_percent, 2),
            memory_used_mb=_memory_bytes(container) // 2**20,
            disk_read_bytes=read,
            disk_write_bytes=written,
            net_rx_bytes=_net_counter(veth, "tx_bytes"),
            net_tx_bytes=_net_counter(veth, "rx_bytes"),
            disk_used_mb=self._disk_used_mb(container),
            uptime_s=_uptime_s(container.init_pid),
        )


def subprocess_copy(source: Path, destination: Path) -> None:
    """Copy a root filesystem keeping owners, modes, links and device nodes (`cp -a`, reflinks where possible)."""
    done = subprocess.run(
        ["cp", "-a", "--reflink=auto", str(source), str(destination)], capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        raise ProviderError(f"Could not copy the image {source}: {done.stderr.strip()}", retryable=False)


def _write_atomically(path: Path, text: str) -> None:
    """Replace the file in one rename: a crash leaves the old content or the new, never half of it."""
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(text)
    staged.replace(path)


def _start_and_wait(container: Any, timeout_s: int = 10) -> bool:
    """Start and wait until LXC reports the container running (its init has been exec'd), so that the state a
    caller reads next is never the brief STARTING."""
    return bool(container.start()) and bool(container.wait("RUNNING", timeout_s))


def _freeze(container: Any, timeout_s: float = 10.0) -> bool:
    """Freeze through the cgroup freezer, polling every few ms (liblxc's own `freeze()` sleeps a whole second)."""
    v2 = _cgroup2_only()
    if not container.set_cgroup_item("cgroup.freeze" if v2 else "freezer.state", "1" if v2 else "FROZEN"):
        return False
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = str(_read(container.get_cgroup_item, "cgroup.events" if v2 else "freezer.state"))
        if ("frozen 1" in state) if v2 else state.strip() == "FROZEN":
            return True
        time.sleep(0.005)
    _thaw(container)
    raise ProviderError(f"{container.name} did not freeze within {timeout_s:.0f} s", retryable=True)


def _thaw(container: Any) -> None:
    v2 = _cgroup2_only()
    container.set_cgroup_item("cgroup.freeze" if v2 else "freezer.state", "0" if v2 else "THAWED")


def _cgroup2_only() -> bool:
    return not os.path.isdir("/sys/fs/cgroup/memory") and os.path.exists("/sys/fs/cgroup/cgroup.controllers")


def _addresses(marker: dict) -> list[str]:
    """A container's addresses as its marker records them: its own first, then its extra ones."""
    own = marker.get("ipv4")
    return [*([own] if own else []), *marker.get("extra_ipv4", [])]


def _write_root_password(rootfs: Path, password_hash: str) -> None:
    """Root's line of the root file system's /etc/shadow, with this hash; the other lines as they were."""
    shadow = rootfs / "etc/shadow"
    lines = [ln for ln in shadow.read_text().splitlines() if not ln.startswith("root:")]
    text = f"root:{password_hash}:19000:0:99999:7:::\n" + "".join(f"{ln}\n" for ln in lines)
    # Replaced in one rename, and never readable by others, not even for a moment.
    staged = shadow.with_name(".shadow.new")
    with open(os.open(staged, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600), "w") as handle:
        handle.write(text)
    os.chmod(staged, 0o600)
    staged.replace(shadow)


def _write_identity(rootfs: Path, hostname: str, address: str) -> None:
    """The container's own name and address in its root file system, which its init sets at boot."""
    hostname = hostname[:63]
    (rootfs / "etc/hostname").write_text(hostname + "\n")
    (rootfs / "etc/hosts").write_text(f"127.0.0.1 localhost\n{address} {hostname} {hostname.split('.')[0]}\n")


# The exit status of set_root_password's shell in a container without chpasswd (a shell's "command not found").
NO_CHPASSWD = 127
CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def _read(getter: Callable[[str], Any], key: str) -> str:
    """A cgroup or running-config value, "" when LXC cannot read it (the container stopped a moment ago)."""
    try:
        return str(getter(key) or "")
    except (KeyError, ValueError):
        return ""


def _int(value: Any) -> int:
    try:
        return int(str(value).strip() or 0)
    except ValueError:
        return 0


def _cpu_usage_ns(container: Any) -> int:
    if _cgroup2_only():
        stat = dict(
            line.split() for line in str(_read(container.get_cgroup_item, "cpu.stat")).splitlines() if " " in line
        )
        return _int(stat.get("usage_usec")) * 1000
    return _int(_read(container.get_cgroup_item, "cpuacct.usage"))


def _memory_bytes(container: Any) -> int:
    return _int(_read(container.get_cgroup_item, "memory.current" if _cgroup2_only() else "memory.usage_in_bytes"))


def _disk_bytes(container: Any) -> tuple[int, int]:
    """Bytes read and written by the container's processes, from blkio (cgroup v1) or io.stat (v2)."""
    read = written = 0
    if _cgroup2_only():
        for line in str(_read(container.get_cgroup_item, "io.stat") or "").splitlines():
            fields = dict(f.split("=", 1) for f in line.split()[1:] if "=" in f)
            read += _int(fields.get("rbytes"))
            written += _int(fields.get("wbytes"))
        return read, written
    for line in str(_read(container.get_cgroup_item, "blkio.throttle.io_service_bytes") or "").splitlines():
        parts = line.split()
        if len(parts) == 3 and parts[1] == "Read":
            read += _int(parts[2])
        elif len(parts) == 3 and parts[1] == "Write":
            written += _int(parts[2])
    return read, written


def _net_counter(interface: Any, counter: str) -> int:
    if not interface:
        return 0
    try:
        return int(Path(f"/sys/class/net/{interface}/statistics/{counter}").read_text())
    except (OSError, ValueError):
        return 0


def _uptime_s(pid: int) -> int | None:
    """Seconds since the process started (the container's init: since the container started), from /proc."""
    try:
        # Field 22 of /proc/PID/stat, after the parenthesised command name (which may hold spaces).
        started_ticks = int(Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[19])
        host_uptime_s = float(Path("/proc/uptime").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return max(0, int(host_uptime_s - started_ticks / os.sysconf("SC_CLK_TCK")))


def _tree_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(root, name)).st_size
    return total

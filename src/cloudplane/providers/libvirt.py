"""The libvirt provider: KVM/QEMU domains on a libvirt host, driven through libvirt-python.

A server is a domain with its own qcow2 overlay of the image's base volume and a cloud-init NoCloud seed, both
volumes of one storage pool, made through the storage API so that a remote host works like a local one. Tested
on libvirt's daemonless `test:///` driver; `qemu:///system` is the production target.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import logging
import math
import re
import threading
import time
import uuid
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator, Callable, Sequence
from enum import IntEnum
from typing import Any, TypeVar

from cachetools import TTLCache

from cloudplane.domain.errors import NotFound, ProviderError
from cloudplane.providers import cloudinit
from cloudplane.providers.base import (
    SUPPORTED,
    Capabilities,
    CreateRequest,
    Feature,
    Features,
    FirewallRule,
    Machine,
    MachineState,
    Metrics,
    RebuildRequest,
    SnapshotInfo,
    not_implemented_yet,
    pages_of,
    refusal,
    refused,
    token_hash,
)
from cloudplane.providers.terminal import Terminal

try:
    import libvirt
except ImportError:  # the provider refuses to start without it; importing this module stays cheap and safe
    libvirt = None

T = TypeVar("T")
log = logging.getLogger(__name__)

NAMESPACE = "https://cloudplane.dev/xmlns/libvirt/1"
NAMESPACE_PREFIX = "cloudplane"
DOMAIN_PREFIX = "cp-"
SNAPSHOT_PREFIX = "cps-"
# Fixed so that the same token gives the same domain UUID on every control-plane process.
TOKEN_UUID_NAMESPACE = uuid.UUID("6a1f0c9e-3b1d-5f7a-9c2e-7d4b8a0e1f23")
# An image is the pool's volume `<slug>.qcow2`; a machine's own volumes are `<domain>.qcow2` and `<domain>-seed.iso`,
# and after a rebuild `<domain>-<hash of the rebuild token>.qcow2` and `...-seed.iso`.
IMAGE_SUFFIX = ".qcow2"
MACHINE_VOLUME = re.compile(r"^(cp-[0-9a-f]{16})(-[0-9a-f]{16})?(\.qcow2|-seed\.iso)$")
GIB = 1024**3
# The virtio channel the QEMU guest agent listens on.
GUEST_AGENT = "org.qemu.guest_agent.0"
UPLOAD_CHUNK = 256 * 1024
CAPABILITIES_TTL_S = 15.0


class DomainState(IntEnum):
    """libvirt's virDomainState, mirrored so that the state table does not need libvirt imported."""

    NOSTATE = 0
    RUNNING = 1
    BLOCKED = 2
    PAUSED = 3
    SHUTDOWN = 4
    SHUTOFF = 5
    CRASHED = 6
    PMSUSPENDED = 7


STATES: dict[DomainState, MachineState] = {
    DomainState.NOSTATE: MachineState.PROVISIONING,
    DomainState.RUNNING: MachineState.RUNNING,
    DomainState.BLOCKED: MachineState.RUNNING,  # waiting on I/O: up as far as anyone outside can tell
    DomainState.PAUSED: MachineState.SUSPENDED,  # frozen in memory by `suspend`; `resume` thaws it, `stop` powers it off
    DomainState.SHUTDOWN: MachineState.STOPPING,  # the guest is shutting down after an ACPI request
    DomainState.SHUTOFF: MachineState.STOPPED,
    DomainState.CRASHED: MachineState.ERROR,
    DomainState.PMSUSPENDED: MachineState.STOPPED,  # suspended to RAM by the guest; `start` wakes it
}
PENDING_STATES = frozenset({DomainState.NOSTATE, DomainState.SHUTDOWN})
FAILED_STATES = frozenset({DomainState.CRASHED})
ACTIVE_STATES = frozenset({DomainState.RUNNING, DomainState.BLOCKED})


def domain_name(token: str) -> str:
    return f"{DOMAIN_PREFIX}{token_hash(token)}"


def snapshot_name(token: str) -> str:
    return f"{SNAPSHOT_PREFIX}{token_hash(token)}"


def disk_volume_name(domain: str) -> str:
    return f"{domain}.qcow2"


def seed_volume_name(domain: str) -> str:
    return f"{domain}-seed.iso"


def _error_code(error: Exception) -> int | None:
    return error.get_error_code() if libvirt is not None and isinstance(error, libvirt.libvirtError) else None


def _codes(*names: str) -> frozenset[int]:
    return frozenset(getattr(libvirt, n) for n in names if libvirt is not None and hasattr(libvirt, n))


class LibvirtProvider:
    """Machines are libvirt domains marked with Cloudplane metadata; domains without it are never touched.

    A machine's ref is its domain UUID; a snapshot's ref is `<domain uuid>/<snapshot name>`. Calls run in a
    worker thread on one connection per provider, one at a time. Images are the base volumes `<slug>.qcow2` of
    `pool`; each machine boots from its own overlay of one, sized to the plan, and gets its hostname and root's
    SSH keys from a NoCloud seed on a CD-ROM, so images must run cloud-init. Public addresses do not exist on a
    libvirt host: a machine's private_ipv4 is its first IPv4 DHCP lease on `network`, None when it has none.
    """

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
            Feature.RESIZE: not_implemented_yet("libvirt"),
            Feature.SUSPEND: SUPPORTED,
            Feature.RESUME: SUPPORTED,
            Feature.CONSOLE: not_implemented_yet("libvirt"),
            Feature.FIREWALL: not_implemented_yet("libvirt"),
            Feature.EXTRA_IPS: refused(
                "not implemented yet on libvirt: a guest's extra address needs its network's DHCP host entry and "
                "the guest's own configuration"
            ),
            # Through the QEMU guest agent, on the channel every domain made here has; the image must run it.
            Feature.RESET_PASSWORD: SUPPORTED,
        },
    )

    def __init__(
        self,
        uri: str,
        *,
        name: str = "libvirt",
        pool: str = "default",
        network: str | None = "default",
        domain_type: str | None = None,
        stop_timeout_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if libvirt is None or cloudinit.pycdlib is None:
            raise ProviderError(
                "libvirt-python or pycdlib is not installed: pip install 'cloudplane[libvirt]' (needs libvirt-dev)",
                retryable=False,
            )
        self.uri = uri
        self.name = name
        self.pool = pool
        self.network = network
        self._domain_type = domain_type
        self.stop_timeout_s = stop_timeout_s
        self._conn: Any = None
        self._test_driver: bool | None = None
        # One entry: the host's answer, kept for CAPABILITIES_TTL_S. The last answer outlives it, for when the host
        # cannot be reached. Its own lock: concurrent askers wait for one read rather than each reading the host.
        self._capabilities_cache: TTLCache[str, Capabilities] = TTLCache(maxsize=1, ttl=CAPABILITIES_TTL_S, timer=clock)
        self._capabilities_lock = threading.Lock()
        self._last_capabilities: Capabilities | None = None
        self._lock = threading.Lock()
        # cpu_time and wall clock at the previous metrics call, per domain: cpu_percent needs two samples.
        self._cpu_samples: dict[str, tuple[int, float]] = {}
        # libvirt prints every error to stderr by default; ours are raised as exceptions instead.
        libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
        self._retryable_errors = _codes(
            "VIR_ERR_SYSTEM_ERROR",
            "VIR_ERR_RPC",
            "VIR_ERR_NO_CONNECT",
            "VIR_ERR_OPERATION_TIMEOUT",
            "VIR_ERR_AGENT_UNRESPONSIVE",
            "VIR_ERR_OPERATION_FAILED",
        )
        self._connection_errors = _codes("VIR_ERR_SYSTEM_ERROR", "VIR_ERR_RPC", "VIR_ERR_NO_CONNECT")
        self._unsupported_flag_errors = _codes(
            "VIR_ERR_INVALID_ARG", "VIR_ERR_NO_SUPPORT", "VIR_ERR_ARGUMENT_UNSUPPORTED"
        )

    @property
    def capabilities(self) -> Capabilities:
        """The pool's images and the host's cores and memory, read again once `CAPABILITIES_TTL_S` has passed:
        every server action asks, and a read refreshes the pool. When the host cannot be reached: the last answer,
        or no image at all, never a guess."""
        with self._capabilities_lock:
            if (capabilities := self._capabilities_cache.get(self.uri)) is not None:
                return capabilities
            try:
                capabilities = self._locked(self._read_capabilities)
            except ProviderError as error:
                log.warning("libvirt provider %s: cannot read the host's capabilities: %s", self.name, error)
                capabilities = self._last_capabilities or Capabilities(images=frozenset())
            # A failed read is not tried again before the TTL either: every server action asks.
            self._capabilities_cache[self.uri] = self._last_capabilities = capabilities
            return capabilities

    def _read_capabilities(self) -> Capabilities:
        _model, memory_mb, cpus, *_ = self._connection().getInfo()
        return Capabilities(
            images=frozenset(self._images(self._pool(), refresh=True)), max_cpu=cpus, max_ram_mb=memory_mb
        )

    def images(self) -> list[str]:
        """The image slugs the pool has: its volumes `<slug>.qcow2`, other than machines' own."""
        return self._locked(lambda: self._images(self._pool(), refresh=True))

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                finally:
                    self._conn = None

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a blocking libvirt call in a thread, under the lock, with libvirt errors turned into ours."""
        return await asyncio.to_thread(self._locked, fn, *args)

    def _locked(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            try:
                return fn(*args)
            except libvirt.libvirtError as error:
                code = _error_code(error)
                if code in self._connection_errors:
                    self._conn = None  # reopen on the next call rather than reuse a dead connection
                raise ProviderError(
                    f"libvirt ({self.uri}): {error}", retryable=code in self._retryable_errors, libvirt_code=code
                ) from error

    def _connection(self) -> Any:
        if self._conn is None:
            self._conn = libvirt.open(self.uri)
        return self._conn

    def _is_test_driver(self) -> bool:
        if self._test_driver is None:
            self._test_driver = self._connection().getType().upper() == "TEST"
        return self._test_driver

    def _type(self) -> str:
        if self._domain_type is None:
            self._domain_type = "test" if self._is_test_driver() else "kvm"
        return self._domain_type

    # -- storage ---------------------------------------------------------------------------------------------

    def _pool(self) -> Any:
        try:
            pool = self._connection().storagePoolLookupByName(self.pool)
        except libvirt.libvirtError as error:
            if _error_code(error) == libvirt.VIR_ERR_NO_STORAGE_POOL:
                raise ProviderError(
                    f"libvirt ({self.uri}) has no storage pool {self.pool!r}: define and start one "
                    f"(virsh pool-define-as {self.pool} dir --target /var/lib/libvirt/images)",
                    retryable=False,
                ) from None
            raise
        if not pool.isActive():
            raise ProviderError(
                f"The storage pool {self.pool!r} of {self.uri} is not active: virsh pool-start {self.pool}",
                retryable=False,
            )
        return pool

    @staticmethod
    def _images(pool: Any, *, refresh: bool = False) -> list[str]:
        if refresh:
            # An operator may have copied an image in since libvirt last looked. Best effort: the pool refuses to
            # refresh while another client uploads, and then the volumes it knows are still right.
            try:
                pool.refresh(0)
            except libvirt.libvirtError as error:
                log.info("storage pool %s not refreshed: %s", pool.name(), error)
        return sorted(
            n.removesuffix(IMAGE_SUFFIX)
            for n in pool.listVolumes()
            if n.endswith(IMAGE_SUFFIX) and not MACHINE_VOLUME.match(n)
        )

    @staticmethod
    def _volume_or_none(pool: Any, name: str) -> Any:
        try:
            return pool.storageVolLookupByName(name)
        except libvirt.libvirtError as error:
            if _error_code(error) == libvirt.VIR_ERR_NO_STORAGE_VOL:
                return None
            raise

    def _base_volume(self, pool: Any, image: str) -> Any:
        """The image's base volume; a non-retryable error naming the pool's images when it has no such image."""
        name = f"{image}{IMAGE_SUFFIX}"
        volume = None if MACHINE_VOLUME.match(name) else self._volume_or_none(pool, name)
        if volume is None:
            images = self._images(pool, refresh=True)
            if image not in images:
                raise ProviderError(
                    f"Image {image!r} is not in the libvirt storage pool {self.pool!r} (it has: "
                    f"{', '.join(images) or 'none'}); import it as the volume {name}",
                    retryable=False,
                )
            volume = pool.storageVolLookupByName(name)
        return volume

    def _create_volume(self, pool: Any, xml: ET.Element) -> Any:
        """Creates the volume, or returns the one of that name a create that stopped part way already made."""
        name = xml.findtext("name")
        assert name is not None, "every volume XML built here has a <name>"
        existing = self._volume_or_none(pool, name)
        if existing is not None:
            return existing
        try:
            return pool.createXML(ET.tostring(xml, encoding="unicode"), 0)
        except libvirt.libvirtError as error:
            # Another control-plane process may have made it between our lookup and our create.
            if _error_code(error) == libvirt.VIR_ERR_STORAGE_VOL_EXIST:
                return pool.storageVolLookupByName(name)
            raise

    def _disk_volume(self, pool: Any, name: str, image: str, disk_gb: int) -> Any:
        """The machine's disk `name`: a qcow2 overlay of the image's base volume, `disk_gb` GiB as the guest sees
        it."""
        base = self._base_volume(pool, image)
        _type, base_bytes, _allocation = base.info()
        if disk_gb * GIB < base_bytes:
            raise ProviderError(
                f"Image {image!r} needs a disk of at least {math.ceil(base_bytes / GIB)} GB; the plan has {disk_gb} GB",
                retryable=False,
            )
        base_format = ET.fromstring(base.XMLDesc(0)).find("./target/format")
        volume = ET.Element("volume")
        ET.SubElement(volume, "name").text = name
        ET.SubElement(volume, "capacity", unit="GiB").text = str(disk_gb)
        ET.SubElement(ET.SubElement(volume, "target"), "format", type="qcow2")
        backing = ET.SubElement(volume, "backingStore")
        ET.SubElement(backing, "path").text = base.path()
        ET.SubElement(backing, "format", type=base_format.get("type", "qcow2") if base_format is not None else "qcow2")
        return self._create_volume(pool, volume)

    def _seed_volume(self, pool: Any, name: str, seed: cloudinit.Seed) -> Any:
        """The NoCloud seed: a raw volume the size of the ISO, its content uploaded through libvirt's stream API
        (written again on a retry, which may follow an upload cut short)."""
        iso = seed.iso()
        volume_xml = ET.Element("volume")
        ET.SubElement(volume_xml, "name").text = name
        ET.SubElement(volume_xml, "capacity", unit="bytes").text = str(len(iso))
        ET.SubElement(ET.SubElement(volume_xml, "target"), "format", type="raw")
        volume = self._create_volume(pool, volume_xml)
        self._upload(volume, iso)
        return volume

    def _upload(self, volume: Any, data: bytes) -> None:
        if self._is_test_driver():
            return  # the test driver keeps volumes as records without content and has no upload
        stream = self._connection().newStream(0)
        try:
            volume.upload(stream, 0, len(data), 0)
            sent = 0
            while sent < len(data):
                sent += stream.send(data[sent : sent + UPLOAD_CHUNK])
            stream.finish()
        except BaseException:
            try:
                stream.abort()
            except libvirt.libvirtError:
                pass  # the upload's own error is the one to report
            raise

    def _delete_volumes(self, pool: Any, domain: str) -> None:
        """Every volume of the machine: its first disk and seed and those of its rebuilds."""
        for name in sorted({disk_volume_name(domain), seed_volume_name(domain), *self._volumes_of(pool, domain)}):
            self._delete_volume(pool, name)

    @staticmethod
    def _volumes_of(pool: Any, domain: str) -> list[str]:
        return [n for n in pool.listVolumes() if (m := MACHINE_VOLUME.match(n)) and m.group(1) == domain]

    def _delete_volume(self, pool: Any, name: str) -> None:
        volume = self._volume_or_none(pool, name)
        if volume is None:
            return
        try:
            volume.delete(0)
        except libvirt.libvirtError as error:
            if _error_code(error) != libvirt.VIR_ERR_NO_STORAGE_VOL:
                raise

    @staticmethod
    def _metadata(dom: Any) -> ET.Element | None:
        try:
            raw = dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, NAMESPACE)
        except libvirt.libvirtError as error:
            if _error_code(error) == libvirt.VIR_ERR_NO_DOMAIN_METADATA:
                return None
            raise
        return ET.fromstring(raw)

    def _lookup(self, ref: str) -> Any:
        """The Cloudplane domain with this UUID; NotFound for unknown refs and for domains Cloudplane did not make."""
        try:
            dom = self._connection().lookupByUUIDString(ref)
        except libvirt.libvirtError as error:
            if _error_code(error) in _codes("VIR_ERR_NO_DOMAIN", "VIR_ERR_INVALID_ARG"):
                raise NotFound(f"No libvirt machine {ref}", ref=ref) from None
            raise
        if self._metadata(dom) is None:
            raise NotFound(f"No libvirt machine {ref}", ref=ref)
        return dom

    def _lookup_or_none(self, ref: str) -> Any:
        try:
            return self._lookup(ref)
        except NotFound:
            return None

    @staticmethod
    def _state(dom: Any) -> DomainState:
        return DomainState(dom.state()[0])

    def _private_ipv4(self, dom: Any) -> str | None:
        if self._state(dom) not in ACTIVE_STATES:
            return None
        try:
            interfaces = dom.interfaceAddresses(libvirt.VIR_DOMAIN_INTERFACE_ADDRESSES_SRC_LEASE) or {}
        except libvirt.libvirtError:
            return None  # no network or no lease yet: an address is not part of the machine's state
        for interface in interfaces.values():
            for address in interface.get("addrs") or []:
                if address.get("type") == libvirt.VIR_IP_ADDR_TYPE_IPV4:
                    return address["addr"]
        return None

    def _machine(self, dom: Any) -> Machine:
        meta = self._metadata(dom)
        assert meta is not None
        return Machine(
            ref=dom.UUIDString(),
            state=STATES[self._state(dom)],
            hostname=meta.get("hostname", ""),
            public_ipv4=None,
            private_ipv4=self._private_ipv4(dom),
            token=meta.get("token"),
        )

    def _find(self, token: str) -> Any:
        try:
            dom = self._connection().lookupByName(domain_name(token))
        except libvirt.libvirtError as error:
            if _error_code(error) == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise
        meta = self._metadata(dom)
        return dom if meta is not None and meta.get("token") == token else None

    def domain_xml(self, request: CreateRequest, disk_path: str, seed_path: str) -> str:
        """The domain definition: vcpus, memory, the qcow2 disk on virtio, the seed as a CD-ROM, one virtio NIC, a
        serial console, Cloudplane metadata.

        The CD-ROM sits on virtio-scsi, which works on the pc and q35 machine types and which the kernels of cloud
        images carry (Debian's cloud kernel has no AHCI driver for a SATA CD-ROM).
        """
        name = domain_name(request.token)
        domain = ET.Element("domain", type=self._type())
        ET.SubElement(domain, "name").text = name
        ET.SubElement(domain, "uuid").text = str(uuid.uuid5(TOKEN_UUID_NAMESPACE, request.token))
        ET.SubElement(domain, "title").text = request.name
        ET.SubElement(domain, "memory", unit="MiB").text = str(request.ram_mb)
        ET.SubElement(domain, "vcpu").text = str(request.cpu)
        instance = ET.SubElement(ET.SubElement(domain, "metadata"), f"{{{NAMESPACE}}}instance")
        instance.attrib.update(
            token=request.token,
            hostname=request.hostname,
            image=request.image,
            location=request.location,
            disk_gb=str(request.disk_gb),
        )
        for key in request.ssh_public_keys:
            ET.SubElement(instance, f"{{{NAMESPACE}}}ssh-key").text = key
        os_ = ET.SubElement(domain, "os")
        ET.SubElement(os_, "type", arch="x86_64").text = "hvm"
        ET.SubElement(os_, "boot", dev="hd")
        features = ET.SubElement(domain, "features")
        ET.SubElement(features, "acpi")  # without it the guest never hears the shutdown `stop` asks for
        ET.SubElement(features, "apic")
        devices = ET.SubElement(domain, "devices")
        disk = ET.SubElement(devices, "disk", type="file", device="disk")
        ET.SubElement(disk, "driver", name="qemu", type="qcow2")
        ET.SubElement(disk, "source", file=disk_path)
        ET.SubElement(disk, "target", dev="vda", bus="virtio")
        ET.SubElement(devices, "controller", type="scsi", index="0", model="virtio-scsi")
        cdrom = ET.SubElement(devices, "disk", type="file", device="cdrom")
        ET.SubElement(cdrom, "driver", name="qemu", type="raw")
        ET.SubElement(cdrom, "source", file=seed_path)
        ET.SubElement(cdrom, "target", dev="sda", bus="scsi")
        ET.SubElement(cdrom, "readonly")
        if self.network is not None:
            interface = ET.SubElement(devices, "interface", type="network")
            ET.SubElement(interface, "source", network=self.network)
            ET.SubElement(interface, "model", type="virtio")
        # The QEMU guest agent's channel: set_root_password speaks to the agent (qemu-guest-agent) in the guest.
        ET.SubElement(ET.SubElement(devices, "channel", type="unix"), "target", type="virtio", name=GUEST_AGENT)
        ET.SubElement(ET.SubElement(devices, "serial", type="pty"), "target", port="0")
        ET.SubElement(ET.SubElement(devices, "console", type="pty"), "target", type="serial", port="0")
        return ET.tostring(domain, encoding="unicode")

    async def create(self, request: CreateRequest) -> Machine:
        """Make the disk and seed volumes, define the domain and start it. Idempotent on the token, which names
        the domain and its volumes and sits in the domain's metadata.

        An image the pool lacks, or larger than the plan's disk, is refused (not retryable) before anything is made.
        A failure after that (a volume, the upload, the define or the start failing) removes the domain and its
        volumes again, so nothing is left; a retry then starts from scratch. Never defines a second domain for one
        token: the name and UUID derive from it.
        """
        return await self._run(self._create, request)

    def _create(self, request: CreateRequest) -> Machine:
        existing = self._find(request.token)
        if existing is not None:
            return self._machine(existing)
        name = domain_name(request.token)
        pool = self._pool()
        try:
            disk = self._disk_volume(pool, disk_volume_name(name), request.image, request.disk_gb)
            seed = self._seed_volume(
                pool,
                seed_volume_name(name),
                cloudinit.Seed(
                    instance_id=str(uuid.uuid5(TOKEN_UUID_NAMESPACE, request.token)),
                    hostname=request.hostname,
                    ssh_public_keys=request.ssh_public_keys,
                    root_password_hash=request.root_password_hash,
                ),
            )
            dom = self._connection().defineXML(self.domain_xml(request, disk.path(), seed.path()))
        except BaseException as error:
            # Another control-plane process may have defined it between our lookup and our define: the volumes
            # are that domain's then.
            existing = self._find(request.token) if isinstance(error, libvirt.libvirtError) else None
            if existing is not None:
                return self._machine(existing)
            self._delete_volumes(pool, name)
            raise
        try:
            dom.create()
        except BaseException:
            self._remove(dom)
            raise
        return self._machine(dom)

    async def find_by_token(self, token: str) -> Machine | None:
        return await self._run(lambda: (dom := self._find(token)) and self._machine(dom))

    async def get(self, ref: str) -> Machine | None:
        return await self._run(lambda: (dom := self._lookup_or_none(ref)) and self._machine(dom))

    async def list(self) -> list[Machine]:
        """Domains carrying Cloudplane metadata; any other domain on the host is ignored."""

        def _list() -> list[Machine]:
            doms = self._connection().listAllDomains(0)
            return sorted(
                (self._machine(d) for d in doms if self._metadata(d) is not None), key=lambda m: m.hostname + m.ref
            )

        return await self._run(_list)

    def list_pages(self, size: int) -> AsyncIterator[builtins.list[Machine]]:
        """A host lists its domains in one call; a host holds what its cores and memory fit."""
        return pages_of(self.list, size)

    async def get_many(self, refs: Sequence[str]) -> builtins.list[Machine]:
        def _get_many() -> list[Machine]:
            found = (self._lookup_or_none(ref) for ref in dict.fromkeys(refs))
            return [self._machine(dom) for dom in found if dom is not None]

        return await self._run(_get_many)

    async def start(self, ref: str) -> None:
        """Idempotent. Boots a shut-off domain, resumes a paused one, wakes one the guest suspended."""

        def _start() -> None:
            dom = self._lookup(ref)
            state = self._state(dom)
            if state in ACTIVE_STATES:
                return
            if state == DomainState.PAUSED:
                dom.resume()
            elif state == DomainState.PMSUSPENDED:
                dom.pMWakeup(0)
            elif state == DomainState.SHUTDOWN:
                raise ProviderError(f"Machine {ref} is still shutting down", retryable=True)
            else:
                dom.create()

        await self._run(_start)

    async def stop(self, ref: str) -> None:
        """Idempotent. Asks the guest to shut down (ACPI) and waits up to `stop_timeout_s` for it, then pulls the
        plug (destroy): a guest that ignores ACPI must still stop. Paused or suspended guests cannot react to ACPI
        and are powered off at once. The test driver shuts down immediately."""

        def _request_shutdown() -> bool:
            dom = self._lookup(ref)
            state = self._state(dom)
            if state == DomainState.SHUTOFF:
                return False
            if state in (DomainState.PAUSED, DomainState.PMSUSPENDED, DomainState.CRASHED):
                dom.destroy()
                return False
            if state != DomainState.SHUTDOWN:
                dom.shutdown()
            return self._state(dom) != DomainState.SHUTOFF

        def _force_off_if_still_up() -> bool:
            dom = self._lookup(ref)
            if self._state(dom) == DomainState.SHUTOFF:
                return False
            if time.monotonic() < deadline:
                return True
            dom.destroy()
            return False

        deadline = time.monotonic() + self.stop_timeout_s
        if not await self._run(_request_shutdown):
            return
        while await self._run(_force_off_if_still_up):
            await asyncio.sleep(0.5)

    async def reboot(self, ref: str) -> None:
        """Asks the guest to reboot; only a running machine can. The machine stays RUNNING throughout."""

        def _reboot() -> None:
            dom = self._lookup(ref)
            if self._state(dom) not in ACTIVE_STATES:
                raise ProviderError(f"Cannot reboot a machine that is {STATES[self._state(dom)]}", retryable=False)
            dom.reboot(0)

        await self._run(_reboot)

    async def suspend(self, ref: str) -> None:
        """virDomainSuspend: the domain is paused, its memory kept by the host (it does not outlive a host reboot;
        managedSave would, at the cost of writing the memory to disk)."""

        def _suspend() -> None:
            dom = self._lookup(ref)
            state = self._state(dom)
            if state == DomainState.PAUSED:
                return
            if state not in ACTIVE_STATES:
                raise ProviderError(f"Cannot suspend a machine that is {STATES[state]}", retryable=False)
            dom.suspend()

        await self._run(_suspend)

    async def resume(self, ref: str) -> None:
        def _resume() -> None:
            dom = self._lookup(ref)
            state = self._state(dom)
            if state in ACTIVE_STATES:
                return
            if state != DomainState.PAUSED:
                raise ProviderError(f"Cannot resume a machine that is {STATES[state]}", retryable=False)
            dom.resume()

        await self._run(_resume)

    async def set_firewall(self, ref: str, rules: Sequence[FirewallRule]) -> None:
        # An nwfilter per domain would do it; until then the feature is refused up front.
        raise refusal(self, Feature.FIREWALL)

    async def add_address(self, ref: str, address: str) -> None:
        raise refusal(self, Feature.EXTRA_IPS)

    async def set_root_password(self, ref: str, password_hash: str) -> None:
        """virDomainSetUserPassword with the hash as it is (VIR_DOMAIN_PASSWORD_ENCRYPTED): the guest agent writes
        it into the running guest's /etc/shadow. A guest whose agent does not answer (not installed in the image,
        or still booting) is refused after the usual retries, saying so."""

        def _set_root_password() -> None:
            dom = self._lookup(ref)
            state = self._state(dom)
            if state not in ACTIVE_STATES:
                raise ProviderError(
                    f"Cannot set the root password of a machine that is {STATES[state]}: the guest agent of a running "
                    "machine sets it, so start it first",
                    retryable=False,
                )
            try:
                dom.setUserPassword("root", password_hash, libvirt.VIR_DOMAIN_PASSWORD_ENCRYPTED)
            except libvirt.libvirtError as error:
                code = _error_code(error)
                raise ProviderError(
                    f"The guest agent of {ref} did not set the password ({error}): the image must run "
                    f"qemu-guest-agent on the {GUEST_AGENT} channel",
                    retryable=code in self._retryable_errors,
                    libvirt_code=code,
                ) from error

        await self._run(_set_root_password)

    async def delete(self, ref: str) -> None:
        """Idempotent: an unknown machine is already gone. Powers off, deletes every snapshot, the disk and seed
        volumes, then undefines: a delete cut short leaves the domain, so that its retry finds what is left."""

        def _delete() -> None:
            dom = self._lookup_or_none(ref)
            if dom is not None:
                self._remove(dom)

        await self._run(_delete)

    def _remove(self, dom: Any) -> None:
        if dom.isActive():
            dom.destroy()
        for name in dom.snapshotListNames(0):
            try:
                dom.snapshotLookupByName(name, 0).delete(0)
            except libvirt.libvirtError as error:
                if _error_code(error) != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                    raise
        self._delete_volumes(self._pool(), dom.name())
        # Not every driver knows every flag (the test driver refuses NVRAM): drop the optional ones in turn.
        base = libvirt.VIR_DOMAIN_UNDEFINE_MANAGED_SAVE | libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        for flags in (base | libvirt.VIR_DOMAIN_UNDEFINE_NVRAM, base, 0):
            try:
                dom.undefineFlags(flags)
                return
            except libvirt.libvirtError as error:
                if _error_code(error) == libvirt.VIR_ERR_NO_DOMAIN:
                    return
                if flags == 0 or _error_code(error) not in self._unsupported_flag_errors:
                    raise

    async def snapshot(self, ref: str, token: str) -> SnapshotInfo:
        """Idempotent on the token, which names the snapshot. A libvirt snapshot of a running domain includes its
        memory; `restore` powers the machine off afterwards anyway. size_gb is the machine's disk size, an upper
        bound: libvirt does not report an internal snapshot's size."""

        def _snapshot() -> SnapshotInfo:
            dom = self._lookup(ref)
            name = snapshot_name(token)
            try:
                dom.snapshotLookupByName(name, 0)
            except libvirt.libvirtError as error:
                if _error_code(error) != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                    raise
                snapshot = ET.Element("domainsnapshot")
                ET.SubElement(snapshot, "name").text = name
                ET.SubElement(snapshot, "description").text = f"cloudplane token={token}"
                dom.snapshotCreateXML(ET.tostring(snapshot, encoding="unicode"), 0)
            meta = self._metadata(dom)
            assert meta is not None
            return SnapshotInfo(ref=f"{ref}/{name}", machine_ref=ref, size_gb=int(meta.get("disk_gb", "0")))

        return await self._run(_snapshot)

    @staticmethod
    def _parse_snapshot_ref(snapshot_ref: str) -> tuple[str, str]:
        machine_ref, _, name = snapshot_ref.partition("/")
        if not name.startswith(SNAPSHOT_PREFIX):
            raise NotFound(f"No libvirt snapshot {snapshot_ref}", ref=snapshot_ref)
        return machine_ref, name

    async def delete_snapshot(self, snapshot_ref: str) -> None:
        """Idempotent: an unknown snapshot, or one whose machine is gone, is already deleted."""

        def _delete_snapshot() -> None:
            machine_ref, name = self._parse_snapshot_ref(snapshot_ref)
            dom = self._lookup_or_none(machine_ref)
            if dom is None:
                return
            try:
                dom.snapshotLookupByName(name, 0).delete(0)
            except libvirt.libvirtError as error:
                if _error_code(error) != libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                    raise

        await self._run(_delete_snapshot)

    async def restore(self, ref: str, snapshot_ref: str) -> None:
        """Reverts a stopped machine to the snapshot; the machine stays stopped, whatever state the snapshot holds
        (a snapshot of a running domain is reverted paused, then powered off)."""

        def _restore() -> None:
            dom = self._lookup(ref)
            machine_ref, name = self._parse_snapshot_ref(snapshot_ref)
            if machine_ref != ref:
                raise ProviderError(f"Snapshot {snapshot_ref} does not belong to {ref}", retryable=False)
            if STATES[self._state(dom)] != MachineState.STOPPED:
                raise ProviderError(
                    f"Cannot restore a machine that is {STATES[self._state(dom)]}; stop it first", retryable=False
                )
            try:
                snapshot = dom.snapshotLookupByName(name, 0)
            except libvirt.libvirtError as error:
                if _error_code(error) == libvirt.VIR_ERR_NO_DOMAIN_SNAPSHOT:
                    raise ProviderError(f"No snapshot {snapshot_ref}", retryable=False) from None
                raise
            dom.revertToSnapshot(snapshot, libvirt.VIR_DOMAIN_SNAPSHOT_REVERT_PAUSED)
            if dom.isActive():
                dom.destroy()

        await self._run(_restore)

    async def console(self, ref: str) -> Terminal:
        # Declared refused (Feature.CONSOLE): the serial console through virStream is not written yet.
        raise refusal(self, Feature.CONSOLE)

    async def rebuild(self, ref: str, request: RebuildRequest) -> None:
        """A new overlay of the image's base volume (the plan's size) and a new seed (a new instance id, so that
        cloud-init runs again; the hostname, the request's keys and password hash), both named after the rebuild's
        token, and the domain defined again on them: the same domain, UUID and MAC (so the same lease). Its old disk
        and seed are deleted, unless the domain has snapshots: a qcow2 snapshot lives inside the disk it was taken
        of, so those stay until the machine is deleted. A retry once the domain boots from the token's disk changes
        nothing; one after a failure part way reuses what it made."""
        await self._run(self._rebuild, ref, request)

    def _rebuild(self, ref: str, request: RebuildRequest) -> None:
        dom = self._lookup(ref)
        if self._state(dom) != DomainState.SHUTOFF:
            raise ProviderError(
                f"Cannot rebuild a machine that is {STATES[self._state(dom)]}; stop it first", retryable=False
            )
        pool, name, meta = self._pool(), dom.name(), self._metadata(dom)
        assert meta is not None
        suffix = token_hash(request.token)
        desc = ET.fromstring(dom.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE))
        disk_source = desc.find("./devices/disk[@device='disk']/source")
        seed_source = desc.find("./devices/disk[@device='cdrom']/source")
        assert disk_source is not None and seed_source is not None, "every domain made here has its disk and seed"
        disk = self._disk_volume(pool, f"{name}-{suffix}.qcow2", request.image, int(meta.get("disk_gb", "0")))
        if disk_source.get("file") == disk.path():
            return  # this rebuild is done already
        seed = self._seed_volume(
            pool,
            f"{name}-{suffix}-seed.iso",
            cloudinit.Seed(
                instance_id=str(uuid.uuid5(TOKEN_UUID_NAMESPACE, request.token)),
                hostname=meta.get("hostname", ""),
                ssh_public_keys=request.ssh_public_keys,
                root_password_hash=request.root_password_hash,
            ),
        )
        old = [disk_source.get("file"), seed_source.get("file")]
        disk_source.set("file", disk.path())
        seed_source.set("file", seed.path())
        instance = desc.find(f"./metadata/{{{NAMESPACE}}}instance")
        assert instance is not None
        instance.set("image", request.image)
        for element in instance.findall(f"{{{NAMESPACE}}}ssh-key"):
            instance.remove(element)
        for key in request.ssh_public_keys:
            ET.SubElement(instance, f"{{{NAMESPACE}}}ssh-key").text = key
        self._connection().defineXML(ET.tostring(desc, encoding="unicode"))
        if dom.snapshotNum(0) == 0:
            owned = {pool.storageVolLookupByName(n).path(): n for n in self._volumes_of(pool, name)}
            for path in old:
                if path in owned:  # never a volume this machine does not own
                    self._delete_volume(pool, owned[path])

    async def metrics(self, ref: str) -> Metrics:
        """Counters of a running machine from libvirt's domain stats; all zeros for a stopped one.

        cpu_percent needs two samples, so the first call for a machine reports 0.0. memory_used_mb comes from the
        balloon driver (available - unused, else rss): 0 when the guest has no balloon, as on the test driver.
        Disk and network bytes are sums over the domain's disks and NICs since the domain started.
        """
        return await self._run(self._metrics, ref)

    def _metrics(self, ref: str) -> Metrics:
        dom = self._lookup(ref)
        if not dom.isActive():
            self._cpu_samples.pop(ref, None)
            return Metrics(0.0, 0, 0, 0, 0, 0)
        cpu_time = int(dom.getCPUStats(True, 0)[0].get("cpu_time", 0))
        now = time.monotonic()
        previous = self._cpu_samples.get(ref)
        self._cpu_samples[ref] = (cpu_time, now)
        cpu_percent = 0.0
        if previous is not None and now > previous[1]:
            vcpus = max(1, dom.info()[3])
            cpu_percent = (cpu_time - previous[0]) / ((now - previous[1]) * 1e9 * vcpus) * 100
            cpu_percent = round(min(100.0, max(0.0, cpu_percent)), 1)
        memory = dom.memoryStats()
        if "available" in memory and "unused" in memory:
            memory_used_kib = memory["available"] - memory["unused"]
        else:
            memory_used_kib = memory.get("rss", 0)
        desc = ET.fromstring(dom.XMLDesc(0))
        read = written = received = sent = allocated = 0
        for target in desc.findall("./devices/disk/target"):
            try:
                _rd_req, rd_bytes, _wr_req, wr_bytes, _errs = dom.blockStats(target.get("dev"))
            except libvirt.libvirtError:
                continue  # an empty CD-ROM drive has no stats
            read, written = read + rd_bytes, written + wr_bytes
            with contextlib.suppress(libvirt.libvirtError):
                allocated += dom.blockInfo(target.get("dev"))[1]  # (capacity, allocation, physical)
        for target in desc.findall("./devices/interface/target"):
            try:
                stats = dom.interfaceStats(target.get("dev"))
            except libvirt.libvirtError:
                continue
            received, sent = received + stats[0], sent + stats[4]
        return Metrics(
            cpu_percent=cpu_percent,
            memory_used_mb=int(memory_used_kib // 1024),
            disk_read_bytes=int(read),
            disk_write_bytes=int(written),
            net_rx_bytes=int(received),
            net_tx_bytes=int(sent),
            # What the disks' images hold (a qcow2 overlay: the blocks written), an upper bound of the guest's use.
            disk_used_mb=int(allocated // 2**20),
        )

"""Opt-in: a real guest under qemu:///system with software emulation (TCG), made and removed by LibvirtProvider.

Runs only with CLOUDPLANE_TEST_QEMU=1 (README, "libvirt hosts"): it needs root, libvirtd and QEMU, and boots a
guest built from Debian packages (tests/fixtures/libvirt/build-tiny-guest.sh) whose /init reads the NoCloud seed
and reports on the serial console. It starts libvirtd (and virtlogd) if they are not running and stops them again,
and works in a storage pool, a network and a directory of its own, all removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cloudplane.providers.base import CreateRequest, MachineState

pytestmark = pytest.mark.skipif(
    os.environ.get("CLOUDPLANE_TEST_QEMU") != "1",
    reason="opt-in: CLOUDPLANE_TEST_QEMU=1 boots a real guest under qemu:///system (README, libvirt hosts)",
)

URI = "qemu:///system"
POOL = "cloudplane-test-qemu"
NETWORK = "cloudplane-test-qemu"
BRIDGE = "cptestvirbr0"
IMAGE = "tiny"
LOCATION = "qemu-e2e"
FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "libvirt"
TOOLS = {
    "libvirtd": "libvirt-daemon-system",
    "virtlogd": "libvirt-daemon-system",
    "qemu-system-x86_64": "qemu-system-x86",
    "qemu-img": "qemu-utils",
    "dnsmasq": "dnsmasq-base",
    "busybox": "busybox-static",
    "syslinux": "syslinux syslinux-common",
    "mcopy": "mtools",
    "mkfs.vfat": "dosfstools",
    "sfdisk": "fdisk",
}
READY = re.compile(r"CLOUDPLANE-GUEST-READY hostname=(\S*) keys=(\d+) instance=(\S*) address=(\S*) boot=(\S+)")
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl qemu-e2e@cloudplane"


def connects() -> bool:
    import libvirt

    try:
        libvirt.open(URI).close()
        return True
    except libvirt.libvirtError:
        return False


@pytest.fixture(scope="module")
def libvirtd() -> Iterator[None]:
    """libvirtd and virtlogd running: those already running are left alone, those started here are stopped."""
    try:
        import libvirt
    except ImportError as error:
        pytest.fail(f"libvirt-python is not importable ({error}): pip install 'cloudplane[libvirt]'", pytrace=False)
    missing = sorted({package for tool, package in TOOLS.items() if shutil.which(tool) is None})
    if missing:
        pytest.fail(f"missing system packages: apt-get install {' '.join(missing)}", pytrace=False)
    if os.geteuid() != 0:
        pytest.fail("booting a guest under qemu:///system needs root", pytrace=False)
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    started: list[subprocess.Popen[bytes]] = []
    if not connects():
        # In the foreground, as children of this process: stopped and reaped below, whatever init the host has.
        for daemon in ("virtlogd", "libvirtd"):
            started.append(subprocess.Popen([daemon], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.monotonic() + 30
        while not connects():
            assert time.monotonic() < deadline, "libvirtd did not answer on qemu:///system within 30 s"
            time.sleep(0.2)
    yield
    for process in reversed(started):
        process.terminate()
        process.wait(30)


@dataclass
class Host:
    conn: Any
    pool_dir: Path
    timings: dict[str, float] = field(default_factory=dict)


def remove_leftovers(conn: Any) -> None:
    """A run killed half way leaves its domain, transient pool and network in a running libvirtd: they go, and
    nothing else (another Cloudplane may use this libvirtd)."""
    import libvirt

    for dom in conn.listAllDomains(0):
        if f'location="{LOCATION}"' in dom.XMLDesc(0):
            with contextlib.suppress(libvirt.libvirtError):
                dom.destroy()
            dom.undefineFlags(libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA)
    for lookup, name in ((conn.storagePoolLookupByName, POOL), (conn.networkLookupByName, NETWORK)):
        with contextlib.suppress(libvirt.libvirtError):
            lookup(name).destroy()


def import_image(conn: Any, pool: Any, name: str, path: Path) -> None:
    """As an operator would on a remote host: a volume, its bytes uploaded, the pool refreshed to see a qcow2."""
    size = path.stat().st_size
    volume = pool.createXML(
        f"<volume><name>{name}</name><capacity unit='bytes'>{size}</capacity>"
        "<target><format type='raw'/></target></volume>",
        0,
    )
    stream = conn.newStream(0)
    volume.upload(stream, 0, size, 0)
    with path.open("rb") as image:
        while chunk := image.read(1 << 20):
            sent = 0
            while sent < len(chunk):
                sent += stream.send(chunk[sent:])
    stream.finish()
    pool.refresh(0)


@pytest.fixture(scope="module")
def host(libvirtd: None, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Host]:
    import libvirt

    conn = libvirt.open(URI)
    remove_leftovers(conn)
    # Under /tmp, not pytest's 0700 directory: QEMU runs as libvirt-qemu and must reach the volumes.
    host = Host(conn, Path(tempfile.mkdtemp(prefix="cloudplane-qemu-")))
    host.pool_dir.chmod(0o755)
    started = time.monotonic()
    image = tmp_path_factory.mktemp("tiny-guest") / f"{IMAGE}.qcow2"
    subprocess.run([str(FIXTURES / "build-tiny-guest.sh"), str(image)], check=True, capture_output=True)
    host.timings["build image"] = time.monotonic() - started
    try:
        pool = conn.storagePoolCreateXML(
            f"<pool type='dir'><name>{POOL}</name><target><path>{host.pool_dir}</path></target></pool>", 0
        )
        conn.networkCreateXML(
            f"<network><name>{NETWORK}</name><bridge name='{BRIDGE}' stp='off'/>"
            "<ip address='10.213.251.1' netmask='255.255.255.0'>"
            "<dhcp><range start='10.213.251.10' end='10.213.251.100'/></dhcp></ip></network>"
        )
        started = time.monotonic()
        import_image(conn, pool, f"{IMAGE}.qcow2", image)
        host.timings["import image"] = time.monotonic() - started
        yield host
    finally:
        remove_leftovers(conn)
        shutil.rmtree(host.pool_dir, ignore_errors=True)
        conn.close()
        print("\nqemu e2e timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in host.timings.items()))


def read_console_until_ready(conn: Any, ref: str, timeout_s: float, after_boot: str | None = None) -> re.Match[str]:
    """The guest's serial console, through libvirt's stream API, until /init reports it is up (in a boot other
    than `after_boot`).

    A blocking stream read by a thread of its own: a non-blocking one would need a libvirt event loop."""
    import libvirt

    stream = conn.newStream(0)
    conn.lookupByUUIDString(ref).openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
    output = bytearray()

    def read() -> None:
        with contextlib.suppress(libvirt.libvirtError):  # the stream aborted below
            while data := stream.recv(4096):
                output.extend(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            for match in READY.finditer(output.decode(errors="replace")):
                if match.group(5) != after_boot:
                    return match
            time.sleep(0.2)
    finally:
        with contextlib.suppress(libvirt.libvirtError):
            stream.abort()
    pytest.fail(f"the guest did not report within {timeout_s:.0f} s; console:\n{output.decode(errors='replace')}")


async def test_a_real_guest_boots_from_its_disk_reads_its_seed_and_leaves_nothing(host: Host) -> None:
    from cloudplane.providers.libvirt import LibvirtProvider

    provider = LibvirtProvider(URI, pool=POOL, network=NETWORK, domain_type="qemu", stop_timeout_s=30)
    timings = host.timings
    request = CreateRequest(
        token=f"qemu-e2e-{uuid.uuid4()}",
        name="qemu-e2e",
        hostname="qemu-guest.cloudplane.test",
        cpu=1,
        ram_mb=256,
        disk_gb=1,
        image=IMAGE,
        location=LOCATION,
        ssh_public_keys=(KEY,),
    )
    try:
        assert provider.capabilities.images == {IMAGE}
        started = time.monotonic()
        machine = await provider.create(request)
        timings["create"] = time.monotonic() - started
        assert machine.state == MachineState.RUNNING

        # The guest booted from its overlay disk, found the seed and applied it, and got a lease on the network.
        ready = await asyncio.to_thread(read_console_until_ready, host.conn, machine.ref, 240)
        timings["create to guest ready"] = time.monotonic() - started
        hostname, keys, instance, address, boot = ready.groups()
        assert (hostname, keys, instance) == ("qemu-guest", "1", machine.ref)
        assert address.startswith("10.213.251.")
        deadline = time.monotonic() + 30
        while (found := await provider.get(machine.ref)) and found.private_ipv4 != address:
            assert time.monotonic() < deadline, f"libvirt shows no lease for {address}: {found}"
            await asyncio.sleep(0.5)

        await provider.metrics(machine.ref)
        await asyncio.sleep(1)
        metrics = await provider.metrics(machine.ref)
        assert metrics.disk_read_bytes > 0 and metrics.net_tx_bytes > 0 and metrics.cpu_percent > 0

        started = time.monotonic()
        await provider.reboot(machine.ref)  # ACPI: the guest powers off, libvirt starts it again
        await asyncio.to_thread(read_console_until_ready, host.conn, machine.ref, 240, boot)
        timings["reboot to guest ready"] = time.monotonic() - started
        assert (await provider.get(machine.ref)).state == MachineState.RUNNING  # type: ignore[union-attr]

        started = time.monotonic()
        await provider.stop(machine.ref)
        timings["stop"] = time.monotonic() - started
        assert (await provider.get(machine.ref)).state == MachineState.STOPPED  # type: ignore[union-attr]

        started = time.monotonic()
        snapshot = await provider.snapshot(machine.ref, "qemu-e2e-snapshot")
        timings["snapshot"] = time.monotonic() - started
        # An internal snapshot in the machine's own overlay: the image's base volume stays untouched.
        [overlay] = [p for p in host.pool_dir.iterdir() if p.name.endswith(".qcow2") and p.name != f"{IMAGE}.qcow2"]
        listed = subprocess.run(["qemu-img", "snapshot", "-U", "-l", str(overlay)], capture_output=True, text=True)
        assert snapshot.ref.rpartition("/")[2] in listed.stdout, listed
        started = time.monotonic()
        await provider.restore(machine.ref, snapshot.ref)
        timings["restore"] = time.monotonic() - started
        assert (await provider.get(machine.ref)).state == MachineState.STOPPED  # type: ignore[union-attr]

        started = time.monotonic()
        await provider.delete(machine.ref)
        timings["delete"] = time.monotonic() - started
        assert await provider.get(machine.ref) is None
        assert machine.ref not in {m.ref for m in await provider.list()}
        assert host.conn.storagePoolLookupByName(POOL).listVolumes() == [f"{IMAGE}.qcow2"]
        assert sorted(p.name for p in host.pool_dir.iterdir()) == [f"{IMAGE}.qcow2"]
    finally:
        if (leftover := await provider.find_by_token(request.token)) is not None:  # the test failed half way
            await provider.delete(leftover.ref)
        provider.close()

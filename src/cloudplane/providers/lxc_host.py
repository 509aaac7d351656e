"""What an LXC host needs before Cloudplane can make containers on it: a bridge of its own and local images.

Everything here is idempotent, so `cloudplane host prepare` can run at every boot and the LXC provider can call
`ensure_bridge` before each create. No image is downloaded: the `busybox` image is assembled from the host's own
static BusyBox and Dropbear SSH daemon (Debian packages busybox-static and dropbear-bin).
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cloudplane.domain.addresses import AddressPool, top_quarter
from cloudplane.domain.errors import ProviderError
from cloudplane.providers import lxc_firewall

# Image metadata kept beside each image's rootfs; `lxc_config` lines are appended to every container made from it
# (how its init wants to be told to halt and reboot, which differs between BusyBox and systemd).
IMAGE_FILE = "image.json"
BUSYBOX_IMAGE = "busybox"
BUSYBOX_BINARIES = ("/bin/busybox", "/usr/bin/busybox")
DROPBEAR_BINARY = "/usr/sbin/dropbear"


@dataclass(frozen=True)
class Network:
    """Cloudplane's private bridge and its address range; the host holds the first address (the gateway)."""

    bridge: str
    subnet: ipaddress.IPv4Network

    @classmethod
    def parse(cls, bridge: str, subnet: str) -> Network:
        try:
            network = ipaddress.IPv4Network(subnet, strict=True)
        except ValueError as error:
            raise ProviderError(
                f"lxc_subnet {subnet!r} is not an IPv4 network such as 10.213.0.0/24: {error}", retryable=False
            ) from None
        if network.num_addresses < 8:
            raise ProviderError(f"lxc_subnet {subnet} is too small: give at least a /29", retryable=False)
        if not 1 <= len(bridge) <= 15:
            raise ProviderError(
                f"lxc_bridge {bridge!r} must be 1 to 15 characters (a Linux interface name)", retryable=False
            )
        return cls(bridge, network)

    @property
    def gateway(self) -> ipaddress.IPv4Address:
        return self.subnet.network_address + 1

    @property
    def extra_pool(self) -> AddressPool:
        """The top quarter of the subnet: servers' extra addresses (the default pool of an LXC location)."""
        return top_quarter(self.subnet)

    def container_addresses(self) -> list[ipaddress.IPv4Address]:
        """The addresses new containers get, lowest first: every host address but the gateway and the extra
        addresses' pool, so that a new container never takes an address a server was given as an extra one."""
        pool = self.extra_pool
        return [a for a in self.subnet.hosts() if a != self.gateway and a not in pool]


def _ip(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=False)


def bridge_exists(bridge: str) -> bool:
    return _ip("link", "show", "dev", bridge).returncode == 0


def ensure_bridge(network: Network) -> bool:
    """Create the bridge with the gateway address and bring it up; True if anything had to be done."""
    changed = False
    if not bridge_exists(network.bridge):
        made = _ip("link", "add", "name", network.bridge, "type", "bridge")
        if made.returncode != 0 and not bridge_exists(network.bridge):  # another process may have won the race
            raise ProviderError(
                f"Could not create the bridge {network.bridge}: {made.stderr.strip()} (Cloudplane needs root, or "
                f"CAP_NET_ADMIN, to manage its LXC network)",
                retryable=False,
            )
        changed = True
    gateway = f"{network.gateway}/{network.subnet.prefixlen}"
    if gateway not in _ip("-o", "-4", "addr", "show", "dev", network.bridge).stdout:
        added = _ip("addr", "add", gateway, "dev", network.bridge)
        if added.returncode != 0 and "File exists" not in added.stderr:
            raise ProviderError(
                f"Could not give {network.bridge} the address {gateway}: {added.stderr.strip()}", retryable=False
            )
        changed = True
    if "state DOWN" in _ip("link", "show", "dev", network.bridge).stdout or changed:
        _ip("link", "set", "dev", network.bridge, "up")
    return changed


def remove_bridge(bridge: str) -> None:
    lxc_firewall.remove_table(bridge)
    if bridge_exists(bridge):
        _ip("link", "delete", "dev", bridge)


def image_dir(images_path: Path, slug: str) -> Path:
    return images_path / slug


def read_image(images_path: Path, slug: str) -> dict | None:
    """The image's metadata, or None when the image is not on this host."""
    try:
        meta = json.loads((image_dir(images_path, slug) / IMAGE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return meta if (image_dir(images_path, slug) / "rootfs").is_dir() else None


def local_images(images_path: Path) -> list[str]:
    if not images_path.is_dir():
        return []
    return sorted(p.name for p in images_path.iterdir() if read_image(images_path, p.name) is not None)


def _find_busybox() -> str:
    for candidate in BUSYBOX_BINARIES:
        if os.path.exists(candidate) and "statically linked" in _file_kind(candidate):
            return candidate
    raise ProviderError(
        "No static BusyBox on this host: apt-get install busybox-static (the busybox image is built from it)",
        retryable=False,
    )


def _file_kind(path: str) -> str:
    """'statically linked' or not, read from the ELF header without the `file` command."""
    ldd = subprocess.run(["ldd", path], capture_output=True, text=True, check=False)
    return "statically linked" if ldd.returncode != 0 or "not a dynamic" in ldd.stdout + ldd.stderr else "dynamic"


def _shared_libraries(binary: str) -> list[str]:
    out = subprocess.run(["ldd", binary], capture_output=True, text=True, check=True).stdout
    libraries = []
    for line in out.splitlines():
        parts = line.split()
        path = parts[2] if "=>" in parts and len(parts) > 2 else parts[0] if parts and parts[0].startswith("/") else ""
        if path.startswith("/"):
            libraries.append(path)
    return libraries


INITTAB = """\
::sysinit:/etc/init.d/rcS
::respawn:/usr/sbin/dropbear -F -R -E -p 22
::shutdown:/bin/umount -a -r
"""
RCS = """\
#!/bin/sh
mount -t tmpfs -o mode=0755 tmpfs /run
mount -t tmpfs -o mode=1777 tmpfs /tmp
[ -f /etc/hostname ] && hostname -F /etc/hostname
"""
# BusyBox's init halts on SIGUSR1 and reboots on SIGTERM (LXC's defaults suit systemd, not BusyBox).
BUSYBOX_LXC_CONFIG = ["lxc.signal.halt = SIGUSR1", "lxc.signal.reboot = SIGTERM"]


def build_busybox_image(images_path: Path, *, force: bool = False) -> Path:
    """A few MB root filesystem: static BusyBox as init and shell, Dropbear as the SSH daemon (root login by key).

    Built in a temporary directory and renamed into place, so a half-built image is never seen."""
    target = image_dir(images_path, BUSYBOX_IMAGE)
    if read_image(images_path, BUSYBOX_IMAGE) is not None and not force:
        return target
    busybox = _find_busybox()
    if not os.path.exists(DROPBEAR_BINARY):
        raise ProviderError(
            f"{DROPBEAR_BINARY} is missing: apt-get install dropbear-bin (the busybox image's SSH daemon)",
            retryable=False,
        )
    images_path.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=images_path))
    try:
        rootfs = staging / "rootfs"
        for sub in (
            "bin",
            "sbin",
            "etc/init.d",
            "etc/dropbear",
            "root/.ssh",
            "proc",
            "sys",
            "dev",
            "tmp",
            "run",
            "var/log",
            "usr/sbin",
            "usr/bin",
        ):
            (rootfs / sub).mkdir(parents=True, exist_ok=True)
        os.chmod(rootfs / "root", 0o700)
        os.chmod(rootfs / "root/.ssh", 0o700)
        shutil.copy2(busybox, rootfs / "bin/busybox")
        applets = subprocess.run([busybox, "--list-full"], capture_output=True, text=True, check=True).stdout
        for applet in applets.split():
            link = rootfs / applet
            if applet.endswith("/busybox") or link.exists():
                continue
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(rootfs / "bin/busybox", link.parent))
        init = rootfs / "sbin/init"
        if init.is_symlink() or init.exists():
            init.unlink()
        init.symlink_to("../bin/busybox")
        shutil.copy2(DROPBEAR_BINARY, rootfs / "usr/sbin/dropbear")
        for library in _shared_libraries(DROPBEAR_BINARY):
            destination = rootfs / library.lstrip("/")
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(os.path.realpath(library), destination)
        (rootfs / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (rootfs / "etc/group").write_text("root:x:0:\n")
        (rootfs / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
        os.chmod(rootfs / "etc/shadow", 0o600)
        (rootfs / "etc/shells").write_text("/bin/sh\n/bin/ash\n")
        (rootfs / "etc/fstab").write_text("")
        (rootfs / "etc/inittab").write_text(INITTAB)
        (rootfs / "etc/init.d/rcS").write_text(RCS)
        os.chmod(rootfs / "etc/init.d/rcS", 0o755)
        (staging / IMAGE_FILE).write_text(
            json.dumps(
                {
                    "slug": BUSYBOX_IMAGE,
                    "name": "BusyBox with Dropbear SSH",
                    "distribution": "BusyBox",
                    "version": _busybox_version(busybox),
                    "lxc_config": BUSYBOX_LXC_CONFIG,
                },
                indent=2,
            )
        )
        if target.exists():
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _busybox_version(busybox: str) -> str:
    banner = subprocess.run([busybox], capture_output=True, text=True, check=False).stdout.split("\n", 1)[0]
    parts = banner.split()
    return parts[1].lstrip("v") if len(parts) > 1 else "unknown"


LXCFS_MOUNT = Path("/var/lib/lxcfs")
# The lxcfs processes started here, left running, with the files their output goes to.
_LXCFS_DAEMONS: list[tuple[subprocess.Popen[bytes], IO[bytes]]] = []


def _lxcfs_mounted(mount: Path) -> bool:
    try:
        mounts = Path("/proc/mounts").read_text()
    except OSError:
        return False
    return any(line.split()[1:3] == [str(mount), "fuse.lxcfs"] for line in mounts.splitlines())


def lxcfs_running(mount: Path = LXCFS_MOUNT) -> bool:
    """lxcfs is mounted and answering. A mount whose daemon died stays in /proc/mounts but fails every read
    (ENOTCONN); containers started over it would see the host's totals, so it does not count as running."""
    if not _lxcfs_mounted(mount):
        return False
    try:
        (mount / "proc" / "meminfo").stat()
    except OSError:
        return False
    return True


def lxcfs_pidfile(mount: Path) -> Path:
    """lxcfs locks a pidfile: one per mount, so a second lxcfs (on a mount of a test's own) can run beside it."""
    return Path("/run/lxcfs.pid") if mount == LXCFS_MOUNT else mount.with_name(mount.name + ".pid")


def ensure_lxcfs(timeout_s: float = 5.0, mount: Path = LXCFS_MOUNT) -> str:
    """Start lxcfs if it is installed and not running, so containers see their own limits in /proc/meminfo,
    /proc/cpuinfo (by their CPU quota) and /proc/uptime; LXC's lxcfs hooks mount it into every container started
    afterwards. On a systemd host the lxcfs package runs it already. Returns "running", "started" or
    "not installed" (containers then see the host's totals, while their limits still hold).

    lxcfs is a host-wide service shared by every LXC user on the machine, so nothing here stops it again: a test
    run that stopped "its" lxcfs would pull it from under another run's containers."""
    if lxcfs_running(mount):
        return "running"
    binary = shutil.which("lxcfs")
    if binary is None:
        return "not installed"
    if _lxcfs_mounted(mount):  # its daemon died: the stale mount goes before a new one takes its place
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)
    mount.mkdir(parents=True, exist_ok=True)
    # Run in the foreground (-f) of a session of its own: the process started is the daemon itself, whether or not
    # this lxcfs would fork, and it outlives this process, as a service should. Its output goes to a file, never a
    # pipe (a pipe a daemon keeps open never ends). Both are kept so Python never warns they are still open.
    output = tempfile.TemporaryFile()
    daemon = subprocess.Popen(
        [binary, "-f", "--enable-cfs", "--pidfile", str(lxcfs_pidfile(mount)), str(mount)], stdout=output,
        stderr=output, stdin=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    deadline = time.monotonic() + timeout_s
    while not lxcfs_running(mount):
        if daemon.poll() is not None or time.monotonic() > deadline:
            daemon.kill()
            daemon.wait()
            output.seek(0)
            said = output.read().decode(errors="replace").strip()
            output.close()
            raise ProviderError(
                f"lxcfs did not start: {said or 'no error shown'} (it needs /dev/fuse)", retryable=False
            )
        time.sleep(0.05)
    _LXCFS_DAEMONS.append((daemon, output))
    return "started"


@dataclass(frozen=True)
class PrepareReport:
    bridge: str
    gateway: str
    bridge_created: bool
    images: list[str]
    lxcfs: str


def prepare_host(network: Network, lxc_path: Path, images_path: Path, *, rebuild_images: bool = False) -> PrepareReport:
    """Everything the LXC provider needs on this host, done idempotently."""
    if shutil.which("lxc-start") is None:
        raise ProviderError("LXC is not installed: apt-get install lxc", retryable=False)
    changed = ensure_bridge(network)
    lxc_path.mkdir(parents=True, exist_ok=True)
    os.chmod(lxc_path, 0o711)
    build_busybox_image(images_path, force=rebuild_images)
    lxcfs = ensure_lxcfs()
    return PrepareReport(network.bridge, str(network.gateway), changed, local_images(images_path), lxcfs)

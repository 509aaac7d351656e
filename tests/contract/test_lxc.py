"""What the LXC provider promises beyond the driver contract: real limits, addresses, SSH, clean removal."""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from cloudplane.domain.errors import ProviderError
from cloudplane.providers import lxc_firewall, lxc_host
from cloudplane.providers.base import CreateRequest, FirewallRule, MachineState, RebuildRequest
from tests.conftest import LXC_TEST_BRIDGE, LxcTestHost, destroy_lxc_leftovers, lxc_test_network

from .test_provider_contract import converse, request_for


@pytest.fixture
def provider(lxc_host_ready: LxcTestHost, tmp_path: Path) -> Any:
    provider = lxc_host_ready.provider(tmp_path / "lxc")
    yield provider
    destroy_lxc_leftovers(provider)


def veths_on_bridge() -> set[str]:
    out = subprocess.run(
        ["ip", "-o", "link", "show", "master", LXC_TEST_BRIDGE], capture_output=True, text=True, check=True
    ).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines() if line.strip()}


async def veth_gone(veth: str, timeout_s: float = 5.0) -> None:
    """The kernel removes a dead container's veth when it tears its network namespace down, asynchronously."""
    deadline = time.monotonic() + timeout_s
    while veth in veths_on_bridge():
        assert time.monotonic() < deadline, f"{veth} is still on the bridge {timeout_s} s after the delete"
        await asyncio.sleep(0.05)


def ssh_keypair(tmp_path: Path) -> tuple[Path, str]:
    key = tmp_path / "id_ed25519"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key, key.with_suffix(".pub").read_text().strip()


def ssh(key: Path, address: str, command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "ssh", "-i", str(key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
            "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR", "-o", "ConnectTimeout=5",
            f"root@{address}", command,
        ],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip


def wait_for_port(address: str, port: int = 22, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((address, port), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


async def test_container_has_the_plans_limits_its_address_hostname_and_keys(provider: Any, tmp_path: Path) -> None:
    key, public_key = ssh_keypair(tmp_path)
    request = CreateRequest(
        token="limits", name="web", hostname="web-1.example.test", cpu=1, ram_mb=384, disk_gb=5,
        image="busybox", location="lab", ssh_public_keys=(public_key,),
    )  # fmt: skip
    machine = await provider.create(request)
    assert machine.state == MachineState.RUNNING
    import lxc

    container = lxc.Container(machine.ref, str(provider.config.lxc_path))
    assert int(container.get_cgroup_item("memory.limit_in_bytes")) == 384 * 2**20
    assert int(container.get_cgroup_item("cpu.cfs_quota_us")) == int(container.get_cgroup_item("cpu.cfs_period_us"))
    assert machine.public_ipv4 in {str(a) for a in provider.config.network.container_addresses()}
    await asyncio.to_thread(wait_for_port, machine.public_ipv4)
    done = await asyncio.to_thread(ssh, key, machine.public_ipv4, "hostname; cat /proc/1/comm; id -u")
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["web-1.example.test", "init", "0"]
    # lxcfs: inside, /proc shows the plan's memory and CPUs (by the CFS quota), not the host's.
    seen = await asyncio.to_thread(
        ssh, key, machine.public_ipv4, "head -1 /proc/meminfo; grep -c ^processor /proc/cpuinfo"
    )
    assert seen.stdout.split() == ["MemTotal:", str(384 * 1024), "kB", "1"], seen.stdout
    # A key that was not chosen is refused.
    (tmp_path / "other").mkdir()
    other, _ = ssh_keypair(tmp_path / "other")
    assert (await asyncio.to_thread(ssh, other, machine.public_ipv4, "true")).returncode != 0


async def test_concurrent_creates_get_distinct_addresses(provider: Any) -> None:
    machines = await asyncio.gather(*(provider.create(request_for(f"n{i}", "busybox")) for i in range(4)))
    assert len({m.public_ipv4 for m in machines}) == 4
    assert len({m.ref for m in machines}) == 4


async def test_restore_brings_back_the_disk_as_it_was(provider: Any) -> None:
    machine = await provider.create(request_for("disk", "busybox"))
    rootfs = provider.config.lxc_path / machine.ref / "rootfs"
    (rootfs / "root/before.txt").write_text("kept")
    snapshot = await provider.snapshot(machine.ref, "s")  # taken while running: the container is frozen for it
    assert (await provider.get(machine.ref)).state == MachineState.RUNNING
    (rootfs / "root/after.txt").write_text("written after the snapshot")
    await provider.stop(machine.ref)
    await provider.restore(machine.ref, snapshot.ref)
    assert (rootfs / "root/before.txt").read_text() == "kept"
    assert not (rootfs / "root/after.txt").exists()
    await provider.start(machine.ref)
    assert (await provider.get(machine.ref)).state == MachineState.RUNNING
    # LXC names a restored container's host after the container: the server's own hostname stays.
    config = (provider.config.lxc_path / machine.ref / "config").read_text()
    assert "lxc.uts.name = disk.contract.test\n" in config, config
    assert (rootfs / "etc/hostname").read_text() == "disk.contract.test\n"


async def test_rebuild_gives_a_fresh_disk_at_the_same_address_that_only_the_new_key_opens(
    provider: Any, tmp_path: Path
) -> None:
    (tmp_path / "old").mkdir()
    (tmp_path / "new").mkdir()
    old_key, old_public = ssh_keypair(tmp_path / "old")
    new_key, new_public = ssh_keypair(tmp_path / "new")
    request = CreateRequest(
        token="rebuilt", name="web", hostname="web-2.example.test", cpu=1, ram_mb=256, disk_gb=5,
        image="busybox", location="lab", ssh_public_keys=(old_public,),
    )  # fmt: skip
    machine = await provider.create(request)
    await asyncio.to_thread(wait_for_port, machine.public_ipv4)
    wrote = await asyncio.to_thread(ssh, old_key, machine.public_ipv4, "echo mine > /root/before-rebuild")
    assert wrote.returncode == 0, wrote.stderr
    await provider.snapshot(machine.ref, "before-rebuild")
    await provider.stop(machine.ref)

    password_hash = "$6$rounds=1000$rebuiltsalt$" + "x" * 86
    await provider.rebuild(
        machine.ref,
        RebuildRequest(
            token="rebuild-op", image="busybox", ssh_public_keys=(new_public,), root_password_hash=password_hash
        ),
    )
    assert (await provider.get(machine.ref)).state == MachineState.STOPPED
    rootfs = provider.config.lxc_path / machine.ref / "rootfs"
    assert not (rootfs / "root/before-rebuild").exists()
    assert (rootfs / "etc/shadow").read_text().startswith(f"root:{password_hash}:")
    await provider.start(machine.ref)
    rebuilt = await provider.get(machine.ref)
    assert rebuilt.state == MachineState.RUNNING and rebuilt.public_ipv4 == machine.public_ipv4
    await asyncio.to_thread(wait_for_port, machine.public_ipv4)
    seen = await asyncio.to_thread(ssh, new_key, machine.public_ipv4, "hostname; ls -A /root")
    assert seen.returncode == 0, seen.stderr
    hostname, *in_root = seen.stdout.split()
    assert hostname == "web-2.example.test" and "before-rebuild" not in in_root  # the file written before is gone
    assert (await asyncio.to_thread(ssh, old_key, machine.public_ipv4, "true")).returncode != 0
    import lxc

    container = lxc.Container(machine.ref, str(provider.config.lxc_path))
    assert int(container.get_cgroup_item("memory.limit_in_bytes")) == 256 * 2**20  # its limits kept
    assert [p.name for p in (provider.config.lxc_path / machine.ref).iterdir() if p.name.startswith(".")] == []
    assert len(list((provider.config.lxc_path / machine.ref / "snaps").iterdir())) == 1  # its snapshot kept


async def test_suspend_freezes_the_container_and_resume_thaws_it(provider: Any) -> None:
    import lxc

    machine = await provider.create(request_for("frozen", "busybox"))
    container = lxc.Container(machine.ref, str(provider.config.lxc_path))
    assert container.state == "RUNNING"
    await provider.suspend(machine.ref)
    assert container.state == "FROZEN"  # the freezer cgroup holds every process where it is
    assert (await provider.get(machine.ref)).state == MachineState.SUSPENDED
    await provider.resume(machine.ref)
    assert container.state == "RUNNING"
    assert (await provider.get(machine.ref)).state == MachineState.RUNNING


async def test_delete_leaves_no_container_veth_or_rootfs(provider: Any) -> None:
    import lxc

    machine = await provider.create(request_for("gone", "busybox"))
    veth = lxc.Container(machine.ref, str(provider.config.lxc_path)).get_running_config_item("lxc.net.0.veth.pair")
    assert veth in veths_on_bridge()
    await provider.snapshot(machine.ref, "s")
    await provider.delete(machine.ref)
    await veth_gone(veth)
    assert sorted(p.name for p in provider.config.lxc_path.iterdir() if not p.name.startswith(".cloudplane")) == []
    out = subprocess.run(
        ["lxc-ls", "-P", str(provider.config.lxc_path)], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == ""


async def test_never_touches_containers_it_did_not_make(provider: Any) -> None:
    # A container made with LXC's own tools in the same directory, without Cloudplane's marker.
    path = provider.config.lxc_path / "cp-1111111111111111"
    (path / "rootfs").mkdir(parents=True)
    (path / "config").write_text(f"lxc.rootfs.path = dir:{path / 'rootfs'}\nlxc.uts.name = foreign\n")
    assert await provider.get("cp-1111111111111111") is None
    assert await provider.list() == []
    await provider.delete("cp-1111111111111111")
    assert (path / "config").exists()


async def test_unknown_image_is_refused_with_the_images_it_has(provider: Any) -> None:
    from cloudplane.domain.errors import ProviderError

    with pytest.raises(ProviderError) as refused:
        await provider.create(request_for("x", "windows-2022"))
    assert not refused.value.retryable and "busybox" in refused.value.message


def test_host_prepare_is_idempotent(tmp_path: Path, lxc_host_ready: LxcTestHost) -> None:
    bridge, subnet = lxc_test_network(1)
    network = lxc_host.Network.parse(bridge, subnet)
    try:
        first = lxc_host.prepare_host(network, tmp_path / "lxc", tmp_path / "images")
        second = lxc_host.prepare_host(network, tmp_path / "lxc", tmp_path / "images")
        assert first.bridge_created and not second.bridge_created
        assert first.images == second.images == ["busybox"]
        shown = subprocess.run(["ip", "-o", "-4", "addr", "show", "dev", bridge], capture_output=True, text=True)
        assert f"{network.gateway}/26" in shown.stdout
    finally:
        lxc_host.remove_bridge(bridge)


def test_lxcfs_whose_daemon_died_is_replaced_not_trusted(tmp_path: Path, lxc_host_ready: LxcTestHost) -> None:
    # A mount left by a killed lxcfs stays in /proc/mounts but fails every read: containers started over it would
    # see the host's memory and CPUs. On a mount of the test's own, so the host's lxcfs is never touched.
    mount = tmp_path / "lxcfs"
    assert lxc_host.ensure_lxcfs(mount=mount) == "started"
    try:
        os.kill(int(lxc_host.lxcfs_pidfile(mount).read_text()), 9)
        deadline = time.monotonic() + 5
        while lxc_host.lxcfs_running(mount):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        assert lxc_host.ensure_lxcfs(mount=mount) == "started"
        assert "MemTotal" in (mount / "proc" / "meminfo").read_text()
    finally:
        subprocess.run(["pkill", "-F", str(lxc_host.lxcfs_pidfile(mount))], check=False)
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


@pytest.mark.parametrize(
    ("bridge", "subnet", "says"),
    [("cpbr0", "10.213.0.0/33", "not an IPv4 network"), ("cpbr0", "10.0.0.0/30", "too small"),
     ("a-very-long-bridge-name", "10.213.0.0/24", "15 characters")],
)  # fmt: skip
def test_bad_network_settings_say_what_is_wrong(bridge: str, subnet: str, says: str) -> None:
    from cloudplane.domain.errors import ProviderError

    with pytest.raises(ProviderError, match=says):
        lxc_host.Network.parse(bridge, subnet)


def test_busybox_image_is_small_and_self_contained(lxc_host_ready: LxcTestHost) -> None:
    rootfs = lxc_host_ready.images_path / "busybox" / "rootfs"
    size = sum(os.lstat(os.path.join(r, f)).st_size for r, _, fs in os.walk(rootfs) for f in fs)
    assert size < 32 * 2**20
    # Dropbear's libraries are in the image, so it does not depend on the host's /lib being mounted.
    missing = subprocess.run(
        ["chroot", str(rootfs), "/usr/sbin/dropbear", "-V"], capture_output=True, text=True, check=False
    )
    assert "Dropbear" in missing.stdout + missing.stderr


async def test_a_snapshot_interrupted_half_way_breaks_nothing(provider: Any) -> None:
    # A crash between LXC's copy and the `ts`/`comment` files: liblxc's snapshot_list() would crash the process.
    import lxc

    from cloudplane.providers.lxc import CLONE_FLAGS

    machine = await provider.create(request_for("torn", "busybox"))
    await provider.stop(machine.ref)
    snaps = provider.config.lxc_path / machine.ref / "snaps"
    snaps.mkdir()
    assert lxc.Container(machine.ref, str(provider.config.lxc_path)).clone("snap0", str(snaps), CLONE_FLAGS)
    snapshot = await provider.snapshot(machine.ref, "after-the-crash")
    assert snapshot.ref.startswith(machine.ref)
    await provider.restore(machine.ref, snapshot.ref)
    await provider.delete(machine.ref)
    assert not (provider.config.lxc_path / machine.ref).exists()


async def test_a_cpu_burner_inside_shows_in_the_metrics(provider: Any) -> None:
    # One CPU (the figure is a percentage of the machine's own CPUs), and two busy loops on it: the container gets
    # its whole CPU even while the host's two cores have other work.
    request = replace(request_for("burner", "busybox"), cpu=1)
    machine = await provider.create(request)
    path = str(provider.config.lxc_path)
    burners = [
        subprocess.Popen(
            ["lxc-attach", "-P", path, "-n", machine.ref, "--", "sh", "-c", "while :; do :; done"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for _ in range(2)
    ]
    try:
        await provider.metrics(machine.ref)  # the first reading only sets where CPU time is counted from
        await asyncio.sleep(2)
        metrics = await provider.metrics(machine.ref)
    finally:
        for burner in burners:
            burner.kill()
    assert metrics.cpu_percent > 50, metrics
    assert metrics.disk_used_mb and metrics.uptime_s is not None, metrics  # busybox uses under 1 MB of memory


async def test_the_console_is_a_shell_in_the_container(provider: Any) -> None:
    machine = await provider.create(request_for("console", "busybox"))
    await converse(await provider.console(machine.ref), b"echo $((6*7))-lxc\r", b"\n42-lxc\n")


def _reaches(namespace: str, address: str, port: int) -> bool:
    """A TCP connection from the network namespace to the address succeeds (a dropped SYN times out)."""
    probe = f"import socket; socket.create_connection(({address!r}, {port}), timeout=1).close()"
    return (
        subprocess.run(["ip", "netns", "exec", namespace, sys.executable, "-c", probe], capture_output=True).returncode
        == 0
    )


def provider_on_own_bridge(host: LxcTestHost, tmp_path: Path, index: int) -> tuple[Any, Any]:
    """A provider on a bridge and range of the test's own (`lxc_test_network(index)`); the test makes the bridge."""
    network = lxc_host.Network.parse(*lxc_test_network(index))
    provider = host.provider(tmp_path / "lxc")
    return type(provider)(replace(provider.config, network=network)), network


def listen(provider: Any, ref: str, *ports: int) -> None:
    """BusyBox's httpd in the container on each port (it forks into the background)."""
    for port in ports:
        subprocess.run(
            ["lxc-attach", "-P", str(provider.config.lxc_path), "-n", ref, "--",
             "/bin/busybox", "httpd", "-p", str(port), "-h", "/tmp"],
            check=True, capture_output=True,
        )  # fmt: skip


def wait_until_reaches(namespace: str, address: str, port: int, what: str) -> None:
    deadline = time.monotonic() + 10
    while not _reaches(namespace, address, port):
        assert time.monotonic() < deadline, what


def listen_again(provider: Any, ref: str, namespace: str, *ports: int) -> None:
    """After a start: the listeners again, and the namespace's neighbours forgotten (LXC gives the new veth a new
    MAC address: the one cached is stale)."""
    listen(provider, ref, *ports)
    subprocess.run(["ip", "-n", namespace, "neigh", "flush", "all"], check=True)


@contextlib.contextmanager
def namespace_on_bridge(network: Any, name: str) -> Iterator[str]:
    """A network namespace on the bridge at the subnet's last usable address, playing a machine of the same
    network: bridged traffic, the kind a host firewall most easily misses. Its address, then it is removed."""
    namespace, veth = f"{name}{os.getpid() % 10**6}", f"{name}{os.getpid() % 10**6}h"
    client = str(network.subnet.broadcast_address - 1)
    try:
        for command in (
            ["ip", "netns", "add", namespace],
            ["ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", namespace],
            ["ip", "link", "set", veth, "master", network.bridge, "up"],
            ["ip", "-n", namespace, "addr", "add", f"{client}/{network.subnet.prefixlen}", "dev", "eth0"],
            ["ip", "-n", namespace, "link", "set", "eth0", "up"],
        ):
            subprocess.run(command, check=True, capture_output=True)
        yield namespace
    finally:
        subprocess.run(["ip", "link", "delete", veth], capture_output=True)
        subprocess.run(["ip", "netns", "delete", namespace], capture_output=True)


async def test_firewall_rules_filter_what_reaches_the_container_from_the_bridge(
    lxc_host_ready: LxcTestHost, tmp_path: Path
) -> None:
    # A bridge and range of this test's own, a container listening on two ports, and a namespace on the bridge.
    provider, network = provider_on_own_bridge(lxc_host_ready, tmp_path, 3)
    bridge = network.bridge
    client = str(network.subnet.broadcast_address - 1)
    try:
        lxc_host.ensure_bridge(network)
        machine = await provider.create(request_for("firewall", image="busybox"))
        address = machine.public_ipv4
        listen(provider, machine.ref, 8080, 8081)
        with namespace_on_bridge(network, "cpfw") as namespace:
            wait_until_reaches(namespace, address, 8080, "the container is not reachable before any rule")
            assert _reaches(namespace, address, 8081)

            await provider.set_firewall(machine.ref, [FirewallRule("drop", "tcp", port_from=8080, port_to=8080)])
            # First match decides; what matches no rule is dropped: 8081 too.
            assert not _reaches(namespace, address, 8080) and not _reaches(namespace, address, 8081)

            await provider.set_firewall(
                machine.ref, [FirewallRule("accept", "tcp", source=f"{client}/32", port_from=8080, port_to=8080)]
            )
            assert _reaches(namespace, address, 8080) and not _reaches(namespace, address, 8081)
            # The container's own connections get their replies (the host answers on its gateway address).
            out = subprocess.run(
                ["lxc-attach", "-P", str(provider.config.lxc_path), "-n", machine.ref, "--",
                 "/bin/busybox", "ping", "-c", "1", "-W", "2", str(network.gateway)],
                capture_output=True,
            )  # fmt: skip
            assert out.returncode == 0, out

            # A restart gives the container a new veth; the rules, keyed on its address, still hold.
            await provider.stop(machine.ref)
            await provider.start(machine.ref)
            listen_again(provider, machine.ref, namespace, 8080, 8081)
            wait_until_reaches(namespace, address, 8080, "allowed port unreachable after a restart")
            assert not _reaches(namespace, address, 8081)

            await provider.set_firewall(machine.ref, [])
            assert _reaches(namespace, address, 8081)
        await provider.set_firewall(machine.ref, [FirewallRule("drop", "tcp")])
        await provider.delete(machine.ref)
        table = subprocess.run(
            ["nft", "list", "table", "inet", lxc_firewall.table_name(bridge)], capture_output=True, text=True
        ).stdout
        assert machine.ref not in table and address not in table
    finally:
        destroy_lxc_leftovers(provider)
        lxc_host.remove_bridge(bridge)


async def test_an_extra_address_reaches_the_container_filtered_and_after_a_restart(
    lxc_host_ready: LxcTestHost, tmp_path: Path
) -> None:
    # As the firewall test: a bridge of this test's own, a listener in the container, a namespace on the bridge.
    provider, network = provider_on_own_bridge(lxc_host_ready, tmp_path, 4)
    bridge = network.bridge
    extra = str(network.extra_pool.first)
    try:
        lxc_host.ensure_bridge(network)
        machine = await provider.create(request_for("extra-ip", image="busybox"))
        own = machine.public_ipv4
        assert own not in network.extra_pool  # a new container never takes a pool's address
        before = await provider.snapshot(machine.ref, "before-extra")
        listen(provider, machine.ref, 8080)
        with namespace_on_bridge(network, "cpip") as namespace:
            wait_until_reaches(namespace, own, 8080, "the container is not reachable at its own address")
            assert not _reaches(namespace, extra, 8080)

            await provider.add_address(machine.ref, extra)
            await provider.add_address(machine.ref, extra)  # again: nothing changes
            wait_until_reaches(namespace, extra, 8080, "the extra address does not reach the container")
            # The firewall filters the extra address as it does the container's own.
            await provider.set_firewall(machine.ref, [FirewallRule("drop", "tcp", port_from=8080, port_to=8080)])
            assert not _reaches(namespace, extra, 8080) and not _reaches(namespace, own, 8080)
            await provider.set_firewall(machine.ref, [])

            # In the container's config too: a restart brings it back...
            await provider.stop(machine.ref)
            await provider.start(machine.ref)
            listen_again(provider, machine.ref, namespace, 8080)
            wait_until_reaches(namespace, extra, 8080, "the extra address is gone after a restart")
            wait_until_reaches(namespace, own, 8080, "the container's own address is gone after a restart")
            # ...and so does restoring a snapshot taken before it was added: the address is the server's now.
            await provider.stop(machine.ref)
            await provider.restore(machine.ref, before.ref)
            await provider.start(machine.ref)
            listen_again(provider, machine.ref, namespace, 8080)
            wait_until_reaches(namespace, extra, 8080, "the extra address is gone after a restore")
        # An address the bridge does not carry is refused.
        with pytest.raises(ProviderError, match="subnet"):
            await provider.add_address(machine.ref, "198.51.100.7")
    finally:
        destroy_lxc_leftovers(provider)
        lxc_host.remove_bridge(bridge)


async def test_disk_use_is_measured_once_in_a_while_not_at_every_sample(
    provider: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cloudplane.providers import lxc

    walks: list[Path] = []
    walk = lxc._tree_size

    def counted(path: Path) -> int:
        walks.append(path)
        return walk(path)

    monkeypatch.setattr(lxc, "_tree_size", counted)
    machine = await provider.create(request_for("disk-use", "busybox"))
    first, second = await provider.metrics(machine.ref), await provider.metrics(machine.ref)
    assert first.disk_used_mb == second.disk_used_mb and first.disk_used_mb and len(walks) == 1
    await provider.stop(machine.ref)  # a stopped container's disk may change (a restore, a rebuild): measured again
    await provider.start(machine.ref)
    await provider.metrics(machine.ref)
    assert len(walks) == 2


async def test_the_root_password_is_set_inside_the_running_container(provider: Any, tmp_path: Path) -> None:
    key, public_key = ssh_keypair(tmp_path)
    request = CreateRequest(
        token="password", name="web", hostname="pw.example.test", cpu=1, ram_mb=256, disk_gb=5,
        image="busybox", location="lab", ssh_public_keys=(public_key,),
    )  # fmt: skip
    machine = await provider.create(request)
    await asyncio.to_thread(wait_for_port, machine.public_ipv4)
    rootfs = provider.config.lxc_path / machine.ref / "rootfs"
    others = [ln for ln in (rootfs / "etc/shadow").read_text().splitlines() if not ln.startswith("root:")]

    # The BusyBox image has no chpasswd: root's line of its shadow is written, the other lines kept, private.
    first = "$6$rounds=1000$firstsalt$" + "a" * 86
    await provider.set_root_password(machine.ref, first)
    seen = await asyncio.to_thread(ssh, key, machine.public_ipv4, "cat /etc/shadow")
    assert seen.returncode == 0, seen.stderr
    assert seen.stdout.splitlines() == [f"root:{first}:19000:0:99999:7:::", *others]
    assert (rootfs / "etc/shadow").stat().st_mode & 0o777 == 0o600

    # A system with chpasswd gets the hash on its standard input, from inside: a stand-in records what it read.
    stand_in = rootfs / "usr/sbin/chpasswd"
    stand_in.parent.mkdir(parents=True, exist_ok=True)
    stand_in.write_text('#!/bin/sh\n[ "$1" = -e ] && cat > /root/chpasswd-read\n')
    stand_in.chmod(0o755)
    second = "$6$rounds=1000$secondsalt$" + "b" * 86
    await provider.set_root_password(machine.ref, second)
    read = await asyncio.to_thread(ssh, key, machine.public_ipv4, "cat /root/chpasswd-read")
    assert read.stdout == f"root:{second}\n", read
    assert (await provider.get(machine.ref)).state == MachineState.RUNNING

    await provider.stop(machine.ref)
    with pytest.raises(ProviderError) as stopped:
        await provider.set_root_password(machine.ref, second)
    assert not stopped.value.retryable and "start it first" in stopped.value.message

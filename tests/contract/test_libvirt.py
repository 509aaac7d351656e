"""What the libvirt provider promises beyond the driver contract: a disk and a seed per machine, made and removed
through the storage API, on libvirt's test driver (tests/fixtures/libvirt/testhost.xml)."""

from __future__ import annotations

import contextlib
import dataclasses
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from typing import Any

import pytest

from cloudplane.domain.errors import ProviderError
from cloudplane.providers.base import MachineState, RebuildRequest
from cloudplane.providers.cloudinit import read_iso
from tests.conftest import FakeClock

from .test_provider_contract import libvirt_provider, request_for

GIB = 1024**3
HOST_VOLUMES = ["debian-12.qcow2", "notes.txt", "ubuntu-22-04.qcow2"]


@pytest.fixture
def provider() -> Iterator[Any]:
    provider = libvirt_provider()  # without libvirt-python: a failure (ProviderError), never a skip
    yield provider
    provider.close()


def volumes(provider: Any) -> list[str]:
    return sorted(provider._pool().listVolumes())


def domain_disks(provider: Any, ref: str) -> dict[str, ET.Element]:
    desc = ET.fromstring(provider._connection().lookupByUUIDString(ref).XMLDesc(0))
    return {d.find("target").get("dev"): d for d in desc.findall("./devices/disk")}


async def test_a_machine_boots_from_its_own_overlay_of_the_image_and_gets_a_seed_cdrom(provider: Any) -> None:
    machine = await provider.create(request_for(image="ubuntu-22-04"))
    name = provider._connection().lookupByUUIDString(machine.ref).name()
    pool = provider._pool()
    disk = pool.storageVolLookupByName(f"{name}.qcow2")
    disk_xml = ET.fromstring(disk.XMLDesc(0))
    assert disk_xml.find("./target/format").get("type") == "qcow2"
    assert disk_xml.findtext("./backingStore/path") == pool.storageVolLookupByName("ubuntu-22-04.qcow2").path()
    assert disk.info()[1] == 20 * GIB  # the plan's disk, not the image's 3 GiB
    seed = pool.storageVolLookupByName(f"{name}-seed.iso")

    disks = domain_disks(provider, machine.ref)
    assert disks["vda"].get("device") == "disk" and disks["vda"].find("target").get("bus") == "virtio"
    assert disks["vda"].find("source").get("file") == disk.path()
    assert disks["sda"].get("device") == "cdrom" and disks["sda"].find("readonly") is not None
    assert disks["sda"].find("source").get("file") == seed.path()


async def test_the_seed_carries_the_hostname_and_roots_keys(provider: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    uploaded: dict[str, bytes] = {}
    monkeypatch.setattr(provider, "_upload", lambda volume, data: uploaded.setdefault(volume.name(), data))
    request = dataclasses.replace(request_for("seeded"), root_password_hash="$6$salt$0123456789abcdef")
    machine = await provider.create(request)

    [(volume_name, iso)] = uploaded.items()
    assert volume_name.endswith("-seed.iso")
    assert provider._pool().storageVolLookupByName(volume_name).info()[1] == len(iso)
    label, files = read_iso(iso)
    assert label == "cidata"
    assert f"instance-id: {machine.ref}" in files["meta-data"]
    assert "local-hostname: seeded.contract.test" in files["meta-data"]
    assert files["user-data"].startswith("#cloud-config\n")
    for line in ("hostname: seeded", "fqdn: seeded.contract.test", "disable_root: false", *request.ssh_public_keys):
        assert line in files["user-data"]
    assert request.root_password_hash in files["user-data"]


async def test_delete_removes_the_volumes_with_the_snapshots(provider: Any) -> None:
    machine = await provider.create(request_for())
    await provider.snapshot(machine.ref, "before-delete")
    assert len(volumes(provider)) == len(HOST_VOLUMES) + 2
    await provider.delete(machine.ref)
    assert volumes(provider) == HOST_VOLUMES


def mac_of(provider: Any, ref: str) -> str:
    desc = ET.fromstring(provider._connection().lookupByUUIDString(ref).XMLDesc(0))
    return desc.find("./devices/interface/mac").get("address")


async def test_rebuild_boots_a_new_overlay_of_the_new_image_with_a_new_seed_in_the_same_domain(
    provider: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    uploaded: dict[str, bytes] = {}
    monkeypatch.setattr(provider, "_upload", lambda volume, data: uploaded.__setitem__(volume.name(), data))
    machine = await provider.create(request_for("rebuilt", image="debian-12"))
    dom = provider._connection().lookupByUUIDString(machine.ref)
    name, mac = dom.name(), mac_of(provider, machine.ref)
    old_disk = domain_disks(provider, machine.ref)["vda"].find("source").get("file")
    await provider.stop(machine.ref)
    request = RebuildRequest(
        token="rebuild-op", image="ubuntu-22-04", ssh_public_keys=("ssh-ed25519 AAAANEWKEY new@desk",),
        root_password_hash="$6$rounds=1000$salt$newhash",
    )  # fmt: skip
    with pytest.raises(ProviderError, match="fedora-41") as refused:
        await provider.rebuild(machine.ref, dataclasses.replace(request, image="fedora-41"))
    assert not refused.value.retryable
    assert domain_disks(provider, machine.ref)["vda"].find("source").get("file") == old_disk  # nothing changed

    await provider.rebuild(machine.ref, request)
    pool = provider._pool()
    disks = domain_disks(provider, machine.ref)
    disk = provider._connection().storageVolLookupByPath(disks["vda"].find("source").get("file"))
    assert disk.path() != old_disk and disk.name().startswith(name)
    disk_xml = ET.fromstring(disk.XMLDesc(0))
    assert disk_xml.findtext("./backingStore/path") == pool.storageVolLookupByName("ubuntu-22-04.qcow2").path()
    assert disk.info()[1] == 20 * GIB  # the plan's disk still
    # The same domain, MAC (so the same lease) and hostname; the new image and keys in its metadata.
    after = provider._connection().lookupByUUIDString(machine.ref)
    assert after.name() == name and mac_of(provider, machine.ref) == mac
    assert (await provider.get(machine.ref)).state == MachineState.STOPPED
    meta = provider._metadata(after)
    assert meta.get("image") == "ubuntu-22-04" and meta.get("hostname") == "rebuilt.contract.test"
    # A new seed: a new instance id (cloud-init runs again), the new keys and password hash, the same hostname.
    seed = provider._connection().storageVolLookupByPath(disks["sda"].find("source").get("file"))
    _label, files = read_iso(uploaded[seed.name()])
    _old_label, old_files = read_iso(uploaded[f"{name}-seed.iso"])
    assert (
        files["meta-data"] != old_files["meta-data"] and "local-hostname: rebuilt.contract.test" in files["meta-data"]
    )
    assert (
        "ssh-ed25519 AAAANEWKEY new@desk" in files["user-data"] and "$6$rounds=1000$salt$newhash" in files["user-data"]
    )
    assert "AAAAIContractSuiteKey" not in files["user-data"]
    # Without a snapshot the old disk and seed are gone; a retry changes nothing; delete leaves the pool as it was.
    assert len(volumes(provider)) == len(HOST_VOLUMES) + 2
    await provider.rebuild(machine.ref, request)
    assert domain_disks(provider, machine.ref)["vda"].find("source").get("file") == disk.path()
    await provider.start(machine.ref)
    assert (await provider.get(machine.ref)).state == MachineState.RUNNING
    await provider.delete(machine.ref)
    assert volumes(provider) == HOST_VOLUMES


async def test_a_rebuild_keeps_the_disk_its_snapshots_live_in(provider: Any) -> None:
    machine = await provider.create(request_for())
    await provider.snapshot(machine.ref, "kept")
    old_disk = domain_disks(provider, machine.ref)["vda"].find("source").get("file")
    await provider.stop(machine.ref)
    await provider.rebuild(machine.ref, RebuildRequest(token="rebuild-with-snapshot", image="debian-12"))
    # A qcow2 snapshot lives inside the disk it was taken of: that disk (and its seed) stays while it does.
    assert old_disk in {provider._pool().storageVolLookupByName(v).path() for v in volumes(provider)}
    assert len(volumes(provider)) == len(HOST_VOLUMES) + 4
    await provider.delete(machine.ref)
    assert volumes(provider) == HOST_VOLUMES


@contextlib.contextmanager
def failing(target: Any, attribute: str) -> Iterator[None]:
    import libvirt

    def fail(*args: object, **kwargs: object) -> Any:
        raise libvirt.libvirtError(f"injected: {attribute} failed")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(target, attribute, fail)
        yield


@pytest.mark.parametrize("step", ["upload", "define", "start"])
async def test_a_create_failing_half_way_removes_its_volumes(provider: Any, step: str) -> None:
    import libvirt

    target, attribute = {
        "upload": (provider, "_upload"),
        "define": (libvirt.virConnect, "defineXML"),
        "start": (libvirt.virDomain, "create"),
    }[step]
    request = request_for()
    with failing(target, attribute), pytest.raises(ProviderError):
        await provider.create(request)
    assert volumes(provider) == HOST_VOLUMES
    assert await provider.list() == []
    machine = await provider.create(request)  # the retry starts from scratch
    assert len(domain_disks(provider, machine.ref)) == 2


async def test_an_image_the_pool_lacks_is_refused_naming_the_images_it_has(provider: Any) -> None:
    with pytest.raises(ProviderError) as refused:
        await provider.create(request_for(image="fedora-41"))
    assert not refused.value.retryable
    assert "fedora-41" in str(refused.value) and "(it has: debian-12, ubuntu-22-04)" in str(refused.value)
    assert volumes(provider) == HOST_VOLUMES
    assert await provider.list() == []


async def test_a_disk_smaller_than_the_image_is_refused(provider: Any) -> None:
    with pytest.raises(ProviderError, match="at least 3 GB") as refused:
        await provider.create(dataclasses.replace(request_for(image="ubuntu-22-04"), disk_gb=2))
    assert not refused.value.retryable
    assert volumes(provider) == HOST_VOLUMES


async def test_capabilities_are_the_pools_images_and_the_hosts_size(provider: Any) -> None:
    capabilities = provider.capabilities
    assert capabilities.images == {"debian-12", "ubuntu-22-04"}  # not notes.txt, not a machine's own volumes
    assert (capabilities.max_cpu, capabilities.max_ram_mb) == (8, 16384)
    await provider.create(request_for())
    assert provider.capabilities.images == {"debian-12", "ubuntu-22-04"}


async def test_an_image_imported_later_is_offered_once_the_capabilities_are_read_again() -> None:
    from cloudplane.providers.libvirt import CAPABILITIES_TTL_S

    clock = FakeClock()
    provider = libvirt_provider(clock=clock)
    try:
        assert provider.capabilities.images == {"debian-12", "ubuntu-22-04"}
        provider._pool().createXML(
            "<volume><name>fedora-41.qcow2</name><capacity unit='GiB'>2</capacity>"
            "<target><format type='qcow2'/></target></volume>",
            0,
        )
        clock.now += CAPABILITIES_TTL_S - 0.1
        assert provider.capabilities.images == {"debian-12", "ubuntu-22-04"}  # every server action asks: cached
        clock.now += 0.1
        assert provider.capabilities.images == {"debian-12", "fedora-41", "ubuntu-22-04"}
        machine = await provider.create(request_for(image="fedora-41"))
        assert machine.state == MachineState.RUNNING
    finally:
        provider.close()


def test_a_host_that_cannot_be_reached_keeps_its_last_answer(monkeypatch: pytest.MonkeyPatch) -> None:
    import libvirt

    from cloudplane.providers.libvirt import CAPABILITIES_TTL_S

    clock = FakeClock()
    provider = libvirt_provider(clock=clock)
    try:
        assert provider.capabilities.max_cpu == 8
        reads = []

        def unreachable() -> Any:
            reads.append(clock.now)
            raise libvirt.libvirtError("cannot connect to the host")

        monkeypatch.setattr(provider, "_connection", unreachable)
        clock.now += CAPABILITIES_TTL_S
        capabilities = provider.capabilities
        assert (capabilities.images, capabilities.max_cpu) == ({"debian-12", "ubuntu-22-04"}, 8)
        assert provider.capabilities == capabilities and len(reads) == 1  # not asked again before the TTL
        clock.now += CAPABILITIES_TTL_S
        assert provider.capabilities == capabilities and len(reads) == 2
    finally:
        monkeypatch.undo()
        provider.close()


def test_without_its_pool_the_provider_says_which_is_missing() -> None:
    provider = libvirt_provider(pool="nowhere")
    try:
        assert provider.capabilities.images == frozenset()  # no images served, never a guess
        with pytest.raises(ProviderError, match="no storage pool 'nowhere'") as refused:
            provider.images()
        assert not refused.value.retryable
    finally:
        provider.close()


async def test_suspend_pauses_the_domain_and_resume_runs_it_again(provider: Any) -> None:
    import libvirt

    machine = await provider.create(request_for())
    domain = provider._connection().lookupByUUIDString(machine.ref)
    await provider.suspend(machine.ref)
    assert domain.state()[0] == libvirt.VIR_DOMAIN_PAUSED  # frozen by libvirt, memory kept
    assert (await provider.get(machine.ref)).state == MachineState.SUSPENDED
    await provider.resume(machine.ref)
    assert domain.state()[0] == libvirt.VIR_DOMAIN_RUNNING
    assert (await provider.get(machine.ref)).state == MachineState.RUNNING
    # A paused domain still stops for real: powered off, not left frozen.
    await provider.suspend(machine.ref)
    await provider.stop(machine.ref)
    assert domain.state()[0] == libvirt.VIR_DOMAIN_SHUTOFF


async def test_the_root_password_goes_through_the_guest_agent_on_its_channel(
    provider: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import libvirt

    machine = await provider.create(request_for(image="ubuntu-22-04"))
    dom = provider._connection().lookupByUUIDString(machine.ref)
    channel = ET.fromstring(dom.XMLDesc(0)).find("./devices/channel[@type='unix']/target")
    assert channel is not None and channel.get("name") == "org.qemu.guest_agent.0"
    asked: list[tuple[str, str, int]] = []

    def set_user_password(self: Any, user: str, password: str, flags: int) -> int:
        asked.append((user, password, flags))
        return 0

    monkeypatch.setattr(libvirt.virDomain, "setUserPassword", set_user_password)
    await provider.set_root_password(machine.ref, "$6$salt$hash")
    assert asked == [("root", "$6$salt$hash", libvirt.VIR_DOMAIN_PASSWORD_ENCRYPTED)]  # the hash, as it is

    # A guest whose agent does not answer: refused, saying what the image lacks.
    def no_agent(self: Any, user: str, password: str, flags: int) -> int:
        raise libvirt.libvirtError("argument unsupported: QEMU guest agent is not configured")

    monkeypatch.setattr(libvirt.virDomain, "setUserPassword", no_agent)
    with pytest.raises(ProviderError) as refused:
        await provider.set_root_password(machine.ref, "$6$salt$hash")
    assert "qemu-guest-agent" in refused.value.message and not refused.value.retryable

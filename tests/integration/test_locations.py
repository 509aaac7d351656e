"""Choosing where servers run: locations mapped to providers in settings, a catalog that offers only what a
location's provider can make, and creates refused (422) before anything changes when it cannot."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy import delete, func, select

from cloudplane.config import ConfigurationError, Settings
from cloudplane.core import Core
from cloudplane.db.engine import Database
from cloudplane.db.tables import Image, Location, Operation, Server
from cloudplane.domain.errors import ProviderError
from cloudplane.providers import registry
from cloudplane.providers.base import Capabilities, Provider
from cloudplane.providers.simulator import SimulatorConfig, SimulatorProvider
from cloudplane.services.catalog import Catalog, assign_location_providers
from cloudplane.workflows.reconciler import reconcile_once
from tests.conftest import ROOT, SERVER_BODY, eventually


@contextlib.contextmanager
def placed(
    core: Core, location_providers: dict[str, str], default_provider: str = "simulator", **providers: Any
) -> Iterator[registry.ProviderRegistry]:
    """Run the shared core as if it had started with this placement, through the real start path (build_registry,
    assign_location_providers). `providers` are what the factories of those names make; an exception instance
    is a provider that cannot be built on this host. The rows and the core are put back afterwards."""
    original = core.settings
    settings = original.model_copy(
        update={"location_providers": location_providers, "default_provider": default_provider}
    )

    def factory(made: Any) -> Any:
        def make(settings: Settings, db: Database) -> Provider:
            if isinstance(made, BaseException):
                raise made
            return made

        return make

    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry.PROVIDER_FACTORIES, "simulator", factory(core.providers.get("simulator")))
        for name, made in providers.items():
            patch.setitem(registry.PROVIDER_FACTORIES, name, factory(made))
        providers_now = registry.build_registry(settings, core.db)
        patch.setattr(core, "settings", settings)
        patch.setattr(core, "providers", providers_now)
        patch.setattr(core, "catalog", Catalog(core.db, providers_now))
        assign_location_providers(core.db, settings)
        try:
            yield providers_now
        finally:
            assign_location_providers(core.db, original)
    core.catalog.invalidate()


@pytest.fixture
def edge(tmp_path: Path) -> Iterator[Any]:
    """Makes "edge" providers: simulated clouds of their own that can make only some machines."""
    made: list[SimulatorProvider] = []

    def make(**capabilities: Any) -> SimulatorProvider:
        provider = SimulatorProvider(
            Database(f"sqlite:///{tmp_path / f'edge{len(made)}.sqlite'}"), SimulatorConfig(time_scale=0)
        )
        provider.name = "edge"
        provider.capabilities = Capabilities(**capabilities)
        made.append(provider)
        return provider

    yield make
    for provider in made:
        provider.db.dispose()


def test_location_providers_come_from_the_environment_in_either_form(monkeypatch) -> None:
    monkeypatch.setenv("CLOUDPLANE_LOCATION_PROVIDERS", " fra1=lxc, NYC1 = libvirt ,")
    assert Settings().location_providers == {"fra1": "lxc", "nyc1": "libvirt"}
    monkeypatch.setenv("CLOUDPLANE_LOCATION_PROVIDERS", '{"fra1": "lxc", "sgp1": "simulator"}')
    assert Settings().location_providers == {"fra1": "lxc", "sgp1": "simulator"}
    monkeypatch.delenv("CLOUDPLANE_LOCATION_PROVIDERS")
    monkeypatch.setenv("CLOUDPLANE_LIBVIRT_URI", "qemu+ssh://kvm1/system")
    monkeypatch.setenv("CLOUDPLANE_RECONCILE_INTERVAL_S", "0")
    settings = Settings()
    assert settings.location_providers == {} and settings.default_provider == "simulator"
    assert settings.libvirt_uri == "qemu+ssh://kvm1/system" and settings.reconcile_interval_s == 0
    defaults = Settings.model_fields
    assert defaults["libvirt_uri"].default == "qemu:///system" and defaults["reconcile_interval_s"].default == 30


@pytest.mark.parametrize(
    ("value", "says"),
    [
        ("fra1=lxc,nyc1", "entry 'nyc1' is not location=provider"),
        ("fra1=", "entry 'fra1=' is not location=provider"),
        ("fra1=lxc,fra1=libvirt", "names location 'fra1' twice"),
        ('{"fra1": 3}', "a JSON object of strings"),
        ("{fra1: lxc}", "not valid JSON"),
    ],
)
def test_a_malformed_mapping_fails_saying_which_entry(monkeypatch, value: str, says: str) -> None:
    monkeypatch.setenv("CLOUDPLANE_LOCATION_PROVIDERS", value)
    with pytest.raises(ValidationError, match=says):
        Settings()


def test_an_unknown_provider_stops_the_start_naming_the_entry_and_the_choices(core) -> None:
    for settings, says in (
        (
            Settings(location_providers={"fra1": "lxd"}),
            "CLOUDPLANE_LOCATION_PROVIDERS entry fra1=lxd: no such provider",
        ),
        (Settings(default_provider="kvm"), "CLOUDPLANE_DEFAULT_PROVIDER=kvm: no such provider"),
    ):
        with pytest.raises(ConfigurationError) as refused:
            registry.build_registry(settings, core.db)
        assert says in str(refused.value) and "the providers are: libvirt, lxc, proxmox, simulator" in str(
            refused.value
        )


def test_an_unknown_location_stops_the_start_naming_the_entry_and_the_locations(core) -> None:
    with core.db.read() as s:
        before = dict(s.execute(select(Location.slug, Location.provider)).all())
    with pytest.raises(ConfigurationError) as refused:
        assign_location_providers(core.db, Settings(location_providers={"fra1": "libvirt", "mars1": "lxc"}))
    assert "CLOUDPLANE_LOCATION_PROVIDERS entry mars1=lxc: no location 'mars1'" in str(refused.value)
    assert "the locations are: fra1, lon1, mia1, nyc1, sao1, sfo2, sgp1" in str(refused.value)
    with core.db.read() as s:
        assert dict(s.execute(select(Location.slug, Location.provider)).all()) == before  # nothing half done


def test_location_rows_follow_the_settings_and_only_mapped_providers_are_built(core, edge) -> None:
    built = edge()
    with placed(core, {"fra1": "edge"}, edge=built, libvirt=AssertionError("libvirt must not be built")) as made:
        with core.db.read() as s:
            rows = dict(s.execute(select(Location.slug, Location.provider)).all())
        assert rows["fra1"] == "edge" and {p for slug, p in rows.items() if slug != "fra1"} == {"simulator"}
        assert made.get("edge") is built and not made.unavailable
        with pytest.raises(ProviderError, match="'libvirt' cannot be used: not configured"):
            made.get("libvirt")
    with core.db.read() as s:
        assert set(s.scalars(select(Location.provider))) == {"simulator"}


def test_a_host_without_the_libvirt_or_lxc_bindings_starts_on_the_simulator(tmp_path) -> None:
    # In a fresh interpreter: neither provider module may be imported unless a location runs on it.
    script = (
        "import sys\n"
        "from cloudplane.config import Settings\n"
        "from cloudplane.core import Core\n"
        f"core = Core.build(Settings(database_url='sqlite:///{tmp_path / 'fresh.sqlite'}'))\n"
        "assert core.providers.get('simulator')\n"
        "loaded = sorted(m for m in sys.modules if m in ('cloudplane.providers.libvirt', 'cloudplane.providers.lxc',"
        " 'libvirt', 'lxc'))\n"
        "assert not loaded, loaded\n"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("CLOUDPLANE_DATABASE_URL", None)
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120)
    assert done.returncode == 0, done.stderr


async def test_a_provider_that_cannot_run_here_leaves_its_locations_unavailable(client, tenant, core) -> None:
    with placed(core, {"sgp1": "lxc"}, lxc=ImportError("No module named 'lxc'")) as made:
        assert made.unavailable == {"lxc": "ImportError: No module named 'lxc'"}
        with pytest.raises(ProviderError, match="No module named 'lxc'"):
            made.get("lxc")
        locations = (await client.get("/api/locations", headers=tenant.headers)).json()["locations"]
        assert {loc["slug"]: loc["available"] for loc in locations} == {
            "nyc1": True,
            "sfo2": True,
            "mia1": True,
            "fra1": True,
            "lon1": True,
            "sao1": True,
            "sgp1": False,
        }
        r = await client.post("/api/servers", json={**SERVER_BODY, "location_slug": "sgp1"}, headers=tenant.headers)
        assert r.status_code == 422, r.text
        assert r.json()["details"] == {
            "field": "location_slug",
            "choices": ["nyc1", "sfo2", "mia1", "fra1", "lon1", "sao1"],
        }
        assert "Location 'sgp1' takes no new servers now" in r.json()["error"]
        # The reconciler cannot look at its machines either, and says why.
        report = await reconcile_once(core)
        assert report.failures["lxc"] == "Provider 'lxc' cannot be used: ImportError: No module named 'lxc'"


async def test_the_catalog_offers_only_what_some_location_can_make(client, tenant, core, edge) -> None:
    small = edge(images=frozenset({"debian-12", "ubuntu-24-04"}), max_cpu=2, max_ram_mb=4096)
    try:
        with placed(core, {"sgp1": "lxc"}, "edge", edge=small, lxc=ImportError("no bindings")):
            images = (await client.get("/api/images", headers=tenant.headers)).json()
            assert [i["slug"] for i in images["images"]] == ["ubuntu-24-04", "debian-12"] and images["total"] == 2
            plans = (await client.get("/api/plans?per_page=100", headers=tenant.headers)).json()
            fitting = ["basic-1gb", "basic-2gb", "standard-2gb", "standard-4gb", "starter", "professional"]
            assert [p["slug"] for p in plans["plans"]] == fitting and plans["total"] == len(fitting)
            cloudvps = (await client.get("/api/v1/plans", headers=tenant.headers)).json()["data"]
            assert [p["id"] for p in cloudvps] == [f"plan-{slug}" for slug in fitting]
            locations = (await client.get("/api/locations", headers=tenant.headers)).json()["locations"]
            assert [loc["slug"] for loc in locations if not loc["available"]] == ["sgp1"]

            # The host gains an image, one the catalog did not have: a refresh (each reconciler pass) offers it.
            small.capabilities = Capabilities(images=frozenset({"debian-12", "ubuntu-24-04", "home-made"}))
            core.catalog.refresh()
            images = (await client.get("/api/images", headers=tenant.headers)).json()["images"]
            assert [i["slug"] for i in images] == ["ubuntu-24-04", "debian-12", "home-made"]
            assert images[-1] == {
                "slug": "home-made",
                "name": "home-made",
                "distribution": "home-made",
                "version": "",
                "architecture": "x86_64",
                "available": True,
            }
        # Back on the simulator, which makes anything: the whole catalog again.
        assert (await client.get("/api/images", headers=tenant.headers)).json()["total"] == 7
        assert (await client.get("/api/plans", headers=tenant.headers)).json()["total"] >= 10
    finally:
        with core.db.write() as s:
            s.execute(delete(Image).where(Image.slug == "home-made"))
        core.catalog.invalidate()


async def test_a_create_the_location_cannot_serve_is_422_before_anything_changes(
    client, make_tenant, core, edge
) -> None:
    tenant = make_tenant()
    small = edge(images=frozenset({"debian-12"}), max_cpu=2, max_ram_mb=4096)
    with placed(core, {"fra1": "edge"}, edge=small):
        at_fra1 = {**SERVER_BODY, "location_slug": "fra1"}
        r = await client.post("/api/servers", json=at_fra1, headers=tenant.headers)
        assert r.status_code == 422, r.text
        assert r.json()["code"] == "VALIDATION_ERROR"
        assert r.json()["details"] == {"field": "image_slug", "choices": ["debian-12"]}
        assert "Image 'ubuntu-22-04' is not offered in fra1" in r.json()["error"]

        too_big = {**at_fra1, "image_slug": "debian-12", "plan_slug": "performance-8gb"}
        r = await client.post("/api/servers", json=too_big, headers=tenant.headers)
        assert r.status_code == 422, r.text
        assert r.json()["details"] == {
            "field": "plan_slug",
            "choices": ["basic-1gb", "basic-2gb", "standard-2gb", "standard-4gb", "starter", "professional"],
        }
        with core.db.read() as s:
            assert not s.scalar(
                select(func.count()).select_from(Server).where(Server.account_id == tenant.principal.account_id)
            )
            assert not s.scalar(
                select(func.count()).select_from(Operation).where(Operation.account_id == tenant.principal.account_id)
            )

        # What the location does serve is made by its provider; the other locations stay on the simulator.
        made = await client.post("/api/servers", json={**at_fra1, "image_slug": "debian-12"}, headers=tenant.headers)
        elsewhere = await client.post("/api/servers", json=SERVER_BODY, headers=tenant.headers)
        assert made.status_code == elsewhere.status_code == 201, (made.text, elsewhere.text)
        # CloudVPS picks the operating system the location can boot when none is asked for.
        vps = await client.post(
            "/api/v1/vps",
            json={"name": "Edge VPS", "plan_id": "plan-starter", "location": "fra1"},
            headers=tenant.headers,
        )
        assert vps.status_code == 201, vps.text
        assert vps.json()["data"]["operating_system"] == "Debian 12" and vps.json()["data"]["location"] == "fra1"
        ids = [made.json()["id"], elsewhere.json()["id"], int(vps.json()["data"]["id"].removeprefix("vps-"))]

        async def servers() -> list[dict[str, Any]]:
            return (await client.get("/api/servers", headers=tenant.headers)).json()["servers"]

        await eventually(servers, lambda ss: len(ss) == 3 and all(s["status"] == "running" for s in ss))
        with core.db.read() as s:
            providers = dict(s.execute(select(Server.id, Server.provider).where(Server.id.in_(ids))).all())
        assert providers == {ids[0]: "edge", ids[1]: "simulator", ids[2]: "edge"}
        assert len(await small.list()) == 2

        # Servers keep their provider: deleting them while fra1 is on edge removes the edge machines.
        for server_id in ids:
            assert (await client.delete(f"/api/servers/{server_id}", headers=tenant.headers)).status_code == 204
        await eventually(servers, lambda ss: ss == [])
        assert await small.list() == []


def test_the_real_providers_are_built_from_their_settings(core, tmp_path) -> None:
    fixture = Path(__file__).resolve().parent.parent / "fixtures" / "libvirt" / "testhost.xml"
    settings = core.settings.model_copy(
        update={
            "libvirt_uri": f"test://{fixture}",
            "libvirt_pool": "images",
            "libvirt_network": "servers",
            "libvirt_domain_type": "qemu",
            "libvirt_stop_timeout_s": 5.0,
            "lxc_path": str(tmp_path / "containers"),
            "lxc_bridge": "cpbr9",
            "lxc_subnet": "10.213.9.0/24",
            "lxc_stop_timeout_s": 3.0,
        }
    )
    libvirt = registry.PROVIDER_FACTORIES["libvirt"](settings, core.db)
    try:
        assert (libvirt.uri, libvirt.pool, libvirt.network, libvirt.stop_timeout_s) == (
            f"test://{fixture}",
            "images",
            "servers",
            5.0,
        )
    finally:
        libvirt.close()
    lxc = registry.PROVIDER_FACTORIES["lxc"](settings, core.db)
    assert lxc.config.lxc_path == tmp_path / "containers" and lxc.config.stop_timeout_s == 3.0
    assert (lxc.config.network.bridge, str(lxc.config.network.subnet)) == ("cpbr9", "10.213.9.0/24")

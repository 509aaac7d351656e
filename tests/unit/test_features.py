"""Declared features: a table must name every feature, a refusal needs a reason, and the one check says why."""

from __future__ import annotations

from typing import Any

import pytest

from cloudplane.domain.errors import InvalidState
from cloudplane.domain.states import ACTIONS
from cloudplane.providers.base import (
    ACTION_FEATURES,
    SUPPORTED,
    Feature,
    Features,
    Support,
    check_declared,
    refused,
    require_feature,
)
from cloudplane.providers.libvirt import LibvirtProvider
from cloudplane.providers.lxc import LxcProvider
from cloudplane.providers.market_compute import MarketplaceCompute
from cloudplane.providers.marketplace import MarketFeature
from cloudplane.providers.registry import ProviderRegistry
from cloudplane.providers.simulator import SimulatorProvider

ALL_SUPPORTED = {f: SUPPORTED for f in Feature}


class Declared:
    """A driver reduced to what the check reads: its name and its table."""

    def __init__(self, name: str, features: Features[Any]) -> None:
        self.name = name
        self.features = features


def test_a_table_missing_a_feature_fails_when_it_is_built() -> None:
    declared: dict[Feature, Support] = {
        f: s for f, s in ALL_SUPPORTED.items() if f not in (Feature.CONSOLE, Feature.RESIZE)
    }
    with pytest.raises(TypeError, match="undeclared: console, resize"):
        Features(Feature, declared)


def test_a_table_with_a_feature_of_no_interface_fails() -> None:
    with pytest.raises(TypeError, match="not a Feature: teleport"):
        Features(Feature, {**ALL_SUPPORTED, "teleport": SUPPORTED})


def test_a_refusal_needs_a_reason() -> None:
    with pytest.raises(ValueError, match="reason"):
        refused("  ")
    assert refused(" no disks here ") == Support("no disks here")
    assert SUPPORTED.supported and not refused("no").supported


@pytest.mark.parametrize("driver", [SimulatorProvider, LxcProvider, LibvirtProvider])
def test_every_compute_driver_declares_every_feature_at_import(driver: Any) -> None:
    # Read from the class: these tables are built when the module is imported, before any host is reached.
    features = driver.features
    assert isinstance(features, Features) and list(features) == list(Feature)
    assert "not implemented yet" in (features[Feature.RESIZE].reason or "")
    # The console: a shell on LXC, a simulated one; libvirt's serial console is still to come.
    assert features[Feature.CONSOLE].supported is (driver is not LibvirtProvider)
    for feature in (Feature.SUSPEND, Feature.RESUME, Feature.REBUILD):
        assert features.supports(feature), feature


def test_require_feature_passes_a_supported_feature_and_names_the_reason_of_a_refused_one() -> None:
    driver = Declared("vast_ai", Features(Feature, {**ALL_SUPPORTED, Feature.SNAPSHOT: refused("no disk snapshots")}))
    require_feature(driver, Feature.START, subject="vast_ai servers")
    with pytest.raises(InvalidState) as error:
        require_feature(driver, Feature.SNAPSHOT, subject="vast_ai servers", server_id=7)
    assert error.value.message == "vast_ai servers cannot snapshot: no disk snapshots"
    assert error.value.details == {"server_id": 7, "provider": "vast_ai", "feature": "snapshot"}


def test_every_server_action_maps_to_a_feature() -> None:
    assert set(ACTION_FEATURES) == set(ACTIONS)
    assert all(isinstance(f, Feature) for f in ACTION_FEATURES.values())


def test_a_rented_instance_refuses_what_its_marketplace_refuses() -> None:
    # No marketplace here refuses stop; some GPU clouds do, and their rented instances must say so.
    market = Declared(
        "lambda",
        Features(
            MarketFeature,
            {
                MarketFeature.START: SUPPORTED,
                MarketFeature.STOP: refused("instances cannot be stopped, only destroyed"),
            },
        ),
    )
    compute = MarketplaceCompute(market)  # type: ignore[arg-type]
    assert compute.features[Feature.START] == SUPPORTED
    with pytest.raises(InvalidState, match="lambda servers cannot stop: instances cannot be stopped, only destroyed"):
        require_feature(compute, Feature.STOP, subject="lambda servers")


def test_a_registry_refuses_a_driver_without_a_feature_table() -> None:
    class Undeclared:
        name = "undeclared"

    with pytest.raises(TypeError, match="'undeclared' declares no Feature table"):
        ProviderRegistry({"undeclared": Undeclared()})  # type: ignore[dict-item]
    with pytest.raises(TypeError, match="declares no MarketFeature table"):
        ProviderRegistry({}, {"undeclared": Undeclared()})  # type: ignore[dict-item]
    check_declared(Declared("ok", Features(Feature, ALL_SUPPORTED)), Feature)

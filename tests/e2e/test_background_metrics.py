"""A real `cloudplane serve` watches its own event loop and runs the reconciler, and /metrics says so: the loop's
lags and longest stall, and each reconciler pass's cost."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx
from prometheus_client.parser import text_string_to_metric_families

from tests.e2e.conftest import ServiceProcess


def samples(service: ServiceProcess) -> dict[str, float]:
    text = httpx.get(service.url + "/metrics", timeout=10).text
    return {s.name: s.value for family in text_string_to_metric_families(text) for s in family.samples if not s.labels}


def test_the_serving_process_reports_its_loop_lag_and_reconciler_passes(
    service_factory: Callable[..., ServiceProcess],
) -> None:
    service = service_factory(simulator_time_scale="0", reconcile_interval_s="0.2")
    service.start()
    deadline = time.monotonic() + 30
    while True:
        seen = samples(service)
        if seen.get("cloudplane_reconciler_pass_duration_seconds_count", 0) >= 2 or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert seen["cloudplane_reconciler_pass_duration_seconds_count"] >= 2
    assert seen["cloudplane_reconciler_last_pass_duration_seconds"] > 0
    assert seen["cloudplane_event_loop_lag_seconds_count"] > 0  # the watcher has been waking
    assert "cloudplane_event_loop_lag_max_seconds" in seen

"""The Vast.ai provider against recorded request/response pairs (tests/fixtures/vastai), served by respx."""

from __future__ import annotations

import dataclasses
import json
import logging
import traceback
from pathlib import Path
from typing import Any

import httpx
import pytest
import respx

from cloudplane.domain.errors import NotFound, ProviderError
from cloudplane.providers.base import MachineState
from cloudplane.providers.marketplace import OfferQuery, RentRequest
from cloudplane.providers.vastai import (
    MAX_LABEL_CHARS,
    VAST_FAILED_STATUSES,
    VAST_PENDING_STATUSES,
    VastAIProvider,
    label_with_token,
    split_label,
    vast_machine_state,
)

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "vastai"
BASE_URL = "https://console.vast.ai/api/v0"
API_KEY = "vk-test-6d1f0c2b9a8e7d6c5b4a39281706f5e4d3c2b1a0"
TOKEN = "op-3f2a9c1e-7b5d-4e0a-9c61-2d8e4b7a1f03"
DOCUMENT_RENT = RentRequest(
    token=TOKEN,
    offer_id="12345",
    image="pytorch/pytorch:latest",
    label="Training Instance",
    onstart_script="#!/bin/bash\necho 'Instance started'\npip install -r requirements.txt",
)


def recorded(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text())


def recorded_reply(name: str) -> httpx.Response:
    response = recorded(name)["response"]
    if "json" in response:
        return httpx.Response(response["status"], json=response["json"])
    return httpx.Response(response["status"], text=response["text"])


def sent_json(route: respx.Route) -> Any:
    return json.loads(route.calls.last.request.content)


@pytest.fixture
def api():
    with respx.mock(base_url=BASE_URL, assert_all_called=False) as router:
        yield router


@pytest.fixture
async def vast():
    provider = VastAIProvider(API_KEY)
    yield provider
    await provider.aclose()


async def test_search_sends_the_json_filter_and_converts_megabytes(api, vast) -> None:
    route = api.post("/bundles/").mock(return_value=recorded_reply("search_offers"))
    offers = await vast.search_offers(OfferQuery(gpu_model="RTX 4090", max_price=2.0, available=True, sort="price"))

    request = route.calls.last.request
    assert (request.method, request.url.path) == ("POST", recorded("search_offers")["request"]["path"])
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent_json(route) == recorded("search_offers")["request"]["json"]

    # The third offer is rented (rented: true), so `available=True` drops it.
    assert [o.offer_id for o in offers] == ["12345", "9125004"]
    document, pair = offers
    assert document.provider == "vast_ai"
    assert document.name == "Vast.ai Machine 67890"
    assert document.machine_id == 67890
    assert (document.gpu_model, document.gpu_count) == ("RTX 4090", 1)
    assert document.gpu_ram_gb == 24.0  # 24564 MB
    assert (document.cpu_count, document.ram_gb, document.storage_gb) == (8, 32.0, 100.0)
    assert (document.price_per_hour, document.reliability, document.available) == (1.5, 0.95, True)
    assert document.region == "Virginia, US"
    assert document.extra == {"compute_cap": 89, "score": 8.5, "dlperf": 42.1, "cuda_max_good": 12.4, "verified": True}
    # cpu_cores_effective comes fractional; rented: null means nobody holds it.
    assert (pair.cpu_count, pair.ram_gb, pair.available) == (23, 125.7, True)


async def test_search_region_and_sort_options(api, vast) -> None:
    route = api.post("/bundles/").mock(return_value=recorded_reply("search_offers"))

    await vast.search_offers(OfferQuery(region="us", sort="reliability", limit=5))
    body = sent_json(route)
    assert body["geolocation"] == {"eq": "US"}
    assert body["order"] == [["reliability2", "desc"]]
    assert body["limit"] == 5
    assert "rentable" not in body and "gpu_name" not in body

    # Vast.ai filters geolocation by country code only; other region names are matched here.
    offers = await vast.search_offers(OfferQuery(region="Quebec", min_gpu_count=2))
    assert "geolocation" not in sent_json(route)
    assert sent_json(route)["num_gpus"] == {"gte": 2}
    assert sent_json(route)["order"] == [["score", "desc"]]
    assert [o.offer_id for o in offers] == ["9125004"]


async def test_search_reply_without_offers_is_a_retryable_error(api, vast) -> None:
    api.post("/bundles/").mock(return_value=httpx.Response(200, json={"success": True}))
    with pytest.raises(ProviderError) as caught:
        await vast.search_offers(OfferQuery())
    assert caught.value.retryable


async def test_rent_puts_the_ask_attaches_the_key_and_reads_the_instance_back(api, vast) -> None:
    api.get("/instances/").mock(return_value=httpx.Response(200, json={"instances_found": 0, "instances": []}))
    ask = api.put("/asks/12345/").mock(return_value=recorded_reply("rent"))
    ssh = api.post("/instances/7835610/ssh/").mock(return_value=recorded_reply("attach_ssh"))
    api.get("/instances/7835610/").mock(return_value=recorded_reply("show_instance_loading"))
    ssh_key = recorded("attach_ssh")["request"]["json"]["ssh_key"]

    instance = await vast.rent(dataclasses.replace(DOCUMENT_RENT, ssh_key=ssh_key))

    assert ask.calls.last.request.method == "PUT"
    assert ask.calls.last.request.headers["authorization"] == f"Bearer {API_KEY}"
    assert sent_json(ask) == recorded("rent")["request"]["json"]
    assert sent_json(ssh) == {"ssh_key": ssh_key}
    assert instance.instance_id == "7835610"
    assert (instance.offer_id, instance.machine_id) == ("12345", 67890)
    assert instance.state == MachineState.PROVISIONING
    assert instance.status_detail == "loading: Pulling image pytorch/pytorch:latest"
    assert (instance.label, instance.token) == ("Training Instance", TOKEN)
    assert (instance.ssh_host, instance.ssh_port, instance.public_ipaddr) == ("ssh5.vast.ai", 35610, "203.0.113.24")
    assert (instance.image, instance.onstart_script) == (DOCUMENT_RENT.image, DOCUMENT_RENT.onstart_script)
    # No mem_limit yet: the host's 256 GB times this rental's 1/8 share.
    assert (instance.cpu_count, instance.ram_gb, instance.storage_gb) == (8, 32.0, 20.0)
    assert instance.price_per_hour == 1.5


async def test_rent_with_a_known_token_makes_no_second_rental(api, vast) -> None:
    api.get("/instances/").mock(return_value=recorded_reply("list_instances"))
    ask = api.put(url__regex=r".*/asks/.*").mock(return_value=recorded_reply("rent"))

    instance = await vast.rent(DOCUMENT_RENT)

    assert not ask.called
    assert instance.instance_id == "7835610"
    assert instance.state == MachineState.RUNNING


async def test_a_rent_whose_reply_was_lost_is_found_by_the_retry(api, vast) -> None:
    listed = api.get("/instances/")
    listed.side_effect = [
        httpx.Response(200, json={"instances": []}),
        recorded_reply("list_instances"),
    ]
    ask = api.put("/asks/12345/").mock(side_effect=httpx.ReadTimeout("the reply never came"))

    with pytest.raises(ProviderError) as caught:
        await vast.rent(DOCUMENT_RENT)
    assert caught.value.retryable

    instance = await vast.rent(DOCUMENT_RENT)
    assert ask.call_count == 1
    assert instance.instance_id == "7835610"


async def test_renting_a_taken_ask_is_not_retryable(api, vast) -> None:
    api.get("/instances/").mock(return_value=httpx.Response(200, json={"instances": []}))
    api.put("/asks/8807713/").mock(return_value=recorded_reply("rent_no_such_ask"))

    with pytest.raises(ProviderError) as caught:
        await vast.rent(RentRequest(token="op-x", offer_id="8807713", image="ubuntu:22.04", label="x"))

    assert not caught.value.retryable
    assert caught.value.details["reason"] == "offer_unavailable"
    assert "not available" in caught.value.message


async def test_every_status_maps_through_the_one_table(api, vast) -> None:
    api.get("/instances/").mock(return_value=recorded_reply("list_instances"))
    instances = {i.instance_id: i for i in await vast.list_instances()}

    assert instances["7835610"].state == MachineState.RUNNING
    assert instances["7835610"].ram_gb == 32.0  # mem_limit, in GB
    pending = instances["7835702"]
    assert (pending.state, pending.status_detail, pending.ssh_port) == (MachineState.PROVISIONING, "pending", None)
    crashed = instances["7820011"]
    assert crashed.state == MachineState.ERROR
    assert crashed.status_detail.startswith("exited: Error response from daemon")
    assert (crashed.label, crashed.token) == ("nightly-eval", None)
    assert instances["7811420"].state == MachineState.STOPPED  # exited because the user stopped it
    assert instances["7811577"].state == MachineState.STOPPING
    assert instances["7811577"].label == ""
    assert instances["7799032"].state == MachineState.ERROR  # host offline


@pytest.mark.parametrize(
    ("actual", "intended", "expected"),
    [
        (None, "running", MachineState.PROVISIONING),
        ("created", "running", MachineState.PROVISIONING),
        ("scheduling", "running", MachineState.PROVISIONING),
        ("loading", "running", MachineState.PROVISIONING),
        ("running", "running", MachineState.RUNNING),
        ("running", "stopped", MachineState.STOPPING),
        ("stopped", "stopped", MachineState.STOPPED),
        ("stopped", "running", MachineState.STARTING),
        ("exited", "running", MachineState.ERROR),
        ("exited", "stopped", MachineState.STOPPED),
        ("frozen", "frozen", MachineState.STOPPED),
        ("rebooting", "running", MachineState.REBOOTING),
        ("unknown", "running", MachineState.ERROR),
        ("offline", "running", MachineState.ERROR),
        ("a-status-from-next-year", "running", MachineState.PROVISIONING),
    ],
)
def test_state_table(actual: str | None, intended: str, expected: MachineState) -> None:
    assert vast_machine_state(actual, intended) == expected


def test_pending_and_failed_statuses_are_disjoint_and_mapped() -> None:
    assert not VAST_PENDING_STATUSES & VAST_FAILED_STATUSES
    assert {vast_machine_state(s) for s in VAST_PENDING_STATUSES} == {MachineState.PROVISIONING}
    assert {vast_machine_state(s) for s in VAST_FAILED_STATUSES} == {MachineState.ERROR}


async def test_get_instance_reads_the_single_object_under_instances(api, vast) -> None:
    api.get("/instances/7835610/").mock(return_value=recorded_reply("show_instance_loading"))
    api.get("/instances/1/").mock(return_value=httpx.Response(404, json={"success": False, "error": "not_found"}))
    api.get("/instances/2/").mock(return_value=httpx.Response(200, json={"instances": None}))

    assert (await vast.get_instance("7835610")).label == "Training Instance"
    assert await vast.get_instance("1") is None
    assert await vast.get_instance("2") is None


async def test_start_and_stop_put_the_wanted_state(api, vast) -> None:
    route = api.put("/instances/7835610/").mock(return_value=recorded_reply("state_change"))
    api.put("/instances/404/").mock(return_value=httpx.Response(404, json={"success": False}))

    await vast.stop("7835610")
    assert sent_json(route) == recorded("state_change")["request"]["json"]
    await vast.stop("7835610")  # again: the same request, harmless
    await vast.start("7835610")
    assert sent_json(route) == {"state": "running"}
    assert route.call_count == 3
    with pytest.raises(NotFound):
        await vast.start("404")


async def test_destroy_is_idempotent(api, vast) -> None:
    route = api.delete("/instances/7835610/")
    route.side_effect = [recorded_reply("destroy"), httpx.Response(404, json={"success": False})]
    await vast.destroy("7835610")
    await vast.destroy("7835610")
    assert route.call_count == 2


@pytest.mark.parametrize(
    ("reply", "retryable", "message"),
    [
        (
            httpx.Response(401, json={"success": False, "error": "auth_error", "msg": "Invalid user key"}),
            False,
            "rejected the API key",
        ),
        (httpx.Response(403, json={"detail": "forbidden"}), False, "rejected the API key"),
        (recorded_reply("rate_limited"), True, "rate limiting"),
        (httpx.Response(500, text="Internal Server Error"), True, "HTTP 500"),
        (httpx.Response(503, text="<html>upstream down</html>"), True, "HTTP 503"),
        (httpx.Response(200, text="<html>maintenance</html>"), True, "not JSON"),
        (httpx.ReadTimeout("slow"), True, "in time"),
        (httpx.ConnectError("refused"), True, "Could not reach"),
        (
            httpx.Response(400, json={"success": False, "error": "invalid_args", "msg": "bad filter"}),
            False,
            "bad filter",
        ),
    ],
)
async def test_errors_are_mapped_and_never_carry_the_key(api, vast, caplog, reply, retryable, message) -> None:
    caplog.set_level(logging.DEBUG)
    route = api.get("/instances/")
    if isinstance(reply, Exception):
        route.side_effect = reply
    else:
        route.return_value = reply

    with pytest.raises(ProviderError) as caught:
        await vast.list_instances()

    error = caught.value
    assert error.retryable is retryable
    assert message in error.message
    # The whole traceback too: the httpx exception (and its request, headers and all) is not chained.
    traceback_text = "".join(traceback.format_exception(error))
    for text in (str(error), repr(error), repr(error.details), repr(vast), caplog.text, traceback_text):
        assert API_KEY not in text


async def test_a_reply_echoing_the_key_is_redacted(api, vast, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    api.put("/instances/7/").mock(
        return_value=httpx.Response(400, json={"success": False, "msg": f"api_key {API_KEY} may not do that"})
    )
    with pytest.raises(ProviderError) as caught:
        await vast.stop("7")
    assert API_KEY not in str(caught.value)
    assert "[redacted]" in str(caught.value)
    assert API_KEY not in caplog.text


async def test_the_key_is_not_in_the_repr_or_the_logs_of_a_normal_day(api, vast, caplog) -> None:
    caplog.set_level(logging.DEBUG)
    api.post("/bundles/").mock(return_value=recorded_reply("search_offers"))
    api.get("/instances/").mock(return_value=recorded_reply("list_instances"))
    await vast.search_offers(OfferQuery())
    await vast.rent(DOCUMENT_RENT)
    assert API_KEY not in repr(vast)
    assert API_KEY not in caplog.text
    assert caplog.text  # httpx and the provider did log; just never the key


def test_label_keeps_the_token_marker_whole() -> None:
    stored = label_with_token("x" * 500, TOKEN)
    assert len(stored) <= MAX_LABEL_CHARS
    assert stored.endswith(f" [cp:{TOKEN}]")
    assert split_label(stored) == ("x" * (MAX_LABEL_CHARS - len(TOKEN) - 6), TOKEN)
    assert split_label(label_with_token("My ML Training Instance", "t-1")) == ("My ML Training Instance", "t-1")
    assert split_label("plain label") == ("plain label", None)
    assert split_label(None) == ("", None)

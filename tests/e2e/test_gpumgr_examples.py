"""The GPU Cloud Manager document's Python and curl examples against a fresh, real service process."""

from __future__ import annotations

import re
import subprocess
import time

import httpx

from tests.e2e.conftest import run_example


def test_python_client_example_and_curl_examples(service_factory) -> None:
    service = service_factory(simulator_time_scale="0.05")
    service.start()
    key = service.api_key
    output = run_example("gpumgr_python_client.py", EXAMPLE_BASE_URL=f"{service.url}/api/v1", EXAMPLE_API_KEY=key)
    created = re.fullmatch(r"Created instance: (vast_\d+)\n", output)
    assert created, output

    auth = ["-H", f"Authorization: Bearer {key}"]
    base = f"{service.url}/api/v1"

    def curl(*args: str) -> dict:
        out = subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=30, check=True)
        return httpx.Response(200, content=out.stdout).json()

    offers = curl(*auth, f"{base}/offers/search?provider=vast_ai&available=true")
    assert offers["success"] and offers["data"]
    made = curl(
        "-X",
        "POST",
        *auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"provider": "vast_ai", "offer_id": "12345", "image": "pytorch/pytorch:latest", "label": "Training Instance"}',
        f"{base}/instances",
    )
    assert made["success"] and made["data"]["status"] == "loading"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        listed = curl(*auth, f"{base}/instances")
        if all(i["status"] == "running" for i in listed["data"]):
            break
        time.sleep(0.2)
    assert {i["id"] for i in listed["data"]} == {created.group(1), made["data"]["id"]}
    assert all(i["status"] == "running" for i in listed["data"]), listed

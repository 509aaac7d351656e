"""The CloudVPS Pro document's sign-in flow, Python client and cURL examples against a fresh, real service."""

from __future__ import annotations

import json
import subprocess
import time

import httpx

from tests.e2e.conftest import run_example
from tests.integration.test_letscloud_ssh_keys import ed25519_public_key


def curl(*args: str) -> dict:
    out = subprocess.run(["curl", "-sS", *args], capture_output=True, text=True, timeout=30, check=True)
    return json.loads(out.stdout)


def test_python_client_and_curl_examples(service_factory) -> None:
    service = service_factory(simulator_time_scale="0.05")
    service.start()
    base = f"{service.url}/api/v1"
    # The document's authentication: register, sign in with email and password, send the JWT as bearer.
    account = {"name": "John Doe", "email": "user@example.com", "password": "correct-horse-battery"}
    assert httpx.post(f"{base}/auth/register", json=account, timeout=30).status_code == 201
    login = httpx.post(f"{base}/auth/login", json={k: account[k] for k in ("email", "password")}, timeout=30)
    assert login.status_code == 200, login.text
    token = login.json()["data"]["token"]

    printed = json.loads(
        run_example(
            "cloudvps_python_client.py",
            EXAMPLE_BASE_URL=base,
            EXAMPLE_TOKEN=token,
            EXAMPLE_SSH_KEY=ed25519_public_key(),
        )
    )
    assert printed["before"] == {
        "success": True,
        "data": [],
        "pagination": {"page": 1, "limit": 20, "total": 0, "has_next": False, "has_prev": False},
    }
    created = printed["created"]
    assert created["success"] is True, created
    vps = created["data"]
    assert vps["id"].startswith("vps-") and vps["name"] == "My Web Server" and vps["status"] == "creating"
    assert vps["plan_id"] == "plan-professional" and vps["operating_system"] == "Ubuntu 22.04 LTS"
    assert [k["fingerprint"] for k in vps["ssh_keys"]] and vps["root_password"]
    assert [v["id"] for v in printed["after"]["data"]] == [vps["id"]]

    auth = ["-H", f"Authorization: Bearer {token}"]
    listed = curl(*auth, "-H", "Content-Type: application/json", f"{base}/vps")
    assert listed["success"] is True and [v["id"] for v in listed["data"]] == [vps["id"]]
    made = curl(
        "-X",
        "POST",
        *auth,
        "-H",
        "Content-Type: application/json",
        "-d",
        '{"name":"My Server","plan_id":"plan-professional"}',
        f"{base}/vps",
    )
    assert made["success"] is True and made["data"]["name"] == "My Server", made
    made_id = made["data"]["id"]

    def status_of(vps_id: str) -> str:
        return httpx.get(f"{base}/vps/{vps_id}", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()[
            "data"
        ]["status"]

    def wait_for(vps_id: str, status: str) -> None:
        deadline = time.monotonic() + 30
        while (seen := status_of(vps_id)) != status:
            assert time.monotonic() < deadline, (vps_id, seen)
            time.sleep(0.1)

    # "Start VPS" starts a stopped one: a new VPS runs by itself, so stop it first.
    wait_for(made_id, "running")
    stop = httpx.post(f"{base}/vps/{made_id}/stop", headers={"Authorization": f"Bearer {token}"}, timeout=30)
    assert stop.status_code == 200, stop.text
    wait_for(made_id, "stopped")
    started = curl("-X", "POST", *auth, f"{base}/vps/{made_id}/start")
    assert started["success"] is True and started["data"]["status"] == "starting", started
    wait_for(made_id, "running")
    again = curl("-X", "POST", *auth, f"{base}/vps/{made_id}/start")
    assert again["success"] is False and again["error"]["code"] == "CONFLICT", again

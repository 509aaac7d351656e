"""The VibeCaaS document's sign-in, Python client class and cURL examples against a fresh, real service."""

from __future__ import annotations

import json
import subprocess

import httpx

from tests.e2e.conftest import run_example


def curl(*args: str) -> tuple[int, dict]:
    """The status and JSON body of a curl call."""
    out = subprocess.run(
        ["curl", "-sS", "-w", "\n%{http_code}", *args], capture_output=True, text=True, timeout=30, check=True
    )
    body, _, status = out.stdout.rpartition("\n")
    return int(status), json.loads(body)


def test_python_client_and_curl_examples(service_factory) -> None:
    service = service_factory(simulator_time_scale="0.05", apps_domain="vibecaas.test")
    service.start()
    base = f"{service.url}/api/v1"
    # The document's authentication: register, sign in with username and password, use the bearer token.
    account = {
        "email": "user@example.com",
        "username": "johndoe",
        "password": "securepassword",
        "full_name": "John Doe",
    }
    assert httpx.post(f"{base}/auth/register", json=account, timeout=30).status_code == 201
    login = httpx.post(f"{base}/auth/login", json={"username": "johndoe", "password": "securepassword"}, timeout=30)
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    bearer = {"Authorization": f"Bearer {token}"}
    made_key = httpx.post(f"{base}/api-keys", json={"name": "sdk"}, headers=bearer, timeout=30)
    assert made_key.status_code == 201, made_key.text
    api_key = made_key.json()["data"]["key"]
    # The examples' limits (1000 millicores, 2048 MiB, 5120 MiB) are beyond the free tier; the document's user is pro.
    user_id = login.json()["data"]["user"]["id"]
    upgraded = httpx.put(
        f"{base}/admin/users/{user_id}/tier",
        json={"tier": "pro"},
        headers={"Authorization": f"Bearer {service.api_key}"},
        timeout=30,
    )
    assert upgraded.status_code == 200, upgraded.text

    printed = json.loads(
        run_example("vibecaas_python_client.py", EXAMPLE_BASE_URL=service.url, EXAMPLE_API_KEY=api_key)
    )
    assert printed["before"] == {"items": [], "total": 0, "page": 1, "pages": 0, "limit": 20}
    app = printed["created"]
    assert app["name"] == "my-app" and app["status"] == "stopped", app
    assert app["url"] == "https://my-app-johndoe.vibecaas.test"
    assert app["resources"] == {"cpu": 1000, "memory": 2048, "storage": 5120, "gpu": False}
    assert app["environment_variables"] == {"DEBUG": "false", "DATABASE_URL": "postgresql://..."}
    assert printed["after"]["total"] == 1 and printed["after"]["items"] == [app]

    # The cURL examples, as written but for the base URL and the key.
    status, listed = curl("-X", "GET", f"{service.url}/api/v1/apps", "-H", f"Authorization: Bearer {api_key}")
    assert status == 200 and listed["items"] == [app], listed
    create_example = [
        "-X",
        "POST",
        f"{service.url}/api/v1/apps",
        "-H",
        f"Authorization: Bearer {api_key}",
        "-H",
        "Content-Type: application/json",
        "-d",
        """{
    "name": "my-app",
    "framework": "fastapi",
    "cpu_limit": 1000,
    "memory_limit": 2048
  }""",
    ]
    # The Python example made "my-app" already, and names are unique per account.
    status, clash = curl(*create_example)
    assert status == 409 and clash["error"]["code"] == "CONFLICT", clash
    assert httpx.delete(f"{base}/apps/{app['id']}", headers=bearer, timeout=30).status_code == 204
    status, made = curl(*create_example)
    assert status == 201, made
    assert made["name"] == "my-app" and made["framework"] == "fastapi" and made["id"] != app["id"]
    assert made["resources"] == {"cpu": 1000, "memory": 2048, "storage": 1024, "gpu": False}
    status, listed = curl("-X", "GET", f"{service.url}/api/v1/apps", "-H", f"Authorization: Bearer {api_key}")
    assert status == 200 and [a["id"] for a in listed["items"]] == [made["id"]]

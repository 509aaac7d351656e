"""A real `cloudplane serve` at debug level: every log line it writes (uvicorn's and the workflow engine's included)
is JSON, a call's request id is in its lines, and no password, token, API key or root password reaches any line."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import httpx

from tests.e2e.conftest import ServiceProcess


def json_lines(service: ServiceProcess) -> list[dict[str, Any]]:
    """Every line of the process's output but the one-time admin key banner (printed, not logged), as JSON."""
    lines = []
    for line in service.output:
        text = line.strip()
        banner = (
            not text
            or text.startswith(("Cloudplane: first start", "Use it as"))
            or (service.api_key is not None and text == service.api_key)
        )
        if not banner:
            lines.append(json.loads(text))  # fails the test on any line that is not JSON
    return lines


def test_log_lines_are_json_with_request_ids_and_no_secrets(service_factory: Callable[..., ServiceProcess]) -> None:
    service = service_factory(log_level="debug", simulator_time_scale="0")
    service.start()
    password = "correct-horse-battery-staple-42"
    secrets: list[str] = [password]
    with httpx.Client(base_url=service.url, timeout=30) as c:
        r = c.post(
            "/api/v1/auth/register",
            json={"name": "Log Tester", "email": "logs@example.com", "password": password},
        )
        assert r.status_code == 201, r.text
        r = c.post("/api/v1/auth/login", json={"email": "logs@example.com", "password": password})
        assert r.status_code == 200, r.text
        access, refresh = r.json()["access_token"], r.json()["refresh_token"]
        r = c.post("/api/v1/auth/refresh", json={"refresh_token": refresh})
        assert r.status_code == 200, r.text
        access = r.json()["access_token"]
        secrets += [refresh, access, r.json()["refresh_token"]]
        r = c.post("/api/v1/api-keys", json={"name": "logs"}, headers={"Authorization": f"Bearer {access}"})
        assert r.status_code == 201, r.text
        key = r.json()["data"]["key"]
        secrets.append(key)
        r = c.post(
            "/api/servers",
            json={
                "label": "log-test",
                "plan_slug": "basic-1gb",
                "image_slug": "ubuntu-22-04",
                "location_slug": "nyc1",
                "hostname": "log-test",
            },
            headers={"Authorization": f"Bearer {key}", "X-Request-ID": "e2e-create-server-1"},
        )
        assert r.status_code == 201, r.text
        secrets.append(r.json()["root_password"])
        # A secret in a query string is never logged either.
        c.get(f"/api/servers?api_key={key}", headers={"Authorization": f"Bearer {key}"})
        # Wait for the create's workflow to finish, so its lines are in the output too.
        deadline = time.monotonic() + 30
        while (
            c.get(f"/api/servers/{r.json()['id']}", headers={"Authorization": f"Bearer {key}"}).json()["status"]
            != "running"
        ):
            assert time.monotonic() < deadline
            time.sleep(0.05)
    service.stop()

    everything = "".join(service.output)
    for secret in secrets:
        assert secret not in everything
    lines = json_lines(service)
    assert all({"timestamp", "level", "logger", "event"} <= line.keys() for line in lines)
    loggers = {line["logger"] for line in lines}
    assert {"cloudplane.workflows.engine", "uvicorn.error", "cloudplane.access"} <= loggers, loggers

    create = [line for line in lines if line.get("request_id") == "e2e-create-server-1"]
    assert any(
        line["logger"] == "cloudplane.access"
        and line["route"] == "/api/servers"
        and line["method"] == "POST"
        and line["status"] == 201
        for line in create
    ), create
    access_lines = [line for line in lines if line["logger"] == "cloudplane.access"]
    assert all(len(line["request_id"]) == 32 for line in access_lines if line not in create)
    assert all("?" not in line["route"] for line in access_lines)

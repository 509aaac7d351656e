"""Webhooks from the real service to a real receiver process on loopback, which checks every delivery with the
CloudVPS document's `verifyWebhookSignature` (Node) and the `standardwebhooks` package; and a SIGKILL of the service
while deliveries are in flight loses none of them."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, select

from cloudplane.config import Settings
from cloudplane.db.tables import Event, WebhookDelivery
from tests.webhook_receiver import Receiver, receiver

# Loopback receivers allowed (tests only), quick passes and retries, a short timeout so that a killed try's claim
# runs out soon.
WEBHOOK_SETTINGS = {
    "webhooks_allow_private": "true",
    "webhooks_poll_interval_s": "0.2",
    "webhooks_backoff_base_s": "0.2",
    "webhooks_backoff_max_s": "1",
    "webhooks_timeout_s": "2",
    "rate_limits_enabled": "false",
    "simulator_time_scale": "0.05",
}


def wait_for(probe: Any, timeout: float = 120.0, every: float = 0.1) -> Any:
    deadline = time.monotonic() + timeout
    value = None
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"not reached in {timeout}s; last: {value!r}")


def add_endpoint(client: httpx.Client, hook: Receiver) -> str:
    r = client.post("/api/v1/admin/webhooks", json={"url": hook.url, "description": "e2e"})
    assert r.status_code == 201, r.text
    hook.use_secret(r.json()["data"]["secret"])
    return r.json()["data"]["id"]


def register(client: httpx.Client, n: int) -> None:
    r = client.post(
        "/api/v1/auth/register",
        json={
            "name": f"User {n}",
            "email": f"hook-{n}-{time.monotonic_ns()}@example.com",
            "password": "a-good-password",
        },
    )
    assert r.status_code == 201, r.text


def vps_status(client: httpx.Client, vps_id: str) -> str:
    return client.get(f"/api/v1/vps/{vps_id}").json()["data"]["status"]


def webhook_event_ids(database_url: str) -> dict[str, str]:
    """Every webhook event the service wrote, id to type."""
    from cloudplane.services.webhooks import EVENT_NAMES

    engine = create_engine(Settings(database_url=database_url).database_url)
    try:
        with engine.connect() as conn:
            return dict(conn.execute(select(Event.id, Event.type).where(Event.type.in_(EVENT_NAMES))).all())
    finally:
        engine.dispose()


def delivery_statuses(database_url: str) -> list[str]:
    engine = create_engine(Settings(database_url=database_url).database_url)
    try:
        with engine.connect() as conn:
            return list(conn.scalars(select(WebhookDelivery.status)))
    finally:
        engine.dispose()


def test_every_event_of_a_real_service_arrives_verified(service_factory, e2e_database_url: str, tmp_path: Path) -> None:
    service = service_factory(**WEBHOOK_SETTINGS)
    service.start()
    with (
        receiver(tmp_path / "receiver") as hook,
        httpx.Client(base_url=service.url, headers={"Authorization": f"Bearer {service.api_key}"}, timeout=30) as c,
    ):
        webhook_id = add_endpoint(c, hook)
        register(c, 1)
        r = c.post("/api/v1/vps", json={"name": "hooked", "plan_id": "plan-professional"})
        assert r.status_code == 201, r.text
        vps_id = r.json()["data"]["id"]
        wait_for(lambda: vps_status(c, vps_id) == "running")
        assert c.post(f"/api/v1/vps/{vps_id}/backups", json={"name": "nightly"}).status_code == 201
        wait_for(lambda: [b["status"] for b in c.get(f"/api/v1/vps/{vps_id}/backups").json()["data"]] == ["completed"])
        assert c.post(f"/api/v1/vps/{vps_id}/stop").status_code == 200
        wait_for(lambda: vps_status(c, vps_id) == "stopped")
        assert c.post(f"/api/v1/vps/{vps_id}/start").status_code == 200
        wait_for(lambda: vps_status(c, vps_id) == "running")
        assert c.delete(f"/api/v1/vps/{vps_id}").status_code == 200
        wait_for(lambda: c.get(f"/api/v1/vps/{vps_id}").status_code == 404)
        user = c.get("/api/v1/admin/users").json()["data"]
        victim = next(u["id"] for u in user if u["email"].startswith("hook-1-"))
        assert c.post(f"/api/v1/admin/users/{victim}/suspend").status_code == 200

        expected = {
            "user.registered",
            "vps.created",
            "vps.backup.created",
            "vps.stopped",
            "vps.started",
            "vps.deleted",
            "user.suspended",
        }
        wait_for(lambda: expected <= {g["event"] for g in hook.received()})
        got = hook.received()
        assert all(g["document_check"] == "true" and g["standard_check"] == "true" for g in got), got
        bodies = {g["event"]: json.loads(g["body"]) for g in got}
        assert bodies["vps.created"]["data"]["vps_id"] == vps_id
        assert bodies["vps.created"]["data"]["plan"] == "Professional VPS"  # the document's example plan
        assert bodies["vps.backup.created"]["data"]["backup_id"].startswith("backup-")
        assert bodies["user.suspended"]["data"]["user_id"] == victim
        log = c.get(f"/api/v1/admin/webhooks/{webhook_id}/deliveries?limit=100").json()
        assert log["pagination"]["total"] == len(got)
        assert {d["status"] for d in log["data"]} == {"delivered"}
        metrics = c.get("/metrics").text
        assert 'cloudplane_webhook_deliveries_total{outcome="delivered"}' in metrics


def test_sigkill_mid_delivery_loses_none(service_factory, e2e_database_url: str, tmp_path: Path) -> None:
    service = service_factory(**WEBHOOK_SETTINGS)
    service.start()
    headers = {"Authorization": f"Bearer {service.api_key}"}
    with receiver(tmp_path / "receiver") as hook:
        # A slow receiver: when the service is killed, some deliveries are in flight and the rest wait.
        hook.control(delay_s=0.7)
        with httpx.Client(base_url=service.url, headers=headers, timeout=30) as c:
            add_endpoint(c, hook)
            for n in range(40):
                register(c, n)
        wait_for(lambda: len(hook.received()) >= 5, every=0.02)
        service.kill()
        received_before = {g["webhook_id"] for g in hook.received()}
        written = webhook_event_ids(e2e_database_url)
        assert len(written) == 40 and not set(written) <= received_before, "the kill came too late to test anything"

        hook.control()
        service.start()
        wait_for(lambda: set(written) <= {g["webhook_id"] for g in hook.received()})
        wait_for(lambda: set(delivery_statuses(e2e_database_url)) == {"delivered"})
        got = hook.received()
        assert all(g["document_check"] == "true" and g["standard_check"] == "true" for g in got), got
        # At least once: a try cut off by the kill is sent again under the same `webhook-id`, never under another.
        assert {g["webhook_id"] for g in got} == set(written)

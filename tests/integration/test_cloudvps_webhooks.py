"""Webhooks: the admin routes and their rules (403 for users, URLs checked with the field named, the secret shown
once and sealed at rest, rotation), and delivery to a real receiver process on loopback that checks every one with
the document's `verifyWebhookSignature` (Node) and the `standardwebhooks` package: fan-out from the outbox, retries
with backoff, the dead letter, redelivery with the same `webhook-id`, and the address check again at delivery."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from cloudplane.core import Core
from cloudplane.db.tables import WebhookDelivery, WebhookEndpoint
from cloudplane.domain.events import EventType
from cloudplane.services import events, webhooks
from cloudplane.workflows import webhooks as sender
from tests.conftest import SERVER_BODY, Tenant, eventually
from tests.integration.test_pages import pages_of
from tests.webhook_receiver import Receiver, receiver

PUBLIC_URL = "https://93.184.215.14/hooks"  # a public address literal: no DNS needed, never reached here


@pytest.fixture
def private_core(core: Core) -> Core:
    """The session's Core with loopback receivers allowed and short retries, as an operator's test setup would be."""
    settings = core.settings.model_copy(
        update={
            "webhooks_allow_private": True,
            "webhooks_backoff_base_s": 0.05,
            "webhooks_backoff_max_s": 0.2,
            "webhooks_max_attempts": 3,
            "webhooks_timeout_s": 3.0,
        }
    )
    return dataclasses.replace(core, settings=settings)


@pytest.fixture(autouse=True)
def no_endpoints_left(core: Core) -> Iterator[None]:
    """Each test's endpoints go with it: the database is shared by the whole session."""
    yield
    with core.db.write() as s:
        for endpoint in s.scalars(select(WebhookEndpoint)):
            s.execute(WebhookDelivery.__table__.delete().where(WebhookDelivery.endpoint_id == endpoint.id))
            s.delete(endpoint)


@pytest.fixture
def hook(tmp_path: Path) -> Iterator[Receiver]:
    with receiver(tmp_path / "receiver") as started:
        yield started


async def deliver_until(core: Core, done: Any, timeout: float = 20.0) -> None:
    """Run sender passes until `done()` holds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        await sender.deliver_due(core)
        if done():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("deliveries not done in time")


def hooked(core: Core, admin: Tenant, hook: Receiver, *events: str, path: str = "/hooks") -> webhooks.EndpointView:
    """An endpoint at the receiver (`path` of it) for these events (all when none), whose secret it checks with."""
    endpoint, secret = webhooks.create_endpoint(
        core, admin.principal, url=hook.url.removesuffix("/hooks") + path, event_names=list(events) or None
    )
    hook.use_secret(secret, path)
    return endpoint


def deliveries(core: Core, endpoint_id: int) -> list[WebhookDelivery]:
    with core.db.read() as s:
        return list(s.scalars(select(WebhookDelivery).where(WebhookDelivery.endpoint_id == endpoint_id)))


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/api/v1/admin/webhooks"),
        ("POST", "/api/v1/admin/webhooks"),
        ("GET", "/api/v1/admin/webhooks/webhook-1"),
        ("PUT", "/api/v1/admin/webhooks/webhook-1"),
        ("DELETE", "/api/v1/admin/webhooks/webhook-1"),
        ("POST", "/api/v1/admin/webhooks/webhook-1/rotate-secret"),
        ("GET", "/api/v1/admin/webhooks/webhook-1/deliveries"),
        ("POST", "/api/v1/admin/webhooks/webhook-1/deliveries/delivery-1/redeliver"),
    ],
)
async def test_a_user_gets_403_on_every_webhook_route(client, tenant: Tenant, method: str, path: str) -> None:
    body = {"url": PUBLIC_URL} if method in ("POST", "PUT") else None
    r = await client.request(method, path, headers=tenant.headers, json=body)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["code"] == "FORBIDDEN"


async def test_the_secret_is_shown_once_and_sealed_at_rest(client, core: Core, make_tenant) -> None:
    admin = make_tenant("admin")
    r = await client.post(
        "/api/v1/admin/webhooks", json={"url": PUBLIC_URL, "description": "billing"}, headers=admin.headers
    )
    assert r.status_code == 201, r.text
    made = r.json()["data"]
    secret = made["secret"]
    assert secret.startswith("whsec_") and len(secret) > 40
    assert made["id"].startswith("webhook-") and made["url"] == PUBLIC_URL and made["active"] is True
    assert made["events"] == list(webhooks.EVENT_NAMES)
    for path in ("/api/v1/admin/webhooks", f"/api/v1/admin/webhooks/{made['id']}"):
        shown = await client.get(path, headers=admin.headers)
        assert shown.status_code == 200 and secret not in shown.text and '"secret"' not in shown.text
    # At rest: sealed, not the secret's text, and it opens to the secret only on its own row.
    endpoint_id = int(made["id"].removeprefix("webhook-"))
    with core.db.read() as s:
        sealed = s.get(WebhookEndpoint, endpoint_id).secret_sealed
    assert secret.encode() not in sealed and secret.removeprefix("whsec_").encode() not in sealed
    assert webhooks.unseal(webhooks.sealer(core.db), endpoint_id, sealed) == secret
    with pytest.raises(Exception):  # noqa: B017 - any refusal will do: cryptography's InvalidTag
        webhooks.unseal(webhooks.sealer(core.db), endpoint_id + 1, sealed)


async def test_rotation_replaces_the_secret_and_shows_the_new_one_once(client, core: Core, make_tenant) -> None:
    admin = make_tenant("admin")
    made = (await client.post("/api/v1/admin/webhooks", json={"url": PUBLIC_URL}, headers=admin.headers)).json()
    r = await client.post(f"/api/v1/admin/webhooks/{made['data']['id']}/rotate-secret", headers=admin.headers)
    assert r.status_code == 200, r.text
    rotated = r.json()["data"]
    assert rotated["secret"].startswith("whsec_") and rotated["secret"] != made["data"]["secret"]
    assert rotated["secret_rotated_at"] > made["data"]["secret_rotated_at"]
    with core.db.read() as s:
        sealed = s.get(WebhookEndpoint, int(rotated["id"].removeprefix("webhook-"))).secret_sealed
    assert (
        webhooks.unseal(webhooks.sealer(core.db), int(rotated["id"].removeprefix("webhook-")), sealed)
        == rotated["secret"]
    )
    shown = await client.get(f"/api/v1/admin/webhooks/{rotated['id']}", headers=admin.headers)
    assert rotated["secret"] not in shown.text


@pytest.mark.parametrize(
    "url",
    [
        "http://93.184.215.14/hooks",  # plain http
        "https://user:pass@93.184.215.14/hooks",  # credentials
        "https://127.0.0.1/hooks",
        "https://localhost:8443/hooks",  # a name that resolves to loopback
        "https://10.1.2.3/hooks",
        "https://169.254.169.254/latest/meta-data",  # cloud metadata
        "https://100.64.0.1/hooks",  # shared address space (CGNAT)
        "https://[::1]/hooks",
        "https://[::ffff:127.0.0.1]/hooks",  # IPv4-mapped loopback
        "https://[64:ff9b::a01:203]/hooks",  # NAT64 of 10.1.2.3
        "https://[fd00::1]/hooks",
        "ftp://93.184.215.14/hooks",
        "not a url",
        "https://93.184.215.14:0/hooks",
        "https://93.184.215.14/hooks#fragment",
    ],
)
async def test_a_url_that_is_not_https_to_a_public_address_is_refused(client, make_tenant, url: str) -> None:
    admin = make_tenant("admin")
    r = await client.post("/api/v1/admin/webhooks", json={"url": url}, headers=admin.headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"]["field"] == "url", r.text
    made = await client.post("/api/v1/admin/webhooks", json={"url": PUBLIC_URL}, headers=admin.headers)
    r = await client.put(
        f"/api/v1/admin/webhooks/{made.json()['data']['id']}", json={"url": url}, headers=admin.headers
    )
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "url", r.text


async def test_bodies_are_checked(client, make_tenant) -> None:
    admin = make_tenant("admin")
    for body, field in [
        ({"url": PUBLIC_URL, "events": ["vps.exploded"]}, "events"),
        ({"url": PUBLIC_URL, "events": []}, "events"),
        ({"url": PUBLIC_URL, "secret": "mine"}, "secret"),
        ({}, "url"),
    ]:
        r = await client.post("/api/v1/admin/webhooks", json=body, headers=admin.headers)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"]["field"] == field, r.text
    assert (await client.get("/api/v1/admin/webhooks/webhook-٣", headers=admin.headers)).status_code == 404
    assert (await client.get("/api/v1/admin/webhooks/webhook-999999", headers=admin.headers)).status_code == 404


async def test_update_changes_what_is_given(client, make_tenant) -> None:
    admin = make_tenant("admin")
    made = (await client.post("/api/v1/admin/webhooks", json={"url": PUBLIC_URL}, headers=admin.headers)).json()
    path = f"/api/v1/admin/webhooks/{made['data']['id']}"
    r = await client.put(
        path, json={"events": ["user.suspended", "vps.created"], "active": False}, headers=admin.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["events"] == ["vps.created", "user.suspended"]  # in the document's order
    assert r.json()["data"]["active"] is False and r.json()["data"]["url"] == PUBLIC_URL
    r = await client.patch(path, json={"description": "ops"}, headers=admin.headers)
    assert r.json()["data"]["description"] == "ops" and r.json()["data"]["active"] is False
    listed = (await client.get("/api/v1/admin/webhooks?limit=1", headers=admin.headers)).json()
    assert listed["pagination"]["limit"] == 1 and listed["data"][0]["id"] == made["data"]["id"]
    assert (await client.delete(path, headers=admin.headers)).status_code == 200
    assert (await client.get(path, headers=admin.headers)).status_code == 404


async def register(client, email: str) -> int:
    r = await client.post(
        "/api/v1/auth/register", json={"name": "Hook Test", "email": email, "password": "correct-horse-battery"}
    )
    assert r.status_code == 201, r.text
    return int(r.json()["data"]["user"]["id"].removeprefix("user-"))


async def test_events_are_delivered_signed_and_verified_by_the_documents_function(
    client, core: Core, private_core: Core, make_tenant, hook: Receiver
) -> None:
    admin = make_tenant("admin")
    endpoint = hooked(private_core, admin, hook)
    # Subscribed to nothing but user events, a second endpoint gets no VPS event.
    only_users = hooked(private_core, admin, hook, "user.registered", path="/hooks/users")
    user_id = await register(client, f"hooked-{time.monotonic_ns()}@example.com")
    owner = make_tenant()
    r = await client.post("/api/servers", json=SERVER_BODY, headers=owner.headers)
    assert r.status_code == 201, r.text
    server_id = r.json()["id"]

    async def vps_created() -> list[str]:
        return [d.event_type for d in deliveries(core, endpoint.id)]

    await eventually(vps_created, lambda types: "vps.created" in types)
    await deliver_until(private_core, lambda: all(d.status == "delivered" for d in deliveries(core, endpoint.id)))

    got = hook.received()
    assert got and all(g["document_check"] == "true" and g["standard_check"] == "true" for g in got), got
    by_event = {(g["path"], g["event"]): json.loads(g["body"]) for g in got}
    registered = by_event[("/hooks", "user.registered")]
    assert registered["event"] == "user.registered" and registered["timestamp"].endswith("Z")
    assert registered["data"]["user_id"] == f"user-{user_id}"
    created = by_event[("/hooks", "vps.created")]
    assert created["data"]["vps_id"] == f"vps-{server_id}"
    assert created["data"]["user_id"] == f"user-{owner.principal.user_id}"
    plans = {p.slug: p.name for p in core.catalog.view().plans}
    assert created["data"]["plan"] == plans["basic-1gb"] and created["data"]["status"] == "running"
    assert ("/hooks/users", "user.registered") in by_event
    assert {g["event"] for g in got if g["path"] == "/hooks/users"} == {"user.registered"}
    # The `webhook-id` is the event's id, the same for every endpoint that gets it.
    ids = {g["webhook_id"] for g in got if g["event"] == "user.registered"}
    assert len(ids) == 1 and [d.event_id for d in deliveries(core, only_users.id)] == list(ids)
    metrics = await client.get("/metrics")
    assert 'cloudplane_webhook_deliveries_total{outcome="delivered"}' in metrics.text


async def test_a_failing_receiver_gets_retries_then_a_dead_letter_then_a_redelivery_with_the_same_id(
    client, core: Core, private_core: Core, make_tenant, hook: Receiver
) -> None:
    admin = make_tenant("admin")
    endpoint = hooked(private_core, admin, hook, "user.registered")
    hook.control(fail_first=2)  # 500, 500, then 200
    await register(client, f"retried-{time.monotonic_ns()}@example.com")
    await deliver_until(private_core, lambda: deliveries(core, endpoint.id)[0].status == "delivered")
    (delivered,) = deliveries(core, endpoint.id)
    assert delivered.attempts == 3 and delivered.last_status_code == 200
    tries = hook.received()
    assert [t["answered"] for t in tries] == [500, 500, 200]
    assert {t["webhook_id"] for t in tries} == {delivered.event_id}
    assert len({t["body"] for t in tries}) == 1  # the same bytes every time
    assert all(t["document_check"] == "true" and t["standard_check"] == "true" for t in tries)

    hook.control(always=500)
    await register(client, f"dead-{time.monotonic_ns()}@example.com")
    await deliver_until(private_core, lambda: any(d.status == "dead" for d in deliveries(core, endpoint.id)))
    (dead,) = [d for d in deliveries(core, endpoint.id) if d.status == "dead"]
    assert dead.attempts == private_core.settings.webhooks_max_attempts and dead.last_status_code == 500
    assert "500" in (dead.last_error or "")
    # Dead means no more tries.
    await sender.deliver_due(private_core)
    assert len([t for t in hook.received() if t["webhook_id"] == dead.event_id]) == 3

    log = await client.get(
        f"/api/v1/admin/webhooks/webhook-{endpoint.id}/deliveries?status=dead", headers=admin.headers
    )
    assert log.status_code == 200 and [d["id"] for d in log.json()["data"]] == [f"delivery-{dead.id}"]
    assert log.json()["data"][0]["next_attempt_at"] is None and log.json()["data"][0]["last_response_code"] == 500

    hook.control()
    r = await client.post(
        f"/api/v1/admin/webhooks/webhook-{endpoint.id}/deliveries/delivery-{dead.id}/redeliver", headers=admin.headers
    )
    assert r.status_code == 200, r.text
    assert r.json()["data"]["status"] == "pending" and r.json()["data"]["attempts"] == 0
    assert r.json()["data"]["event_id"] == dead.event_id and r.json()["data"]["payload"]["event"] == "user.registered"
    await deliver_until(private_core, lambda: all(d.status == "delivered" for d in deliveries(core, endpoint.id)))
    last = hook.received()[-1]
    assert last["webhook_id"] == dead.event_id and last["answered"] == 200 and last["standard_check"] == "true"
    # Another endpoint's delivery is not found under this one.
    other, _ = webhooks.create_endpoint(private_core, admin.principal, url=PUBLIC_URL, active=False)
    r = await client.post(
        f"/api/v1/admin/webhooks/webhook-{other.id}/deliveries/delivery-{dead.id}/redeliver", headers=admin.headers
    )
    assert r.status_code == 404


async def test_the_address_is_checked_again_at_delivery(
    client, core: Core, private_core: Core, make_tenant, hook: Receiver
) -> None:
    """An endpoint saved while loopback was allowed is refused at delivery once it is not: nothing is sent."""
    admin = make_tenant("admin")
    endpoint = hooked(private_core, admin, hook, "user.registered")
    strict = dataclasses.replace(
        private_core, settings=private_core.settings.model_copy(update={"webhooks_allow_private": False})
    )
    await register(client, f"guarded-{time.monotonic_ns()}@example.com")
    await sender.deliver_due(strict)
    (refused,) = deliveries(core, endpoint.id)
    assert refused.status == "failed" and refused.last_status_code is None
    assert "https" in (refused.last_error or ""), refused.last_error
    assert hook.received() == []


async def test_a_paused_endpoint_gets_no_deliveries(client, core: Core, private_core: Core, make_tenant) -> None:
    admin = make_tenant("admin")
    endpoint, _ = webhooks.create_endpoint(private_core, admin.principal, url=PUBLIC_URL, active=False)
    await register(client, f"paused-{time.monotonic_ns()}@example.com")
    assert deliveries(core, endpoint.id) == []


async def test_a_secret_that_does_not_open_fails_the_try_without_sending(
    client, core: Core, private_core: Core, make_tenant, hook: Receiver
) -> None:
    """A sealed secret that no longer opens (the service's key changed) fails each try with what to do, and nothing
    unsigned goes out."""
    admin = make_tenant("admin")
    endpoint = hooked(private_core, admin, hook, "user.registered")
    with core.db.write() as s:
        row = s.get(WebhookEndpoint, endpoint.id)
        row.secret_sealed = webhooks.seal(webhooks.sealer(core.db), endpoint.id + 1, "whsec_" + "B" * 44)
    await register(client, f"unsealed-{time.monotonic_ns()}@example.com")
    await sender.deliver_due(private_core)
    (failed,) = deliveries(core, endpoint.id)
    assert failed.status == "failed" and failed.last_error == sender.UNSEALABLE
    assert hook.received() == []


async def test_billing_events_flow_through_with_what_they_recorded(
    core: Core, private_core: Core, make_tenant, hook: Receiver
) -> None:
    """Delivery is generic over the event: a billing service's `invoice.paid`, recorded as any event is, arrives
    with its owner and what it recorded."""
    admin, owner = make_tenant("admin"), make_tenant()
    endpoint = hooked(private_core, admin, hook, "invoice.paid")
    with core.db.write() as s:
        events.record(
            s,
            EventType.INVOICE_PAID,
            account_id=owner.principal.account_id,
            target_type="invoice",
            target_id=42,
            data={"amount": "19.99", "currency": "USD"},
        )
    await deliver_until(private_core, lambda: [d.status for d in deliveries(core, endpoint.id)] == ["delivered"])
    (got,) = hook.received()
    assert got["document_check"] == "true" and got["standard_check"] == "true"
    body = json.loads(got["body"])
    assert body["event"] == "invoice.paid"
    assert body["data"] == {
        "user_id": f"user-{owner.principal.user_id}",
        "invoice_id": "inv-42",  # as the billing routes name it
        "amount": "19.99",
        "currency": "USD",
    }


async def test_a_redirect_is_not_followed_and_a_slow_receiver_times_out(
    client, core: Core, private_core: Core, make_tenant, hook: Receiver
) -> None:
    admin = make_tenant("admin")
    endpoint = hooked(private_core, admin, hook, "user.registered")
    hook.control(always=302)
    await register(client, f"redirected-{time.monotonic_ns()}@example.com")
    await sender.deliver_due(private_core)
    (redirected,) = deliveries(core, endpoint.id)
    assert redirected.status == "failed" and redirected.last_status_code == 302
    assert "redirects are not followed" in (redirected.last_error or "")
    assert len(hook.received()) == 1

    hook.control(delay_s=2)
    impatient = dataclasses.replace(
        private_core, settings=private_core.settings.model_copy(update={"webhooks_timeout_s": 0.5})
    )
    await asyncio.sleep(0.3)  # past the backoff
    started = time.monotonic()
    await sender.deliver_due(impatient)
    assert time.monotonic() - started < 1.5
    (slow,) = deliveries(core, endpoint.id)
    assert slow.attempts == 2 and slow.status == "failed" and slow.last_error == "no reply within 0.5s"


async def test_every_page_of_a_delivery_log_is_the_logs_own(client, core: Core, make_tenant) -> None:
    admin = make_tenant("admin")
    endpoint, _ = webhooks.create_endpoint(core, admin.principal, url=PUBLIC_URL, event_names=["user.registered"])
    for n in range(5):
        await register(client, f"paged-{n}-{time.monotonic_ns()}@example.com")
    path = f"/api/v1/admin/webhooks/webhook-{endpoint.id}/deliveries"
    whole = [d["id"] for d in (await client.get(f"{path}?limit=100", headers=admin.headers)).json()["data"]]
    assert len(whole) == 5 and whole == sorted(whole, key=lambda i: -int(i.removeprefix("delivery-")))
    for number, expected in enumerate(pages_of(whole, 2), start=1):
        r = await client.get(f"{path}?limit=2&page={number}", headers=admin.headers)
        assert [d["id"] for d in r.json()["data"]] == expected, number
        assert r.json()["pagination"]["total"] == 5

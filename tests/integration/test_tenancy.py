"""Tenancy across the route table: another account's ids are 404 on every route, and nothing changes."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any, get_args

import httpx
from fastapi import routing
from fastapi.routing import APIRoute
from pydantic import BaseModel

from tests.conftest import SERVER_BODY, Tenant, eventually

Ids = dict[str, Any]

# (method, path template) -> how an intruder calls it with the owner's ids; every /api route taking an id or a
# body that names ids must be here, so a new route without a tenancy check fails this test.
INTRUSIONS = {
    ("GET", "/api/servers/{server_id}"): lambda ids: ("GET", f"/api/servers/{ids['server']}", None),
    ("DELETE", "/api/servers/{server_id}"): lambda ids: ("DELETE", f"/api/servers/{ids['server']}", None),
    ("POST", "/api/servers/{server_id}/start"): lambda ids: ("POST", f"/api/servers/{ids['stopped']}/start", None),
    ("POST", "/api/servers/{server_id}/stop"): lambda ids: ("POST", f"/api/servers/{ids['server']}/stop", None),
    ("POST", "/api/servers/{server_id}/reboot"): lambda ids: ("POST", f"/api/servers/{ids['server']}/reboot", None),
    ("GET", "/api/ssh-keys/{key_id}"): lambda ids: ("GET", f"/api/ssh-keys/{ids['key']}", None),
    ("DELETE", "/api/ssh-keys/{key_id}"): lambda ids: ("DELETE", f"/api/ssh-keys/{ids['key']}", None),
    ("GET", "/api/servers/{server_id}/snapshots"): lambda ids: ("GET", f"/api/servers/{ids['server']}/snapshots", None),
    ("POST", "/api/servers/{server_id}/snapshots"): lambda ids: (
        "POST",
        f"/api/servers/{ids['server']}/snapshots",
        {"label": "mine now"},
    ),
    ("GET", "/api/servers/{server_id}/snapshots/{snapshot_id}"): lambda ids: (
        "GET",
        f"/api/servers/{ids['stopped']}/snapshots/{ids['snapshot']}",
        None,
    ),
    ("DELETE", "/api/servers/{server_id}/snapshots/{snapshot_id}"): lambda ids: (
        "DELETE",
        f"/api/servers/{ids['stopped']}/snapshots/{ids['snapshot']}",
        None,
    ),
    ("POST", "/api/servers/{server_id}/snapshots/{snapshot_id}/restore"): lambda ids: (
        "POST",
        f"/api/servers/{ids['stopped']}/snapshots/{ids['snapshot']}/restore",
        None,
    ),
    ("POST", "/api/servers"): lambda ids: ("POST", "/api/servers", {**SERVER_BODY, "ssh_keys": [ids["key"]]}),
    ("DELETE", "/api/v1/api-keys/{key_id}"): lambda ids: ("DELETE", f"/api/v1/api-keys/{ids['api_key']}", None),
    ("GET", "/api/v1/instances/{instance_id}"): lambda ids: ("GET", f"/api/v1/instances/{ids['gpu']}", None),
    ("DELETE", "/api/v1/instances/{instance_id}"): lambda ids: ("DELETE", f"/api/v1/instances/{ids['gpu']}", None),
    ("POST", "/api/v1/instances/{instance_id}/start"): lambda ids: (
        "POST",
        f"/api/v1/instances/{ids['gpu']}/start",
        None,
    ),
    ("POST", "/api/v1/instances/{instance_id}/stop"): lambda ids: (
        "POST",
        f"/api/v1/instances/{ids['gpu']}/stop",
        None,
    ),
    ("GET", "/api/v1/vps/{vps_id}"): lambda ids: ("GET", f"/api/v1/vps/vps-{ids['server']}", None),
    ("PUT", "/api/v1/vps/{vps_id}"): lambda ids: ("PUT", f"/api/v1/vps/vps-{ids['server']}", {"name": "mine now"}),
    ("DELETE", "/api/v1/vps/{vps_id}"): lambda ids: ("DELETE", f"/api/v1/vps/vps-{ids['server']}", None),
    ("POST", "/api/v1/vps/{vps_id}/start"): lambda ids: ("POST", f"/api/v1/vps/vps-{ids['stopped']}/start", None),
    ("POST", "/api/v1/vps/{vps_id}/stop"): lambda ids: ("POST", f"/api/v1/vps/vps-{ids['server']}/stop", None),
    ("POST", "/api/v1/vps/{vps_id}/restart"): lambda ids: ("POST", f"/api/v1/vps/vps-{ids['server']}/restart", None),
    ("POST", "/api/v1/vps/{vps_id}/rebuild"): lambda ids: (
        "POST",
        f"/api/v1/vps/vps-{ids['server']}/rebuild",
        {"operating_system": "debian-12"},
    ),
    ("GET", "/api/v1/vps/{vps_id}/backups"): lambda ids: ("GET", f"/api/v1/vps/vps-{ids['stopped']}/backups", None),
    ("POST", "/api/v1/vps/{vps_id}/backups"): lambda ids: (
        "POST",
        f"/api/v1/vps/vps-{ids['stopped']}/backups",
        {"name": "mine now"},
    ),
    ("POST", "/api/v1/vps/{vps_id}/backups/{backup_id}/restore"): lambda ids: (
        "POST",
        f"/api/v1/vps/vps-{ids['stopped']}/backups/backup-{ids['snapshot']}/restore",
        None,
    ),
    ("DELETE", "/api/v1/vps/{vps_id}/backups/{backup_id}"): lambda ids: (
        "DELETE",
        f"/api/v1/vps/vps-{ids['stopped']}/backups/backup-{ids['snapshot']}",
        None,
    ),
    ("GET", "/api/v1/vps/{vps_id}/backups/schedule"): lambda ids: (
        "GET",
        f"/api/v1/vps/vps-{ids['stopped']}/backups/schedule",
        None,
    ),
    ("PUT", "/api/v1/vps/{vps_id}/backups/schedule"): lambda ids: (
        "PUT",
        f"/api/v1/vps/vps-{ids['stopped']}/backups/schedule",
        {"enabled": True, "hour": 1},
    ),
    ("DELETE", "/api/v1/vps/{vps_id}/backups/schedule"): lambda ids: (
        "DELETE",
        f"/api/v1/vps/vps-{ids['stopped']}/backups/schedule",
        None,
    ),
    ("GET", "/api/v1/vps/{vps_id}/network"): lambda ids: ("GET", f"/api/v1/vps/vps-{ids['stopped']}/network", None),
    ("PUT", "/api/v1/vps/{vps_id}/network"): lambda ids: (
        "PUT",
        f"/api/v1/vps/vps-{ids['stopped']}/network",
        {"firewall_rules": [{"action": "drop", "protocol": "tcp", "port": 22}]},
    ),
    ("POST", "/api/v1/vps/{vps_id}/network/ip"): lambda ids: (
        "POST",
        f"/api/v1/vps/vps-{ids['stopped']}/network/ip",
        None,
    ),
    ("POST", "/api/v1/deployments"): lambda ids: ("POST", "/api/v1/deployments", {"app_id": ids["app"]}),
    ("GET", "/api/v1/deployments/{deployment_id}"): lambda ids: (
        "GET",
        f"/api/v1/deployments/{ids['deployment']}",
        None,
    ),
    ("GET", "/api/v1/deployments/{deployment_id}/logs"): lambda ids: (
        "GET",
        f"/api/v1/deployments/{ids['deployment']}/logs",
        None,
    ),
    ("GET", "/api/v1/vps/{vps_id}/metrics"): lambda ids: ("GET", f"/api/v1/vps/vps-{ids['server']}/metrics", None),
    ("GET", "/api/v1/vps/{vps_id}/console"): lambda ids: ("GET", f"/api/v1/vps/vps-{ids['server']}/console", None),
    ("GET", "/api/v1/apps/{app_id}"): lambda ids: ("GET", f"/api/v1/apps/{ids['app']}", None),
    ("PUT", "/api/v1/apps/{app_id}"): lambda ids: (
        "PUT",
        f"/api/v1/apps/{ids['app']}",
        {"description": "mine now", "environment_variables": {"SECRET": None}},
    ),
    ("DELETE", "/api/v1/apps/{app_id}"): lambda ids: ("DELETE", f"/api/v1/apps/{ids['app']}", None),
    ("GET", "/api/operations/{operation_id}"): lambda ids: ("GET", f"/api/operations/{ids['operation']}", None),
    ("GET", "/api/v1/operations/{operation_id}"): lambda ids: ("GET", f"/api/v1/operations/{ids['operation']}", None),
    ("GET", "/api/v1/support/tickets/{ticket_id}"): lambda ids: (
        "GET",
        f"/api/v1/support/tickets/{ids['ticket']}",
        None,
    ),
    ("PUT", "/api/v1/support/tickets/{ticket_id}"): lambda ids: (
        "PUT",
        f"/api/v1/support/tickets/{ids['ticket']}",
        {"status": "closed", "priority": "low"},
    ),
    ("POST", "/api/v1/support/tickets/{ticket_id}/messages"): lambda ids: (
        "POST",
        f"/api/v1/support/tickets/{ids['ticket']}/messages",
        {"message": "mine now"},
    ),
    ("GET", "/api/v1/support/tickets/{ticket_id}/attachments/{attachment_id}"): lambda ids: (
        "GET",
        f"/api/v1/support/tickets/{ids['ticket']}/attachments/{ids['attachment']}",
        None,
    ),
    ("GET", "/api/v1/billing/invoices/{invoice_id}"): lambda ids: (
        "GET",
        f"/api/v1/billing/invoices/inv-{ids['invoice']}",
        None,
    ),
    ("GET", "/api/v1/billing/invoices/{invoice_id}/pdf"): lambda ids: (
        "GET",
        f"/api/v1/billing/invoices/inv-{ids['invoice']}/pdf",
        None,
    ),
    ("DELETE", "/api/v1/billing/payment-methods/{payment_method_id}"): lambda ids: (
        "DELETE",
        f"/api/v1/billing/payment-methods/{ids['card']}",
        None,
    ),
}
# Routes that take no id and list only the caller's own objects (checked below for emptiness).
ID_FREE = {
    ("GET", "/api/servers"),
    ("GET", "/api/ssh-keys"),
    ("POST", "/api/ssh-keys"),
    ("GET", "/api/plans"),
    ("GET", "/api/images"),
    ("GET", "/api/locations"),
    ("GET", "/api/account"),
    ("GET", "/api/account/recommendations"),
}


# Routes about the caller only (no ids): the caller's own profile, keys, sessions.
ID_FREE |= {
    ("GET", "/api/v1/providers"),
    ("GET", "/api/v1/gpu-models"),
    ("GET", "/api/v1/offers/search"),
    ("GET", "/api/v1/instances"),
    ("POST", "/api/v1/instances"),
    ("GET", "/api/v1/api-keys"),
    ("POST", "/api/v1/api-keys"),
    ("GET", "/api/v1/users/profile"),
    ("PUT", "/api/v1/users/profile"),
    ("POST", "/api/v1/users/change-password"),
    ("GET", "/api/v1/users/me"),
    ("PUT", "/api/v1/users/me"),
    ("GET", "/api/v1/vps"),
    ("POST", "/api/v1/vps"),
    ("GET", "/api/v1/apps"),
    ("POST", "/api/v1/apps"),
    ("GET", "/api/v1/deployments"),
    ("GET", "/api/v1/operations"),
    ("GET", "/api/v1/support/tickets"),
    ("POST", "/api/v1/support/tickets"),
    ("GET", "/api/v1/billing/usage"),
    ("GET", "/api/v1/billing/invoices"),
    # The catalog is the same for every account: a plan id names nothing of anyone's.
    ("GET", "/api/v1/plans"),
    ("GET", "/api/v1/plans/{plan_id}"),
    ("GET", "/api/v1/billing/payment-methods"),
    ("POST", "/api/v1/billing/payment-methods"),
    ("GET", "/api/v1/billing/subscription"),
    ("PUT", "/api/v1/billing/subscription"),
    ("DELETE", "/api/v1/billing/subscription"),
}
# Sign-in routes: anonymous by nature.
ANONYMOUS = {
    ("POST", "/api/v1/auth/register"),
    ("POST", "/api/v1/auth/login"),
    ("POST", "/api/v1/auth/token"),
    ("POST", "/api/v1/auth/refresh"),
    ("POST", "/api/v1/auth/logout"),
    # Stripe's webhooks: signed with the endpoint's secret instead (tests/integration/test_stripe_payments.py).
    ("POST", "/api/v1/webhooks/stripe"),
}
# Admin-only: a user gets 403, whatever the id.
ADMIN = {
    ("GET", "/api/v1/admin/users"): ("GET", "/api/v1/admin/users", None),
    ("GET", "/api/v1/admin/audit-logs"): ("GET", "/api/v1/admin/audit-logs", None),
    ("PUT", "/api/v1/admin/users/{user_id}/tier"): ("PUT", "/api/v1/admin/users/user-1/tier", {"tier": "enterprise"}),
    ("POST", "/api/v1/admin/users/{user_id}/suspend"): ("POST", "/api/v1/admin/users/user-1/suspend", None),
    ("POST", "/api/v1/admin/users/{user_id}/activate"): ("POST", "/api/v1/admin/users/user-1/activate", None),
    ("POST", "/api/v1/admin/users/{user_id}/unsuspend"): ("POST", "/api/v1/admin/users/user-1/unsuspend", None),
    ("GET", "/api/v1/admin/vps"): ("GET", "/api/v1/admin/vps", None),
    ("POST", "/api/v1/admin/vps/{vps_id}/suspend"): ("POST", "/api/v1/admin/vps/vps-1/suspend", None),
    ("POST", "/api/v1/admin/vps/{vps_id}/unsuspend"): ("POST", "/api/v1/admin/vps/vps-1/unsuspend", None),
    ("GET", "/api/v1/admin/stats"): ("GET", "/api/v1/admin/stats", None),
    ("GET", "/api/v1/admin/system/health"): ("GET", "/api/v1/admin/system/health", None),
    ("GET", "/api/v1/admin/users/{user_id}"): ("GET", "/api/v1/admin/users/user-1", None),
    ("PUT", "/api/v1/admin/users/{user_id}"): ("PUT", "/api/v1/admin/users/user-1", {"role": "user"}),
    ("GET", "/api/v1/admin/tickets"): ("GET", "/api/v1/admin/tickets", None),
    ("GET", "/api/v1/admin/tickets/{ticket_id}"): ("GET", "/api/v1/admin/tickets/ticket-1", None),
    ("PUT", "/api/v1/admin/tickets/{ticket_id}"): ("PUT", "/api/v1/admin/tickets/ticket-1", {"status": "closed"}),
    ("POST", "/api/v1/admin/tickets/{ticket_id}/messages"): (
        "POST",
        "/api/v1/admin/tickets/ticket-1/messages",
        {"message": "staff?"},
    ),
    ("POST", "/api/v1/admin/tickets/{ticket_id}/assign"): ("POST", "/api/v1/admin/tickets/ticket-1/assign", None),
    ("GET", "/api/v1/admin/tickets/{ticket_id}/attachments/{attachment_id}"): (
        "GET",
        "/api/v1/admin/tickets/ticket-1/attachments/attachment-1",
        None,
    ),
    ("POST", "/api/v1/admin/billing/payments"): (
        "POST",
        "/api/v1/admin/billing/payments",
        {"user_id": "user-1", "amount": "1.00"},
    ),
    ("POST", "/api/v1/admin/billing/credits"): (
        "POST",
        "/api/v1/admin/billing/credits",
        {"user_id": "user-1", "amount": "1.00"},
    ),
    ("POST", "/api/v1/admin/billing/invoice-runs"): (
        "POST",
        "/api/v1/admin/billing/invoice-runs",
        {"period": "2020-01"},
    ),
    ("GET", "/api/v1/admin/webhooks"): ("GET", "/api/v1/admin/webhooks", None),
    ("POST", "/api/v1/admin/webhooks"): ("POST", "/api/v1/admin/webhooks", {"url": "https://93.184.215.14/"}),
    ("GET", "/api/v1/admin/webhooks/{webhook_id}"): ("GET", "/api/v1/admin/webhooks/webhook-1", None),
    ("PUT", "/api/v1/admin/webhooks/{webhook_id}"): ("PUT", "/api/v1/admin/webhooks/webhook-1", {"active": False}),
    ("PATCH", "/api/v1/admin/webhooks/{webhook_id}"): ("PATCH", "/api/v1/admin/webhooks/webhook-1", {"active": False}),
    ("DELETE", "/api/v1/admin/webhooks/{webhook_id}"): ("DELETE", "/api/v1/admin/webhooks/webhook-1", None),
    ("POST", "/api/v1/admin/webhooks/{webhook_id}/rotate-secret"): (
        "POST",
        "/api/v1/admin/webhooks/webhook-1/rotate-secret",
        None,
    ),
    ("GET", "/api/v1/admin/webhooks/{webhook_id}/deliveries"): (
        "GET",
        "/api/v1/admin/webhooks/webhook-1/deliveries",
        None,
    ),
    ("GET", "/api/v1/admin/webhooks/{webhook_id}/deliveries/{delivery_id}"): (
        "GET",
        "/api/v1/admin/webhooks/webhook-1/deliveries/delivery-1",
        None,
    ),
    ("POST", "/api/v1/admin/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver"): (
        "POST",
        "/api/v1/admin/webhooks/webhook-1/deliveries/delivery-1/redeliver",
        None,
    ),
}
# Documents about the API, public by design.
PUBLIC = {
    ("GET", "/api/openapi.json"),
    ("GET", "/api/openapi.yaml"),
    ("GET", "/api/docs"),
    ("GET", "/api/v1/openapi.json"),
    ("GET", "/api/v1/docs"),
    ("GET", "/api/v1/gpu/openapi.json"),
}


# How a path parameter names an account's object, for the routes this file derives from the route table.
PATH_IDS: dict[str, Callable[[Ids], str]] = {
    "server_id": lambda ids: str(ids["stopped"]),  # the stopped one: a start or a restore on it would be accepted
    "snapshot_id": lambda ids: str(ids["snapshot"]),
    "vps_id": lambda ids: f"vps-{ids['stopped']}",
    "backup_id": lambda ids: f"backup-{ids['snapshot']}",
    "instance_id": lambda ids: str(ids["gpu"]),
    "app_id": lambda ids: str(ids["app"]),
    "ticket_id": lambda ids: str(ids["ticket"]),
    "attachment_id": lambda ids: str(ids["attachment"]),
}
# Bodies for nested routes that need one (none yet); the others get no body.
NESTED_BODIES: dict[tuple[str, str], Any] = {}

# Body fields whose name says they name something: each is walked with another account's id below, or names
# what every account shares (said why).
REFERENCE = re.compile(r"(^|_)(id|ids|slug|slugs|ref|refs|key|keys)$")
BODY_IDS: dict[tuple[str, str, str], Callable[[Ids, Ids], tuple[str, str, Any]]] = {
    # The intruder's own key first: one foreign id among owned ones is enough to refuse the whole create.
    ("POST", "/api/servers", "ssh_keys"): lambda owner, intruder: (
        "POST",
        "/api/servers",
        {**SERVER_BODY, "ssh_keys": [intruder["key"], owner["key"]]},
    ),
    ("POST", "/api/v1/support/tickets", "vps_id"): lambda owner, intruder: (
        "POST",
        "/api/v1/support/tickets",
        {"subject": "about yours", "description": "d", "vps_id": f"vps-{owner['server']}"},
    ),
    ("POST", "/api/v1/deployments", "app_id"): lambda owner, intruder: (
        "POST",
        "/api/v1/deployments",
        {"app_id": owner["app"]},
    ),
    ("POST", "/api/v1/billing/payment-methods", "payment_method_id"): lambda owner, intruder: (
        "POST",
        "/api/v1/billing/payment-methods",
        {"payment_method_id": owner["card"], "set_as_default": True},
    ),
}
SHARED_BODY_REFS = {
    ("POST", "/api/servers", "plan_slug"): "the catalog",
    ("POST", "/api/servers", "image_slug"): "the catalog",
    ("POST", "/api/servers", "location_slug"): "the catalog",
    ("POST", "/api/ssh-keys", "key"): "a whole public key, added to the caller's account",
    ("POST", "/api/v1/vps", "plan_id"): "the catalog",
    ("POST", "/api/v1/vps", "ssh_keys"): "whole public keys, added to the caller's account",
    ("POST", "/api/v1/vps/{vps_id}/rebuild", "ssh_keys"): "whole public keys, added to the caller's account",
    ("POST", "/api/v1/instances", "offer_id"): "a marketplace offer, listed to every account",
    ("POST", "/api/v1/instances", "ssh_key"): "a whole public key",
    ("POST", "/api/v1/admin/tickets/{ticket_id}/assign", "assignee_id"): "an admin, on a route for admins only",
    ("POST", "/api/v1/admin/billing/payments", "user_id"): "admins only: they record payments for any account",
    ("POST", "/api/v1/admin/billing/credits", "user_id"): "admins only: they grant credit to any account",
}


def path_params(template: str) -> list[str]:
    return re.findall(r"{(\w+)}", template)


def nested_routes(app: Any) -> list[tuple[str, str]]:
    """Every route naming an object inside another (a server's snapshot): two ids or more in its path. Deletes
    come last, so that a hole in a read or an action is seen before a delete could hide it. Admin routes reach
    every account's objects by design (a user gets 403 from them: test_admin_routes_answer_403_to_a_user; a
    webhook's delivery under another webhook: test_cloudvps_webhooks.py)."""
    nested = [
        route
        for route in api_routes(app)
        if len(path_params(route[1])) > 1 and not route[1].startswith("/api/v1/admin/")
    ]
    return sorted(nested, key=lambda route: (route[0] == "DELETE", route))


def mixed_urls(template: str, owner: Ids, intruder: Ids) -> list[str]:
    """The template with the intruder's own objects in every place but one, which holds the owner's: a child
    must be found under its own parent, not merely under any parent the caller owns."""
    params = path_params(template)
    return [
        template.format(**{p: PATH_IDS[p](owner if i == j else intruder) for j, p in enumerate(params)})
        for i in range(len(params))
    ]


def body_fields(app: Any) -> set[tuple[str, str, str]]:
    """(method, path, field) for every top-level field of every /api request body."""
    fields: set[tuple[str, str, str]] = set()
    for ctx in routing.iter_route_contexts(app.routes):
        route, path = ctx.route, ctx.path or ""
        if not path.startswith("/api/") or not isinstance(route, APIRoute):
            continue
        for param in route.dependant.body_params:
            annotation = param.field_info.annotation
            models = [
                t for t in (annotation, *get_args(annotation)) if isinstance(t, type) and issubclass(t, BaseModel)
            ]
            names = [name for model in models for name in model.model_fields] or [param.name]
            fields |= {(method, path, name) for method in ctx.methods or () for name in names}
    return fields


def api_routes(app: Any) -> set[tuple[str, str]]:
    paths = ((ctx.path or "", ctx.methods or ()) for ctx in routing.iter_route_contexts(app.routes))
    return {(method, path) for path, methods in paths if path.startswith("/api/") for method in methods}


def test_every_route_is_covered(app) -> None:
    assert api_routes(app) == set(INTRUSIONS) | ID_FREE | PUBLIC | ANONYMOUS | set(ADMIN)


def test_every_nested_route_and_every_id_in_a_body_is_walked(app) -> None:
    nested = nested_routes(app)
    assert ("POST", "/api/servers/{server_id}/snapshots/{snapshot_id}/restore") in nested
    for method, template in nested:
        unknown = set(path_params(template)) - set(PATH_IDS)
        assert not unknown, f"{method} {template}: say in PATH_IDS how {unknown} names an account's object"
    references = {field for field in body_fields(app) if REFERENCE.search(field[2])}
    assert ("POST", "/api/servers", "ssh_keys") in references
    assert references == set(BODY_IDS) | set(SHARED_BODY_REFS)


async def test_admin_routes_answer_403_to_a_user(client, make_tenant) -> None:
    user = make_tenant()
    for verb, url, body in ADMIN.values():
        r = await client.request(verb, url, json=body, headers=user.headers)
        assert r.status_code == 403, (verb, url, r.text)


async def test_every_non_public_route_requires_credentials(client, app) -> None:
    for method, path in api_routes(app) - PUBLIC - ANONYMOUS:
        url = path.format(
            server_id=1,
            snapshot_id=1,
            key_id=1,
            user_id="user-1",
            instance_id="vast_1",
            vps_id="vps-1",
            backup_id="backup-1",
            plan_id="plan-starter",
            app_id="00000000-0000-4000-8000-000000000000",
            deployment_id="00000000-0000-4000-8000-000000000000",
            ticket_id="ticket-1",
            attachment_id="attachment-1",
            webhook_id="webhook-1",
            delivery_id="delivery-1",
            operation_id="00000000-0000-4000-8000-000000000000",
            invoice_id="inv-1",
            payment_method_id="pm_1",
        )
        r = await client.request(method, url, json={})
        assert r.status_code == 401, (method, path, r.status_code)


async def holdings(
    client: httpx.AsyncClient,
    tenant: Tenant,
    create_running_server: Callable[..., Awaitable[dict[str, Any]]],
    core: Any,
) -> Ids:
    """One of everything an account can own, each ready for the actions on it: a key, a running and a stopped
    server with a snapshot, an API key, a GPU instance, an app and an invoice."""
    from tests.integration.test_billing import seed_invoice
    from tests.integration.test_letscloud_ssh_keys import ed25519_public_key

    headers = tenant.headers

    async def get(url: str) -> Any:
        return (await client.get(url, headers=headers)).json()

    key = (await client.post("/api/ssh-keys", json={"title": "k", "key": ed25519_public_key()}, headers=headers)).json()
    server = await create_running_server(tenant)
    stopped = await create_running_server(tenant, label="stopped one")
    await client.post(f"/api/servers/{stopped['id']}/stop", headers=headers)
    stopped_url = f"/api/servers/{stopped['id']}"
    await eventually(lambda: get(stopped_url), lambda s: s["status"] == "stopped" and not s["task_state"])
    snap = (await client.post(f"{stopped_url}/snapshots", json={"label": "s"}, headers=headers)).json()
    await eventually(lambda: get(f"{stopped_url}/snapshots/{snap['id']}"), lambda s: s["status"] == "available")
    await eventually(lambda: get(stopped_url), lambda s: s["task_state"] is None)

    api_key = (await client.post("/api/v1/api-keys", json={"name": "mine"}, headers=headers)).json()["data"]
    offers = await get("/api/v1/offers/search?available=true")
    for offer in reversed(offers["data"]):  # searches are cached: an offer listed may be rented already
        body = {"provider": "vast_ai", "offer_id": offer["provider_id"], "image": "ubuntu", "label": "gpu"}
        rented = await client.post("/api/v1/instances", json=body, headers=headers)
        if rented.status_code != 409:
            break
    assert rented.status_code == 201, rented.text
    gpu = rented.json()["data"]["id"]
    app = await client.post(
        "/api/v1/apps", json={"name": "private", "environment_variables": {"SECRET": "s"}}, headers=headers
    )
    assert app.status_code == 201, app.text
    await eventually(lambda: get(f"/api/v1/instances/{gpu}"), lambda i: i["data"]["status"] == "running")
    file = {"filename": "log.txt", "data": "bG9nCg=="}
    body = {"subject": "s", "description": "d", "vps_id": f"vps-{server['id']}", "attachments": [file]}
    ticket = (await client.post("/api/v1/support/tickets", json=body, headers=headers)).json()["data"]
    card = saved_card(core, tenant)
    deployment = recorded_deployment(core, tenant, app.json()["id"])
    return {
        "deployment": deployment,
        "server": server["id"],
        "stopped": stopped["id"],
        "key": key["id"],
        "snapshot": snap["id"],
        "api_key": api_key["id"],
        "gpu": gpu,
        "app": app.json()["id"],
        "operation": (await get("/api/v1/operations"))["data"][0]["id"],
        "ticket": ticket["id"],
        "attachment": ticket["messages"][0]["attachments"][0]["id"],
        "invoice": seed_invoice(core, tenant.principal.account_id, server["id"]),
        "card": card,
    }


def recorded_deployment(core: Any, tenant: Tenant, app_id: str) -> str:
    """A deployment of the app, as a finished build leaves one (building needs a git server: its own tests)."""
    import uuid

    from cloudplane.db.tables import Deployment

    deployment_id = str(uuid.uuid4())
    with core.db.write() as s:
        s.add(
            Deployment(
                id=deployment_id,
                account_id=tenant.principal.account_id,
                app_id=app_id,
                source="github",
                source_url="https://github.com/user/repo",
                branch="main",
                status="failed",
                log="$ git fetch\n",
                error="fetching branch main failed",
            )
        )
    return deployment_id


def saved_card(core: Any, tenant: Tenant) -> str:
    """A card saved for the account, as the Stripe driver records one (Stripe itself is off in these tests)."""
    from cloudplane.db.tables import PaymentMethod

    reference = f"pm_tenancy{tenant.principal.account_id}"
    with core.db.write() as s:
        s.add(
            PaymentMethod(
                account_id=tenant.principal.account_id,
                gateway="stripe",
                reference=reference,
                type="card",
                last4="4242",
                is_default=True,
            )
        )
    return reference


async def everything_of(client: httpx.AsyncClient, tenant: Tenant, ids: Ids) -> list[Any]:
    """What the account sees of its holdings, to compare before and after an intrusion."""
    urls = [
        f"/api/servers/{ids['server']}",
        f"/api/servers/{ids['stopped']}",
        f"/api/servers/{ids['stopped']}/snapshots",
        f"/api/servers/{ids['stopped']}/snapshots/{ids['snapshot']}",
        f"/api/v1/vps/vps-{ids['stopped']}/backups",
        f"/api/v1/vps/vps-{ids['stopped']}/backups/schedule",
        f"/api/v1/vps/vps-{ids['stopped']}/network",
        f"/api/ssh-keys/{ids['key']}",
        "/api/servers",
        "/api/v1/vps",
        f"/api/v1/instances/{ids['gpu']}",
        f"/api/v1/apps/{ids['app']}",
        f"/api/v1/deployments/{ids['deployment']}",
        f"/api/v1/deployments/{ids['deployment']}/logs",
        f"/api/v1/support/tickets/{ids['ticket']}",
        f"/api/v1/billing/invoices/inv-{ids['invoice']}",
        "/api/v1/billing/payment-methods",
    ]
    seen = [(await client.get(url, headers=tenant.headers)).json() for url in urls]
    file = f"/api/v1/support/tickets/{ids['ticket']}/attachments/{ids['attachment']}"
    seen.append((await client.get(file, headers=tenant.headers)).content)
    keys = (await client.get("/api/v1/api-keys", headers=tenant.headers)).json()["data"]
    return [*seen, sorted(k["id"] for k in keys)]


async def test_another_accounts_ids_are_404_and_nothing_changes(
    client, make_tenant, create_running_server, core
) -> None:
    owner, intruder = make_tenant(), make_tenant()
    ids = await holdings(client, owner, create_running_server, core)
    before = await everything_of(client, owner, ids)

    for (method, template), make in INTRUSIONS.items():
        verb, url, body = make(ids)
        r = await client.request(verb, url, json=body, headers=intruder.headers)
        assert r.status_code == 404, (method, template, r.status_code, r.text)

    assert await everything_of(client, owner, ids) == before
    assert ids["api_key"] in before[-1]
    for url, field in (
        ("/api/servers", "servers"),
        ("/api/ssh-keys", "ssh_keys"),
        ("/api/v1/vps", "data"),
        ("/api/v1/apps", "items"),
        ("/api/v1/deployments", "items"),
        ("/api/v1/operations", "data"),
        ("/api/v1/support/tickets", "data"),
        ("/api/v1/billing/invoices", "data"),
    ):
        assert (await client.get(url, headers=intruder.headers)).json()[field] == []
    account = (await client.get("/api/account", headers=intruder.headers)).json()
    assert account["email"] == intruder.email


async def test_the_intruders_own_parent_does_not_reach_the_owners_child(
    client, make_tenant, create_running_server, app, core
) -> None:
    """`/api/servers/{mine}/snapshots/{yours}` and its kin on every nested route; ids in bodies likewise."""
    owner, intruder = make_tenant(), make_tenant()
    owner_ids = await holdings(client, owner, create_running_server, core)
    intruder_ids = await holdings(client, intruder, create_running_server, core)
    owner_before = await everything_of(client, owner, owner_ids)
    intruder_before = await everything_of(client, intruder, intruder_ids)

    tried = []
    for method, template in nested_routes(app):
        for url in mixed_urls(template, owner_ids, intruder_ids):
            r = await client.request(method, url, json=NESTED_BODIES.get((method, template)), headers=intruder.headers)
            assert r.status_code == 404, (method, url, r.status_code, r.text)
            tried.append((method, url))
    restore = f"/api/servers/{intruder_ids['stopped']}/snapshots/{owner_ids['snapshot']}/restore"
    assert ("POST", restore) in tried
    for (method, template, field), make in BODY_IDS.items():
        verb, url, body = make(owner_ids, intruder_ids)
        r = await client.request(verb, url, json=body, headers=intruder.headers)
        assert r.status_code == 404, (method, template, field, r.status_code, r.text)

    assert await everything_of(client, owner, owner_ids) == owner_before
    assert await everything_of(client, intruder, intruder_ids) == intruder_before

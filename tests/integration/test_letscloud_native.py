"""The native LetsCloud API (what letscloud-go and letscloud-node speak), driven as the Go client drives it: the key
in `api-token`, JSON bodies with their Content-Type, the literal body `null` without one for calls that carry no
data, and every reply, errors and deletes included, a `{success, message, data}` object of the exact wire types."""

from __future__ import annotations

import warnings
from collections.abc import Awaitable, Callable
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import load_ssh_private_key
from sqlalchemy import select

from cloudplane.api.letscloud_native import routes as native_routes
from cloudplane.db.tables import Event, Operation, Server, SSHKey
from tests.conftest import SERVER_BODY, Tenant, eventually
from tests.integration.test_letscloud_ssh_keys import ed25519_public_key

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import crypt

# The Go client's structs (domains/*.go of letscloud-go v1.2.0), field by field, as the JSON types its decoder
# needs: a string where an int is sent (or the reverse) fails the whole decoding.
GO_LOCATION = {"slug": str, "country": str, "city": str, "available": bool}
GO_PLAN = {
    "currencycode": str,
    "shortcode": str,
    "slug": str,
    "core": int,
    "memory": int,
    "disk": int,
    "bandwidth": int,
    "monthly_value": str,
}
GO_LOCATION_PLANS = {"slug": str, "country": str, "city": str, "plans": [GO_PLAN]}
GO_IMAGE = {"slug": str, "distro": str, "os": str}
GO_PROFILE = {"name": str, "company_name": str, "email": str, "currency": str, "balance": str}
GO_SSH_KEY = {"slug": str, "title": str, "public_key": str, "private_key": str}
GO_INSTANCE = {
    "identifier": str,
    "booted": bool,
    "built": bool,
    "locked": bool,
    "suspended": bool,
    "memory": int,
    "total_disk_size": int,
    "cpus": int,
    "label": str,
    "ip_addresses": [{"address": str}],
    "template_label": str,
    "hostname": str,
    "initial_root_password": str,
    "location": GO_LOCATION,
}
GO_SNAPSHOT = {
    "slug": str,
    "size": int,
    "label": str,
    "os_reference": str,
    "reference": str,
    "build": bool,
    "locations": [str],
}


def decodes_as(value: Any, shape: Any, at: str = "data") -> None:
    """`value` is what Go's encoding/json decodes into `shape` without an error, with every field present: exact JSON
    types (a bool is not an int, an int not a string), lists of the element shape."""
    if isinstance(shape, dict):
        assert isinstance(value, dict), f"{at}: expected an object, got {value!r}"
        for name, field in shape.items():
            assert name in value, f"{at}: no {name!r} in {sorted(value)}"
            decodes_as(value[name], field, f"{at}.{name}")
    elif isinstance(shape, list):
        assert isinstance(value, list), f"{at}: expected a list, got {value!r}"
        for index, item in enumerate(value):
            decodes_as(item, shape[0], f"{at}[{index}]")
    else:
        assert type(value) is shape, f"{at}: expected {shape.__name__}, got {value!r}"


def native(tenant: Tenant) -> dict[str, str]:
    return {"api-token": tenant.api_key}


async def call(client: httpx.AsyncClient, method: str, url: str, headers: dict[str, str], body: Any = None) -> Any:
    """One request as letscloud-go sends it: a JSON body with its Content-Type, or the literal `null` with none."""
    if body is None:
        r = await client.request(method, url, content=b"null", headers=headers)
        assert "content-type" not in r.request.headers
    else:
        r = await client.request(method, url, json=body, headers=headers)
    return r


def envelope(r: httpx.Response, *, success: bool = True, status: int | None = None) -> Any:
    """The reply's `data`, once its envelope is checked: an object with `success` (bool) and `message` (str)."""
    assert r.content, f"{r.request.method} {r.request.url}: an empty body breaks the client"
    body = r.json()
    assert isinstance(body, dict) and {"success", "message", "data"} <= set(body), body
    assert body["success"] is success, (r.status_code, body)
    assert type(body["message"]) is str and body["message"], body
    if status is not None:
        assert r.status_code == status, (r.status_code, body)
    elif success:
        assert r.status_code in (200, 201), (r.status_code, body)
    if not success:
        assert body["data"] is None, body
    return body["data"]


def refused(r: httpx.Response, status: int) -> dict[str, Any]:
    envelope(r, success=False, status=status)
    return r.json()


@pytest.fixture
def instance(client: httpx.AsyncClient) -> Callable[..., Awaitable[dict[str, Any]]]:
    async def get(tenant: Tenant, identifier: str) -> dict[str, Any]:
        return envelope(await call(client, "GET", f"/api/instances/{identifier}", native(tenant)))

    return get


async def settled(client: httpx.AsyncClient, tenant: Tenant, identifier: str, booted: bool) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        return envelope(await call(client, "GET", f"/api/instances/{identifier}", native(tenant)))

    return await eventually(get, lambda i: i["built"] and i["booted"] is booted and not i["locked"])


async def create_instance(client: httpx.AsyncClient, tenant: Tenant, **extra: Any) -> dict[str, Any]:
    body = {
        "location_slug": "nyc1",
        "plan_slug": "basic-1gb",
        "image_slug": "ubuntu-22-04",
        "hostname": "",  # what the Go client sends when none is set
        "label": "My Web Server",
        **extra,
    }
    r = await call(client, "POST", "/api/instances", native(tenant), body)
    created = envelope(r, status=201)
    decodes_as(created, GO_INSTANCE)
    return created


async def test_profile_locations_plans_and_images_in_the_clients_types(client, tenant) -> None:
    headers = native(tenant)
    profile = envelope(await call(client, "GET", "/api/profile", headers))
    decodes_as(profile, GO_PROFILE)
    assert profile["email"] == tenant.email and profile["balance"] == "0.00" and profile["currency"] == "USD"

    locations = envelope(await call(client, "GET", "/api/locations", headers))
    decodes_as(locations, [GO_LOCATION])
    assert {"slug": "nyc1", "country": "United States", "city": "New York", "available": True} in locations

    wrapped = envelope(await call(client, "GET", "/api/locations/nyc1/plans", headers))
    decodes_as(wrapped, [GO_LOCATION_PLANS])
    assert [w["slug"] for w in wrapped] == ["nyc1"]
    basic = next(p for p in wrapped[0]["plans"] if p["slug"] == "basic-1gb")
    assert basic == {
        "slug": "basic-1gb",
        "shortcode": "basic-1gb",
        "currencycode": "USD",
        "core": 1,
        "memory": 1024,
        "disk": 25,
        "bandwidth": 500,
        "monthly_value": "5.00",
    }
    images = envelope(await call(client, "GET", "/api/locations/nyc1/images", headers))
    decodes_as(images, [GO_IMAGE])
    assert {"slug": "ubuntu-22-04", "distro": "Ubuntu 22.04 LTS", "os": "Ubuntu"} in images

    for url in ("/api/locations/atlantis/plans", "/api/locations/atlantis/images"):
        assert "atlantis" in refused(await call(client, "GET", url, headers), 404)["message"]


async def test_a_key_pair_made_by_the_service_hands_its_private_key_over_once(client, tenant, core) -> None:
    headers = native(tenant)
    made = envelope(await call(client, "POST", "/api/sshkeys", headers, {"title": "laptop"}), status=201)
    decodes_as(made, GO_SSH_KEY)
    private = load_ssh_private_key(made["private_key"].encode(), password=None)
    public = private.public_key().public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
    assert made["public_key"].split()[:2] == public.decode().split()[:2]
    assert made["public_key"].startswith("ssh-ed25519 ")

    # Never again, and nowhere kept: the account's rows and its events hold only the public half.
    again = envelope(await call(client, "GET", f"/api/sshkeys/{made['slug']}", headers))
    assert again["private_key"] == "" and again["public_key"] == made["public_key"]
    secret = made["private_key"].splitlines()[1]
    with core.db.read() as s:
        keys = s.scalars(select(SSHKey).where(SSHKey.account_id == tenant.principal.account_id)).all()
        events = s.scalars(select(Event).where(Event.account_id == tenant.principal.account_id)).all()
    assert [k.public_key for k in keys] == [made["public_key"]]
    assert not any(secret in repr(e.data) for e in events)

    # A key of one's own, by slug and by title; a title two keys share names the older.
    own = ed25519_public_key("me@desk")
    added = envelope(await call(client, "POST", "/api/sshkeys", headers, {"title": "desk", "key": own}), status=201)
    assert added["private_key"] == "" and added["public_key"].split()[:2] == own.split()[:2]
    twin = ed25519_public_key("other@desk")
    envelope(await call(client, "POST", "/api/sshkeys", headers, {"title": "desk", "key": twin}), status=201)
    assert envelope(await call(client, "GET", "/api/sshkeys/desk", headers))["slug"] == added["slug"]
    listed = envelope(await call(client, "GET", "/api/sshkeys", headers))
    decodes_as(listed, [GO_SSH_KEY])
    assert [k["title"] for k in listed] == ["laptop", "desk", "desk"]
    assert all(k["private_key"] == "" for k in listed)

    assert refused(await call(client, "POST", "/api/sshkeys", headers, {"title": "dup", "key": own}), 409)
    bad = refused(await call(client, "POST", "/api/sshkeys", headers, {"title": "bad", "key": "ssh-dss AAAA"}), 422)
    assert bad["field"] == "key"

    deleted = await call(client, "DELETE", "/api/sshkeys", headers, {"slug": made["slug"]})
    assert envelope(deleted) is None
    refused(await call(client, "GET", f"/api/sshkeys/{made['slug']}", headers), 404)
    refused(await call(client, "DELETE", "/api/sshkeys", headers, {"slug": made["slug"]}), 404)
    refused(await call(client, "DELETE", "/api/sshkeys", headers, {"slug": "laptop"}), 404)  # a slug, not a title
    refused(await call(client, "DELETE", "/api/sshkeys", headers), 422)  # null: the slug is missing


async def test_an_instance_lives_its_whole_life_through_the_native_routes(client, tenant, core, sim_db) -> None:
    headers = native(tenant)
    key = envelope(await call(client, "POST", "/api/sshkeys", headers, {"title": "deploy"}), status=201)
    created = await create_instance(client, tenant, ssh_slug="deploy", password="s3cret-Passw0rd")
    identifier = created["identifier"]
    assert created["label"] == "My Web Server" and created["hostname"] == "my-web-server"
    assert created["initial_root_password"] == ""  # chosen, so never echoed
    assert created["template_label"] == "Ubuntu 22.04 LTS" and created["location"]["slug"] == "nyc1"
    assert (created["memory"], created["total_disk_size"], created["cpus"]) == (1024, 25, 1)
    assert not created["built"] and not created["booted"]
    gpt = (await client.get(f"/api/servers/{identifier}", headers=tenant.headers)).json()
    assert [k["id"] for k in gpt["ssh_keys"]] == [int(key["slug"])]

    running = await settled(client, tenant, identifier, booted=True)
    assert running["ip_addresses"] and all(type(a["address"]) is str for a in running["ip_addresses"])
    listed = envelope(await call(client, "GET", "/api/instances", headers))
    decodes_as(listed, [GO_INSTANCE])
    assert [i["identifier"] for i in listed] == [identifier]

    generated = await create_instance(client, tenant, label="second")
    assert len(generated["initial_root_password"]) == 20  # generated, shown this once
    again = envelope(await call(client, "GET", f"/api/instances/{generated['identifier']}", headers))
    assert again["initial_root_password"] == ""

    # Power, each answered at once with the envelope, carried out by an operation.
    for action, booted in (("power-off", False), ("power-on", True), ("reboot", True)):
        r = await call(client, "PUT", f"/api/instances/{identifier}/{action}", headers)
        assert envelope(r) is None
        await settled(client, tenant, identifier, booted=booted)
    refused(await call(client, "PUT", f"/api/instances/{identifier}/power-on", headers), 409)  # running already

    # The root password, set inside the running machine.
    r = await call(client, "PUT", f"/api/instances/{identifier}/reset-password", headers, {"password": "N3w-root-pw"})
    assert envelope(r) is None
    await settled(client, tenant, identifier, booted=True)
    with core.db.read() as s:
        server = s.get(Server, int(identifier))
    assert server is not None and server.provider_ref is not None
    machine_hash = core.providers.get("simulator").root_password_hash(server.provider_ref)
    assert machine_hash is not None and crypt.crypt("N3w-root-pw", machine_hash) == machine_hash
    with core.db.read() as s:
        ops = s.scalars(select(Operation).where(Operation.server_id == server.id, Operation.kind == "reset_password"))
        [op] = ops.all()
        types = [e.type for e in s.scalars(select(Event).where(Event.operation_id == op.id).order_by(Event.seq))]
    assert op.status == "succeeded" and op.params is None  # the hash goes with the operation
    assert types == ["vps.password_reset_requested", "vps.password_reset"]

    # Delete: 200 with the envelope, never an empty 204.
    assert envelope(await call(client, "DELETE", f"/api/instances/{identifier}", headers)) is None

    async def gone() -> int:
        return (await call(client, "GET", f"/api/instances/{identifier}", headers)).status_code

    await eventually(gone, lambda code: code == 404)
    refused(await call(client, "GET", f"/api/instances/{identifier}", headers), 404)


async def test_reset_password_refuses_what_it_cannot_do_in_the_envelope(client, tenant, core) -> None:
    headers = native(tenant)
    identifier = (await create_instance(client, tenant))["identifier"]
    await settled(client, tenant, identifier, booted=True)
    url = f"/api/instances/{identifier}/reset-password"
    for password, why in (("short", "8 to 128"), ("x" * 129, "128"), ("line\nbreak-pw", "control")):
        answer = refused(await call(client, "PUT", url, headers, {"password": password}), 422)
        assert why in answer["message"] and answer["field"] == "password", answer
    refused(await call(client, "PUT", url, headers), 422)  # the literal null: no password
    refused(await call(client, "PUT", url, headers, {"password": "long-enough", "root": True}), 422)

    await call(client, "PUT", f"/api/instances/{identifier}/power-off", headers)
    await settled(client, tenant, identifier, booted=False)
    stopped = refused(await call(client, "PUT", url, headers, {"password": "long-enough"}), 409)
    assert "must be running" in stopped["message"], stopped

    short = refused(await create_instance_refused(client, tenant, password="short"), 422)
    assert short["field"] == "password"


async def create_instance_refused(client: httpx.AsyncClient, tenant: Tenant, **extra: Any) -> httpx.Response:
    body = {**{k: v for k, v in SERVER_BODY.items()}, **extra}
    return await call(client, "POST", "/api/instances", native(tenant), body)


async def test_a_create_names_its_key_by_slug_or_title_and_only_the_callers(client, make_tenant) -> None:
    owner, intruder = make_tenant(), make_tenant()
    key = envelope(await call(client, "POST", "/api/sshkeys", native(owner), {"title": "owned"}), status=201)
    for ssh_slug in (key["slug"], "owned", "nobody's"):
        answer = refused(await create_instance_refused(client, intruder, ssh_slug=ssh_slug), 404)
        assert answer["field"] == "ssh_slug", answer
    assert envelope(await call(client, "GET", "/api/instances", native(intruder))) == []
    by_slug = await create_instance(client, owner, ssh_slug=key["slug"])
    assert by_slug["identifier"]
    refused(await create_instance_refused(client, owner, plan_slug="no-such-plan"), 400)


async def test_snapshots_across_servers_listed_renamed_and_deleted(client, tenant, core) -> None:
    headers = native(tenant)
    first = (await create_instance(client, tenant, label="one"))["identifier"]
    second = (await create_instance(client, tenant, label="two"))["identifier"]
    for identifier in (first, second):
        await settled(client, tenant, identifier, booted=True)
    taken = []
    for identifier, label in ((first, "before update"), (second, "nightly")):
        r = await call(client, "POST", f"/api/instances/{identifier}/snapshots", headers, {"label": label})
        snapshot = envelope(r, status=201)
        decodes_as(snapshot, GO_SNAPSHOT)
        assert snapshot["reference"] == identifier and snapshot["locations"] == ["nyc1"]
        assert snapshot["os_reference"] == "ubuntu-22-04" and snapshot["size"] == 0 and not snapshot["build"]
        taken.append(snapshot["slug"])
        await settled(client, tenant, identifier, booted=True)

    async def all_snapshots() -> list[dict[str, Any]]:
        return envelope(await call(client, "GET", "/api/snapshots", headers))

    listed = await eventually(all_snapshots, lambda snaps: all(s["build"] for s in snaps))
    decodes_as(listed, [GO_SNAPSHOT])
    assert [s["slug"] for s in listed] == taken  # oldest first, across the account's servers
    assert all(s["size"] >= 1 for s in listed)

    url = f"/api/snapshots/{taken[0]}"
    assert envelope(await call(client, "PUT", url, headers, {"label": "renamed"})) is None
    assert envelope(await call(client, "GET", url, headers))["label"] == "renamed"
    gpt = (await client.get(f"/api/servers/{first}/snapshots/{taken[0]}", headers=tenant.headers)).json()
    assert gpt["label"] == "renamed"
    with core.db.read() as s:
        renamed = s.scalar(select(Event).where(Event.type == "vps.backup.renamed", Event.target_id == taken[0]))
    assert renamed is not None and renamed.data["previous_label"] == "before update"
    refused(await call(client, "PUT", url, headers, {"label": ""}), 422)
    refused(await call(client, "PUT", url, headers), 422)

    assert envelope(await call(client, "DELETE", url, headers)) is None

    async def gone() -> int:
        return (await call(client, "GET", url, headers)).status_code

    await eventually(gone, lambda code: code == 404)
    assert [s["slug"] for s in await all_snapshots()] == taken[1:]
    refused(await call(client, "DELETE", url, headers), 404)
    refused(await call(client, "GET", "/api/snapshots/snap-1", headers), 404)


async def test_every_error_is_in_the_native_envelope(client, tenant, app) -> None:
    headers = native(tenant)
    assert refused(await call(client, "GET", "/api/instances", {"api-token": "cp_not-a-key"}), 401)
    assert refused(await call(client, "GET", "/api/profile", {"api-token": ""}), 401)
    assert refused(await call(client, "GET", "/api/no-such-route", headers), 404)
    assert refused(await call(client, "GET", "/api/instances/", headers), 404)  # not a bodiless redirect
    # A path only the GPT-Actions face has is no route of this dialect.
    assert refused(await call(client, "GET", "/api/servers", headers), 404)
    assert refused(await call(client, "PATCH", "/api/instances/1", headers), 405)
    assert refused(await call(client, "GET", "/api/instances/٣", headers), 404)
    assert refused(await call(client, "GET", "/api/instances/99999999", headers), 404)
    unknown = refused(await call(client, "POST", "/api/sshkeys", headers, {"title": "k", "owner_id": 1}), 422)
    assert unknown["code"] == "VALIDATION_ERROR"
    big = await client.post("/api/sshkeys", content=b'{"title": "' + b"x" * (2 * 1024 * 1024) + b'"}', headers=headers)
    assert refused(big, 413)

    # An unexpected failure too: a 500 in the envelope, never a traceback.
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    quiet = httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False), base_url="http://t")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(native_routes.accounts, "get_account", broken)
        async with quiet:
            answer = refused(await call(quiet, "GET", "/api/profile", headers), 500)
    assert answer["message"] == "Internal server error" and "boom" not in str(answer)


async def test_the_gpt_actions_face_keeps_its_own_shapes_on_the_same_paths(client, tenant) -> None:
    """`Authorization` (with or without `api-token`) is the GPT-Actions document's dialect."""
    for headers in (tenant.headers, {**tenant.headers, "api-token": tenant.api_key}):
        locations = (await client.get("/api/locations", headers=headers)).json()
        assert "success" not in locations and {"locations", "total"} <= set(locations)
        missing = await client.get("/api/servers/99999999", headers=headers)
        assert missing.status_code == 404 and set(missing.json()) == {"error", "code", "details"}
    # Neither header: the GPT-Actions face answers, in its shape.
    anonymous = await client.get("/api/locations")
    assert anonymous.status_code == 401 and "error" in anonymous.json()


# Every native route and how an intruder calls it with the owner's objects; a new route must be added here.
NATIVE_INTRUSIONS: dict[tuple[str, str], Callable[[dict[str, str]], tuple[str, str, Any]]] = {
    ("GET", "/sshkeys/{slug_or_title}"): lambda ids: ("GET", f"/api/sshkeys/{ids['key']}", None),
    ("DELETE", "/sshkeys"): lambda ids: ("DELETE", "/api/sshkeys", {"slug": ids["key"]}),
    ("GET", "/instances/{identifier}"): lambda ids: ("GET", f"/api/instances/{ids['server']}", None),
    ("DELETE", "/instances/{identifier}"): lambda ids: ("DELETE", f"/api/instances/{ids['server']}", None),
    ("PUT", "/instances/{identifier}/power-on"): lambda ids: ("PUT", f"/api/instances/{ids['stopped']}/power-on", None),
    ("PUT", "/instances/{identifier}/power-off"): lambda ids: (
        "PUT",
        f"/api/instances/{ids['server']}/power-off",
        None,
    ),
    ("PUT", "/instances/{identifier}/reboot"): lambda ids: ("PUT", f"/api/instances/{ids['server']}/reboot", None),
    ("PUT", "/instances/{identifier}/reset-password"): lambda ids: (
        "PUT",
        f"/api/instances/{ids['server']}/reset-password",
        {"password": "taken-over"},
    ),
    ("POST", "/instances/{identifier}/snapshots"): lambda ids: (
        "POST",
        f"/api/instances/{ids['server']}/snapshots",
        {"label": "mine now"},
    ),
    ("GET", "/snapshots/{slug}"): lambda ids: ("GET", f"/api/snapshots/{ids['snapshot']}", None),
    ("PUT", "/snapshots/{slug}"): lambda ids: ("PUT", f"/api/snapshots/{ids['snapshot']}", {"label": "mine now"}),
    ("DELETE", "/snapshots/{slug}"): lambda ids: ("DELETE", f"/api/snapshots/{ids['snapshot']}", None),
    ("POST", "/instances"): lambda ids: ("POST", "/api/instances", {**SERVER_BODY, "ssh_slug": ids["key"]}),
}
# Routes naming nothing of anyone's: the caller's own lists and profile, and the catalog every account shares.
NATIVE_ID_FREE = {
    ("GET", "/profile"),
    ("GET", "/locations"),
    ("GET", "/locations/{slug}/plans"),
    ("GET", "/locations/{slug}/images"),
    ("POST", "/sshkeys"),
    ("GET", "/sshkeys"),
    ("GET", "/instances"),
    ("GET", "/snapshots"),
}


def test_every_native_route_is_walked_for_tenancy() -> None:
    routes = {(m, r.path) for r in native_routes.router.routes for m in getattr(r, "methods", ())}
    assert routes == set(NATIVE_INTRUSIONS) | NATIVE_ID_FREE


async def test_another_accounts_objects_are_404_and_stay_as_they_were(client, make_tenant) -> None:
    owner, intruder = make_tenant(), make_tenant()
    headers = native(owner)
    key = envelope(await call(client, "POST", "/api/sshkeys", headers, {"title": "owner"}), status=201)
    server = (await create_instance(client, owner, label="running"))["identifier"]
    stopped = (await create_instance(client, owner, label="stopped"))["identifier"]
    await settled(client, owner, server, booted=True)
    await settled(client, owner, stopped, booted=True)
    await call(client, "PUT", f"/api/instances/{stopped}/power-off", headers)
    await settled(client, owner, stopped, booted=False)
    r = await call(client, "POST", f"/api/instances/{server}/snapshots", headers, {"label": "s"})
    snapshot = envelope(r, status=201)["slug"]
    await settled(client, owner, server, booted=True)

    async def get_snapshot() -> dict[str, Any]:
        return envelope(await call(client, "GET", f"/api/snapshots/{snapshot}", headers))

    await eventually(get_snapshot, lambda s: s["build"])
    ids = {"key": key["slug"], "server": server, "stopped": stopped, "snapshot": snapshot}

    async def everything() -> list[Any]:
        urls = ["/api/instances", "/api/snapshots", "/api/sshkeys", f"/api/snapshots/{snapshot}"]
        return [envelope(await call(client, "GET", url, headers)) for url in urls]

    before = await everything()
    for (method, template), make in NATIVE_INTRUSIONS.items():
        verb, url, body = make(ids)
        answer = await call(client, verb, url, native(intruder), body)
        assert answer.status_code == 404, (method, template, answer.text)
        envelope(answer, success=False)
    assert await everything() == before
    for url in ("/api/instances", "/api/snapshots", "/api/sshkeys"):
        assert envelope(await call(client, "GET", url, native(intruder))) == []


async def test_a_create_retried_with_its_idempotency_key_makes_one_instance(client, tenant) -> None:
    headers = {**native(tenant), "Idempotency-Key": "native-create-1"}
    first = await call(client, "POST", "/api/instances", headers, {**SERVER_BODY, "label": "once"})
    again = await call(client, "POST", "/api/instances", headers, {**SERVER_BODY, "label": "once"})
    assert envelope(again, status=201) == envelope(first, status=201)
    assert again.headers["idempotent-replayed"] == "true"
    assert len(envelope(await call(client, "GET", "/api/instances", native(tenant)))) == 1
    other = await call(client, "POST", "/api/instances", headers, {**SERVER_BODY, "label": "another"})
    assert refused(other, 422)["field"] == "Idempotency-Key"

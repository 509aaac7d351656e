"""Input the stores cannot hold and ids with non-ASCII digits, tried on every face: a 4xx in the face's envelope
naming the field, never a 500, never stored, never another object."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from cloudplane.api.common.ids import parse_id
from tests.conftest import SERVER_BODY, Tenant

# PostgreSQL's text cannot hold NUL; no UTF-8 store (nor crypt, nor argon2's C code) can hold a lone surrogate.
BAD_TEXT = {"nul": "a\u0000b", "surrogate": "a\ud800b", "low_surrogate": "\udfffx"}

APP_BODY = {"name": "bad-input-app", "framework": "fastapi"}
GPU_BODY = {"provider": "vast_ai", "offer_id": "12345", "image": "pytorch/pytorch:latest", "label": "GPU"}
VPS_BODY = {"name": "My Server", "plan_id": "plan-professional"}


def raw_json(body: Any) -> bytes:
    # json.dumps escapes a lone surrogate as \\ud800, as any client would send it; httpx's `json=` cannot encode it.
    return json.dumps(body).encode()


def named_field(reply: dict[str, Any]) -> str | None:
    """`details.field` in any face's envelope (LetsCloud, CloudVPS, VibeCaaS, GPU Cloud Manager)."""
    error = reply.get("error")
    details = error.get("details") if isinstance(error, dict) else reply.get("details")
    return (details or {}).get("field")


# (face, method, path, body, the field holding the bad text, how to list what the tenant has)
CASES = [
    ("letscloud", "POST", "/api/servers", {**SERVER_BODY, "password": "{bad}-password"}, "password", "/api/servers"),
    ("letscloud", "POST", "/api/servers", {**SERVER_BODY, "label": "{bad}"}, "label", "/api/servers"),
    ("letscloud", "POST", "/api/ssh-keys", {"title": "{bad}", "key": "ssh-ed25519 AAAA"}, "title", "/api/ssh-keys"),
    ("cloudvps", "POST", "/api/v1/vps", {**VPS_BODY, "name": "{bad}"}, "name", "/api/v1/vps"),
    ("cloudvps", "POST", "/api/v1/vps", {**VPS_BODY, "ssh_keys": ["ok", "{bad}"]}, "ssh_keys.1", "/api/v1/vps"),
    ("accounts", "POST", "/api/v1/api-keys", {"name": "{bad}"}, "name", "/api/v1/api-keys"),
    ("accounts", "PUT", "/api/v1/users/profile", {"name": "{bad}"}, "name", None),
    ("vibecaas", "POST", "/api/v1/apps", {**APP_BODY, "description": "{bad}"}, "description", "/api/v1/apps"),
    (
        "vibecaas",
        "POST",
        "/api/v1/apps",
        {**APP_BODY, "environment_variables": {"{bad}": "v"}},
        "environment_variables",
        "/api/v1/apps",
    ),
    ("gpumgr", "POST", "/api/v1/instances", {**GPU_BODY, "label": "{bad}"}, "label", "/api/v1/instances"),
]


def _fill(value: Any, bad: str) -> Any:
    if isinstance(value, str):
        return value.replace("{bad}", bad)
    if isinstance(value, list):
        return [_fill(v, bad) for v in value]
    if isinstance(value, dict):
        return {_fill(k, bad): _fill(v, bad) for k, v in value.items()}
    return value


def _count(reply: httpx.Response) -> int:
    body = reply.json()
    if isinstance(body, list):
        return len(body)
    for name in ("total",):
        if isinstance(body.get(name), int):
            return body[name]
    data = body.get("data", body.get("instances", body.get("apps", body.get("items"))))
    return len(data) if isinstance(data, list) else -1


@pytest.mark.parametrize("bad", list(BAD_TEXT))
@pytest.mark.parametrize(("face", "method", "path", "body", "field", "listing"), CASES)
async def test_unstorable_text_is_422_naming_the_field_and_stores_nothing(
    client: httpx.AsyncClient,
    tenant: Tenant,
    face: str,
    method: str,
    path: str,
    body: Any,
    field: str,
    listing: Any,
    bad: str,
) -> None:
    before = _count(await client.get(listing, headers=tenant.headers)) if listing else None
    r = await client.request(
        method,
        path,
        content=raw_json(_fill(body, BAD_TEXT[bad])),
        headers={**tenant.headers, "Content-Type": "application/json"},
    )
    assert r.status_code == 422, (face, r.text)
    assert named_field(r.json()) == field, r.text
    if face != "gpumgr":  # the GPU Cloud Manager's envelope has no error codes
        assert "VALIDATION_ERROR" in r.text
    if listing:
        assert _count(await client.get(listing, headers=tenant.headers)) == before


@pytest.mark.parametrize("bad", list(BAD_TEXT))
async def test_unstorable_text_in_sign_up_and_sign_in_is_422(client: httpx.AsyncClient, bad: str) -> None:
    text = BAD_TEXT[bad]
    sign_up = {"email": "someone@example.com", "password": f"long {text} password"}
    r = await client.post(
        "/api/v1/auth/register", content=raw_json(sign_up), headers={"Content-Type": "application/json"}
    )
    assert r.status_code == 422 and named_field(r.json()) == "password", r.text
    sign_in = {"username": f"john{text}", "password": "whatever"}
    r = await client.post("/api/v1/auth/login", content=raw_json(sign_in), headers={"Content-Type": "application/json"})
    assert r.status_code == 422 and named_field(r.json()) == "username", r.text


async def test_a_nul_in_the_oauth_form_is_422_naming_the_field(client: httpx.AsyncClient) -> None:
    r = await client.post("/api/v1/auth/token", data={"username": "john\x00doe", "password": "correct horse"})
    assert r.status_code == 422 and named_field(r.json()) == "username", r.text
    r = await client.post("/api/v1/auth/token", data={"username": "john", "password": "pass\x00word"})
    assert r.status_code == 422 and named_field(r.json()) == "password", r.text


# Digits Python's int() and str.isdigit() accept but an id is not made of.
ARABIC = str.maketrans("0123456789", "٠١٢٣٤٥٦٧٨٩")
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def other_digits(number: int) -> list[str]:
    text = str(number)
    # "0_7" and "+7" are 7 to pydantic's int parsing, "٧" and "７" to Python's int().
    return [text.translate(ARABIC), text.translate(FULL_WIDTH), "²", text + "²", f"0_{text}", f"+{text}"]


@pytest.mark.parametrize("text", ["1", "42", "007", str(2**63 - 1)])
def test_parse_id_takes_ascii_digits(text: str) -> None:
    assert parse_id(text) == int(text)


@pytest.mark.parametrize(
    "text", ["", "0", "-1", "+1", " 1", "1 ", "1_0", "1.0", "٣", "²", "１", str(2**63), "9" * 5000]
)
def test_parse_id_refuses_everything_else(text: str) -> None:
    assert parse_id(text) is None


async def _server_id(client: httpx.AsyncClient, tenant: Tenant) -> int:
    r = await client.post("/api/servers", json=SERVER_BODY, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return r.json()["id"]


async def test_letscloud_ids_with_other_digits_are_422_not_another_server(client, tenant) -> None:
    server_id = await _server_id(client, tenant)
    for text in other_digits(server_id):
        for method, path in [("GET", f"/api/servers/{text}"), ("POST", f"/api/servers/{text}/reboot")]:
            r = await client.request(method, path, headers=tenant.headers)
            assert r.status_code == 422, (path, r.text)
            assert r.json()["code"] == "VALIDATION_ERROR"
    assert (await client.get(f"/api/servers/{server_id}", headers=tenant.headers)).status_code == 200


async def test_cloudvps_ids_with_other_digits_are_404_not_another_vps(client, tenant) -> None:
    server_id = await _server_id(client, tenant)
    for text in other_digits(server_id):
        for method, path in [("GET", f"/api/v1/vps/vps-{text}"), ("POST", f"/api/v1/vps/{text}/restart")]:
            r = await client.request(method, path, headers=tenant.headers)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["error"]["code"] == "NOT_FOUND"
    assert (await client.get(f"/api/v1/vps/vps-{server_id}", headers=tenant.headers)).status_code == 200


async def test_gpu_instance_ids_with_other_digits_are_404_not_another_instance(client, tenant) -> None:
    server_id = await _server_id(client, tenant)
    for text in other_digits(server_id):
        for method, path in [("GET", f"/api/v1/instances/vast_{text}"), ("POST", f"/api/v1/instances/{text}/start")]:
            r = await client.request(method, path, headers=tenant.headers)
            assert r.status_code == 404, (path, r.text)
            assert r.json()["success"] is False
    r = await client.post("/api/v1/instances/%C2%B2/start", headers=tenant.headers)
    assert r.status_code == 404, r.text


async def test_api_key_ids_with_other_digits_are_refused_and_the_key_stays(client, tenant) -> None:
    made = await client.post("/api/v1/api-keys", json={"name": "kept"}, headers=tenant.headers)
    assert made.status_code == 201, made.text
    key_id = made.json()["data"]["id"]
    for text in other_digits(key_id):
        r = await client.delete(f"/api/v1/api-keys/{text}", headers=tenant.headers)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["code"] == "VALIDATION_ERROR"
    keys = (await client.get("/api/v1/api-keys", headers=tenant.headers)).json()["data"]
    assert key_id in [k["id"] for k in keys]


async def test_admin_user_ids_with_other_digits_are_404_and_change_nobody(client, make_tenant) -> None:
    admin, victim = make_tenant("admin"), make_tenant()
    for text in other_digits(victim.principal.user_id):
        for path in [f"/api/v1/admin/users/user-{text}/suspend", f"/api/v1/admin/users/{text}/suspend"]:
            r = await client.post(path, headers=admin.headers)
            assert r.status_code == 404, (path, r.text)
        r = await client.put(f"/api/v1/admin/users/user-{text}/tier", json={"tier": "pro"}, headers=admin.headers)
        assert r.status_code == 404, r.text
    assert (await client.get("/api/v1/users/me", headers=victim.headers)).status_code == 200, "not suspended"


async def test_app_ids_with_other_digits_are_404_not_another_app(client, tenant) -> None:
    made = await client.post("/api/v1/apps", json=APP_BODY, headers=tenant.headers)
    assert made.status_code == 201, made.text
    app_id = made.json()["id"]
    lookalike = app_id.translate(ARABIC)
    assert lookalike != app_id
    r = await client.get(f"/api/v1/apps/{lookalike}", headers=tenant.headers)
    assert r.status_code == 404, r.text

"""VibeCaaS applications (/api/v1/apps): the document's shapes, names unique per account, the tier's quotas,
and every bad input a 422 naming its field."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from typing import Any

import httpx
import pytest
import schemathesis
from sqlalchemy import func, select, update

from cloudplane.db.tables import Account, App
from cloudplane.domain.tiers import QUOTAS
from cloudplane.services import apps
from tests.conftest import Tenant
from tests.integration.test_fuzz import EXAMPLES, FIXTURES_PER_TEST, V1_DOCUMENT, V1_URL, fuzz_config, in_process
from tests.integration.test_idempotency import one_execution

APPS = "/api/v1/apps"
# The document's "Create Application" body.
DOCUMENT_BODY = {
    "name": "my-app",
    "description": "My awesome application",
    "framework": "fastapi",
    "github_repo": "https://github.com/user/repo",
    "branch": "main",
    "environment_variables": {"DEBUG": "false", "DATABASE_URL": "postgresql://..."},
    "port": 8000,
    "cpu_limit": 1000,
    "memory_limit": 2048,
    "storage_limit": 5120,
    "gpu_enabled": False,
    "health_check_path": "/health",
}
LIST_ITEM_FIELDS = {"id", "name", "description", "framework", "status", "url", "created_at", "resources"}


def set_tier(core: Any, tenant: Tenant, tier: str) -> None:
    with core.db.write() as s:
        s.execute(update(Account).where(Account.id == tenant.principal.account_id).values(tier=tier))


@pytest.fixture
def pro(core: Any, make_tenant: Any) -> Tenant:
    tenant = make_tenant()
    set_tier(core, tenant, "pro")
    return tenant


async def create(client: httpx.AsyncClient, tenant: Tenant, **body: Any) -> dict[str, Any]:
    r = await client.post(APPS, json=body, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return r.json()


def app_count(core: Any, tenant: Tenant) -> int:
    with core.db.read() as s:
        return s.scalar(select(func.count()).select_from(App).where(App.account_id == tenant.principal.account_id))


async def test_create_with_the_documents_body(client, pro) -> None:
    r = await client.post(APPS, json=DOCUMENT_BODY, headers=pro.headers)
    assert r.status_code == 201, r.text
    app = r.json()
    assert str(uuid.UUID(app["id"])) == app["id"]
    assert LIST_ITEM_FIELDS <= set(app)
    assert app["status"] == "stopped" and app["replicas"] == 1
    assert app["resources"] == {"cpu": 1000, "memory": 2048, "storage": 5120, "gpu": False}
    assert app["url"] == f"https://my-app-account-{pro.principal.account_id}.apps.localhost"
    assert app["created_at"].endswith("Z")
    for field, value in DOCUMENT_BODY.items():
        assert app[field] == value, field
    assert (await client.get(f"{APPS}/{app['id']}", headers=pro.headers)).json() == app


async def test_the_url_carries_the_username(client, tenant) -> None:
    r = await client.put(
        "/api/v1/users/me", json={"username": f"John.Doe_{uuid.uuid4().hex[:8]}"}, headers=tenant.headers
    )
    assert r.status_code == 200, r.text
    username = r.json()["username"]
    app = await create(client, tenant, name="web")
    assert app["url"] == f"https://web-{username.lower().replace('.', '-').replace('_', '-')}.apps.localhost"


async def test_defaults_fit_the_free_tier(client, tenant) -> None:
    app = await create(client, tenant, name="minimal")
    assert app["resources"] == {"cpu": 250, "memory": 512, "storage": 1024, "gpu": False}
    assert app["description"] is None and app["framework"] is None and app["github_repo"] is None
    assert app["branch"] == "main" and app["port"] == 8000 and app["environment_variables"] == {}


async def test_list_filter_and_paginate(client, tenant) -> None:
    empty = await client.get(APPS, headers=tenant.headers)
    assert empty.json() == {"items": [], "total": 0, "page": 1, "pages": 0, "limit": 20}
    made = [await create(client, tenant, name=f"app-{i}") for i in range(3)]
    listed = (await client.get(APPS, headers=tenant.headers)).json()
    assert listed["total"] == 3 and listed["page"] == 1 and listed["pages"] == 1
    assert [a["id"] for a in listed["items"]] == [a["id"] for a in reversed(made)]
    assert listed["items"][0] == made[-1]
    second = (await client.get(APPS, params={"page": 2, "limit": 2}, headers=tenant.headers)).json()
    assert second["pages"] == 2 and [a["id"] for a in second["items"]] == [made[0]["id"]]
    stopped = (await client.get(APPS, params={"status": "stopped"}, headers=tenant.headers)).json()
    assert stopped["total"] == 3
    running = (await client.get(APPS, params={"status": "running"}, headers=tenant.headers)).json()
    assert running == {"items": [], "total": 0, "page": 1, "pages": 0, "limit": 20}
    for params in ({"status": "deleted"}, {"limit": 101}, {"page": 0}):
        r = await client.get(APPS, params=params, headers=tenant.headers)
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == next(iter(params)), r.text


async def test_update_merges_variables_and_changes_limits(client, pro) -> None:
    app = await create(client, pro, **DOCUMENT_BODY)
    r = await client.put(
        f"{APPS}/{app['id']}",
        json={
            "description": "Updated description",
            "environment_variables": {"NEW_VAR": "value", "DEBUG": None},
            "cpu_limit": 2000,
            "memory_limit": 4096,
        },
        headers=pro.headers,
    )
    assert r.status_code == 200, r.text
    updated = r.json()
    assert updated["description"] == "Updated description"
    assert updated["environment_variables"] == {"DATABASE_URL": "postgresql://...", "NEW_VAR": "value"}
    assert updated["resources"] == {"cpu": 2000, "memory": 4096, "storage": 5120, "gpu": False}
    assert updated["name"] == "my-app" and updated["framework"] == "fastapi"
    assert updated["updated_at"] > app["updated_at"] and updated["created_at"] == app["created_at"]
    cleared = await client.put(f"{APPS}/{app['id']}", json={"description": None}, headers=pro.headers)
    assert cleared.status_code == 200 and cleared.json()["description"] is None
    assert (await client.get(f"{APPS}/{app['id']}", headers=pro.headers)).json() == cleared.json()


async def test_delete(client, core, tenant) -> None:
    app = await create(client, tenant, name="doomed")
    r = await client.delete(f"{APPS}/{app['id']}", headers=tenant.headers)
    assert r.status_code == 204 and r.content == b""
    gone = await client.get(f"{APPS}/{app['id']}", headers=tenant.headers)
    assert gone.status_code == 404
    assert gone.json() == {
        "error": {"code": "RESOURCE_NOT_FOUND", "message": "Application not found", "details": {"app_id": app["id"]}}
    }
    assert (await client.delete(f"{APPS}/{app['id']}", headers=tenant.headers)).status_code == 404
    assert app_count(core, tenant) == 0
    # The name is free again.
    await create(client, tenant, name="doomed")


async def test_ids_that_are_not_uuids_are_404(client, tenant) -> None:
    for bad in ("app-uuid", "invalid-uuid", "1", "x" * 300, "%00"):
        r = await client.get(f"{APPS}/{bad}", headers=tenant.headers)
        assert r.status_code == 404 and r.json()["error"]["code"] == "RESOURCE_NOT_FOUND", (bad, r.text)


async def test_an_id_in_another_spelling_names_the_same_app(client, tenant) -> None:
    app = await create(client, tenant, name="spelled")
    r = await client.get(f"{APPS}/{app['id'].upper()}", headers=tenant.headers)
    assert r.status_code == 200 and r.json()["id"] == app["id"]


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"name": "My App"}, "name"),
        ({"name": "-app"}, "name"),
        ({"name": "app-"}, "name"),
        ({"name": "1app"}, "name"),
        ({"name": "a" * 31}, "name"),
        ({"name": ""}, "name"),
        ({}, "name"),
        ({"name": "ok", "port": 0}, "port"),
        ({"name": "ok", "port": 70000}, "port"),
        ({"name": "ok", "cpu_limit": 10}, "cpu_limit"),
        ({"name": "ok", "cpu_limit": "1000m"}, "cpu_limit"),
        ({"name": "ok", "memory_limit": 10**9}, "memory_limit"),
        ({"name": "ok", "storage_limit": -1}, "storage_limit"),
        ({"name": "ok", "environment_variables": {"1BAD": "x"}}, "environment_variables.1BAD.[key]"),
        ({"name": "ok", "environment_variables": {"BAD-NAME": "x"}}, "environment_variables.BAD-NAME.[key]"),
        ({"name": "ok", "environment_variables": {"N": 1}}, "environment_variables.N"),
        ({"name": "ok", "environment_variables": {"N": "a\x00b"}}, "environment_variables.N"),
        ({"name": "ok", "environment_variables": {"N": "x" * 32769}}, "environment_variables.N"),
        ({"name": "ok", "environment_variables": {f"V{i}": "x" for i in range(101)}}, "environment_variables"),
        ({"name": "ok", "environment_variables": ["A=1"]}, "environment_variables"),
        ({"name": "ok", "github_repo": "http://github.com/user/repo"}, "github_repo"),
        ({"name": "ok", "github_repo": "https://user:token@github.com/user/repo"}, "github_repo"),
        ({"name": "ok", "github_repo": "https://10.0.0.1/user/repo"}, "github_repo"),
        ({"name": "ok", "github_repo": "git@github.com:user/repo.git"}, "github_repo"),
        ({"name": "ok", "branch": "../x"}, "branch"),
        ({"name": "ok", "branch": None}, "branch"),
        ({"name": "ok", "health_check_path": "health"}, "health_check_path"),
        ({"name": "ok", "description": "x" * 1001}, "description"),
        ({"name": "ok", "description": "nul\x00"}, "description"),
        ({"name": "ok", "framework": "fast api"}, "framework"),
        ({"name": "ok", "gpu_enabled": "maybe"}, "gpu_enabled"),
    ],
)
async def test_bad_input_is_422_naming_the_field(client, core, tenant, body, field) -> None:
    r = await client.post(APPS, json=body, headers=tenant.headers)
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "VALIDATION_ERROR" and error["details"]["field"] == field, error
    assert app_count(core, tenant) == 0


@pytest.mark.parametrize("field", ["status", "replicas", "account_id", "owner_id", "id", "url", "is_admin"])
async def test_unknown_or_read_only_fields_are_refused(client, core, tenant, field) -> None:
    r = await client.post(APPS, json={"name": "sneaky", field: "running"}, headers=tenant.headers)
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == field, r.text
    assert app_count(core, tenant) == 0
    app = await create(client, tenant, name="honest")
    r = await client.put(f"{APPS}/{app['id']}", json={field: "running"}, headers=tenant.headers)
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == field, r.text
    assert (await client.get(f"{APPS}/{app['id']}", headers=tenant.headers)).json() == app


async def test_the_name_cannot_change(client, tenant) -> None:
    app = await create(client, tenant, name="fixed")
    r = await client.put(f"{APPS}/{app['id']}", json={"name": "moved"}, headers=tenant.headers)
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "name"


async def test_bad_updates_are_422_and_change_nothing(client, tenant) -> None:
    app = await create(client, tenant, name="steady", environment_variables={"A": "1"})
    for body, field in (
        ({"cpu_limit": None}, "cpu_limit"),
        ({"environment_variables": None}, "environment_variables"),
        ({"environment_variables": {"9": "x"}}, "environment_variables.9.[key]"),
        ({"port": 65536}, "port"),
    ):
        r = await client.put(f"{APPS}/{app['id']}", json=body, headers=tenant.headers)
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == field, r.text
    # 100 variables at most, counted after the merge.
    many = {f"V{i}": "x" for i in range(100)}
    r = await client.put(f"{APPS}/{app['id']}", json={"environment_variables": many}, headers=tenant.headers)
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "environment_variables", r.text
    assert (await client.get(f"{APPS}/{app['id']}", headers=tenant.headers)).json() == app


async def test_a_duplicate_name_is_409(client, core, make_tenant) -> None:
    alice, bob = make_tenant(), make_tenant()
    await create(client, alice, name="shared-name")
    r = await client.post(APPS, json={"name": "shared-name"}, headers=alice.headers)
    assert r.status_code == 409, r.text
    assert r.json()["error"]["code"] == "CONFLICT" and r.json()["error"]["details"]["field"] == "name"
    assert app_count(core, alice) == 1
    # Names are per account.
    await create(client, bob, name="shared-name")


async def test_concurrent_creates_of_one_name_make_one_app(client, core, tenant) -> None:
    replies = await asyncio.gather(
        *(client.post(APPS, json={"name": "racy"}, headers=tenant.headers) for _ in range(8))
    )
    assert Counter(r.status_code for r in replies) == {201: 1, 409: 7}, [r.text for r in replies]
    assert app_count(core, tenant) == 1


@pytest.mark.parametrize("tier", ["free", "hobby", "pro", "team"])
async def test_resource_quotas_per_tier(client, core, make_tenant, tier) -> None:
    tenant = make_tenant()
    set_tier(core, tenant, tier)
    quotas = QUOTAS[tier]
    at_limit = {
        "cpu_limit": quotas.max_cpu,
        "memory_limit": quotas.max_memory,
        "storage_limit": quotas.max_storage,
        "gpu_enabled": quotas.gpu_enabled,
    }
    app = await create(client, tenant, name="biggest", **at_limit)
    for field, quota, limit in (
        ("cpu_limit", "max_cpu", quotas.max_cpu),
        ("memory_limit", "max_memory", quotas.max_memory),
        ("storage_limit", "max_storage", quotas.max_storage),
    ):
        r = await client.post(APPS, json={"name": "too-big", field: limit + 1}, headers=tenant.headers)
        assert r.status_code == 403, r.text
        error = r.json()["error"]
        assert error["code"] == "QUOTA_EXCEEDED" and field in error["message"] and str(limit) in error["message"]
        assert error["details"] == {"field": field, "quota": quota, "limit": limit, "tier": tier}
        r = await client.put(f"{APPS}/{app['id']}", json={field: limit + 1}, headers=tenant.headers)
        assert r.status_code == 403 and r.json()["error"]["details"]["field"] == field, r.text
    gpu = await client.post(APPS, json={"name": "gpu", "gpu_enabled": True}, headers=tenant.headers)
    if quotas.gpu_enabled:
        assert gpu.status_code == 201, gpu.text
    else:
        assert gpu.status_code == 403 and gpu.json()["error"]["details"]["field"] == "gpu_enabled", gpu.text
        r = await client.put(f"{APPS}/{app['id']}", json={"gpu_enabled": True}, headers=tenant.headers)
        assert r.status_code == 403 and r.json()["error"]["details"]["field"] == "gpu_enabled", r.text
    assert (await client.get(f"{APPS}/{app['id']}", headers=tenant.headers)).json() == app


@pytest.mark.parametrize("tier", ["free", "hobby"])
async def test_max_apps_per_tier(client, core, make_tenant, tier) -> None:
    tenant = make_tenant()
    set_tier(core, tenant, tier)
    limit = QUOTAS[tier].max_apps
    made = [await create(client, tenant, name=f"app-{i}") for i in range(limit)]
    r = await client.post(APPS, json={"name": "one-more"}, headers=tenant.headers)
    assert r.status_code == 403, r.text
    assert r.json()["error"]["details"] == {"field": "max_apps", "quota": "max_apps", "limit": limit, "tier": tier}
    assert app_count(core, tenant) == limit
    # Deleting one makes room; a higher tier makes more.
    assert (await client.delete(f"{APPS}/{made[0]['id']}", headers=tenant.headers)).status_code == 204
    await create(client, tenant, name="one-more")
    set_tier(core, tenant, "team")
    await create(client, tenant, name="two-more")


async def test_concurrent_creates_stop_at_max_apps(client, core, make_tenant) -> None:
    tenant = make_tenant()
    replies = await asyncio.gather(
        *(client.post(APPS, json={"name": f"burst-{i}"}, headers=tenant.headers) for i in range(10))
    )
    assert Counter(r.status_code for r in replies) == {201: QUOTAS["free"].max_apps, 403: 10 - QUOTAS["free"].max_apps}
    assert app_count(core, tenant) == QUOTAS["free"].max_apps


async def test_another_accounts_app_is_404_and_unchanged(client, make_tenant) -> None:
    owner, intruder = make_tenant(), make_tenant()
    app = await create(client, owner, name="private", environment_variables={"SECRET": "s3cr3t"})
    url = f"{APPS}/{app['id']}"
    for method, body in (("GET", None), ("PUT", {"description": "mine now"}), ("DELETE", None)):
        r = await client.request(method, url, json=body, headers=intruder.headers)
        assert r.status_code == 404 and "s3cr3t" not in r.text, (method, r.text)
    assert (await client.get(APPS, headers=intruder.headers)).json()["items"] == []
    assert (await client.get(url, headers=owner.headers)).json() == app


async def test_fifty_concurrent_identical_posts_with_one_key_make_one_app(client, core, tenant) -> None:
    headers = {**tenant.headers, "Idempotency-Key": "apps-burst-50"}
    replies = await asyncio.gather(
        *(
            client.post(
                APPS,
                json=DOCUMENT_BODY | {"cpu_limit": 500, "memory_limit": 1024, "storage_limit": 2048},
                headers=headers,
            )
            for _ in range(50)
        )
    )
    _, in_flight = one_execution(replies)
    assert all(r.json()["error"]["code"] == "CONFLICT" for r in in_flight)
    assert app_count(core, tenant) == 1


async def test_requests_need_credentials(client) -> None:
    for method, url in (("GET", APPS), ("POST", APPS), ("GET", f"{APPS}/{uuid.uuid4()}")):
        r = await client.request(method, url, json={"name": "anon"})
        assert r.status_code == 401, (method, url, r.text)


# Generated ids name no app, so the id routes are fuzzed again on a real app of the caller's.
apps_by_id = schemathesis.openapi.from_dict(
    V1_DOCUMENT, config=fuzz_config(V1_URL, mode="positive", max_examples=max(5, EXAMPLES // 5))
).exclude(lambda ctx: ctx.operation.path != "/api/v1/apps/{app_id}")


@apps_by_id.parametrize()
@FIXTURES_PER_TEST
def test_fuzz_the_id_routes_with_a_real_app(case: Any, app: Any, core: Any, make_tenant: Any) -> None:
    in_process(case.operation, app)
    tenant = make_tenant()
    made = apps.create_app(core, tenant.principal, name="fuzzed", environment_variables={"KEPT": "1"})
    case.path_parameters = {"app_id": made.app.id}
    case.call_and_validate(headers=tenant.headers)

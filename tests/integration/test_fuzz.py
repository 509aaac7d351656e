"""Schemathesis against every face's OpenAPI document, in process and authenticated: no 5xx, no schema violations.
CLOUDPLANE_FUZZ_EXAMPLES=500 runs the long fuzz; the default, 25 generated examples per operation, is for CI."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

import pytest
import schemathesis
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

from cloudplane.api.letscloud.openapi_doc import build_openapi
from cloudplane.app import create_app, v1_document
from cloudplane.services import operations
from tests.conftest import SERVER_BODY, Tenant

EXAMPLES = int(os.environ.get("CLOUDPLANE_FUZZ_EXAMPLES", "25"))
# conftest's `public_base_url`: the documents are built exactly as the served ones (test_documents_are_the_served_ones).
BASE_URL = "https://cloud.test"
LETSCLOUD_URL = "http://testserver/api"
V1_URL = "http://testserver"


def fuzz_config(base_url: str, *, mode: str = "all", max_examples: int = EXAMPLES) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            # The documents name the public URL; calls go to the app in process, under the same base path.
            "base-url": base_url,
            "generation": {
                "max-examples": max_examples,
                "mode": mode,
                # Reproducible in CI and locally; no example database left behind.
                "deterministic": True,
                "database": "none",
                # Every call carries a real API key; generated Authorization values would only ever see 401.
                "with-security-parameters": False,
                # No store holds NUL (PostgreSQL's text cannot), so text with it is a 422 on every face, which the
                # documents' plain `type: string` cannot state; test_bad_input.py covers it on every face.
                "allow-x00": False,
            },
            "checks": {"enabled": True},
            "operations": [
                {
                    # Whether a key is real (base64 of a parseable key of an allowed type and size) is beyond JSON
                    # Schema, so schema-valid random text is rightly a 422; the bad-key 422s have their own tests.
                    "include-operation-id": "createSSHKey",
                    "checks": {"positive_data_acceptance": {"enabled": False}},
                },
                *(
                    {
                        # Whether an attached file is of an allowed type is found from its decoded bytes, beyond
                        # JSON Schema: schema-valid random base64 is rightly a 422 (test_cloudvps_support.py).
                        "include-operation-id": operation_id,
                        "checks": {"positive_data_acceptance": {"enabled": False}},
                    }
                    for operation_id in (
                        "create_ticket_api_v1_support_tickets_post",
                        "add_message_api_v1_support_tickets__ticket_id__messages_post",
                    )
                ),
                {
                    # A plan, image or location slug that names nothing in the catalog is a 400 by the LetsCloud
                    # document (its BadRequest example is "Plan not found"), as an unknown id is a 404; the
                    # catalog is editable, so the document cannot list the slugs as an enum.
                    "include-operation-id": "createServer",
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ["2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx"]
                        }
                    },
                },
                {
                    # A paid tier without a card is a 402 (payments are off in these tests), as the document says.
                    "include-operation-id": "update_subscription_api_v1_billing_subscription_put",
                    "checks": {
                        "positive_data_acceptance": {
                            "expected-statuses": ["2xx", "3xx", "401", "402", "403", "404", "409", "429", "5xx"]
                        }
                    },
                },
            ],
        }
    )


# Collection needs the documents before any fixture exists, and pytest 9 breaks schemathesis' fixture-based loader
# (`schemathesis.pytest.from_fixture` reads the removed `Node._nodeid`); so they are built here by the functions
# the app serves them with, and a test checks they equal what the in-process app serves.
LETSCLOUD_DOCUMENT = build_openapi(BASE_URL)
V1_DOCUMENT = v1_document(create_app(), BASE_URL)

letscloud = schemathesis.openapi.from_dict(LETSCLOUD_DOCUMENT, config=fuzz_config(LETSCLOUD_URL))
v1 = schemathesis.openapi.from_dict(V1_DOCUMENT, config=fuzz_config(V1_URL))
# Generated ids almost never name a real object, so 200 replies of id routes are fuzzed again with real ids.
letscloud_by_id = schemathesis.openapi.from_dict(
    LETSCLOUD_DOCUMENT, config=fuzz_config(LETSCLOUD_URL, mode="positive", max_examples=max(5, EXAMPLES // 5))
).exclude(lambda ctx: "{" not in ctx.operation.path)

# Fixtures hold no per-example state here: tenants are made per call, and `owned` objects are meant to change.
FIXTURES_PER_TEST = settings(suppress_health_check=[HealthCheck.function_scoped_fixture])


def in_process(operation: Any, app: Any) -> Any:
    # Operations are made at collection, before the app exists. Set here rather than passed per call, so checks
    # that send requests of their own reach the app too (`ignored_auth` sends through the schema's transport).
    operation.app = operation.schema.app = app
    return operation


async def test_documents_are_the_served_ones(client) -> None:
    assert (await client.get("/api/openapi.json")).json() == LETSCLOUD_DOCUMENT
    assert (await client.get("/api/v1/openapi.json")).json() == V1_DOCUMENT


@letscloud.parametrize()
@FIXTURES_PER_TEST
def test_letscloud(case: Any, app: Any, make_tenant: Callable[[], Tenant]) -> None:
    # A fresh tenant per call keeps examples independent, so Hypothesis can replay and shrink them.
    in_process(case.operation, app)
    case.call_and_validate(headers=make_tenant().headers)


@v1.parametrize()
@FIXTURES_PER_TEST
def test_v1(case: Any, app: Any, make_tenant: Callable[[], Tenant]) -> None:
    # The same holds for logout and change-password: each ends only its own throwaway tenant's session. Admin
    # routes run as a plain user (403): as an admin, random ids could suspend the bootstrap admin other tests use.
    in_process(case.operation, app)
    case.call_and_validate(headers=make_tenant().headers)


@pytest.fixture
def owned(app: Any, make_tenant: Callable[[], Tenant]) -> dict[str, Any]:
    """A tenant with a running server, an SSH key and an available snapshot of that server."""
    tenant = make_tenant()

    def call(method: str, path: str, **kwargs: Any) -> Any:
        operation = in_process(letscloud[path][method], app)
        response = operation.Case(**kwargs).call(headers=tenant.headers)
        assert response.status_code < 300, (method, path, response.status_code, response.text)
        return response.json() if response.content else None

    def wait(method: str, path: str, path_parameters: dict[str, int], done: Callable[[Any], bool]) -> None:
        deadline = time.monotonic() + 30
        while not done(value := call(method, path, path_parameters=path_parameters)):
            assert time.monotonic() < deadline, value
            time.sleep(0.02)

    server = call("POST", "/servers", body=SERVER_BODY)
    ids = {"server_id": server["id"]}
    wait("GET", "/servers/{server_id}", ids, lambda s: s["status"] == "running" and s["task_state"] is None)
    key = call("POST", "/ssh-keys", body={"title": "fuzz", "key": ed25519_public_key()})
    snapshot = call("POST", "/servers/{server_id}/snapshots", path_parameters=ids, body={"label": "fuzz"})
    ids |= {"key_id": key["id"], "snapshot_id": snapshot["id"]}
    wait("GET", "/servers/{server_id}/snapshots/{snapshot_id}", ids, lambda s: s["status"] == "available")
    (newest, *_) = operations.list_operations(app.state.core.db, tenant.principal, page=1, per_page=1).items
    return {"headers": tenant.headers, "ids": {**ids, "operation_id": newest.id}}


@letscloud_by_id.parametrize()
@FIXTURES_PER_TEST
def test_letscloud_with_real_ids(case: Any, app: Any, owned: dict[str, Any]) -> None:
    # Objects change state (stopped, deleted) as examples run; every state they reach must answer as documented.
    in_process(case.operation, app)
    case.path_parameters = {name: owned["ids"][name] for name in case.path_parameters}
    case.call_and_validate(headers=owned["headers"])


def ed25519_public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode()

"""The LetsCloud OpenAPI document served at /api is valid, complete and importable by GPT Actions."""

import json
from pathlib import Path
from typing import get_args

import pytest
import yaml
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV30SpecValidator

from cloudplane.api.letscloud import openapi_doc
from cloudplane.api.letscloud.openapi_doc import build_openapi, load_upstream_document

BASE_URL = "https://cloud.example.com"
SHARED_UPSTREAM_SPEC = Path("/work/shared/specs/letscloud-gpt-actions.openapi.yaml")
BUNDLED_SPEC = Path(openapi_doc.__file__).with_name("letscloud.openapi.yaml")
HTTP_METHODS = {"get", "put", "post", "delete", "options", "head", "patch", "trace"}

EXPECTED_OPERATION_IDS = {
    "listServers",
    "createServer",
    "getServer",
    "deleteServer",
    "startServer",
    "shutdownServer",
    "rebootServer",
    "listSSHKeys",
    "createSSHKey",
    "getSSHKey",
    "deleteSSHKey",
    "listSnapshots",
    "createSnapshot",
    "getSnapshot",
    "deleteSnapshot",
    "restoreSnapshot",
    "listPlans",
    "listImages",
    "listLocations",
    "getAccountInfo",
}
LIST_OPERATION_IDS = (
    "listServers",
    "listSSHKeys",
    "listSnapshots",
    "listPlans",
    "listImages",
    "listLocations",
)


def operations_of(document):
    return [
        (path, method, operation)
        for path, path_item in document["paths"].items()
        for method, operation in path_item.items()
        if method in HTTP_METHODS
    ]


def operation_by_id(document, operation_id):
    (operation,) = [op for _, _, op in operations_of(document) if op["operationId"] == operation_id]
    return operation


def string_descriptions(node):
    # A schema property can be *named* "description"; only text values are descriptions.
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "description" and isinstance(value, str):
                yield value
            else:
                yield from string_descriptions(value)
    elif isinstance(node, list):
        for item in node:
            yield from string_descriptions(item)


def resolve(document, node):
    if "$ref" not in node:
        return node
    target = document
    for part in node["$ref"].removeprefix("#/").split("/"):
        target = target[part]
    return target


@pytest.fixture(scope="module")
def document():
    return build_openapi(BASE_URL)


def test_is_a_valid_openapi_30_document(document):
    assert document["openapi"].startswith("3.0.")
    validate(document, cls=OpenAPIV30SpecValidator)


def test_survives_a_json_round_trip_unchanged(document):
    assert json.loads(json.dumps(document)) == document


@pytest.mark.skipif(not SHARED_UPSTREAM_SPEC.exists(), reason="shared upstream spec not available")
def test_bundled_spec_is_the_upstream_spec_verbatim():
    assert BUNDLED_SPEC.read_bytes() == SHARED_UPSTREAM_SPEC.read_bytes()


def test_has_all_twenty_operations_with_unique_ids_and_the_extras(document):
    operation_ids = [op["operationId"] for _, _, op in operations_of(document)]
    assert len(operation_ids) == 22
    assert len(set(operation_ids)) == len(operation_ids)
    assert set(operation_ids) == EXPECTED_OPERATION_IDS | {"getOperation", "getRecommendations"}


def test_get_operation_lets_a_gpt_wait(document):
    operation = document["paths"]["/operations/{operation_id}"]["get"]
    assert operation["operationId"] == "getOperation"
    assert operation["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Operation"
    }
    assert set(document["components"]["schemas"]["Operation"]["properties"]) == {
        "id",
        "kind",
        "status",
        "progress",
        "target",
        "error",
        "created_at",
        "started_at",
        "finished_at",
    }


def test_keeps_upstream_paths_methods_and_operation_ids(document):
    upstream = yaml.safe_load(BUNDLED_SPEC.read_text(encoding="utf-8"))
    # The upstream 20 as they are, and getOperation and getRecommendations after them.
    assert list(document["paths"]) == [*upstream["paths"], "/operations/{operation_id}", "/account/recommendations"]
    as_served = {(path, method, op["operationId"]) for path, method, op in operations_of(document)}
    as_upstream = {(path, method, op["operationId"]) for path, method, op in operations_of(upstream)}
    assert as_served == as_upstream | {
        ("/operations/{operation_id}", "get", "getOperation"),
        ("/account/recommendations", "get", "getRecommendations"),
    }


def test_get_recommendations_states_the_window_the_route_takes(document):
    from cloudplane.services import recommendations

    operation = document["paths"]["/account/recommendations"]["get"]
    (days,) = operation["parameters"]
    assert days["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": recommendations.MAX_DAYS,
        "default": recommendations.DEFAULT_DAYS,
    }
    kinds = document["components"]["schemas"]["Recommendation"]["properties"]["kind"]["enum"]
    assert kinds == list(get_args(recommendations.Kind))


def test_keeps_upstream_schemas_and_status_codes(document):
    upstream = yaml.safe_load(BUNDLED_SPEC.read_text(encoding="utf-8"))
    served_schemas = document["components"]["schemas"]
    assert set(served_schemas) == set(upstream["components"]["schemas"]) | {
        "Operation",
        "Recommendation",
        "RecommendationList",
    }
    for name, schema in upstream["components"]["schemas"].items():
        served = served_schemas[name]
        # Only additions: every upstream property keeps its exact definition (some become nullable: they are null
        # until known, such as a new server's addresses).
        kept = {k: {a: v for a, v in served["properties"][k].items() if a != "nullable"} for k in schema["properties"]}
        assert kept == schema["properties"], name
    assert set(served_schemas["Server"]["properties"]) - set(
        upstream["components"]["schemas"]["Server"]["properties"]
    ) == {
        "task_state",
        "root_password",
    }
    for path, method, upstream_operation in operations_of(upstream):
        served_operation = document["paths"][path][method]
        assert set(upstream_operation["responses"]) <= set(served_operation["responses"])


def test_single_server_is_this_service(document):
    assert document["servers"] == [{"url": "https://cloud.example.com/api", "description": "This Cloudplane service"}]


def test_trailing_slash_in_base_url_is_ignored():
    assert build_openapi(BASE_URL + "/")["servers"][0]["url"] == "https://cloud.example.com/api"


def test_title_and_version(document):
    assert document["info"]["title"] == "LetsCloud API (Cloudplane)"
    assert document["info"]["version"] == "1.2.0"


def test_every_description_fits_gpt_actions_limit(document):
    descriptions = list(string_descriptions(document))
    assert descriptions
    assert all(len(description) <= 300 for description in descriptions), [d for d in descriptions if len(d) > 300]


def test_security_is_bearer_under_the_upstream_scheme_name(document):
    assert document["components"]["securitySchemes"] == {
        "ApiKeyAuth": {
            "type": "http",
            "scheme": "bearer",
            "description": "Your Cloudplane API key, sent as `Authorization: Bearer <key>`.",
        }
    }
    assert document["security"] == [{"ApiKeyAuth": []}]


@pytest.mark.parametrize("operation_id", LIST_OPERATION_IDS)
def test_list_operations_are_paginated(document, operation_id):
    operation = operation_by_id(document, operation_id)
    query_parameters = {p["name"]: p for p in operation["parameters"] if p["in"] == "query"}
    assert query_parameters["page"]["schema"] == {"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1}
    assert query_parameters["per_page"]["schema"] == {
        "type": "integer",
        "minimum": 1,
        "maximum": 100,
        "default": 20,
    }
    assert not query_parameters["page"]["required"]
    assert not query_parameters["per_page"]["required"]
    assert query_parameters["page"]["description"]
    assert query_parameters["per_page"]["description"]

    list_properties = operation["responses"]["200"]["content"]["application/json"]["schema"]["properties"]
    assert list_properties["page"]["type"] == "integer"
    assert list_properties["per_page"]["type"] == "integer"


def test_list_snapshots_keeps_its_path_parameter(document):
    parameter_names = [p["name"] for p in operation_by_id(document, "listSnapshots")["parameters"]]
    assert parameter_names == ["server_id", "page", "per_page"]


def test_every_operation_documents_401(document):
    for _, _, operation in operations_of(document):
        assert "401" in operation["responses"], operation["operationId"]


@pytest.mark.parametrize(
    ("operation_id", "description"),
    [
        ("startServer", "Server is already running"),
        ("shutdownServer", "Server is already stopped"),
        ("rebootServer", "Server is not running"),
        ("restoreSnapshot", "Server is currently running"),
        ("deleteServer", "Conflict with the resource's current state"),
        ("createSnapshot", "Conflict with the resource's current state"),
        ("deleteSnapshot", "Conflict with the resource's current state"),
        ("createSSHKey", "An SSH key with this fingerprint already exists"),
    ],
)
def test_conflicts_return_the_error_schema(document, operation_id, description):
    conflict = resolve(document, operation_by_id(document, operation_id)["responses"]["409"])
    assert conflict["description"] == description
    assert conflict["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/Error"}


def test_server_status_enum_is_unchanged(document):
    assert document["components"]["schemas"]["Server"]["properties"]["status"]["enum"] == [
        "running",
        "stopped",
        "starting",
        "stopping",
        "rebooting",
        "error",
    ]


def test_does_not_mutate_the_cached_upstream_document():
    upstream_before = json.dumps(load_upstream_document(), sort_keys=True)

    first = build_openapi("https://one.example.com")
    second = build_openapi("https://two.example.com/")
    first["paths"]["/servers"]["get"]["summary"] = "changed by a caller"

    assert first["servers"][0]["url"] == "https://one.example.com/api"
    assert second["servers"][0]["url"] == "https://two.example.com/api"
    assert second["paths"]["/servers"]["get"]["summary"] == "List all servers"
    assert len(second["paths"]["/servers"]["get"]["parameters"]) == 2
    assert json.dumps(load_upstream_document(), sort_keys=True) == upstream_before
    assert load_upstream_document()["servers"][0]["url"] == "https://core.letscloud.io/api"
    assert build_openapi(BASE_URL)["info"]["description"] == first["info"]["description"]

"""OpenAPI document served at /api/openapi.{json,yaml}: the bundled upstream LetsCloud spec,
adapted so GPT Actions can import it as is."""

import copy
import functools
from collections.abc import Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

UPSTREAM_SPEC_FILENAME = "letscloud.openapi.yaml"
GPT_ACTIONS_MAX_DESCRIPTION_LENGTH = 300

PAGINATED_LIST_OPERATIONS = (
    "listServers",
    "listSSHKeys",
    "listSnapshots",
    "listPlans",
    "listImages",
    "listLocations",
)
# Operations that can conflict with the resource's current state but have no 409 upstream.
STATE_CONFLICT_OPERATIONS = ("deleteServer", "createSnapshot", "deleteSnapshot")
DUPLICATE_SSH_KEY_DESCRIPTION = "An SSH key with this fingerprint already exists"

HTTP_METHODS = frozenset({"get", "put", "post", "delete", "options", "head", "patch", "trace"})

ERROR_SCHEMA_REF = "#/components/schemas/Error"
UNAUTHORIZED_RESPONSE_REF = "#/components/responses/Unauthorized"
CONFLICT_RESPONSE_NAME = "Conflict"

SERVICE_TITLE = "LetsCloud API (Cloudplane)"
SERVICE_DESCRIPTION = (
    "LetsCloud infrastructure served by Cloudplane: manage servers, SSH keys and snapshots, "
    "read account details, and discover the available plans, images and locations. "
    "Authenticate with your Cloudplane API key as a bearer token."
)
SECURITY_SCHEME_NAME = "ApiKeyAuth"
SECURITY_SCHEME = {
    "type": "http",
    "scheme": "bearer",
    "description": "Your Cloudplane API key, sent as `Authorization: Bearer <key>`.",
}


def _read_upstream_spec_text() -> str:
    try:
        spec_file = resources.files("cloudplane.api.letscloud").joinpath(UPSTREAM_SPEC_FILENAME)
        return spec_file.read_text(encoding="utf-8")
    except ModuleNotFoundError:
        # The module was loaded by file path without `cloudplane` on sys.path; the spec sits beside it.
        return Path(__file__).with_name(UPSTREAM_SPEC_FILENAME).read_text(encoding="utf-8")


@functools.cache
def load_upstream_document() -> dict[str, Any]:
    """The upstream spec exactly as bundled. Shared between callers: never mutate it."""
    return yaml.safe_load(_read_upstream_spec_text())


def build_openapi(public_base_url: str) -> dict[str, Any]:
    """Return a fresh GPT Actions-ready document whose single server is `<public_base_url>/api`."""
    document = copy.deepcopy(load_upstream_document())

    document["info"]["title"] = SERVICE_TITLE
    document["info"]["description"] = SERVICE_DESCRIPTION
    document["servers"] = [{"url": public_base_url.rstrip("/") + "/api", "description": "This Cloudplane service"}]
    # Same scheme name, so the existing `security` requirements keep pointing at it; GPT Actions
    # handles http bearer auth better than an apiKey header that expects a "Bearer " prefix.
    document["components"]["securitySchemes"] = {SECURITY_SCHEME_NAME: copy.deepcopy(SECURITY_SCHEME)}
    document["components"]["responses"][CONFLICT_RESPONSE_NAME] = _conflict_response(
        "Conflict with the resource's current state"
    )

    operations = _operations_by_id(document)
    for operation_id in PAGINATED_LIST_OPERATIONS:
        _add_pagination(operations[operation_id])
    for operation in operations.values():
        responses = operation["responses"]
        responses.setdefault("401", {"$ref": UNAUTHORIZED_RESPONSE_REF})
        conflict = responses.get("409")
        # Upstream documents some 409s with a description only; give them the usual Error body.
        if conflict is not None and "$ref" not in conflict and "content" not in conflict:
            responses["409"] = _conflict_response(conflict["description"])
    for operation_id in STATE_CONFLICT_OPERATIONS:
        operations[operation_id]["responses"].setdefault(
            "409", {"$ref": f"#/components/responses/{CONFLICT_RESPONSE_NAME}"}
        )
    operations["createSSHKey"]["responses"].setdefault("409", _conflict_response(DUPLICATE_SSH_KEY_DESCRIPTION))
    # Naming an SSH key id the caller does not own is a 404, like any other object of another account.
    operations["createServer"]["responses"].setdefault("404", {"$ref": "#/components/responses/NotFound"})
    # Malformed ids and query parameters are rejected by validation on every operation.
    for operation in operations.values():
        operation["responses"].setdefault("422", {"$ref": "#/components/responses/ValidationError"})
    server_properties = document["components"]["schemas"]["Server"]["properties"]
    server_properties["task_state"] = {
        "type": "string",
        "nullable": True,
        "description": "What the server is busy with (creating, starting, stopping, rebooting, rebuilding, "
        "snapshotting, restoring, deleting), or null",
    }
    server_properties["root_password"] = {
        "type": "string",
        "nullable": True,
        "description": "The generated root password; only in the createServer reply, only when none was given",
    }

    _state_served_limits(document, operations)
    _add_operations(document)
    _add_recommendations(document)
    _check_description_lengths(document)
    return document


# Beyond the upstream 20: every long action is an Operation a GPT can poll until it ends.
GET_OPERATION = "getOperation"
OPERATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["id", "kind", "status", "progress", "target", "error", "created_at", "started_at", "finished_at"],
    "properties": {
        "id": {"type": "string", "format": "uuid", "description": "The operation's id"},
        "kind": {
            "type": "string",
            "description": "create, start, stop, reboot, delete, snapshot, delete_snapshot, restore or rent",
        },
        "status": {"type": "string", "enum": ["pending", "running", "succeeded", "failed"]},
        "progress": {"type": "integer", "minimum": 0, "maximum": 100, "description": "Percent done"},
        "target": {
            "type": "object",
            "required": ["type", "id"],
            "properties": {
                "type": {"type": "string", "description": "server or snapshot"},
                "id": {"type": "integer", "description": "The server's or snapshot's id"},
            },
        },
        "error": {
            "type": "object",
            "nullable": True,
            "required": ["code", "message"],
            "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            "description": "Why it failed; null unless status is failed",
        },
        "created_at": {"type": "string", "format": "date-time"},
        "started_at": {"type": "string", "format": "date-time", "nullable": True},
        "finished_at": {"type": "string", "format": "date-time", "nullable": True},
    },
}


def _add_operations(document: dict[str, Any]) -> None:
    document["components"]["schemas"]["Operation"] = copy.deepcopy(OPERATION_SCHEMA)
    document["paths"]["/operations/{operation_id}"] = {
        "get": {
            "operationId": GET_OPERATION,
            "summary": "Get an operation",
            "description": "The progress of a long action (create, start, stop, reboot, delete, snapshots). "
            "Poll it until status is succeeded or failed; actions name it in their Operation-Location header.",
            "parameters": [
                {
                    "name": "operation_id",
                    "in": "path",
                    "required": True,
                    "schema": {"type": "string", "minLength": 36, "maxLength": 36, "pattern": "^[0-9a-f-]{36}$"},
                }
            ],
            "responses": {
                "200": {
                    "description": "The operation",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Operation"}}},
                },
                "401": {"$ref": UNAUTHORIZED_RESPONSE_REF},
                "404": {"$ref": "#/components/responses/NotFound"},
                "422": {"$ref": "#/components/responses/ValidationError"},
            },
        }
    }


# Beyond the upstream 20 too: the assistant's "optimize costs", with the figures each suggestion was read from.
GET_RECOMMENDATIONS = "getRecommendations"
RECOMMENDATION_KINDS = ["idle_server", "oversized_plan", "stopped_server_disk", "old_snapshot", "idle_gpu_instance"]
MONEY_TEXT = {"type": "string", "pattern": r"^-?[0-9]+\.[0-9]{2}$", "description": "An amount to the cent, e.g. 12.00"}
RECOMMENDATION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "kind", "resource_type", "resource_id", "label", "evidence", "action", "monthly_saving", "currency",
        "confidence", "why",
    ],
    "properties": {
        "kind": {"type": "string", "enum": RECOMMENDATION_KINDS},
        "resource_type": {"type": "string", "enum": ["server", "gpu_instance", "snapshot"]},
        "resource_id": {"type": "integer", "description": "The server's or snapshot's id"},
        "label": {"type": "string"},
        "evidence": {
            "type": "object",
            "additionalProperties": True,
            "description": "The figures read: CPU p95 and max %, peak memory MB, hours of samples, days stopped, "
            "snapshot age and size...",
        },
        "action": {
            "type": "object",
            "required": ["description", "request", "body"],
            "properties": {
                "description": {"type": "string", "description": "What to do, in words"},
                "request": {
                    "type": "string",
                    "nullable": True,
                    "description": "The API call that does it, e.g. POST /api/servers/12/stop",
                },
                "body": {"type": "object", "nullable": True, "additionalProperties": True},
            },
        },
        "monthly_saving": MONEY_TEXT,
        "currency": {"type": "string"},
        "confidence": {"type": "string", "enum": ["high", "medium", "low"]},
        "why": {"type": "string", "description": "Why, with the thresholds crossed"},
    },
}  # fmt: skip
RECOMMENDATION_LIST_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["days", "start", "end", "currency", "total_monthly_saving", "recommendations", "notes"],
    "properties": {
        "days": {"type": "integer", "description": "The window read, in days"},
        "start": {"type": "string", "format": "date-time"},
        "end": {"type": "string", "format": "date-time"},
        "currency": {"type": "string"},
        "total_monthly_saving": MONEY_TEXT,
        "recommendations": {
            "type": "array",
            "items": {"$ref": "#/components/schemas/Recommendation"},
            "description": "Most saving first",
        },
        "notes": {
            "type": "array",
            "items": {"type": "string"},
            "description": "What could not be judged and why (too little history...)",
        },
    },
}


def _add_recommendations(document: dict[str, Any]) -> None:
    schemas = document["components"]["schemas"]
    schemas["Recommendation"] = copy.deepcopy(RECOMMENDATION_SCHEMA)
    schemas["RecommendationList"] = copy.deepcopy(RECOMMENDATION_LIST_SCHEMA)
    document["paths"]["/account/recommendations"] = {
        "get": {
            "operationId": GET_RECOMMENDATIONS,
            "summary": "Get cost recommendations",
            "description": "Ways to spend less: idle servers, oversized plans, servers stopped for long, old "
            "snapshots, idle GPU instances; each with the figures read, the action and the monthly saving.",
            "parameters": [
                {
                    "name": "days",
                    "in": "query",
                    "required": False,
                    "description": "How many days of history to read, from 1 to 90.",
                    "schema": {"type": "integer", "minimum": 1, "maximum": 90, "default": 14},
                }
            ],
            "responses": {
                "200": {
                    "description": "The recommendations",
                    "content": {"application/json": {"schema": {"$ref": "#/components/schemas/RecommendationList"}}},
                },
                "401": {"$ref": UNAUTHORIZED_RESPONSE_REF},
                "422": {"$ref": "#/components/responses/ValidationError"},
            },
        }
    }


def _state_served_limits(document: dict[str, Any], operations: dict[str, dict[str, Any]]) -> None:
    """Say in the document what the service enforces, so clients (and fuzzers) learn the rules from it."""
    schemas = document["components"]["schemas"]
    # Unset until known: a server's addresses while it is created, a snapshot's size while it is taken.
    for schema, names in NULLABLE_PROPERTIES.items():
        for name in names:
            schemas[schema]["properties"][name]["nullable"] = True
    for operation in operations.values():
        for parameter in operation.get("parameters", []):
            if parameter["in"] == "path":
                parameter["schema"].update(format="int64", minimum=1, maximum=MAX_ID)
        if "requestBody" in operation:
            # A body that is not JSON at all is a 400; one that breaks the schema, a 422.
            operation["responses"].setdefault("400", {"$ref": "#/components/responses/BadRequest"})
    for operation_id, limits in BODY_LIMITS.items():
        body = operations[operation_id]["requestBody"]["content"]["application/json"]["schema"]
        body["additionalProperties"] = False
        for name, constraints in limits.items():
            body["properties"][name].update(constraints)


def _operations_by_id(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        operation["operationId"]: operation
        for path_item in document["paths"].values()
        for method, operation in path_item.items()
        if method in HTTP_METHODS
    }


def _conflict_response(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/json": {
                "schema": {"$ref": ERROR_SCHEMA_REF},
                "example": {"error": description, "code": "CONFLICT"},
            }
        },
    }


MAX_ID = 2**63 - 1
# RFC 1123 labels of 1-63 letters, digits and inner hyphens (services/servers.py checks the same).
HOSTNAME_PATTERN = r"^[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?(\.[a-zA-Z0-9]([a-zA-Z0-9-]{0,61}[a-zA-Z0-9])?)*\.?$"
MAX_PAGE = 1_000_000
# Labels and titles are stripped; one made only of whitespace is empty.
NOT_BLANK = r"\S"
NULLABLE_PROPERTIES = {
    "Server": ("ip_address", "private_ip"),
    "Snapshot": ("description", "size"),
    "Account": ("company",),
}
# The limits of the request models in schemas.py (kept here as data: this module is also loaded on its own).
BODY_LIMITS: dict[str, dict[str, dict[str, Any]]] = {
    "createServer": {
        "label": {"minLength": 1, "maxLength": 255, "pattern": NOT_BLANK},
        "plan_slug": {"minLength": 1, "maxLength": 64},
        "image_slug": {"minLength": 1, "maxLength": 64},
        "location_slug": {"minLength": 1, "maxLength": 64},
        "hostname": {"maxLength": 253, "nullable": True, "pattern": HOSTNAME_PATTERN},
        "password": {"minLength": 8, "maxLength": 128, "nullable": True},
        "ssh_keys": {"maxItems": 50, "items": {"type": "integer", "format": "int64", "minimum": 1, "maximum": MAX_ID}},
    },
    "createSSHKey": {
        "title": {"minLength": 1, "maxLength": 200, "pattern": NOT_BLANK},
        "key": {"minLength": 1, "maxLength": 16384},
    },
    "createSnapshot": {
        "label": {"minLength": 1, "maxLength": 255, "pattern": NOT_BLANK},
        "description": {"maxLength": 2000, "nullable": True},
    },
}


def _pagination_parameters() -> list[dict[str, Any]]:
    return [
        {
            "name": "page",
            "in": "query",
            "required": False,
            "description": "Page number to return, starting at 1.",
            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE, "default": 1},
        },
        {
            "name": "per_page",
            "in": "query",
            "required": False,
            "description": "Number of items per page, from 1 to 100.",
            "schema": {"type": "integer", "minimum": 1, "maximum": 100, "default": 20},
        },
    ]


def _add_pagination(operation: dict[str, Any]) -> None:
    operation.setdefault("parameters", []).extend(_pagination_parameters())
    list_schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    # setdefault keeps the descriptions listServers already has upstream.
    list_schema["properties"].setdefault("page", {"type": "integer", "description": "Current page number"})
    list_schema["properties"].setdefault("per_page", {"type": "integer", "description": "Number of items per page"})


def _check_description_lengths(document: dict[str, Any]) -> None:
    # GPT Actions refuses the whole import when any description exceeds the limit.
    too_long = [
        location
        for location, description in _string_descriptions(document)
        if len(description) > GPT_ACTIONS_MAX_DESCRIPTION_LENGTH
    ]
    if too_long:
        raise ValueError(f"descriptions longer than {GPT_ACTIONS_MAX_DESCRIPTION_LENGTH} characters: {too_long}")


def _string_descriptions(node: Any, location: str = "#") -> Iterator[tuple[str, str]]:
    # Schema properties may be *named* "description" (e.g. Snapshot); their values are dicts, not text.
    if isinstance(node, dict):
        for key, value in node.items():
            child_location = f"{location}/{str(key).replace('~', '~0').replace('/', '~1')}"
            if key == "description" and isinstance(value, str):
                yield child_location, value
            else:
                yield from _string_descriptions(value, child_location)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            yield from _string_descriptions(item, f"{location}/{index}")

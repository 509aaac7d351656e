"""The served LetsCloud document: valid, importable by GPT Actions, and in agreement with the routes."""

from __future__ import annotations

import yaml
from fastapi import routing
from openapi_spec_validator import validate


async def test_document_is_valid_and_points_at_the_public_url(client) -> None:
    r = await client.get("/api/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    validate(doc)
    assert doc["servers"] == [{"url": "https://cloud.test/api", "description": "This Cloudplane service"}]
    assert doc["components"]["securitySchemes"]["ApiKeyAuth"]["scheme"] == "bearer"
    as_yaml = await client.get("/api/openapi.yaml")
    assert as_yaml.status_code == 200 and yaml.safe_load(as_yaml.text) == doc


async def test_every_documented_operation_is_served_and_nothing_else(client, app) -> None:
    doc = (await client.get("/api/openapi.json")).json()
    documented = {
        (method.upper(), "/api" + path, op["operationId"])
        for path, item in doc["paths"].items()
        for method, op in item.items()
    }
    served = {
        (method, ctx.path, ctx.original_route.operation_id)
        for ctx in routing.iter_route_contexts(app.routes)
        if ctx.path.startswith("/api/") and getattr(ctx.original_route, "operation_id", None)
        for method in ctx.methods
    }
    assert len(documented) == 22  # the upstream 20, getOperation and getRecommendations
    assert served == documented


async def test_documented_status_codes_cover_what_routes_answer(client, app) -> None:
    doc = (await client.get("/api/openapi.json")).json()
    for ctx in routing.iter_route_contexts(app.routes):
        route = ctx.original_route
        if not getattr(route, "operation_id", None):
            continue
        documented = doc["paths"][ctx.path.removeprefix("/api")][next(iter(ctx.methods)).lower()]["responses"]
        assert str(route.status_code or 200) in documented, (route.operation_id, route.status_code)


async def test_interactive_docs_page(client) -> None:
    r = await client.get("/api/docs")
    assert r.status_code == 200 and "/api/openapi.json" in r.text

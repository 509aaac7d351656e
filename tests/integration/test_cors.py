"""CORS: browser apps on the origins CLOUDPLANE_CORS_ORIGINS names may call the API (preflights answered, the
rate-limit and request-id headers readable); other origins, and every origin by default, get no CORS headers.
A page on another origin in a real browser: tests/e2e/test_cors_browser.py."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator

import httpx
import pytest
from pydantic import ValidationError

from cloudplane.app import create_app
from cloudplane.config import Settings
from cloudplane.core import Core
from tests.conftest import Tenant

PANEL = "https://panel.example.com"


@pytest.fixture
async def cors_client(core: Core) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(dataclasses.replace(core, settings=core.settings.model_copy(update={"cors_origins": PANEL})))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        yield c


def _preflight(origin: str, method: str = "POST") -> dict[str, str]:
    return {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "authorization, content-type, idempotency-key",
    }


async def test_a_preflight_from_a_named_origin_is_answered(cors_client: httpx.AsyncClient) -> None:
    for path in ("/api/v1/vps", "/api/servers", "/api/v1/apps"):
        r = await cors_client.options(path, headers=_preflight(PANEL))
        assert r.status_code == 200, (path, r.status_code, r.text)
        assert r.headers["access-control-allow-origin"] == PANEL
        assert "POST" in r.headers["access-control-allow-methods"]
        allowed = r.headers["access-control-allow-headers"].lower()
        assert {"authorization", "content-type", "idempotency-key"} <= {h.strip() for h in allowed.split(",")}
        # Bearer credentials travel in a header the page sets; no cookie is ever one, so none is invited.
        assert "access-control-allow-credentials" not in r.headers


async def test_a_call_from_a_named_origin_can_read_the_rate_limit_and_request_id(
    cors_client: httpx.AsyncClient, tenant: Tenant
) -> None:
    r = await cors_client.get("/api/v1/vps", headers={**tenant.headers, "Origin": PANEL})
    assert r.status_code == 200
    assert r.headers["access-control-allow-origin"] == PANEL
    exposed = {h.strip().lower() for h in r.headers["access-control-expose-headers"].split(",")}
    assert {"x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-reset", "x-request-id"} <= exposed
    # A refusal carries them too, so the page can show its words.
    r = await cors_client.get("/api/v1/vps", headers={"Origin": PANEL})
    assert r.status_code == 401 and r.headers["access-control-allow-origin"] == PANEL


async def test_another_origin_gets_no_cors_headers(cors_client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await cors_client.options("/api/v1/vps", headers=_preflight("https://evil.example"))
    assert r.status_code == 400 and "access-control-allow-origin" not in r.headers
    r = await cors_client.get("/api/v1/vps", headers={**tenant.headers, "Origin": "https://evil.example"})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers


async def test_no_origin_is_allowed_by_default(client: httpx.AsyncClient, tenant: Tenant) -> None:
    r = await client.get("/api/v1/vps", headers={**tenant.headers, "Origin": PANEL})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = await client.options("/api/v1/vps", headers=_preflight(PANEL))
    assert "access-control-allow-origin" not in r.headers


@pytest.mark.parametrize(
    "entry", ["panel.example.com", "https://panel.example.com/", "https://x.example/app", "ftp://x"]
)
def test_an_origin_that_no_browser_sends_is_refused_at_start(entry: str) -> None:
    with pytest.raises(ValidationError, match="CLOUDPLANE_CORS_ORIGINS"):
        Settings(cors_origins=f"https://ok.example, {entry}")


def test_origins_are_read_from_a_comma_separated_list() -> None:
    settings = Settings(cors_origins=" https://a.example ,http://localhost:5173,https://[::1]:8443 ")
    assert settings.cors_origin_list == ["https://a.example", "http://localhost:5173", "https://[::1]:8443"]
    assert Settings(cors_origins="*").cors_origin_list == ["*"]

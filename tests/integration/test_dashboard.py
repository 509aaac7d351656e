"""The dashboard's routes: one shell for every /dashboard/... path (so a deep link reloads to its screen) under a
strict CSP with a fresh nonce for its one script, the script and style sheet from the package, and the site's root
sending browsers to it (the screens themselves, in a real browser: tests/e2e/test_dashboard_browser.py)."""

from __future__ import annotations

import re

import pytest


@pytest.mark.parametrize("path", ["/dashboard", "/dashboard/", "/dashboard/servers/12", "/dashboard/ssh-keys"])
async def test_every_dashboard_path_gets_the_shell_under_a_strict_policy(client, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    policy = r.headers["content-security-policy"]
    nonce = re.search(r"script-src 'nonce-([A-Za-z0-9_-]+)'", policy)
    assert nonce, policy
    assert "default-src 'self'" in policy and "frame-ancestors 'none'" in policy and "unsafe" not in policy
    assert f'<script nonce="{nonce.group(1)}" src="/dashboard/static/app.js"' in r.text
    # No inline script or handler the policy would have to allow.
    assert r.text.count("<script") == 1 and not re.search(r"\son[a-z]+=", r.text)
    assert r.headers["cache-control"] == "no-store"
    again = await client.get(path)
    assert again.headers["content-security-policy"] != policy


async def test_the_script_and_style_sheet_come_from_the_package(client) -> None:
    script = await client.get("/dashboard/static/app.js")
    assert script.status_code == 200 and script.headers["content-type"].startswith("text/javascript")
    assert "/api/v1/auth/login" in script.text and "sessionStorage" in script.text
    assert "localStorage" not in script.text.replace("localStorage would", "")
    style = await client.get("/dashboard/static/app.css")
    assert style.status_code == 200 and style.headers["content-type"].startswith("text/css")
    for name in ("other.js", "__init__.py", "app.js.map"):
        r = await client.get(f"/dashboard/static/{name}")
        assert r.status_code == 404, name
    # A path that climbs out of static/ is just another screen's path: the shell, never a file of the package.
    r = await client.get("/dashboard/static/..%2F__init__.py")
    assert r.headers["content-type"].startswith("text/html") and "import" not in r.text


async def test_the_root_sends_browsers_to_the_dashboard_and_tells_api_clients_where_it_is(client) -> None:
    r = await client.get("/", headers={"Accept": "text/html,application/xhtml+xml"})
    assert r.status_code == 303 and r.headers["location"] == "/dashboard"
    r = await client.get("/", headers={"Accept": "application/json"})
    assert r.status_code == 404 and "/dashboard" in r.text

"""Consoles: GET /vps/{id}/console gives a page's address and a one-time password; the password opens one session,
once, before it expires (the page and its terminal in a browser: tests/e2e/test_console_browser.py)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import update

from cloudplane.db.tables import ConsoleSession, utcnow
from cloudplane.domain.errors import Unauthorized
from cloudplane.services import console
from tests.integration.test_cloudvps_vps import V1, api, cloudvps_plans, create_running_vps, vps_app, wait_for

__all__ = ["api", "cloudvps_plans", "vps_app"]  # fixtures, used by name


async def open_console(api, tenant, vps_id: str) -> dict:
    r = await api.get(f"{V1}/vps/{vps_id}/console", headers=tenant.headers)
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def test_the_password_opens_one_session_once(api, tenant, core) -> None:
    vps = await create_running_vps(api, tenant)
    data = await open_console(api, tenant, vps["id"])
    assert set(data) == {"console_url", "vnc_password", "expires_at"}
    session_id = data["console_url"].rsplit("/", 1)[1]
    assert data["console_url"] == f"https://cloud.test/console/{session_id}"
    with pytest.raises(Unauthorized):
        console.redeem(core, session_id, "not-the-password")
    redeemed = console.redeem(core, session_id, data["vnc_password"])
    assert redeemed.server_id == int(vps["id"].removeprefix("vps-")) and redeemed.provider == "simulator"
    with pytest.raises(Unauthorized, match="used already or expired"):
        console.redeem(core, session_id, data["vnc_password"])
    # Each console is its own session with its own password.
    again = await open_console(api, tenant, vps["id"])
    assert again["console_url"] != data["console_url"] and again["vnc_password"] != data["vnc_password"]


async def test_an_expired_password_opens_nothing(api, tenant, core) -> None:
    vps = await create_running_vps(api, tenant)
    data = await open_console(api, tenant, vps["id"])
    session_id = data["console_url"].rsplit("/", 1)[1]
    with core.db.write() as s:
        s.execute(
            update(ConsoleSession)
            .where(ConsoleSession.id == session_id)
            .values(expires_at=utcnow() - timedelta(seconds=1))
        )
    with pytest.raises(Unauthorized):
        console.redeem(core, session_id, data["vnc_password"])


async def test_a_console_needs_a_running_vps_of_ones_own(api, tenant, make_tenant) -> None:
    vps = await create_running_vps(api, tenant)
    r = await api.get(f"{V1}/vps/{vps['id']}/console", headers=make_tenant().headers)
    assert r.status_code == 404, r.text
    assert (await api.post(f"{V1}/vps/{vps['id']}/stop", headers=tenant.headers)).status_code == 200
    await wait_for(api, tenant, vps["id"], "stopped")
    r = await api.get(f"{V1}/vps/{vps['id']}/console", headers=tenant.headers)
    assert r.status_code == 409 and "running" in r.json()["error"]["message"], r.text


async def test_the_page_runs_only_its_own_script(client) -> None:
    r = await client.get("/console/00000000-0000-4000-8000-000000000000")
    assert r.status_code == 200 and "Console password" in r.text
    policy = r.headers["content-security-policy"]
    nonce = policy.split("'nonce-")[1].split("'")[0]
    assert f'<script nonce="{nonce}">' in r.text and "default-src 'none'" in policy
    assert r.headers["cache-control"] == "no-store"

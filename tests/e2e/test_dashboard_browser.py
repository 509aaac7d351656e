"""The dashboard in a real browser: headless Chromium (Debian's, driven by Playwright) against a real
`cloudplane serve` with the simulator at a small time scale. A new user signs up (a short password is refused beside
its field), signs out and in, adds an SSH key, creates a server and watches its progress until it runs, stops it,
opens its details (a reload of the deep link stays there) and its console access, sees the list on a phone without
sideways scrolling, deletes the server after confirming (Escape cancels) and the key. Signing in is done with the keyboard alone; a token about to expire is renewed, and a dead one sends the user to sign in and back. The page's policy refuses nothing it needs
(no CSP report in the console) and its script raises nothing. A screenshot of each screen goes to screenshots/."""

from __future__ import annotations

import re
from pathlib import Path

from tests.e2e.conftest import browser_page
from tests.integration.test_letscloud_ssh_keys import ed25519_public_key

SCREENSHOTS = Path(__file__).resolve().parents[2] / "screenshots"
DESKTOP = {"width": 1280, "height": 860}
PHONE = {"width": 375, "height": 740}


def test_a_new_customer_runs_a_server_from_the_dashboard(service_factory) -> None:
    from playwright.sync_api import expect

    service = service_factory(simulator_time_scale="0.4")
    service.start(timeout=180)  # the machine may be busy
    SCREENSHOTS.mkdir(exist_ok=True)
    with browser_page() as page:
        problems: list[str] = []
        page.on("pageerror", lambda error: problems.append(f"script: {error}"))
        # A refusal the page shows (a 422, a 409) is logged by the browser as a failed load: not a problem.
        page.on(
            "console",
            lambda message: (
                problems.append(f"console: {message.text}")
                if message.type == "error" and not message.text.startswith("Failed to load resource")
                else None
            ),
        )
        # Nothing the page asks for outside the APIs is missing.
        page.on(
            "response",
            lambda r: problems.append(f"missing: {r.url}") if r.status == 404 and "/api/" not in r.url else None,
        )
        page.set_viewport_size(DESKTOP)

        def shot(name: str) -> None:
            page.screenshot(path=str(SCREENSHOTS / f"dashboard-{name}.png"), full_page=True)

        # The root sends a browser to the dashboard, which asks who it is.
        page.goto(service.url + "/")
        expect(page).to_have_url(service.url + "/dashboard/sign-in")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        shot("sign-in")

        # Sign up: a password too short is refused beside the password field, in words.
        page.get_by_role("link", name="Create an account").click()
        page.get_by_label("Name").fill("Ada")
        page.get_by_label("Email").fill("ada@example.com")
        page.get_by_label("Password").fill("short")
        page.get_by_role("button", name="Create account").click()
        password_error = page.locator('[data-field="password"] .field-error')
        expect(password_error).to_contain_text("at least 8 characters")
        expect(page.get_by_label("Password")).to_have_attribute("aria-invalid", "true")
        expect(page.locator('[data-field="email"] .field-error')).to_be_hidden()
        shot("register-error")
        page.get_by_label("Password").fill("correct-horse-9")
        page.get_by_role("button", name="Create account").click()
        expect(page).to_have_url(service.url + "/dashboard/servers")
        expect(page.get_by_text("No servers yet")).to_be_visible()

        # Out and back in, with the keyboard only: Tab reaches the fields (focus shown), Enter submits.
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(service.url + "/dashboard/sign-in")
        expect(page.get_by_role("status").filter(has_text="Signed out")).to_be_visible()
        page.keyboard.press("Tab")
        expect(page.get_by_label("Email")).to_be_focused()
        assert page.evaluate("getComputedStyle(document.activeElement).boxShadow") != "none", "focus not shown"
        page.keyboard.type("ada@example.com")
        page.keyboard.press("Tab")
        page.keyboard.type("wrong-password")
        page.keyboard.press("Enter")
        expect(page.locator(".form-error")).to_be_visible()
        expect(page.locator(".form-error")).to_be_focused()
        page.get_by_label("Password").fill("correct-horse-9")
        page.get_by_label("Password").press("Enter")
        expect(page).to_have_url(service.url + "/dashboard/servers")

        # An SSH key, added from its screen.
        page.get_by_role("navigation", name="Main").get_by_role("link", name="SSH keys").click()
        page.get_by_label("Title").fill("laptop")
        page.get_by_label("Public key").fill("ssh-ed25519 not-a-key")
        page.get_by_role("button", name="Add key").click()
        expect(page.locator('[data-field="key"] .field-error')).to_be_visible()
        page.get_by_label("Public key").fill(ed25519_public_key())
        page.get_by_role("button", name="Add key").click()
        expect(page.locator("ul.keys li.key")).to_have_count(1)
        expect(page.locator("ul.keys")).to_contain_text("SHA256:")
        shot("ssh-keys")

        # Create a server with that key: its row shows the create's progress until it runs.
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Servers").click()
        page.get_by_role("link", name="Create server").click()
        page.get_by_label("Name", exact=True).fill("web")
        page.get_by_label("Hostname").fill("web-1")
        page.get_by_label("Plan").select_option("basic-2gb")
        page.get_by_label("Location").select_option("fra1")
        page.get_by_label("laptop").check()
        shot("create-server")
        page.get_by_role("button", name="Create server").click()
        expect(page).to_have_url(service.url + "/dashboard/servers")
        expect(page.locator(".notice")).to_contain_text("root password")
        row = page.locator("tr[data-server]").filter(has_text="web-1")
        expect(row.locator("progress")).to_be_visible(timeout=10_000)
        shot("servers-creating")
        expect(row.locator(".status")).to_have_text("running", timeout=60_000)
        expect(row.locator("progress")).to_have_count(0)
        expect(row).to_contain_text("Basic 2GB")
        shot("servers")

        # Stop it from the list.
        row.get_by_role("button", name="Stop web").click()
        expect(row.locator(".status")).to_have_text("stopped", timeout=60_000)

        # The phone: the list fits the screen's width.
        page.set_viewport_size(PHONE)
        expect(row.get_by_role("button", name="Start web")).to_be_visible()
        widths = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
        assert widths[0] <= widths[1], f"the list scrolls sideways on a phone: {widths}"
        shot("servers-phone")
        page.set_viewport_size(DESKTOP)

        # Its details, and a reload of that deep link stays on them.
        row.get_by_role("link", name="web").click()
        expect(page).to_have_url(re.compile(r"/dashboard/servers/\d+$"))
        details_url = page.url
        expect(page.get_by_role("heading", name="web", exact=True)).to_be_visible()
        details = page.locator(".details")
        expect(details).to_contain_text("Public IPv4")
        expect(details).to_contain_text("Frankfurt")
        expect(details).to_contain_text("laptop")
        page.reload()
        expect(page).to_have_url(details_url)
        expect(page.get_by_role("heading", name="web", exact=True)).to_be_visible()
        expect(page.locator(".details .status")).to_have_text("stopped")
        # A token about to expire is renewed before the next call; one the API no longer takes sends the user to
        # sign in again, and back to the same screen after.
        stored = "JSON.parse(sessionStorage.getItem('cloudplane.session'))"
        before = page.evaluate(stored)
        page.evaluate(
            "s => sessionStorage.setItem('cloudplane.session', JSON.stringify({...s, expiresAt: Date.now() + 1000}))",
            before,
        )
        page.reload()
        expect(page.locator(".details")).to_contain_text("Public IPv4")
        after = page.evaluate(stored)
        assert after["token"] != before["token"] and after["expiresAt"] - page.evaluate("Date.now()") > 50 * 60_000, (
            after
        )
        page.evaluate(
            "s => sessionStorage.setItem('cloudplane.session', JSON.stringify({...s, token: 'a.b.c'}))", after
        )
        page.reload()
        expect(page).to_have_url(re.compile(r"/dashboard/sign-in\?next="))
        expect(page.get_by_text("Your session ended")).to_be_visible()
        page.get_by_label("Email").fill("ada@example.com")
        page.get_by_label("Password").fill("correct-horse-9")
        page.get_by_label("Password").press("Enter")
        expect(page).to_have_url(details_url)
        # A console needs the server running: start it from here.
        page.get_by_role("button", name="Get console access").click()
        expect(page.locator(".console-out")).to_contain_text("needs the server running")
        page.get_by_role("button", name="Start web").click()
        expect(page.locator(".details progress")).to_be_visible()
        expect(page.locator(".details .status")).to_have_text("running", timeout=60_000)
        page.get_by_role("button", name="Get console access").click()
        console_link = page.get_by_role("link", name="Open the console in a new tab")
        expect(console_link).to_have_attribute("href", re.compile(re.escape(service.url + "/console/")))
        expect(page.locator(".secret")).not_to_be_empty()
        shot("server-details")

        # Delete it, after confirming in a dialog (first cancelled with Escape, then confirmed).
        page.get_by_role("button", name="Delete web").click()
        dialog = page.get_by_role("dialog")
        expect(dialog).to_contain_text("cannot be undone")
        shot("delete-confirm")
        expect(dialog.get_by_role("button", name="Cancel")).to_be_focused()
        page.keyboard.press("Escape")
        expect(dialog).to_have_count(0)
        page.get_by_role("button", name="Delete web").click()
        page.get_by_role("dialog").get_by_role("button", name="Delete web").click()
        expect(page).to_have_url(service.url + "/dashboard/servers")
        expect(page.get_by_text("No servers yet")).to_be_visible(timeout=60_000)

        # And the key.
        page.get_by_role("navigation", name="Main").get_by_role("link", name="SSH keys").click()
        page.get_by_role("button", name="Delete key laptop").click()
        page.get_by_role("dialog").get_by_role("button", name="Delete laptop").click()
        expect(page.locator("ul.keys")).to_contain_text("No SSH keys yet")

        assert not problems, problems

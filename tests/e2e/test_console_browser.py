"""The console in a real browser: GET /vps/{id}/console's page opened in headless Chromium (Debian's, driven by
Playwright), its password typed in, a command typed into the terminal and its output read, over the page's
WebSocket to a real `cloudplane serve`. Here on the simulator's shell; on a real LXC container in
tests/e2e/test_lxc_ssh.py (with `type_in_console`). The password works once: a second socket is refused."""

from __future__ import annotations

import asyncio
import time

import httpx
import websockets

from tests.e2e.conftest import browser_page


def type_in_console(console_url: str, password: str, commands: list[tuple[str, str]]) -> str:
    """Open the console page, sign in with the password, type each command and wait until the terminal shows the
    line expected of it; the terminal's text at the end."""
    from playwright.sync_api import expect

    with browser_page() as page:
        errors: list[str] = []
        page.on("pageerror", lambda error: errors.append(str(error)))
        page.goto(console_url)
        assert not errors, f"the page's script failed: {errors}"
        page.get_by_label("Console password").fill(password)
        page.get_by_role("button", name="Connect").click()
        status = page.locator("#status")
        try:
            expect(status).to_have_text("Connected", timeout=20_000)
        except AssertionError as failed:
            raise AssertionError(f"the console did not connect: {status.text_content()!r}") from failed
        screen = page.locator("#screen")
        # What is typed before the shell's first prompt may be lost, as on any terminal.
        expect(screen).to_contain_text("# ", timeout=20_000)
        for command, shown in commands:
            screen.press_sequentially(command)
            screen.press("Enter")
            # The answer on a line of its own: the prompt and the typed command may hold the same words.
            page.wait_for_function(
                "(shown) => document.getElementById('screen').textContent.includes(shown)",
                arg=f"\n{shown}\n",
                timeout=20_000,
            )
        return screen.text_content() or ""


def second_use_is_refused(console_url: str, password: str) -> str:
    """The close reason a socket gets for a password used already."""
    socket_url = console_url.replace("http://", "ws://") + "/ws"

    async def attempt() -> str:
        async with websockets.connect(socket_url) as socket:
            await socket.send(password)
            try:
                await asyncio.wait_for(socket.recv(), 10)
            except websockets.ConnectionClosed as closed:
                assert closed.rcvd is not None and closed.rcvd.code == 4401, closed
                return closed.rcvd.reason
            raise AssertionError("a used password opened a session")

    return asyncio.run(attempt())


def test_a_command_typed_in_the_console_page_answers_in_it(service_factory) -> None:
    service = service_factory(simulator_time_scale="0")
    service.start()
    headers = {"Authorization": f"Bearer {service.api_key}"}
    with httpx.Client(base_url=service.url, headers=headers, timeout=30) as client:
        body = {"label": "web", "plan_slug": "basic-1gb", "image_slug": "ubuntu-22-04", "location_slug": "nyc1"}
        server = client.post("/api/servers", json={**body, "hostname": "web-1"}).json()
        deadline = time.monotonic() + 30
        while client.get(f"/api/servers/{server['id']}").json()["status"] != "running":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        r = client.get(f"/api/v1/vps/vps-{server['id']}/console")
        assert r.status_code == 200, r.text
        console = r.json()["data"]
    assert console["console_url"].startswith(service.url + "/console/")
    text = type_in_console(
        console["console_url"],
        console["vnc_password"],
        [('echo "hello"-"browser"', "hello-browser"), ("hostname", "web-1")],
    )
    # What the shell answered, on lines of their own (the typed commands are echoed with their quotes).
    assert "\nhello-browser\n" in text and "\nweb-1\n" in text and "simulated server" in text, text
    assert "used already or expired" in second_use_is_refused(console["console_url"], console["vnc_password"])

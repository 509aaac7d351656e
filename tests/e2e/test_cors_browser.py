"""CORS in a real browser: a page served from another origin calls a real `cloudplane serve` with fetch() in headless
Chromium (Debian's, driven by Playwright). With its origin in CLOUDPLANE_CORS_ORIGINS the page reads replies and the
headers it needs; without, the browser refuses to show it anything."""

from __future__ import annotations

import functools
import http.server
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ServiceProcess, browser_page, free_port

# What the page does, run in it with page.evaluate: sign up, sign in and list its VPS with the token it got; with the
# admin's API key a list and a JSON create (each call preflighted: JSON bodies, Authorization), each reporting what
# the page could read, or the error fetch() gave it.
CALLS = """
async ([api, key]) => {
  const read = async (promise) => {
    try {
      const r = await promise;
      return {
        status: r.status,
        limit: r.headers.get('X-RateLimit-Limit'),
        requestId: r.headers.get('X-Request-ID'),
        operation: r.headers.get('Operation-Location'),
        body: await r.json(),
      };
    } catch (e) {
      return {error: String(e)};
    }
  };
  const json = {'Content-Type': 'application/json'};
  const credentials = {email: 'page@example.com', password: 'correct-horse-9'};
  const signUp = await read(fetch(api + '/api/v1/auth/register', {
    method: 'POST', headers: json, body: JSON.stringify({...credentials, name: 'Page'}),
  }));
  const signIn = await read(fetch(api + '/api/v1/auth/login', {
    method: 'POST', headers: json, body: JSON.stringify(credentials),
  }));
  const token = signIn.body ? signIn.body.data.token : 'none';
  const mine = await read(fetch(api + '/api/v1/vps', {headers: {Authorization: 'Bearer ' + token}}));
  const auth = {Authorization: 'Bearer ' + key};
  const list = await read(fetch(api + '/api/v1/vps', {headers: auth}));
  const create = await read(fetch(api + '/api/servers', {
    method: 'POST',
    headers: {...auth, 'Content-Type': 'application/json', 'X-Request-ID': 'from-the-page'},
    body: JSON.stringify({label: 'web', plan_slug: 'basic-1gb', image_slug: 'ubuntu-22-04', location_slug: 'nyc1'}),
  }));
  return {signUp, signIn, mine, list, create};
}
"""


@pytest.fixture
def page_origin(tmp_path: Path) -> Iterator[str]:
    """A static page on a port of its own: an origin other than the API's."""
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><title>panel</title><p>panel</p>")
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_page(origin: str, service: ServiceProcess) -> dict:
    with browser_page() as page:
        page.goto(origin + "/index.html")
        return page.evaluate(CALLS, [service.url, service.api_key])


def test_a_page_on_a_named_origin_reads_replies_and_their_headers(service_factory, page_origin: str) -> None:
    service = service_factory(cors_origins=page_origin, simulator_time_scale="0")
    service.start()
    assert service.api_key
    result = run_page(page_origin, service)
    assert result["signUp"].get("status") == 201, result
    assert result["signIn"].get("status") == 200, result
    assert result["mine"].get("status") == 200 and result["mine"]["body"]["data"] == [], result
    listed, created = result["list"], result["create"]
    assert listed.get("status") == 200, result
    assert listed["body"]["success"] is True and listed["limit"] is not None and listed["requestId"]
    assert created.get("status") == 201, result
    assert created["requestId"] == "from-the-page" and created["operation"].startswith("/api/operations/")
    assert created["body"]["label"] == "web"


def test_a_page_on_another_origin_is_refused_by_the_browser(service_factory, page_origin: str) -> None:
    service = service_factory(cors_origins="https://panel.example.com", simulator_time_scale="0")
    service.start()
    result = run_page(page_origin, service)
    for call in ("signUp", "signIn", "mine", "list", "create"):
        assert "Failed to fetch" in result[call].get("error", ""), (call, result)

"""The web dashboard: one HTML shell for every /dashboard/... path (the page routes itself, so a deep link reloads to
the same screen) and the shell's own script and style sheet, served from this package. The script signs in and works
through the same JSON APIs every other client uses (/api/v1/auth/*, /api/servers, /api/ssh-keys, /api/operations),
with the session's bearer token: there is no route here that reads or changes anything."""

from __future__ import annotations

import html
import secrets
from importlib import resources

from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response

from cloudplane.domain.errors import NotFound

router = APIRouter(include_in_schema=False)

BASE = "/dashboard"
_STATIC = resources.files(__package__) / "static"
# The files the shell loads, by name, with their media types: nothing else under static/ is served.
_ASSETS = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}

_SHELL = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Cloudplane</title>
<link rel="stylesheet" href="{base}/static/app.css">
<script nonce="{nonce}" src="{base}/static/app.js" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header class="top">
  <a class="brand" href="{base}/servers">Cloudplane</a>
  <nav id="nav" aria-label="Main" hidden>
    <a href="{base}/servers">Servers</a>
    <a href="{base}/ssh-keys">SSH keys</a>
    <span class="soon">Coming next: billing, support tickets, apps, GPU and admin screens</span>
  </nav>
  <div id="account" class="account" hidden>
    <span id="who"></span>
    <button type="button" id="sign-out">Sign out</button>
  </div>
</header>
<div id="announce" class="visually-hidden" role="status" aria-live="polite"></div>
<main id="main" tabindex="-1">
  <noscript>The dashboard needs JavaScript. The same things can be done with the API: see the README.</noscript>
</main>
</body>
</html>
"""


def _headers(nonce: str) -> dict[str, str]:
    return {
        # Our own script (by this response's nonce) and style sheet only; calls to this origin only; never framed.
        "Content-Security-Policy": (
            f"default-src 'self'; script-src 'nonce-{nonce}'; style-src 'self'; img-src 'self' data:; "
            "connect-src 'self'; object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
        ),
        "Cache-Control": "no-store",
        "Referrer-Policy": "no-referrer",
        "X-Content-Type-Options": "nosniff",
    }


@router.get("/")
def root(request: Request) -> Response:
    """A browser asking for the site's root gets the dashboard; an API client a pointer to it."""
    if "text/html" in request.headers.get("accept", ""):
        return RedirectResponse(BASE, status_code=303)
    raise NotFound("Nothing here: the dashboard is at /dashboard, the APIs under /api and /api/v1")


@router.get(BASE + "/static/{name}")
def asset(name: str) -> Response:
    media_type = _ASSETS.get(name)
    if media_type is None:
        raise NotFound(f"No dashboard file {name!r}")
    return Response(
        (_STATIC / name).read_bytes(),
        media_type=media_type,
        # Revalidated on each load, so an upgrade's script is never mixed with an old page.
        headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
    )


@router.get(BASE)
@router.get(BASE + "/{path:path}")
def shell(path: str = "") -> Response:
    nonce = secrets.token_urlsafe(16)
    page = _SHELL.format(nonce=html.escape(nonce), base=BASE)
    return Response(page, media_type="text/html; charset=utf-8", headers=_headers(nonce))

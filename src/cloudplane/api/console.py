"""The console page (GET /console/{id}) and its WebSocket (/console/{id}/ws): the page asks for the console's
one-time password, sends it as the socket's first message, then relays keystrokes to the machine's terminal and
what the terminal writes back (providers/terminal.py). The page is Cloudplane's own few lines of script: a plain
terminal that shows text and sends keys (no escape-sequence screen: full-screen programs do not draw)."""

from __future__ import annotations

import asyncio
import codecs
import contextlib
import html
import logging
import secrets

from fastapi import APIRouter, WebSocket, WebSocketDisconnect
from fastapi.responses import HTMLResponse

from cloudplane.domain.errors import CloudplaneError
from cloudplane.providers.terminal import Terminal
from cloudplane.services import console

log = logging.getLogger(__name__)
router = APIRouter(include_in_schema=False)

# How long the page has to send the password once its socket is open.
PASSWORD_WAIT_S = 60
# WebSocket close codes in the application's range (4000-4999): the page shows the reason.
REFUSED = 4401
UNAVAILABLE = 4409

_PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Console</title>
<style nonce="{nonce}">
  body {{ margin: 0; background: #111; color: #ddd; font: 14px/1.35 ui-monospace, monospace; }}
  header {{ padding: 8px 12px; background: #222; display: flex; gap: 8px; align-items: center; flex-wrap: wrap; }}
  #screen {{ margin: 0; padding: 12px; min-height: 70vh; white-space: pre-wrap; word-break: break-all;
             outline: none; }}
  #screen:focus {{ box-shadow: inset 0 0 0 2px #3a6; }}
  #status {{ color: #9c9; }}
  #status.error {{ color: #f88; }}
  input, button {{ font: inherit; }}
</style>
</head>
<body>
<header>
  <form id="login">
    <label for="password">Console password</label>
    <input id="password" type="password" autocomplete="off" required>
    <button type="submit">Connect</button>
  </form>
  <span id="status" role="status" aria-live="polite">Enter the password the API gave you.</span>
</header>
<pre id="screen" tabindex="0" aria-label="Terminal: type here once connected"></pre>
<script nonce="{nonce}">
(() => {{
  const screen = document.getElementById('screen');
  const status = document.getElementById('status');
  const say = (text, error) => {{ status.textContent = text; status.className = error ? 'error' : ''; }};
  // Colours, cursor moves and titles are not drawn: the text is.
  const escapes = /\\x1b(\\[[0-?]*[ -\\/]*[@-~]|\\][^\\x07\\x1b]*(\\x07|\\x1b\\\\)|[@-Z\\\\-_])/g;
  const show = (text) => {{
    let shown = screen.textContent;
    for (const ch of text.replace(escapes, '').replace(/\\r\\n/g, '\\n')) {{
      if (ch === '\\b') shown = shown.slice(0, -1);
      else if (ch !== '\\r' && ch !== '\\x07') shown += ch;
    }}
    screen.textContent = shown.slice(-200000);
    window.scrollTo(0, document.body.scrollHeight);
  }};
  const keys = {{Enter: '\\r', Backspace: '\\x7f', Tab: '\\t', Escape: '\\x1b', ArrowUp: '\\x1b[A',
                ArrowDown: '\\x1b[B', ArrowRight: '\\x1b[C', ArrowLeft: '\\x1b[D', Delete: '\\x1b[3~'}};
  let socket = null;
  document.getElementById('login').addEventListener('submit', (event) => {{
    event.preventDefault();
    const password = document.getElementById('password');
    const scheme = location.protocol === 'https:' ? 'wss://' : 'ws://';
    socket = new WebSocket(scheme + location.host + location.pathname.replace(/\\/$/, '') + '/ws');
    say('Connecting...');
    socket.onopen = () => {{ socket.send(password.value); password.value = ''; }};
    socket.onmessage = (message) => {{
      if (status.textContent !== 'Connected') {{ say('Connected'); screen.focus(); }}
      show(message.data);
    }};
    socket.onclose = (event) => say(event.reason || 'Disconnected', event.code !== 1000);
  }});
  screen.addEventListener('keydown', (event) => {{
    if (!socket || socket.readyState !== WebSocket.OPEN) return;
    let data = keys[event.key];
    if (!data && event.ctrlKey && event.key.length === 1) {{
      data = String.fromCharCode(event.key.toUpperCase().charCodeAt(0) - 64);
    }} else if (!data && event.key.length === 1 && !event.metaKey) {{
      data = event.key;
    }}
    if (data) {{ event.preventDefault(); socket.send(data); }}
  }});
  screen.addEventListener('paste', (event) => {{
    if (socket && socket.readyState === WebSocket.OPEN) {{
      event.preventDefault();
      socket.send(event.clipboardData.getData('text').replace(/\\n/g, '\\r'));
    }}
  }});
}})();
</script>
</body>
</html>
"""


@router.get("/console/{session_id}")
async def console_page(session_id: str) -> HTMLResponse:
    nonce = secrets.token_urlsafe(16)
    page = _PAGE.format(nonce=html.escape(nonce))
    return HTMLResponse(
        page,
        headers={
            # The page runs its own script only, talks to this host only, and is never framed.
            "Content-Security-Policy": (
                f"default-src 'none'; script-src 'nonce-{nonce}'; style-src 'nonce-{nonce}'; connect-src 'self'; "
                "frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
            ),
            "Cache-Control": "no-store",
            "Referrer-Policy": "no-referrer",
        },
    )


@router.websocket("/console/{session_id}/ws")
async def console_socket(websocket: WebSocket, session_id: str) -> None:
    await websocket.accept()
    core = websocket.app.state.core
    try:
        password = await asyncio.wait_for(websocket.receive_text(), PASSWORD_WAIT_S)
        redeemed = await core.db.run(console.redeem, core, session_id, password[:200])
        terminal = await core.providers.get(redeemed.provider).console(redeemed.ref)
    except (TimeoutError, WebSocketDisconnect):
        await _close(websocket, REFUSED, "No password was given")
        return
    except CloudplaneError as refusal:
        await _close(websocket, REFUSED if refusal.status_code == 401 else UNAVAILABLE, refusal.message)
        return
    log.info("console session %s open on server %s", session_id, redeemed.server_id)
    try:
        await _relay(websocket, terminal)
    finally:
        await terminal.close()
        log.info("console session %s closed", session_id)


async def _relay(websocket: WebSocket, terminal: Terminal) -> None:
    """Keystrokes in, output out, until either side ends."""
    decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")

    async def output() -> None:
        while data := await terminal.read():
            await websocket.send_text(decoder.decode(data))
        await _close(websocket, 1000, "The session ended")

    async def keys() -> None:
        with contextlib.suppress(WebSocketDisconnect):
            while True:
                await terminal.write((await websocket.receive_text()).encode())

    tasks = [asyncio.create_task(output()), asyncio.create_task(keys())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)


async def _close(websocket: WebSocket, code: int, reason: str) -> None:
    with contextlib.suppress(RuntimeError, WebSocketDisconnect):
        # A close frame's reason is at most 123 bytes.
        await websocket.close(code=code, reason=reason.encode()[:120].decode(errors="ignore"))

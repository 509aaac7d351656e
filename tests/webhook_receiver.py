"""A webhook receiver for the tests, run as a process of its own on loopback: it checks every delivery with the
CloudVPS document's `verifyWebhookSignature` (run by Node, from tests/e2e/examples) and with the `standardwebhooks`
package, and writes what it got to a log, one JSON line per request. Its secrets (one per path) and the failures it
should answer with are files the test writes, read at each request (a rotation or a change of mind needs no restart).

    python -m tests.webhook_receiver PORT DIRECTORY
"""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

VERIFIER = Path(__file__).parent / "e2e" / "examples" / "verify_webhook_signature.js"


class NodeVerifier:
    """One Node process running the document's function, asked one line at a time."""

    def __init__(self) -> None:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed")
        self.proc = subprocess.Popen(
            [node, str(VERIFIER)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1
        )
        self.lock = threading.Lock()

    def verify(self, payload: str, signature: str, secret: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self.lock:
            self.proc.stdin.write(json.dumps({"payload": payload, "signature": signature, "secret": secret}) + "\n")
            self.proc.stdin.flush()
            return self.proc.stdout.readline().strip()


def serve(port: int, directory: Path) -> None:
    from standardwebhooks import Webhook, WebhookVerificationError

    node = NodeVerifier()
    log_lock = threading.Lock()
    seen: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            secret = json.loads((directory / "secrets.json").read_text()).get(self.path, "whsec_" + "A" * 44)
            control = json.loads((directory / "control.json").read_text() or "{}")
            message_id = self.headers.get("webhook-id", "")
            try:
                Webhook(secret).verify(raw, dict(self.headers.items()))
                standard = "true"
            except WebhookVerificationError as error:
                standard = f"false {error}"
            # The document's function is given the body as text, as a Node receiver reading it as UTF-8 would.
            document = node.verify(raw.decode("utf-8"), self.headers.get("X-Webhook-Signature", ""), secret)
            with log_lock:
                seen[message_id] = tries = seen.get(message_id, 0) + 1
                status = 500 if tries <= control.get("fail_first", 0) else 200
                status = control.get("always", status)
                line = {
                    "webhook_id": message_id,
                    "timestamp": self.headers.get("webhook-timestamp"),
                    "event": self.headers.get("X-Webhook-Event"),
                    "document_check": document,
                    "standard_check": standard,
                    "answered": status,
                    "body": raw.decode("utf-8", "replace"),
                    "path": self.path,
                    "host": self.headers.get("Host"),
                }
                with (directory / "log.jsonl").open("a") as log:
                    log.write(json.dumps(line) + "\n")
            # A slow receiver, to have deliveries in flight.
            time.sleep(control.get("delay_s", 0))
            self.send_response(status)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Receiver:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.port = free_port()
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "secrets.json").write_text("{}")
        (directory / "control.json").write_text("{}")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.webhook_receiver", str(self.port), str(directory)],
            cwd=Path(__file__).parent.parent,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                return
            if self.proc.poll() is not None:
                raise RuntimeError("the webhook receiver exited")
            time.sleep(0.05)
        raise RuntimeError("the webhook receiver did not start")

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hooks"

    def use_secret(self, secret: str, path: str = "/hooks") -> None:
        """Check what comes to `path` with this secret."""
        secrets = json.loads((self.directory / "secrets.json").read_text())
        (self.directory / "secrets.json").write_text(json.dumps({**secrets, path: secret}))

    def control(self, **settings: float) -> None:
        """How to answer from now on: `fail_first` (500 to the first N tries of each message), `always` (this status
        to every try), `delay_s` (wait that long before answering)."""
        (self.directory / "control.json").write_text(json.dumps(settings))

    def received(self) -> list[dict[str, Any]]:
        log = self.directory / "log.jsonl"
        return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(10)


@contextlib.contextmanager
def receiver(directory: Path) -> Iterator[Receiver]:
    started = Receiver(directory)
    try:
        yield started
    finally:
        started.stop()


if __name__ == "__main__":
    serve(int(sys.argv[1]), Path(sys.argv[2]))

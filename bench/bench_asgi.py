"""CPU time of one request through the whole app, called in-process as an ASGI app (no socket, no uvicorn, no load
generator on the other core): the steadiest way to compare two versions of Cloudplane on this machine (±10 µs,
where bench_letscloud.py's figures move by 10-15 %). Run it with each version's Python:

    .venv/bin/python bench/bench_asgi.py [--log-level INFO] [--repeats 7] [--calls 2000]
    /path/to/other/checkout/.venv/bin/python bench/bench_asgi.py

It starts the app's lifespan (migrations, catalog, workflow engine, reconciler) on a SQLite file in a temp dir at
simulator time scale 0, makes a user, an API key and a running server, then calls getServer and listServers (20 per
page) `--calls` times, `--repeats` times each, and prints the best CPU time per request (process time: every
thread, the log writer's included). Log lines go to /dev/null."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import sys
import tempfile
import time
from typing import Any

CREATE_BODY = {"label": "bench", "plan_slug": "basic-1gb", "image_slug": "ubuntu-22-04", "location_slug": "nyc1"}


class Client:
    """Calls an ASGI app with a request made by hand, as a server would."""

    def __init__(self, app: Any, key: str) -> None:
        self.app = app
        self.auth = (b"authorization", f"Bearer {key}".encode())

    async def call(self, method: str, target: str, body: bytes = b"") -> tuple[int, bytes]:
        path, _, query = target.partition("?")
        headers = [(b"host", b"bench"), self.auth]
        if body:
            headers += [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": query.encode(),
            "root_path": "",
            "headers": headers,
            "client": ("127.0.0.1", 50000),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        delivered = False

        async def receive() -> dict[str, Any]:
            nonlocal delivered
            if delivered:  # the app asks again only to learn of a disconnect: none comes
                await asyncio.Event().wait()
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}

        reply: dict[str, Any] = {"status": 0, "body": b""}

        async def send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                reply["status"] = message["status"]
            elif message["type"] == "http.response.body":
                reply["body"] += message.get("body", b"")

        await self.app(scope, receive, send)
        return reply["status"], reply["body"]


async def run(args: argparse.Namespace) -> None:
    from cloudplane.app import create_app
    from cloudplane.services.accounts import create_api_key, create_user

    app = create_app()
    inbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    outbox: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
    await inbox.put({"type": "lifespan.startup"})
    lifespan = asyncio.create_task(
        app({"type": "lifespan", "asgi": {"version": "3.0"}, "state": {}}, inbox.get, outbox.put)
    )
    with contextlib.redirect_stdout(io.StringIO()):  # the first start prints the admin's key
        started = await outbox.get()
    if started["type"] != "lifespan.startup.complete":
        raise SystemExit(f"the app did not start: {started}")
    core = app.state.core
    user = create_user(core.db, email="bench@example.com", name="Bench")
    _, key = create_api_key(core.db, user_id=user.id)
    client = Client(app, key)
    status, body = await client.call("POST", "/api/servers", json.dumps(CREATE_BODY).encode())
    if status != 201:
        raise SystemExit(f"createServer answered {status}: {body[:300]!r}")
    server_id = json.loads(body)["id"]
    await asyncio.sleep(1)  # the create's workflow finishes (time scale 0), whichever engine this version has
    targets = {"getServer": f"/api/servers/{server_id}", "listServers": "/api/servers?per_page=20"}
    for name, target in targets.items():
        for _ in range(args.calls // 5):  # warm-up: caches, compiled statements
            status, body = await client.call("GET", target)
        if status != 200:
            raise SystemExit(f"{name} answered {status}: {body[:300]!r}")
        best = float("inf")
        for _ in range(args.repeats):
            cpu = time.process_time()
            for _ in range(args.calls):
                await client.call("GET", target)
            best = min(best, (time.process_time() - cpu) / args.calls * 1e6)
        print(
            f"{name:<12} {best:7.0f} µs CPU per request (best of {args.repeats} x {args.calls}, log level {args.log_level})"
        )
    lifespan.cancel()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument(
        "--log-level", default="INFO", help="the service's log level (INFO writes an access line per request)"
    )
    ap.add_argument("--repeats", type=int, default=7, help="runs per endpoint; the best is printed")
    ap.add_argument("--calls", type=int, default=2000, help="requests per run")
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="cloudplane-bench-asgi-")
    for name in [n for n in os.environ if n.startswith("CLOUDPLANE_")]:
        del os.environ[name]  # inherited settings (a Postgres URL, latency) would skew the figures
    os.environ.update(
        CLOUDPLANE_DATABASE_URL=f"sqlite:///{tmp}/cloudplane.sqlite",
        CLOUDPLANE_SIMULATOR_TIME_SCALE="0",
        CLOUDPLANE_RATE_LIMITS_ENABLED="false",
        CLOUDPLANE_LOG_LEVEL=args.log_level,
    )
    os.chdir(tmp)
    print(f"python {sys.version.split()[0]}, nproc={len(os.sched_getaffinity(0))}")
    sys.stdout.flush()
    # The service logs to stderr: out of the way.
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)
    asyncio.run(run(args))


if __name__ == "__main__":
    main()

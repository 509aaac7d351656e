"""Throughput and latency of three LetsCloud endpoints on the real service, against a bare Starlette app that
replays the same response bytes from memory, so the ratio shows what the service's own work costs."""

from __future__ import annotations

import argparse
import asyncio
import base64
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

HOST = "127.0.0.1"
WARMUP_S = 1.0
SERVER_COUNT = 20
CREATE_BODY = {"label": "bench", "plan_slug": "basic-1gb", "image_slug": "ubuntu-22-04", "location_slug": "nyc1"}
KEY_RE = re.compile(rb"cp_[A-Za-z0-9_-]+")
ENDPOINTS = ("listServers", "getServer", "createServer")


class StartupError(RuntimeError):
    pass


def serve_bare(responses_file: str, port: int) -> None:
    """The bare app's process (`--serve-bare FILE --port N`): the recorded responses, replayed from memory."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    recorded = json.loads(Path(responses_file).read_text())

    def replay(name: str) -> Callable[[Request], Awaitable[Response]]:
        r = recorded[name]
        body, status, media_type = base64.b64decode(r["body"]), r["status"], r["content_type"]

        async def endpoint(request: Request) -> Response:
            if request.method == "POST":
                await request.body()  # the service reads and parses the body; at least receive it here
            return Response(body, status_code=status, media_type=media_type)

        return endpoint

    list_, create = replay("listServers"), replay("createServer")

    async def servers(request: Request) -> Response:
        return await (create if request.method == "POST" else list_)(request)

    app = Starlette(
        routes=[
            Route("/api/servers", servers, methods=["GET", "POST"]),
            Route("/api/servers/{server_id:int}", replay("getServer"), methods=["GET"]),
            Route("/health", lambda _: Response(b'{"status":"healthy"}', media_type="application/json")),
        ]
    )
    # The same settings `cloudplane serve` passes to uvicorn.run.
    uvicorn.run(app, host=HOST, port=port, log_level="warning", access_log=False)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


class Child:
    """A subprocess whose merged output goes to a file. Not a pipe drained by a thread: a service that logs a line
    per request would wake that thread hundreds of times a second, and its fight for this process's GIL would slow
    the load generator, not the service (measured: -30% on listServers)."""

    def __init__(self, name: str, argv: list[str], *, cwd: str, env: dict[str, str]) -> None:
        self.name = name
        self.key: str | None = None
        self.key_seen = threading.Event()
        self.log_path = Path(cwd) / f"{name}-{len(argv)}-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        # A session of its own: Ctrl-C reaches only the bench, which then stops the children in order.
        self.proc = subprocess.Popen(
            argv, cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        threading.Thread(target=self._watch_for_key, daemon=True).start()

    def _watch_for_key(self) -> None:
        """Poll the output for the bootstrap key until it shows, then stop looking."""
        while self.proc.poll() is None and self.key is None:
            if m := KEY_RE.search(self.output):
                self.key = m.group(0).decode()
                self.key_seen.set()
                return
            time.sleep(0.05)

    @property
    def output(self) -> bytes:
        try:
            return self.log_path.read_bytes()[:1_000_000]
        except OSError:
            return b""

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.output.decode(errors="replace").splitlines()[-n:])

    def cpu_seconds(self) -> float:
        """User and system CPU time the process has used so far."""
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def peak_rss_mib(self) -> float | None:
        try:
            for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
        except OSError:
            pass
        return None

    def stop(self) -> None:
        self._log.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def request(
    port: int, method: str, path: str, *, key: str = "", body: dict | None = None, timeout: float = 10
) -> tuple[int, str, bytes]:
    # http.client rather than urllib: no proxy environment variables can divert loopback traffic.
    conn = http.client.HTTPConnection(HOST, port, timeout=timeout)
    try:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        conn.request(method, path, body=data, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type", ""), resp.read()
    finally:
        conn.close()


def wait_healthy(child: Child, port: int, timeout: float = 60, poll: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if child.proc.poll() is not None:
            raise StartupError(f"{child.name} exited with code {child.proc.returncode}:\n{child.tail()}")
        try:
            if request(port, "GET", "/health", timeout=2)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(poll)
    raise StartupError(f"{child.name} not healthy after {timeout:.0f}s:\n{child.tail()}")


def service_argv() -> list[str]:
    # `python -m cloudplane.cli` does not work (the package has no __main__), so prefer the console script.
    script = Path(sys.executable).with_name("cloudplane")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from cloudplane.cli import main; main()"]


def clean_env() -> dict[str, str]:
    # Inherited CLOUDPLANE_* settings (latency, error rates, a Postgres URL) would skew the numbers.
    return {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPLANE_")}


class Conn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; raw rather than an HTTP client library, because the load generator
    shares the CPUs with the servers under test."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.buf = bytearray()
        self.need = -1
        self.body_start = 0
        self.status = 0
        self.waiter: asyncio.Future[tuple[int, bytes]] | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_exception(exc or ConnectionResetError("connection closed"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.need < 0:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                return
            head = bytes(self.buf[:end]).lower()
            self.status = int(head[9:12])
            m = re.search(rb"\r\ncontent-length:\s*(\d+)", head)
            if m is None:  # both targets always send Content-Length; anything else is a failure
                self.transport.close()  # type: ignore[union-attr]
                return
            self.body_start = end + 4
            self.need = self.body_start + int(m.group(1))
        if len(self.buf) >= self.need and self.waiter is not None:
            body = bytes(self.buf[self.body_start : self.need])
            del self.buf[: self.need]
            self.need = -1
            self.waiter.set_result((self.status, body))

    async def roundtrip(self, raw: bytes) -> tuple[int, bytes]:
        self.waiter = asyncio.get_running_loop().create_future()
        self.transport.write(raw)  # type: ignore[union-attr]
        try:
            return await self.waiter
        finally:
            self.waiter = None


@dataclass
class Result:
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    answered: int = 0  # every reply, warm-up included: what the target's CPU time was spent on


def raw_request(method: str, path: str, port: int, key: str, body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", f"Authorization: Bearer {key}"]
    if method == "POST":
        lines += ["Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def load(port: int, raw: bytes, expect: int, *, concurrency: int, duration: float) -> Result:
    loop = asyncio.get_running_loop()
    result = Result()
    conns: list[Conn] = []
    t_warm = time.perf_counter() + WARMUP_S
    t_end = t_warm + duration

    def fail(why: str) -> None:
        result.errors += 1
        result.first_error = result.first_error or why

    async def client() -> None:
        conn: Conn | None = None
        while (t0 := time.perf_counter()) < t_end:
            try:
                if conn is None:
                    _, conn = await loop.create_connection(Conn, HOST, port)
                    conns.append(conn)
                status, _ = await conn.roundtrip(raw)
                result.answered += 1
                ok, why = status == expect, f"HTTP {status}"
            except OSError as e:
                conn, ok, why = None, False, f"{type(e).__name__}: {e}"
                await asyncio.sleep(0.01)  # a refused connection must not spin the loop
            t1 = time.perf_counter()
            # Count only what ran wholly inside the measured window.
            if t0 >= t_warm and t1 <= t_end:
                if ok:
                    result.latencies.append(t1 - t0)
                else:
                    fail(why)

    tasks = [asyncio.ensure_future(client()) for _ in range(concurrency)]
    # A request that never answers must not hold the run past its window: closing the transports fails it.
    done, pending = await asyncio.wait(tasks, timeout=WARMUP_S + duration + 10)
    for c in conns:
        if c.transport is not None:
            c.transport.close()
    if pending:
        await asyncio.wait(pending, timeout=5)
        for t in pending:
            t.cancel()
        fail(f"{len(pending)} client(s) stuck past the window")
    for t in done:
        if t.exception() is not None:
            fail(repr(t.exception()))
    return result


def run_load(*args, **kwargs) -> Result:  # type: ignore[no-untyped-def]
    try:
        import uvloop  # the servers use it too (uvicorn's loop="auto")

        return uvloop.run(load(*args, **kwargs))
    except ImportError:
        return asyncio.run(load(*args, **kwargs))


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def create_servers(port: int, key: str) -> tuple[list[int], tuple[int, str, bytes]]:
    ids, created = [], None
    for _ in range(SERVER_COUNT):
        created = request(port, "POST", "/api/servers", key=key, body=CREATE_BODY)
        if created[0] != 201:
            raise RuntimeError(f"createServer answered {created[0]}: {created[2][:300]!r}")
        ids.append(json.loads(created[2])["id"])
    deadline = time.monotonic() + 60
    pending = set(ids)
    while pending and time.monotonic() < deadline:
        for sid in list(pending):
            status, _, body = request(port, "GET", f"/api/servers/{sid}", key=key)
            if status == 200 and json.loads(body).get("status") == "running":
                pending.discard(sid)
        if pending:
            time.sleep(0.1)
    if pending:
        print(f"warning: {len(pending)} server(s) not running after 60s; measuring anyway", file=sys.stderr)
    assert created is not None
    return ids, created


def start_profiler(pid: int, out: str, seconds: float, gil_only: bool) -> subprocess.Popen | None:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(spy).exists():
        print("warning: py-spy not found (pip install py-spy); not profiling", file=sys.stderr)
        return None
    fmt = {".svg": "flamegraph", ".txt": "raw"}.get(Path(out).suffix, "speedscope")
    argv = [
        spy,
        "record",
        "--pid",
        str(pid),
        "--output",
        out,
        "--format",
        fmt,
        "--duration",
        str(int(seconds + 0.999)),
        "--rate",
        "200",
        "--nonblocking",
    ] + (["--gil"] if gil_only else [])
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=5.0, help="measured seconds per endpoint and target")
    ap.add_argument("--concurrency", type=int, default=16, help="concurrent keep-alive clients")
    ap.add_argument("--profile", choices=ENDPOINTS, help="record the service with py-spy while this endpoint runs")
    ap.add_argument(
        "--profile-out",
        default="/tmp/cloudplane-profile.speedscope.json",
        help="py-spy output; .svg gives a flame graph, .txt collapsed stacks, else speedscope JSON",
    )
    # One worker is bound by the GIL: sampling only its holder shows where the CPU goes, rather than the
    # threads queued for the GIL or for a SQLite lock.
    ap.add_argument("--profile-gil", action="store_true", help="sample only the thread holding the GIL")
    ap.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a CLOUDPLANE_NAME=VALUE setting for the service (repeatable), e.g. --setting LOG_LEVEL=WARNING",
    )
    ap.add_argument("--serve-bare", metavar="FILE", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.serve_bare:
        serve_bare(args.serve_bare, args.port)
        return 0

    # SIGTERM must unwind through the finally below like Ctrl-C does, or the children outlive the bench.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    children: list[Child] = []
    tmp = tempfile.mkdtemp(prefix="cloudplane-bench-")
    try:
        env = (
            clean_env()
            | {
                "CLOUDPLANE_DATABASE_URL": f"sqlite:///{tmp}/cloudplane.sqlite",
                "CLOUDPLANE_SIMULATOR_TIME_SCALE": "0",
                # One API key drives thousands of requests a second: the free tier would refuse almost all.
                "CLOUDPLANE_RATE_LIMITS_ENABLED": "false",
            }
            | {f"CLOUDPLANE_{name.upper()}": value for name, _, value in (s.partition("=") for s in args.setting)}
        )
        svc_port = free_port()
        service = Child(
            "cloudplane", service_argv() + ["serve", "--host", HOST, "--port", str(svc_port)], cwd=tmp, env=env
        )
        children.append(service)
        try:
            wait_healthy(service, svc_port)
            if not service.key_seen.wait(10):
                raise StartupError(f"no API key (cp_...) in the service's output:\n{service.tail()}")
        except StartupError as e:
            print(f"error: the service failed to start: {e}", file=sys.stderr)
            return 1
        key = service.key
        assert key is not None

        ids, created = create_servers(svc_port, key)
        paths = {
            "listServers": ("GET", f"/api/servers?per_page={SERVER_COUNT}", 200),
            "getServer": ("GET", f"/api/servers/{ids[0]}", 200),
            "createServer": ("POST", "/api/servers", 201),
        }
        recorded = {"createServer": created}
        for name in ("listServers", "getServer"):
            method, path, expect = paths[name]
            recorded[name] = request(svc_port, method, path, key=key)
            if recorded[name][0] != expect:
                raise RuntimeError(f"{name} answered {recorded[name][0]}: {recorded[name][2][:300]!r}")
        responses_file = Path(tmp, "responses.json")
        responses_file.write_text(
            json.dumps(
                {
                    name: {"status": s, "content_type": ct, "body": base64.b64encode(b).decode()}
                    for name, (s, ct, b) in recorded.items()
                }
            )
        )

        bare_port = free_port()
        bare = Child(
            "bare",
            [sys.executable, os.path.abspath(__file__), "--serve-bare", str(responses_file), "--port", str(bare_port)],
            cwd=tmp,
            env=env,
        )
        children.append(bare)
        try:
            wait_healthy(bare, bare_port)
        except StartupError as e:
            print(f"error: the bare app failed to start: {e}", file=sys.stderr)
            return 1
        for name, (method, path, _) in paths.items():
            got = request(bare_port, method, path, key=key, body=CREATE_BODY if method == "POST" else None)
            if got != recorded[name]:
                print(f"warning: the bare app's {name} differs from the service's", file=sys.stderr)

        body = json.dumps(CREATE_BODY).encode()
        rows = []
        # createServer last: it adds thousands of servers, which would change what listServers returns.
        for name in ENDPOINTS:
            method, path, expect = paths[name]
            for target, port, child in (("cloudplane", svc_port, service), ("bare", bare_port, bare)):
                spy = None
                if args.profile == name and target == "cloudplane":
                    spy = start_profiler(service.proc.pid, args.profile_out, WARMUP_S + args.duration, args.profile_gil)
                cpu_before = child.cpu_seconds()
                res = run_load(
                    port,
                    raw_request(method, path, port, key, body if method == "POST" else b""),
                    expect,
                    concurrency=args.concurrency,
                    duration=args.duration,
                )
                cpu = child.cpu_seconds() - cpu_before
                if spy is not None:
                    _, err = spy.communicate(timeout=60)
                    print(
                        f"profile of {name}: {args.profile_out}"
                        if spy.returncode == 0
                        else f"warning: py-spy failed: {err.decode(errors='replace')[-500:]}",
                        file=sys.stderr,
                    )
                lat = sorted(res.latencies)
                rows.append(
                    (
                        name,
                        target,
                        len(lat) / args.duration,
                        percentile(lat, 0.50) * 1e3,
                        percentile(lat, 0.99) * 1e3,
                        cpu / res.answered * 1e6 if res.answered else float("nan"),
                        res.errors,
                        res.first_error,
                    )
                )

        cpus = len(os.sched_getaffinity(0))
        print(f"\nmachine: nproc={cpus}, python {sys.version.split()[0]}, {sys.platform}")
        print(
            f"settings: duration={args.duration:g}s (after {WARMUP_S:g}s warm-up), concurrency={args.concurrency}, "
            f"{SERVER_COUNT} running servers, SQLite, time scale 0, uvicorn 1 worker (its own access log off; "
            f"Cloudplane's JSON access log at the default INFO unless a --setting says otherwise), "
            f"service settings: {' '.join(args.setting) or 'defaults'}, "
            f"client: raw HTTP/1.1 keep-alive asyncio in one process\n"
        )
        # CPU µs/req: the target's own CPU time over the replies it gave; steadier than req/s, which moves with
        # whatever else holds the two cores (the load generator, the other target's idle threads).
        print(f"{'endpoint':<14}{'target':<12}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'CPU µs/req':>12}{'errors':>8}")
        for name, target, rps, p50, p99, cpu_us, errors, _ in rows:
            print(f"{name:<14}{target:<12}{rps:>10.0f}{p50:>10.2f}{p99:>10.2f}{cpu_us:>12.0f}{errors:>8}")
        print()
        for name in ENDPOINTS:
            svc, bare_rps = (r[2] for r in rows if r[0] == name)
            ratio = f"{svc / bare_rps:.1%}" if bare_rps else "n/a"
            svc_cpu, bare_cpu = (r[5] for r in rows if r[0] == name)
            print(
                f"ratio cloudplane/bare {name:<14}{ratio:>8}   CPU per request {svc_cpu / bare_cpu:>6.1f}x the bare app's"
            )
        for name, target, *_, errors, why in rows:
            if errors:
                print(f"first error, {name} on {target}: {why}")
        hwm = service.peak_rss_mib()
        print(f"\nservice peak memory (VmHWM): {hwm:.1f} MiB" if hwm is not None else "\nservice peak memory: n/a")
        return 0
    finally:
        for child in reversed(children):
            child.stop()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # the children are already stopped by main's finally
        print("interrupted", file=sys.stderr)
        sys.exit(130)

"""The write path against a peer: Cloudplane's createServer, deleteServer, stop/start and createSnapshot against
moto's EC2 RunInstances, TerminateInstances, StopInstances/StartInstances and CreateSnapshot, one after the other on
this machine, at 1 and at 16 clients; then how fast a burst of creates reaches `running` (time scale 0), and how
long 200 concurrent creates take to all run compared with one (time scale 1).

moto does almost nothing per call (an in-memory dict, an XML reply), so it is a fair floor for "a cloud API's
request": the figures that matter are the ratios, printed last."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from bench_letscloud import (
    HOST,
    Child,
    Result,
    StartupError,
    clean_env,
    free_port,
    percentile,
    request,
    service_argv,
    start_profiler,
    wait_healthy,
)
from bench_letscloud import (
    Conn as BaseConn,
)

WARMUP_S = 1.0
# (action, clients, output file): record the service with py-spy (GIL holder only) while that action runs.
PROFILE: tuple[str, int, str] | None = None


class Conn(BaseConn):
    """bench_letscloud's connection, remembering the last reply's head (to see `Connection: close`)."""

    last_head = b""

    def data_received(self, data: bytes) -> None:
        if self.need < 0:
            head = bytes(self.buf + data).split(b"\r\n\r\n", 1)[0].lower()
            self.last_head = head
            if head[9:12] in (b"204", b"304") and b"content-length" not in head:
                # No body, and uvicorn sends no Content-Length for one: say so, as the parser needs it.
                data = data.replace(b"\r\n\r\n", b"\r\ncontent-length: 0\r\n\r\n", 1)
        super().data_received(data)


CREATE_BODY = {"label": "bench", "plan_slug": "basic-1gb", "image_slug": "ubuntu-22-04", "location_slug": "nyc1"}
MOTO_AUTH = (
    "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20260101/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=0"
)
MOTO_AMI = "ami-12c6146b"  # one of moto's default images


def raw(method: str, path: str, port: int, headers: dict[str, str], body: bytes = b"") -> bytes:
    lines = [f"{method} {path} HTTP/1.1", f"Host: {HOST}:{port}", *(f"{k}: {v}" for k, v in headers.items())]
    if method in ("POST", "PUT", "DELETE"):
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def load(
    port: int, next_request: Callable[[], bytes], expect: set[int], *, concurrency: int, duration: float
) -> Result:
    """Like bench_letscloud.load, but each request is made by `next_request` (a path of its own per call)."""
    loop = asyncio.get_running_loop()
    result = Result()
    result.total = 0  # type: ignore[attr-defined]
    t_warm = time.perf_counter() + WARMUP_S
    t_end = t_warm + duration

    async def client() -> None:
        nonlocal t_end
        conn: Conn | None = None
        while (t0 := time.perf_counter()) < t_end:
            try:
                req = next_request()
            except StopIteration:  # every object of the pool was acted on: the window ends here
                t_end = min(t_end, t0)
                result.first_error = result.first_error or "pool exhausted: the window was cut short"
                break
            try:
                if conn is None:
                    _, conn = await loop.create_connection(Conn, HOST, port)
                status, body = await conn.roundtrip(req)
                result.total += 1  # type: ignore[attr-defined]
                ok, why = status in expect, f"HTTP {status}: {body[:200]!r}"
                if b"connection: close" in conn.last_head or conn.transport is None or conn.transport.is_closing():
                    # moto's server (werkzeug) closes every connection after one reply: connect again.
                    conn.transport.close()  # type: ignore[union-attr]
                    conn = None
            except OSError as e:
                conn, ok, why = None, False, f"{type(e).__name__}: {e}"
                await asyncio.sleep(0.01)
            t1 = time.perf_counter()
            if t0 >= t_warm and t1 <= t_end:
                if ok:
                    result.latencies.append(t1 - t0)
                else:
                    result.errors += 1
                    result.first_error = result.first_error or why

    await asyncio.wait_for(asyncio.gather(*(client() for _ in range(concurrency))), WARMUP_S + duration + 60)
    result.window_s = max(1e-9, min(t_end, time.perf_counter()) - t_warm)  # type: ignore[attr-defined]
    return result


def run(coro):  # type: ignore[no-untyped-def]
    try:
        import uvloop

        return uvloop.run(coro)
    except ImportError:
        return asyncio.run(coro)


# moto


def moto_call(port: int, action: str, **params: str) -> str:
    form = "&".join([f"Action={action}", "Version=2016-11-15", *(f"{k}={v}" for k, v in params.items())])
    conn_status, _, body = request_form(port, form)
    if conn_status != 200:
        raise RuntimeError(f"moto {action}: HTTP {conn_status}: {body[:300]!r}")
    return body.decode()


def request_form(port: int, form: str) -> tuple[int, str, bytes]:
    import http.client

    conn = http.client.HTTPConnection(HOST, port, timeout=30)
    try:
        conn.request(
            "POST",
            "/",
            body=form.encode(),
            headers={"Authorization": MOTO_AUTH, "Content-Type": "application/x-www-form-urlencoded"},
        )
        resp = conn.getresponse()
        return resp.status, resp.getheader("content-type", ""), resp.read()
    finally:
        conn.close()


def moto_raw(port: int, action: str, **params: str) -> bytes:
    form = "&".join([f"Action={action}", "Version=2016-11-15", *(f"{k}={v}" for k, v in params.items())]).encode()
    headers = {"Authorization": MOTO_AUTH, "Content-Type": "application/x-www-form-urlencoded"}
    return raw("POST", "/", port, headers, form)


def moto_instances(port: int, count: int, *, stopped: bool = False) -> tuple[list[str], list[str]]:
    """`count` new instances (running, or stopped) and their root volumes."""
    instances: list[str] = []
    while len(instances) < count:
        n = min(100, count - len(instances))
        body = moto_call(port, "RunInstances", ImageId=MOTO_AMI, MinCount=str(n), MaxCount=str(n))
        made = re.findall(r"<instanceId>(i-[0-9a-f]+)</instanceId>", body)
        if stopped:
            moto_call(port, "StopInstances", **{f"InstanceId.{i + 1}": made[i] for i in range(len(made))})
        instances += made
    volumes = []
    for i in range(0, len(instances), 100):
        chunk = instances[i : i + 100]
        body = moto_call(
            port,
            "DescribeVolumes",
            **{"Filter.1.Name": "attachment.instance-id"},
            **{f"Filter.1.Value.{j + 1}": chunk[j] for j in range(len(chunk))},
        )
        volumes += re.findall(r"<volumeId>(vol-[0-9a-f]+)</volumeId>", body)
    return instances, volumes


# Cloudplane


def cp_headers(key: str, json_body: bool = False) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {key}"}
    if json_body:
        headers["Content-Type"] = "application/json"
    return headers


def cp_each(port: int, key: str, requests: list[bytes], expect: set[int], *, concurrency: int = 16) -> list[bytes]:
    """Send these requests over `concurrency` keep-alive connections; their reply bodies, in order."""
    replies: list[bytes] = [b""] * len(requests)
    queue = iter(enumerate(requests))

    async def send_all() -> None:
        loop = asyncio.get_running_loop()

        async def client() -> None:
            _, conn = await loop.create_connection(Conn, HOST, port)
            for i, req in queue:
                status, reply = await conn.roundtrip(req)
                assert status in expect, reply[:300]
                replies[i] = reply
            conn.transport.close()  # type: ignore[union-attr]

        await asyncio.gather(*(client() for _ in range(min(concurrency, len(requests)) or 1)))

    run(send_all())
    return replies


def cp_servers(port: int, key: str, count: int, *, concurrency: int = 16, status: str = "running") -> list[int]:
    """`count` new servers, made concurrently, each running (or, with status="stopped", stopped)."""
    create = raw("POST", "/api/servers", port, cp_headers(key, True), json.dumps(CREATE_BODY).encode())
    ids = [json.loads(r)["id"] for r in cp_each(port, key, [create] * count, {201}, concurrency=concurrency)]
    wait_state(port, key, ids, "running")
    if status == "stopped":
        cp_each(port, key, [raw("POST", f"/api/servers/{i}/stop", port, cp_headers(key)) for i in ids], {200})
        wait_state(port, key, ids, "stopped")
    return ids


def wait_state(port: int, key: str, ids: list[int], status: str, timeout: float = 300) -> float:
    """Seconds until every one of these servers is `status` with no task running (polling the list)."""
    started = time.monotonic()
    left = set(ids)
    while left:
        if time.monotonic() - started > timeout:
            raise RuntimeError(f"{len(left)} servers not {status} after {timeout}s")
        page = 1
        seen: dict[int, str] = {}
        while True:
            code, _, body = request(port, "GET", f"/api/servers?per_page=100&page={page}", key=key)
            assert code == 200, body[:300]
            data = json.loads(body)
            for s in data["servers"]:
                seen[s["id"]] = "busy" if s["task_state"] else s["status"]
            if page * 100 >= data["total"]:
                break
            page += 1
        left = {i for i in left if seen.get(i, "gone") != status}
        if left:
            time.sleep(0.05)
    return time.monotonic() - started


@contextlib.contextmanager
def scratch_postgres(url: str | None) -> Iterator[str | None]:
    if not url:
        yield None
        return
    from sqlalchemy import create_engine, text

    name = f"cloudplane_bench_{uuid.uuid4().hex[:8]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield url.rsplit("/", 1)[0] + "/" + name
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


class Service:
    """A `cloudplane serve` of the bench's own, on a fresh database."""

    def __init__(self, tmp: str, database_url: str | None, settings: dict[str, str]) -> None:
        self.port = free_port()
        env = (
            clean_env()
            | {
                "CLOUDPLANE_DATABASE_URL": database_url or f"sqlite:///{tmp}/cloudplane-{self.port}.sqlite",
                "CLOUDPLANE_RATE_LIMITS_ENABLED": "false",
                "CLOUDPLANE_RECONCILE_INTERVAL_S": "0",
            }
            | {f"CLOUDPLANE_{k.upper()}": v for k, v in settings.items()}
        )
        self.child = Child(
            "cloudplane", service_argv() + ["serve", "--host", HOST, "--port", str(self.port)], cwd=tmp, env=env
        )
        wait_healthy(self.child, self.port)
        if not self.child.key_seen.wait(10):
            raise StartupError(f"no API key in the service's output:\n{self.child.tail()}")
        assert self.child.key is not None
        self.key: str = self.child.key

    def stop(self) -> None:
        self.child.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU time a process has used (and its waited-for children, none here), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    rows: list[tuple[str, str, int, float, float, float, float, int, str]],
    name: str,
    target: str,
    pid: int,
    port: int,
    next_request: Callable[[], bytes],
    expect: set[int],
    concurrency: int,
    duration: float,
) -> None:
    """One load run; the server's CPU time per answered request too: a machine shared with other work changes
    the throughput of both targets, much less what each request costs."""
    spy = None
    if PROFILE is not None and PROFILE[:2] == (name, concurrency) and target == "cloudplane":
        spy = start_profiler(pid, PROFILE[2], WARMUP_S + duration, gil_only=True)
    cpu_before = cpu_seconds(pid)
    res = run(load(port, next_request, expect, concurrency=concurrency, duration=duration))
    if spy is not None:
        spy.wait(60)
        print(f"profile of {name} at c={concurrency}: {PROFILE[2]}", file=sys.stderr)  # type: ignore[index]
    cpu_ms = (cpu_seconds(pid) - cpu_before) * 1000 / max(1, res.total)  # type: ignore[attr-defined]
    lat = sorted(res.latencies)
    window = res.window_s  # type: ignore[attr-defined]
    rows.append(
        (
            name,
            target,
            concurrency,
            len(lat) / window,
            percentile(lat, 0.5) * 1e3,
            percentile(lat, 0.99) * 1e3,
            cpu_ms,
            res.errors,
            res.first_error,
        )
    )
    print(f"  {name:<10}{target:<12}c={concurrency:<3}{len(lat) / window:>8.0f} req/s", file=sys.stderr)


def peer_comparison(tmp: str, database_url: str | None, duration: float, clients: list[int]) -> list[tuple]:
    rows: list[tuple] = []
    moto_port = free_port()
    moto_server = shutil.which("moto_server") or str(Path(sys.executable).with_name("moto_server"))
    if not Path(moto_server).exists():
        raise StartupError("moto_server not found: pip install -e '.[bench]'")
    moto = Child("moto", [moto_server, "-H", HOST, "-p", str(moto_port)], cwd=tmp, env=clean_env())
    service = Service(tmp, database_url, {"simulator_time_scale": "0"})
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                moto_call(moto_port, "DescribeRegions")
                break
            except (OSError, RuntimeError):
                if time.monotonic() > deadline:
                    raise StartupError(f"moto did not start:\n{moto.tail()}") from None
                time.sleep(0.1)
        cp, key = service.port, service.key
        create = json.dumps(CREATE_BODY).encode()
        snap = json.dumps({"label": "bench"}).encode()
        for c in clients:
            # Each action acts on objects of its own, each once: enough of them for the run.
            pool = max(200, int(duration * 500))
            measure(
                rows,
                "create",
                "cloudplane",
                service.child.proc.pid,
                cp,
                lambda: raw("POST", "/api/servers", cp, cp_headers(key, True), create),
                {201},
                c,
                duration,
            )
            measure(
                rows,
                "create",
                "moto",
                moto.proc.pid,
                moto_port,
                lambda: moto_raw(moto_port, "RunInstances", ImageId=MOTO_AMI, MinCount="1", MaxCount="1"),
                {200},
                c,
                duration,
            )
            for name, cp_make, moto_action, stopped in (
                ("stop", lambda i: raw("POST", f"/api/servers/{i}/stop", cp, cp_headers(key)), "StopInstances", False),
                (
                    "start",
                    lambda i: raw("POST", f"/api/servers/{i}/start", cp, cp_headers(key)),
                    "StartInstances",
                    True,
                ),
                (
                    "snapshot",
                    lambda i: raw("POST", f"/api/servers/{i}/snapshots", cp, cp_headers(key, True), snap),
                    "CreateSnapshot",
                    False,
                ),
                (
                    "delete",
                    lambda i: raw("DELETE", f"/api/servers/{i}", cp, cp_headers(key)),
                    "TerminateInstances",
                    False,
                ),
            ):
                ids = iter(cp_servers(cp, key, pool, status="stopped" if stopped else "running"))
                measure(
                    rows,
                    name,
                    "cloudplane",
                    service.child.proc.pid,
                    cp,
                    lambda m=cp_make, ids=ids: m(next(ids)),
                    {200, 201, 204},
                    c,
                    duration,
                )
                instances, volumes = moto_instances(moto_port, pool, stopped=stopped)
                targets = iter(volumes if moto_action == "CreateSnapshot" else instances)
                param = "VolumeId" if moto_action == "CreateSnapshot" else "InstanceId.1"
                measure(
                    rows,
                    name,
                    "moto",
                    moto.proc.pid,
                    moto_port,
                    lambda a=moto_action, p=param, t=targets: moto_raw(moto_port, a, **{p: str(next(t))}),
                    {200},
                    c,
                    duration,
                )
    finally:
        service.stop()
        moto.stop()
    return rows


def database_backends(database_url: str | None) -> list[int]:
    """The process ids of the PostgreSQL backends serving this database (none for SQLite, which runs in the
    service's own process)."""
    if not database_url:
        return []
    from sqlalchemy import create_engine, text

    admin = create_engine(database_url.rsplit("/", 1)[0] + "/postgres", isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            name = database_url.rsplit("/", 1)[1]
            return list(conn.scalars(text("SELECT pid FROM pg_stat_activity WHERE datname = :n"), {"n": name}))
    finally:
        admin.dispose()


def cpu_of(pids: list[int]) -> dict[int, float]:
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            found[pid] = cpu_seconds(pid)
    return found


@dataclass
class Burst:
    took: float
    rate: float
    service_cpu_ms: float  # per create, the service's process
    database_cpu_ms: float  # per create, PostgreSQL's backends for it (0 on SQLite)


def burst(tmp: str, database_url: str | None, count: int) -> Burst:
    """`count` creates from 16 clients at time scale 0: seconds from the first request to the last server running,
    servers per second, and the CPU time each create cost the service and the database. On a machine that is busy
    with other work the rate falls but the CPU per create holds: compare versions by it."""
    service = Service(tmp, database_url, {"simulator_time_scale": "0"})
    try:
        spy = None
        if PROFILE is not None and PROFILE[0] == "burst":
            spy = start_profiler(service.child.proc.pid, PROFILE[2], 600, gil_only=True)
            time.sleep(1)  # py-spy attaches
        before = cpu_of([service.child.proc.pid, *database_backends(database_url)])
        started = time.monotonic()
        ids = cp_servers(service.port, service.key, count)
        took = time.monotonic() - started
        after = cpu_of([service.child.proc.pid, *database_backends(database_url)])
        if spy is not None:
            spy.send_signal(signal.SIGINT)  # py-spy writes what it recorded and exits
            spy.wait()
            print(f"profile of the burst: {PROFILE[2]}", file=sys.stderr)  # type: ignore[index]
        assert len(ids) == count
    finally:
        service.stop()
    service_cpu = after.pop(service.child.proc.pid) - before.pop(service.child.proc.pid)
    database_cpu = sum(cpu - before.get(pid, 0.0) for pid, cpu in after.items())
    return Burst(took, count / took, service_cpu / count * 1000, database_cpu / count * 1000)


def concurrent_provisioning(tmp: str, database_url: str | None, count: int) -> tuple[float, float]:
    """At time scale 1 (a create provisions for ~6 s): one create's seconds to running, then `count` at once."""
    service = Service(tmp, database_url, {"simulator_time_scale": "1"})
    try:
        one_started = time.monotonic()
        cp_servers(service.port, service.key, 1, concurrency=1)
        one = time.monotonic() - one_started
        many_started = time.monotonic()
        cp_servers(service.port, service.key, count, concurrency=min(count, 50))
        many = time.monotonic() - many_started
    finally:
        service.stop()
    return one, many


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=3.0, help="measured seconds per action, target and clients")
    ap.add_argument("--clients", default="1,16", help="comma-separated client counts")
    ap.add_argument("--burst", type=int, default=500, help="creates in the time-scale-0 burst")
    ap.add_argument("--concurrent", type=int, default=200, help="concurrent creates at time scale 1")
    ap.add_argument("--database-url", help="a PostgreSQL URL to run on (a scratch database is made beside it)")
    ap.add_argument("--only", choices=["peer", "burst", "concurrent"], action="append", help="run only these parts")
    ap.add_argument(
        "--profile",
        metavar="ACTION:CLIENTS:FILE",
        help="record the service with py-spy while it runs ACTION at CLIENTS (e.g. snapshot:1:/tmp/snap.txt, "
        "or burst:16:/tmp/burst.txt for the burst; "
        ".txt gives collapsed stacks, .svg a flame graph)",
    )
    args = ap.parse_args()
    if args.profile:
        global PROFILE
        action, clients, out = args.profile.split(":", 2)
        PROFILE = (action, int(clients), out)
    parts = args.only or ["peer", "burst", "concurrent"]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.mkdtemp(prefix="cloudplane-bench-writes-")
    try:
        lines = []
        db_name = "PostgreSQL" if args.database_url else "SQLite"
        if "peer" in parts:
            with scratch_postgres(args.database_url) as url:
                rows = peer_comparison(tmp, url, args.duration, [int(c) for c in args.clients.split(",")])
            lines.append(
                f"{'action':<10}{'target':<12}{'clients':>8}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}"
                f"{'cpu ms/req':>12}{'errors':>8}"
            )
            for name, target, c, rps, p50, p99, cpu_ms, errors, _ in rows:
                lines.append(f"{name:<10}{target:<12}{c:>8}{rps:>9.0f}{p50:>9.2f}{p99:>9.2f}{cpu_ms:>12.2f}{errors:>8}")
            lines.append("")
            for name in ("create", "stop", "start", "snapshot", "delete"):
                for c in sorted({r[2] for r in rows}):
                    ours = next((r[3] for r in rows if r[:3] == (name, "cloudplane", c)), 0)
                    peer = next((r[3] for r in rows if r[:3] == (name, "moto", c)), 0)
                    cpu_ours = next((r[6] for r in rows if r[:3] == (name, "cloudplane", c)), 0)
                    cpu_peer = next((r[6] for r in rows if r[:3] == (name, "moto", c)), 0)
                    lines.append(
                        f"ratio cloudplane/moto {name:<9} c={c:<3} throughput "
                        f"{ours / peer if peer else float('nan'):>6.2f}x   CPU per request (moto/ours) "
                        f"{cpu_peer / cpu_ours if cpu_ours else float('nan'):>5.2f}x"
                    )
            for name, target, c, *_, errors, why in rows:
                if errors:
                    lines.append(f"first error, {name} on {target} c={c}: {why}")
        if "burst" in parts:
            with scratch_postgres(args.database_url) as url:
                b = burst(tmp, url, args.burst)
            lines.append(
                f"\nburst: {args.burst} creates (16 clients, time scale 0) all running in {b.took:.2f} s: "
                f"{b.rate:.0f} servers/s; CPU per create: service {b.service_cpu_ms:.2f} ms, "
                f"database {b.database_cpu_ms:.2f} ms"
            )
        if "concurrent" in parts:
            with scratch_postgres(args.database_url) as url:
                one, many = concurrent_provisioning(tmp, url, args.concurrent)
            lines.append(
                f"concurrent: one create running after {one:.2f} s; {args.concurrent} concurrent creates all running "
                f"after {many:.2f} s: {many / one:.2f}x one create (time scale 1)"
            )
        print(f"\nmachine: nproc={len(os.sched_getaffinity(0))}, python {sys.version.split()[0]}; database: {db_name}")
        print("\n".join(lines))
        return 0
    except StartupError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

"""The scale bench: every list at its first, middle and last page, getServer, start-up, memory and the reconciler's
longest stall, at N servers against one.

N running catalog servers of the bootstrap admin's account (default 100k) are written straight into the databases
as the API leaves them (bench/seeding.py: each with its succeeded create operation, its two events and its
simulator machine), and with them enough rows that every list has a real last page: --rows-per-list SSH keys,
users (each with an account of its own), snapshots of one server (a seeded user's, so that the admin's server
lists do not carry them), apps (the enterprise tier's 1000 for the admin, whose tier is raised through the API;
the rest 3 to a user, the free tier's quota) and --gpu-instances GPU instances rented from the simulated
marketplace, plus --api-keys API keys of the admin's. A second database gets one of each.

A real `cloudplane serve` runs on each, started --startups times in turn (time to healthy, RSS). On the large one,
keep-alive clients first ask getServer until a reconciler pass has run (CLOUDPLANE_RECONCILE_INTERVAL_S=--interval)
and bench_reconciler's report says what it cost; then every list is read at its first, middle and last page by its
own paging (and through a cursor too if its route takes one), and getServer, each for --duration seconds (longer for
a slow page, so that it gets at least ~10 requests); the small one gets the first pages. Printed: p50/p99 and req/s
per page, start-up at N against 1, RSS after start-up and peak after the load, the reconciler's longest stall.

    .venv/bin/python bench/bench_scale.py [--servers 100000] [--rows-per-list N] [--duration 2]
    .venv/bin/python bench/bench_scale.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/scratch

A PostgreSQL database given with --database-url is wiped first; the one-server database is made beside it and
dropped afterwards, unless --small-database-url names one (wiped first too). Figures only: it exits non-zero when the service cannot start, never on a timing.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import signal
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from bench_letscloud import (
    HOST,
    WARMUP_S,
    Child,
    StartupError,
    clean_env,
    free_port,
    percentile,
    raw_request,
    request,
    run_load,
    service_argv,
    wait_healthy,
)
from bench_reconciler import Phase, RssSampler, metric_values, report, rss_mib
from bench_writes import scratch_postgres
from seeding import Seeder, timed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for the suite's database reset

from tests.conftest import reset_postgres

from cloudplane.domain.tiers import QUOTAS

PER_PAGE = 20  # every paged route's default
ADMIN_TIER = "enterprise"
# Query parameters a route may take a cursor in, and where a reply may carry the next page's cursor.
CURSOR_PARAMS = ("cursor", "after", "starting_after", "page_token")
CURSOR_FIELDS = ("next_cursor", "cursor", "next_after", "after", "next_page_token")
CHECKED = "cloudplane_reconciler_servers_checked_total"
PASSES = "cloudplane_reconciler_pass_duration_seconds_count"


@dataclass(frozen=True)
class ListRoute:
    """A list as a client reads it: its path (with the fixed query it is read with), how it pages, and whose."""

    name: str
    path: str
    page_param: str | None = "page"  # None: the route has no paging; its one reply is its only page
    size_param: str | None = "limit"
    owner: bool = False  # read with the snapshot owner's key rather than the admin's

    def url(self, page: int | None = None, *, cursor: tuple[str, str] | None = None) -> str:
        query = [self.path.partition("?")[2]] if "?" in self.path else []
        if self.size_param:
            query.append(f"{self.size_param}={PER_PAGE}")
        if page is not None and self.page_param:
            query.append(f"{self.page_param}={page}")
        if cursor is not None:
            query.append(f"{cursor[0]}={quote(cursor[1])}")
        base = self.path.partition("?")[0]
        return f"{base}?{'&'.join(q for q in query if q)}" if query else base


def routes(snapshot_server: int) -> list[ListRoute]:
    return [
        ListRoute("listServers", "/api/servers", size_param="per_page"),
        ListRoute("vps (created_at desc)", "/api/v1/vps"),
        ListRoute("vps (name asc)", "/api/v1/vps?sort=name&order=asc"),
        ListRoute("vps (status desc)", "/api/v1/vps?sort=status"),
        ListRoute("operations", "/api/v1/operations"),
        ListRoute("audit-logs", "/api/v1/admin/audit-logs"),
        ListRoute("gpu instances", "/api/v1/instances", page_param=None, size_param=None),
        ListRoute("ssh-keys", "/api/ssh-keys", size_param="per_page"),
        ListRoute("snapshots", f"/api/servers/{snapshot_server}/snapshots", size_param="per_page", owner=True),
        ListRoute("apps", "/api/v1/apps"),
        ListRoute("admin users", "/api/v1/admin/users", size_param="per_page"),
        ListRoute("api-keys", "/api/v1/api-keys", page_param=None, size_param=None),
    ]


def items_and_total(body: Any) -> tuple[list[Any], int]:
    """The items of a list reply, whichever face's shape, and the total it reports (its length when none)."""
    items = next((v for v in body.values() if isinstance(v, list)), []) if isinstance(body, dict) else []
    total = body.get("total") if isinstance(body, dict) else None
    if total is None and isinstance(body, dict) and isinstance(body.get("pagination"), dict):
        total = body["pagination"].get("total")
    return items, int(total) if total is not None else len(items)


def next_cursor(body: Any) -> str | None:
    """The next page's cursor a reply carries, at its top level or in its pagination, if any."""
    for holder in (body, body.get("pagination") if isinstance(body, dict) else None):
        if isinstance(holder, dict):
            for name in CURSOR_FIELDS:
                if isinstance(holder.get(name), str | int) and not isinstance(holder.get(name), bool):
                    return str(holder[name])
    return None


@dataclass
class Prepared:
    """A seeded database."""

    url: str
    key: str  # the admin's
    owner_key: str  # the snapshot server's owner's
    get_server: int
    snapshot_server: int
    counts: dict[str, int] = field(default_factory=dict)
    parts: dict[str, float] = field(default_factory=dict)  # seconds each part of the seeding took


def prepare(url: str, tmp: str, env: dict[str, str], port: int, args: Any, servers: int, rows: int) -> Prepared:
    """Migrate and bootstrap with a first start, raise the admin's tier through the API, then seed."""
    parts: dict[str, float] = {}
    argv = service_argv() + ["serve", "--host", HOST, "--port", str(port)]
    setup = Child(
        "setup", argv, cwd=tmp, env=env | {"CLOUDPLANE_DATABASE_URL": url, "CLOUDPLANE_RECONCILE_INTERVAL_S": "0"}
    )
    try:
        timed(parts, "first start (migrations, catalog)", lambda: wait_healthy(setup, port, timeout=120))
        if not setup.key_seen.wait(10):
            raise StartupError(f"no API key (cp_...) in the service's output:\n{setup.tail()}")
        key = setup.key
        assert key is not None
        status, _, body = request(port, "GET", "/api/v1/users/profile", key=key)
        if status != 200:
            raise StartupError(f"the admin's profile answered {status}: {body[:300]!r}")
        admin_id = json.loads(body)["data"]["id"]
        status, _, body = request(
            port, "PUT", f"/api/v1/admin/users/{admin_id}/tier", key=key, body={"tier": ADMIN_TIER}
        )
        if status != 200:
            raise StartupError(f"raising the admin's tier answered {status}: {body[:300]!r}")
    finally:
        setup.stop()

    gpu = min(args.gpu_instances, rows)
    admin_apps = min(rows, QUOTAS[ADMIN_TIER].max_apps)
    per_user = QUOTAS["free"].max_apps
    seeder = Seeder(url)
    try:
        first = timed(parts, "catalog servers", lambda: seeder.servers(servers))
        timed(parts, "GPU instances", lambda: seeder.gpu_instances(gpu))
        users = timed(parts, "users", lambda: seeder.users(rows))
        owner_user, owner_account = users[0]

        def snapshots() -> tuple[int, str]:
            server = seeder.servers(1, account_id=owner_account, actor=owner_user)
            seeder.snapshots(server, rows, account_id=owner_account, actor=owner_user)
            return server, seeder.api_keys(owner_user, owner_account, 1)

        snapshot_server, owner_key = timed(parts, "snapshots", snapshots)
        timed(parts, "SSH keys", lambda: seeder.ssh_keys(rows))
        others = rows - admin_apps
        owners = [(seeder.admin_user, seeder.admin_account, admin_apps)] + [
            (u, a, min(per_user, others - n * per_user))
            for n, (u, a) in enumerate(users[: math.ceil(others / per_user)])
        ]
        timed(parts, "apps", lambda: seeder.apps(owners))
        api_keys = min(args.api_keys, rows)
        if api_keys:
            timed(parts, "API keys", lambda: seeder.api_keys(seeder.admin_user, seeder.admin_account, api_keys))
        timed(parts, "ANALYZE (and VACUUM on PostgreSQL)", seeder.finish)
    finally:
        seeder.dispose()
    counts = {
        "servers in all": servers + gpu + 1,
        "catalog servers": servers,
        "GPU instances": gpu,
        "users": rows + 1,
        "snapshots": rows,
        "SSH keys": rows,
        "apps": rows,
        "admin's apps": admin_apps,
        "admin's API keys": api_keys + 1,
    }
    return Prepared(url, key, owner_key, first + servers // 2, snapshot_server, counts, parts)


@dataclass
class Figure:
    """One window of load on one request."""

    name: str
    page: str
    latencies: list[float]
    seconds: float
    errors: int = 0
    first_error: str = ""
    note: str = ""
    stall: str = ""  # the event loop's longest lag in the window, as a histogram bucket

    def cells(self) -> str:
        lat = self.latencies
        p50, p99 = percentile(lat, 0.5) * 1e3, percentile(lat, 0.99) * 1e3
        rps = len(lat) / self.seconds if self.seconds else float("nan")
        note = self.note + (f" errors {self.errors} ({self.first_error})" if self.errors else "")
        return (
            f"{self.name:<24}{self.page:<16}{p50:>10.1f}{p99:>10.1f}{rps:>10.0f}{len(lat):>8}{self.stall:>12}  {note}"
        ).rstrip()


HEAD = f"{'list':<24}{'page':<16}{'p50 ms':>10}{'p99 ms':>10}{'req/s':>10}{'n':>8}{'loop lag':>12}  note"
LAG = "cloudplane_event_loop_lag_seconds"


def longest_lag(before: dict[str, float], after: dict[str, float]) -> str:
    """The bucket the event loop's longest lag between two scrapes of /metrics fell in ("<= 25 ms", "> 10 s")."""
    woke = after.get(f"{LAG}_count", 0.0) - before.get(f"{LAG}_count", 0.0)
    if not woke:
        return "n/a"
    bounds = sorted(
        float(name.split('"')[1]) for name in after if name.startswith(f"{LAG}_bucket") and "+Inf" not in name
    )
    for bound in bounds:
        name = f'{LAG}_bucket{{le="{bound}"}}'
        if after.get(name, 0.0) - before.get(name, 0.0) >= woke:
            return f"<= {bound * 1e3:g} ms" if bound < 1 else f"<= {bound:g} s"
    return f"> {bounds[-1]:g} s" if bounds else "n/a"


class Service:
    """A running `cloudplane serve` on a prepared database."""

    def __init__(self, name: str, prepared: Prepared, tmp: str, env: dict[str, str], port: int) -> None:
        self.prepared, self.port = prepared, port
        argv = service_argv() + ["serve", "--host", HOST, "--port", str(port)]
        started = time.monotonic()
        self.child = Child(name, argv, cwd=tmp, env=env | {"CLOUDPLANE_DATABASE_URL": prepared.url})
        try:
            wait_healthy(self.child, port, timeout=300, poll=0.01)  # start-up to within ~10 ms
            self.healthy_s = time.monotonic() - started
            status, _, body = self.get(f"/api/servers/{prepared.get_server}")
            if status != 200:
                raise StartupError(f"getServer of a seeded server answered {status}: {body[:300]!r}")
        except BaseException:
            self.child.stop()
            raise
        self.rss = rss_mib(self.child.proc.pid)

    def get(self, path: str, owner: bool = False, timeout: float = 300) -> tuple[int, str, bytes]:
        return request(
            self.port, "GET", path, key=self.prepared.owner_key if owner else self.prepared.key, timeout=timeout
        )

    def metrics(self) -> dict[str, float]:
        return metric_values(self.get("/metrics")[2].decode())

    def load(self, name: str, page: str, path: str, args: Any, *, owner: bool = False) -> Figure:
        """One request (it must answer 200, and a page meant to exist must not be empty) to see how slow it is,
        then the window: --duration seconds, or long enough for ~10 requests (at most --max-window)."""
        t = time.perf_counter()
        status, _, body = self.get(path, owner)
        probe_s = time.perf_counter() - t
        if status != 200:
            return Figure(name, page, [], 0.0, 1, f"HTTP {status}: {body[:200]!r}")
        duration = max(args.duration, min(args.max_window, 10 * probe_s))
        before = self.metrics()
        raw = raw_request("GET", path, self.port, self.prepared.owner_key if owner else self.prepared.key)
        result = run_load(self.port, raw, 200, concurrency=args.concurrency, duration=duration)
        after = self.metrics()
        passing = after.get(CHECKED, 0) != before.get(CHECKED, 0) or after.get(PASSES, 0) != before.get(PASSES, 0)
        return Figure(
            name,
            page,
            sorted(result.latencies),
            duration,
            result.errors,
            result.first_error,
            "reconciler pass during it" if passing else "",
            longest_lag(before, after),
        )

    def stop(self) -> None:
        self.child.stop()


def query_params(openapi: dict[str, Any], route: ListRoute) -> set[str]:
    path = route.path.partition("?")[0]
    for template, item in openapi.get("paths", {}).items():
        if template.count("/") == path.count("/") and all(
            a == b or a.startswith("{") for a, b in zip(template.split("/"), path.split("/"), strict=True)
        ):
            return {p["name"] for p in item.get("get", {}).get("parameters", []) if p.get("in") == "query"}
    return set()


def measure_lists(service: Service, args: Any, *, first_only: bool = False) -> tuple[list[Figure], list[str]]:
    """Every list at its first, middle and last page (by the page number, and by a cursor if the route takes one),
    and getServer; with the routes that take a cursor."""
    figures, cursors = [], []
    openapi = json.loads(service.get("/openapi.json")[2]) if not first_only else {}
    for route in routes(service.prepared.snapshot_server):
        status, _, body = service.get(route.url(1), route.owner)
        if status != 200:
            figures.append(Figure(route.name, "1", [], 0.0, 1, f"HTTP {status}: {body[:200]!r}"))
            continue
        items, total = items_and_total(json.loads(body))
        if route.page_param is None:
            figures.append(service.load(route.name, f"only ({len(items)})", route.url(), args, owner=route.owner))
            continue
        pages = max(1, math.ceil(total / PER_PAGE))
        wanted = [1] if first_only else list(dict.fromkeys([1, (pages + 1) // 2, pages]))
        for page in wanted:
            label = f"{page} of {pages}"
            figures.append(service.load(route.name, label, route.url(page), args, owner=route.owner))
        if first_only:
            continue
        cursor_params = sorted(query_params(openapi, route) & set(CURSOR_PARAMS))
        if not cursor_params:
            continue
        cursors.append(f"{route.name} ({', '.join(cursor_params)})")
        # The route's own cursor, read from the page before: the middle and the last page reached through it.
        for page in dict.fromkeys([(pages + 1) // 2, pages]):
            if page < 2:
                continue
            status, _, body = service.get(route.url(page - 1), route.owner)
            token = next_cursor(json.loads(body)) if status == 200 else None
            if token is None:
                figures.append(Figure(route.name, f"{cursor_params[0]}: {page}", [], 0.0, note="no cursor in replies"))
                continue
            path = route.url(cursor=(cursor_params[0], token))
            figures.append(service.load(route.name, f"{cursor_params[0]} -> {page}", path, args, owner=route.owner))
    server = service.prepared.get_server
    figures.append(service.load("getServer", f"id {server}", f"/api/servers/{server}", args))
    return figures, cursors


def reconciler_phase(service: Service, args: Any) -> tuple[Phase, float]:
    """getServer under load, in windows of a few seconds, until a reconciler pass has finished (at most
    --pass-timeout); the phase as bench_reconciler's report prints it, and its measured seconds."""
    phase = Phase("getServer while the first reconciler pass runs", args.interval, healthy_s=service.healthy_s)
    phase.rss_before = rss_mib(service.child.proc.pid)
    phase.at_start = service.metrics()
    sampler = RssSampler(service.child.proc.pid)
    sampler.start()
    raw = raw_request("GET", f"/api/servers/{service.prepared.get_server}", service.port, service.prepared.key)
    measured, deadline = 0.0, time.monotonic() + args.pass_timeout
    while True:
        result = run_load(service.port, raw, 200, concurrency=args.concurrency, duration=5.0)
        measured += 5.0
        phase.latencies += result.latencies
        phase.errors += result.errors
        phase.first_error = phase.first_error or result.first_error
        phase.at_end = service.metrics()
        if phase.at_end.get(PASSES, 0) >= 1 or time.monotonic() > deadline:
            break
    sampler.done.set()
    sampler.join()
    phase.latencies.sort()
    phase.rss_peak = max((v for _, v in sampler.samples), default=None)
    phase.rss_after, phase.hwm = rss_mib(service.child.proc.pid), rss_mib(service.child.proc.pid, "VmHWM")
    return phase, measured


@contextmanager
def databases(args: Any, tmp: str) -> Iterator[tuple[str, str]]:
    """The large database's URL and the small one's: files in `tmp`, or the PostgreSQL one given (wiped) and a
    scratch one made beside it."""
    if not args.database_url:
        yield f"sqlite:///{tmp}/large.sqlite", f"sqlite:///{tmp}/small.sqlite"
        return
    reset_postgres(args.database_url)
    if args.small_database_url:
        reset_postgres(args.small_database_url)
        yield args.database_url, args.small_database_url
        return
    with scratch_postgres(args.database_url) as small:
        assert small is not None
        yield args.database_url, small


def mib(value: float | None) -> str:
    return f"{value:.0f} MiB" if value is not None else "n/a"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", type=int, default=100_000, help="catalog servers of the admin's account")
    ap.add_argument(
        "--rows-per-list", type=int, help="SSH keys, users, snapshots and apps to seed (default: --servers)"
    )
    ap.add_argument(
        "--gpu-instances", type=int, default=1000, help="GPU instances (servers too), at most --rows-per-list"
    )
    ap.add_argument(
        "--api-keys",
        type=int,
        default=100,
        help="API keys of the admin's besides the bootstrap one, at most --rows-per-list",
    )
    ap.add_argument("--duration", type=float, default=2.0, help="seconds of load per page (after 1s warm-up)")
    ap.add_argument("--max-window", type=float, default=30.0, help="longest window a slow page is given")
    ap.add_argument("--concurrency", type=int, default=4, help="concurrent keep-alive clients")
    ap.add_argument("--interval", type=float, default=30.0, help="CLOUDPLANE_RECONCILE_INTERVAL_S of the service")
    ap.add_argument("--pass-timeout", type=float, default=600.0, help="longest wait for the first reconciler pass")
    ap.add_argument("--startups", type=int, default=5, help="starts of each service, in turn, for start-up times")
    ap.add_argument("--database-url", help="a scratch PostgreSQL database (wiped first); SQLite in a temp dir if unset")
    ap.add_argument(
        "--small-database-url", help="with --database-url: another scratch one for the 1-server runs (wiped first)"
    )
    args = ap.parse_args()
    rows = args.servers if args.rows_per_list is None else args.rows_per_list

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    began, load_before = time.monotonic(), os.getloadavg()
    tmp = tempfile.mkdtemp(prefix="cloudplane-bench-scale-")
    env = clean_env() | {
        "CLOUDPLANE_SIMULATOR_TIME_SCALE": "0",
        "CLOUDPLANE_RATE_LIMITS_ENABLED": "false",
        "CLOUDPLANE_LOG_LEVEL": "WARNING",
        "CLOUDPLANE_RECONCILE_INTERVAL_S": str(args.interval),
    }
    port = free_port()
    took: dict[str, float] = {}
    services: list[Service] = []
    try:
        with databases(args, tmp) as (large_url, small_url):
            small = timed(took, "seeding the 1-server database", lambda: prepare(small_url, tmp, env, port, args, 1, 1))
            large = timed(took, "seeding", lambda: prepare(large_url, tmp, env, port, args, args.servers, rows))

            def start(name: str, prepared: Prepared, keep: bool) -> Service:
                service = Service(name, prepared, tmp, env, port)
                if keep:
                    services.append(service)
                else:
                    service.stop()
                return service

            startups: dict[str, list[Service]] = {"1": [], "N": []}

            def start_ups() -> None:
                for n in range(args.startups):
                    last = n == args.startups - 1
                    startups["1"].append(start("small", small, keep=False))
                    startups["N"].append(start("large", large, keep=last))

            timed(took, "start-ups", start_ups)
            service = services[-1]
            phase, phase_s = timed(
                took, "getServer until a reconciler pass ran", lambda: reconciler_phase(service, args)
            )
            figures, cursors = timed(took, "lists at N", lambda: measure_lists(service, args))
            large_rss, large_hwm = rss_mib(service.child.proc.pid), rss_mib(service.child.proc.pid, "VmHWM")
            end = service.metrics()
            service.stop()
            services.clear()
            small_service = start("small", small, keep=True)
            small_figures, _ = timed(
                took, "first pages at 1", lambda: measure_lists(small_service, args, first_only=True)
            )
            small_rss = rss_mib(small_service.child.proc.pid)
            small_hwm = rss_mib(small_service.child.proc.pid, "VmHWM")
            small_service.stop()
            services.clear()
    except StartupError as e:
        print(f"error: the service failed to start: {e}", file=sys.stderr)
        return 1
    finally:
        for s in services:
            s.stop()
        shutil.rmtree(tmp, ignore_errors=True)

    kind = "PostgreSQL" if args.database_url else "SQLite"
    print(
        f"\nScale bench: N={args.servers} catalog servers, {kind}, nproc={len(os.sched_getaffinity(0))}, load average "
        f"{' '.join(f'{x:.2f}' for x in load_before)} at the start and {' '.join(f'{x:.2f}' for x in os.getloadavg())} "
        f"at the end; python {sys.version.split()[0]}"
    )
    print("seeded: " + ", ".join(f"{k} {v}" for k, v in large.counts.items()))
    print(
        f"each page: {args.concurrency} keep-alive clients for {args.duration:g}s after {WARMUP_S:g}s warm-up (a slow "
        f"page longer, up to {args.max_window:g}s), {PER_PAGE} per page; CLOUDPLANE_RECONCILE_INTERVAL_S={args.interval:g}"
    )
    print("took: " + ", ".join(f"{k} {v:.1f}s" for k, v in took.items()) + f"; in all {time.monotonic() - began:.0f}s")
    print("  seeding: " + ", ".join(f"{k} {v:.1f}s" for k, v in large.parts.items()))

    print(
        "cursors: "
        + (
            "; ".join(cursors)
            if cursors
            else f"no list route takes one (its /openapi.json query parameters: none of {', '.join(CURSOR_PARAMS)})"
        )
    )
    print(f"\n{HEAD}")
    for figure in figures:
        print(figure.cells())

    print(f"\nfirst pages with 1 server and 1 row per list\n{HEAD}")
    for figure in small_figures:
        print(figure.cells())

    at_1 = [s.healthy_s for s in startups["1"]]
    at_n = [s.healthy_s for s in startups["N"]]
    print(
        f"\nstart-up (process start to healthy), median of {args.startups}: at 1 server {statistics.median(at_1):.2f}s "
        f"({', '.join(f'{x:.2f}' for x in at_1)}), at N {statistics.median(at_n):.2f}s "
        f"({', '.join(f'{x:.2f}' for x in at_n)}); N/1 = {statistics.median(at_n) / statistics.median(at_1):.2f}"
    )
    print(
        f"RSS after start-up: at 1 {mib(statistics.median(s.rss or 0 for s in startups['1']))}, "
        f"at N {mib(statistics.median(s.rss or 0 for s in startups['N']))} (medians); after the load: at 1 "
        f"{mib(small_rss)} (peak VmHWM {mib(small_hwm)}), at N {mib(large_rss)} (peak VmHWM {mib(large_hwm)})"
    )
    report(phase, phase_s)
    print(
        "  over the whole run at N (the lists' own stalls included): longest event-loop stall "
        + (
            f"{end['cloudplane_event_loop_lag_max_seconds'] * 1e3:.1f} ms"
            if "cloudplane_event_loop_lag_max_seconds" in end
            else "n/a"
        )
        + f", reconciler passes finished {end.get(PASSES, 0):.0f}"
    )
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)

"""The reconciler at scale: does a pass over N servers hold up the requests of the process it runs in?

N running servers (default 100k) and their N simulator machines are written straight into the databases, as the
API's create leaves them (a server with its machine's ref and addresses, its succeeded create operation, a
running machine whose token is that operation's id), for the bootstrap admin's account. Then a real
`cloudplane serve` runs with a short CLOUDPLANE_RECONCILE_INTERVAL_S while keep-alive clients ask getServer for
one server, so several passes run under the load. Printed: getServer p50/p99/max, the longest event-loop stall
and the passes' cost from /metrics, and the service's RSS before the first pass and after the last.

    .venv/bin/python bench/bench_reconciler.py [--servers 100000] [--interval 10] [--duration 45]
    .venv/bin/python bench/bench_reconciler.py --database-url postgresql+psycopg://postgres@127.0.0.1:5432/scratch

A PostgreSQL database given with --database-url is wiped first (its public and dbos schemas): give a scratch one.
Figures only: it exits non-zero when the service cannot start, never on a timing.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench_letscloud import (
    HOST,
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
from prometheus_client.parser import text_string_to_metric_families
from seeding import seed

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # the repository, for the suite's database reset

from tests.conftest import reset_postgres


def rss_mib(pid: int, field: str = "VmRSS") -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class RssSampler(threading.Thread):
    """The service's RSS every `period` seconds, with when it was read."""

    def __init__(self, pid: int, period: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples: list[tuple[float, float]] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(self.period):
            value = rss_mib(self.pid)
            if value is not None:
                self.samples.append((time.monotonic(), value))


def metric_values(exposition: str) -> dict[str, float]:
    """Unlabelled samples, labelled ones summed over their labels, and histogram buckets as `name{le="..."}`."""
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(exposition):
        for sample in family.samples:
            name = sample.name
            if set(sample.labels) == {"le"}:
                name = f'{name}{{le="{sample.labels["le"]}"}}'
            values[name] = values.get(name, 0.0) + sample.value
    return values


def figure(values: dict[str, float], name: str, fmt: str = "{:.0f}", scale: float = 1.0, absent: str = "") -> str:
    """A metric's value; `absent` (or "n/a") when /metrics has no sample of it (a labelled counter never counted)."""
    return fmt.format(values[name] * scale) if name in values else absent or "n/a (not in /metrics)"


@dataclass
class Phase:
    """One run of the service under the getServer load, and what it showed."""

    name: str
    interval: float
    healthy_s: float = 0.0
    latencies: list[float] = field(default_factory=list)
    errors: int = 0
    first_error: str = ""
    at_start: dict[str, float] = field(default_factory=dict)
    at_end: dict[str, float] = field(default_factory=dict)
    rss_before: float | None = None
    rss_peak: float | None = None
    rss_after: float | None = None
    hwm: float | None = None


def measure(
    phase: Phase, argv: list[str], cwd: str, env: dict[str, str], port: int, key: str, server_id: int, args: Any
) -> None:
    service = Child(phase.name, argv, cwd=cwd, env=env | {"CLOUDPLANE_RECONCILE_INTERVAL_S": str(phase.interval)})
    try:
        started = time.monotonic()
        wait_healthy(service, port)
        phase.healthy_s = time.monotonic() - started
        status, _, body = request(port, "GET", f"/api/servers/{server_id}", key=key)
        if status != 200:
            raise StartupError(f"getServer of a seeded server answered {status}: {body[:300]!r}")
        phase.rss_before = rss_mib(service.proc.pid)
        phase.at_start = metric_values(request(port, "GET", "/metrics")[2].decode())
        sampler = RssSampler(service.proc.pid)
        sampler.start()
        raw = raw_request("GET", f"/api/servers/{server_id}", port, key)
        result = run_load(port, raw, 200, concurrency=args.concurrency, duration=args.duration)
        sampler.done.set()
        sampler.join()
        phase.at_end = metric_values(request(port, "GET", "/metrics")[2].decode())
        phase.latencies, phase.errors, phase.first_error = sorted(result.latencies), result.errors, result.first_error
        phase.rss_peak = max((v for _, v in sampler.samples), default=None)
        phase.rss_after, phase.hwm = rss_mib(service.proc.pid), rss_mib(service.proc.pid, "VmHWM")
    finally:
        service.stop()


def report(phase: Phase, duration: float) -> None:
    lat, start, end = phase.latencies, phase.at_start, phase.at_end
    print(f"\n{phase.name} (CLOUDPLANE_RECONCILE_INTERVAL_S={phase.interval:g}; healthy after {phase.healthy_s:.1f}s)")
    print(
        f"  getServer: {len(lat) / duration:.0f} req/s, p50 {percentile(lat, 0.5) * 1e3:.1f} ms, "
        f"p99 {percentile(lat, 0.99) * 1e3:.1f} ms, max {(lat[-1] if lat else float('nan')) * 1e3:.1f} ms, "
        f"errors {phase.errors}{f' (first: {phase.first_error})' if phase.errors else ''}"
    )
    print(
        "  longest event-loop stall (cloudplane_event_loop_lag_max_seconds): "
        + figure(end, "cloudplane_event_loop_lag_max_seconds", "{:.1f} ms", 1e3)
        + " (by the end of start-up: "
        + figure(start, "cloudplane_event_loop_lag_max_seconds", "{:.1f} ms", 1e3)
        + ")"
    )
    count = "cloudplane_event_loop_lag_seconds_count"
    if count in end:
        wakes = end[count] - start.get(count, 0.0)

        def later_than(seconds: str) -> str:
            name = f'cloudplane_event_loop_lag_seconds_bucket{{le="{seconds}"}}'
            return f"{wakes - (end.get(name, 0.0) - start.get(name, 0.0)):.0f}"

        print(
            f"  loop wake-ups under the load: {wakes:.0f}; later than 25 ms: {later_than('0.025')}, "
            f"50 ms: {later_than('0.05')}, 100 ms: {later_than('0.1')}"
        )
    passes = end.get("cloudplane_reconciler_pass_duration_seconds_count", 0.0)
    if passes:
        mean = end["cloudplane_reconciler_pass_duration_seconds_sum"] / passes
        print(
            f"  reconciler passes finished: {passes:.0f}, mean duration {mean:.2f}s; servers checked "
            + figure(end, "cloudplane_reconciler_servers_checked_total")
            + " (the pass under way included), repairs "
            + figure(end, "cloudplane_reconciler_repairs_total", absent="0")
            + ", orphans "
            + figure(end, "cloudplane_reconciler_orphans", absent="0")
            + ", provider failures "
            + figure(end, "cloudplane_reconciler_provider_failures_total", absent="0")
        )
    elif phase.interval:
        print("  reconciler passes finished: none (or no cloudplane_reconciler_* in /metrics)")

    def mib(value: float | None) -> str:
        return f"{value:.0f} MiB" if value is not None else "n/a"

    print(
        f"  RSS: {mib(phase.rss_before)} before the load (and any pass), {mib(phase.rss_peak)} at most during it, "
        f"{mib(phase.rss_after)} after it; peak (VmHWM) {mib(phase.hwm)}"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--servers", type=int, default=100_000, help="servers (and machines) to seed")
    ap.add_argument("--interval", type=float, default=10.0, help="CLOUDPLANE_RECONCILE_INTERVAL_S of the service")
    ap.add_argument("--duration", type=float, default=45.0, help="seconds of getServer load in each phase")
    ap.add_argument("--concurrency", type=int, default=8, help="concurrent keep-alive getServer clients")
    ap.add_argument("--database-url", help="a scratch PostgreSQL database (wiped first); SQLite in a temp dir if unset")
    ap.add_argument(
        "--no-control", action="store_true", help="skip the first phase (the same load with the reconciler off)"
    )
    args = ap.parse_args()

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    tmp = tempfile.mkdtemp(prefix="cloudplane-bench-reconciler-")
    database_url = args.database_url or f"sqlite:///{tmp}/cloudplane.sqlite"
    if database_url.startswith("postgresql"):
        reset_postgres(database_url)
    env = clean_env() | {
        "CLOUDPLANE_DATABASE_URL": database_url,
        "CLOUDPLANE_SIMULATOR_TIME_SCALE": "0",
        "CLOUDPLANE_RATE_LIMITS_ENABLED": "false",
        "CLOUDPLANE_LOG_LEVEL": "WARNING",
    }
    port = free_port()
    argv = service_argv() + ["serve", "--host", HOST, "--port", str(port)]
    phases = [] if args.no_control else [Phase("without the reconciler (control)", 0)]
    phases.append(Phase("with the reconciler", args.interval))
    try:
        # First start: migrate, seed the catalog, make the admin; no reconciler yet.
        setup = Child("setup", argv, cwd=tmp, env=env | {"CLOUDPLANE_RECONCILE_INTERVAL_S": "0"})
        try:
            wait_healthy(setup, port)
            if not setup.key_seen.wait(10):
                raise StartupError(f"no API key (cp_...) in the service's output:\n{setup.tail()}")
            key = setup.key
            assert key is not None
        finally:
            setup.stop()
        t = time.perf_counter()
        first = seed(database_url, args.servers)
        seeded_s = time.perf_counter() - t
        for phase in phases:
            measure(phase, argv, tmp, env, port, key, first, args)
    except StartupError as e:
        print(f"error: the service failed to start: {e}", file=sys.stderr)
        return 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    kind = "PostgreSQL" if database_url.startswith("postgresql") else "SQLite"
    print(
        f"\n{args.servers} servers and machines seeded in {seeded_s:.1f}s ({kind}); each phase: getServer of one "
        f"seeded server for {args.duration:g}s (after 1s warm-up) from {args.concurrency} keep-alive clients; "
        f"nproc={len(os.sched_getaffinity(0))}, load average {os.getloadavg()[0]:.2f} at the end (other work on "
        "the machine shows in both phases)"
    )
    for phase in phases:
        report(phase, args.duration)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)

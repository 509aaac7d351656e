"""How fast the LXC provider makes, boots and snapshots servers on this host (needs root and LXC).

Each step is timed over several containers of the busybox image; "boot" is from the create call until the
container's SSH port accepts connections. The baseline is the floor any container pays here: `unshare` creating
fresh PID, mount, network and UTS namespaces and running /bin/true, measured in the same run.

    sudo .venv/bin/python bench/bench_lxc.py --count 10
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from cloudplane.providers import lxc_host
from cloudplane.providers.base import CreateRequest
from cloudplane.providers.lxc import LxcConfig, LxcProvider


def wait_for_port(address: str, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            socket.create_connection((address, 22), timeout=0.2).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.005)


def baseline_ms(count: int) -> list[float]:
    times = []
    for _ in range(count):
        t = time.perf_counter()
        subprocess.run(["unshare", "--pid", "--fork", "--mount-proc", "--net", "--uts", "/bin/true"], check=True)
        times.append((time.perf_counter() - t) * 1000)
    return times


async def run(count: int) -> dict[str, list[float]]:
    work = Path(tempfile.mkdtemp(prefix="cloudplane-bench-lxc-"))
    network = lxc_host.Network.parse("cpbench0", "10.213.253.0/24")
    lxc_host.prepare_host(network, work / "lxc", work / "images")
    provider = LxcProvider(LxcConfig(work / "lxc", work / "images", network))
    steps: dict[str, list[float]] = {
        k: [] for k in ("create+boot", "snapshot (running)", "stop", "restore", "start+boot", "delete")
    }

    def timed(step: str, started: float) -> None:
        steps[step].append((time.perf_counter() - started) * 1000)

    try:
        for i in range(count):
            t = time.perf_counter()
            machine = await provider.create(
                CreateRequest(token=f"bench-{i}-{time.time_ns()}", name=f"b{i}", hostname=f"b{i}", cpu=1,
                              ram_mb=256, disk_gb=1, image="busybox", location="bench")
            )  # fmt: skip
            await asyncio.to_thread(wait_for_port, machine.public_ipv4)
            timed("create+boot", t)
            t = time.perf_counter()
            snapshot = await provider.snapshot(machine.ref, "s")
            timed("snapshot (running)", t)
            t = time.perf_counter()
            await provider.stop(machine.ref)
            timed("stop", t)
            t = time.perf_counter()
            await provider.restore(machine.ref, snapshot.ref)
            timed("restore", t)
            t = time.perf_counter()
            await provider.start(machine.ref)
            await asyncio.to_thread(wait_for_port, machine.public_ipv4)
            timed("start+boot", t)
            t = time.perf_counter()
            await provider.delete(machine.ref)
            timed("delete", t)
    finally:
        for machine in await provider.list():
            await provider.delete(machine.ref)
        lxc_host.remove_bridge("cpbench0")
        subprocess.run(["rm", "-rf", str(work)], check=False)
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--count", type=int, default=10)
    args = parser.parse_args()
    base = statistics.median(baseline_ms(args.count))
    steps = asyncio.run(run(args.count))
    print(f"baseline (unshare + /bin/true): median {base:.1f} ms")
    print(f"{'step':<20} {'median ms':>10} {'max ms':>10} {'x baseline':>11}")
    for step, times in steps.items():
        median = statistics.median(times)
        print(f"{step:<20} {median:>10.1f} {max(times):>10.1f} {median / base:>11.1f}")


if __name__ == "__main__":
    main()

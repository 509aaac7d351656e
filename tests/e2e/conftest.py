"""A real Cloudplane process on a free port, with its own database, that a test can SIGKILL and restart."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine, select

from tests.conftest import scratch_database

KEY_PATTERN = re.compile(r"cp_[A-Za-z0-9_-]+")
EXAMPLES = Path(__file__).parent / "examples"


def run_example(script: str, **env: str) -> str:
    """Run one of the documents' example programs in examples/ with these environment variables; its output."""
    run = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 0, run.stderr
    return run.stdout


CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@contextlib.contextmanager
def browser_page() -> Iterator[Any]:
    """A page in headless Chromium (Debian's, driven by Playwright), closed with its browser on the way out."""
    if not Path(CHROMIUM).exists():
        pytest.fail("Chromium not found: install Debian's `chromium` package (scripts/system-packages.txt)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        # As root (CI) Chromium's sandbox cannot start; the pages are our own.
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            yield browser.new_page()
        finally:
            browser.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServiceProcess:
    def __init__(self, workdir: Path, env: dict[str, str]) -> None:
        self.workdir = workdir
        self.env = env
        self.port = free_port()
        self.proc: subprocess.Popen[str] | None = None
        self.output: list[str] = []
        self.api_key: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 60.0) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "cloudplane", "serve", "--host", "127.0.0.1", "--port", str(self.port)],
            cwd=self.workdir,
            env=self.env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._drain, args=(self.proc,), daemon=True).start()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError("service exited:\n" + "".join(self.output[-50:]))
            try:
                if httpx.get(self.url + "/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        raise RuntimeError("service did not become healthy:\n" + "".join(self.output[-50:]))

    def _drain(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            self.output.append(line)
            if self.api_key is None and (m := KEY_PATTERN.search(line)):
                self.api_key = m.group(0)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()


@pytest.fixture
def e2e_database_url(tmp_path: Path) -> Iterator[str]:
    with scratch_database(tmp_path, "e2e") as url:
        yield url


@pytest.fixture
def service_factory(tmp_path: Path, e2e_database_url: str) -> Iterator:
    started: list[ServiceProcess] = []

    def make(**settings: str) -> ServiceProcess:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPLANE_")}
        env["CLOUDPLANE_DATABASE_URL"] = e2e_database_url
        env.update({f"CLOUDPLANE_{k.upper()}": v for k, v in settings.items()})
        service = ServiceProcess(tmp_path, env)
        started.append(service)
        return service

    yield make
    for service in started:
        service.stop()


def assert_provider_matches_database(database_url: str) -> None:
    """The simulator's inventory equals what the database says is live, and no operation is unfinished: every live
    server has exactly one machine (made with its create operation's token), every machine has its live server,
    every live snapshot has exactly one provider snapshot and none is orphaned. Read with the service stopped."""
    from cloudplane.config import Settings
    from cloudplane.db.tables import Operation, Server, Snapshot
    from cloudplane.providers.simulator import sim_machines, sim_snapshots

    settings = Settings(database_url=database_url)
    engine = create_engine(settings.database_url)
    try:
        with engine.connect() as conn:
            servers = conn.execute(select(Server.id, Server.provider_ref).where(Server.deleted_at.is_(None))).all()
            create_tokens = dict(
                conn.execute(select(Operation.server_id, Operation.id).where(Operation.kind == "create")).all()
            )
            snapshots = conn.execute(
                select(Snapshot.id, Snapshot.provider_ref).where(Snapshot.deleted_at.is_(None))
            ).all()
            unfinished = conn.execute(
                select(Operation.id, Operation.kind, Operation.status).where(
                    Operation.status.in_(["pending", "running"])
                )
            ).all()
    finally:
        engine.dispose()
    sim_engine = create_engine(settings.simulator_database_url)
    try:
        with sim_engine.connect() as conn:
            machines = conn.execute(select(sim_machines.c.id, sim_machines.c.token)).all()
            sim_snaps = conn.execute(select(sim_snapshots.c.id, sim_snapshots.c.machine_id)).all()
    finally:
        sim_engine.dispose()

    assert not unfinished, f"operations left unfinished: {unfinished}"
    machine_refs = {f"sim-{m.id}": m.token for m in machines}
    assert len({m.token for m in machines}) == len(machines), f"a machine made twice: {machines}"
    server_refs = [s.provider_ref for s in servers]
    assert None not in server_refs, f"a live server without its machine: {servers}"
    assert len(set(server_refs)) == len(server_refs), f"two servers on one machine: {servers}"
    assert set(server_refs) == set(machine_refs), f"servers {servers} != provider machines {machines}"
    for server in servers:
        assert machine_refs[server.provider_ref] == create_tokens.get(server.id), (server, machines)
    snapshot_refs = [s.provider_ref for s in snapshots]
    assert len(set(snapshot_refs)) == len(snapshot_refs), f"two snapshots on one provider snapshot: {snapshots}"
    assert set(snapshot_refs) == {f"simsnap-{s.id}" for s in sim_snaps}, f"{snapshots} != provider {sim_snaps}"

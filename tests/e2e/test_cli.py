"""The resource CLI as a user runs it: `cloudplane serve` in a process of its own (temp database, the simulator
slowed down enough to show progress), and `cloudplane login`, `server create --wait` (its progress bar in the
captured output), `server list --json`, `server delete --yes` ... each a process of its own."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import scratch_database
from tests.e2e.conftest import ServiceProcess
from tests.integration.test_letscloud_ssh_keys import ed25519_public_key

SERVER = ["--plan", "basic-1gb", "--image", "ubuntu-22-04", "--location", "nyc1"]


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServiceProcess]:
    workdir = tmp_path_factory.mktemp("cli")
    with scratch_database(workdir, "cli") as database_url:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPLANE_")}
        env.update(CLOUDPLANE_DATABASE_URL=database_url, CLOUDPLANE_SIMULATOR_TIME_SCALE="0.02")
        service = ServiceProcess(workdir, env)
        service.start()
        deadline = time.monotonic() + 10
        while service.api_key is None and time.monotonic() < deadline:  # the bootstrap key, read from its output
            time.sleep(0.05)
        assert service.api_key
        try:
            yield service
        finally:
            service.stop()


@pytest.fixture
def cli(tmp_path: Path) -> Any:
    """Run `cloudplane ARGS...` with its own config folder; the finished process."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDPLANE_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "config"), COLUMNS="160")

    def run(*args: str, ok: bool = True, stdin: str = "", **extra_env: str) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "cloudplane", *args],
            env={**env, **extra_env},
            input=stdin,
            capture_output=True,
            text=True,
            timeout=120,
        )
        if ok:
            assert done.returncode == 0, f"{args}: {done.stdout}\n{done.stderr}"
        return done

    run.config = tmp_path / "config" / "cloudplane" / "config.toml"  # type: ignore[attr-defined]
    return run


def test_login_create_wait_list_ssh_delete(service: ServiceProcess, cli: Any) -> None:
    logged = cli("login", "--url", service.url, "--token", service.api_key, "--profile", "e2e")
    assert "logged in" in logged.stdout
    assert stat.S_IMODE(cli.config.stat().st_mode) == 0o600
    assert service.api_key in cli.config.read_text()

    created = cli("server", "create", "--label", "cli web", *SERVER, "--wait")
    # The progress bar, as Rich leaves it when the operation ends: "create succeeded ━━━━ 100%".
    assert "create succeeded" in created.stderr and "━" in created.stderr and "100%" in created.stderr
    assert "running" in created.stdout and "root password (shown once)" in created.stdout

    listed = json.loads(cli("server", "list", "--json").stdout)
    (server,) = [s for s in listed if s["label"] == "cli web"]
    assert server["status"] == "running" and server["ip_address"]
    table = cli("server", "list").stdout
    assert "cli web" in table and "LABEL" in table

    shown = json.loads(cli("server", "show", "cli web", "--json").stdout)
    assert shown["id"] == server["id"]
    ssh = cli("server", "ssh", str(server["id"]), "--dry-run", "--", "uptime")
    assert ssh.stdout.strip() == f"ssh root@{server['ip_address']} uptime"

    refused = cli("server", "delete", "cli web", ok=False, stdin="n\n")
    assert refused.returncode == 1 and "cancelled" in refused.stderr
    assert json.loads(cli("server", "show", "cli web", "--json").stdout)["id"] == server["id"]

    deleted = cli("server", "delete", "cli web", "--yes", "--json")
    assert json.loads(deleted.stdout)["operation"]["status"] == "succeeded"
    assert "delete succeeded" in deleted.stderr
    assert all(s["id"] != server["id"] for s in json.loads(cli("server", "list", "--json").stdout))
    missing = cli("server", "show", "cli web", ok=False)
    assert missing.returncode == 1 and "No server named 'cli web'" in missing.stderr


def test_keys_snapshots_operations_and_catalog(service: ServiceProcess, cli: Any, tmp_path: Path) -> None:
    # No profile: the environment names the service.
    env = {"CLOUDPLANE_URL": service.url, "CLOUDPLANE_TOKEN": service.api_key or ""}
    assert "basic-1gb" in {p["slug"] for p in json.loads(cli("plan", "list", "--json", **env).stdout)}
    assert "ubuntu-22-04" in cli("image", "list", **env).stdout
    assert "nyc1" in {loc["slug"] for loc in json.loads(cli("location", "list", "--json", **env).stdout)}

    key_file = tmp_path / "id.pub"
    key_file.write_text(ed25519_public_key() + "\n")
    key = json.loads(
        cli("ssh-key", "create", "--title", "cli laptop", "--public-key-file", str(key_file), "--json", **env).stdout
    )
    assert json.loads(cli("ssh-key", "show", "cli laptop", "--json", **env).stdout)["id"] == key["id"]

    made = json.loads(
        cli("server", "create", "--label", "cli snap", *SERVER, "--ssh-key", "cli laptop", "--json", **env).stdout
    )
    server_id = made["resource"]["id"]
    assert [k["id"] for k in made["resource"]["ssh_keys"]] == [key["id"]]
    snap = cli("snapshot", "create", "cli snap", "--label", "first", "--json", **env)
    assert json.loads(snap.stdout)["operation"]["status"] == "succeeded"
    assert "first" in cli("snapshot", "list", "cli snap", **env).stdout

    _, op = json.loads(cli("server", "stop", str(server_id), "--yes", "--no-wait", "--json", **env).stdout).values()
    waited = json.loads(cli("operation", "wait", op["id"], "--json", **env).stdout)
    assert waited[0]["status"] == "succeeded" and waited[0]["kind"] == "stop"
    cli("snapshot", "restore", "cli snap", "first", "--yes", **env)
    cli("snapshot", "delete", "cli snap", "first", "--yes", **env)
    kinds = {o["kind"] for o in json.loads(cli("operation", "list", "--json", **env).stdout)}
    assert {"create", "snapshot", "restore", "stop"} <= kinds
    again = cli("server", "stop", "cli snap", "--yes", ok=False, **env)
    assert again.returncode == 1 and "INVALID_STATE" in again.stderr

    cli("server", "delete", "cli snap", "--yes", **env)
    cli("ssh-key", "delete", "cli laptop", "--yes", **env)


def test_login_refuses_a_bad_token_and_saves_nothing(service: ServiceProcess, cli: Any) -> None:
    refused = cli("login", "--url", service.url, "--token", "cp_not_a_key", ok=False)
    assert refused.returncode == 1 and "UNAUTHORIZED" in refused.stderr
    assert not cli.config.exists()
    unknown = cli("server", "list", "--profile", "nowhere", ok=False)
    assert unknown.returncode == 1 and "cloudplane login" in unknown.stderr

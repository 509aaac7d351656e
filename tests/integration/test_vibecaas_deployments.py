"""VibeCaaS deployments (/api/v1/deployments): an app's git source, served by a `git daemon` the tests start on
loopback, fetched and built into an immutable release (Python, Node, Procfile), with the build's log, timeout and
cache; failures end `failed` with the log's tail; sources the operator has not allowed are refused."""

from __future__ import annotations

import io
import json
import os
import stat
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update

from cloudplane.db.tables import App, Event
from cloudplane.domain.builds import BuildLog
from cloudplane.services import builds
from tests.conftest import Tenant, _listens, eventually, serve_on_free_port, stop_server

DEPLOYMENTS = "/api/v1/deployments"
GIT = ["git", "-c", "user.name=Test", "-c", "user.email=test@example.com", "-c", "init.defaultBranch=main"]


def make_repo(base: Path, name: str, files: dict[str, str | bytes]) -> str:
    """A repository `name` under `base` with `files` committed on main (or a new commit on it); its sha."""
    repo = base / name
    if not repo.exists():
        subprocess.run([*GIT, "init", "-q", str(repo)], check=True)
    for path, content in files.items():
        target = repo / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content if isinstance(content, bytes) else content.encode())
    subprocess.run([*GIT, "-C", str(repo), "add", "-A"], check=True)
    subprocess.run([*GIT, "-C", str(repo), "commit", "-q", "-m", "change"], check=True)
    return subprocess.run(
        ["git", "-C", str(repo), "rev-parse", "HEAD"], check=True, capture_output=True, text=True
    ).stdout.strip()


def tiny_tarball() -> bytes:
    """An npm package tarball with no dependencies, as `npm pack` makes one."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, text in (
            ("package/package.json", '{"name": "tiny", "version": "1.0.0", "main": "index.js"}'),
            ("package/index.js", "module.exports = 42;\n"),
        ):
            data = text.encode()
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def node_app(build: str) -> dict[str, str | bytes]:
    """A Node app depending on a tarball in the repository (no registry needed), with its lock file."""
    package = {
        "name": "web",
        "version": "1.0.0",
        "dependencies": {"tiny": "file:tiny-1.0.0.tgz"},
        "scripts": {"build": build, "start": "node server.js"},
    }
    return {"package.json": json.dumps(package), "tiny-1.0.0.tgz": tiny_tarball(), "server.js": "console.log(1)\n"}


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The repositories the git server serves: a Python app, a Node app, a Procfile app and broken ones."""
    base = tmp_path_factory.mktemp("repos")
    make_repo(base, "python-app", {"requirements.txt": "# no dependencies\n", "app.py": "print('v1')\n"})
    make_repo(base, "python-app", {"app.py": "print('v2')\n"})
    make_repo(base, "node-app", node_app("node -e \"require('fs').writeFileSync('dist.txt', 'built')\""))
    node = base / "node-app"
    subprocess.run(["npm", "install", "--package-lock-only", "--no-audit", "--no-fund", "-q"], cwd=node, check=True)
    make_repo(base, "node-app", {})
    make_repo(base, "procfile-app", {"Procfile": "web: ./run.sh\n", "run.sh": "#!/bin/sh\nexec sleep 1000\n"})
    make_repo(base, "broken-app", node_app("echo 'error: cannot compile web' >&2; exit 3"))
    make_repo(base, "slow-app", {**node_app("sleep 31.25"), "x": "1"})
    make_repo(base, "empty-app", {"README.md": "nothing to build\n"})
    return base


@pytest.fixture(scope="module")
def git_server(repos: Path) -> Iterator[str]:
    """`git daemon` on a free loopback port serving `repos`; the URL prefix of its repositories."""
    server, port = serve_on_free_port(
        lambda port: [
            "git", "daemon", "--reuseaddr", "--export-all", "--informative-errors", "--listen=127.0.0.1",
            f"--port={port}", f"--base-path={repos}", str(repos),
        ],
        _listens,
        "git daemon",
    )  # fmt: skip
    yield f"git://127.0.0.1:{port}"
    stop_server(server)


@pytest.fixture
def apps_dir(core: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """This test's own apps directory, and local sources allowed (the git server is on loopback)."""
    monkeypatch.setattr(core.settings, "apps_dir", str(tmp_path / "apps"))
    monkeypatch.setattr(core.settings, "apps_allow_local_sources", True)
    return tmp_path / "apps"


async def create_app(client: httpx.AsyncClient, tenant: Tenant, name: str, repo: str | None) -> dict[str, Any]:
    r = await client.post("/api/v1/apps", json={"name": name, "github_repo": repo}, headers=tenant.headers)
    assert r.status_code == 201, r.text
    return r.json()


async def deploy(client: httpx.AsyncClient, tenant: Tenant, app_id: str, **body: Any) -> dict[str, Any]:
    r = await client.post(DEPLOYMENTS, json={"app_id": app_id, "source": "github", **body}, headers=tenant.headers)
    assert r.status_code == 202, r.text
    deployment = r.json()
    assert deployment["status"] in ("pending", "building") and deployment["operation"]["kind"] == "deploy"
    return deployment


async def finished(client: httpx.AsyncClient, tenant: Tenant, deployment_id: str) -> dict[str, Any]:
    async def get() -> dict[str, Any]:
        return (await client.get(f"{DEPLOYMENTS}/{deployment_id}", headers=tenant.headers)).json()

    return await eventually(get, lambda d: d["status"] in ("built", "failed"), timeout=180)


def writable_anywhere(root: Path) -> list[str]:
    """Paths under `root` (itself included) anyone may write, symbolic links aside."""
    found = []
    for directory, dirs, files in os.walk(root):
        for path in [directory, *(os.path.join(directory, n) for n in [*dirs, *files])]:
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode) and mode & 0o222:
                found.append(path)
    return found


async def test_a_python_app_builds_into_a_read_only_release_with_its_virtualenv(
    client, tenant, core, git_server, repos, apps_dir
) -> None:
    app = await create_app(client, tenant, "py", f"{git_server}/python-app")
    started = await deploy(client, tenant, app["id"])
    done = await finished(client, tenant, started["id"])
    assert done["status"] == "built", done["error"]
    head = subprocess.run(["git", "-C", str(repos / "python-app"), "rev-parse", "HEAD"], capture_output=True, text=True)
    assert done["commit_sha"] == head.stdout.strip() and done["commit"] is None
    assert done["framework"] == "python" and done["branch"] == "main"
    assert done["operation"]["status"] == "succeeded" and done["operation"]["progress"] == 100
    assert done["operation"]["target"] == {"type": "deployment", "id": done["id"]}

    release = builds.release_path(core.settings, app["id"], done["id"])
    assert (release / "app.py").read_text() == "print('v2')\n"
    assert not (release / ".git").exists()
    assert json.loads((release / builds.RELEASE_FILE).read_text())["commit_sha"] == done["commit_sha"]
    assert writable_anywhere(release) == []
    # The virtualenv was made in the build directory and moved: it knows where it is now.
    prefix = subprocess.run([str(release / ".venv/bin/python"), "-c", "import sys; print(sys.prefix)"],
                            capture_output=True, text=True, check=True)  # fmt: skip
    assert prefix.stdout.strip() == str(release / ".venv")
    pip_script = (release / ".venv/bin/pip").read_text()
    assert f"{release}/.venv/bin/python" in pip_script and "/builds/" not in pip_script
    assert not (apps_dir / "builds" / done["id"]).exists()

    log = (await client.get(f"{DEPLOYMENTS}/{done['id']}/logs", headers=tenant.headers)).json()
    assert log["status"] == "built" and "pip install -r requirements.txt" in log["log"]
    assert f"[checked out {done['commit_sha']}]" in log["log"]
    with core.db.read() as s:
        events = s.scalars(select(Event.type).where(Event.target_id == done["id"]).order_by(Event.seq)).all()
    assert events == ["deployment.requested", "deployment.succeeded"]


async def test_a_build_run_again_throws_away_what_a_stopped_run_left_and_keeps_a_finished_release(
    core, git_server, apps_dir
) -> None:
    """What a run that died leaves (a half-made build, read-only files in it) is thrown away by the next run; a
    release made by a run that died before recording it is taken as it is, not built again."""
    request = builds.BuildRequest("app-resume", "dep-resume", f"{git_server}/procfile-app", "main", None)
    leftover = apps_dir / "builds" / "dep-resume" / "release"
    leftover.mkdir(parents=True)
    (leftover / "half.txt").write_text("half")
    leftover.chmod(0o555)
    stages: list[str] = []

    async def report(percent: int, what: str) -> None:
        stages.append(what)

    made = await builds.build(core.settings, request, BuildLog(65536), report)
    assert made.framework == "custom" and not (made.path / "half.txt").exists()
    assert not (apps_dir / "builds" / "dep-resume").exists()
    assert stages == ["fetching the source", "detecting the framework", "sealing the release"]
    log = BuildLog(65536)
    again = await builds.build(core.settings, request, log, report)
    assert again == made and log.text() == ""


async def test_a_commit_is_built_rather_than_the_branch_head(client, tenant, git_server, repos, apps_dir) -> None:
    first = subprocess.run(
        ["git", "-C", str(repos / "python-app"), "rev-list", "--max-parents=0", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    app = await create_app(client, tenant, "py-old", f"{git_server}/python-app")
    for commit in (first, first[:10]):
        done = await finished(client, tenant, (await deploy(client, tenant, app["id"], commit=commit))["id"])
        assert done["status"] == "built", done["error"]
        assert done["commit_sha"] == first and done["commit"] == commit
        release = Path(apps_dir) / "releases" / app["id"] / done["id"]
        assert (release / "app.py").read_text() == "print('v1')\n"


async def test_a_node_app_runs_npm_ci_and_its_build_script_and_reuses_its_cache(
    client, tenant, core, git_server, apps_dir
) -> None:
    app = await create_app(client, tenant, "web", f"{git_server}/node-app")
    first = await finished(client, tenant, (await deploy(client, tenant, app["id"]))["id"])
    assert first["status"] == "built", first["error"]
    assert first["framework"] == "nodejs"
    release = builds.release_path(core.settings, app["id"], first["id"])
    assert (release / "dist.txt").read_text() == "built"
    assert (release / "node_modules/tiny/index.js").is_file()
    assert writable_anywhere(release) == []
    log = (await client.get(f"{DEPLOYMENTS}/{first['id']}/logs", headers=tenant.headers)).json()["log"]
    assert "$ npm ci" in log and "$ npm run build" in log

    cache = builds.cache_path(core.settings, app["id"]) / "npm" / "_cacache"
    content = {p.relative_to(cache) for p in (cache / "content-v2").rglob("*") if p.is_file()}
    assert content, "npm kept the tarball in the app's cache"
    second = await finished(client, tenant, (await deploy(client, tenant, app["id"]))["id"])
    assert second["status"] == "built", second["error"]
    # The same cache, kept between builds and read again: nothing new had to be stored.
    assert {p.relative_to(cache) for p in (cache / "content-v2").rglob("*") if p.is_file()} == content
    other = await create_app(client, tenant, "web-two", f"{git_server}/node-app")
    assert builds.cache_path(core.settings, other["id"]) != builds.cache_path(core.settings, app["id"])


async def test_a_procfile_app_is_custom(client, tenant, git_server, apps_dir) -> None:
    app = await create_app(client, tenant, "proc", f"{git_server}/procfile-app")
    done = await finished(client, tenant, (await deploy(client, tenant, app["id"]))["id"])
    assert done["status"] == "built" and done["framework"] == "custom"


async def test_a_failing_build_ends_failed_with_the_logs_tail(client, tenant, git_server, apps_dir) -> None:
    app = await create_app(client, tenant, "broken", f"{git_server}/broken-app")
    done = await finished(client, tenant, (await deploy(client, tenant, app["id"]))["id"])
    assert done["status"] == "failed"
    assert done["error"].startswith("npm run build failed (exit status 3)")
    assert "The log ends:" in done["error"] and "error: cannot compile web" in done["error"]
    assert done["operation"]["status"] == "failed" and done["operation"]["error"]["code"] == "BUILD_FAILED"
    assert not (Path(apps_dir) / "releases" / app["id"] / done["id"]).exists()
    assert not (Path(apps_dir) / "builds" / done["id"]).exists()
    log = (await client.get(f"{DEPLOYMENTS}/{done['id']}/logs", headers=tenant.headers)).json()
    assert "error: cannot compile web" in log["log"]

    empty = await create_app(client, tenant, "empty", f"{git_server}/empty-app")
    nothing = await finished(client, tenant, (await deploy(client, tenant, empty["id"]))["id"])
    assert nothing["status"] == "failed" and "add requirements.txt" in nothing["error"]
    missing = await finished(client, tenant, (await deploy(client, tenant, empty["id"], branch="no-such"))["id"])
    assert missing["status"] == "failed" and "fetching branch no-such failed" in missing["error"]


def processes_running(marker: str) -> list[int]:
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if marker in cmdline:
            found.append(int(pid))
    return found


async def test_a_build_past_its_time_is_killed_and_fails(
    client, tenant, core, git_server, apps_dir, monkeypatch
) -> None:
    monkeypatch.setattr(core.settings, "apps_build_timeout_s", 6.0)
    app = await create_app(client, tenant, "slow", f"{git_server}/slow-app")
    done = await finished(client, tenant, (await deploy(client, tenant, app["id"]))["id"])
    assert done["status"] == "failed"
    assert "took too long and was stopped during npm run build" in done["error"]
    assert "[killed: the build's time (npm run build) was up]" in done["error"]
    assert processes_running("sleep 31.25") == []


async def test_sources_the_operator_has_not_allowed_are_refused(
    client, tenant, core, repos, tmp_path, monkeypatch
) -> None:
    monkeypatch.setattr(core.settings, "apps_dir", str(tmp_path / "apps"))
    file_url = f"file://{repos / 'python-app'}"
    for url in (file_url, str(repos / "python-app"), "git://127.0.0.1:9418/python-app"):
        r = await client.post("/api/v1/apps", json={"name": "local", "github_repo": url}, headers=tenant.headers)
        assert r.status_code == 422, r.text
        assert r.json()["error"]["details"]["field"] == "github_repo"
        assert "CLOUDPLANE_APPS_ALLOW_LOCAL_SOURCES" in r.json()["error"]["message"]

    # Allowed, a file:// URL builds; taken back, the app's deployments are refused.
    monkeypatch.setattr(core.settings, "apps_allow_local_sources", True)
    app = await create_app(client, tenant, "local", file_url)
    done = await finished(client, tenant, (await deploy(client, tenant, app["id"]))["id"])
    assert done["status"] == "built", done["error"]
    monkeypatch.setattr(core.settings, "apps_allow_local_sources", False)
    r = await client.post(DEPLOYMENTS, json={"app_id": app["id"]}, headers=tenant.headers)
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "github_repo"

    # An https URL whose host is a private address (as a name may resolve once saved) is refused with its field.
    with core.db.write() as s:
        s.execute(update(App).where(App.id == app["id"]).values(github_repo="https://127.0.0.1:9/team/app.git"))
    r = await client.post(DEPLOYMENTS, json={"app_id": app["id"]}, headers=tenant.headers)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["details"]["field"] == "github_repo"
    assert "127.0.0.1, which is not a public address" in r.json()["error"]["message"]
    # Allowed by the operator (an internal git server), the address is fetched from.
    monkeypatch.setattr(core.settings, "apps_allow_private_sources", True)
    failed = await finished(client, tenant, (await deploy(client, tenant, app["id"]))["id"])
    assert failed["status"] == "failed" and "fetching branch main failed" in failed["error"]

    no_repo = await create_app(client, tenant, "norepo", None)
    r = await client.post(DEPLOYMENTS, json={"app_id": no_repo["id"]}, headers=tenant.headers)
    assert r.status_code == 422 and r.json()["error"]["details"]["field"] == "github_repo"


async def test_the_clone_checks_the_address_again_and_pins_it(core, monkeypatch) -> None:
    """At clone time an https URL is resolved and checked again (a name may point elsewhere since the request);
    allowed, git is told to connect to the address checked, never to resolve the name itself."""
    with pytest.raises(builds.BuildFailed, match="not a public address"):
        await builds._pinned(core.settings, "https://127.0.0.1/team/app.git")
    monkeypatch.setattr(core.settings, "apps_allow_private_sources", True)
    assert await builds._pinned(core.settings, "https://127.0.0.1:8443/team/app.git") == "127.0.0.1:8443:127.0.0.1"
    assert "http.curloptResolve=h:443:1.2.3.4" in builds._git_options(core.settings, "h:443:1.2.3.4")


async def test_deployments_list_by_app_and_status_and_stay_in_their_account(
    client, make_tenant, git_server, apps_dir
) -> None:
    owner, intruder = make_tenant(), make_tenant()
    good = await create_app(client, owner, "good", f"{git_server}/procfile-app")
    bad = await create_app(client, owner, "bad", f"{git_server}/empty-app")
    built = await finished(client, owner, (await deploy(client, owner, good["id"]))["id"])
    failed = await finished(client, owner, (await deploy(client, owner, bad["id"]))["id"])

    async def ids(tenant: Tenant, query: str = "") -> list[str]:
        r = await client.get(f"{DEPLOYMENTS}{query}", headers=tenant.headers)
        assert r.status_code == 200, r.text
        return [d["id"] for d in r.json()["items"]]

    assert await ids(owner) == [failed["id"], built["id"]]
    assert await ids(owner, f"?app_id={good['id']}") == [built["id"]]
    assert await ids(owner, "?status=failed") == [failed["id"]]
    assert await ids(owner, "?status=built&limit=1&page=1") == [built["id"]]
    assert await ids(owner, "?app_id=not-a-uuid") == []
    assert await ids(intruder) == [] and await ids(intruder, f"?app_id={good['id']}") == []
    for url in (f"{DEPLOYMENTS}/{built['id']}", f"{DEPLOYMENTS}/{built['id']}/logs", f"{DEPLOYMENTS}/x١"):
        r = await client.get(url, headers=intruder.headers)
        assert r.status_code == 404 and r.json()["error"]["code"] == "RESOURCE_NOT_FOUND"
    r = await client.post(DEPLOYMENTS, json={"app_id": good["id"]}, headers=intruder.headers)
    assert r.status_code == 404
    assert await ids(owner) == [failed["id"], built["id"]]

    for body, field in (
        ({"app_id": good["id"], "commit": "xyz"}, "commit"),
        ({"app_id": good["id"], "branch": "-x"}, "branch"),
        ({"app_id": good["id"], "source": "svn"}, "source"),
        ({"app_id": good["id"], "status": "built"}, "status"),
    ):
        r = await client.post(DEPLOYMENTS, json=body, headers=owner.headers)
        assert r.status_code == 422 and r.json()["error"]["details"]["field"] == field, (body, r.text)

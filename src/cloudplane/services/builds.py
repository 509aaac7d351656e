"""Building a deployment: its git source fetched and built into an immutable release on this host.

A build runs in `<apps dir>/builds/<deployment>/release`, then is made read-only and renamed to
`<apps dir>/releases/<app>/<deployment>`: a release that exists is whole, and is never changed. Each app has a
build cache (`<apps dir>/cache/<app>/pip` and `npm`) that its builds share.

git runs as a subprocess with no terminal prompt, no credential helper, no system or user configuration, and only
the protocols allowed: https always; git:// and file:// (local paths too) only with
CLOUDPLANE_APPS_ALLOW_LOCAL_SOURCES. An https URL's host is resolved and every address checked
(services/outbound.py) right before the fetch, and git is told to connect to those very addresses
(`http.curloptResolve`), so a name that resolves elsewhere the second time (DNS rebinding) reaches nothing new;
redirects are not followed.

Every command of a build runs in a process group of its own, its output kept in the build log; when the build's
time is up (CLOUDPLANE_APPS_BUILD_TIMEOUT_S) the whole group is killed. The build's commands get only the
environment a build needs (PATH, HOME in the build directory, pip's and npm's own settings), never Cloudplane's.
The repository's code runs as Cloudplane's user while it builds (npm scripts, a setup.py): isolating builds is the
runtime's work (issue 14, item 2).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import stat
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from cloudplane.config import Settings
from cloudplane.domain.builds import READ_FILES, BuildLog, Detected, NoFramework, Toolchain, detect_framework
from cloudplane.domain.errors import ValidationFailed
from cloudplane.services import outbound, sources

# Written into every release: what it was built from and as.
RELEASE_FILE = ".cloudplane-release.json"
FULL_SHA = re.compile(r"^[0-9a-f]{40}$")
_READ_LIMIT = 256 * 1024
Report = Callable[[int, str], Awaitable[None]]


class BuildFailed(Exception):
    """The build could not make a release; `message` says why, for the deployment's error."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class BuildRequest:
    app_id: str
    deployment_id: str
    source_url: str
    branch: str
    commit: str | None


@dataclass(frozen=True)
class Release:
    path: Path
    commit_sha: str
    framework: str


def release_path(settings: Settings, app_id: str, deployment_id: str) -> Path:
    return settings.apps_path / "releases" / app_id / deployment_id


def cache_path(settings: Settings, app_id: str) -> Path:
    return settings.apps_path / "cache" / app_id


def _work_path(settings: Settings, deployment_id: str) -> Path:
    return settings.apps_path / "builds" / deployment_id


def _environment(home: Path, cache: Path) -> dict[str, str]:
    """What a build's commands see: the operator's pip and npm settings (mirrors, certificates), and nothing of
    Cloudplane's (no database URL, no secret key)."""
    env = {k: v for k, v in os.environ.items() if k.startswith(("PIP_", "npm_config_", "NPM_CONFIG_"))}
    env.update(
        PATH=os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        HOME=str(home),
        LANG="C.UTF-8",
        CI="true",
        GIT_TERMINAL_PROMPT="0",
        GIT_CONFIG_NOSYSTEM="1",
        GIT_CONFIG_GLOBAL=os.devnull,
        PIP_CACHE_DIR=str(cache / "pip"),
        PIP_DISABLE_PIP_VERSION_CHECK="1",
        PIP_NO_INPUT="1",
        npm_config_cache=str(cache / "npm"),
        npm_config_update_notifier="false",
        npm_config_fund="false",
        npm_config_audit="false",
    )
    return env


def _kill_group(process: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)


async def run(args: list[str], *, cwd: Path, env: dict[str, str], log: BuildLog, deadline: float, what: str) -> None:
    """Run one command of a build, its output (stdout and stderr) into the log; BuildFailed when it fails or when
    the deadline (a time.monotonic() value) passes, its whole process group killed then."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise BuildFailed(f"The build ran out of time before {what}")
    log.line(f"$ {' '.join(args)}")
    process = await asyncio.create_subprocess_exec(
        *args,
        cwd=cwd,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        start_new_session=True,
    )
    assert process.stdout is not None
    stdout = process.stdout

    async def pump() -> None:
        while chunk := await stdout.read(65536):
            log.write(chunk)

    pumping = asyncio.ensure_future(pump())
    try:
        await asyncio.wait_for(asyncio.shield(asyncio.gather(pumping, process.wait())), remaining)
    except TimeoutError:
        _kill_group(process)
        await process.wait()
        # A process that left the group may hold the pipe open: stop reading rather than wait for it.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(pumping, 2)
        pumping.cancel()
        log.line(f"[killed: the build's time ({what}) was up]")
        raise BuildFailed(f"The build took too long and was stopped during {what}") from None
    except asyncio.CancelledError:
        _kill_group(process)
        pumping.cancel()
        raise
    if process.returncode != 0:
        raise BuildFailed(f"{what} failed (exit status {process.returncode})")


def _git_options(settings: Settings, pinned: str | None) -> list[str]:
    options = [
        "-c", "protocol.allow=never",
        "-c", "protocol.https.allow=always",
        "-c", "credential.helper=",
        "-c", "http.followRedirects=false",
        "-c", "core.hooksPath=" + os.devnull,
        "-c", "transfer.fsckObjects=true",
        "-c", "submodule.recurse=false",
        "-c", "advice.detachedHead=false",
    ]  # fmt: skip
    if settings.apps_allow_local_sources:
        options += ["-c", "protocol.git.allow=always", "-c", "protocol.file.allow=always"]
    if pinned:
        options += ["-c", f"http.curloptResolve={pinned}"]
    return options


async def _pinned(settings: Settings, url: str) -> str | None:
    """For an https URL: its host checked (every address public unless the operator allows private ones) and the
    curl `host:port:address` entry that makes git connect to the address checked. None for a local source."""
    if sources.is_local(url):
        try:
            sources.check_source(url, allow_local=settings.apps_allow_local_sources)
        except ValidationFailed as error:
            raise BuildFailed(error.message) from None
        return None
    try:
        target = await asyncio.to_thread(
            outbound.resolve, url, allow_private=settings.apps_allow_private_sources, field="github_repo"
        )
    except ValidationFailed as error:
        raise BuildFailed(error.message) from None
    address = target.addresses[0]
    shown = f"[{address}]" if address.version == 6 else str(address)
    return f"{target.host}:{target.port}:{shown}"


async def fetch(
    settings: Settings, request: BuildRequest, into: Path, env: dict[str, str], log: BuildLog, deadline: float
) -> str:
    """Check out the requested branch (or commit) of the source into `into` without its history; its sha."""
    git = ["git", *_git_options(settings, await _pinned(settings, request.source_url))]
    git_deadline = min(deadline, time.monotonic() + settings.apps_git_timeout_s)
    into.mkdir(parents=True)
    await run([*git, "init", "-q", str(into)], cwd=into, env=env, log=log, deadline=git_deadline, what="git init")
    url = request.source_url
    fetched = False
    commit = request.commit
    if commit and FULL_SHA.fullmatch(commit):
        try:  # servers that allow fetching a commit by its id (GitHub, git with protocol v2) send just it
            await run(
                [*git, "-C", str(into), "fetch", "-q", "--depth", "1", "--no-tags", url, commit],
                cwd=into, env=env, log=log, deadline=git_deadline, what="fetching the commit",
            )  # fmt: skip
            fetched = True
        except BuildFailed:
            if time.monotonic() >= git_deadline:
                raise
            log.line("[the server does not send a commit by its id: fetching the branch's history]")
    if not fetched:
        depth = [] if commit else ["--depth", "1"]
        await run(
            [*git, "-C", str(into), "fetch", "-q", *depth, "--no-tags", url, f"refs/heads/{request.branch}"],
            cwd=into, env=env, log=log, deadline=git_deadline, what=f"fetching branch {request.branch}",
        )  # fmt: skip
    target = f"{commit}^{{commit}}" if commit else "FETCH_HEAD"
    await run(
        [*git, "-C", str(into), "checkout", "-q", "--detach", target],
        cwd=into, env=env, log=log, deadline=git_deadline, what=f"checking out {commit or request.branch}",
    )  # fmt: skip
    process = await asyncio.create_subprocess_exec(
        "git", "-C", str(into), "rev-parse", "HEAD", env=env, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await process.communicate()
    sha = out.decode().strip()
    shutil.rmtree(into / ".git")
    log.line(f"[checked out {sha}]")
    return sha


def detect(source: Path) -> Detected:
    files = set(os.listdir(source))
    contents = {}
    for name in READ_FILES:
        path = source / name
        if name in files and path.is_file() and not path.is_symlink():
            with path.open("rb") as f:
                contents[name] = f.read(_READ_LIMIT).decode("utf-8", "replace")
    return detect_framework(files, contents)


async def install(
    detected: Detected, source: Path, env: dict[str, str], log: BuildLog, deadline: float, report: Report
) -> None:
    """Install the release's dependencies and run its build script, in the release directory itself."""
    if detected.toolchain == Toolchain.PYTHON:
        venv = source / ".venv"
        await run([sys.executable, "-m", "venv", str(venv)], cwd=source, env=env, log=log, deadline=deadline,
                  what="creating the virtualenv")  # fmt: skip
        await report(50, "installing dependencies")
        target = ["-r", "requirements.txt"] if detected.manifest == "requirements.txt" else ["."]
        await run([str(venv / "bin" / "python"), "-m", "pip", "install", *target], cwd=source, env=env, log=log,
                  deadline=deadline, what="pip install")  # fmt: skip
    elif detected.toolchain == Toolchain.NODE:
        await report(50, "installing dependencies")
        npm = ["npm", "ci"] if detected.manifest == "package-lock.json" else ["npm", "install"]
        await run(npm, cwd=source, env=env, log=log, deadline=deadline, what=" ".join(npm))
        scripts = json.loads((source / "package.json").read_text()).get("scripts") or {}
        if isinstance(scripts, dict) and "build" in scripts:
            await report(70, "running the build script")
            await run(["npm", "run", "build"], cwd=source, env=env, log=log, deadline=deadline, what="npm run build")
    else:
        procfile = (source / "Procfile").read_text(errors="replace")
        if not re.search(r"(?m)^[A-Za-z0-9_-]+:\s*\S", procfile):
            raise BuildFailed("The Procfile has no process line (`web: <command>`)")
        log.line("[Procfile: nothing to build]")


def _relocate_venv(venv: Path, old: Path, new: Path) -> None:
    """A virtualenv names its own path in its scripts (their #! lines, activate): point them at where the release
    will be. Symbolic links are left as they are."""
    if not venv.is_dir():
        return
    old_b, new_b = str(old).encode(), str(new).encode()
    for path in [*(venv / "bin").iterdir(), venv / "pyvenv.cfg"]:
        if path.is_symlink() or not path.is_file():
            continue
        data = path.read_bytes()
        if old_b in data:
            path.write_bytes(data.replace(old_b, new_b))


def _read_only(root: Path) -> None:
    """Take write permission away from everything under `root` (not `root` itself: see `finish`). Symbolic links
    are skipped: chmod would follow them out of the release."""
    for directory, dirs, files in os.walk(root, topdown=False):
        for name in [*files, *dirs]:
            path = os.path.join(directory, name)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode):
                os.chmod(path, stat.S_IMODE(mode) & ~0o222)


def writable_again(root: Path) -> None:
    """Give write permission back under `root` (removing a release, or a half-made one)."""
    if root.is_symlink() or not root.exists():
        return
    os.chmod(root, stat.S_IMODE(os.lstat(root).st_mode) | 0o200)
    for directory, dirs, files in os.walk(root):
        for name in [*dirs, *files]:
            path = os.path.join(directory, name)
            mode = os.lstat(path).st_mode
            if not stat.S_ISLNK(mode):
                os.chmod(path, stat.S_IMODE(mode) | 0o200)


def _finish(built: Path, final: Path, facts: dict[str, str]) -> None:
    """Seal the built tree and move it into place: read-only, then renamed (one step: a release that exists is
    whole), then its own directory read-only too (a directory moved to another parent must be writable)."""
    (built / RELEASE_FILE).write_text(json.dumps(facts, indent=1))
    _read_only(built)
    final.parent.mkdir(parents=True, exist_ok=True)
    os.rename(built, final)
    os.chmod(final, stat.S_IMODE(os.lstat(final).st_mode) & ~0o222)


def _existing(final: Path) -> Release | None:
    """The release a previous run of this build made already (it stopped before recording it)."""
    try:
        facts = json.loads((final / RELEASE_FILE).read_text())
    except (OSError, ValueError):
        return None
    return Release(final, facts["commit_sha"], facts["framework"])


def _clean(work: Path) -> None:
    writable_again(work)
    shutil.rmtree(work, ignore_errors=True)


async def build(settings: Settings, request: BuildRequest, log: BuildLog, report: Report) -> Release:
    """Fetch and build the request's source into its release; idempotent: a release made already is returned as
    it is, and a half-made build of an earlier run is thrown away and made again. Raises BuildFailed."""
    final = release_path(settings, request.app_id, request.deployment_id)
    if (done := _existing(final)) is not None:
        return done
    deadline = time.monotonic() + settings.apps_build_timeout_s
    work = _work_path(settings, request.deployment_id)
    await asyncio.to_thread(_clean, work)
    home, source = work / "home", work / "release"
    home.mkdir(parents=True)
    cache = cache_path(settings, request.app_id)
    (cache / "pip").mkdir(parents=True, exist_ok=True)
    (cache / "npm").mkdir(parents=True, exist_ok=True)
    env = _environment(home, cache)
    try:
        await report(15, "fetching the source")
        sha = await fetch(settings, request, source, env, log, deadline)
        await report(35, "detecting the framework")
        try:
            detected = detect(source)
        except NoFramework as error:
            raise BuildFailed(str(error)) from None
        log.line(f"[framework: {detected.framework}, built with {detected.toolchain} from {detected.manifest}]")
        await install(detected, source, env, log, deadline, report)
        await report(90, "sealing the release")
        _relocate_venv(source / ".venv", source, final)
        facts = {"commit_sha": sha, "framework": detected.framework, "toolchain": detected.toolchain.value}
        await asyncio.to_thread(_finish, source, final, facts)
        log.line(f"[release {final}]")
        return Release(final, sha, detected.framework)
    finally:
        await asyncio.to_thread(_clean, work)

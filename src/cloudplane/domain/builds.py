"""What a deployment's build decides without doing any I/O: the framework a repository is built as, and the
bounded build log whose tail a failed deployment shows."""

from __future__ import annotations

import json
import re
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from enum import StrEnum

# The frameworks the VibeCaaS document names, by how they are built.
PYTHON_FRAMEWORKS = ("python", "fastapi", "flask", "django")
NODE_FRAMEWORKS = ("nodejs", "express", "nextjs", "react")
CUSTOM = "custom"
# The files detection reads beside the list of names (each read bounded by the caller).
READ_FILES = ("package.json", "requirements.txt", "pyproject.toml")


class Toolchain(StrEnum):
    PYTHON = "python"
    NODE = "node"
    PROCFILE = "procfile"


@dataclass(frozen=True)
class Detected:
    framework: str
    toolchain: Toolchain
    # What installs the dependencies: "requirements.txt", "pyproject.toml", "package-lock.json", "package.json",
    # or None (a Procfile alone).
    manifest: str | None


class NoFramework(ValueError):
    """The repository has nothing a build knows: no Python project, no package.json, no Procfile."""


def _names_in(text: str) -> set[str]:
    """Distribution names mentioned in requirements or pyproject text, lowercased (a coarse read: enough to tell
    FastAPI from Flask, never used to install anything)."""
    return {m.lower().replace("_", "-") for m in re.findall(r"(?m)^[\s\"']*([A-Za-z0-9][A-Za-z0-9._-]*)", text)}


def _python_framework(files: Collection[str], contents: Mapping[str, str]) -> str:
    names = _names_in(contents.get("requirements.txt", "")) | _names_in(contents.get("pyproject.toml", ""))
    if "manage.py" in files or "django" in names:
        return "django"
    for framework in ("fastapi", "flask"):
        if framework in names:
            return framework
    return "python"


def _node_framework(package_json: str) -> str:
    try:
        package = json.loads(package_json)
    except ValueError:
        package = {}
    deps: set[str] = set()
    if isinstance(package, dict):
        for key in ("dependencies", "devDependencies"):
            if isinstance(package.get(key), dict):
                deps |= set(package[key])
    if "next" in deps:
        return "nextjs"
    if "react" in deps or "react-scripts" in deps:
        return "react"
    if "express" in deps:
        return "express"
    return "nodejs"


def detect_framework(files: Collection[str], contents: Mapping[str, str]) -> Detected:
    """The framework of a repository from the names at its top level and the text of those of READ_FILES it has.
    Node wins over Python when both are there (a Python helper script beside a web app is common, not the reverse);
    a Procfile alone is `custom`. Raises NoFramework, saying what to add."""
    if "package.json" in files:
        manifest = "package-lock.json" if "package-lock.json" in files else "package.json"
        return Detected(_node_framework(contents.get("package.json", "")), Toolchain.NODE, manifest)
    for manifest in ("requirements.txt", "pyproject.toml"):
        if manifest in files:
            return Detected(_python_framework(files, contents), Toolchain.PYTHON, manifest)
    if "Procfile" in files:
        return Detected(CUSTOM, Toolchain.PROCFILE, None)
    raise NoFramework(
        "No framework found at the repository's top level: add requirements.txt or pyproject.toml (Python), "
        "package.json (Node) or a Procfile (any other command)"
    )


class BuildLog:
    """A build's output, keeping only its last `limit` bytes (a runaway build cannot fill the database)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self.dropped = 0

    def write(self, data: bytes) -> None:
        self._parts.append(data)
        self._size += len(data)
        if self._size > 2 * self.limit:
            self._compact()

    def line(self, text: str) -> None:
        self.write(f"{text}\n".encode())

    def _compact(self) -> None:
        whole = b"".join(self._parts)
        keep = whole[-self.limit :]
        self.dropped += len(whole) - len(keep)
        self._parts, self._size = [keep], len(keep)

    def text(self) -> str:
        self._compact()
        body = b"".join(self._parts).decode("utf-8", "replace")
        return f"[{self.dropped} earlier bytes dropped]\n{body}" if self.dropped else body


def tail(log: str, lines: int = 20) -> str:
    """The last `lines` lines of a log."""
    return "\n".join(log.rstrip("\n").splitlines()[-lines:])

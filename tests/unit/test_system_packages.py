"""The README's test command and CI install the same system packages: the list in scripts/system-packages.txt."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def listed_packages() -> list[str]:
    lines = (ROOT / "scripts" / "system-packages.txt").read_text().splitlines()
    return [line.split("#", 1)[0].strip() for line in lines if line.split("#", 1)[0].strip()]


def readme_test_command_packages() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Run it, test it", 1)[1].split("\n## ", 1)[0]
    commands = [line for line in section.splitlines() if "scripts/test" in line and "apt-get install" in line]
    assert len(commands) == 1, commands
    words = shlex.split(commands[0].split("apt-get install", 1)[1].split("&&", 1)[0])
    return [word for word in words if not word.startswith("-")]


def test_readme_test_command_installs_exactly_the_listed_packages() -> None:
    assert readme_test_command_packages() == listed_packages()


def test_ci_installs_the_listed_packages_and_no_others() -> None:
    ci = (ROOT / ".ci" / "run").read_text()

    assert "SYSTEM_PACKAGES=$(sed 's/#.*//' scripts/system-packages.txt | xargs)" in ci
    assert re.findall(r"apt-get install[^\n]*", ci) == ["apt-get install -y -qq $SYSTEM_PACKAGES >/dev/null && break"]


def test_the_packages_of_tools_the_tests_call_are_listed() -> None:
    # ssh/ssh-keygen (keys, logging into containers), ip (bridges), redis-server (tests/conftest.py), lxc-* tools.
    assert {"openssh-client", "iproute2", "redis-server", "lxc", "procps"} <= set(listed_packages())

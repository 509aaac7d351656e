"""Every `cloudplane` command answers --help with an example (as sqlite-utils checks its own), and the resource
commands that destroy something ask first."""

from __future__ import annotations

from typing import Any

import pytest
import typer.main
from typer.testing import CliRunner

from cloudplane.cli import app


def _commands(group: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    found: list[tuple[str, ...]] = []
    for name, command in group.commands.items():
        if hasattr(command, "commands"):  # a group (typer's own click, not necessarily the click package's)
            found.extend(_commands(command, (*path, name)))
        else:
            found.append((*path, name))
    return found


COMMANDS = _commands(typer.main.get_command(app))  # type: ignore[arg-type]


def test_the_resource_commands_are_there() -> None:
    nouns = {
        "server": {"list", "create", "show", "start", "stop", "reboot", "delete", "ssh"},
        "ssh-key": {"list", "create", "show", "delete"},
        "snapshot": {"list", "create", "restore", "delete"},
        "operation": {"list", "show", "wait"},
        "plan": {"list"},
        "image": {"list"},
        "location": {"list"},
    }
    for noun, verbs in nouns.items():
        assert verbs <= {c[-1] for c in COMMANDS if c[:-1] == (noun,)}, noun
    assert ("login",) in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_every_command_has_help_with_an_example(command: tuple[str, ...]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "Example:" in text, result.output
    assert "cloudplane " + " ".join(command) in text.split("Example:", 1)[1], result.output


RESOURCE_NOUNS = {"login", "server", "ssh-key", "snapshot", "operation", "plan", "image", "location"}
DESTRUCTIVE_VERBS = {"stop", "reboot", "delete", "restore"}


@pytest.mark.parametrize("command", [c for c in COMMANDS if c[0] in RESOURCE_NOUNS], ids=" ".join)
def test_every_resource_command_speaks_json_and_destructive_ones_ask(command: tuple[str, ...]) -> None:
    help_text = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"}).output
    assert "--json" in help_text
    if command[-1] in DESTRUCTIVE_VERBS:
        assert "--yes" in help_text

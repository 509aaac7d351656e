"""What a deployment's build decides without I/O: the framework of a repository from its file list, and the
bounded build log."""

from __future__ import annotations

import json

import pytest

from cloudplane.domain.builds import BuildLog, NoFramework, Toolchain, detect_framework, tail
from cloudplane.domain.errors import ValidationFailed
from cloudplane.services import sources


def package(**deps: str) -> str:
    return json.dumps({"name": "x", "version": "1.0.0", "dependencies": deps})


@pytest.mark.parametrize(
    ("files", "contents", "framework", "toolchain", "manifest"),
    [
        (
            {"requirements.txt", "app.py"},
            {"requirements.txt": "fastapi==0.110\nuvicorn\n"},
            "fastapi",
            "python",
            "requirements.txt",
        ),
        ({"requirements.txt"}, {"requirements.txt": "Flask>=3\n"}, "flask", "python", "requirements.txt"),
        ({"requirements.txt", "manage.py"}, {"requirements.txt": ""}, "django", "python", "requirements.txt"),
        (
            {"pyproject.toml"},
            {"pyproject.toml": '[project]\ndependencies = [\n  "Django>=5",\n]\n'},
            "django",
            "python",
            "pyproject.toml",
        ),
        (
            {"pyproject.toml", "src"},
            {"pyproject.toml": "[project]\nname = 'x'\n"},
            "python",
            "python",
            "pyproject.toml",
        ),
        ({"requirements.txt", "Procfile"}, {"requirements.txt": "# nothing\n"}, "python", "python", "requirements.txt"),
        (
            {"package.json", "package-lock.json"},
            {"package.json": package(express="^4")},
            "express",
            "node",
            "package-lock.json",
        ),
        ({"package.json"}, {"package.json": package(next="14", react="18")}, "nextjs", "node", "package.json"),
        ({"package.json"}, {"package.json": package(react="18")}, "react", "node", "package.json"),
        ({"package.json"}, {"package.json": "not json"}, "nodejs", "node", "package.json"),
        ({"package.json", "requirements.txt"}, {"package.json": package()}, "nodejs", "node", "package.json"),
        ({"Procfile", "run.sh"}, {}, "custom", "procfile", None),
    ],
)
def test_the_framework_comes_from_the_repository(files, contents, framework, toolchain, manifest) -> None:
    detected = detect_framework(files, contents)
    assert (detected.framework, detected.toolchain, detected.manifest) == (framework, Toolchain(toolchain), manifest)


def test_a_repository_with_nothing_to_build_says_what_to_add() -> None:
    with pytest.raises(NoFramework, match="requirements.txt or pyproject.toml"):
        detect_framework({"README.md", "main.go"}, {})


def test_the_log_keeps_its_last_bytes_and_says_how_much_it_dropped() -> None:
    log = BuildLog(limit=4096)
    for i in range(2000):
        log.line(f"line {i}")
    text = log.text()
    assert text.startswith("[") and "earlier bytes dropped]" in text
    assert text.endswith("line 1999\n")
    assert len(text.encode()) < 4096 + 100
    assert tail(text, 2) == "line 1998\nline 1999"


@pytest.mark.parametrize(
    ("url", "local_allowed", "ok"),
    [
        ("https://github.com/user/repo", False, True),
        ("https://git.example.com:8443/team/app.git", False, True),
        ("git://127.0.0.1:9418/app", False, False),
        ("git://127.0.0.1:9418/app", True, True),
        ("file:///srv/git/app", False, False),
        ("file:///srv/git/app", True, True),
        ("/srv/git/app", True, True),
        ("http://github.com/user/repo", True, False),
        ("https://user:token@github.com/user/repo", True, False),
        ("https://10.0.0.1/user/repo", True, False),
        ("https://93.184.215.14/user/repo", False, True),
        ("git@github.com:user/repo.git", True, False),
        ("ext::sh -c touch% /tmp/pwned", True, False),
        ("--upload-pack=touch /tmp/pwned", True, False),
        ("relative/path", True, False),
    ],
)
def test_which_sources_an_app_may_name(url: str, local_allowed: bool, ok: bool) -> None:
    if ok:
        assert sources.check_source(url, allow_local=local_allowed) == url
    else:
        with pytest.raises(ValidationFailed) as caught:
            sources.check_source(url, allow_local=local_allowed)
        assert caught.value.details["field"] == "github_repo"

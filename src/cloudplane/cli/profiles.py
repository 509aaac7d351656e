"""The CLI's profiles: a service URL and an API key under a name, in `$XDG_CONFIG_HOME/cloudplane/config.toml`
(~/.config by default), readable by its owner only. CLOUDPLANE_URL and CLOUDPLANE_TOKEN override the profile."""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

DEFAULT = "default"


class ProfileMissing(Exception):
    pass


@dataclass(frozen=True)
class Profile:
    name: str
    url: str
    token: str


def config_path() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "cloudplane" / "config.toml"


def _read() -> dict[str, Any]:
    path = config_path()
    if not path.exists():
        return {}
    with path.open("rb") as f:
        return tomllib.load(f)


def resolve(name: str | None) -> Profile:
    """The profile to use: `name`, else the config's current one; the environment's URL and token win."""
    config = _read()
    chosen = name or config.get("current") or DEFAULT
    saved = config.get("profiles", {}).get(chosen, {})
    url = os.environ.get("CLOUDPLANE_URL") or saved.get("url")
    token = os.environ.get("CLOUDPLANE_TOKEN") or saved.get("token")
    if not url or not token:
        where = f"profile {chosen!r} is not in {config_path()}" if not saved else f"profile {chosen!r} is incomplete"
        raise ProfileMissing(
            f"{where}: run `cloudplane login --url URL --token KEY --profile {chosen}` "
            "or set CLOUDPLANE_URL and CLOUDPLANE_TOKEN"
        )
    return Profile(chosen, url, token)


def save(profile: Profile, *, make_current: bool = True) -> Path:
    """Write `profile` into the config file (mode 0600, its folder 0700), keeping the other profiles."""
    config = _read()
    profiles = {**config.get("profiles", {}), profile.name: {"url": profile.url, "token": profile.token}}
    current = profile.name if make_current else config.get("current", profile.name)
    # TOML basic strings take JSON's escapes, so json.dumps writes each string safely.
    lines = [f"current = {json.dumps(current)}", ""]
    for name, values in sorted(profiles.items()):
        lines.append(f"[profiles.{json.dumps(name)}]")
        lines.extend(f"{key} = {json.dumps(str(value))}" for key, value in sorted(values.items()))
        lines.append("")
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)  # a file that existed keeps its mode through O_CREAT
    with os.fdopen(fd, "w") as f:
        f.write("\n".join(lines))
    return path

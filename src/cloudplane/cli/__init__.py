"""The `cloudplane` command: serve the API (and MCP over stdio), migrate the database, manage users and API keys, prepare hosts."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cloudplane.config import get_settings

if TYPE_CHECKING:
    from cloudplane.core import Core

app = typer.Typer(help="Cloudplane: a self-hosted cloud control plane.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
admin_app = typer.Typer(help="Users and API keys.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(admin_app, name="admin")
host_app = typer.Typer(help="Set up this machine for real servers (LXC).", no_args_is_help=True)
app.add_typer(host_app, name="host")


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on")] = "",
    port: Annotated[int, typer.Option(help="Port to listen on")] = 0,
) -> None:
    """Run the API with its workflow engine.  Example: cloudplane serve --host 0.0.0.0 --port 8080"""
    import uvicorn

    if host:
        os.environ["CLOUDPLANE_HOST"] = host
    if port:
        os.environ["CLOUDPLANE_PORT"] = str(port)
    get_settings.cache_clear()
    settings = get_settings()
    from cloudplane.app import create_app

    # Forwarded headers only from the proxies the operator names: uvicorn's default believes any local caller.
    proxies = settings.trusted_proxies
    uvicorn.run(
        create_app(),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        proxy_headers=bool(proxies),
        forwarded_allow_ips=proxies or "",
    )


@app.command("mcp")
def mcp_stdio() -> None:
    """Serve the MCP tools over stdio for the account of the API key in CLOUDPLANE_API_KEY, on the database `serve`
    uses.  Example: CLOUDPLANE_API_KEY=cp_... cloudplane mcp"""
    from cloudplane.mcp.stdio import API_KEY_VARIABLE, StartError, run

    try:
        run(get_settings(), os.environ.get(API_KEY_VARIABLE))
    except StartError as e:
        typer.echo(f"error: {e}", err=True)
        raise typer.Exit(2) from None


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Apply all database migrations.  Example: cloudplane db upgrade"""
    from cloudplane.db.migrate import upgrade

    upgrade(get_settings().database_url)
    typer.echo("database is up to date")


def _core() -> Core:
    from cloudplane.app import prepare
    from cloudplane.core import Core

    core = Core.build(get_settings())
    prepare(core)
    return core


@admin_app.command("create-user")
def create_user(
    email: Annotated[str, typer.Option(help="Sign-in email")],
    name: Annotated[str, typer.Option(help="Display name")] = "",
    admin: Annotated[bool, typer.Option("--admin", help="Give the user the admin role")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Create a user (with an account of its own) and an API key for them.
    Example: cloudplane admin create-user --email ops@example.com --admin"""
    from cloudplane.domain.errors import CloudplaneError
    from cloudplane.services.accounts import create_api_key
    from cloudplane.services.accounts import create_user as make_user

    core = _core()
    try:
        user = make_user(core.db, email=email, name=name or email.split("@")[0], role="admin" if admin else "user")
    except CloudplaneError as e:
        typer.echo(f"error: {e.message}", err=True)
        raise typer.Exit(1) from None
    _, key = create_api_key(core.db, user_id=user.id, name="cli")
    _print_key(user.email, user.role, key, as_json)


@admin_app.command("create-key")
def create_key(
    email: Annotated[str, typer.Option(help="Email of an existing user")],
    name: Annotated[str, typer.Option(help="A name to recognise the key by")] = "cli",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Create another API key for an existing user.  Example: cloudplane admin create-key --email ops@example.com"""
    from cloudplane.domain.errors import CloudplaneError
    from cloudplane.services.accounts import create_api_key, find_user

    core = _core()
    try:
        user = find_user(core.db, email)
    except CloudplaneError as e:
        typer.echo(f"error: {e.message}", err=True)
        raise typer.Exit(1) from None
    _, key = create_api_key(core.db, user_id=user.id, name=name)
    _print_key(user.email, user.role, key, as_json)


def _print_key(email: str, role: str, key: str, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps({"email": email, "role": role, "api_key": key}))
    else:
        typer.echo(f"user: {email} ({role})\napi key (shown once): {key}")


@host_app.command("prepare")
def host_prepare(
    rebuild_images: Annotated[bool, typer.Option("--rebuild-images", help="Build the images again")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Create Cloudplane's LXC bridge and build the local images; safe to run again (e.g. at every boot)."""
    from cloudplane.domain.errors import CloudplaneError
    from cloudplane.providers import lxc_host

    settings = get_settings()
    try:
        report = lxc_host.prepare_host(
            lxc_host.Network.parse(settings.lxc_bridge, settings.lxc_subnet),
            Path(settings.lxc_path),
            Path(settings.lxc_images_path),
            rebuild_images=rebuild_images,
        )
    except CloudplaneError as e:
        typer.echo(f"error: {e.message}", err=True)
        raise typer.Exit(1) from None
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(report)))
    else:
        state = "created" if report.bridge_created else "already there"
        typer.echo(f"bridge {report.bridge} ({report.gateway}, {settings.lxc_subnet}): {state}")
        typer.echo(f"containers: {settings.lxc_path}")
        typer.echo(f"images in {settings.lxc_images_path}: {', '.join(report.images)}")
        typer.echo(f"lxcfs (containers see their own memory and CPUs in /proc): {report.lxcfs}")


def main() -> None:
    app()

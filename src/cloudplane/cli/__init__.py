"""The `cloudplane` command: serve the API (and MCP over stdio), migrate the database, manage users and API keys, prepare hosts."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from cloudplane.cli import resources
from cloudplane.config import get_settings

if TYPE_CHECKING:
    from cloudplane.core import Core

app = typer.Typer(help="Cloudplane: a self-hosted cloud control plane.", no_args_is_help=True)
db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
admin_app = typer.Typer(help="Users, API keys, payments and invoice runs.", no_args_is_help=True)
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


def _record_money(email: str, amount: str, kind: str, reference: str | None, note: str | None, as_json: bool) -> None:
    from decimal import Decimal, InvalidOperation

    from cloudplane.domain.errors import CloudplaneError
    from cloudplane.services import billing
    from cloudplane.services.accounts import OPERATOR, find_user

    core = _core()
    try:
        user = find_user(core.db, email)
        payment_id, balance = billing.record_admin_payment(
            core, OPERATOR, user_id=user.id, amount=Decimal(amount), kind=kind, reference=reference, note=note
        )
    except InvalidOperation:
        typer.echo(f"error: {amount!r} is not an amount of money (e.g. 19.99)", err=True)
        raise typer.Exit(1) from None
    except CloudplaneError as e:
        typer.echo(f"error: {e.message}", err=True)
        raise typer.Exit(1) from None
    figures = {
        "payment_id": payment_id,
        "credit": str(balance.credit),
        "unpaid_invoices": str(balance.unpaid_invoices),
        "month_cost": str(balance.month_cost),
        "balance": str(balance.balance),
        "currency": balance.currency,
    }
    if as_json:
        typer.echo(json.dumps(figures))
    else:
        typer.echo(f"{kind} {payment_id} recorded for {email}: balance {figures['balance']} {balance.currency}")


@admin_app.command("payment")
def record_payment(
    email: Annotated[str, typer.Option(help="Email of the paying user")],
    amount: Annotated[str, typer.Option(help="Amount received, e.g. 19.99")],
    reference: Annotated[str | None, typer.Option(help="e.g. the bank transfer's reference")] = None,
    note: Annotated[str | None, typer.Option(help="A note for the record")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Record a payment received outside any gateway; it pays the user's open invoices as far as it goes.
    Example: cloudplane admin payment --email ann@example.com --amount 19.99 --reference TR-1234"""
    _record_money(email, amount, "payment", reference, note, as_json)


@admin_app.command("credit")
def grant_credit(
    email: Annotated[str, typer.Option(help="Email of the user")],
    amount: Annotated[str, typer.Option(help="Credit to grant, e.g. 10.00")],
    note: Annotated[str | None, typer.Option(help="Why")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Grant a user's account credit.  Example: cloudplane admin credit --email ann@example.com --amount 10"""
    _record_money(email, amount, "credit", None, note, as_json)


@admin_app.command("invoice-run")
def invoice_run(
    period: Annotated[str, typer.Option(help="The month to invoice, YYYY-MM")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Invoice a month that has ended (the monthly run does it on the 1st); nobody is invoiced twice.
    Example: cloudplane admin invoice-run --period 2026-11"""
    from cloudplane.domain.errors import CloudplaneError
    from cloudplane.services import billing
    from cloudplane.services.accounts import OPERATOR

    core = _core()
    try:
        made = billing.run_invoices(core, OPERATOR, period)
    except CloudplaneError as e:
        typer.echo(f"error: {e.message}", err=True)
        raise typer.Exit(1) from None
    rows = [{"id": i.id, "number": i.number, "account_id": i.account_id, "total": str(i.total)} for i in made]
    if as_json:
        typer.echo(json.dumps(rows))
    else:
        typer.echo(f"{len(rows)} invoices for {period}")
        for r in rows:
            typer.echo(f"  {r['number']}  account {r['account_id']}  {r['total']}")


@host_app.command("prepare")
def host_prepare(
    rebuild_images: Annotated[bool, typer.Option("--rebuild-images", help="Build the images again")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
) -> None:
    """Create Cloudplane's LXC bridge and build the local images; safe to run again (e.g. at every boot).
    Example: sudo cloudplane host prepare"""
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


# The resource commands (login, server, ssh-key, snapshot, operation, plan, image, location) over the SDK.
resources.register(app)


def main() -> None:
    app()

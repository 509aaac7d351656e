"""The resource commands of `cloudplane`, noun-verb over the Python SDK: login, server, ssh-key, snapshot,
operation, plan, image, location. Tables by Rich, `--json` on every command, a progress bar while an operation
runs, names or ids accepted, confirmation before anything destructive unless `--yes`."""

from __future__ import annotations

import functools
import json
import os
import shlex
from collections.abc import Callable, Iterable, Sequence
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn
from rich.table import Table

from cloudplane import sdk
from cloudplane.cli import profiles

F = TypeVar("F", bound=Callable[..., Any])

out = Console()
err = Console(stderr=True)

ProfileOpt = Annotated[
    str | None, typer.Option("--profile", envvar="CLOUDPLANE_PROFILE", help="Config profile (default: the current)")
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")]
WaitOpt = Annotated[bool, typer.Option("--wait/--no-wait", help="Wait for the operation, showing its progress")]
TimeoutOpt = Annotated[float, typer.Option("--timeout", help="Seconds to wait at most")]
ServerArg = Annotated[str, typer.Argument(help="Server id or label")]

server_app = typer.Typer(help="Servers: list, create, show, start, stop, reboot, delete, ssh.", no_args_is_help=True)
ssh_key_app = typer.Typer(help="SSH keys: list, create, show, delete.", no_args_is_help=True)
snapshot_app = typer.Typer(help="Snapshots of a server: list, create, restore, delete.", no_args_is_help=True)
operation_app = typer.Typer(help="Long actions: list, show, wait.", no_args_is_help=True)
plan_app = typer.Typer(help="Server plans.", no_args_is_help=True)
image_app = typer.Typer(help="Operating system images.", no_args_is_help=True)
location_app = typer.Typer(help="Locations.", no_args_is_help=True)


def register(app: typer.Typer) -> None:
    app.command("login")(login)
    for sub, name in (
        (server_app, "server"),
        (ssh_key_app, "ssh-key"),
        (snapshot_app, "snapshot"),
        (operation_app, "operation"),
        (plan_app, "plan"),
        (image_app, "image"),
        (location_app, "location"),
    ):
        app.add_typer(sub, name=name)


def reports_errors(command: F) -> F:
    """Print an SDK or profile error as one line on stderr and exit 1, never a traceback."""

    @functools.wraps(command)
    def run(*args: Any, **kwargs: Any) -> Any:
        try:
            return command(*args, **kwargs)
        except (sdk.CloudplaneError, profiles.ProfileMissing) as e:
            err.print(f"[red]error:[/red] {e}", highlight=False, markup=True)
            raise typer.Exit(1) from None

    return run  # type: ignore[return-value]


def connect(profile: str | None) -> sdk.Client:
    chosen = profiles.resolve(profile)
    return sdk.Client(chosen.url, chosen.token)


def _plain(value: Any) -> Any:
    # Prices are Decimal in the SDK; JSON shows them as numbers, as the service does (a float prints them exactly).
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


def emit_json(value: Any) -> None:
    typer.echo(json.dumps(_plain(value), indent=2, default=str))


def table(rows: Iterable[Any], columns: Sequence[tuple[str, Callable[[Any], Any]]], as_json: bool) -> None:
    """Rows as a Rich table, or their replies as JSON."""
    rows = list(rows)
    if as_json:
        emit_json([row.raw for row in rows])
        return
    t = Table(*(title for title, _ in columns))
    for row in rows:
        t.add_row(*("" if (v := get(row)) is None else str(v) for _, get in columns))
    out.print(t)


def details(fields: dict[str, Any]) -> None:
    t = Table(show_header=False, box=None)
    for name, value in fields.items():
        t.add_row(f"[bold]{name}[/bold]", "" if value is None else str(value))
    out.print(t)


def follow(operation: sdk.Operation | None, wait: bool, timeout: float) -> sdk.Operation | None:
    """Wait for `operation` with a progress bar on stderr (stdout stays the command's output)."""
    if operation is None or not wait:
        return operation
    with Progress(
        TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(), TimeElapsedColumn(), console=err
    ) as bar:
        task = bar.add_task(f"{operation.kind} {operation.status}", total=100)

        def moved(op: sdk.Operation) -> None:
            bar.update(task, completed=op.progress, description=f"{op.kind} {op.status}")

        done = operation.wait(timeout=timeout, on_progress=moved)
        bar.update(task, completed=100, description=f"{done.kind} {done.status}")
    return done


def confirm(what: str, yes: bool) -> None:
    if not yes and not typer.confirm(f"{what}?", default=False, err=True):
        err.print("cancelled")
        raise typer.Exit(1)


def action_result(resource: Any, operation: sdk.Operation | None, as_json: bool, message: str) -> None:
    if as_json:
        emit_json(
            {
                "resource": getattr(resource, "raw", None),
                "operation": operation.raw if operation is not None else None,
            }
        )
    else:
        suffix = f" (operation {operation.id}: {operation.status})" if operation is not None else ""
        out.print(message + suffix, highlight=False)


@reports_errors
def login(
    url: Annotated[str, typer.Option(help="The service's address, e.g. https://cloud.example.com")],
    token: Annotated[
        str,
        typer.Option(help="An API key (cloudplane admin create-key makes one)", envvar="CLOUDPLANE_TOKEN"),
    ],
    profile: Annotated[str, typer.Option("--profile", help="Save under this name")] = profiles.DEFAULT,
    as_json: JsonOpt = False,
) -> None:
    """Check an API key against a service and save it as a profile (the current one).
    Example: cloudplane login --url http://127.0.0.1:8000 --token cp_... --profile work"""
    with sdk.Client(url, token) as client:
        account = client.account.get()
    path = profiles.save(profiles.Profile(profile, url.rstrip("/"), token))
    if as_json:
        emit_json({"profile": profile, "url": url, "email": account.email, "config": str(path)})
    else:
        out.print(f"logged in to {url} as {account.email}; profile {profile!r} saved in {path}", highlight=False)


SERVER_COLUMNS: list[tuple[str, Callable[[Any], Any]]] = [
    ("ID", lambda s: s.id),
    ("LABEL", lambda s: s.label),
    ("STATUS", lambda s: s.status + (f" ({s.task_state})" if s.task_state else "")),
    ("IP", lambda s: s.ip_address),
    ("PLAN", lambda s: s.plan),
    ("IMAGE", lambda s: s.image),
    ("LOCATION", lambda s: s.location),
]


@server_app.command("list")
@reports_errors
def server_list(profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """List your servers.  Example: cloudplane server list --json"""
    with connect(profile) as client:
        table(client.servers.list(), SERVER_COLUMNS, as_json)


@server_app.command("create")
@reports_errors
def server_create(
    label: Annotated[str, typer.Option(help="A name for the server")],
    plan: Annotated[str, typer.Option(help="Plan slug (cloudplane plan list)")],
    image: Annotated[str, typer.Option(help="Image slug (cloudplane image list)")],
    location: Annotated[str, typer.Option(help="Location slug (cloudplane location list)")],
    hostname: Annotated[str | None, typer.Option(help="Hostname (default: from the label)")] = None,
    ssh_key: Annotated[list[str] | None, typer.Option("--ssh-key", help="SSH key id or title; repeatable")] = None,
    password: Annotated[str | None, typer.Option(help="Root password (default: generated and shown once)")] = None,
    wait: WaitOpt = True,
    timeout: TimeoutOpt = 600.0,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Create a server and wait until it runs.
    Example: cloudplane server create --label web --plan basic-1gb --image ubuntu-22-04 --location nyc1 --ssh-key laptop"""
    with connect(profile) as client:
        key_ids = [client.ssh_keys.find(k).id for k in ssh_key or []]
        server, operation = client.servers.create(
            label=label,
            plan=plan,
            image=image,
            location=location,
            hostname=hostname,
            password=password,
            ssh_keys=key_ids,
        )
        operation = follow(operation, wait, timeout)
        root_password = server.root_password  # only the create reply has it
        if wait:
            server = client.servers.get(server.id)
    message = f"server {server.id} ({server.label}) {server.status}, ip {server.ip_address or '-'}"
    if root_password:
        server.raw["root_password"] = root_password
        message += f"\nroot password (shown once): {root_password}"
    action_result(server, operation, as_json, message)


@server_app.command("show")
@reports_errors
def server_show(server: ServerArg, profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """Show one server.  Example: cloudplane server show web"""
    with connect(profile) as client:
        found = client.servers.find(server)
    if as_json:
        emit_json(found.raw)
    else:
        details({title: get(found) for title, get in SERVER_COLUMNS} | {"HOSTNAME": found.hostname})


def _server_verb(verb: str, help_text: str, question: str | None) -> None:
    """Register `server VERB`: find the server, ask `question` (a destructive verb) unless --yes, act, follow."""

    def act(
        server: ServerArg,
        yes: YesOpt = False,
        wait: WaitOpt = True,
        timeout: TimeoutOpt = 600.0,
        profile: ProfileOpt = None,
        as_json: JsonOpt = False,
    ) -> None:
        if question:
            confirm(question.format(server=server), yes)
        with connect(profile) as client:
            found = client.servers.find(server)
            _, operation = getattr(client.servers, verb)(found.id)
            operation = follow(operation, wait, timeout)
        action_result(found, operation, as_json, f"{verb} server {found.id} ({found.label})")

    server_app.command(verb, help=help_text)(reports_errors(act))


_server_verb("start", "Start a stopped server.  Example: cloudplane server start web", None)
_server_verb("stop", "Shut a server down.  Example: cloudplane server stop web --yes", "Stop server {server}")
_server_verb("reboot", "Reboot a server.  Example: cloudplane server reboot web --yes", "Reboot server {server}")
_server_verb(
    "delete",
    "Delete a server and its disk for good.  Example: cloudplane server delete web --yes",
    "Delete server {server} and its disk for good",
)


def ssh_command(user: str, address: str, identity: Path | None, extra: Sequence[str]) -> list[str]:
    return ["ssh", *(["-i", str(identity)] if identity else []), f"{user}@{address}", *extra]


@server_app.command("ssh", context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
@reports_errors
def server_ssh(
    ctx: typer.Context,
    server: ServerArg,
    user: Annotated[str, typer.Option(help="Remote user")] = "root",
    identity: Annotated[Path | None, typer.Option("--identity", "-i", help="Private key file")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Print the ssh command instead of running it")] = False,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Open an SSH session to a server (anything after the server goes to ssh).
    Example: cloudplane server ssh web -- uptime"""
    with connect(profile) as client:
        found = client.servers.find(server)
    if not found.ip_address:
        raise sdk.InvalidState(f"server {found.id} has no IP address yet", code="INVALID_STATE")
    argv = ssh_command(user, found.ip_address, identity, ctx.args)
    if as_json:
        emit_json({"argv": argv})
    elif dry_run:
        typer.echo(shlex.join(argv))
    if as_json or dry_run:
        return
    os.execvp(argv[0], argv)


KEY_COLUMNS: list[tuple[str, Callable[[Any], Any]]] = [
    ("ID", lambda k: k.id),
    ("TITLE", lambda k: k.title),
    ("FINGERPRINT", lambda k: k.fingerprint),
]


@ssh_key_app.command("list")
@reports_errors
def ssh_key_list(profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """List your SSH keys.  Example: cloudplane ssh-key list"""
    with connect(profile) as client:
        table(client.ssh_keys.list(), KEY_COLUMNS, as_json)


@ssh_key_app.command("create")
@reports_errors
def ssh_key_create(
    title: Annotated[str, typer.Option(help="A name for the key")],
    public_key_file: Annotated[Path, typer.Option("--public-key-file", help="The public key file", exists=True)],
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Add a public key.  Example: cloudplane ssh-key create --title laptop --public-key-file ~/.ssh/id_ed25519.pub"""
    with connect(profile) as client:
        key = client.ssh_keys.create(title=title, public_key=public_key_file.read_text().strip())
    if as_json:
        emit_json(key.raw)
    else:
        table([key], KEY_COLUMNS, as_json)


@ssh_key_app.command("show")
@reports_errors
def ssh_key_show(
    key: Annotated[str, typer.Argument(help="Key id or title")], profile: ProfileOpt = None, as_json: JsonOpt = False
) -> None:
    """Show one SSH key.  Example: cloudplane ssh-key show laptop"""
    with connect(profile) as client:
        found = client.ssh_keys.find(key)
    if as_json:
        emit_json(found.raw)
    else:
        details({"ID": found.id, "TITLE": found.title, "FINGERPRINT": found.fingerprint, "KEY": found.public_key})


@ssh_key_app.command("delete")
@reports_errors
def ssh_key_delete(
    key: Annotated[str, typer.Argument(help="Key id or title")],
    yes: YesOpt = False,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete an SSH key.  Example: cloudplane ssh-key delete laptop --yes"""
    confirm(f"Delete SSH key {key}", yes)
    with connect(profile) as client:
        found = client.ssh_keys.find(key)
        client.ssh_keys.delete(found.id)
    action_result(found, None, as_json, f"deleted SSH key {found.id} ({found.title})")


SNAPSHOT_COLUMNS: list[tuple[str, Callable[[Any], Any]]] = [
    ("ID", lambda s: s.id),
    ("LABEL", lambda s: s.label),
    ("STATUS", lambda s: s.status),
    ("SIZE GB", lambda s: s.size_gb),
    ("SERVER", lambda s: s.server_id),
]
SnapshotArg = Annotated[str, typer.Argument(help="Snapshot id or label")]


@snapshot_app.command("list")
@reports_errors
def snapshot_list(server: ServerArg, profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """List a server's snapshots.  Example: cloudplane snapshot list web"""
    with connect(profile) as client:
        table(client.snapshots.list(client.servers.find(server).id), SNAPSHOT_COLUMNS, as_json)


@snapshot_app.command("create")
@reports_errors
def snapshot_create(
    server: ServerArg,
    label: Annotated[str, typer.Option(help="A name for the snapshot")],
    description: Annotated[str | None, typer.Option(help="What it is for")] = None,
    wait: WaitOpt = True,
    timeout: TimeoutOpt = 600.0,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Snapshot a server's disk.  Example: cloudplane snapshot create web --label before-upgrade"""
    with connect(profile) as client:
        found = client.servers.find(server)
        snapshot, operation = client.snapshots.create(found.id, label=label, description=description)
        operation = follow(operation, wait, timeout)
    action_result(snapshot, operation, as_json, f"snapshot {snapshot.id} ({snapshot.label}) of server {found.id}")


@snapshot_app.command("restore")
@reports_errors
def snapshot_restore(
    server: ServerArg,
    snapshot: SnapshotArg,
    yes: YesOpt = False,
    wait: WaitOpt = True,
    timeout: TimeoutOpt = 600.0,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Put a server's disk back as a snapshot has it (what is on it now is lost).
    Example: cloudplane snapshot restore web before-upgrade --yes"""
    confirm(f"Restore server {server} from snapshot {snapshot} (its disk now is lost)", yes)
    with connect(profile) as client:
        found = client.servers.find(server)
        snap = client.snapshots.find(found.id, snapshot)
        restored, operation = client.snapshots.restore(found.id, snap.id)
        operation = follow(operation, wait, timeout)
    action_result(restored, operation, as_json, f"restore server {found.id} from snapshot {snap.id}")


@snapshot_app.command("delete")
@reports_errors
def snapshot_delete(
    server: ServerArg,
    snapshot: SnapshotArg,
    yes: YesOpt = False,
    wait: WaitOpt = True,
    timeout: TimeoutOpt = 600.0,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a snapshot.  Example: cloudplane snapshot delete web before-upgrade --yes"""
    confirm(f"Delete snapshot {snapshot} of server {server}", yes)
    with connect(profile) as client:
        found = client.servers.find(server)
        snap = client.snapshots.find(found.id, snapshot)
        _, operation = client.snapshots.delete(found.id, snap.id)
        operation = follow(operation, wait, timeout)
    action_result(snap, operation, as_json, f"delete snapshot {snap.id} ({snap.label})")


OPERATION_COLUMNS: list[tuple[str, Callable[[Any], Any]]] = [
    ("ID", lambda o: o.id),
    ("KIND", lambda o: o.kind),
    ("STATUS", lambda o: o.status),
    ("PROGRESS", lambda o: f"{o.progress}%"),
    ("TARGET", lambda o: f"{o.target_type} {o.target_id}"),
    ("ERROR", lambda o: o.error_message),
]
OperationArg = Annotated[str, typer.Argument(help="Operation id")]


@operation_app.command("list")
@reports_errors
def operation_list(
    status: Annotated[str | None, typer.Option(help="Only pending, running, succeeded or failed")] = None,
    limit: Annotated[int, typer.Option(help="How many, newest first (at most 100)")] = 20,
    profile: ProfileOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List your latest operations.  Example: cloudplane operation list --status running"""
    with connect(profile) as client:
        table(client.operations.list(status=status, limit=limit), OPERATION_COLUMNS, as_json)


@operation_app.command("show")
@reports_errors
def operation_show(operation: OperationArg, profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
    """Show one operation.  Example: cloudplane operation show 6f1c...-..."""
    with connect(profile) as client:
        table([client.operations.get(operation)], OPERATION_COLUMNS, as_json)


@operation_app.command("wait")
@reports_errors
def operation_wait(
    operation: OperationArg, timeout: TimeoutOpt = 600.0, profile: ProfileOpt = None, as_json: JsonOpt = False
) -> None:
    """Wait for an operation to end, showing its progress.  Example: cloudplane operation wait 6f1c...-..."""
    with connect(profile) as client:
        done = follow(client.operations.get(operation), True, timeout)
    table([done], OPERATION_COLUMNS, as_json)


Columns = list[tuple[str, Callable[[Any], Any]]]


def _catalog_list(sub: typer.Typer, resource: str, help_text: str, columns: Columns) -> None:
    def list_all(profile: ProfileOpt = None, as_json: JsonOpt = False) -> None:
        with connect(profile) as client:
            rows = getattr(client, resource).list()
        table(rows, columns, as_json)

    sub.command("list", help=help_text)(reports_errors(list_all))


def _yes_no(value: bool) -> str:
    return "yes" if value else "no"


_catalog_list(
    plan_app,
    "plans",
    "List the plans servers are made with.  Example: cloudplane plan list",
    [
        ("SLUG", lambda p: p.slug),
        ("NAME", lambda p: p.name),
        ("CPU", lambda p: p.cpu),
        ("RAM MB", lambda p: p.ram_mb),
        ("DISK GB", lambda p: p.disk_gb),
        ("PRICE/MONTH", lambda p: p.price_monthly),
        ("AVAILABLE", lambda p: _yes_no(p.available)),
    ],
)
_catalog_list(
    image_app,
    "images",
    "List the images a server can boot.  Example: cloudplane image list --json",
    [
        ("SLUG", lambda i: i.slug),
        ("NAME", lambda i: i.name),
        ("ARCH", lambda i: i.architecture),
        ("AVAILABLE", lambda i: _yes_no(i.available)),
    ],
)
_catalog_list(
    location_app,
    "locations",
    "List the locations servers run in.  Example: cloudplane location list",
    [
        ("SLUG", lambda loc: loc.slug),
        ("NAME", lambda loc: loc.name),
        ("COUNTRY", lambda loc: loc.country),
        ("AVAILABLE", lambda loc: _yes_no(loc.available)),
    ],
)

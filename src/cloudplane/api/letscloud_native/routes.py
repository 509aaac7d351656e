"""Native LetsCloud routes (what letscloud-go and letscloud-node call): parse, call one service, answer in the
envelope. Mounted at /api ahead of every other route, and matched only by requests in the dialect (`is_native`):
such a request never reaches the GPT-Actions face sharing the base, and every reply it gets, a 404 for a path the
dialect lacks included, is in this face's envelope."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request
from fastapi.responses import Response
from starlette.routing import Match, Mount
from starlette.types import Scope

from cloudplane import context
from cloudplane.api.common.deps import CoreDep, principal_from_token, read, write
from cloudplane.api.common.faces import face_route_class
from cloudplane.api.common.ratelimit import count_principal
from cloudplane.api.letscloud_native import schemas as w
from cloudplane.api.letscloud_native.envelope import BASE, is_native, native_renderer, ok
from cloudplane.db.tables import Location
from cloudplane.domain.errors import NotFound, Unauthorized
from cloudplane.domain.ids import parse_id
from cloudplane.domain.pricing import money_text
from cloudplane.services import accounts, servers, snapshots, ssh_keys
from cloudplane.services.accounts import Principal
from cloudplane.services.catalog import CatalogView

# No redirect for a trailing slash: a redirect has no body, and every reply of the dialect has one.
router = APIRouter(route_class=face_route_class(native_renderer), redirect_slashes=False)

# The native lists have no paging: each answers the account's first LIST_LIMIT, oldest first, and says so in its
# message when there are more.
LIST_LIMIT = 1000


async def native_principal(
    request: Request, core: CoreDep, api_token: Annotated[str | None, Header(alias="api-token")] = None
) -> Principal:
    """The caller, by the API key (or access token) in `api-token`, counted against its tier's rate limit."""
    if not api_token or not api_token.strip():
        raise Unauthorized("Missing credentials: send your API key in the `api-token` header")
    principal = await principal_from_token(core, api_token.strip())
    context.bind(actor_user_id=principal.user_id)
    await count_principal(request, principal)
    return principal


PrincipalDep = Annotated[Principal, Depends(native_principal)]


def _id(text: str, what: str) -> int:
    """An identifier or slug of the native wire (a string of digits) as the core's id; anything else names nothing."""
    number = parse_id(text)
    if number is None:
        raise NotFound(f"{what} not found", **{what.lower().replace(" ", "_"): text})
    return number


def _listed(what: str, shown: int, total: int) -> str:
    if total > shown:
        return f"{what.capitalize()}: the first {shown} of {total}, oldest first"
    return f"{what.capitalize()}: {total}"


def _location(view: CatalogView, slug: str) -> Location:
    location = view.by_slug("location", slug)
    if not isinstance(location, Location):
        raise NotFound(f"Location {slug!r} not found; list the locations for their slugs", location=slug)
    return location


@router.get("/profile")
async def profile(core: CoreDep, principal: PrincipalDep) -> Response:
    account, user = await read(core, accounts.get_account, core.db, principal)
    out = w.ProfileOut(
        name=user.name,
        company_name=account.company or "",
        email=user.email,
        currency=account.currency,
        balance=money_text(account.balance),
    )
    return ok("Your profile", out)


@router.get("/locations")
async def locations(core: CoreDep, principal: PrincipalDep) -> Response:
    view = core.catalog.view()
    # A location whose provider cannot run here, or serves nothing, shows as unavailable.
    out = [w.LocationOut.of(loc, view.is_open(loc)) for loc in view.locations]
    return ok(_listed("locations", len(out), len(out)), out)


@router.get("/locations/{slug}/plans")
async def location_plans(slug: str, core: CoreDep, principal: PrincipalDep) -> Response:
    view = core.catalog.view()
    location = _location(view, slug)
    plans = [w.PlanOut.of(p) for p in view.plans_at(location)]
    out = w.LocationPlans(slug=location.slug, country=location.country, city=location.name, plans=plans)
    return ok(_listed(f"plans in {location.slug}", len(plans), len(plans)), [out])


@router.get("/locations/{slug}/images")
async def location_images(slug: str, core: CoreDep, principal: PrincipalDep) -> Response:
    view = core.catalog.view()
    images = [w.ImageOut.of(i) for i in view.images_at(_location(view, slug))]
    return ok(_listed(f"images in {slug}", len(images), len(images)), images)


@router.post("/sshkeys")
async def create_ssh_key(body: w.SSHKeyCreate, core: CoreDep, principal: PrincipalDep) -> Response:
    if body.key:
        key = await write(core, ssh_keys.create_key, core, principal, title=body.title, public_key=body.key)
        return ok("SSH key added", w.SSHKeyOut.of(key), status_code=201)
    key, private_key = await write(core, ssh_keys.generate_key, core, principal, title=body.title)
    message = "SSH key pair made: keep its private key now, it is shown only in this reply"
    return ok(message, w.SSHKeyOut.of(key, private_key), status_code=201)


@router.get("/sshkeys")
async def list_ssh_keys(core: CoreDep, principal: PrincipalDep) -> Response:
    page = await read(core, ssh_keys.list_keys, core, principal, page=1, per_page=LIST_LIMIT)
    return ok(_listed("SSH keys", len(page.items), page.total), [w.SSHKeyOut.of(k) for k in page.items])


@router.get("/sshkeys/{slug_or_title}")
async def get_ssh_key(slug_or_title: str, core: CoreDep, principal: PrincipalDep) -> Response:
    return ok("SSH key", w.SSHKeyOut.of(await read(core, ssh_keys.find_key, core, principal, slug_or_title)))


@router.delete("/sshkeys")
async def delete_ssh_key(body: w.SSHKeyDelete, core: CoreDep, principal: PrincipalDep) -> Response:
    await write(core, ssh_keys.delete_key, core, principal, _id(body.slug, "SSH key"))
    return ok("SSH key deleted")


@router.get("/instances")
async def list_instances(core: CoreDep, principal: PrincipalDep) -> Response:
    page = await read(core, servers.list_servers, core, principal, page=1, per_page=LIST_LIMIT)
    view = core.catalog.view()
    return ok(_listed("instances", len(page.items), page.total), [w.InstanceOut.of(s, view) for s in page.items])


@router.post("/instances")
async def create_instance(body: w.InstanceCreate, core: CoreDep, principal: PrincipalDep) -> Response:
    server, generated_password = await write(
        core,
        servers.create_server,
        core,
        principal,
        label=body.label,
        plan=body.plan_slug,
        image=body.image_slug,
        location=body.location_slug,
        hostname=body.hostname or None,
        password=body.password or None,
        ssh_key_names=[body.ssh_slug] if body.ssh_slug else [],
    )
    out = w.InstanceOut.of(server, core.catalog.view(), initial_root_password=generated_password or "")
    return ok(f"Instance {server.id} is being created", out, status_code=201)


@router.get("/instances/{identifier}")
async def get_instance(identifier: str, core: CoreDep, principal: PrincipalDep) -> Response:
    server = await read(core, servers.get_server, core, principal, _id(identifier, "Instance"))
    return ok("Instance", w.InstanceOut.of(server, core.catalog.view()))


async def _action(core: Any, principal: Principal, identifier: str, action: str, message: str) -> Response:
    server = await write(core, servers.server_action, core, principal, _id(identifier, "Instance"), action)
    return ok(f"Instance {server.id} {message}")


@router.delete("/instances/{identifier}")
async def delete_instance(identifier: str, core: CoreDep, principal: PrincipalDep) -> Response:
    return await _action(core, principal, identifier, "delete", "is being deleted")


@router.put("/instances/{identifier}/power-on")
async def power_on(identifier: str, core: CoreDep, principal: PrincipalDep) -> Response:
    return await _action(core, principal, identifier, "start", "is being powered on")


@router.put("/instances/{identifier}/power-off")
async def power_off(identifier: str, core: CoreDep, principal: PrincipalDep) -> Response:
    return await _action(core, principal, identifier, "stop", "is being powered off")


@router.put("/instances/{identifier}/reboot")
async def reboot(identifier: str, core: CoreDep, principal: PrincipalDep) -> Response:
    return await _action(core, principal, identifier, "reboot", "is being rebooted")


@router.put("/instances/{identifier}/reset-password")
async def reset_password(identifier: str, body: w.PasswordReset, core: CoreDep, principal: PrincipalDep) -> Response:
    server_id = _id(identifier, "Instance")
    await write(core, servers.reset_root_password, core, principal, server_id, body.password)
    return ok(f"Instance {server_id}'s root password is being reset")


@router.post("/instances/{identifier}/snapshots")
async def create_snapshot(identifier: str, body: w.SnapshotLabel, core: CoreDep, principal: PrincipalDep) -> Response:
    server_id = _id(identifier, "Instance")
    snapshot = await write(core, snapshots.snapshot_server, core, principal, server_id, label=body.label)
    return ok(
        f"Snapshot {snapshot.id} of instance {server_id} is being taken", w.SnapshotOut.of(snapshot), status_code=201
    )


@router.get("/snapshots")
async def list_snapshots(core: CoreDep, principal: PrincipalDep) -> Response:
    page = await read(core, snapshots.list_account_snapshots, core, principal, page=1, per_page=LIST_LIMIT)
    return ok(_listed("snapshots", len(page.items), page.total), [w.SnapshotOut.of(s) for s in page.items])


@router.get("/snapshots/{slug}")
async def get_snapshot(slug: str, core: CoreDep, principal: PrincipalDep) -> Response:
    snapshot = await read(core, snapshots.get_account_snapshot, core, principal, _id(slug, "Snapshot"))
    return ok("Snapshot", w.SnapshotOut.of(snapshot))


@router.put("/snapshots/{slug}")
async def rename_snapshot(slug: str, body: w.SnapshotLabel, core: CoreDep, principal: PrincipalDep) -> Response:
    await write(core, snapshots.rename_snapshot, core, principal, _id(slug, "Snapshot"), body.label)
    return ok("Snapshot renamed")


@router.delete("/snapshots/{slug}")
async def delete_snapshot(slug: str, core: CoreDep, principal: PrincipalDep) -> Response:
    await write(core, snapshots.delete_account_snapshot, core, principal, _id(slug, "Snapshot"))
    return ok("Snapshot is being deleted")


class NativeMount(Mount):
    """The native router at /api, for requests in the dialect only: any other request never matches it."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        if scope["type"] != "http" or not is_native(scope):
            return Match.NONE, {}
        return super().matches(scope)


def mount() -> NativeMount:
    return NativeMount(BASE, app=router)

"""LetsCloud routes: parse, call one service, shape the reply."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, TypeVar

from fastapi import APIRouter, Query, Response, status

from cloudplane.api.common.deps import CoreDep, Id, PageDep, PrincipalDep, read, reply, write
from cloudplane.api.common.faces import default_renderer, face_route_class
from cloudplane.api.letscloud import schemas as w
from cloudplane.services import accounts, billing, recommendations, servers, snapshots, ssh_keys
from cloudplane.services.servers import ServerView

router = APIRouter(route_class=face_route_class(default_renderer))
T = TypeVar("T")


def server_out(server: ServerView, model: type[w.ServerOut] = w.ServerOut) -> w.ServerOut:
    return model.of(server)


def accepted(server: ServerView) -> Response:
    return reply(server_out(server, w.ServerAccepted))


def _page(items: Sequence[T], page: PageDep) -> list[T]:
    start = (page.page - 1) * page.per_page
    return list(items[start : start + page.per_page])


@router.get("/servers", operation_id="listServers", response_model=w.ServerList)
async def list_servers(core: CoreDep, principal: PrincipalDep, page: PageDep) -> Response:
    result = await read(core, servers.list_servers, core, principal, page=page.page, per_page=page.per_page)
    return reply(
        w.ServerList(
            servers=[server_out(s) for s in result.items],
            total=result.total,
            page=page.page,
            per_page=page.per_page,
        )
    )


@router.post(
    "/servers", operation_id="createServer", status_code=status.HTTP_201_CREATED, response_model=w.ServerCreated
)
async def create_server(body: w.ServerCreate, core: CoreDep, principal: PrincipalDep) -> Response:
    server, generated_password = await write(
        core,
        servers.create_server,
        core,
        principal,
        label=body.label,
        plan=body.plan_slug,
        image=body.image_slug,
        location=body.location_slug,
        hostname=body.hostname,
        password=body.password,
        ssh_key_ids=body.ssh_keys,
    )
    out = server_out(server, w.ServerCreated)
    out.root_password = generated_password  # type: ignore[attr-defined]
    return reply(out, 201)


@router.get("/servers/{server_id}", operation_id="getServer", response_model=w.ServerOut)
async def get_server(server_id: Id, core: CoreDep, principal: PrincipalDep) -> Response:
    return reply(server_out(await read(core, servers.get_server, core, principal, server_id)))


@router.delete("/servers/{server_id}", operation_id="deleteServer", status_code=204, response_class=Response)
async def delete_server(server_id: Id, core: CoreDep, principal: PrincipalDep) -> Response:
    await write(core, servers.server_action, core, principal, server_id, "delete")
    return Response(status_code=204)


@router.post("/servers/{server_id}/start", operation_id="startServer", response_model=w.ServerAccepted)
async def start_server(server_id: Id, core: CoreDep, principal: PrincipalDep) -> Response:
    return accepted(await write(core, servers.server_action, core, principal, server_id, "start"))


@router.post("/servers/{server_id}/stop", operation_id="shutdownServer", response_model=w.ServerAccepted)
async def shutdown_server(server_id: Id, core: CoreDep, principal: PrincipalDep) -> Response:
    return accepted(await write(core, servers.server_action, core, principal, server_id, "stop"))


@router.post("/servers/{server_id}/reboot", operation_id="rebootServer", response_model=w.ServerAccepted)
async def reboot_server(server_id: Id, core: CoreDep, principal: PrincipalDep) -> Response:
    return accepted(await write(core, servers.server_action, core, principal, server_id, "reboot"))


@router.get("/ssh-keys", operation_id="listSSHKeys", response_model=w.SSHKeyList)
async def list_ssh_keys(core: CoreDep, principal: PrincipalDep, page: PageDep) -> Response:
    result = await read(core, ssh_keys.list_keys, core, principal, page=page.page, per_page=page.per_page)
    return reply(
        w.SSHKeyList(
            ssh_keys=[w.SSHKeyOut.of(k) for k in result.items],
            total=result.total,
            page=page.page,
            per_page=page.per_page,
        )
    )


@router.post("/ssh-keys", operation_id="createSSHKey", status_code=201, response_model=w.SSHKeyOut)
def create_ssh_key(body: w.SSHKeyCreate, core: CoreDep, principal: PrincipalDep) -> Response:
    return reply(w.SSHKeyOut.of(ssh_keys.create_key(core, principal, title=body.title, public_key=body.key)), 201)


@router.get("/ssh-keys/{key_id}", operation_id="getSSHKey", response_model=w.SSHKeyOut)
async def get_ssh_key(key_id: Id, core: CoreDep, principal: PrincipalDep) -> Response:
    return reply(w.SSHKeyOut.of(await read(core, ssh_keys.get_key, core, principal, key_id)))


@router.delete("/ssh-keys/{key_id}", operation_id="deleteSSHKey", status_code=204, response_class=Response)
def delete_ssh_key(key_id: Id, core: CoreDep, principal: PrincipalDep) -> Response:
    ssh_keys.delete_key(core, principal, key_id)
    return Response(status_code=204)


@router.get("/servers/{server_id}/snapshots", operation_id="listSnapshots", response_model=w.SnapshotList)
async def list_snapshots(server_id: Id, core: CoreDep, principal: PrincipalDep, page: PageDep) -> Response:
    result = await read(
        core, snapshots.list_snapshots, core, principal, server_id, page=page.page, per_page=page.per_page
    )
    return reply(
        w.SnapshotList(
            snapshots=[w.SnapshotOut.of(s) for s in result.items],
            total=result.total,
            page=page.page,
            per_page=page.per_page,
        )
    )


@router.post(
    "/servers/{server_id}/snapshots", operation_id="createSnapshot", status_code=201, response_model=w.SnapshotOut
)
async def create_snapshot(server_id: Id, body: w.SnapshotCreate, core: CoreDep, principal: PrincipalDep) -> Response:
    snap = await write(
        core, snapshots.create_snapshot, core, principal, server_id, label=body.label, description=body.description
    )
    return reply(w.SnapshotOut.of(snap), 201)


@router.get("/servers/{server_id}/snapshots/{snapshot_id}", operation_id="getSnapshot", response_model=w.SnapshotOut)
async def get_snapshot(server_id: Id, snapshot_id: Id, core: CoreDep, principal: PrincipalDep) -> Response:
    return reply(w.SnapshotOut.of(await read(core, snapshots.get_snapshot, core, principal, server_id, snapshot_id)))


@router.delete(
    "/servers/{server_id}/snapshots/{snapshot_id}",
    operation_id="deleteSnapshot",
    status_code=204,
    response_class=Response,
)
async def delete_snapshot(server_id: Id, snapshot_id: Id, core: CoreDep, principal: PrincipalDep) -> Response:
    await write(core, snapshots.delete_snapshot, core, principal, server_id, snapshot_id)
    return Response(status_code=204)


@router.post(
    "/servers/{server_id}/snapshots/{snapshot_id}/restore",
    operation_id="restoreSnapshot",
    response_model=w.ServerAccepted,
)
async def restore_snapshot(server_id: Id, snapshot_id: Id, core: CoreDep, principal: PrincipalDep) -> Response:
    return accepted(await write(core, snapshots.restore_snapshot, core, principal, server_id, snapshot_id))


@router.get("/plans", operation_id="listPlans", response_model=w.PlanList)
async def list_plans(core: CoreDep, principal: PrincipalDep, page: PageDep) -> Response:
    plans = core.catalog.view().offered_plans  # those some location's provider can make
    return reply(
        w.PlanList(
            plans=[w.PlanOut.of(p) for p in _page(plans, page)],
            total=len(plans),
            page=page.page,
            per_page=page.per_page,
        )
    )


@router.get("/images", operation_id="listImages", response_model=w.ImageList)
async def list_images(core: CoreDep, principal: PrincipalDep, page: PageDep) -> Response:
    images = core.catalog.view().offered_images  # those some location's provider can boot
    return reply(
        w.ImageList(
            images=[w.ImageOut.of(i) for i in _page(images, page)],
            total=len(images),
            page=page.page,
            per_page=page.per_page,
        )
    )


@router.get("/locations", operation_id="listLocations", response_model=w.LocationList)
async def list_locations(core: CoreDep, principal: PrincipalDep, page: PageDep) -> Response:
    view = core.catalog.view()
    return reply(
        w.LocationList(
            # A location whose provider cannot run here, or serves nothing, shows as unavailable.
            locations=[
                w.LocationOut.of(loc).model_copy(update={"available": view.is_open(loc)})
                for loc in _page(view.locations, page)
            ],
            total=len(view.locations),
            page=page.page,
            per_page=page.per_page,
        )
    )


@router.get("/account", operation_id="getAccountInfo", response_model=w.AccountOut)
async def get_account_info(core: CoreDep, principal: PrincipalDep) -> Response:
    account, user = await read(core, accounts.get_account, core.db, principal)
    return reply(w.AccountOut.of(account, user, await read(core, billing.balance_of, core, principal)))


@router.get("/account/recommendations", operation_id="getRecommendations", response_model=w.RecommendationList)
async def get_recommendations(
    core: CoreDep,
    principal: PrincipalDep,
    days: Annotated[int, Query(ge=1, le=recommendations.MAX_DAYS)] = recommendations.DEFAULT_DAYS,
) -> Response:
    report = await read(core, recommendations.recommend, core, principal, days=days)
    return reply(w.RecommendationList.of(report))

"""GPU instances: offers searched across marketplaces, rented as servers through a durable operation."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from sqlalchemy import bindparam, select

from cloudplane.core import Core
from cloudplane.db.tables import Server
from cloudplane.domain.errors import Conflict, NotFound, ValidationFailed
from cloudplane.domain.ssh_keys import SSHKeyError, parse_public_key
from cloudplane.domain.states import ServerStatus
from cloudplane.providers.market_search import SearchResult
from cloudplane.providers.marketplace import Offer, OfferQuery
from cloudplane.services import operations
from cloudplane.services.accounts import Principal
from cloudplane.services.pages import counted, paged, window
from cloudplane.services.servers import Page, ServerView, get_server, get_server_in, hostname_from_label, server_views
from cloudplane.services.tenancy import MINE, tenant

# Looking an offer up by id asks the provider itself, not the search cache: right before renting, a stale
# "available" would only turn into a failed rent.
ALL_OFFERS = OfferQuery(limit=100_000)


async def search_offers(core: Core, query: OfferQuery, provider: str | None = None) -> SearchResult:
    return await core.providers.market_search.search(query, provider)


async def find_offer(core: Core, provider: str, offer_id: str) -> Offer:
    market = core.providers.market(provider)  # an unknown provider is a 404 naming the known ones
    for offer in await market.search_offers(ALL_OFFERS):
        if offer.offer_id == offer_id:
            if not offer.available:
                raise Conflict("That offer is no longer available; search again", field="offer_id", offer_id=offer_id)
            return offer
    raise NotFound("Offer not found; search offers for current ids", field="offer_id", offer_id=offer_id)


def rent(
    core: Core,
    principal: Principal,
    offer: Offer,
    *,
    image: str,
    label: str,
    onstart_script: str | None = None,
    ssh_key: str | None = None,
) -> ServerView:
    """Record the GPU server and its rent operation; the workflow rents the offer and waits for it to run."""
    label = label.strip()
    if not label:
        raise ValidationFailed("Label must not be empty", field="label")
    if ssh_key:
        try:
            ssh_key = parse_public_key(ssh_key).normalized
        except SSHKeyError as e:
            raise ValidationFailed(str(e), field="ssh_key") from None
    with core.db.write() as s:
        server = Server(
            account_id=principal.account_id,
            label=label,
            hostname=hostname_from_label(label),
            status=ServerStatus.CREATING,
            provider=offer.provider,
            gpu_model=offer.gpu_model,
            gpu_count=offer.gpu_count,
            cpu_count=offer.cpu_count,
            ram_gb=offer.ram_gb,
            storage_gb=offer.storage_gb,
            price_per_hour=Decimal(str(offer.price_per_hour)),  # money is Decimal from here on
            region=offer.region,
            offer_id=offer.offer_id,
            provider_data={
                "machine_id": offer.machine_id,
                "image": image,
                "onstart_script": onstart_script,
                **offer.extra,
            },
        )
        s.add(server)
        s.flush()
        op = operations.new_operation(
            s,
            account_id=principal.account_id,
            kind="rent",
            server_id=server.id,
            params={
                "offer_id": offer.offer_id,
                "image": image,
                "label": label,
                "onstart_script": onstart_script,
                "ssh_key": ssh_key,
            },
        )
        # The reply shows the instance as recorded: the workflow may change it right after the commit.
        view = get_server_in(core, s, principal, server.id)
    operations.launch(op)
    return replace(view, operation_id=op.id)


_servers = Server.__table__
_RENTED = (
    MINE(_servers),
    _servers.c.deleted_at.is_(None),
    _servers.c.offer_id.isnot(None),
)


# A page from the list's start, and one from its end (pages.window).
_INSTANCE_PAGES = {
    from_end: paged(
        select(_servers),
        _servers.c.id,
        _RENTED,
        [_servers.c.id],
        limit=bindparam("limit"),
        offset=bindparam("offset"),
        from_end=from_end,
    )
    for from_end in (False, True)
}
_INSTANCE_COUNT = counted(_servers, _RENTED)


def list_instances(core: Core, principal: Principal, *, page: int, per_page: int) -> Page:
    params = tenant(principal)
    with core.db.connect() as conn:
        total = conn.execute(_INSTANCE_COUNT, params).scalar_one()
        at = window(total, page, per_page)
        rows = conn.execute(_INSTANCE_PAGES[at.from_end], {**params, "limit": at.limit, "offset": at.offset}).all()
        return Page(items=server_views(conn, rows, core.catalog.view()), total=total, page=page, per_page=per_page)


def get_instance(core: Core, principal: Principal, server_id: int) -> ServerView:
    """A GPU instance of the caller's; their other servers are not instances."""
    try:
        server = get_server(core, principal, server_id)
    except NotFound:
        server = None
    if server is None or server.offer_id is None:
        raise NotFound("Instance not found", instance_id=server_id)
    return server

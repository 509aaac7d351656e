"""CloudVPS admin routes for webhooks (/api/v1/admin/webhooks): endpoints (ids "webhook-N") with their events and
secret, shown once when made or rotated, and each endpoint's delivery log (ids "delivery-N"), any delivery of which
can be sent again. How deliveries are signed and sent: services/webhooks.py and the README's "Webhooks"."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from cloudplane.api.accounts.schemas import ErrorEnvelope, errors
from cloudplane.api.cloudvps.envelope import Pagination, cloudvps_renderer
from cloudplane.api.common.deps import CoreDep, PrincipalDep, read, reply, write
from cloudplane.api.common.faces import Responses, face_route_class
from cloudplane.api.common.ids import parse_id
from cloudplane.api.common.schemas import Request
from cloudplane.domain.errors import NotFound
from cloudplane.services import webhooks
from cloudplane.services.webhooks import DeliveryView, EndpointView

_NOT_FOUND: Responses = {404: {"model": ErrorEnvelope, "description": "No such webhook or delivery"}}
router = APIRouter(
    route_class=face_route_class(cloudvps_renderer),
    tags=["Admin: webhooks"],
    responses={**errors(400, 401, 403, 422, 429), **_NOT_FOUND},
)

WebhookId = Annotated[str, Path(description='The webhook id, e.g. "webhook-12" (a bare "12" works too)')]
DeliveryId = Annotated[str, Path(description='The delivery id, e.g. "delivery-345" (a bare "345" works too)')]
# Checked by the service (a 422 naming `events`); listed here for the OpenAPI document.
EventName = Annotated[str, Field(max_length=64, json_schema_extra={"enum": list(webhooks.EVENT_NAMES)})]
DeliveryStatus = Literal["pending", "failed", "delivered", "dead"]
_URL = Field(
    min_length=1,
    max_length=2048,
    description="https URL that receives the events (a public address; no credentials in it)",
)


def parse_webhook_id(value: str) -> int:
    number = parse_id(value.removeprefix("webhook-"))
    if number is None:
        raise NotFound("Webhook not found", webhook_id=value)
    return number


def parse_delivery_id(value: str) -> int:
    number = parse_id(value.removeprefix("delivery-"))
    if number is None:
        raise NotFound("Delivery not found", delivery_id=value)
    return number


class WebhookCreate(Request):
    url: str = _URL
    events: list[EventName] | None = Field(
        default=None, max_length=13, description="The events to receive; left out: all thirteen"
    )
    description: str | None = Field(default=None, max_length=255)
    active: bool = True


class WebhookUpdate(Request):
    url: str | None = Field(default=None, min_length=1, max_length=2048)
    events: list[EventName] | None = Field(default=None, max_length=13)
    description: str | None = Field(default=None, max_length=255)
    active: bool | None = Field(default=None, description="False pauses the endpoint: nothing is sent or queued")


class WebhookOut(BaseModel):
    id: str
    url: str
    description: str | None
    active: bool
    events: list[str]
    secret_rotated_at: datetime
    created_at: datetime
    updated_at: datetime


class WebhookWithSecret(WebhookOut):
    secret: str = Field(
        description="The signing secret, shown only in this reply: give it to `verifyWebhookSignature` as it is, or "
        "to a Standard Webhooks library"
    )


class WebhookReply(BaseModel):
    success: bool = True
    message: str | None = None
    data: WebhookOut


class WebhookSecretReply(BaseModel):
    success: bool = True
    message: str
    data: WebhookWithSecret


class WebhookListReply(BaseModel):
    success: bool = True
    data: list[WebhookOut]
    pagination: Pagination


class DeliveryOut(BaseModel):
    id: str
    webhook_id: str
    event: str
    event_id: str = Field(description="The event's id, sent as the `webhook-id` header: the same on every try")
    status: DeliveryStatus
    attempts: int = Field(description="Tries so far (a redelivery starts again from 0)")
    next_attempt_at: datetime | None = Field(description="When the next try is due; null once delivered or dead")
    last_attempt_at: datetime | None
    last_response_code: int | None = Field(description="The HTTP status of the last try's reply, if one came")
    last_error: str | None
    delivered_at: datetime | None
    created_at: datetime


class DeliveryWithPayload(DeliveryOut):
    payload: dict[str, Any] | None = Field(description="The body as sent (null until the first try)")


class DeliveryReply(BaseModel):
    success: bool = True
    message: str | None = None
    data: DeliveryWithPayload


class DeliveryListReply(BaseModel):
    success: bool = True
    data: list[DeliveryOut]
    pagination: Pagination


class Envelope(BaseModel):
    success: bool = True
    message: str


def webhook_out(view: EndpointView) -> WebhookOut:
    return WebhookOut(
        id=f"webhook-{view.id}",
        url=view.url,
        description=view.description,
        active=view.active,
        events=view.events,
        secret_rotated_at=view.secret_rotated_at,
        created_at=view.created_at,
        updated_at=view.updated_at,
    )


def delivery_out(view: DeliveryView) -> dict[str, Any]:
    return {
        "id": f"delivery-{view.id}",
        "webhook_id": f"webhook-{view.endpoint_id}",
        "event": view.event_type,
        "event_id": view.event_id,
        "status": view.status,
        "attempts": view.attempts,
        "next_attempt_at": view.next_attempt_at,
        "last_attempt_at": view.last_attempt_at,
        "last_response_code": view.last_status_code,
        "last_error": view.last_error,
        "delivered_at": view.delivered_at,
        "created_at": view.created_at,
    }


def delivery_with_payload(view: DeliveryView) -> DeliveryWithPayload:
    return DeliveryWithPayload(**delivery_out(view), payload=json.loads(view.body) if view.body else None)


@router.get("/admin/webhooks", response_model=WebhookListReply)
async def list_webhooks(
    core: CoreDep,
    principal: PrincipalDep,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1")] = 1,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page (at most 100)")] = 20,
) -> Response:
    """Every webhook endpoint, newest first (never its secret)."""
    result = await read(core, webhooks.list_endpoints, core, principal, page=page, per_page=limit)
    return reply(
        WebhookListReply(
            data=[webhook_out(v) for v in result.items], pagination=Pagination.of(page, limit, result.total)
        )
    )


@router.post("/admin/webhooks", status_code=201, response_model=WebhookSecretReply)
async def create_webhook(body: WebhookCreate, core: CoreDep, principal: PrincipalDep) -> Response:
    """Add an endpoint. The reply carries its signing secret, shown this once: keep it."""
    # On a thread whatever the database: the URL's host is resolved to check where it points.
    view, secret = await run_in_threadpool(
        webhooks.create_endpoint,
        core,
        principal,
        url=body.url,
        event_names=body.events,
        description=body.description,
        active=body.active,
    )
    data = WebhookWithSecret(**webhook_out(view).model_dump(), secret=secret)
    return reply(WebhookSecretReply(message="Webhook created; its secret is shown only now", data=data), 201)


@router.get("/admin/webhooks/{webhook_id}", response_model=WebhookReply)
async def get_webhook(webhook_id: WebhookId, core: CoreDep, principal: PrincipalDep) -> Response:
    view = await read(core, webhooks.get_endpoint, core, principal, parse_webhook_id(webhook_id))
    return reply(WebhookReply(data=webhook_out(view)))


@router.put("/admin/webhooks/{webhook_id}", response_model=WebhookReply)
@router.patch("/admin/webhooks/{webhook_id}", response_model=WebhookReply)
async def update_webhook(
    webhook_id: WebhookId, body: WebhookUpdate, core: CoreDep, principal: PrincipalDep
) -> Response:
    """Change the URL, the events, the description or whether it is active; what is left out stays."""
    view = await run_in_threadpool(
        webhooks.update_endpoint,
        core,
        principal,
        parse_webhook_id(webhook_id),
        url=body.url,
        event_names=body.events,
        description=body.description,
        active=body.active,
    )
    return reply(WebhookReply(message="Webhook updated", data=webhook_out(view)))


@router.delete("/admin/webhooks/{webhook_id}")
async def delete_webhook(webhook_id: WebhookId, core: CoreDep, principal: PrincipalDep) -> Response:
    """Remove the endpoint and its delivery log; nothing more is sent to it."""
    await write(core, webhooks.delete_endpoint, core, principal, parse_webhook_id(webhook_id))
    return reply(Envelope(message="Webhook deleted"))


@router.post("/admin/webhooks/{webhook_id}/rotate-secret", response_model=WebhookSecretReply)
async def rotate_webhook_secret(webhook_id: WebhookId, core: CoreDep, principal: PrincipalDep) -> Response:
    """A new signing secret, in force at once for every try from now on; the reply shows it this once."""
    view, secret = await write(core, webhooks.rotate_secret, core, principal, parse_webhook_id(webhook_id))
    data = WebhookWithSecret(**webhook_out(view).model_dump(), secret=secret)
    return reply(WebhookSecretReply(message="Secret rotated; the new one is shown only now", data=data))


@router.get("/admin/webhooks/{webhook_id}/deliveries", response_model=DeliveryListReply)
async def list_webhook_deliveries(
    webhook_id: WebhookId,
    core: CoreDep,
    principal: PrincipalDep,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1")] = 1,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page (at most 100)")] = 20,
    status: Annotated[DeliveryStatus | None, Query(description="Only deliveries in this status")] = None,
) -> Response:
    """The endpoint's delivery log, newest first: each event sent or to be sent, its tries and last reply."""
    result = await read(
        core,
        webhooks.list_deliveries,
        core,
        principal,
        parse_webhook_id(webhook_id),
        page=page,
        per_page=limit,
        status=status,
    )
    return reply(
        DeliveryListReply(
            data=[DeliveryOut(**delivery_out(v)) for v in result.items],
            pagination=Pagination.of(page, limit, result.total),
        )
    )


@router.get("/admin/webhooks/{webhook_id}/deliveries/{delivery_id}", response_model=DeliveryReply)
async def get_webhook_delivery(
    webhook_id: WebhookId, delivery_id: DeliveryId, core: CoreDep, principal: PrincipalDep
) -> Response:
    """One delivery, with the body it sends."""
    view = await read(
        core, webhooks.get_delivery, core, principal, parse_webhook_id(webhook_id), parse_delivery_id(delivery_id)
    )
    return reply(DeliveryReply(data=delivery_with_payload(view)))


@router.post("/admin/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", response_model=DeliveryReply)
async def redeliver_webhook_delivery(
    webhook_id: WebhookId, delivery_id: DeliveryId, core: CoreDep, principal: PrincipalDep
) -> Response:
    """Send a delivery again (a dead one too), with its full count of tries, the same body and the same
    `webhook-id`."""
    view = await write(
        core, webhooks.redeliver, core, principal, parse_webhook_id(webhook_id), parse_delivery_id(delivery_id)
    )
    return reply(DeliveryReply(message="Delivery queued again", data=delivery_with_payload(view)))

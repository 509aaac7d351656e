"""Billing routes (/api/v1/billing/usage, /billing/invoices, /{id}, /{id}/pdf), shared by CloudVPS Pro and VibeCaaS:
one reply holding both documents' shapes (CloudVPS's envelope, VibeCaaS's fields at the top level); and the admins'
manual payments, credits and invoice runs (/api/v1/admin/billing/*)."""

from __future__ import annotations

import re
from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query, Response
from pydantic import BaseModel, BeforeValidator, Field, WithJsonSchema
from pydantic_core import PydanticCustomError

from cloudplane.api.accounts.schemas import errors, parse_user_id
from cloudplane.api.cloudvps.envelope import Pagination, cloudvps_renderer, ok
from cloudplane.api.cloudvps.vps import Money, Request
from cloudplane.api.common.deps import CoreDep, PrincipalDep, read, reply, write
from cloudplane.api.common.faces import face_route_class
from cloudplane.domain.errors import NotFound
from cloudplane.domain.ids import parse_id
from cloudplane.domain.times import assume_utc, iso_z
from cloudplane.services import billing
from cloudplane.services.billing import InvoiceView, Usage

router = APIRouter(
    route_class=face_route_class(cloudvps_renderer), tags=["Billing"], responses=errors(400, 401, 403, 404, 422, 429)
)


def _iso_only(value: Any) -> Any:
    # pydantic reads a bare number as seconds since 1970; the document's dates are ISO 8601 (`format: date-time`).
    if isinstance(value, str) and re.fullmatch(r"\s*[-+]?[0-9.eE+-]*\s*", value):
        raise PydanticCustomError("iso_date", "A date is ISO 8601, e.g. 2026-12-01T00:00:00Z")
    return value


IsoDate = Annotated[datetime, BeforeValidator(_iso_only)]
InvoiceId = Annotated[str, Path(description='The invoice id, e.g. "inv-123" (a bare "123" works too)')]


def parse_invoice_id(value: str) -> int:
    number = parse_id(value.removeprefix("inv-"))
    if number is None:
        raise NotFound("Invoice not found", invoice_id=value)
    return number


def _number(value: Decimal) -> float:
    """Money and quantities as the documents write them, JSON numbers (kept Decimal up to here)."""
    return float(value)


def usage_json(usage: Usage) -> tuple[dict[str, Any], dict[str, Any]]:
    """CloudVPS's `data` and VibeCaaS's top-level fields of one usage reply."""
    services = [
        {
            "vps_id": f"vps-{s.resource_id}" if s.resource_type in ("server", "gpu") else None,
            "app_id": s.resource_id if s.resource_type == "app" else None,
            "type": s.resource_type,
            "name": s.label,
            "plan": s.plan,
            "cost": _number(s.cost),
            "usage": {
                "cpu_hours": _number(s.running_hours),
                "stopped_hours": _number(s.held_hours),
                "storage_gb_hours": _number(s.storage_gb_hours),
                "bandwidth_gb": _number(s.bandwidth_gb),
                "gpu_hours": _number(s.gpu_hours),
            },
        }
        for s in usage.services
    ]
    last_second = usage.period_end.timestamp() - 1
    data = {
        "current_period": {
            "start_date": iso_z(usage.period_start),
            "end_date": iso_z(datetime.fromtimestamp(last_second, usage.period_start.tzinfo)),
            "total_cost": _number(usage.total_cost),
            "currency": usage.currency,
        },
        "services": services,
    }
    top = {
        "period": f"{usage.period_start:%Y-%m}",
        "usage": {
            "compute_hours": _number(usage.total("running_hours")),
            "storage_gb_hours": _number(usage.total("storage_gb_hours")),
            "bandwidth_gb": _number(usage.total("bandwidth_gb")),
            "gpu_hours": _number(usage.total("gpu_hours")),
        },
        "estimated_cost": _number(usage.total_cost),
        "currency": usage.currency,
    }
    return data, top


@router.get("/billing/usage")
async def get_usage(core: CoreDep, principal: PrincipalDep) -> Response:
    """The current calendar month's usage so far and what it costs, per service (CloudVPS: `data`) and in all
    (VibeCaaS: `period`, `usage`, `estimated_cost`)."""
    data, top = usage_json(await read(core, billing.current_usage, core, principal))
    return ok(data, **top)


class InvoiceItemOut(BaseModel):
    description: str
    quantity: Money
    unit_price: Money
    total: Money


class InvoiceOut(BaseModel):
    id: str = Field(description='e.g. "inv-123"')
    invoice_number: str = Field(description='Gapless per year, e.g. "INV-2026-001"')
    amount: Money = Field(description="The total, tax included")
    subtotal: Money
    tax_rate: Money = Field(description="A fraction: 0.2 for 20%")
    tax: Money
    currency: str
    status: Literal["pending", "paid", "overdue"]
    period_start: datetime
    period_end: datetime
    created_at: datetime
    due_date: datetime
    paid_date: datetime | None
    items: list[InvoiceItemOut]


def invoice_out(inv: InvoiceView) -> InvoiceOut:
    return InvoiceOut(
        id=f"inv-{inv.id}",
        invoice_number=inv.number,
        amount=inv.total,
        subtotal=inv.subtotal,
        tax_rate=inv.tax_rate,
        tax=inv.tax,
        currency=inv.currency,
        status=inv.status,  # type: ignore[arg-type]
        period_start=inv.period_start,
        period_end=inv.period_end,
        created_at=inv.issued_at,
        due_date=inv.due_at,
        paid_date=inv.paid_at,
        items=[InvoiceItemOut(**vars(i)) for i in inv.items],
    )


class InvoiceListReply(BaseModel):
    success: bool = True
    data: list[InvoiceOut]
    pagination: Pagination


class InvoiceReply(BaseModel):
    success: bool = True
    data: InvoiceOut


@router.get("/billing/invoices", response_model=InvoiceListReply)
async def list_invoices(
    core: CoreDep,
    principal: PrincipalDep,
    page: Annotated[int, Query(ge=1, le=1_000_000, description="Page number, from 1")] = 1,
    limit: Annotated[int, Query(ge=1, le=100, description="Items per page (at most 100)")] = 20,
    status: Annotated[Literal["pending", "paid", "overdue"] | None, Query(description="Only these")] = None,
    start_date: Annotated[IsoDate | None, Query(description="Issued at or after (ISO 8601; UTC if no zone)")] = None,
    end_date: Annotated[IsoDate | None, Query(description="Issued at or before (ISO 8601; UTC if no zone)")] = None,
) -> Response:
    """Your invoices, newest first."""
    result = await read(
        core,
        billing.list_invoices,
        core,
        principal,
        page=page,
        per_page=limit,
        status=status,
        start_date=assume_utc(start_date),
        end_date=assume_utc(end_date),
    )
    return reply(
        InvoiceListReply(
            data=[invoice_out(i) for i in result.items], pagination=Pagination.of(page, limit, result.total)
        )
    )


@router.get("/billing/invoices/{invoice_id}", response_model=InvoiceReply)
async def get_invoice(invoice_id: InvoiceId, core: CoreDep, principal: PrincipalDep) -> Response:
    """One of your invoices with its lines."""
    inv = await read(core, billing.get_invoice, core, principal, parse_invoice_id(invoice_id))
    return reply(InvoiceReply(data=invoice_out(inv)))


@router.get(
    "/billing/invoices/{invoice_id}/pdf",
    response_class=Response,
    responses={200: {"content": {"application/pdf": {}}, "description": "The invoice as a PDF"}},
)
async def get_invoice_pdf(invoice_id: InvoiceId, core: CoreDep, principal: PrincipalDep) -> Response:
    """The invoice as a PDF: seller, buyer, lines, tax and total."""
    inv, pdf = await read(core, billing.invoice_pdf, core, principal, parse_invoice_id(invoice_id))
    return Response(
        pdf, media_type="application/pdf", headers={"Content-Disposition": f'attachment; filename="{inv.number}.pdf"'}
    )


# An amount of money in a request: a JSON number or a string of digits, more than 0, to the cent. The schema says
# what is accepted exactly (pydantic's own would let "" or 0.001 pass as schema-valid).
_AMOUNT_TEXT = r"^(0\.(0[1-9]|[1-9][0-9]?)|[1-9][0-9]{0,9}(\.[0-9]{1,2})?)$"
AmountIn = Annotated[
    Decimal,
    Field(gt=0, max_digits=12, decimal_places=2),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "exclusiveMinimum": 0, "maximum": 9999999999.99, "multipleOf": 0.01},
                {"type": "string", "pattern": _AMOUNT_TEXT},
            ],
            "description": 'e.g. 23.99 or "23.99"',
        }
    ),
]


class PaymentIn(Request):
    user_id: str = Field(max_length=40, description='Whose account: "user-123" or 123')
    amount: AmountIn
    kind: Literal["payment", "credit"] = Field(
        default="payment", description="`payment`: money received (a bank transfer); `credit`: granted"
    )
    reference: str | None = Field(default=None, max_length=200, description="e.g. the bank transfer's reference")
    note: str | None = Field(default=None, max_length=2000)


class CreditIn(Request):
    user_id: str = Field(max_length=40, description='Whose account: "user-123" or 123')
    amount: AmountIn
    note: str | None = Field(default=None, max_length=2000)


def _balance_json(balance: billing.Balance) -> dict[str, Any]:
    return {
        "credit": _number(balance.credit),
        "unpaid_invoices": _number(balance.unpaid_invoices),
        "month_cost": _number(balance.month_cost),
        "balance": _number(balance.balance),
        "currency": balance.currency,
    }


async def _record(core: Any, principal: Any, **fields: Any) -> Response:
    payment_id, balance = await write(core, billing.record_admin_payment, core, principal, **fields)
    return ok({"payment_id": payment_id, **_balance_json(balance)}, status_code=201)


@router.post("/admin/billing/payments", status_code=201, tags=["Admin"])
async def admin_record_payment(body: PaymentIn, core: CoreDep, principal: PrincipalDep) -> Response:
    """Record a payment received outside any gateway (or a credit): it adds to the account's credit, pays its open
    invoices oldest first as far as the credit goes, and lifts a dunning suspension once nothing is overdue."""
    return await _record(
        core,
        principal,
        user_id=parse_user_id(body.user_id),
        amount=body.amount,
        kind=body.kind,
        reference=body.reference,
        note=body.note,
    )


@router.post("/admin/billing/credits", status_code=201, tags=["Admin"])
async def admin_grant_credit(body: CreditIn, core: CoreDep, principal: PrincipalDep) -> Response:
    """Grant a credit (goodwill, a refund): the same as a payment of kind `credit`."""
    return await _record(
        core, principal, user_id=parse_user_id(body.user_id), amount=body.amount, kind="credit", note=body.note
    )


class InvoiceRunIn(Request):
    period: str = Field(pattern=r"^[1-9][0-9]{3}-(0[1-9]|1[0-2])$", description="The month to invoice, e.g. 2026-11")


@router.post("/admin/billing/invoice-runs", status_code=201, tags=["Admin"])
async def admin_run_invoices(body: InvoiceRunIn, core: CoreDep, principal: PrincipalDep) -> Response:
    """Invoice a month that has ended now (the monthly run does it on the 1st): every account with usage in it and
    no invoice for it yet; run twice, it invoices nobody twice."""
    made = await write(core, billing.run_invoices, core, principal, body.period)
    return ok([invoice_out(i).model_dump(mode="json") for i in made], status_code=201)

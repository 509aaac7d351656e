"""An invoice as a PDF (fpdf2): the seller, the buyer, one row per line, subtotal, tax and total."""

from __future__ import annotations

from decimal import Decimal
from typing import TYPE_CHECKING

from fpdf import FPDF

if TYPE_CHECKING:
    from cloudplane.services.billing import Buyer, InvoiceView


def _text(value: str) -> str:
    # The PDF's core fonts cover Latin-1; anything else is shown as "?" rather than refused.
    return value.encode("latin-1", "replace").decode("latin-1")


def _money(amount: Decimal, currency: str) -> str:
    return f"{amount:,.2f} {currency}"


def render(invoice: InvoiceView, seller: list[str], buyer: Buyer) -> bytes:
    pdf = FPDF(format="A4")
    pdf.set_title(f"Invoice {invoice.number}")
    pdf.set_author(_text(seller[0] if seller else "Cloudplane"))
    pdf.set_creation_date(invoice.issued_at)
    pdf.add_page()
    pdf.set_font("Helvetica", "B", 18)
    pdf.cell(0, 10, _text(f"Invoice {invoice.number}"), new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    period = f"{invoice.period_start:%Y-%m-%d} to {invoice.period_end:%Y-%m-%d}"
    for line in (
        f"Issued: {invoice.issued_at:%Y-%m-%d}",
        f"Due: {invoice.due_at:%Y-%m-%d}",
        f"Period: {period}",
        f"Status: {invoice.status}",
    ):
        pdf.cell(0, 5, line, new_x="LMARGIN", new_y="NEXT")
    pdf.ln(4)
    top = pdf.get_y()
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(90, 6, "Seller", new_x="LMARGIN", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    for line in seller:
        pdf.cell(90, 5, _text(line.strip()), new_x="LMARGIN", new_y="NEXT")
    left_bottom = pdf.get_y()
    pdf.set_xy(110, top)
    pdf.set_font("Helvetica", "B", 11)
    pdf.cell(90, 6, "Bill to", new_x="LEFT", new_y="NEXT")
    pdf.set_font("Helvetica", size=10)
    for line in (buyer.name, buyer.company or "", buyer.email):
        if line:
            pdf.cell(90, 5, _text(line), new_x="LEFT", new_y="NEXT")
    pdf.set_xy(pdf.l_margin, max(left_bottom, pdf.get_y()) + 6)
    with pdf.table(col_widths=(100, 20, 35, 35), text_align=("LEFT", "RIGHT", "RIGHT", "RIGHT")) as table:
        table.row(("Description", "Qty", "Unit price", "Amount"))
        for item in invoice.items:
            table.row(
                (
                    _text(item.description),
                    f"{item.quantity.normalize():f}",
                    _money(item.unit_price, invoice.currency),
                    _money(item.total, invoice.currency),
                )
            )
    pdf.ln(4)
    rate = (invoice.tax_rate * 100).normalize()
    for label, amount, bold in (
        ("Subtotal", invoice.subtotal, False),
        (f"Tax ({rate:f}%)", invoice.tax, False),
        ("Total", invoice.total, True),
    ):
        pdf.set_font("Helvetica", "B" if bold else "", 11 if bold else 10)
        pdf.cell(155, 6, label, align="R")
        pdf.cell(35, 6, _money(amount, invoice.currency), align="R", new_x="LMARGIN", new_y="NEXT")
    return bytes(pdf.output())

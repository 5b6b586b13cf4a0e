"""An invoice as its customer reads it, in plain text: what the demo prints and support pastes.

The integration guide's sample (an Australian Tier 1 customer):

    Tier 1                                  $299.00
    Tax (GST 10%)                            $29.90
    Total                                   $328.90

Lines are named as the customer knows them — a tier's fee by its product name, our usage lines by
their own text — each with its service period; taxes by their display name and rate, an inclusive
one marked "incl."; amounts in the locale's money format (Babel, billing/formatting.py).
Plain values in, text out: `services/invoice_printout.py` reads the invoice from Stripe.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from .formatting import DEFAULT_LOCALE, format_money
from .invoice_lines import CustomField

LABEL_WIDTH = 64


@dataclass(frozen=True)
class PrintedLine:
    description: str
    amount: int  # smallest currency unit
    period: tuple[date, date] | None  # first and last day served (Stripe's line period is inclusive)


@dataclass(frozen=True)
class PrintedTax:
    display_name: str  # "GST"
    percentage: Decimal  # 10
    inclusive: bool
    amount: int


@dataclass(frozen=True)
class PrintedInvoice:
    number: str
    status: str
    customer_name: str
    customer_email: str
    currency: str
    period: tuple[date, date]
    custom_fields: tuple[CustomField, ...]
    memo: str | None
    footer: str | None
    lines: tuple[PrintedLine, ...]
    subtotal: int
    taxes: tuple[PrintedTax, ...]
    total: int
    amount_paid: int
    amount_remaining: int
    due_date: date | None = None


def tax_label(tax: PrintedTax) -> str:
    """"Tax (GST 10%)"; an inclusive rate, already inside the line amounts: "Tax (GST 10% incl.)"."""
    rate = f"{tax.percentage.normalize():f}%"
    return f"Tax ({tax.display_name} {rate}{' incl.' if tax.inclusive else ''})"


def invoice_printout(invoice: PrintedInvoice, locale: str | None = DEFAULT_LOCALE) -> str:
    """The invoice as text: header, custom fields and memo, every line with its period, subtotal,
    each tax, total, paid and due, footer."""

    def row(label: str, amount: int) -> str:
        return f"│   {label:<{LABEL_WIDTH}} {format_money(amount, invoice.currency, locale):>14}"

    def days(period: tuple[date, date]) -> str:
        return f"{period[0]:%Y-%m-%d} – {period[1]:%Y-%m-%d}"

    text = [
        f"┌ Invoice {invoice.number} ({invoice.status}) for {invoice.customer_name} <{invoice.customer_email}>, "
        f"period {days(invoice.period)}"
    ]
    text += [f"│ {field.name}: {field.value}" for field in invoice.custom_fields]
    if invoice.memo:
        text.append(f"│ memo: {invoice.memo}")
    if invoice.due_date:
        text.append(f"│ due: {invoice.due_date:%Y-%m-%d}")
    text.append("│")
    for line in invoice.lines:
        text.append(row(line.description, line.amount))
        if line.period:
            text.append(f"│     {days(line.period)}")
    text.append("│")
    text.append(row("Subtotal", invoice.subtotal))
    text += [row(tax_label(tax), tax.amount) for tax in _merged(invoice.taxes)]
    text.append(row("Total", invoice.total))
    text.append(row("Amount paid", invoice.amount_paid))
    text.append(row("Amount due", invoice.amount_remaining))
    if invoice.footer:
        text.append("│")
        text += [f"│ {part}" for part in invoice.footer.splitlines()]
    text.append("└")
    return "\n".join(text)


def _merged(taxes: Sequence[PrintedTax]) -> list[PrintedTax]:
    """One row per rate (Stripe lists total_taxes per rate already; this keeps the order if not)."""
    merged: dict[tuple[str, Decimal, bool], PrintedTax] = {}
    for tax in taxes:
        key = (tax.display_name, tax.percentage, tax.inclusive)
        known = merged.get(key)
        merged[key] = tax if known is None else PrintedTax(*key, amount=known.amount + tax.amount)
    return list(merged.values())

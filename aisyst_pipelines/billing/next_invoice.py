"""A subscription's next invoice, as Stripe previews it before the renewal creates it.

Stripe builds the preview (`POST /v1/invoices/create_preview`) with the renewal's own rules — the
plan, pending invoice items, taxes — so what the dashboard and the usage e-mails say the next
invoice will be is what Stripe will charge, not an estimate of ours.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from .formatting import format_money


@dataclass(frozen=True)
class NextInvoice:
    subscription_id: str
    customer_id: str
    invoice_date: datetime  # when the renewal invoice will be created (the end of the current period)
    period_start: datetime  # the billing period it closes, [start, end)
    period_end: datetime
    amount_due: int  # minor units (cents), what will be charged
    total: int
    tax: int  # all taxes of the invoice (exclusive ones raise the total, inclusive ones are within it)
    currency: str

    def amount_text(self, locale: str | None = None) -> str:
        """"$328.90", with its tax when there is any: "$328.90 (incl. $29.90 tax)"."""
        amount = format_money(self.amount_due, self.currency, locale)
        return f"{amount} (incl. {format_money(self.tax, self.currency, locale)} tax)" if self.tax else amount

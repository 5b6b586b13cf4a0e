"""The next invoice of every renewing subscription, as Stripe previews it (issue 15 item 7).

`refresh_invoice_previews` asks Stripe (`POST /v1/invoices/create_preview`, one call per renewing
subscription of the mirror) and keeps the answers in stripe_invoice_previews, which
v_customer_dashboard shows as each customer's next invoice amount beside its date. The usage
e-mails ask for a fresh preview themselves (services/usage_alerts.py). Called by the
`stripe_invoice_previews` asset (after the Stripe sync, in the usage-alerts job).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from aisyst_pipelines.billing.next_invoice import NextInvoice
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.invoice_previews_store import renewing_subscriptions, store_previews


class NextInvoices(Protocol):
    """The Stripe invoices gateway (`StripeResource.invoices`), as far as previews go."""

    def preview_next(self, subscription_id: str) -> NextInvoice | None: ...


@dataclass
class PreviewRefresh:
    previews: list[NextInvoice] = field(default_factory=list)
    not_renewing: list[str] = field(default_factory=list)  # Stripe has no next invoice for these

    @property
    def amount_due_by_currency(self) -> dict[str, int]:
        totals: dict[str, int] = {}
        for preview in self.previews:
            totals[preview.currency] = totals.get(preview.currency, 0) + preview.amount_due
        return totals


def refresh_invoice_previews(warehouse: Warehouse, invoices: NextInvoices, *, now: datetime) -> PreviewRefresh:
    """Preview the next invoice of every renewing subscription and store the previews. A Stripe error
    other than "no upcoming invoice" fails the refresh (the stored previews stay as they were)."""
    result = PreviewRefresh()
    for subscription_id in renewing_subscriptions(warehouse):
        preview = invoices.preview_next(subscription_id)
        if preview is None:
            result.not_renewing.append(subscription_id)
        else:
            result.previews.append(preview)
    store_previews(warehouse, result.previews, result.not_renewing, now=now)
    return result

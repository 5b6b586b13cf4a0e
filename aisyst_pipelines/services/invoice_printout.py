"""Invoices as their customers read them, read from Stripe: what the demo prints next to each other
(an Australian Tier 1 invoice with its GST, a US one without) and what support pastes into a reply.

The layout is `billing/invoice_printout.py`'s; this module only fetches (the invoices gateway reads
the invoice, all its lines, its tax rates and the tiers' product names).
"""

from __future__ import annotations

from aisyst_pipelines.billing.invoice_printout import invoice_printout
from resources.stripe.invoices import InvoiceGateway


def print_invoice(invoices: InvoiceGateway, invoice_id: str, locale: str | None = None) -> str:
    """The text of invoice `invoice_id` (money in `locale`'s format; English by default)."""
    return invoice_printout(invoices.printable(invoice_id), locale)

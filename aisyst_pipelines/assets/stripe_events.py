"""Stripe events into the warehouse (DESIGN.md §2.6): the `stripe_invoices` asset.

`stripe_invoices` is not computed by a run: it is kept current event by event, by
`stripe_events_sensor` (jobs/stripe_events.py) polling the Events API and, for teams that prefer
push, by the webhook receiver (aisyst_pipelines/webhook.py). Both hand each event to the same
service (services/stripe_events.py), which applies it exactly once. The sensor reports what it
applied as a materialization of this asset, so ops see the table's freshness and counts in the UI.
"""

from __future__ import annotations

import dagster as dg

from aisyst_pipelines.assets.common import OWNERS, table_metadata

STRIPE_INVOICES = dg.AssetSpec(
    "stripe_invoices",
    group_name="stripe",
    kinds={"stripe", "sql"},
    owners=OWNERS,
    # Lineage: Stripe invoices the subscriptions' renewals, with the usage lines invoice_annotations
    # added while the invoice was a draft (assets by key: this feature imports no other feature's assets).
    deps=[dg.AssetKey("stripe_subscriptions"), dg.AssetKey("invoice_annotations")],
    metadata=table_metadata("stripe_invoices"),
    description=(
        "One row per Stripe invoice (status, amounts, hosted_invoice_url, invoice_pdf, period), kept "
        "current from invoice.* events by stripe_events_sensor and the webhook receiver; an older event "
        "never overwrites a newer one. Also moves stripe_subscriptions' status and period on "
        "customer.subscription.* events. Ledger: stripe_events_applied; ops alerts: stripe_event_alerts."
    ),
)

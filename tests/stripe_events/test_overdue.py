"""Net 30 (issue 15 item 5): a customer who pays by invoice (collection_method=send_invoice) gets an
open invoice with a due date; the events tick mirrors it, sees the due date pass, marks it overdue,
alerts ops exactly once, counts its days overdue for v_customer_dashboard, and forgets them once paid.
Real SDK against the emulator, both warehouse backends."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg
from sqlalchemy import select

from aisyst_pipelines.assets.stripe_sync import stripe_customers

from aisyst_pipelines.billing.stripe_events import EventsCursor
from aisyst_pipelines.services.stripe_events import apply_new_events
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.schema import stripe_invoices
from resources import WarehouseResource

from .dashboard import customer_dashboard
from .events_helpers import HOUR, T0, events_world, notifier_for, ops_mail_subjects

DAY = timedelta(days=1)
HOUR_ = timedelta(hours=1)


def test_an_unpaid_net_30_invoice_becomes_overdue_once(stripe_emulator, stripe_resource, warehouse: Warehouse, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    notifier = notifier_for(outbox)
    world = events_world(stripe_emulator, stripe_resource)
    customer = world.customer("NET30")
    world.client.v1.subscriptions.create({
        "customer": customer, "items": [{"price": world.tier_prices[0]}],
        "collection_method": "send_invoice", "days_until_due": 30,
    })
    world.advance(T0 + 2 * HOUR)  # the first invoice is finalized an hour after creation, and stays open
    dg.materialize([stripe_customers], resources={"stripe": stripe_resource, "warehouse": WarehouseResource(url=warehouse.url)})
    start = T0
    cursor = EventsCursor()

    def tick(now: datetime) -> list[str]:
        nonlocal cursor
        result = apply_new_events(stripe_resource.events, warehouse, notifier, cursor, now=now)
        cursor = result.poll.cursor
        return result.newly_overdue

    assert tick(start + 29 * DAY) == []  # not yet due
    [invoice] = _rows(warehouse)
    assert (invoice.status, invoice.collection_method, invoice.due_date) == ("open", "send_invoice", start + 30 * DAY)
    assert (invoice.overdue_at, invoice.days_overdue) == (None, None)
    assert customer_dashboard(warehouse, customer)[0]["overdue_invoices"] == 0

    assert tick(start + 31 * DAY + HOUR_) == [invoice.invoice_id]
    [overdue] = _rows(warehouse)
    assert (overdue.overdue_at, overdue.days_overdue) == (start + 31 * DAY + HOUR_, 1)
    assert [s for s in ops_mail_subjects(outbox) if s.startswith("[Aisyst ops] Invoice overdue")] == [
        f"[Aisyst ops] Invoice overdue: {overdue.number} of {customer}"
    ]
    row = customer_dashboard(warehouse, customer)[0]
    assert (row["overdue_invoices"], row["overdue_amount"], row["days_overdue"]) == (1, 29900, 1)

    assert tick(start + 40 * DAY) == []  # still overdue: counted on, never alerted again
    assert _rows(warehouse)[0].days_overdue == 10
    assert len([s for s in ops_mail_subjects(outbox) if "Invoice overdue" in s]) == 1
    assert customer_dashboard(warehouse, customer)[0]["days_overdue"] == 10

    world.client.v1.invoices.pay(invoice.invoice_id, {"paid_out_of_band": True})
    assert tick(start + 41 * DAY) == []
    paid = _rows(warehouse)[0]
    assert (paid.status, paid.days_overdue, paid.overdue_at) == ("paid", None, start + 31 * DAY + HOUR_)
    row = customer_dashboard(warehouse, customer)[0]
    assert (row["overdue_invoices"], row["overdue_amount"], row["days_overdue"]) == (0, 0, None)


def _rows(warehouse: Warehouse) -> list:
    with warehouse.connect() as connection:
        return connection.execute(select(stripe_invoices)).all()

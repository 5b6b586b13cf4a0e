"""stripe_events_sensor against the emulator, on SQLite and PostgreSQL: a customer lifecycle on a test
clock — renewal paid; a declined card (payment_failed, past_due); cancellation (deleted)."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
from sqlalchemy import select

from aisyst_pipelines.assets.stripe_sync import stripe_customers
from aisyst_pipelines.billing.invoice_lines import ANNOTATION_VERSION, METADATA_VERSION_KEY
from aisyst_pipelines.billing.stripe_events import EventsCursor
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.stripe_events_store import pending_event_alerts
from aisyst_pipelines.warehouse.schema import stripe_events_applied, stripe_invoices, stripe_subscriptions
from resources import WarehouseResource

from .dashboard import customer_dashboard
from .events_helpers import HOUR, events_world, ops_mail_subjects, sensor_tick, watched_event_ids


def invoices(warehouse: Warehouse) -> dict[str, tuple]:
    c = stripe_invoices.c
    with warehouse.connect() as connection:
        rows = connection.execute(select(c.invoice_id, c.customer_id, c.billing_reason, c.status, c.amount_paid)).all()
    return {row.invoice_id: tuple(row)[1:] for row in rows}


def subscription(warehouse: Warehouse, subscription_id: str):
    with warehouse.connect() as connection:
        return connection.execute(
            select(stripe_subscriptions).where(stripe_subscriptions.c.subscription_id == subscription_id)
        ).one()


def test_lifecycle_on_a_test_clock(stripe_emulator, stripe_resource, warehouse: Warehouse, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    world = events_world(stripe_emulator, stripe_resource)
    good = world.customer("ACME")
    declined = world.customer("BETA")
    sub_good = world.subscribe(good, tier=1).id
    sub_bad = world.subscribe(declined, tier=2).id
    dg.materialize([stripe_customers], resources={"stripe": stripe_resource, "warehouse": WarehouseResource(url=warehouse.url)})

    # First tick: no cursor — the sensor finds the oldest event and applies everything from there.
    first = sensor_tick(warehouse, stripe_resource, outbox, None)
    cursor = EventsCursor.from_json(first.cursor)
    assert not cursor.scanning and cursor.last_event_id is not None
    assert {(c, r, s) for c, r, s, _ in invoices(warehouse).values()} == {
        (good, "subscription_create", "paid"), (declined, "subscription_create", "paid")}
    row = subscription(warehouse, sub_good)  # created after no sync at all: mirrored from the event
    assert (row.status, row.tier_name, row.included_minutes, row.tier_source) == ("active", "Tier 1", 500, "price_metadata")
    [materialization] = first.asset_events
    assert materialization.metadata["events_applied"].value == 12

    # The renewal: drafts at the period end; ours gets annotated (as the annotation job does) while
    # BETA's card starts failing, so its renewal is declined.
    period_end = world.period_end(sub_good)
    world.switch_card(declined, "pm_card_chargeCustomerFail")
    world.advance(period_end + HOUR // 2)
    drafts = sensor_tick(warehouse, stripe_resource, outbox, first.cursor)
    renewals = {i: v for i, v in invoices(warehouse).items() if v[1] == "subscription_cycle"}
    assert sorted(v[2] for v in renewals.values()) == ["draft", "draft"]
    good_renewal = next(i for i, v in renewals.items() if v[0] == good)
    stripe_resource.invoices.write_metadata(good_renewal, {METADATA_VERSION_KEY: ANNOTATION_VERSION})
    assert subscription(warehouse, sub_good).current_period_start == period_end

    world.advance(period_end + 2 * HOUR)  # one clock-hour after the drafts: finalized, charged
    charged = sensor_tick(warehouse, stripe_resource, outbox, drafts.cursor)
    by_customer = {v[0]: v for i, v in invoices(warehouse).items() if v[1] == "subscription_cycle"}
    assert by_customer[good][2:] == ("paid", 29_900)
    assert by_customer[declined][2:] == ("open", 0)
    assert subscription(warehouse, sub_good).status == "active"
    assert subscription(warehouse, sub_bad).status == "past_due"

    subjects = ops_mail_subjects(outbox)
    assert len(subjects) == 3, subjects
    assert any(s.startswith("[Aisyst ops] Payment failed") and declined in s for s in subjects)
    assert any(s.startswith("[Aisyst ops] Subscription past due") and sub_bad in s for s in subjects)
    assert any("Renewal invoice finalized without usage lines" in s and good_renewal not in s for s in subjects)
    assert pending_event_alerts(warehouse) == []

    # Cancellation.
    world.client.v1.subscriptions.cancel(sub_bad)
    cancelled = sensor_tick(warehouse, stripe_resource, outbox, charged.cursor)
    canceled = subscription(warehouse, sub_bad)
    assert canceled.status == "canceled" and canceled.canceled_at is not None and canceled.ended_at is not None
    assert cancelled.asset_events[0].metadata["events_by_type"].value == {"customer.subscription.deleted": 1}
    quiet = sensor_tick(warehouse, stripe_resource, outbox, cancelled.cursor)
    assert quiet.skip_reason is not None and quiet.cursor == cancelled.cursor

    # Every watched event the emulator holds was applied exactly once, by the sensor.
    with warehouse.connect() as connection:
        ledger = connection.execute(select(stripe_events_applied.c.event_id, stripe_events_applied.c.outcome)).all()
    assert sorted(e for e, _ in ledger) == sorted(watched_event_ids(world.stripe))
    assert {outcome for _, outcome in ledger} == {"applied"}

    # What a customer dashboard shows for ACME after its paid renewal.
    [acme] = customer_dashboard(warehouse, good)
    assert (acme["plan"], acme["subscription_status"], acme["minutes_included"]) == ("Tier 1", "active", 500)
    assert acme["next_invoice_date"] == subscription(warehouse, sub_good).current_period_end
    assert (acme["last_invoice_id"], acme["last_invoice_status"]) == (good_renewal, "paid")
    assert acme["hosted_invoice_url"].endswith(f"/_emulator/invoices/{good_renewal}")
    assert acme["invoice_pdf"].endswith(f"/_emulator/invoices/{good_renewal}/pdf")
    [beta] = customer_dashboard(warehouse, declined)
    assert (beta["subscription_status"], beta["next_invoice_date"], beta["last_invoice_status"]) == ("canceled", None, "open")

"""The audit of final renewal invoices (issue 15 item 9), through the pipeline: the usage line's
minutes against the warehouse's and Stripe's meter summary (the real SDK against the emulator), the
named cause of each difference, the asset check — on both warehouse backends."""

from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
from sqlalchemy import select

from aisyst_pipelines.assets.invoice_annotation import invoice_audits
from aisyst_pipelines.services.invoice_annotation import apply_invoice_branding
from aisyst_pipelines.services.invoice_audit import pending_late_minutes
from aisyst_pipelines.warehouse.schema import invoice_audits as audits_table
from tests.stripe_events.events_helpers import sensor_tick

from .conftest import RENEWAL, T0, Subscriber, AnnotationWorld


def meter(world: AnnotationWorld, subscriber: Subscriber, minutes: int, tag: str) -> None:
    """The voice server's meter event for a call of the period."""
    world.stripe.meters.create_event(subscriber.customer_id, minutes, T0 + timedelta(days=10), identifier=f"{subscriber.account_code}-{tag}")


def audit(world: AnnotationWorld) -> tuple[dg.ExecuteInProcessResult, dict[str, tuple]]:
    result = dg.materialize(
        [invoice_audits], resources=world.resources, instance=world.instance, raise_on_error=False,
        run_config={"ops": {"invoice_audits": {"config": {"look_back_days": 3650}}}},  # the test clock is in the past
    )
    with world.warehouse.connect() as connection:
        rows = connection.execute(select(audits_table)).all()
    return result, {row.customer_id: (row.invoice_minutes, row.warehouse_minutes, row.late_minutes, row.meter_minutes, row.causes) for row in rows}


def test_final_invoices_are_audited_and_each_difference_named(world: AnnotationWorld, tmp_path: Path) -> None:
    on_time = world.sign_up("ACME-1", 1)
    drifting = world.sign_up("ACME-2", 1)
    # Ingested today, before the line is written, while Stripe's test clock says March: not late (late
    # means after the usage line was written, on our own clock — never against Stripe's test clock).
    world.calls(on_time, [100, 20], ingested_at=datetime.now(timezone.utc))
    world.calls(drifting, [50])
    world.advance(T0 + timedelta(days=10, hours=1))  # the test clock past the calls: their meter events are not in the future
    meter(world, on_time, 100, "a")
    meter(world, on_time, 20, "b")
    meter(world, drifting, 45, "a")  # the voice server lost 5 minutes of it
    world.sync()
    world.renew()
    world.annotate_all()
    world.advance(RENEWAL + timedelta(hours=2))  # finalized and paid
    cursor = None
    while (result := sensor_tick(world.warehouse, world.stripe, tmp_path, cursor)).cursor != cursor:
        cursor = result.cursor  # the events sensor mirrors the finalization

    result, rows = audit(world)
    assert rows[on_time.customer_id] == (120, 120, 0, 120, "")
    assert rows[drifting.customer_id] == (50, 50, 0, 45, "meter_drift")
    [check] = result.get_asset_check_evaluations()
    assert not check.passed
    assert list(check.metadata["causes"].value.values()) == ["meter_drift"]

    # A CDR of March arrives after the invoice was final: the line says 120, the calls now 132.
    world.calls(on_time, [12], ingested_at=datetime.now(timezone.utc))
    meter(world, on_time, 12, "c")  # the meter had it all along
    _, rows = audit(world)
    assert rows[on_time.customer_id] == (120, 132, 12, 132, "late_cdr")

    # A call removed from the warehouse after the line was written: no late CDR explains it.
    world.calls(drifting, [7], ingested_at=T0 + timedelta(days=11))
    _, rows = audit(world)
    assert rows[drifting.customer_id] == (50, 57, 0, 45, "invoice_mismatch,meter_drift")


def test_late_minutes_go_onto_the_next_draft_once(world: AnnotationWorld, tmp_path: Path) -> None:
    """March's late CDR (12 minutes, after March's invoice was final) is one line on April's renewal
    draft, in the same add_lines; the ledger says so, the audit counts it settled, May's draft does
    not carry it again."""
    customer = world.sign_up("ACME-1", 1)
    world.calls(customer, [100, 20])
    world.advance(T0 + timedelta(days=10, hours=1))
    meter(world, customer, 120, "a")
    world.sync()
    apply_invoice_branding(world.stripe.invoices, world.warehouse, world.profiles())  # renewals need one write each
    world.renew()
    world.annotate_all()
    world.advance(RENEWAL + timedelta(hours=2))
    cursor = mirror(world, tmp_path, None)
    world.calls(customer, [12], ingested_at=datetime.now(timezone.utc))  # after the line was written
    meter(world, customer, 12, "c")
    result, rows = audit(world)
    assert rows[customer.customer_id] == (120, 132, 12, 132, "late_cdr")
    assert not result.get_asset_check_evaluations()[0].passed  # not carried yet
    [pending] = pending_late_minutes(world.warehouse, [customer.customer_id])
    assert (pending.account_code, pending.late.late_minutes, pending.line_text) == ("ACME-1", 12, "Late-reported minutes from March: 12")

    april_renewal = RENEWAL.replace(month=5)
    world.advance(april_renewal + timedelta(minutes=1))  # April's renewal draft
    before = len(world.emulator.requests(method="POST"))
    world.annotate_all()
    assert [p["path"].rsplit("/", 1)[-1] for p in world.emulator.requests(method="POST")[before:]] == ["add_lines"]
    april = next(i for i in world.client.v1.invoices.list({"customer": customer.customer_id, "limit": 10}).data
                 if i.billing_reason == "subscription_cycle" and i.status == "draft")
    lines = {kind: (text, amount) for kind, text, amount in world.our_lines(april.id)}
    assert lines["late_minutes"] == ("Late-reported minutes from March: 12", 0)  # Tier 1 prices no overage
    with world.warehouse.connect() as connection:
        ledger = connection.execute(select(audits_table.c.carried_to_invoice_id, audits_table.c.carried_minutes)).one()
    assert tuple(ledger) == (april.id, 12)
    assert pending_late_minutes(world.warehouse, [customer.customer_id]) == []  # carried: nothing pending

    result, rows = audit(world)
    assert rows[customer.customer_id][-1] == "late_cdr" and result.get_asset_check_evaluations()[0].passed  # settled

    world.advance(april_renewal + timedelta(hours=2))
    mirror(world, tmp_path, cursor)
    audit(world)
    world.advance(RENEWAL.replace(month=6) + timedelta(minutes=1))  # May's draft: nothing late to carry
    world.annotate_all()
    may = next(i for i in world.client.v1.invoices.list({"customer": customer.customer_id, "limit": 10}).data
               if i.billing_reason == "subscription_cycle" and i.status == "draft")
    assert "late_minutes" not in {kind for kind, _, _ in world.our_lines(may.id)}


def mirror(world: AnnotationWorld, tmp_path: Path, cursor: str | None) -> str | None:
    """The events sensor's ticks until it has nothing new (the finalizations reach stripe_invoices)."""
    while (result := sensor_tick(world.warehouse, world.stripe, tmp_path, cursor)).cursor != cursor:
        cursor = result.cursor
    return cursor

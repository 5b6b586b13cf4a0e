"""stripe_events_store on SQLite and PostgreSQL: exactly-once application, no going backwards, queued alerts."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from sqlalchemy import func, insert, select

from aisyst_pipelines.billing.invoice_lines import METADATA_VERSION_KEY
from aisyst_pipelines.billing.stripe_events import OpsAlertKind, StripeEvent
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.invoice_annotation_store import (
    AnnotationOutcome,
    AnnotationStatus,
    RenewalInvoice,
    queue_invoices,
    record_outcome,
)
from aisyst_pipelines.warehouse.stripe_events_store import (
    apply_event,
    apply_events,
    mark_event_alerts_failed,
    mark_event_alerts_sent,
    pending_event_alerts,
)
from aisyst_pipelines.warehouse.schema import (
    stripe_customers,
    stripe_events_applied,
    stripe_invoices,
    stripe_subscriptions,
    usage_by_period,
)

from .dashboard import customer_dashboard
from .payloads import DAY, T0, event, invoice, subscription

NOW = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)


def utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def apply(warehouse: Warehouse, payload: dict, source: str = "sensor"):
    return apply_event(warehouse, StripeEvent.from_payload(payload), source=source, now=NOW)


def stored_invoice(warehouse: Warehouse, invoice_id: str = "in_1"):
    with warehouse.connect() as connection:
        return connection.execute(select(stripe_invoices).where(stripe_invoices.c.invoice_id == invoice_id)).one()


def ledger_count(warehouse: Warehouse) -> int:
    with warehouse.connect() as connection:
        return connection.scalar(select(func.count()).select_from(stripe_events_applied))


def add_subscription(warehouse: Warehouse, status: str = "active", *, included: int | None = 500) -> None:
    with warehouse.begin() as connection:
        connection.execute(insert(stripe_customers).values(
            customer_id="cus_1", account_code="ACME", name="Acme", email="billing@acme.example", synced_at=NOW))
        connection.execute(insert(stripe_subscriptions).values(
            subscription_id="sub_1", customer_id="cus_1", status=status, price_id="price_tier1", tier_name="Tier 1",
            tier_source="price_metadata",
            included_minutes=included, current_period_start=utc(T0 - 31 * DAY), current_period_end=utc(T0),
            synced_at=NOW - timedelta(days=1)))


def test_an_event_is_applied_once_whoever_delivers_it(warehouse: Warehouse) -> None:
    created = event("invoice.created", invoice(status="draft"), created=T0, event_id="evt_created")
    first = apply(warehouse, created, source="sensor")
    again = apply(warehouse, created, source="webhook")
    assert (first.outcome, again.outcome) == ("applied", "duplicate")
    assert ledger_count(warehouse) == 1
    row = stored_invoice(warehouse)
    assert (row.status, row.customer_id, row.subscription_id, row.last_event_id) == ("draft", "cus_1", "sub_1", "evt_created")
    assert row.created == utc(T0) and row.period_end == utc(T0)
    with warehouse.connect() as connection:
        assert connection.scalar(select(stripe_events_applied.c.source)) == "sensor"


def test_an_invoice_never_moves_backwards(warehouse: Warehouse) -> None:
    paid = event("invoice.paid", invoice(status="paid", amount_paid=29_900), created=T0 + 3600, event_id="evt_paid")
    finalized = event("invoice.finalized", invoice(status="open"), created=T0 + 3590, event_id="evt_final")
    assert apply(warehouse, paid).outcome == "applied"
    late = apply(warehouse, finalized)  # older, arriving late (e.g. the sensor after the webhook)
    assert late.outcome == "stale" and late.alerts == ()
    row = stored_invoice(warehouse)
    assert (row.status, row.amount_paid, row.last_event_id) == ("paid", 29_900, "evt_paid")
    with warehouse.connect() as connection:
        outcomes = dict(connection.execute(select(stripe_events_applied.c.event_id, stripe_events_applied.c.outcome)).all())
    assert outcomes == {"evt_paid": "applied", "evt_final": "stale"}


def test_same_second_events_follow_the_invoice_lifecycle(warehouse: Warehouse) -> None:
    finalized = event("invoice.finalized", invoice(status="open", metadata={METADATA_VERSION_KEY: "1"}),
                      created=T0, event_id="evt_f")
    paid = event("invoice.paid", invoice(status="paid", amount_paid=29_900), created=T0, event_id="evt_p")
    assert apply(warehouse, paid).outcome == "applied"
    assert apply(warehouse, finalized).outcome == "stale"  # same second, earlier in the lifecycle
    assert stored_invoice(warehouse).status == "paid"
    newer_open = event("invoice.updated", invoice(status="open", invoice_id="in_2"), created=T0, event_id="evt_o")
    newer_paid = event("invoice.paid", invoice(status="paid", invoice_id="in_2"), created=T0, event_id="evt_p2")
    assert [apply(warehouse, e).outcome for e in (newer_open, newer_paid)] == ["applied", "applied"]
    assert stored_invoice(warehouse, "in_2").status == "paid"


def test_payment_failed_queues_one_ops_alert(warehouse: Warehouse) -> None:
    failed = event("invoice.payment_failed", invoice(status="open", attempt_count=1), created=T0, event_id="evt_fail")
    outcome = apply(warehouse, failed)
    apply(warehouse, failed, source="webhook")  # duplicate delivery: no second alert
    assert [a.kind for a in outcome.alerts] == [OpsAlertKind.PAYMENT_FAILED]
    [queued] = pending_event_alerts(warehouse)
    assert (queued.event_id, queued.kind, queued.invoice_id) == ("evt_fail", "payment_failed", "in_1")

    mark_event_alerts_failed(warehouse, [queued], "SMTP server 127.0.0.1:1 did not accept the message")
    [retry] = pending_event_alerts(warehouse)
    assert retry.attempts == 1
    mark_event_alerts_sent(warehouse, [retry], now=NOW)
    assert pending_event_alerts(warehouse) == []


def test_renewal_finalized_without_annotation_is_reported(warehouse: Warehouse) -> None:
    bare = event("invoice.finalized", invoice(status="open", invoice_id="in_bare"), event_id="evt_bare")
    assert [a.kind for a in apply(warehouse, bare).alerts] == [OpsAlertKind.RENEWAL_NOT_ANNOTATED]

    tagged = invoice(status="open", invoice_id="in_tagged", metadata={METADATA_VERSION_KEY: "1"})
    assert apply(warehouse, event("invoice.finalized", tagged)).alerts == ()

    renewal = RenewalInvoice("in_ledger", "cus_1", "sub_1", utc(T0), utc(T0 - 31 * DAY), utc(T0))
    queue_invoices(warehouse, [renewal], "1", NOW)
    assert apply(warehouse, event("invoice.finalized", invoice(status="open", invoice_id="in_ledger"))).alerts != ()
    record_outcome(warehouse, "in_ledger", AnnotationOutcome(AnnotationStatus.ANNOTATED), "run-1", NOW)
    ledgered = invoice(status="open", invoice_id="in_ledger")
    assert apply(warehouse, event("invoice.finalized", ledgered, created=T0 + 1)).alerts == ()


def test_subscription_status_and_period_follow_the_events(warehouse: Warehouse) -> None:
    add_subscription(warehouse)
    renewed = subscription(status="past_due", period_start=T0, period_end=T0 + 31 * DAY)
    turned = event("customer.subscription.updated", renewed, created=T0 + 3600,
                   previous_attributes={"status": "active"}, event_id="evt_pd")
    outcome = apply(warehouse, turned)
    assert [a.kind for a in outcome.alerts] == [OpsAlertKind.SUBSCRIPTION_PAST_DUE]
    with warehouse.connect() as connection:
        row = connection.execute(select(stripe_subscriptions)).one()
    assert (row.status, row.current_period_start, row.current_period_end) == ("past_due", utc(T0), utc(T0 + 31 * DAY))
    assert row.tier_name == "Tier 1" and row.included_minutes == 500  # the sync's columns are kept

    older = event("customer.subscription.updated", subscription(status="active"), created=T0 + 60,
                  previous_attributes={"metadata": {}}, event_id="evt_old")
    assert apply(warehouse, older).outcome == "stale"
    deleted = event("customer.subscription.deleted", subscription(status="canceled"), created=T0 + 7200)
    assert apply(warehouse, deleted).outcome == "applied"
    with warehouse.connect() as connection:
        assert connection.scalar(select(stripe_subscriptions.c.status)) == "canceled"
    # canceled while past due: canceled for non-payment, as far as ops are concerned
    assert sorted(a.kind for a in pending_event_alerts(warehouse)) == ["subscription_canceled", "subscription_past_due"]


def test_unknown_types_are_recorded_and_ignored(warehouse: Warehouse) -> None:
    outcome = apply(warehouse, event("charge.succeeded", {"id": "ch_1", "object": "charge"}), source="webhook")
    assert outcome.outcome == "ignored" and ledger_count(warehouse) == 1


def test_customer_dashboard_view(warehouse: Warehouse) -> None:
    add_subscription(warehouse)
    with warehouse.begin() as connection:
        connection.execute(insert(usage_by_period).values(
            subscription_id="sub_1", period_start=utc(T0 - 31 * DAY), period_end=utc(T0), customer_id="cus_1",
            tier_name="Tier 1", included_minutes=500, calls=120, billable_seconds=23_000, minutes_used=395,
            minutes_unused=105, overage_minutes=0, usage_pct=79.0, computed_at=NOW))
    older = invoice(invoice_id="in_old", status="paid", created=T0 - 31 * DAY, amount_paid=29_900)
    newest = invoice(invoice_id="in_new", status="open", created=T0 - DAY)
    draft = invoice(invoice_id="in_draft", status="draft", created=T0)
    for inv, kind in ((older, "invoice.paid"), (newest, "invoice.finalized"), (draft, "invoice.created")):
        apply(warehouse, event(kind, inv | {"metadata": {METADATA_VERSION_KEY: "1"}}, created=inv["created"]))

    [row] = customer_dashboard(warehouse)
    assert (row["customer_id"], row["account_code"], row["plan"], row["subscription_status"]) == (
        "cus_1", "ACME", "Tier 1", "active")
    assert (row["minutes_used"], row["minutes_included"], row["minutes_unused"]) == (395, 500, 105)
    assert row["next_invoice_date"] == utc(T0)
    # the draft is not an invoice the customer has seen: the last invoice is the open one
    assert (row["last_invoice_id"], row["last_invoice_status"]) == ("in_new", "open")
    assert row["hosted_invoice_url"] == "https://invoice.example/in_new"
    assert row["invoice_pdf"] == "https://invoice.example/in_new/pdf"
    assert row["last_invoice_created"] == utc(T0 - DAY)


def test_customer_dashboard_unlimited_and_cancelling(warehouse: Warehouse) -> None:
    add_subscription(warehouse, included=None)
    with warehouse.begin() as connection:
        connection.execute(stripe_subscriptions.update().values(tier_name="Tier 3", cancel_at_period_end=1))
    [row] = customer_dashboard(warehouse, "cus_1")
    assert (row["plan"], row["minutes_used"], row["minutes_included"], row["minutes_unused"]) == ("Tier 3", 0, None, None)
    assert row["next_invoice_date"] is None  # ends at the period end: no next invoice
    assert row["last_invoice_id"] is None


def test_a_page_is_applied_in_one_transaction_in_its_order(warehouse: Warehouse) -> None:
    add_subscription(warehouse)
    past_due = event("customer.subscription.updated", subscription(status="past_due"), created=T0 + 10,
                     previous_attributes={"status": "active"}, event_id="evt_b1")
    canceled = event("customer.subscription.deleted", subscription(status="canceled"), created=T0 + 20, event_id="evt_b2")
    already = event("invoice.created", invoice(status="draft"), created=T0 + 5, event_id="evt_b0")
    apply(warehouse, already, source="webhook")
    outcomes = apply_events(warehouse, [StripeEvent.from_payload(e) for e in (already, past_due, canceled)],
                            source="sensor", now=NOW)
    assert [o.outcome for o in outcomes] == ["duplicate", "applied", "applied"]
    assert [a.kind for a in outcomes[1].alerts] == [OpsAlertKind.SUBSCRIPTION_PAST_DUE]  # not hidden by the newer one
    with warehouse.connect() as connection:
        assert connection.scalar(select(stripe_subscriptions.c.status)) == "canceled"
        outcomes_in_ledger = dict(connection.execute(
            select(stripe_events_applied.c.event_id, stripe_events_applied.c.outcome)).all())
    assert outcomes_in_ledger == {"evt_b0": "applied", "evt_b1": "applied", "evt_b2": "applied"}


def test_within_a_page_an_older_subscription_event_after_a_newer_one_is_stale(warehouse: Warehouse) -> None:
    add_subscription(warehouse)
    newer = event("customer.subscription.updated", subscription(status="active"), created=T0 + 20,
                  previous_attributes={"status": "past_due"}, event_id="evt_n")
    older = event("customer.subscription.updated", subscription(status="past_due"), created=T0 + 10,
                  previous_attributes={"status": "active"}, event_id="evt_o")
    outcomes = apply_events(warehouse, [StripeEvent.from_payload(e) for e in (newer, older)], source="webhook", now=NOW)
    assert [o.outcome for o in outcomes] == ["applied", "stale"]
    with warehouse.connect() as connection:
        assert connection.scalar(select(stripe_subscriptions.c.status)) == "active"
    # the newer event's recovery is news; the stale older one raises nothing
    assert [(a.kind, a.event_id) for a in pending_event_alerts(warehouse)] == [("subscription_recovered", "evt_n")]

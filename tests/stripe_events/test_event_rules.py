"""Pure rules of billing/stripe_events.py: event → invoice row / subscription status / ops alerts."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from aisyst_pipelines.billing.invoice_lines import METADATA_VERSION_KEY
from aisyst_pipelines.billing.stripe_events import (
    BILLING_REASON_WIDTH,
    CURRENCY_WIDTH,
    EVENT_TYPE_WIDTH,
    ID_WIDTH,
    INVOICE_STATUS_WIDTH,
    MAX_TYPES_PER_LISTING,
    SUBSCRIPTION_STATUS_WIDTH,
    WATCHED_EVENT_TYPES,
    EventPayloadError,
    OpsAlertKind,
    StripeEvent,
    invoice_alerts,
    invoice_row,
    retention_gap_alert,
    subscription_alerts,
    subscription_status,
)

from .payloads import DAY, T0, event, invoice, odd_events, subscription


def utc(seconds: int) -> datetime:
    return datetime.fromtimestamp(seconds, timezone.utc)


def test_watched_types_fit_one_filtered_listing() -> None:
    assert len(WATCHED_EVENT_TYPES) <= MAX_TYPES_PER_LISTING
    assert len(set(WATCHED_EVENT_TYPES)) == len(WATCHED_EVENT_TYPES)
    for needed in ("invoice.paid", "invoice.payment_failed", "invoice.finalized", "invoice.finalization_failed",
                   "customer.subscription.updated", "customer.subscription.deleted"):
        assert needed in WATCHED_EVENT_TYPES


def test_event_payload_is_read_with_aware_times() -> None:
    parsed = StripeEvent.from_payload(event("invoice.paid", invoice(status="paid"), created=T0 + 5, event_id="evt_a"))
    assert (parsed.id, parsed.type, parsed.created) == ("evt_a", "invoice.paid", utc(T0 + 5))
    assert parsed.is_invoice_event and parsed.is_watched and not parsed.is_subscription_event
    assert StripeEvent.from_payload(event("charge.succeeded", {"id": "ch_1", "object": "charge"})).is_watched is False


@pytest.mark.parametrize("broken", [
    {"id": "evt_1", "type": "invoice.paid", "created": T0},  # no data
    {"id": "evt_1", "type": "invoice.paid", "data": {"object": {}}},  # no created
    {"object": "invoice", "id": "in_1"},  # not an event at all
    {"id": 5, "type": "invoice.paid", "created": T0, "data": {"object": {}}},
])
def test_malformed_payloads_are_refused(broken: dict) -> None:
    with pytest.raises(EventPayloadError):
        StripeEvent.from_payload(broken)


def test_invoice_row_reads_the_basil_shape() -> None:
    paid = invoice(status="paid", amount_paid=29_900, created=T0, paid_at=T0 + 3600)
    row = invoice_row(StripeEvent.from_payload(event("invoice.paid", paid, created=T0 + 3600, event_id="evt_p")))
    assert row.invoice_id == "in_1" and row.customer_id == "cus_1"
    assert row.subscription_id == "sub_1"  # from parent.subscription_details
    assert (row.status, row.amount_due, row.amount_paid, row.amount_remaining) == ("paid", 29_900, 29_900, 0)
    assert (row.period_start, row.period_end) == (utc(T0 - 31 * DAY), utc(T0))
    assert row.hosted_invoice_url == "https://invoice.example/in_1" and row.invoice_pdf.endswith("/pdf")
    assert (row.created, row.paid_at, row.finalized_at) == (utc(T0), utc(T0 + 3600), utc(T0))
    assert (row.last_event_id, row.last_event_type, row.last_event_created) == ("evt_p", "invoice.paid", utc(T0 + 3600))


def test_invoice_without_subscription_and_deleted_draft() -> None:
    manual = invoice(subscription=None, billing_reason="manual")
    assert invoice_row(StripeEvent.from_payload(event("invoice.created", manual))).subscription_id is None
    deleted = invoice_row(StripeEvent.from_payload(event("invoice.deleted", invoice(status="draft"))))
    assert deleted.status == "deleted"


def test_an_invoice_event_must_carry_an_invoice() -> None:
    with pytest.raises(EventPayloadError):
        invoice_row(StripeEvent.from_payload(event("invoice.paid", subscription())))


def test_subscription_status_takes_the_period_from_the_items() -> None:
    sub = subscription(status="past_due", period_start=T0, period_end=T0 + 31 * DAY, cancel_at_period_end=True)
    change = subscription_status(StripeEvent.from_payload(
        event("customer.subscription.updated", sub, previous_attributes={"status": "active"})))
    assert (change.subscription_id, change.customer_id, change.status, change.previous_status) == (
        "sub_1", "cus_1", "past_due", "active")
    assert change.cancel_at_period_end is True
    assert (change.current_period_start, change.current_period_end) == (utc(T0), utc(T0 + 31 * DAY))


def _invoice_alerts(event_type: str, inv: dict, *, annotated: bool = False) -> list:
    parsed = StripeEvent.from_payload(event(event_type, inv))
    return invoice_alerts(parsed, invoice_row(parsed), annotated=annotated)


def test_payment_failed_and_finalization_failed_alert() -> None:
    [failed] = _invoice_alerts("invoice.payment_failed", invoice(status="open", attempt_count=1))
    assert failed.kind is OpsAlertKind.PAYMENT_FAILED
    assert (failed.customer_id, failed.subscription_id, failed.invoice_id) == ("cus_1", "sub_1", "in_1")
    assert "299.00 USD" in failed.detail and "attempt 1" in failed.detail and "no further attempt" in failed.detail
    retrying = invoice(status="open", attempt_count=2) | {"next_payment_attempt": T0 + 2 * DAY}
    [again] = _invoice_alerts("invoice.payment_failed", retrying)
    assert "attempt 2; Stripe retries on 2026-03-03 00:00 UTC" in again.detail
    # A zero-decimal currency's amount is already in yen: 29,900 JPY, not 299.00.
    [in_yen] = _invoice_alerts("invoice.payment_failed", invoice(status="open", attempt_count=1) | {"currency": "jpy"})
    assert "(29,900 JPY)" in in_yen.detail
    broken = invoice(status="draft") | {"last_finalization_error": {"message": "tax location invalid"}}
    [finalization] = _invoice_alerts("invoice.finalization_failed", broken)
    assert finalization.kind is OpsAlertKind.FINALIZATION_FAILED and "tax location invalid" in finalization.detail


def test_renewal_finalized_without_annotation_alerts_once_annotated_does_not() -> None:
    [missed] = _invoice_alerts("invoice.finalized", invoice(status="open"), annotated=False)
    assert missed.kind is OpsAlertKind.RENEWAL_NOT_ANNOTATED and "2026-01-29 – 2026-03-01" in missed.detail
    assert _invoice_alerts("invoice.finalized", invoice(status="open"), annotated=True) == []
    # only renewals are annotated: a first invoice or a manual one finalizing is no news
    assert _invoice_alerts("invoice.finalized", invoice(status="open", billing_reason="subscription_create")) == []
    annotated_metadata = invoice(status="open", metadata={METADATA_VERSION_KEY: "1"})
    assert _invoice_alerts("invoice.paid", annotated_metadata | {"status": "paid"}) == []


def _sub_alerts(
    event_type: str, status: str, *, previous: dict | None = None, stored: str | None = None, reason: str | None = None
) -> list:
    payload = subscription(status=status) | ({"cancellation_details": {"reason": reason}} if reason else {})
    parsed = StripeEvent.from_payload(event(event_type, payload, previous_attributes=previous))
    return subscription_alerts(parsed, subscription_status(parsed), stored_status=stored)


def test_subscription_turning_past_due_or_unpaid_alerts() -> None:
    [past_due] = _sub_alerts("customer.subscription.updated", "past_due", previous={"status": "active"}, stored="active")
    assert past_due.kind is OpsAlertKind.SUBSCRIPTION_PAST_DUE and "active to past_due" in past_due.detail
    [unpaid] = _sub_alerts("customer.subscription.updated", "unpaid", previous={"status": "past_due"}, stored="past_due")
    assert unpaid.kind is OpsAlertKind.SUBSCRIPTION_UNPAID


def test_subscription_recovering_or_canceled_for_non_payment_alerts() -> None:
    [recovered] = _sub_alerts("customer.subscription.updated", "active", previous={"status": "past_due"}, stored="past_due")
    assert recovered.kind is OpsAlertKind.SUBSCRIPTION_RECOVERED and "active again (it was past_due)" in recovered.detail
    [lapsed] = _sub_alerts("customer.subscription.deleted", "canceled", stored="past_due", reason="payment_failed")
    assert lapsed.kind is OpsAlertKind.SUBSCRIPTION_CANCELED and "payment_failed" in lapsed.detail
    # Stripe's reason alone says it, whatever we had stored (an unpaid one, or none yet)
    assert [a.kind for a in _sub_alerts("customer.subscription.deleted", "canceled", reason="payment_failed")] == [
        OpsAlertKind.SUBSCRIPTION_CANCELED]
    # a customer's own cancellation is no news for ops; nor is a first payment going through
    assert _sub_alerts("customer.subscription.deleted", "canceled", stored="active", reason="cancellation_requested") == []
    assert _sub_alerts("customer.subscription.updated", "active", previous={"status": "incomplete"}, stored="incomplete") == []


def test_subscription_staying_past_due_is_quiet() -> None:
    # an update of something else while past due: no new alert
    assert _sub_alerts("customer.subscription.updated", "past_due", previous={"metadata": {}}, stored="past_due") == []
    # a created event has no previous_attributes: the stored status tells whether it is a change
    assert len(_sub_alerts("customer.subscription.created", "past_due", stored=None)) == 1
    assert _sub_alerts("customer.subscription.resumed", "past_due", stored="past_due") == []


def test_retention_gap_alert_names_the_lost_cursor() -> None:
    alert = retention_gap_alert(cursor_event_id="evt_old", cursor_created=utc(T0), now=utc(T0 + 40 * DAY))
    assert alert.kind is OpsAlertKind.EVENTS_RETENTION_GAP and alert.event_id == "gap:evt_old"
    assert "evt_old" in alert.detail and "2026-03-01 00:00" in alert.detail


@pytest.mark.parametrize(("named", "payload"), odd_events(), ids=lambda value: value if isinstance(value, str) else "")
def test_odd_events_are_refused_with_the_field_named(named: str, payload: dict) -> None:
    with pytest.raises(EventPayloadError) as refused:
        StripeEvent.from_payload(payload)
    assert named in str(refused.value)


def test_the_widths_checked_are_the_warehouse_columns() -> None:
    from aisyst_pipelines.warehouse.schema import stripe_events_applied, stripe_invoices, stripe_subscriptions

    assert stripe_events_applied.c.event_id.type.length == ID_WIDTH
    assert stripe_events_applied.c.event_type.type.length == EVENT_TYPE_WIDTH
    invoices = stripe_invoices.c
    assert {invoices.invoice_id.type.length, invoices.customer_id.type.length, invoices.subscription_id.type.length,
            invoices.number.type.length, stripe_subscriptions.c.subscription_id.type.length} == {ID_WIDTH}
    assert invoices.status.type.length == INVOICE_STATUS_WIDTH
    assert invoices.billing_reason.type.length == BILLING_REASON_WIDTH
    assert invoices.currency.type.length == CURRENCY_WIDTH
    assert stripe_subscriptions.c.status.type.length == SUBSCRIPTION_STATUS_WIDTH


def test_an_unwatched_event_keeps_an_object_id_the_ledger_cannot_hold_out_of_it() -> None:
    long_id = StripeEvent.from_payload(event("charge.succeeded", {"id": "ch_" + "x" * 70, "object": "charge"}))
    assert long_id.object_id is None and long_id.type == "charge.succeeded"
    assert StripeEvent.from_payload(event("charge.succeeded", {"id": "ch_1", "object": "charge"})).object_id == "ch_1"

"""`POST /v1/invoices/create_preview`: the next renewal, taxes and pending items included, is the invoice
the renewal then creates."""

from __future__ import annotations

import pytest
import stripe

from test_emulator_lifecycle import day, setup_customer, ts


def test_preview_is_the_renewal_invoice_to_come(stripe_emulator) -> None:
    client = stripe_emulator.client()
    clock, customer, price, gst = setup_customer(client, ts(2027, 1, 31, 12))
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}], "default_tax_rates": [gst.id]})
    pending = client.v1.invoice_items.create({"customer": customer.id, "amount": 1000, "description": "Extra number"})

    preview = client.v1.invoices.create_preview({"customer": customer.id, "subscription": sub.id})
    assert preview.id.startswith("upcoming_in_") and preview.object == "invoice"
    assert (preview.billing_reason, preview.status, preview.currency) == ("subscription_cycle", "draft", "usd")
    assert (preview.subtotal, preview.total) == (29900 + 1000, 32890 + 1100)  # GST 10 % on both lines
    assert preview.created == ts(2027, 2, 28, 12) and preview.next_payment_attempt == ts(2027, 2, 28, 13)
    assert (day(preview.period_start), day(preview.period_end)) == ("2027-01-31", "2027-02-28")
    assert [(day(line.period.start), day(line.period.end)) for line in preview.lines.data][0] == ("2027-02-28", "2027-03-31")
    # Nothing changed: the item is still pending, no invoice was added, no event emitted.
    assert client.v1.invoice_items.retrieve(pending.id).invoice is None
    assert [i.id for i in client.v1.invoices.list({"customer": customer.id}).data] == [sub.latest_invoice]
    assert not [e for e in client.v1.events.list({"limit": 100}).data if e.data.object.id.startswith("upcoming_")]
    # The customer alone names its one subscription.
    assert client.v1.invoices.create_preview({"customer": customer.id}).total == preview.total

    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2027, 2, 28, 12, 30)})
    [renewal] = client.v1.invoices.list({"subscription": sub.id, "status": "draft"}).data
    assert (renewal.subtotal, renewal.total, renewal.created, renewal.period_start, renewal.period_end) == (
        preview.subtotal, preview.total, preview.created, preview.period_start, preview.period_end)
    assert [(line.description, line.amount, line.period.end) for line in renewal.lines.data] == [
        (line.description, line.amount, line.period.end) for line in preview.lines.data]
    assert [t.amount for t in renewal.total_taxes] == [t.amount for t in preview.total_taxes]

    # The next preview is March's renewal, without the item (now on February's invoice).
    march = client.v1.invoices.create_preview({"subscription": sub.id})
    assert (march.subtotal, day(march.period_end)) == (29900, "2027-03-31")


def test_no_preview_for_what_does_not_renew(stripe_emulator) -> None:
    client = stripe_emulator.client()
    _, customer, price, _ = setup_customer(client, ts(2027, 5, 1))
    with pytest.raises(stripe.InvalidRequestError) as none:
        client.v1.invoices.create_preview({"customer": customer.id})
    assert none.value.code == "invoice_upcoming_none"
    first = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    second = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    with pytest.raises(stripe.InvalidRequestError) as several:
        client.v1.invoices.create_preview({"customer": customer.id})
    assert several.value.param == "subscription"
    client.v1.subscriptions.update(first.id, {"cancel_at_period_end": True})
    client.v1.subscriptions.cancel(second.id)
    for sub in (first, second):
        with pytest.raises(stripe.InvalidRequestError) as ends:
            client.v1.invoices.create_preview({"subscription": sub.id})
        assert ends.value.code == "invoice_upcoming_none"
    with pytest.raises(stripe.InvalidRequestError) as changes:
        client.v1.invoices.create_preview({"subscription": first.id, "subscription_details": {"cancel_at_period_end": False}})
    assert changes.value.param == "subscription_details"
    with pytest.raises(stripe.InvalidRequestError) as missing:  # and the literal path is no invoice id
        client.v1.invoices.retrieve("create_preview")
    assert missing.value.http_status == 404

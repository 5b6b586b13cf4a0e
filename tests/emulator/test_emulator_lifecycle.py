"""Subscriptions on test clocks: renewal drafts, finalization an hour later, payment, declines, anniversaries, events."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime

import pytest
import stripe


def ts(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


def day(moment: int) -> str:
    return datetime.fromtimestamp(moment, UTC).date().isoformat()


def setup_customer(client: stripe.StripeClient, frozen_time: int, card: str = "pm_card_visa"):
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": frozen_time, "name": "renewals"})
    customer = client.v1.customers.create(
        {
            "name": "Acme",
            "email": "billing@acme.test",
            "test_clock": clock.id,
            "payment_method": card,
            "invoice_settings": {"default_payment_method": card, "custom_fields": [{"name": "Client ID", "value": "acct_1"}]},
        }
    )
    product = client.v1.products.create({"name": "Tier 1"})
    price = client.v1.prices.create(
        {"product": product.id, "currency": "usd", "unit_amount": 29900, "recurring": {"interval": "month"}, "lookup_key": "t1"}
    )
    gst = client.v1.tax_rates.create({"display_name": "GST", "percentage": 10, "inclusive": False})
    return clock, customer, price, gst


def event_types(client: stripe.StripeClient, **filters) -> list[str]:
    return [e.type for e in client.v1.events.list({"limit": 100, **filters}).auto_paging_iter()]


def test_renewal_draft_then_finalized_and_paid_one_clock_hour_later(stripe_emulator) -> None:
    client = stripe_emulator.client()
    clock, customer, price, gst = setup_customer(client, ts(2027, 1, 31, 12))
    sub = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}], "default_tax_rates": [gst.id], "expand": ["latest_invoice"]}
    )
    assert sub.status == "active" and sub.test_clock == clock.id
    first = sub.latest_invoice
    assert (first.billing_reason, first.status, first.subtotal, first.total) == ("subscription_create", "paid", 29900, 32890)
    assert first.total_taxes[0].amount == 2990 and first.total_taxes[0].tax_rate_details.tax_rate == gst.id
    item = sub["items"].data[0]
    assert (day(item.current_period_start), day(item.current_period_end)) == ("2027-01-31", "2027-02-28")

    # Half an hour past the period end: the renewal draft exists, not yet finalized.
    advanced = client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2027, 2, 28, 12, 30)})
    assert advanced.status == "advancing"
    assert client.v1.test_helpers.test_clocks.retrieve(clock.id).status == "ready"
    drafts = client.v1.invoices.list({"customer": customer.id, "status": "draft", "expand": ["data.lines"]}).data
    assert len(drafts) == 1
    draft = drafts[0]
    assert draft.billing_reason == "subscription_cycle" and draft.auto_advance is True
    assert draft.created == ts(2027, 2, 28, 12)
    assert draft.automatically_finalizes_at == draft.created + 3600
    assert (day(draft.period_start), day(draft.period_end)) == ("2027-01-31", "2027-02-28")
    assert draft.parent.type == "subscription_details" and draft.parent.subscription_details.subscription == sub.id
    line = draft.lines.data[0]
    assert (day(line.period.start), day(line.period.end)) == ("2027-02-28", "2027-03-31")
    assert line.parent.subscription_item_details.subscription_item == item.id
    assert line.pricing.price_details.price == price.id and line.taxes[0].amount == 2990
    assert (draft.total, draft.custom_fields[0].value) == (32890, "acct_1")
    renewed = client.v1.subscriptions.retrieve(sub.id)
    assert day(renewed["items"].data[0].current_period_start) == "2027-02-28"
    assert renewed.latest_invoice == draft.id
    updated = [e for e in client.v1.events.list({"type": "customer.subscription.updated"}).data]
    assert updated[0].data.previous_attributes["items"]["data"][0]["current_period_end"] == ts(2027, 2, 28, 12)

    # The draft accepts extra lines while it is a draft.
    annotated = client.v1.invoices.add_lines(
        draft.id,
        {
            "lines": [{"amount": 0, "description": "Voice minutes used: 395 of 500", "period": {"start": draft.period_start, "end": draft.period_end}}],
            "invoice_metadata": {"minutes_used": "395"},
        },
    )
    assert annotated.metadata["minutes_used"] == "395" and annotated.lines.total_count == 2

    # One clock-hour after creation: finalized, then paid with the default card.
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2027, 2, 28, 13, 0, 1)})
    paid = client.v1.invoices.retrieve(draft.id, {"expand": ["parent.subscription_details.subscription", "customer"]})
    assert paid.status == "paid" and paid.amount_paid == 32890 and paid.number is not None
    assert paid.status_transitions.finalized_at == ts(2027, 2, 28, 13)
    assert paid.automatically_finalizes_at is None
    assert paid.parent.subscription_details.subscription.id == sub.id and paid.customer.id == customer.id
    with pytest.raises(stripe.InvalidRequestError) as frozen:
        client.v1.invoices.add_lines(draft.id, {"lines": [{"amount": 1, "description": "late"}]})
    assert (frozen.value.code, frozen.value.http_status) == ("invoice_not_editable", 400)
    types = event_types(client, created={"gte": ts(2027, 2, 28)})
    for expected in ("invoice.created", "invoice.updated", "invoice.finalized", "invoice.paid"):
        assert expected in types

    # A jump across the next period end and its finalization hour renews, finalizes and pays in one go.
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2027, 3, 31, 14)})
    march = client.v1.invoices.list({"subscription": sub.id, "created": {"gte": ts(2027, 3, 31)}}).data
    assert len(march) == 1 and march[0].status == "paid"
    assert (day(march[0].period_start), day(march[0].period_end)) == ("2027-02-28", "2027-03-31")
    assert day(march[0].lines.data[0].period.end) == "2027-04-30"


def test_declined_card_leads_to_payment_failed_and_past_due(stripe_emulator) -> None:
    client = stripe_emulator.client()
    clock, customer, price, _ = setup_customer(client, ts(2027, 5, 10))
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    assert sub.status == "active"
    failing = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", {"customer": customer.id})
    client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": failing.id}})

    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2027, 6, 10, 1, 30)})
    renewal = client.v1.invoices.list({"subscription": sub.id, "limit": 1}).data[0]
    assert renewal.billing_reason == "subscription_cycle"
    assert (renewal.status, renewal.attempted, renewal.attempt_count, renewal.amount_paid) == ("open", True, 1, 0)
    assert client.v1.subscriptions.retrieve(sub.id).status == "past_due"
    failed = client.v1.events.list({"type": "invoice.payment_failed"}).data
    assert [e.data.object.id for e in failed] == [renewal.id]
    status_change = [
        e for e in client.v1.events.list({"type": "customer.subscription.updated", "limit": 100}).data
        if "status" in e.data.previous_attributes
    ]
    assert status_change[0].data.previous_attributes["status"] == "active" and status_change[0].data.object.status == "past_due"
    assert client.v1.subscriptions.list({"status": "past_due", "test_clock": clock.id}).data[0].id == sub.id

    # Paying with a working card brings the subscription back.
    good = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    assert client.v1.invoices.pay(renewal.id, {"payment_method": good.id}).status == "paid"
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"


def test_first_invoice_declined_leaves_subscription_incomplete(stripe_emulator) -> None:
    client = stripe_emulator.client()
    _, customer, price, _ = setup_customer(client, ts(2027, 5, 10), card="pm_card_chargeCustomerFail")
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}], "expand": ["latest_invoice"]})
    assert sub.status == "incomplete" and sub.latest_invoice.status == "open"
    with pytest.raises(stripe.CardError):
        client.v1.invoices.pay(sub.latest_invoice.id)
    good = client.v1.payment_methods.attach("pm_card_visa", {"customer": customer.id})
    client.v1.invoices.pay(sub.latest_invoice.id, {"payment_method": good.id})
    assert client.v1.subscriptions.retrieve(sub.id).status == "active"
    client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": good.id}})
    clock_id = client.v1.customers.retrieve(customer.id).test_clock
    client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": ts(2027, 6, 10, 2)})
    assert client.v1.invoices.list({"subscription": sub.id, "limit": 1}).data[0].billing_reason == "subscription_cycle"


def test_leap_year_anniversary_and_advance_limits(stripe_emulator) -> None:
    client = stripe_emulator.client()
    clock, customer, price, _ = setup_customer(client, ts(2028, 1, 31, 8))
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2028, 1, 1)})  # backwards
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2028, 5, 1)})  # > two intervals
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2028, 2, 29, 10)})
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2028, 3, 31, 10)})
    items = client.v1.subscription_items.list({"subscription": sub.id}).data
    assert (day(items[0].current_period_start), day(items[0].current_period_end)) == ("2028-03-31", "2028-04-30")
    invoices = client.v1.invoices.list({"subscription": sub.id}).data
    assert [(day(i.period_start), day(i.period_end)) for i in invoices] == [
        ("2028-02-29", "2028-03-31"),
        ("2028-01-31", "2028-02-29"),
        ("2028-01-31", "2028-01-31"),
    ]
    assert all(i.status == "paid" for i in invoices)


def test_subscription_update_cancel_and_filters(stripe_emulator) -> None:
    client = stripe_emulator.client()
    clock, customer, price, _ = setup_customer(client, ts(2027, 7, 1))
    other = client.v1.prices.create({"product": price.product, "currency": "usd", "unit_amount": 49900, "recurring": {"interval": "month"}})
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}], "metadata": {"k": "v"}})
    assert client.v1.subscriptions.list().data == []  # test-clock subscriptions need the clock or the customer
    assert [s.id for s in client.v1.subscriptions.list({"customer": customer.id}).data] == [sub.id]
    assert [s.id for s in client.v1.subscriptions.list({"test_clock": clock.id, "price": price.id}).data] == [sub.id]
    item_id = sub["items"].data[0].id
    changed = client.v1.subscriptions.update(
        sub.id, {"items": [{"id": item_id, "price": other.id}], "expand": ["items.data.price.product"]}
    )
    assert changed["items"].data[0].price.id == other.id and changed["items"].data[0].price.product.name == "Tier 1"
    event = client.v1.events.list({"type": "customer.subscription.updated", "limit": 1}).data[0]
    assert event.data.previous_attributes["items"]["data"][0]["price"]["id"] == price.id
    listed = client.v1.subscriptions.list({"customer": customer.id, "expand": ["data.items.data.price.product"]}).data[0]
    assert listed["items"].data[0].price.product.object == "product"
    canceled = client.v1.subscriptions.cancel(sub.id)
    assert canceled.status == "canceled" and canceled.canceled_at == ts(2027, 7, 1)
    assert client.v1.subscriptions.list({"customer": customer.id}).data == []
    assert [s.id for s in client.v1.subscriptions.list({"customer": customer.id, "status": "canceled"}).data] == [sub.id]
    assert "customer.subscription.deleted" in event_types(client)


def test_events_filters_and_retrieve(stripe_emulator) -> None:
    client = stripe_emulator.client()
    for i in range(12):
        client.v1.customers.create({"name": f"e{i}"})
    client.v1.products.create({"name": "p"})
    created = client.v1.events.list({"type": "customer.created", "limit": 5})
    assert len(created.data) == 5 and created.has_more and all(e.type == "customer.created" for e in created.data)
    assert len(list(client.v1.events.list({"type": "customer.*", "limit": 5}).auto_paging_iter())) == 12
    both = client.v1.events.list({"types": ["customer.created", "product.created"], "limit": 100}).data
    assert len(both) == 13 and both[0].type == "product.created"  # newest first
    back = client.v1.events.list({"ending_before": both[5].id, "limit": 3}).data
    assert [e.id for e in back] == [e.id for e in both[2:5]]
    event = client.v1.events.retrieve(both[0].id)
    assert event.object == "event" and event.api_version == "2026-10-28.endive" and event.request.id.startswith("req_")
    assert client.v1.events.list({"created": {"lt": both[-1].created}}).data == []


def test_real_time_draft_finalizes_without_a_clock(stripe_emulator) -> None:
    client = stripe_emulator.client()
    customer = client.v1.customers.create({"name": "now", "payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    invoice = client.v1.invoices.create({"customer": customer.id, "auto_advance": True})
    client.v1.invoice_items.create({"customer": customer.id, "invoice": invoice.id, "amount": 1500, "description": "setup"})
    client.v1.invoices.update(invoice.id, {"automatically_finalizes_at": int(time.time()) + 1})
    deadline = time.monotonic() + 10
    while client.v1.invoices.retrieve(invoice.id).status == "draft" and time.monotonic() < deadline:
        time.sleep(0.2)
    final = client.v1.invoices.retrieve(invoice.id)
    assert (final.status, final.amount_paid) == ("paid", 1500)


def test_subscription_invoice_settings_win_on_renewal_drafts(stripe_emulator) -> None:
    client = stripe_emulator.client()
    clock, customer, price, _ = setup_customer(client, ts(2027, 8, 1))
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    branding = {"custom_fields": [{"name": "Tier", "value": "Tier 1"}], "description": "Thanks", "footer": "EIN 12-3"}
    updated = client.v1.subscriptions.update(sub.id, {"invoice_settings": branding})
    assert updated.invoice_settings.custom_fields[0].value == "Tier 1" and updated.invoice_settings.footer == "EIN 12-3"
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2027, 9, 1, 0, 10)})
    draft = client.v1.invoices.list({"subscription": sub.id, "status": "draft"}).data[0]
    assert [(f.name, f.value) for f in draft.custom_fields] == [("Tier", "Tier 1")]
    assert (draft.description, draft.footer) == ("Thanks", "EIN 12-3")


def test_billing_cycle_anchor_prorates_the_first_period(stripe_emulator) -> None:
    client = stripe_emulator.client()
    clock, customer, price, _ = setup_customer(client, ts(2027, 1, 16))
    sub = client.v1.subscriptions.create(
        {"customer": customer.id, "items": [{"price": price.id}], "billing_cycle_anchor": ts(2027, 2, 1), "expand": ["latest_invoice"]}
    )
    item = sub["items"].data[0]
    assert (day(item.current_period_start), day(item.current_period_end)) == ("2027-01-16", "2027-02-01")
    assert sub.latest_invoice.subtotal == round(29900 * 16 / 31)  # 16 of January's 31 days
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2027, 2, 1, 2)})
    renewal = client.v1.invoices.list({"subscription": sub.id, "limit": 1}).data[0]
    assert renewal.subtotal == 29900 and day(renewal.lines.data[0].period.end) == "2027-03-01"


def test_test_clock_list_and_delete(stripe_emulator) -> None:
    client = stripe_emulator.client()
    clocks = [client.v1.test_helpers.test_clocks.create({"frozen_time": ts(2027, 1, 1), "name": f"k{i}"}) for i in range(3)]
    assert [c.id for c in client.v1.test_helpers.test_clocks.list().data] == [c.id for c in reversed(clocks)]
    customer = client.v1.customers.create({"name": "on clock", "test_clock": clocks[0].id})
    deleted = client.v1.test_helpers.test_clocks.delete(clocks[0].id)
    assert deleted.deleted is True
    assert client.v1.customers.retrieve(customer.id).deleted is True
    with pytest.raises(stripe.InvalidRequestError) as gone:
        client.v1.test_helpers.test_clocks.retrieve(clocks[0].id)
    assert gone.value.http_status == 404


def test_tax_per_line_inclusive_and_exclusive_as_stripe_rounds_it(stripe_emulator) -> None:
    """Issue 15: the client group's rates reach a renewal as the subscription's default_tax_rates; they
    apply to every line without rates of its own (added lines too). Exclusive tax is added on top,
    inclusive tax is the part of the amount that is tax; each line's tax is rounded half up to the cent."""
    client = stripe_emulator.client()
    clock, customer, price, gst = setup_customer(client, ts(2027, 1, 1))
    client.v1.customers.update(customer.id, {"address": {"country": "AU", "city": "Sydney"}})
    assert client.v1.customers.retrieve(customer.id).address.country == "AU"
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    client.v1.subscriptions.update(sub.id, {"default_tax_rates": [gst.id]})
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2027, 2, 1, 0, 30)})
    [draft] = client.v1.invoices.list({"customer": customer.id, "status": "draft"}).data
    assert [r.id for r in draft.default_tax_rates] == [gst.id]
    vat = client.v1.tax_rates.create({"display_name": "VAT", "percentage": 20, "inclusive": True})
    invoice = client.v1.invoices.add_lines(draft.id, {"lines": [
        {"description": "Voice minutes used: 7 of 500", "amount": 5},  # 0.5 cent of GST → 1
        {"description": "Inclusive", "amount": 1001, "tax_rates": [vat.id]},  # 1001 − round(1001 / 1.2) = 167
    ]})
    by_rate = {t.tax_rate_details.tax_rate: (t.amount, t.taxable_amount, t.tax_behavior) for t in invoice.total_taxes}
    assert by_rate == {gst.id: (2990 + 1, 29905, "exclusive"), vat.id: (167, 834, "inclusive")}
    assert (invoice.subtotal, invoice.total, invoice.total_excluding_tax) == (30906, 30906 + 2991, 30906 - 167)


def test_hosted_invoice_page_and_pdf_show_what_stripes_do(stripe_emulator) -> None:
    """Issue 15 item 10: the account's branding, the customer, custom fields, memo, every line with
    its period, the tax by its rate's name ("GST (10%)"), the totals and the footer."""
    import requests

    client = stripe_emulator.client()
    clock, customer, price, gst = setup_customer(client, ts(2027, 1, 1))
    client.v1.customers.update(customer.id, {"address": {"country": "AU"}})
    sub = client.v1.subscriptions.create({
        "customer": customer.id, "items": [{"price": price.id}], "default_tax_rates": [gst.id],
        "invoice_settings": {"custom_fields": [{"name": "Region", "value": "APAC"}], "description": "GST included",
                             "footer": "ABN: 12 345 678 901"},
    })
    invoice = client.v1.invoices.retrieve(sub.latest_invoice)
    page = requests.get(invoice.hosted_invoice_url, timeout=5)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    body = page.text
    for shown in ("#4338ca", "aria-label='logo'", "Aisyst (Stripe emulator)", "Acme<br>billing@acme.test<br>AU", "Region: <b>APAC</b>",
                  "GST included", "2027-01-01 – 2027-02-01", "GST (10%)", "$29.90", "$328.90", "ABN: 12 345 678 901"):
        assert shown in body, shown
    assert "Tax $" not in body  # no bare "Tax"
    pdf = requests.get(invoice.invoice_pdf, timeout=5)
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF-1.4")
    for shown in (b"GST \\(10%\\)  $29.90", b"Total  $328.90", b"Region: APAC", b"ABN: 12 345 678 901"):
        assert shown in pdf.content, shown


def test_a_request_kept_waiting_by_a_clock_advance_is_answered_lock_timeout(stripe_emulator, monkeypatch) -> None:
    """Stripe advances a clock in the background and answers meanwhile. The emulator advances inside the
    request, so one waiting behind a long advance (a 100,000-renewal month start takes a minute) gets
    Stripe's 429 `lock_timeout` after ADVANCE_LOCK_WAIT_SECONDS, and a client retries it, rather than
    hanging past a sensor tick's limit. A short advance is simply waited for."""
    from aisyst_pipelines.emulator import server as emulator_server

    client = stripe_emulator.client()
    clock, customer, price, _ = setup_customer(client, ts(2027, 1, 31, 12))
    client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2027, 2, 1)})  # short: no 429 to anyone

    store = stripe_emulator.server.store
    renewals = store.run_due
    monkeypatch.setattr(emulator_server, "ADVANCE_LOCK_WAIT_SECONDS", 0.3)
    monkeypatch.setattr(store, "run_due", lambda *args, **kwargs: (time.sleep(1.5), renewals(*args, **kwargs))[1])
    advance = threading.Thread(
        target=client.v1.test_helpers.test_clocks.advance, args=(clock.id, {"frozen_time": ts(2027, 2, 28, 12, 30)}))
    advance.start()
    while store.advancing_clock is None:
        time.sleep(0.01)
    waited = time.monotonic()
    with pytest.raises(stripe.RateLimitError) as raised:
        client.v1.invoices.list({"status": "draft"})
    assert raised.value.json_body["error"]["code"] == "lock_timeout" and raised.value.http_status == 429
    assert 0.3 <= time.monotonic() - waited < 1.0
    advance.join()
    assert [d.billing_reason for d in client.v1.invoices.list({"status": "draft"}).data] == ["subscription_cycle"]

"""Invoices (update rules, add_lines, lines pages, finalize/pay/void, items) and billing meters with summaries."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
import stripe


def ts(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp())


def draft_for(client: stripe.StripeClient, **customer_params):
    customer = client.v1.customers.create({"name": "Inv", "payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"}, **customer_params})
    return customer, client.v1.invoices.create({"customer": customer.id})


def test_draft_updates_and_editability(stripe_emulator) -> None:
    client = stripe_emulator.client()
    _, invoice = draft_for(client)
    assert (invoice.status, invoice.auto_advance, invoice.billing_reason, invoice.automatically_finalizes_at) == ("draft", False, "manual", None)
    updated = client.v1.invoices.update(
        invoice.id,
        {
            "metadata": {"a": "1"},
            "description": "Memo",
            "footer": "Footer",
            "custom_fields": [{"name": "Tier", "value": "Tier 1"}],
            "auto_advance": True,
        },
    )
    assert (updated.description, updated.footer, updated.custom_fields[0].value) == ("Memo", "Footer", "Tier 1")
    assert updated.automatically_finalizes_at == updated.created + 3600
    event = client.v1.events.list({"type": "invoice.updated", "limit": 1}).data[0]
    assert event.data.previous_attributes["description"] is None
    client.v1.invoice_items.create({"customer": updated.customer, "invoice": invoice.id, "amount": 500, "description": "x"})
    final = client.v1.invoices.finalize_invoice(invoice.id)
    assert final.status == "open" and final.hosted_invoice_url and final.invoice_pdf
    assert client.v1.invoices.update(invoice.id, {"metadata": {"b": "2"}}).metadata.to_dict() == {"a": "1", "b": "2"}
    with pytest.raises(stripe.InvalidRequestError) as not_editable:
        client.v1.invoices.update(invoice.id, {"description": "too late"})
    assert (not_editable.value.code, not_editable.value.http_status) == ("invoice_not_editable", 400)
    voided = client.v1.invoices.void_invoice(invoice.id)
    assert voided.status == "void" and voided.status_transitions.voided_at is not None
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.pay(invoice.id)


def test_add_lines_shapes_and_lines_pagination(stripe_emulator) -> None:
    client = stripe_emulator.client()
    customer, invoice = draft_for(client)
    product = client.v1.products.create({"name": "Overage"})
    price = client.v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 10})
    lines = [{"amount": 0, "description": f"note {i}", "metadata": {"i": str(i)}, "period": {"start": 100, "end": 200}} for i in range(11)]
    lines.append({"pricing": {"price": price.id}, "quantity": 30, "description": "Overage: 30 minutes"})
    lines.append({"price_data": {"currency": "usd", "product": product.id, "unit_amount": 25}, "quantity": 4})
    result = client.v1.invoices.add_lines(invoice.id, {"lines": lines, "invoice_metadata": {"annotation_version": "1"}})
    assert result.lines.total_count == 13 and result.lines.has_more and len(result.lines.data) == 10
    assert result.subtotal == 300 + 100 and result.metadata["annotation_version"] == "1"
    first = result.lines.data[0]
    assert first.object == "line_item" and first.period.start == 100 and first.metadata["i"] == "0"
    assert first.parent.type == "invoice_item_details" and first.parent.invoice_item_details.invoice_item.startswith("ii_")
    page1 = client.v1.invoices.line_items.list(invoice.id, {"limit": 5})
    page2 = client.v1.invoices.line_items.list(invoice.id, {"limit": 5, "starting_after": page1.data[-1].id})
    assert [line.description for line in page1.data] == [f"note {i}" for i in range(5)]
    assert [line.description for line in page2.data] == [f"note {i}" for i in range(5, 10)]
    everything = list(client.v1.invoices.line_items.list(invoice.id, {"limit": 4}).auto_paging_iter())
    assert len(everything) == 13 and everything[11].pricing.price_details.price == price.id
    assert everything[12].amount == 100 and everything[12].pricing.unit_amount_decimal is not None
    with pytest.raises(stripe.InvalidRequestError) as removed_field:
        client.v1.invoices.add_lines(invoice.id, {"lines": [{"price": price.id}]})  # type: ignore[typeddict-unknown-key]
    assert removed_field.value.code == "parameter_unknown"
    with pytest.raises(stripe.InvalidRequestError) as nothing:
        client.v1.invoices.add_lines(invoice.id, {"lines": [{"description": "no amount"}]})
    assert nothing.value.code == "parameter_missing"
    items = client.v1.invoice_items.list({"invoice": invoice.id, "limit": 100}).data
    assert len(items) == 13 and all(i.invoice == invoice.id for i in items)
    assert client.v1.invoices.pay(invoice.id).status == "paid"


def test_invoice_list_filters_and_expand(stripe_emulator) -> None:
    client = stripe_emulator.client()
    customer, first = draft_for(client)
    second = client.v1.invoices.create({"customer": customer.id})
    other, third = draft_for(client)
    client.v1.invoice_items.create({"customer": customer.id, "invoice": second.id, "amount": 100})
    client.v1.invoices.finalize_invoice(second.id)
    assert [i.id for i in client.v1.invoices.list({"customer": customer.id}).data] == [second.id, first.id]
    assert [i.id for i in client.v1.invoices.list({"status": "draft"}).data] == [third.id, first.id]
    assert [i.id for i in client.v1.invoices.list({"status": "open", "expand": ["data.customer"]}).data] == [second.id]
    assert client.v1.invoices.list({"status": "open", "expand": ["data.customer"]}).data[0].customer.name == "Inv"
    assert len(client.v1.invoices.list({"created": {"gte": first.created, "lte": third.created}}).data) == 3
    expanded = client.v1.invoices.retrieve(first.id, {"expand": ["lines", "customer"]})
    assert expanded.customer.id == customer.id and expanded.lines.object == "list"
    deleted = client.v1.invoices.delete(first.id)
    assert deleted.deleted is True
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.invoices.delete(second.id)


def test_pending_invoice_items_go_on_the_next_renewal(stripe_emulator) -> None:
    client = stripe_emulator.client()
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": ts(2027, 4, 1)})
    customer, _ = draft_for(client, test_clock=clock.id)
    product = client.v1.products.create({"name": "T"})
    price = client.v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 1000, "recurring": {"interval": "month"}})
    sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]})
    pending = client.v1.invoice_items.create({"customer": customer.id, "amount": 250, "description": "extra"})
    assert pending.invoice is None and client.v1.invoice_items.list({"pending": True}).data[0].id == pending.id
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2027, 5, 1, 0, 30)})
    renewal = client.v1.invoices.list({"subscription": sub.id, "status": "draft"}).data[0]
    assert renewal.subtotal == 1250 and client.v1.invoice_items.retrieve(pending.id).invoice == renewal.id


def make_meter(client: stripe.StripeClient, formula: str = "sum", **extra):
    return client.v1.billing.meters.create(
        {
            "display_name": "Voice minutes",
            "event_name": f"voice_call_minutes_{formula}",
            "default_aggregation": {"formula": formula},
            "customer_mapping": {"type": "by_id", "event_payload_key": "stripe_customer_id"},
            "value_settings": {"event_payload_key": "value"},
            **extra,
        }
    )


def test_meters_crud(stripe_emulator) -> None:
    client = stripe_emulator.client()
    meter = make_meter(client)
    assert meter.object == "billing.meter" and meter.id.startswith("mtr_") and meter.status == "active"
    assert client.v1.billing.meters.retrieve(meter.id).event_name == "voice_call_minutes_sum"
    assert client.v1.billing.meters.update(meter.id, {"display_name": "Minutes"}).display_name == "Minutes"
    with pytest.raises(stripe.InvalidRequestError) as duplicate:
        make_meter(client)
    assert duplicate.value.code == "resource_already_exists"
    assert client.v1.billing.meters.deactivate(meter.id).status == "inactive"
    assert client.v1.billing.meters.list({"status": "active"}).data == []
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meter_events.create({"event_name": "voice_call_minutes_sum", "payload": {"stripe_customer_id": "cus_x", "value": "1"}})
    assert client.v1.billing.meters.reactivate(meter.id).status == "active"


def test_meter_event_validation_window_and_dedupe(stripe_emulator) -> None:
    client = stripe_emulator.client()
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": ts(2027, 3, 15)})
    customer = client.v1.customers.create({"name": "m", "test_clock": clock.id})
    make_meter(client)
    now = ts(2027, 3, 15)

    def send(value: str = "5", timestamp: int = now, identifier: str | None = None):
        params = {"event_name": "voice_call_minutes_sum", "payload": {"stripe_customer_id": customer.id, "value": value}, "timestamp": timestamp}
        if identifier:
            params["identifier"] = identifier
        return client.v1.billing.meter_events.create(params)

    event = send(identifier="call-1")
    assert (event.object, event.identifier, event.timestamp, event.payload["value"]) == ("billing.meter_event", "call-1", now, "5")
    assert send(timestamp=now - 35 * 86400).timestamp == now - 35 * 86400  # the clock's now, not the wall clock
    assert send(value="-2", timestamp=now + 300).payload["value"] == "-2"
    for bad_timestamp, code in ((now - 35 * 86400 - 1, "timestamp_too_far_in_past"), (now + 301, "timestamp_in_future")):
        with pytest.raises(stripe.InvalidRequestError) as window:
            send(timestamp=bad_timestamp)
        assert (window.value.code, window.value.param) == (code, "timestamp")
    with pytest.raises(stripe.InvalidRequestError) as fractional:
        send(value="1.5")
    assert (fractional.value.code, fractional.value.param) == ("parameter_invalid_integer", "payload[value]")
    with pytest.raises(stripe.InvalidRequestError) as no_customer:
        client.v1.billing.meter_events.create({"event_name": "voice_call_minutes_sum", "payload": {"value": "1"}})
    assert (no_customer.value.code, no_customer.value.param) == ("parameter_missing", "payload[stripe_customer_id]")
    with pytest.raises(stripe.InvalidRequestError) as duplicate:
        send(identifier="call-1")
    assert (duplicate.value.code, duplicate.value.param) == ("resource_already_exists", "identifier")
    # Stripe remembers identifiers for 24 hours (of the customer's clock), then accepts them again.
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": now + 86400})
    assert send(identifier="call-1", timestamp=now + 86400).identifier == "call-1"


def test_meter_event_adjustment_cancels_within_24_hours(stripe_emulator) -> None:
    client = stripe_emulator.client()
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": ts(2027, 3, 15, 10)})
    customer = client.v1.customers.create({"name": "m", "test_clock": clock.id})
    meter = make_meter(client)
    for identifier in ("a", "b"):
        client.v1.billing.meter_events.create(
            {"event_name": meter.event_name, "identifier": identifier, "payload": {"stripe_customer_id": customer.id, "value": "7"}}
        )
    adjustment = client.v1.billing.meter_event_adjustments.create({"event_name": meter.event_name, "type": "cancel", "cancel": {"identifier": "a"}})
    assert (adjustment.object, adjustment.cancel.identifier, adjustment.status) == ("billing.meter_event_adjustment", "a", "pending")
    summary = client.v1.billing.meters.event_summaries.list(
        meter.id, {"customer": customer.id, "start_time": ts(2027, 3, 15), "end_time": ts(2027, 3, 16)}
    )
    assert [s.aggregated_value for s in summary.data] == [7.0]
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": ts(2027, 3, 16, 10)})
    with pytest.raises(stripe.InvalidRequestError):
        client.v1.billing.meter_event_adjustments.create({"event_name": meter.event_name, "type": "cancel", "cancel": {"identifier": "b"}})
    with pytest.raises(stripe.InvalidRequestError) as unknown:
        client.v1.billing.meter_event_adjustments.create({"event_name": meter.event_name, "type": "cancel", "cancel": {"identifier": "zz"}})
    assert unknown.value.code == "resource_missing"


def test_summaries_alignment_grouping_and_formulas(stripe_emulator) -> None:
    client = stripe_emulator.client()
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": ts(2027, 3, 20)})
    customer = client.v1.customers.create({"name": "s", "test_clock": clock.id})
    meters = {formula: make_meter(client, formula) for formula in ("sum", "count", "last")}
    samples = [(ts(2027, 3, 18, 9, 15), 4), (ts(2027, 3, 18, 9, 50), 6), (ts(2027, 3, 18, 22, 0), 3), (ts(2027, 3, 19, 1, 0), 10)]
    for formula, meter in meters.items():
        for moment, value in samples:
            client.v1.billing.meter_events.create(
                {"event_name": meter.event_name, "timestamp": moment, "payload": {"stripe_customer_id": customer.id, "value": str(value)}}
            )
    window = {"customer": customer.id, "start_time": ts(2027, 3, 18), "end_time": ts(2027, 3, 20)}
    totals = {f: client.v1.billing.meters.event_summaries.list(m.id, window).data for f, m in meters.items()}
    assert [s.aggregated_value for s in totals["sum"]] == [23.0]
    assert [s.aggregated_value for s in totals["count"]] == [4.0]
    assert [s.aggregated_value for s in totals["last"]] == [10.0]
    whole = totals["sum"][0]
    assert whole.object == "billing.meter_event_summary" and whole.id.startswith("mtrusg_")
    assert (whole.start_time, whole.end_time, whole.meter) == (window["start_time"], window["end_time"], meters["sum"].id)

    by_day = client.v1.billing.meters.event_summaries.list(meters["sum"].id, {**window, "value_grouping_window": "day"}).data
    assert [(s.start_time, s.aggregated_value) for s in by_day] == [(ts(2027, 3, 19), 10.0), (ts(2027, 3, 18), 13.0)]
    by_hour = client.v1.billing.meters.event_summaries.list(
        meters["sum"].id,
        {"customer": customer.id, "start_time": ts(2027, 3, 18, 9), "end_time": ts(2027, 3, 18, 12), "value_grouping_window": "hour", "limit": 2},
    )
    assert [s.aggregated_value for s in by_hour.data] == [0.0, 0.0] and by_hour.has_more
    assert [s.aggregated_value for s in by_hour.auto_paging_iter()] == [0.0, 0.0, 10.0]

    minute_error = {"customer": customer.id, "start_time": ts(2027, 3, 18) + 30, "end_time": ts(2027, 3, 19)}
    hour_error = {**window, "start_time": ts(2027, 3, 18, 0, 30), "value_grouping_window": "hour"}
    day_error = {**window, "start_time": ts(2027, 3, 18, 1), "value_grouping_window": "day"}
    for params, param in ((minute_error, "start_time"), (hour_error, "start_time"), (day_error, "start_time")):
        with pytest.raises(stripe.InvalidRequestError) as aligned:
            client.v1.billing.meters.event_summaries.list(meters["sum"].id, params)
        assert aligned.value.param == param and "aligned" in str(aligned.value)
    with pytest.raises(stripe.InvalidRequestError) as required:
        client.v1.billing.meters.event_summaries.list(meters["sum"].id, {"customer": customer.id, "start_time": ts(2027, 3, 18)})  # type: ignore[typeddict-item]
    assert (required.value.code, required.value.param) == ("parameter_missing", "end_time")


def test_summaries_lag_behind_recent_events(stripe_emulator) -> None:
    client = stripe_emulator.client()
    customer = client.v1.customers.create({"name": "lag"})
    meter = make_meter(client)
    stripe_emulator.set_faults(summary_lag_seconds=3600)
    moment = int(datetime.now(UTC).timestamp()) // 60 * 60 - 120
    client.v1.billing.meter_events.create({"event_name": meter.event_name, "timestamp": moment, "payload": {"stripe_customer_id": customer.id, "value": "9"}})
    params = {"customer": customer.id, "start_time": moment - 60, "end_time": moment + 60}
    assert [s.aggregated_value for s in client.v1.billing.meters.event_summaries.list(meter.id, params).data] == [0.0]
    stripe_emulator.set_faults(summary_lag_seconds=0)
    assert [s.aggregated_value for s in client.v1.billing.meters.event_summaries.list(meter.id, params).data] == [9.0]


def test_event_time_window_keeps_the_newest_event_per_window(stripe_emulator) -> None:
    client = stripe_emulator.client()
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": ts(2027, 3, 20)})
    customer = client.v1.customers.create({"name": "w", "test_clock": clock.id})
    meter = make_meter(client, "last", event_time_window="hour")
    for minute, value in ((5, "1"), (40, "8")):
        client.v1.billing.meter_events.create(
            {"event_name": meter.event_name, "timestamp": ts(2027, 3, 19, 10, minute), "payload": {"stripe_customer_id": customer.id, "value": value}}
        )
    summary = client.v1.billing.meters.event_summaries.list(meter.id, {"customer": customer.id, "start_time": ts(2027, 3, 19), "end_time": ts(2027, 3, 20)})
    assert [s.aggregated_value for s in summary.data] == [8.0]

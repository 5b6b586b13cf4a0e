"""Customers, payment methods, catalog, tax rates, portal, lists and expand — the real SDK against the emulator."""

from __future__ import annotations

import pytest
import requests
import stripe


def make_tier(client: stripe.StripeClient, name: str = "Tier 1", amount: int = 29900, lookup_key: str = "tier_1") -> stripe.Price:
    product = client.v1.products.create({"name": name, "metadata": {"aisyst_included_minutes": "500"}})
    return client.v1.prices.create(
        {
            "product": product.id,
            "currency": "usd",
            "unit_amount": amount,
            "recurring": {"interval": "month"},
            "lookup_key": lookup_key,
            "metadata": {"tier": name},
        }
    )


def test_customer_round_trip(stripe_emulator) -> None:
    client = stripe_emulator.client()
    customer = client.v1.customers.create(
        {
            "email": "ops@acme.test",
            "name": "Acme",
            "preferred_locales": ["en-AU"],
            "metadata": {"aisyst_account_code": "acct_0001"},
            "payment_method": "pm_card_visa",
            "invoice_settings": {
                "default_payment_method": "pm_card_visa",
                "custom_fields": [{"name": "Client ID", "value": "acct_0001"}],
                "footer": "Thank you",
            },
        }
    )
    assert customer.object == "customer" and customer.id.startswith("cus_")
    assert customer.invoice_settings.default_payment_method.startswith("pm_")
    assert customer.invoice_settings.custom_fields[0].name == "Client ID"
    assert customer.preferred_locales == ["en-AU"]
    assert customer.last_response.headers["Request-Id"].startswith("req_")

    updated = client.v1.customers.update(customer.id, {"metadata": {"aisyst_account_code": "", "tier": "1"}, "name": "Acme Pty"})
    assert updated.metadata.to_dict() == {"tier": "1"} and updated.name == "Acme Pty"
    fetched = client.v1.customers.retrieve(customer.id, {"expand": ["invoice_settings.default_payment_method"]})
    assert fetched.invoice_settings.default_payment_method.card.last4 == "4242"

    deleted = client.v1.customers.delete(customer.id)
    assert deleted.deleted is True
    assert client.v1.customers.retrieve(customer.id).deleted is True


def test_payment_method_attach_and_declines(stripe_emulator) -> None:
    client = stripe_emulator.client()
    customer = client.v1.customers.create({"name": "B"})
    method = client.v1.payment_methods.attach("pm_card_chargeCustomerFail", {"customer": customer.id})
    assert method.card.last4 == "0341" and method.customer == customer.id
    assert [m.id for m in client.v1.customers.payment_methods.list(customer.id).data] == [method.id]
    with pytest.raises(stripe.CardError) as declined:
        client.v1.payment_methods.attach("pm_card_visa_chargeDeclined", {"customer": customer.id})
    assert declined.value.code == "card_declined" and declined.value.http_status == 402
    with pytest.raises(stripe.InvalidRequestError) as not_attached:
        client.v1.customers.update(customer.id, {"invoice_settings": {"default_payment_method": "pm_card_visa"}})
    assert not_attached.value.code == "resource_missing"


def test_pagination_both_directions_and_created_ranges(stripe_emulator) -> None:
    client = stripe_emulator.client()
    ids = [client.v1.customers.create({"name": f"c{i}"}).id for i in range(25)]
    newest_first = list(reversed(ids))

    first = client.v1.customers.list({"limit": 10})
    assert first.object == "list" and first.url == "/v1/customers" and first.has_more
    assert [c.id for c in first.data] == newest_first[:10]
    second = client.v1.customers.list({"limit": 10, "starting_after": first.data[-1].id})
    assert [c.id for c in second.data] == newest_first[10:20] and second.has_more
    third = client.v1.customers.list({"limit": 10, "starting_after": second.data[-1].id})
    assert [c.id for c in third.data] == newest_first[20:] and not third.has_more
    back = client.v1.customers.list({"limit": 10, "ending_before": third.data[0].id})
    assert [c.id for c in back.data] == newest_first[10:20] and back.has_more
    assert [c.id for c in client.v1.customers.list({"limit": 100}).auto_paging_iter()] == newest_first
    assert [c.id for c in client.v1.customers.list({"limit": 7}).auto_paging_iter()] == newest_first

    # the 25 creations may straddle a second on a busy machine: bound by the oldest and the newest
    oldest, newest = third.data[-1].created, first.data[0].created
    assert len(client.v1.customers.list({"created": {"gte": oldest}, "limit": 100}).data) == 25
    assert client.v1.customers.list({"created": {"gt": newest}}).data == []
    with pytest.raises(stripe.InvalidRequestError) as bad_limit:
        client.v1.customers.list({"limit": 101})
    assert bad_limit.value.param == "limit"
    with pytest.raises(stripe.InvalidRequestError) as bad_cursor:
        client.v1.customers.list({"starting_after": "cus_nope"})
    assert bad_cursor.value.code == "resource_missing"


def test_prices_lookup_keys_and_product_expand(stripe_emulator) -> None:
    client = stripe_emulator.client()
    tier1 = make_tier(client)
    tier2 = make_tier(client, "Tier 2", 49900, "tier_2")
    found = client.v1.prices.list({"lookup_keys": ["tier_1", "tier_2"], "expand": ["data.product"]})
    assert {p.id for p in found.data} == {tier1.id, tier2.id}
    assert {p.product.name for p in found.data} == {"Tier 1", "Tier 2"}
    assert found.data[0].recurring.interval == "month" and found.data[0].unit_amount_decimal is not None
    with pytest.raises(stripe.InvalidRequestError) as taken:
        make_tier(client, "Tier 1 again", 1, "tier_1")
    assert taken.value.param == "lookup_key"
    moved = client.v1.prices.create(
        {"product": tier1.product, "currency": "usd", "unit_amount": 1, "lookup_key": "tier_1", "transfer_lookup_key": True}
    )
    assert [p.id for p in client.v1.prices.list({"lookup_keys": ["tier_1"]}).data] == [moved.id]
    product = client.v1.products.create({"id": "aisyst_tier_3", "name": "Tier 3"})
    assert client.v1.products.retrieve("aisyst_tier_3").id == product.id
    with pytest.raises(stripe.InvalidRequestError) as exists:
        client.v1.products.create({"id": "aisyst_tier_3", "name": "Tier 3"})
    assert exists.value.code == "resource_already_exists"


def test_tax_rates(stripe_emulator) -> None:
    client = stripe_emulator.client()
    gst = client.v1.tax_rates.create({"display_name": "GST", "percentage": 10, "inclusive": False, "country": "AU"})
    assert gst.percentage == 10.0 and gst.inclusive is False and gst.object == "tax_rate"
    client.v1.tax_rates.update(gst.id, {"active": False})
    assert client.v1.tax_rates.list({"active": True}).data == []
    with pytest.raises(stripe.InvalidRequestError) as missing:
        client.v1.tax_rates.create({"display_name": "GST", "percentage": 10})
    assert (missing.value.code, missing.value.param) == ("parameter_missing", "inclusive")


def test_billing_portal_session_page(stripe_emulator) -> None:
    client = stripe_emulator.client()
    customer = client.v1.customers.create({"name": "Portal Co"})
    session = client.v1.billing_portal.sessions.create({"customer": customer.id, "return_url": "https://example.test/back"})
    assert session.object == "billing_portal.session" and session.url.startswith(stripe_emulator.url)
    page = requests.get(session.url, timeout=5)
    assert page.status_code == 200 and "Portal Co" in page.text


def test_customers_on_a_test_clock_are_listed_only_with_the_clock(stripe_emulator) -> None:
    client = stripe_emulator.client()
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": 1_800_000_000})
    on_clock = client.v1.customers.create({"name": "clocked", "test_clock": clock.id})
    plain = client.v1.customers.create({"name": "plain"})
    assert on_clock.created == 1_800_000_000
    assert [c.id for c in client.v1.customers.list().data] == [plain.id]
    assert [c.id for c in client.v1.customers.list({"test_clock": clock.id}).data] == [on_clock.id]


def test_expand_errors_and_unknown_routes(stripe_emulator) -> None:
    client = stripe_emulator.client()
    customer = client.v1.customers.create({"name": "x"})
    with pytest.raises(stripe.InvalidRequestError) as bad:
        client.v1.customers.retrieve(customer.id, {"expand": ["name"]})
    assert "cannot be expanded" in str(bad.value)
    missing = requests.get(f"{stripe_emulator.url}/v1/nothing_here", headers={"Authorization": "Bearer sk_test_x"}, timeout=5)
    assert missing.status_code == 404 and missing.json()["error"]["type"] == "invalid_request_error"

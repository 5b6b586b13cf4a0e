"""The Stripe sync's service (services/stripe_sync.py) on the emulator and a real warehouse: the one
mapping of a subscription to its mirror row, used by the sync and for a subscription an event carries."""

from __future__ import annotations

from dataclasses import asdict
from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from aisyst_pipelines.billing.tiers import load_tier_catalog
from aisyst_pipelines.services.stripe_sync import mirror_subscriptions, subscription_mirror_row
from aisyst_pipelines.warehouse import Warehouse, schema
from resources.stripe import StripeResource

NOW = datetime(2026, 3, 1, tzinfo=timezone.utc)


@pytest.fixture
def product_tier_subscription(stripe_emulator) -> str:
    """A subscription whose tier only its product's metadata names (the source the sync lists products for)."""
    client = stripe_emulator.client()
    product = client.v1.products.create({"name": "Clinic plan", "metadata": {"aisyst_included_minutes": "750", "aisyst_tier_name": "Clinic"}})
    price = client.v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 39900, "recurring": {"interval": "month"}})
    customer = client.v1.customers.create({"name": "Echo", "metadata": {"aisyst_account_code": "acct-e"}, "payment_method": "pm_card_visa",
                                           "invoice_settings": {"default_payment_method": "pm_card_visa"}})
    return client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price.id}]}).id


def latest_event_subscription(stripe: StripeResource, subscription_id: str) -> dict:
    """The subscription as the newest customer.subscription.* event carries it (the sensor's input)."""
    listed = stripe.events.list_page(["customer.subscription.created", "customer.subscription.updated"]).events
    return next(e["data"]["object"] for e in listed if e["data"]["object"]["id"] == subscription_id)


def test_an_events_subscription_maps_as_the_sync_maps_it(
    warehouse: Warehouse, stripe_resource: StripeResource, product_tier_subscription: str
) -> None:
    mirror = mirror_subscriptions(warehouse, stripe_resource.customers, load_tier_catalog(), {}, now=NOW)
    [row] = mirror.rows
    assert (row.tier_name, row.included_minutes, row.tier_source, mirror.problems) == ("Clinic", 750, "product_metadata", [])
    with warehouse.connect() as connection:
        assert connection.scalar(select(schema.stripe_subscriptions.c.included_minutes)) == 750

    build = subscription_mirror_row(stripe_resource.catalog, load_tier_catalog(), {})
    from_event = build(latest_event_subscription(stripe_resource, product_tier_subscription))
    assert from_event == asdict(row) | {"cancel_at_period_end": 0}


def test_without_the_product_list_an_events_subscription_is_not_mapped_until_it_is_back(
    stripe_emulator, stripe_resource: StripeResource, product_tier_subscription: str, unused_port: int
) -> None:
    """A tier resolved without the products could differ from the sync's: no row rather than a wrong one."""
    raw = latest_event_subscription(stripe_resource, product_tier_subscription)
    unreachable = StripeResource(api_key=stripe_emulator.api_key, api_base=f"http://127.0.0.1:{unused_port}", max_network_retries=1)
    build = subscription_mirror_row(unreachable.catalog, load_tier_catalog(), {})
    with pytest.raises(ValueError, match="products unavailable"):
        build(raw)

    without_products = subscription_mirror_row(None, load_tier_catalog(), {})(raw)
    assert (without_products["tier_source"], without_products["included_minutes"]) == ("unknown", None)

"""Each customer's next invoice in v_customer_dashboard, from Stripe's preview (`create_preview`), on
SQLite and PostgreSQL: tax included, nothing for a subscription that ends, refreshed after a renewal."""

from __future__ import annotations


import dagster as dg

from aisyst_pipelines.assets.stripe_sync import stripe_customers, stripe_invoice_previews, stripe_subscriptions
from aisyst_pipelines.warehouse import Warehouse
from resources import CatalogResource, WarehouseResource

from .dashboard import customer_dashboard
from stripe_world import StripeWorld

from .events_helpers import HOUR, events_world


def sync_and_preview(world: StripeWorld, warehouse: Warehouse, *assets: dg.AssetsDefinition) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        list(assets or (stripe_customers, stripe_subscriptions, stripe_invoice_previews)),
        resources={"stripe": world.stripe, "warehouse": WarehouseResource(url=warehouse.url), "catalog": CatalogResource()},
    )


def test_dashboard_shows_the_next_invoice_as_stripe_previews_it(stripe_emulator, stripe_resource, warehouse: Warehouse) -> None:
    world = events_world(stripe_emulator, stripe_resource)
    acme, beta = world.customer("ACME"), world.customer("BETA")
    gst = world.client.v1.tax_rates.create({"display_name": "GST", "percentage": 10, "inclusive": False})
    sub_acme = world.client.v1.subscriptions.create(
        {"customer": acme, "items": [{"price": world.tier_prices[0]}], "default_tax_rates": [gst.id]}).id
    sub_beta = world.subscribe(beta, tier=2).id
    world.client.v1.subscriptions.update(sub_beta, {"cancel_at_period_end": True})  # no next invoice
    world.client.v1.invoice_items.create({"customer": acme, "amount": 1500, "description": "Extra number"})

    result = sync_and_preview(world, warehouse)
    metadata = result.asset_materializations_for_node("stripe_invoice_previews")[0].metadata
    assert (metadata["previewed"].value, metadata["not_renewing"].value) == (1, 0)
    [row_acme] = customer_dashboard(warehouse, acme)
    [row_beta] = customer_dashboard(warehouse, beta)
    renewal = world.period_end(sub_acme)
    assert row_acme["next_invoice_date"] == renewal
    # Tier 1 ($299) and the pending item ($15), each with 10 % GST: what Stripe will charge.
    assert (row_acme["next_invoice_amount_due"], row_acme["next_invoice_tax"], row_acme["next_invoice_currency"]) == (
        34540, 3140, "usd")
    assert row_beta["next_invoice_date"] is None and row_beta["next_invoice_amount_due"] is None

    # After the renewal the stored preview is of a period gone by: not shown until it is refreshed.
    world.advance(renewal + 2 * HOUR)
    sync_and_preview(world, warehouse, stripe_customers, stripe_subscriptions)
    [stale] = customer_dashboard(warehouse, acme)
    assert stale["next_invoice_date"] == world.period_end(sub_acme)
    assert stale["next_invoice_amount_due"] is None
    sync_and_preview(world, warehouse, stripe_invoice_previews)
    [fresh] = customer_dashboard(warehouse, acme)
    assert (fresh["next_invoice_amount_due"], fresh["next_invoice_tax"]) == (32890, 2990)  # the item went on the renewal

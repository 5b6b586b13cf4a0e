"""Client groups through the pipeline (issue 15 items 2 and 3): an Australian customer's renewal
carries GST 10 % and the "Australia Clients" template, a US customer's the "US Clients" one without
tax — written with the brand fields in one subscription update, copied by Stripe (the emulator) onto
the renewal draft, taxed there as Stripe does, and mirrored into stripe_invoices and
v_customer_dashboard by the events sensor. Real SDK, real Dagster, both warehouse backends."""

import json
import re
from datetime import timedelta
from pathlib import Path

import dagster as dg
from sqlalchemy import select

from aisyst_pipelines.assets.invoice_annotation import invoice_branding_settings
from aisyst_pipelines.billing.client_groups import DEFAULT_CLIENT_GROUPS_FILE, parse_client_groups
from aisyst_pipelines.billing.tiers import load_tier_catalog
from aisyst_pipelines.services.invoice_annotation import annotate_batch, apply_invoice_branding, brand_profiles
from aisyst_pipelines.templates import load_brand
from aisyst_pipelines.services.invoice_printout import print_invoice
from aisyst_pipelines.warehouse.schema import invoice_branding, stripe_invoices
from tests.stripe_events.dashboard import customer_dashboard
from tests.stripe_events.events_helpers import sensor_tick

from .conftest import RENEWAL, AnnotationWorld


def brand(world: AnnotationWorld) -> dict:
    result = dg.materialize([invoice_branding_settings], resources=world.resources, instance=world.instance)
    assert result.success
    return {k: v.value for k, v in result.asset_materializations_for_node("invoice_branding")[0].metadata.items()}


def gst_rate_id(world: AnnotationWorld) -> str:
    [rate] = [r for r in world.client.v1.tax_rates.list({"limit": 100}).data if r.display_name == "GST"]
    return rate.id


def test_each_client_group_gets_its_tax_rate_and_template_in_one_write(world: AnnotationWorld) -> None:
    australian = world.sign_up("AU-1", 1, country="AU")
    american = world.sign_up("US-1", 1, country="US")
    elsewhere = world.sign_up("XX-1", 1)  # no address: the default group, the brand file's texts
    world.sync()
    before = len(world.emulator.requests(method="POST"))
    assert brand(world)["updated"] == 3
    posts = world.emulator.requests(method="POST")[before:]
    assert sorted(p["path"] for p in posts) == sorted(f"/v1/subscriptions/{s.subscription_id}" for s in (australian, american, elsewhere))

    au = world.client.v1.subscriptions.retrieve(australian.subscription_id)
    assert [r.id for r in au.default_tax_rates] == [gst_rate_id(world)]
    settings = au.invoice_settings
    assert [(f.name, f.value) for f in settings.custom_fields] == [("Client ID", "AU-1"), ("Tier", "Tier 1"), ("Region", "APAC")]
    assert (settings.description, settings.footer) == ("GST included", "ABN: 12 345 678 901")

    us = world.client.v1.subscriptions.retrieve(american.subscription_id)
    assert us.default_tax_rates == []
    assert [(f.name, f.value) for f in us.invoice_settings.custom_fields][-1] == ("Region", "US")
    assert (us.invoice_settings.description, us.invoice_settings.footer) == ("Thank you!", "Terms: Net 30")

    other = world.client.v1.subscriptions.retrieve(elsewhere.subscription_id).invoice_settings
    assert [f.name for f in other.custom_fields] == ["Client ID", "Tier"]
    assert other.description.startswith("Thank you for choosing Aisyst") and "EIN" in other.footer

    with world.warehouse.connect() as connection:
        rows = {r.subscription_id: r for r in connection.execute(select(invoice_branding))}
    assert rows[australian.subscription_id].client_group == "australia"
    assert rows[australian.subscription_id].tax_rate_ids == f'["{gst_rate_id(world)}"]'
    assert rows[elsewhere.subscription_id].client_group == "other"
    assert brand(world)["updated"] == 0  # nothing changed: no write


def test_the_australian_renewal_shows_gst_and_the_mirror_keeps_it(world: AnnotationWorld, tmp_path: Path) -> None:
    australian = world.sign_up("AU-1", 1, country="AU")
    american = world.sign_up("US-1", 1, country="US")
    world.sync()
    brand(world)
    world.calls(australian, [120, 200])
    world.renew()
    world.annotate_all()
    world.advance(RENEWAL + timedelta(hours=2))  # finalized and paid

    au_invoice = world.renewal_invoice(australian)
    assert (au_invoice.status, au_invoice.subtotal, au_invoice.total, au_invoice.amount_paid) == ("paid", 29900, 32890, 32890)
    [tax] = au_invoice.total_taxes
    assert (tax.amount, tax.taxable_amount, tax.tax_behavior) == (2990, 29900, "exclusive")
    assert (au_invoice.description, au_invoice.footer) == ("GST included", "ABN: 12 345 678 901")
    lines = world.client.v1.invoices.line_items.list(au_invoice.id, {"limit": 100}).data
    assert len(lines) == 3 and all(len(line.taxes) == 1 for line in lines)  # the tier fee and our two usage lines
    us_invoice = world.renewal_invoice(american)
    assert (us_invoice.total, us_invoice.total_taxes) == (29900, [])

    # As the guide's sample invoice prints it: the tier by name, the tax by its name and rate.
    printed = print_invoice(world.stripe.invoices, au_invoice.id)
    assert re.search(r"│   Tier 1 +\$299\.00\n│     2026-04-01 – 2026-05-01\n", printed)
    assert re.search(r"│   Voice minutes used: 320 of 500 +\$0\.00\n│     2026-03-01 – 2026-03-31\n", printed)
    assert re.search(r"│   Tax \(GST 10%\) +\$29\.90\n│   Total +\$328\.90\n", printed)
    assert "│ Region: APAC\n│ memo: GST included\n" in printed and printed.endswith("│ ABN: 12 345 678 901\n└")
    us_printed = print_invoice(world.stripe.invoices, us_invoice.id)
    assert "Tax" not in us_printed and re.search(r"│   Total +\$299\.00\n", us_printed) and "│ Terms: Net 30\n" in us_printed

    cursor = None
    while True:  # the events sensor applies every event, as the daemon's ticks would
        result = sensor_tick(world.warehouse, world.stripe, tmp_path, cursor)
        if result.cursor == cursor:
            break
        cursor = result.cursor
    with world.warehouse.connect() as connection:
        mirrored = {r.invoice_id: r for r in connection.execute(select(stripe_invoices))}
    assert (mirrored[au_invoice.id].subtotal, mirrored[au_invoice.id].tax, mirrored[au_invoice.id].total) == (29900, 2990, 32890)
    assert (mirrored[us_invoice.id].tax, mirrored[us_invoice.id].total) == (0, 29900)

    [au_row] = customer_dashboard(world.warehouse, australian.customer_id)
    assert (au_row["country"], au_row["client_group"]) == ("AU", "australia")
    assert (au_row["last_invoice_subtotal"], au_row["last_invoice_tax"], au_row["last_invoice_total"]) == (29900, 2990, 32890)
    [us_row] = customer_dashboard(world.warehouse, american.customer_id)
    assert (us_row["country"], us_row["client_group"], us_row["last_invoice_tax"]) == ("US", "us", 0)


def test_a_group_whose_tax_rate_stripe_lacks_is_reported_not_written_untaxed(world: AnnotationWorld) -> None:
    australian = world.sign_up("AU-1", 1, country="AU")
    world.sync()
    world.client.v1.tax_rates.update(gst_rate_id(world), {"active": False})  # as if bootstrap never created it
    result = dg.materialize([invoice_branding_settings], resources=world.resources, instance=world.instance, raise_on_error=False)
    assert not result.success
    assert world.client.v1.subscriptions.retrieve(australian.subscription_id).invoice_settings.footer is None


def test_a_draft_of_an_unbranded_subscription_gets_its_groups_tax_and_template_itself(world: AnnotationWorld) -> None:
    """A subscription created after the last branding run: its renewal draft is listed without brand
    fields, and the annotation puts the group's texts and tax rate on that one draft."""
    australian = world.sign_up("AU-2", 1, country="AU")
    world.sync()
    world.renew()
    before = len(world.emulator.requests(method="POST"))
    world.annotate_all()
    assert len(world.emulator.requests(method="POST")[before:]) == 2  # the draft's brand fields, then add_lines
    invoice = world.renewal_invoice(australian)
    assert [r.id for r in invoice.default_tax_rates] == [gst_rate_id(world)]
    assert (invoice.footer, invoice.custom_fields[-1].value) == ("ABN: 12 345 678 901", "APAC")
    assert (invoice.total_taxes[0].amount, invoice.total) == (2990, 32890)


def test_a_groups_stripe_rendering_template_reaches_the_customer_and_the_draft(world: AnnotationWorld, tmp_path: Path) -> None:
    """A group may name an invoice rendering template of the Stripe account: the branding step sets it
    as the customer's invoice_settings.rendering_options.template, Stripe (the emulator) copies it onto
    the renewal draft's rendering.template; a draft the annotation brands itself gets it directly."""
    document = json.loads(DEFAULT_CLIENT_GROUPS_FILE.read_text())
    document["groups"][0]["invoice"]["stripe_template"] = "inrtem_apac"
    profiles = brand_profiles(load_brand(), parse_client_groups(document), load_tier_catalog(), world.stripe.catalog)
    branded = world.sign_up("AU-1", 1, country="AU")
    world.sync()
    result = apply_invoice_branding(world.stripe.invoices, world.warehouse, profiles)
    assert result.failed == {}
    customer = world.client.v1.customers.retrieve(branded.customer_id)
    assert customer.invoice_settings.rendering_options.template == "inrtem_apac"
    late_comer = world.sign_up("AU-2", 1, country="AU")  # after the branding run: its draft is branded by the annotation
    world.sync()
    world.renew()
    ids = world.plan().queued  # the sensor's planning queues both drafts (one listed without brand fields)
    run = annotate_batch(world.stripe.invoices, world.warehouse, ids, run_id="t", profiles=lambda: profiles,
                         concurrency=4, requests_per_second=world.stripe.effective_requests_per_second)
    assert len(run.annotated) == 2
    assert world.renewal_invoice(branded).rendering.template == "inrtem_apac"
    assert world.renewal_invoice(late_comer).rendering.template == "inrtem_apac"

"""Brand fields on subscriptions' invoice settings: written once, again only on change, copied by Stripe
onto every renewal draft — so the month-start burst needs one write per invoice, not two."""

import dagster as dg

from aisyst_pipelines.assets.invoice_annotation import invoice_branding_settings
from aisyst_pipelines.services.invoice_annotation import BrandingResult, apply_invoice_branding
from aisyst_pipelines.warehouse.schema import invoice_branding, stripe_subscriptions

from .conftest import AnnotationWorld


def brand(world: AnnotationWorld) -> dict:
    """The asset, materialized with the world's resources: its metadata."""
    result = dg.materialize([invoice_branding_settings], resources=world.resources, instance=world.instance)
    assert result.success
    return {k: v.value for k, v in result.asset_materializations_for_node("invoice_branding")[0].metadata.items()}


def apply(world: AnnotationWorld) -> BrandingResult:
    return apply_invoice_branding(world.stripe.invoices, world.warehouse, world.profiles())


def test_brand_fields_are_written_once_and_again_only_on_change(world: AnnotationWorld) -> None:
    english = world.sign_up("ACME-1", 1)
    german = world.sign_up("KUNDE-2", 3, locale="de")
    world.sync()
    first = apply(world)
    assert (len(first.updated), first.unchanged) == (2, 0)
    settings = world.client.v1.subscriptions.retrieve(english.subscription_id).invoice_settings
    assert [(f.name, f.value) for f in settings.custom_fields] == [("Client ID", "ACME-1"), ("Tier", "Tier 1")]
    assert settings.description.startswith("Thank you for choosing Aisyst") and "EIN" in settings.footer
    german_settings = world.client.v1.subscriptions.retrieve(german.subscription_id).invoice_settings
    assert [f.name for f in german_settings.custom_fields] == ["Kundennummer", "Tarif"]

    assert (apply(world).updated, apply(world).unchanged) == ([], 2)
    with world.warehouse.begin() as connection:  # the sync saw a tier change
        connection.execute(
            stripe_subscriptions.update().where(stripe_subscriptions.c.subscription_id == english.subscription_id).values(tier_name="Tier 2")
        )
    third = apply(world)
    assert (third.updated, third.failed) == ([english.subscription_id], {})
    with world.warehouse.connect() as connection:
        assert connection.execute(invoice_branding.select()).rowcount != 0


def test_branded_renewals_cost_one_write_each(world: AnnotationWorld) -> None:
    subscribers = [world.sign_up(f"ACME-{n}", 1 + n % 3) for n in range(4)]
    world.sync()
    assert brand(world)["updated"] == len(subscribers)
    world.renew()
    before = len(world.emulator.requests(method="POST"))
    world.annotate_all()
    posts = world.emulator.requests(method="POST")[before:]
    assert len(posts) == len(subscribers)
    assert all(p["path"].endswith("/add_lines") for p in posts)
    for subscriber in subscribers:
        invoice = world.renewal_invoice(subscriber)
        assert [f.name for f in invoice.custom_fields] == ["Client ID", "Tier"]
        assert invoice.description and invoice.footer
        assert len(world.our_lines(invoice.id)) in (1, 2)

"""The 80 % / 100 % e-mails say what the next invoice will be: Stripe's preview of the renewal, tax
included (on SQLite and PostgreSQL, the emulator behind the StripeResource)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

from aisyst_pipelines.warehouse import Warehouse

from .alerts_world import APRIL, MARCH, AlertsWorld, text_of

DAY = timedelta(days=1)


def test_the_alert_names_the_next_invoice_with_its_tax(
    warehouse: Warehouse, stripe_resource, stripe_emulator, tmp_path: Path  # noqa: ANN001
) -> None:
    world = AlertsWorld.create(stripe_emulator, stripe_resource, warehouse, tmp_path / "outbox")
    client = world.client
    customer_id = world.customer("ACME")  # paying by pm_card_visa
    product = client.v1.products.create({"name": "Tier 1"})
    price = client.v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 29900, "recurring": {"interval": "month"}})
    gst = client.v1.tax_rates.create({"display_name": "GST", "percentage": 10, "inclusive": False})
    subscription = client.v1.subscriptions.create({"customer": customer_id, "items": [{"price": price.id}], "default_tax_rates": [gst.id]})
    world.subscription("ACME", 500, MARCH, APRIL, subscription_id=subscription.id)
    renewal = client.v1.invoices.create_preview({"subscription": subscription.id}).created

    world.calls("ACME", 400, MARCH + 9 * DAY)
    outcome = world.run(MARCH + 10 * DAY + timedelta(hours=6))
    assert outcome.sent == {80: 1}
    [mail] = world.customer_mails()
    renews = datetime.fromtimestamp(renewal, timezone.utc)
    expected = f"Next invoice:       $328.90 (incl. $29.90 tax) on {renews.day} {renews:%B %Y}"
    assert expected in text_of(mail)
    html = mail.get_body(("html",)).get_content()
    assert f"$328.90 (incl. $29.90 tax) on {renews.day} {renews:%B %Y}" in html


def test_without_a_preview_the_alert_still_goes(warehouse: Warehouse, stripe_resource, stripe_emulator, tmp_path: Path) -> None:  # noqa: ANN001
    world = AlertsWorld.create(stripe_emulator, stripe_resource, warehouse, tmp_path / "outbox")
    world.customer("ACME")
    world.subscription("ACME", 500, MARCH, APRIL)  # a mirror row Stripe does not know: no preview
    world.calls("ACME", 400, MARCH + 9 * DAY)
    assert world.run(MARCH + 10 * DAY + timedelta(hours=6)).sent == {80: 1}
    assert "Next invoice" not in text_of(world.customer_mails()[0])

"""A small Stripe world on the emulator for the events tests: the tier catalog, a test clock, customers.

Everything goes through the real stripe SDK (the emulator's client) or the project's StripeResource.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg

from aisyst_pipelines.billing.tiers import load_tier_catalog
from aisyst_pipelines.warehouse import Warehouse
from jobs.stripe_events import stripe_events_sensor
from resources import CatalogResource, WarehouseResource
from resources.notifier import NotifierResource
from resources.stripe import StripeResource

T0 = 1_772_323_200  # 2026-03-01 00:00:00 UTC: the test clock's start
HOUR = 3600


@dataclass
class StripeWorld:
    client: Any  # stripe.StripeClient on the emulator
    stripe: StripeResource
    clock_id: str
    tier_prices: list[str]

    @classmethod
    def create(cls, emulator: Any, stripe: StripeResource) -> "StripeWorld":
        client = emulator.client()
        catalog = stripe.catalog.ensure(load_tier_catalog())
        clock = client.v1.test_helpers.test_clocks.create({"frozen_time": T0, "name": "events tests"})
        return cls(client, stripe, clock.id, [price.id for price in catalog.prices])

    def customer(self, account_code: str, card: str = "pm_card_visa") -> str:
        customer = self.client.v1.customers.create({
            "name": f"{account_code} Ltd", "email": f"billing@{account_code.lower()}.example",
            "test_clock": self.clock_id, "payment_method": card,
            "invoice_settings": {"default_payment_method": card},
            "metadata": {"aisyst_account_code": account_code},
        })
        return customer.id

    def subscribe(self, customer_id: str, tier: int = 1) -> Any:
        return self.client.v1.subscriptions.create({"customer": customer_id, "items": [{"price": self.tier_prices[tier - 1]}]})

    def switch_card(self, customer_id: str, card: str) -> None:
        self.client.v1.payment_methods.attach(card, {"customer": customer_id})
        self.client.v1.customers.update(customer_id, {"invoice_settings": {"default_payment_method": card}})

    def advance_to(self, frozen_time: int) -> None:
        self.client.v1.test_helpers.test_clocks.advance(self.clock_id, {"frozen_time": frozen_time})

    def period_end(self, subscription_id: str) -> int:
        return self.client.v1.subscriptions.retrieve(subscription_id).items.data[0].current_period_end

    def watched_event_ids(self) -> list[str]:
        """Every watched event the emulator holds, oldest first (the truth to compare with)."""
        from aisyst_pipelines.billing.stripe_events import WATCHED_EVENT_TYPES

        ids: list[str] = []
        after = None
        while True:
            page = self.stripe.events.list_page(WATCHED_EVENT_TYPES, starting_after=after)
            ids += [event["id"] for event in page.events]
            if not page.has_more:
                return list(reversed(ids))
            after = page.events[-1]["id"]


def notifier_for(outbox: Path) -> NotifierResource:
    return NotifierResource(outbox_dir=str(outbox), sender="Aisyst <billing@aisyst.example>", ops_recipients=["ops@aisyst.example"])


def sensor_tick(
    warehouse: Warehouse, stripe: StripeResource, outbox: Path, cursor: str | None
) -> dg.SensorResult:
    """One evaluation of stripe_events_sensor, as the daemon runs it."""
    context = dg.build_sensor_context(
        cursor=cursor,
        resources={
            "stripe": stripe, "warehouse": WarehouseResource(url=warehouse.url), "notifier": notifier_for(outbox),
            "catalog": CatalogResource(),
        },
    )
    return stripe_events_sensor(context)


def ops_mail_subjects(outbox: Path) -> list[str]:
    import email
    import email.policy

    return [
        str(email.message_from_bytes(path.read_bytes(), policy=email.policy.default)["Subject"]).strip()
        for path in sorted(outbox.glob("*.eml"))
    ]

"""One Stripe world for every test on the emulator: the tier catalog, one test clock, customers and
their subscriptions, made through the real stripe SDK (the emulator's client) and the project's
StripeResource, and mirrored into the warehouse by the Stripe sync's own services.

The events tests use it as it is; the alert, annotation and reconciliation tests extend it
(AlertsWorld, AnnotationWorld, ReconWorld) with what only they need: calls in the warehouse and
the service or Dagster run they test.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import Any, Self

from stripe.params import CustomerCreateParams

from aisyst_pipelines.billing.tiers import load_tier_catalog
from aisyst_pipelines.services.stripe_sync import mirror_customers, mirror_subscriptions
from aisyst_pipelines.warehouse import Warehouse
from resources.stripe import StripeResource

UTC = timezone.utc
DEFAULT_EMAIL = "default"  # customer(email=...): billing@<account code>.example


@dataclass(frozen=True)
class Subscriber:
    customer_id: str
    subscription_id: str
    account_code: str
    tier: int


@dataclass(kw_only=True)
class StripeWorld:
    emulator: Any  # aisyst_pipelines.emulator.testing.RunningEmulator
    stripe: StripeResource
    tier_prices: list[str]  # price ids of tiers 1, 2, 3 (tiers.json)
    clock_id: str | None  # the test clock every customer is on (None: real time, no clock)
    clock: datetime | None  # where that clock stands
    warehouse: Warehouse | None = None  # where sync() mirrors Stripe
    subscribers: list[Subscriber] = field(default_factory=list)  # sign_up's, in order

    @classmethod
    def build(cls, emulator: Any, stripe: StripeResource, start: datetime | None, **fields: Any) -> Self:
        """The tier catalog (bootstrapped as `aisyst bootstrap-stripe` does) and a test clock at `start`
        (none when `start` is None: the customers live in real time)."""
        tier_prices = [price.id for price in stripe.catalog.ensure(load_tier_catalog()).prices]
        clock_id = None
        if start is not None:
            clock_id = emulator.client().v1.test_helpers.test_clocks.create({"frozen_time": int(start.timestamp())}).id
        return cls(emulator=emulator, stripe=stripe, tier_prices=tier_prices, clock_id=clock_id, clock=start, **fields)

    @property
    def client(self) -> Any:
        """A stripe.StripeClient on the emulator."""
        return self.emulator.client()

    def customer(
        self, account_code: str, *, email: str | None = DEFAULT_EMAIL, card: str = "pm_card_visa", locale: str | None = None,
        country: str | None = None,
    ) -> str:
        """A customer of `account_code` ("<code> Ltd", billing@<code>.example), on the world's clock, paying by `card`."""
        params: CustomerCreateParams = {
            "name": f"{account_code} Ltd",
            "metadata": {"aisyst_account_code": account_code},
            "payment_method": card,
            "invoice_settings": {"default_payment_method": card},
        }
        if self.clock_id:
            params["test_clock"] = self.clock_id
        address = f"billing@{account_code.lower()}.example" if email == DEFAULT_EMAIL else email
        if address:
            params["email"] = address
        if locale:
            params["preferred_locales"] = [locale]
        if country:
            params["address"] = {"country": country}
        return self.client.v1.customers.create(params).id

    def subscribe(self, customer_id: str, tier: int = 1) -> Any:
        """The customer's subscription to a tier; returns the stripe.Subscription."""
        return self.client.v1.subscriptions.create({"customer": customer_id, "items": [{"price": self.tier_prices[tier - 1]}]})

    def sign_up(self, account_code: str, tier: int = 1, locale: str | None = None, country: str | None = None) -> Subscriber:
        """A customer of `account_code` subscribed to a tier, as the sign-up flow leaves them."""
        customer_id = self.customer(account_code, locale=locale, country=country)
        subscriber = Subscriber(customer_id, self.subscribe(customer_id, tier).id, account_code, tier)
        self.subscribers.append(subscriber)
        return subscriber

    def switch_card(self, customer_id: str, card: str) -> None:
        self.client.v1.payment_methods.attach(card, {"customer": customer_id})
        self.client.v1.customers.update(customer_id, {"invoice_settings": {"default_payment_method": card}})

    def advance(self, to: datetime) -> None:
        """Move the test clock forward to `to` (a time it has passed already leaves it where it is)."""
        assert self.clock_id is not None and self.clock is not None, "a world without a test clock cannot advance"
        if to > self.clock:
            self.client.v1.test_helpers.test_clocks.advance(self.clock_id, {"frozen_time": int(to.timestamp())})
            self.clock = to

    def period_end(self, subscription_id: str) -> datetime:
        """The end of the subscription's current period (its renewal)."""
        end = self.client.v1.subscriptions.retrieve(subscription_id).items.data[0].current_period_end
        return datetime.fromtimestamp(end, UTC)

    def sync_customers(self) -> None:
        """Mirror the customers into the warehouse: the Stripe sync's own service."""
        assert self.warehouse is not None, "build the world with a warehouse to mirror Stripe into"
        mirror_customers(self.warehouse, self.stripe.customers, now=datetime.now(UTC))

    def sync(self) -> None:
        """Mirror the customers and their subscriptions into the warehouse: the Stripe sync's own services."""
        self.sync_customers()
        assert self.warehouse is not None
        mirror_subscriptions(self.warehouse, self.stripe.customers, load_tier_catalog(), {}, now=datetime.now(UTC))


class RateLimitedAfterPages:
    """A real list gateway (`stripe.events`, `stripe.invoices`) after whose first `pages` list pages the
    emulator answers every request 429 — as when a month-start burst's writes spend the account's requests."""

    def __init__(self, emulator: Any, gateway: Any, pages: int) -> None:
        self.emulator, self.gateway, self.pages = emulator, gateway, pages

    def list_page(self, *args: Any, **kwargs: Any) -> Any:
        page = self.gateway.list_page(*args, **kwargs)
        self.pages -= 1
        if self.pages == 0:
            self.emulator.set_faults(rate_limit_error_rate=1.0)
        return page

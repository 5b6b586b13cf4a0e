"""The customers gateway: customers and subscriptions for the Stripe sync, and test clocks.

Stripe lists a test clock's customers and subscriptions only when asked for that clock, so each
listing walks the account's clocks too (test mode only: live mode has none). Customers on a test
clock live at the clock's time.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import stripe
from stripe.params import CustomerListParams, SubscriptionItemListParams, SubscriptionListParams
from stripe.params.test_helpers import TestClockListParams

from .catalog import CatalogGateway
from .client import PAGE_SIZE, StripeCalls
from .records import StripeCustomer, StripeSubscription, utc_from_unix


class CustomerGateway:
    def __init__(self, calls: StripeCalls, catalog: CatalogGateway) -> None:
        self._calls = calls
        self._catalog = catalog

    def list_customers(self, test_clocks: Iterable[str] | None = None) -> list[StripeCustomer]:
        """All customers, those on the account's test clocks (or on `test_clocks`) included."""
        customers: list[StripeCustomer] = []
        for clock in self._with_clocks(test_clocks):
            params: CustomerListParams = {"limit": PAGE_SIZE}
            if clock:
                params["test_clock"] = clock
            customers += self._calls.list_all(lambda c: c.v1.customers.list(params), StripeCustomer.from_api)
        return list({customer.id: customer for customer in customers}.values())  # each once, whatever the listing did

    def list_subscriptions(self, test_clocks: Iterable[str] | None = None) -> list[StripeSubscription]:
        """Every subscription (status=all), with each item's price and product.

        The products are listed once per call and joined on, rather than expanded with
        `expand[]=data.items.data.price.product` (five levels; Stripe expands four at most).
        """
        products = self._catalog.products()
        raw_subscriptions: list[dict[str, Any]] = []
        for clock in self._with_clocks(test_clocks):
            params: SubscriptionListParams = {"status": "all", "limit": PAGE_SIZE}
            if clock:
                params["test_clock"] = clock
            raw_subscriptions += self._calls.list_all(lambda c: c.v1.subscriptions.list(params), lambda raw: raw)
        subscriptions = []
        for raw in {raw["id"]: raw for raw in raw_subscriptions}.values():
            embedded = raw.get("items") or {}
            items = embedded.get("data") or []
            if embedded.get("has_more"):
                listing: SubscriptionItemListParams = {"subscription": raw["id"], "limit": PAGE_SIZE}
                items = self._calls.list_all(lambda c: c.v1.subscription_items.list(listing), lambda item: item)
            subscriptions.append(StripeSubscription.from_api(raw, items, products))
        return subscriptions

    def test_clock_times(self, clock_ids: Iterable[str]) -> dict[str, datetime]:
        """The frozen time of each test clock (a clock that no longer exists is left out)."""
        times: dict[str, datetime] = {}
        for clock_id in sorted(set(clock_ids)):
            try:
                clock = self._calls.read(lambda c: c.v1.test_helpers.test_clocks.retrieve(clock_id))
            except stripe.InvalidRequestError as error:
                if error.code == "resource_missing":
                    continue
                raise
            frozen = utc_from_unix(clock.frozen_time)
            if frozen is not None:
                times[clock_id] = frozen
        return times

    def _with_clocks(self, test_clocks: Iterable[str] | None) -> list[str | None]:
        """None (no clock) first, then the given clocks, or else every clock of the account."""
        if test_clocks is not None:
            return [None, *test_clocks]
        if self._calls.is_live_mode:
            return [None]
        params: TestClockListParams = {"limit": PAGE_SIZE}
        return [None, *self._calls.list_all(lambda c: c.v1.test_helpers.test_clocks.list(params), lambda raw: raw["id"])]

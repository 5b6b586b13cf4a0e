"""The Stripe sync (DESIGN.md §2.2): Stripe's customers and subscriptions mirrored into the warehouse,
and the minutes used per subscription per billing period.

- `mirror_customers`: every Stripe customer (test-clock customers included) with the account code
  from `metadata.aisyst_account_code`; calls and usage days waiting for a newly mapped account code
  get their customer.
- `mirror_subscriptions`: every subscription (status=all) through `subscription_row`, the one mapping
  of a subscription to its mirror row — the tier item's period (Stripe has no subscription-level
  period any more), price, product, and the tier and included minutes resolved as billing/tiers.py
  says. `subscription_mirror_row` applies the same mapping to a subscription carried by an event.
- `recompute_usage_by_period`: per subscription, the current billing period and the one before it
  (a closed period still receives late CDRs), on Stripe's anniversary cycle, from call_records by
  `ended_at`. A closed period keeps the tier recorded while it was current (an upgrade at renewal
  does not rewrite the allowance of the period before it); a period first seen already closed gets
  the subscription's tier as the mirror knows it.

Each pass re-reads Stripe in full and upserts: a rerun writes the same rows, nothing is appended.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from stripe import StripeError

from aisyst_pipelines.billing.periods import BillingCycle, Period, recent_periods
from aisyst_pipelines.billing.tiers import PriceFacts, TierCatalog, resolve_tier
from aisyst_pipelines.billing.usage import PeriodUsage
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse import stripe_sync_store as store
from aisyst_pipelines.warehouse.stripe_events_store import SubscriptionRowBuilder
from aisyst_pipelines.warehouse.stripe_sync_store import (
    CustomerSyncResult,
    StripeCustomerRow,
    StripeSubscriptionRow,
    UsageByPeriodRow,
)
from resources.stripe.catalog import CatalogGateway
from resources.stripe.customers import CustomerGateway
from resources.stripe.records import StripeCustomer, StripeProduct, StripeSubscription

# --- customers ---------------------------------------------------------------------------------------


def customer_row(customer: StripeCustomer) -> StripeCustomerRow:
    return StripeCustomerRow(
        customer_id=customer.id,
        account_code=customer.account_code,
        name=customer.name,
        email=customer.email,
        preferred_locale=customer.preferred_locale,
        test_clock=customer.test_clock,
        country=customer.country,
    )


@dataclass(frozen=True)
class CustomerMirror:
    stored: CustomerSyncResult
    without_account_code: list[str]  # customer ids: their calls cannot be attributed


def mirror_customers(warehouse: Warehouse, customers: CustomerGateway, *, now: datetime) -> CustomerMirror:
    listed = customers.list_customers()
    stored = store.sync_customers(warehouse, [customer_row(c) for c in listed], synced_at=now)
    return CustomerMirror(stored, sorted(c.id for c in listed if c.account_code is None))


# --- subscriptions -----------------------------------------------------------------------------------


def subscription_row(
    subscription: StripeSubscription, catalog: TierCatalog, legacy_price_ids: Mapping[str, int]
) -> StripeSubscriptionRow:
    """The mirror row: the tier item's price, period and resolved tier (ValueError on bad metadata)."""
    item = subscription.recurring_item()
    if item is None:
        raise ValueError("has no items")
    price, product = item.price, item.product
    resolved = resolve_tier(
        PriceFacts(
            price_id=price.id,
            lookup_key=price.lookup_key,
            nickname=price.nickname,
            price_metadata=price.metadata,
            product_name=product.name if product else None,
            product_metadata=product.metadata if product else None,
        ),
        catalog,
        legacy_price_ids,
    )
    return StripeSubscriptionRow(
        subscription_id=subscription.id,
        customer_id=subscription.customer_id,
        status=subscription.status,
        subscription_item_id=item.id,
        price_id=price.id,
        price_lookup_key=price.lookup_key,
        product_id=price.product_id,
        tier_name=resolved.tier_name,
        included_minutes=resolved.included_minutes,
        tier_source=resolved.source.value,
        overage_unit_amount=resolved.overage_unit_amount,
        currency=price.currency,
        current_period_start=item.current_period_start,
        current_period_end=item.current_period_end,
        billing_cycle_anchor=subscription.billing_cycle_anchor,
        billing_interval=price.interval,
        billing_interval_count=price.interval_count,
        started_at=subscription.start_date,
        cancel_at_period_end=subscription.cancel_at_period_end,
        canceled_at=subscription.canceled_at,
        ended_at=subscription.ended_at,
        test_clock=subscription.test_clock,
    )


@dataclass(frozen=True)
class SubscriptionMirror:
    rows: list[StripeSubscriptionRow]  # written
    problems: list[str]  # "<subscription id>: <why>" for the subscriptions left out (bad tier metadata)

    @property
    def unknown_tier_prices(self) -> list[str]:
        """Prices (or subscriptions without one) that resolve to no tier: included minutes left NULL."""
        return sorted({r.price_id or r.subscription_id for r in self.rows if r.tier_source == "unknown"})


def mirror_subscriptions(
    warehouse: Warehouse,
    customers: CustomerGateway,
    catalog: TierCatalog,
    legacy_price_ids: Mapping[str, int],
    *,
    now: datetime,
) -> SubscriptionMirror:
    """Write every subscription that maps; the ones that do not are reported, not written, and do not
    keep the others out."""
    rows: list[StripeSubscriptionRow] = []
    problems: list[str] = []
    for subscription in customers.list_subscriptions():
        try:
            rows.append(subscription_row(subscription, catalog, legacy_price_ids))
        except ValueError as error:
            problems.append(f"{subscription.id}: {error}")
    store.sync_subscriptions(warehouse, rows, synced_at=now)
    return SubscriptionMirror(rows, problems)


def subscription_mirror_row(
    products_source: CatalogGateway | None, catalog: TierCatalog, legacy_price_ids: Mapping[str, int]
) -> SubscriptionRowBuilder:
    """`subscription_row` for a subscription carried by an event (a Stripe subscription object).

    Product metadata is one of the tier sources, so the product list is fetched — once per builder
    (the sensor makes one per tick), and only when an event needs it. Without a product source tiers
    resolve from price metadata, the tiers file and the legacy price ids."""
    products: dict[str, StripeProduct] = {}
    fetched = products_source is None

    def build(raw: Mapping[str, Any]) -> Mapping[str, Any]:
        nonlocal fetched
        if not fetched:
            assert products_source is not None
            try:
                products.update(products_source.products())
            except StripeError as error:
                # Without the products a tier could resolve differently from the sync's: map nothing
                # (known subscriptions still get status and period), and try again next event.
                raise ValueError(f"products unavailable: {error.user_message or type(error).__name__}") from None
            fetched = True
        items = (raw.get("items") or {}).get("data") or []
        row = subscription_row(StripeSubscription.from_api(raw, items, products), catalog, legacy_price_ids)
        return asdict(row) | {"cancel_at_period_end": int(row.cancel_at_period_end)}

    return build


# --- usage per billing period ------------------------------------------------------------------------


def periods_to_recompute(subscription: StripeSubscriptionRow, count: int = 2) -> list[Period]:
    """The subscription's current period and the one before it (none before its start)."""
    assert subscription.current_period_start and subscription.current_period_end
    current = Period(subscription.current_period_start, subscription.current_period_end)
    cycle = BillingCycle.from_current_period(
        current,
        interval=subscription.billing_interval or "month",
        interval_count=subscription.billing_interval_count or 1,
        anchor=subscription.billing_cycle_anchor,
    )
    return recent_periods(current, cycle, count=count, not_before=subscription.started_at)


@dataclass(frozen=True)
class UsageRecompute:
    subscriptions: int
    rows: list[UsageByPeriodRow]  # every period recomputed
    current: list[UsageByPeriodRow]  # the subscriptions' current periods among them
    unmapped_call_minutes: int  # minutes in the recomputed span that no customer can be charged for yet


def recompute_usage_by_period(warehouse: Warehouse, *, now: datetime) -> UsageRecompute:
    subscriptions = store.subscriptions_for_usage(warehouse)
    plans = [(subscription, period) for subscription in subscriptions for period in periods_to_recompute(subscription)]
    totals = store.call_totals_in_windows(warehouse, [(s.customer_id, p.start, p.end) for s, p in plans])
    closed = [(s.subscription_id, p.start) for s, p in plans if s.current_period_start and p.end <= s.current_period_start]
    recorded = store.recorded_period_terms(warehouse, closed)  # a closed period keeps its tier
    rows = []
    for subscription, period in plans:
        tier_name, included = recorded.get(
            (subscription.subscription_id, period.start), (subscription.tier_name, subscription.included_minutes)
        )
        usage = PeriodUsage(period, included, totals[(subscription.customer_id, period.start, period.end)])
        rows.append(UsageByPeriodRow(subscription.subscription_id, subscription.customer_id, tier_name, usage))
    store.upsert_usage_by_period(warehouse, rows, computed_at=now)
    current_ends = {s.subscription_id: s.current_period_end for s in subscriptions}
    current = [row for row in rows if row.usage.period.end == current_ends[row.subscription_id]]
    earliest = min((row.usage.period.start for row in rows), default=None)
    latest = max((row.usage.period.end for row in rows), default=None)
    unmapped = store.unmapped_call_minutes(warehouse, earliest, latest) if earliest and latest else 0
    return UsageRecompute(len(subscriptions), rows, current, unmapped)

"""Stripe → warehouse sync (DESIGN.md §2.2) and minutes per billing period (group `stripe`).

- `stripe_customers`: every Stripe customer (test-clock customers included) with the account code
  from `metadata.aisyst_account_code`; calls and usage days waiting for a newly mapped account code
  get their customer.
- `stripe_subscriptions`: every subscription (status=all) with its tier item's period — from the
  item, Stripe has no subscription-level period any more — price, product, and the tier and
  included minutes resolved as billing/tiers.py says.
- `usage_by_period`: per subscription, the current billing period and the one before it (a closed
  period still receives late CDRs), on Stripe's anniversary cycle, from call_records by `ended_at`.
  A closed period keeps the tier recorded while it was current (an upgrade at renewal does not
  rewrite the allowance of the period before it); a period first seen already closed gets the
  subscription's tier as the mirror knows it.

Each run re-reads Stripe in full and upserts: a rerun writes the same rows, nothing is appended.
"""


from collections import Counter
from datetime import datetime, timezone

import dagster as dg

from aisyst_pipelines.billing.formatting import format_number
from aisyst_pipelines.billing.periods import BillingCycle, Period, recent_periods
from aisyst_pipelines.billing.tiers import PriceFacts, TierCatalog, load_tier_catalog, resolve_tier
from aisyst_pipelines.billing.usage import PeriodUsage
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import stripe_store
from aisyst_pipelines.warehouse.stripe_store import StripeCustomerRow, StripeSubscriptionRow, UsageByPeriodRow
from resources import StripeResource, WarehouseResource
from resources.stripe.records import StripeCustomer, StripeSubscription

GROUP = "stripe"
OWNERS = ["team:billing-data"]
CALL_RECORDS = dg.AssetKey("call_records")
MAX_LISTED = 20  # account codes / prices named in metadata before "and N more"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _listed(values: list[str]) -> str:
    shown = ", ".join(values[:MAX_LISTED])
    return shown + (f" and {len(values) - MAX_LISTED} more" if len(values) > MAX_LISTED else "") if values else "none"


# --- customers ---------------------------------------------------------------------------------------


def customer_row(customer: StripeCustomer) -> StripeCustomerRow:
    return StripeCustomerRow(
        customer_id=customer.id,
        account_code=customer.account_code,
        name=customer.name,
        email=customer.email,
        preferred_locale=customer.preferred_locale,
        test_clock=customer.test_clock,
    )


@dg.asset(
    group_name=GROUP,
    kinds={"stripe", "sql"},
    owners=OWNERS,
    description="Stripe customers with their Aisyst account code (metadata.aisyst_account_code).",
)
def stripe_customers(context: dg.AssetExecutionContext, stripe: StripeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    customers = stripe.customers.list_customers()
    result = stripe_store.sync_customers(warehouse.get(), [customer_row(c) for c in customers], synced_at=_now())
    without_code = sorted(c.id for c in customers if c.account_code is None)
    if result.ambiguous_account_codes:
        context.log.warning(
            f"account codes carried by several customers (their calls stay unmapped): {_listed(result.ambiguous_account_codes)}"
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.customers),
            "customers": dg.MetadataValue.int(result.customers),
            "customers_without_account_code": dg.MetadataValue.int(len(without_code)),
            "marked_deleted": dg.MetadataValue.int(result.marked_deleted),
            "newly_mapped_accounts": dg.MetadataValue.int(len(result.newly_mapped_accounts)),
            "calls_backfilled": dg.MetadataValue.int(result.calls_backfilled),
            "usage_days_backfilled": dg.MetadataValue.int(result.usage_days_backfilled),
            "unmapped_call_accounts": dg.MetadataValue.int(result.unmapped_call_accounts),
            "ambiguous_account_codes": dg.MetadataValue.text(_listed(result.ambiguous_account_codes)),
            "newly_mapped": dg.MetadataValue.text(_listed(result.newly_mapped_accounts)),
        }
    )


# --- subscriptions -----------------------------------------------------------------------------------


def subscription_row(
    subscription: StripeSubscription, catalog: TierCatalog, legacy_price_ids: dict[str, int]
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


def tiers_table(rows: list[StripeSubscriptionRow]) -> str:
    """Markdown: subscriptions per tier and status, with where the included minutes came from."""
    counts = Counter((r.tier_name or "(no tier)", r.included_minutes, r.tier_source, r.status) for r in rows)
    lines = ["| tier | included minutes | source | status | subscriptions |", "|---|---:|---|---|---:|"]
    for (tier, included, source, status), count in sorted(counts.items(), key=lambda item: (item[0][0], item[0][3])):
        shown = "unlimited" if included is None and source != "unknown" else ("?" if included is None else format_number(included))
        lines.append(f"| {tier} | {shown} | {source} | {status} | {count} |")
    return "\n".join(lines)


@dg.asset(
    group_name=GROUP,
    kinds={"stripe", "sql"},
    owners=OWNERS,
    deps=[stripe_customers],
    description="Stripe subscriptions with the tier item's current period, price, tier and included minutes.",
)
def stripe_subscriptions(context: dg.AssetExecutionContext, stripe: StripeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    settings = Settings.from_env()
    catalog = load_tier_catalog(settings.tiers_file)
    rows: list[StripeSubscriptionRow] = []
    problems: list[str] = []
    for subscription in stripe.customers.list_subscriptions():
        try:
            rows.append(subscription_row(subscription, catalog, settings.legacy_tier_price_ids))
        except ValueError as error:
            problems.append(f"{subscription.id}: {error}")
    stripe_store.sync_subscriptions(warehouse.get(), rows, synced_at=_now())
    unknown = sorted({r.price_id or r.subscription_id for r in rows if r.tier_source == "unknown"})
    if unknown:
        context.log.warning(f"prices with no known tier (included minutes left NULL): {_listed(unknown)}")
    metadata = {
        "dagster/row_count": dg.MetadataValue.int(len(rows)),
        "subscriptions": dg.MetadataValue.int(len(rows)),
        "active": dg.MetadataValue.int(sum(r.status in ("active", "trialing", "past_due") for r in rows)),
        "unknown_tier_prices": dg.MetadataValue.int(len(unknown)),
        "tiers": dg.MetadataValue.md(tiers_table(rows)),
        "tiers_file": dg.MetadataValue.path(str(settings.tiers_file)),
    }
    if problems:
        # The good rows are written; the bad metadata must be fixed in Stripe, loudly.
        raise dg.Failure(
            description=f"{len(problems)} subscription(s) carry unreadable tier metadata: {_listed(problems)}",
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


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


@dg.asset(
    group_name=GROUP,
    kinds={"sql"},
    owners=OWNERS,
    deps=[stripe_subscriptions, CALL_RECORDS],
    description="Minutes used per subscription per billing period (current and previous), on Stripe's "
    "anniversary periods; calls count in the period containing their ended_at.",
)
def usage_by_period(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    wh = warehouse.get()
    subscriptions = stripe_store.subscriptions_for_usage(wh)
    plans = [(subscription, period) for subscription in subscriptions for period in periods_to_recompute(subscription)]
    totals = stripe_store.call_totals_in_windows(wh, [(s.customer_id, p.start, p.end) for s, p in plans])
    closed = [(s.subscription_id, p.start) for s, p in plans if p.end <= s.current_period_start]
    recorded = stripe_store.recorded_period_terms(wh, closed)  # a closed period keeps its tier
    rows = []
    for subscription, period in plans:
        tier_name, included = recorded.get(
            (subscription.subscription_id, period.start), (subscription.tier_name, subscription.included_minutes)
        )
        usage = PeriodUsage(period, included, totals[(subscription.customer_id, period.start, period.end)])
        rows.append(UsageByPeriodRow(subscription.subscription_id, subscription.customer_id, tier_name, usage))
    stripe_store.upsert_usage_by_period(wh, rows, computed_at=_now())
    current_ends = {s.subscription_id: s.current_period_end for s in subscriptions}
    current = [row for row in rows if row.usage.period.end == current_ends[row.subscription_id]]
    earliest = min((row.usage.period.start for row in rows), default=None)
    latest = max((row.usage.period.end for row in rows), default=None)
    unmapped = stripe_store.unmapped_call_minutes(wh, earliest, latest) if earliest and latest else 0
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(rows)),
            "subscriptions": dg.MetadataValue.int(len(subscriptions)),
            "periods_recomputed": dg.MetadataValue.int(len(rows)),
            "minutes_used_current_periods": dg.MetadataValue.int(sum(row.usage.minutes_used for row in current)),
            "minutes_used_total": dg.MetadataValue.int(sum(row.usage.minutes_used for row in rows)),
            "subscriptions_over_allowance": dg.MetadataValue.int(sum(row.usage.overage_minutes > 0 for row in current)),
            "unmapped_call_minutes": dg.MetadataValue.int(unmapped),
        }
    )


defs = dg.Definitions(assets=[stripe_customers, stripe_subscriptions, usage_by_period])

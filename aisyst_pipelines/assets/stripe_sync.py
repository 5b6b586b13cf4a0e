"""Stripe → warehouse sync (DESIGN.md §2.2, group `stripe`) and minutes per billing period (group `usage`).

Adapters of services/stripe_sync.py, which says what each table holds:
- `stripe_customers`: `mirror_customers`;
- `stripe_subscriptions`: `mirror_subscriptions`, with the tiers of the `catalog` resource; a
  subscription whose tier metadata cannot be read fails the materialization after the good rows
  are written;
- `usage_by_period`: `recompute_usage_by_period`;
- `stripe_invoice_previews`: `refresh_invoice_previews` (services/invoice_previews.py).
"""

from collections import Counter
from datetime import datetime, timezone

import dagster as dg

from aisyst_pipelines.assets.common import OWNERS, table_metadata
from aisyst_pipelines.billing.formatting import format_money, format_number
from aisyst_pipelines.services.invoice_previews import refresh_invoice_previews
from aisyst_pipelines.services.stripe_sync import mirror_customers, mirror_subscriptions, recompute_usage_by_period
from aisyst_pipelines.warehouse.stripe_sync_store import StripeSubscriptionRow
from resources import CatalogResource, StripeResource, WarehouseResource

GROUP = "stripe"
USAGE_GROUP = "usage"
CALL_RECORDS = dg.AssetKey("call_records")
MAX_LISTED = 20  # account codes / prices named in metadata before "and N more"


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _listed(values: list[str]) -> str:
    shown = ", ".join(values[:MAX_LISTED])
    return shown + (f" and {len(values) - MAX_LISTED} more" if len(values) > MAX_LISTED else "") if values else "none"


@dg.asset(
    group_name=GROUP,
    kinds={"stripe", "sql"},
    owners=OWNERS,
    metadata=table_metadata("stripe_customers"),
    description="Stripe customers with their Aisyst account code (metadata.aisyst_account_code).",
)
def stripe_customers(context: dg.AssetExecutionContext, stripe: StripeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    mirror = mirror_customers(warehouse.get(), stripe.customers, now=_now())
    result = mirror.stored
    if result.ambiguous_account_codes:
        context.log.warning(
            f"account codes carried by several customers (their calls stay unmapped): {_listed(result.ambiguous_account_codes)}"
        )
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(result.customers),
            "customers": dg.MetadataValue.int(result.customers),
            "customers_without_account_code": dg.MetadataValue.int(len(mirror.without_account_code)),
            "marked_deleted": dg.MetadataValue.int(result.marked_deleted),
            "newly_mapped_accounts": dg.MetadataValue.int(len(result.newly_mapped_accounts)),
            "calls_backfilled": dg.MetadataValue.int(result.calls_backfilled),
            "usage_days_backfilled": dg.MetadataValue.int(result.usage_days_backfilled),
            "unmapped_call_accounts": dg.MetadataValue.int(result.unmapped_call_accounts),
            "ambiguous_account_codes": dg.MetadataValue.text(_listed(result.ambiguous_account_codes)),
            "newly_mapped": dg.MetadataValue.text(_listed(result.newly_mapped_accounts)),
        }
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
    metadata=table_metadata("stripe_subscriptions"),
    description="Stripe subscriptions with the tier item's current period, price, tier and included minutes.",
)
def stripe_subscriptions(
    context: dg.AssetExecutionContext, stripe: StripeResource, warehouse: WarehouseResource, catalog: CatalogResource
) -> dg.MaterializeResult:
    mirror = mirror_subscriptions(warehouse.get(), stripe.customers, catalog.tiers(), catalog.legacy_tier_price_ids, now=_now())
    rows, unknown = mirror.rows, mirror.unknown_tier_prices
    if unknown:
        context.log.warning(f"prices with no known tier (included minutes left NULL): {_listed(unknown)}")
    metadata = {
        "dagster/row_count": dg.MetadataValue.int(len(rows)),
        "subscriptions": dg.MetadataValue.int(len(rows)),
        "active": dg.MetadataValue.int(sum(r.status in ("active", "trialing", "past_due") for r in rows)),
        "unknown_tier_prices": dg.MetadataValue.int(len(unknown)),
        "tiers": dg.MetadataValue.md(tiers_table(rows)),
        "tiers_file": dg.MetadataValue.path(catalog.tiers_file),
    }
    if mirror.problems:
        # The good rows are written; the bad metadata must be fixed in Stripe, loudly.
        raise dg.Failure(
            description=f"{len(mirror.problems)} subscription(s) carry unreadable tier metadata: {_listed(mirror.problems)}",
            metadata=metadata,
        )
    return dg.MaterializeResult(metadata=metadata)


@dg.asset(
    group_name=USAGE_GROUP,
    kinds={"sql"},
    owners=OWNERS,
    deps=[stripe_subscriptions, CALL_RECORDS],
    metadata=table_metadata("usage_by_period"),
    description="Minutes used per subscription per billing period (current and previous), on Stripe's "
    "anniversary periods; calls count in the period containing their ended_at.",
)
def usage_by_period(context: dg.AssetExecutionContext, warehouse: WarehouseResource) -> dg.MaterializeResult:
    usage = recompute_usage_by_period(warehouse.get(), now=_now())
    rows, current = usage.rows, usage.current
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(rows)),
            "subscriptions": dg.MetadataValue.int(usage.subscriptions),
            "periods_recomputed": dg.MetadataValue.int(len(rows)),
            "minutes_used_current_periods": dg.MetadataValue.int(sum(row.usage.minutes_used for row in current)),
            "minutes_used_total": dg.MetadataValue.int(sum(row.usage.minutes_used for row in rows)),
            "subscriptions_over_allowance": dg.MetadataValue.int(sum(row.usage.overage_minutes > 0 for row in current)),
            "unmapped_call_minutes": dg.MetadataValue.int(usage.unmapped_call_minutes),
        }
    )


@dg.asset(
    group_name=GROUP,
    kinds={"stripe", "sql"},
    owners=OWNERS,
    deps=[stripe_subscriptions],
    description="The next invoice of every renewing subscription as Stripe previews it (amount, tax, date): "
    "v_customer_dashboard's next invoice.",
    metadata=table_metadata("stripe_invoice_previews"),
)
def stripe_invoice_previews(stripe: StripeResource, warehouse: WarehouseResource) -> dg.MaterializeResult:
    refresh = refresh_invoice_previews(warehouse.get(), stripe.invoices, now=_now())
    due = ", ".join(format_money(amount, currency) for currency, amount in sorted(refresh.amount_due_by_currency.items()))
    return dg.MaterializeResult(
        metadata={
            "dagster/row_count": dg.MetadataValue.int(len(refresh.previews)),
            "previewed": dg.MetadataValue.int(len(refresh.previews)),
            "not_renewing": dg.MetadataValue.int(len(refresh.not_renewing)),
            "next_invoices_amount_due": dg.MetadataValue.text(due or "none"),
        }
    )

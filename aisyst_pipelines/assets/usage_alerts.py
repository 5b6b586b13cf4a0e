"""The daily usage alerts (DESIGN.md §2.5) as the `usage_alerts` asset and its delivery check.

The work is `aisyst_pipelines.services.usage_alerts.run_usage_alerts` (what one pass does is told
there); this module reads its configuration from the resources — thresholds and silence policy from
`usage_alerts_config`, tiers and brand from `catalog` — and turns the outcome into metadata.
"""

from collections import Counter
from datetime import datetime, timezone

import dagster as dg
from pydantic import Field

from aisyst_pipelines.services.usage_alerts import AlertRunOutcome, run_usage_alerts
from aisyst_pipelines.warehouse import usage_alerts_store
from resources import CatalogResource, NotifierResource, StripeResource, UsageAlertsConfig, WarehouseResource

ASSET_KEY = dg.AssetKey("usage_alerts")
DELIVERED_CHECK = "usage_alerts_delivered"
GROUP = "alerts"
OWNERS = ["team:billing-data"]
UPSTREAM = [dg.AssetKey("usage_by_period"), dg.AssetKey("usage_daily")]


class UsageAlertsRunConfig(dg.Config):
    """What one run may set: the instant it evaluates (the knobs are in the usage_alerts_config resource)."""

    as_of: str | None = Field(
        default=None, description="ISO 8601 instant with offset the run evaluates; empty = now."
    )

    def as_of_instant(self) -> datetime:
        if not self.as_of:
            return datetime.now(timezone.utc)
        instant = datetime.fromisoformat(self.as_of)
        if instant.tzinfo is None:
            raise ValueError(f"as_of {self.as_of!r} has no UTC offset")
        return instant.astimezone(timezone.utc)


def alert_metadata(outcome: AlertRunOutcome, channel: str) -> dict[str, dg.MetadataValue]:
    """Stable keys every run: one int per configured threshold, so each plots as a time series."""
    table = dg.MetadataValue.table(
        records=[
            dg.TableRecord(
                {
                    "customer_id": f.customer_id,
                    "customer": f.customer_name or "",
                    "tier": f.tier_name or "",
                    "minutes_used": f.minutes_used,
                    "included_minutes": f.included_minutes,
                    "usage_pct": f.usage_pct,
                    "threshold_pct": f.threshold_pct,
                    "alert_status": f.alert_status,
                    "days_left": f.days_left,
                }
            )
            for f in outcome.flagged
        ],
        schema=dg.TableSchema(
            columns=[
                dg.TableColumn("customer_id", "string"),
                dg.TableColumn("customer", "string"),
                dg.TableColumn("tier", "string"),
                dg.TableColumn("minutes_used", "int"),
                dg.TableColumn("included_minutes", "int"),
                dg.TableColumn("usage_pct", "float"),
                dg.TableColumn("threshold_pct", "int", description="highest threshold reached this period"),
                dg.TableColumn("alert_status", "string"),
                dg.TableColumn("days_left", "int"),
            ]
        ),
    )
    at_threshold = Counter(f.threshold_pct for f in outcome.flagged)
    metadata: dict[str, dg.MetadataValue] = {
        "flagged_customers": table,
        "as_of": dg.MetadataValue.timestamp(outcome.as_of),
        "delivery_channel": dg.MetadataValue.text(channel),
        "subscriptions_checked": dg.MetadataValue.int(outcome.subscriptions_checked),
        "subscriptions_without_usage": dg.MetadataValue.int(len(outcome.without_usage)),
        "subscriptions_stale": dg.MetadataValue.int(len(outcome.stale)),
        "flagged_customer_count": dg.MetadataValue.int(len(outcome.flagged)),
    }
    for threshold in outcome.thresholds:
        metadata[f"customers_at_{threshold}pct"] = dg.MetadataValue.int(at_threshold.get(threshold, 0))
        metadata[f"alerts_sent_{threshold}pct"] = dg.MetadataValue.int(outcome.sent.get(threshold, 0))
    metadata |= {
        "alerts_superseded": dg.MetadataValue.int(outcome.superseded),
        "alerts_withdrawn": dg.MetadataValue.int(outcome.withdrawn),
        "alerts_expired": dg.MetadataValue.int(outcome.expired),
        "delivery_failures": dg.MetadataValue.int(len(outcome.failures)),
        "silent_customers": dg.MetadataValue.int(len(outcome.silent)),
        "ops_digest_sent": dg.MetadataValue.int(1 if outcome.digest else 0),
    }
    if outcome.digest_error:
        metadata["ops_digest_error"] = dg.MetadataValue.text(outcome.digest_error)
    return metadata


@dg.asset(
    key=ASSET_KEY,
    group_name=GROUP,
    kinds={"sql", "email"},
    owners=OWNERS,
    deps=UPSTREAM,
    description="80 %/100 % usage alerts per customer and billing period (usage_alerts, usage_silence), "
    "the customer e-mails and the ops digest.",
)
def usage_alerts(
    context: dg.AssetExecutionContext,
    config: UsageAlertsRunConfig,
    warehouse: WarehouseResource,
    notifier: NotifierResource,
    stripe: StripeResource,
    catalog: CatalogResource,
    usage_alerts_config: UsageAlertsConfig,
) -> dg.MaterializeResult:
    outcome = run_usage_alerts(
        warehouse.get(), notifier, stripe.customers, stripe.portal, stripe.invoices,
        brand=catalog.brand(), catalog=catalog.tiers(),
        thresholds=usage_alerts_config.threshold_percentages(), policy=usage_alerts_config.silence_policy(),
        as_of=config.as_of_instant(), log=context.log,
    )
    return dg.MaterializeResult(metadata=alert_metadata(outcome, notifier.channel))


@dg.asset_check(asset=ASSET_KEY, name=DELIVERED_CHECK, description="Every reached threshold's e-mail was delivered.")
def usage_alerts_delivered(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    undelivered = usage_alerts_store.undelivered_alerts(warehouse.get())
    listed = [f"{r.customer_id} {r.threshold_pct} % ({r.attempts} attempts): {r.last_error}" for r in undelivered[:20]]
    return dg.AssetCheckResult(
        passed=not undelivered,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={
            "undelivered_alerts": dg.MetadataValue.int(len(undelivered)),
            "undelivered": dg.MetadataValue.md("\n".join(f"- {line}" for line in listed) or "none"),
        },
    )


"""The daily usage alerts (DESIGN.md §2.5) as the `usage_alerts` asset and its delivery check.

The work is `aisyst_pipelines.services.usage_alerts.run_usage_alerts` (what one pass does is told
there); this module reads its configuration from the resources — thresholds and silence policy from
`usage_alerts_config`, tiers and brand from `catalog` — and turns the outcome into metadata.

Daily-partitioned (one UTC day a partition): the partition of day D alerts **as of the end of D**
(midnight UTC after it, `as_of_for_partition`) unless the run config pins another instant. The usage
it reads is the current one (the job refreshes the Stripe mirror and usage_by_period first); the
alert ledger makes a rerun or a backfill of a day send nothing twice.
"""

from collections import Counter
from datetime import datetime, timedelta, timezone

import dagster as dg
from pydantic import Field

from aisyst_pipelines.assets.common import DAILY_PARTITIONS, OWNERS, markdown_table, row_count_metadata, runbook_link, table_metadata
from aisyst_pipelines.services.usage_alerts import AlertRunOutcome, run_usage_alerts
from aisyst_pipelines.warehouse import usage_alerts_store
from resources import CatalogResource, NotifierResource, StripeResource, UsageAlertsConfig, WarehouseResource

ASSET_KEY = dg.AssetKey("usage_alerts")
DELIVERED_CHECK = "usage_alerts_delivered"
GROUP = "alerts"
TABLE = "usage_alerts"
RUNBOOK_SECTION = "usage_alerts_job"
UPSTREAM = [dg.AssetKey("usage_by_period"), dg.AssetKey("usage_daily")]


def as_of_for_partition(partition_key: str) -> datetime:
    """The instant a day's partition alerts at: the end of that UTC day."""
    return DAILY_PARTITIONS.time_window_for_partition_key(partition_key).end.astimezone(timezone.utc)


def partition_for_as_of(as_of: datetime) -> str:
    """The partition whose run alerts at `as_of`: the UTC day that ended last by then."""
    return (as_of.astimezone(timezone.utc).date() - timedelta(days=1)).isoformat()


class UsageAlertsRunConfig(dg.Config):
    """What one run may set: the instant it evaluates (the knobs are in the usage_alerts_config resource)."""

    as_of: str | None = Field(
        default=None, description="ISO 8601 instant with offset the run evaluates; empty = the end of the partition's UTC day."
    )

    def as_of_instant(self, partition_key: str) -> datetime:
        if not self.as_of:
            return as_of_for_partition(partition_key)
        instant = datetime.fromisoformat(self.as_of)
        if instant.tzinfo is None:
            raise ValueError(f"as_of {self.as_of!r} has no UTC offset")
        return instant.astimezone(timezone.utc)


FLAGGED_COLUMNS = [
    "customer id", "customer", "tier", "minutes used", "included minutes", "usage %", "threshold % reached",
    "alert status", "days left",
]


def flagged_table(outcome: AlertRunOutcome) -> dg.MetadataValue:
    """The customers at a threshold this period, every column shown (Markdown)."""
    return markdown_table(FLAGGED_COLUMNS, [
        [f.customer_id, f.customer_name or "", f.tier_name or "", f.minutes_used, f.included_minutes,
         f"{f.usage_pct:.1f}", f.threshold_pct, f.alert_status, f.days_left]
        for f in outcome.flagged
    ])


def alert_metadata(outcome: AlertRunOutcome, channel: str) -> dict[str, dg.MetadataValue]:
    """Stable keys every run: one int per configured threshold, so each plots as a time series."""
    table = flagged_table(outcome)
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
    partitions_def=DAILY_PARTITIONS,
    metadata=table_metadata(TABLE),
    description="80 %/100 % usage alerts per customer and billing period (usage_alerts, usage_silence), "
    "the customer e-mails and the ops digest. One partition per UTC day: it alerts as of the end of that day.",
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
        as_of=config.as_of_instant(context.partition_key), log=context.log,
    )
    return dg.MaterializeResult(metadata={**alert_metadata(outcome, notifier.channel), **row_count_metadata(warehouse.get(), TABLE)})


@dg.asset_check(
    asset=ASSET_KEY,
    name=DELIVERED_CHECK,
    description="Fails (ERROR) while a reached threshold's customer e-mail is not delivered (rows still pending).",
)
def usage_alerts_delivered(warehouse: WarehouseResource) -> dg.AssetCheckResult:
    undelivered = usage_alerts_store.undelivered_alerts(warehouse.get())
    return dg.AssetCheckResult(
        passed=not undelivered,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{len(undelivered)} alert e-mail(s) not delivered" if undelivered else "every alert e-mail delivered",
        metadata={
            "undelivered_alerts": dg.MetadataValue.int(len(undelivered)),
            "offenders": markdown_table(
                ["customer", "period start", "threshold %", "attempts", "last error"],
                [[r.customer_id, f"{r.period_start:%Y-%m-%d}", r.threshold_pct, r.attempts, r.last_error] for r in undelivered[:20]],
            ),
            "runbook": runbook_link(RUNBOOK_SECTION),
        },
    )


"""The `meter_reconciliation` asset and its check `meter_drift_within_tolerance`: Dagster's view of
the nightly reconciliation (services/reconciliation.py does the work, docs/reconciliation.md says
what it finds).

Daily-partitioned (one UTC day a partition): the partition of day D reconciles **as of the end of D
plus the settle lag** (`as_of_for_partition`), so its windows end exactly at midnight after D — the
run covers day D and nothing later, whenever it runs (on time at 02:00, or backfilled a week later),
and a rerun compares the same windows again. A missed night is a missing partition in the UI.
Repair, settle lag and tolerance come from the `reconciliation` resource (resources/reconciliation.py);
the run config may still pin another instant (`as_of`: a test clock, `aisyst reconcile --as-of`) and
says how wide (lookback, concurrency).
"""

from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg

from aisyst_pipelines.assets.common import DAILY_PARTITIONS, OWNERS, markdown_table, row_count_metadata, runbook_link, table_metadata
from aisyst_pipelines.billing.reconciliation import STRIPE_TIMESTAMP_WINDOW, PeriodResult
from aisyst_pipelines.services.reconciliation import DRIFT_CHECK, DraftsFirst, DriftVerdict, ReconciliationOutcome, reconcile
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.invoice_annotation_store import drafts_awaiting_annotation
from resources import StripeResource, WarehouseResource
from resources.reconciliation import ReconciliationConfig

ASSET_KEY = dg.AssetKey("meter_reconciliation")
TABLE = "meter_reconciliation"
RUNBOOK_SECTION = "meter_reconciliation_job"
DEPS = [dg.AssetKey("call_records"), dg.AssetKey("stripe_customers"), dg.AssetKey("stripe_subscriptions")]
MAX_TABLE_ROWS = 100  # drifting customer-periods shown in metadata (the table in the warehouse has all)


def as_of_for_partition(partition_key: str, settle_lag: timedelta) -> datetime:
    """The instant the run of a day's partition reconciles at: the end of that UTC day plus the settle
    lag, so that its windows end at midnight after the day (the last settled midnight)."""
    day_end = DAILY_PARTITIONS.time_window_for_partition_key(partition_key).end.astimezone(timezone.utc)
    return day_end + settle_lag


def partition_for_as_of(as_of: datetime, settle_lag: timedelta) -> str:
    """The partition a reconciliation at `as_of` covers: the last UTC day settled by then."""
    settled = (as_of.astimezone(timezone.utc) - settle_lag).date()
    return (settled - timedelta(days=1)).isoformat()


class ReconciliationRunConfig(dg.Config):
    """Run config of one reconciliation (the nightly schedule passes its tick as `as_of`)."""

    as_of: str | None = None  # ISO-8601 instant with offset to reconcile at (a test clock); default: the partition's
    lookback_days: int = STRIPE_TIMESTAMP_WINDOW.days  # closed periods reconciled (Stripe accepts corrections for 35 days)
    concurrency: int = 32  # summaries requests in flight (the rate limiter sets the pace)


DRIFTING_COLUMNS = [
    "account", "customer", "period", "status", "CDR min", "Stripe min", "delta min", "drift min", "unrepaired min",
    "drifting days (MM-DD:delta)", "cause",
]
OFFENDER_COLUMNS = ["account", "period", "delta min", "cause", "unrepaired min"]


def _account(result: PeriodResult) -> str:
    return result.period.account_code or result.period.customer_id


def _period(result: PeriodResult) -> str:
    return f"{result.period.period_start:%Y-%m-%d %H:%M} – {result.period.period_end:%Y-%m-%d %H:%M} UTC"


def drifting_table(drifting: list[PeriodResult]) -> dg.MetadataValue:
    """The most drifting customer-periods, every column shown (Markdown, minutes as integers)."""
    return markdown_table(DRIFTING_COLUMNS, [
        [_account(r), r.period.customer_id, _period(r), r.status.value, r.comparison.cdr_minutes, r.comparison.stripe_minutes,
         f"{r.comparison.delta:+d}", r.comparison.drift_minutes, r.unrepaired_drift,
         ", ".join(f"{f.day:%m-%d}:{f.delta:+d}" for f in r.findings), r.cause.value if r.cause else "unexplained"]
        for r in drifting[:MAX_TABLE_ROWS]
    ])


def offenders_table(offenders: list[PeriodResult]) -> dg.MetadataValue:
    """The check's offenders: account, period, delta, cause, unrepaired minutes (most unrepaired first)."""
    return markdown_table(OFFENDER_COLUMNS, [
        [_account(r), _period(r), f"{r.comparison.delta:+d}", r.cause.value if r.cause else "unexplained", r.unrepaired_drift]
        for r in offenders[:MAX_TABLE_ROWS]
    ])


def outcome_metadata(
    outcome: ReconciliationOutcome, reconciliation: ReconciliationConfig, warehouse: Warehouse
) -> dict[str, Any]:
    """The run's counts (customer-periods, minutes: the key says the unit), the drifting table and
    `dagster/row_count` (rows of meter_reconciliation, every run's)."""
    summary = outcome.summary()
    return {
        **row_count_metadata(warehouse, TABLE),
        **{name: dg.MetadataValue.int(value) for name, value in asdict(summary).items()},
        "drifting_customers": drifting_table(outcome.most_drifting()),
        "as_of": dg.MetadataValue.timestamp(outcome.as_of),
        "repair": dg.MetadataValue.bool(reconciliation.repair),
        "settle_lag_minutes": dg.MetadataValue.int(reconciliation.settle_lag_minutes),
        "phase_end_seconds": dg.MetadataValue.json(outcome.timings),
    }


def drift_check(verdict: DriftVerdict) -> dg.AssetCheckResult:
    offenders = verdict.offenders
    return dg.AssetCheckResult(
        check_name=DRIFT_CHECK,
        asset_key=ASSET_KEY,
        passed=verdict.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=verdict.description,
        metadata={
            "tolerance_minutes": dg.MetadataValue.int(verdict.tolerance_minutes),
            "customer_periods_beyond_tolerance": dg.MetadataValue.int(len(offenders)),
            "unrepaired_drift_minutes": dg.MetadataValue.int(sum(r.unrepaired_drift for r in offenders)),
            "offenders": offenders_table(offenders),
            "not_reconciled": markdown_table(
                ["customer", "period start", "why"],
                [[customer, f"{start:%Y-%m-%d %H:%M}", why] for (customer, start), why in list(verdict.failures.items())[:MAX_TABLE_ROWS]],
            ),
            "runbook": runbook_link(RUNBOOK_SECTION),
        },
    )


@dg.asset(
    key=ASSET_KEY,
    deps=DEPS,
    group_name="reconciliation",
    kinds={"stripe", "sql"},
    owners=OWNERS,
    partitions_def=DAILY_PARTITIONS,
    metadata=table_metadata(TABLE),
    description="CDR minutes vs Stripe's meter event summaries per customer-period (current, or closed within "
    "35 days), day by day, with causes; optional repair by corrective meter events (meter_corrections). "
    "One partition per UTC day: it reconciles as of the end of that day plus the settle lag.",
    check_specs=[
        dg.AssetCheckSpec(
            DRIFT_CHECK,
            asset=ASSET_KEY,
            description="Fails (ERROR) when a customer-period drifts beyond the tolerance (default 0 minutes) "
            "and the drift was not repaired, or when a customer-period could not be reconciled.",
        )
    ],
)
def meter_reconciliation(
    context: dg.AssetExecutionContext,
    config: ReconciliationRunConfig,
    reconciliation: ReconciliationConfig,
    warehouse: WarehouseResource,
    stripe: StripeResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    policy = reconciliation.policy(timedelta(days=config.lookback_days))
    as_of = datetime.fromisoformat(config.as_of) if config.as_of else as_of_for_partition(context.partition_key, policy.settle_lag)
    drafts_first = DraftsFirst(lambda: drafts_awaiting_annotation(warehouse.get()), log=context.log)
    outcome = reconcile(
        warehouse.get(), stripe.meters, policy, repair=reconciliation.repair, run_id=context.run.run_id,
        as_of=as_of, concurrency=config.concurrency, log=context.log, drafts_first=drafts_first,
    )
    yield dg.MaterializeResult(metadata=outcome_metadata(outcome, reconciliation, warehouse.get()))
    yield drift_check(outcome.verdict())

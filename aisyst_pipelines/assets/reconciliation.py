"""The `meter_reconciliation` asset and its check `meter_drift_within_tolerance`: Dagster's view of
the nightly reconciliation (services/reconciliation.py does the work, docs/reconciliation.md says
what it finds).

Repair, settle lag and tolerance come from the `reconciliation` resource (resources/reconciliation.py);
the run config says when (`as_of`, the schedule's tick) and how wide (lookback, concurrency).
"""

from collections.abc import Iterator
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

import dagster as dg

from aisyst_pipelines.billing.reconciliation import STRIPE_TIMESTAMP_WINDOW, PeriodResult
from aisyst_pipelines.services.reconciliation import DRIFT_CHECK, DriftVerdict, ReconciliationOutcome, reconcile
from resources import StripeResource, WarehouseResource
from resources.reconciliation import ReconciliationConfig

ASSET_KEY = dg.AssetKey("meter_reconciliation")
OWNERS = ["team:billing-data"]
DEPS = [dg.AssetKey("call_records"), dg.AssetKey("stripe_customers"), dg.AssetKey("stripe_subscriptions")]
MAX_TABLE_ROWS = 100  # drifting customer-periods shown in metadata (the table in the warehouse has all)


class ReconciliationRunConfig(dg.Config):
    """Run config of one reconciliation (the nightly schedule passes its tick as `as_of`)."""

    as_of: str | None = None  # ISO-8601 instant with its offset to reconcile at (a tick, a test clock); default now
    lookback_days: int = STRIPE_TIMESTAMP_WINDOW.days  # closed periods reconciled (Stripe accepts corrections for 35 days)
    concurrency: int = 32  # summaries requests in flight (the rate limiter sets the pace)


DRIFT_TABLE_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("customer_id", "string"),
        dg.TableColumn("period_start", "string"),
        dg.TableColumn("status", "string"),
        dg.TableColumn("cdr_minutes", "int"),
        dg.TableColumn("stripe_minutes", "int"),
        dg.TableColumn("delta_minutes", "int"),
        dg.TableColumn("drift_minutes", "int"),
        dg.TableColumn("unrepaired_minutes", "int"),
        dg.TableColumn("drifting_days", "string"),
        dg.TableColumn("cause", "string"),
    ]
)


def drifting_table(drifting: list[PeriodResult]) -> dg.MetadataValue:
    records = [
        dg.TableRecord({
            "customer_id": r.period.customer_id,
            "period_start": r.period.period_start.isoformat(),
            "status": r.status.value,
            "cdr_minutes": r.comparison.cdr_minutes,
            "stripe_minutes": r.comparison.stripe_minutes,
            "delta_minutes": r.comparison.delta,
            "drift_minutes": r.comparison.drift_minutes,
            "unrepaired_minutes": r.unrepaired_drift,
            "drifting_days": ", ".join(f"{f.day:%m-%d}:{f.delta:+d}" for f in r.findings),
            "cause": r.cause.value if r.cause else "",
        })
        for r in drifting[:MAX_TABLE_ROWS]
    ]
    return dg.MetadataValue.table(records, schema=DRIFT_TABLE_SCHEMA)


def outcome_metadata(outcome: ReconciliationOutcome, reconciliation: ReconciliationConfig) -> dict[str, Any]:
    summary = outcome.summary()
    return {
        "dagster/row_count": dg.MetadataValue.int(summary.customer_periods),
        **{name: dg.MetadataValue.int(value) for name, value in asdict(summary).items()},
        "drifting_customers": drifting_table(outcome.most_drifting()),
        "as_of": dg.MetadataValue.timestamp(outcome.as_of),
        "repair": dg.MetadataValue.bool(reconciliation.repair),
        "settle_lag_minutes": dg.MetadataValue.int(reconciliation.settle_lag_minutes),
        "phase_end_seconds": dg.MetadataValue.json(outcome.timings),
        "dagster/table_name": dg.MetadataValue.text("meter_reconciliation"),
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
            "offenders": dg.MetadataValue.json([
                {"customer_id": r.period.customer_id, "period_start": r.period.period_start.isoformat(),
                 "status": r.status.value, "unrepaired_drift_minutes": r.unrepaired_drift,
                 "cause": r.cause.value if r.cause else None}
                for r in offenders[:MAX_TABLE_ROWS]
            ]),
            "not_reconciled": dg.MetadataValue.json(
                {f"{customer} {start.isoformat()}": why for (customer, start), why in list(verdict.failures.items())[:MAX_TABLE_ROWS]}
            ),
        },
    )


@dg.asset(
    key=ASSET_KEY,
    deps=DEPS,
    group_name="reconciliation",
    kinds={"stripe", "sql"},
    owners=OWNERS,
    description="CDR minutes vs Stripe's meter event summaries per customer-period (current, or closed within "
    "35 days), day by day, with causes; optional repair by corrective meter events (meter_corrections).",
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
    outcome = reconcile(
        warehouse.get(), stripe.meters, reconciliation.policy(timedelta(days=config.lookback_days)),
        repair=reconciliation.repair, run_id=context.run.run_id,
        as_of=datetime.fromisoformat(config.as_of) if config.as_of else None,
        concurrency=config.concurrency, log=context.log,
    )
    yield dg.MaterializeResult(metadata=outcome_metadata(outcome, reconciliation))
    yield drift_check(outcome.verdict())

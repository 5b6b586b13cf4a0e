"""`draft_invoice_sensor`, the `annotate_draft_invoices` job and the daily brand-fields job (DESIGN.md §2.4).

Adapters of services/invoice_annotation_planning.py (which renewal invoices to queue and when, the
cursor, the batches and their run keys) and services/invoice_annotation.py (the work of a run, through
the `invoice_annotations` asset): every few seconds the sensor scans the invoices created since its
cursor, queues the new renewals and requests a run for them unless a run that works the queue is in
progress (it takes them), then runs for the rows to try again.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg

from aisyst_pipelines.assets.invoice_annotation import ASSET_KEY, AUDIT_ASSET_KEY, BRANDING_ASSET_KEY, SUBSCRIPTIONS_ASSET_KEY
from aisyst_pipelines.deployment import IN_FLIGHT, Deployment
from aisyst_pipelines.services.invoice_annotation_planning import (
    DEFAULT_POLICY,
    PlannedRun,
    ScanCursor,
    SensorPolicy,
    planned_runs,
    scan_invoices,
)
from aisyst_pipelines.warehouse import Warehouse
from jobs.cursors import state_of, utc_time, with_readable
from resources import StripeResource, WarehouseResource

annotate_draft_invoices = dg.define_asset_job(
    "annotate_draft_invoices",
    selection=dg.AssetSelection.assets(ASSET_KEY),
    description="Adds the usage lines to a batch of renewal invoices (ids in the run config).",
    # One annotation run at a time is enough (each saturates the Stripe rate limit) and keeps the runs'
    # own rate limiters from adding up; deploy/dagster.yaml caps this tag at 1.
    tags={"aisyst/stripe_writer": "annotate"},
)


WORKS_QUEUE_TAG = "aisyst/works_queue"


def _run_request(run: PlannedRun) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run.run_key,
        run_config=annotation_run_config(run.invoice_ids, take_queued=True, wait_for_queued_seconds=run.wait_for_queued_seconds),
        tags={
            "aisyst/invoices": str(len(run.invoice_ids)),
            "aisyst/retry": "true" if run.retry else "false",
            WORKS_QUEUE_TAG: "true",
        },
    )


def queue_worked(instance: dg.DagsterInstance) -> bool:
    """Whether a run that works the annotation queue is queued or running: it takes new rows itself."""
    runs = dg.RunsFilter(job_name=annotate_draft_invoices.name, statuses=IN_FLIGHT, tags={WORKS_QUEUE_TAG: "true"})
    return bool(instance.get_run_records(filters=runs, limit=1))


def evaluate(
    context: dg.SensorEvaluationContext,
    stripe: StripeResource,
    warehouse: Warehouse,
    policy: SensorPolicy = DEFAULT_POLICY,
) -> dg.SensorResult:
    now = datetime.now(timezone.utc)
    cursor = ScanCursor.parse(state_of(context.cursor))
    # Asked before the listing: a run that ends meanwhile leaves rows queued, and the next tick, seeing
    # no run in progress, requests them as orphans.
    worked = queue_worked(context.instance)
    plan = scan_invoices(stripe.invoices, warehouse, cursor, policy, now, stripe.effective_requests_per_second, worked)
    requests = [_run_request(run) for run in planned_runs(plan, policy, now, worked)]
    context.log.info(plan.summary())
    if plan.rate_limited:
        context.log.warning("Stripe answered 429 (rate limit) through every retry: the listing ends here, the next tick continues")
    if not requests:
        if plan.queued:
            reason = f"{len(plan.queued)} new renewal(s) queued for the run in progress"
        else:
            reason = "listing paused by Stripe's rate limit, continues next tick" if plan.rate_limited else "no new renewal invoices"
        return dg.SensorResult(skip_reason=dg.SkipReason(reason), cursor=readable_cursor(plan.cursor))
    return dg.SensorResult(run_requests=requests, cursor=readable_cursor(plan.cursor))


def readable_cursor(cursor: ScanCursor) -> str:
    """The scan cursor with what it means in words (jobs/cursors.py)."""
    return with_readable(cursor.dump(), {
        "newest_invoice_created_seen": utc_time(cursor.hwm),
        "scan": "continues next tick" if cursor.scanning else "complete",
        "overlap_last_relisted": utc_time(cursor.relisted_at),
    })


SENSOR_NAME = "draft_invoice_sensor"


def build_draft_invoice_sensor(interval_seconds: int = 5) -> dg.SensorDefinition:
    """The sensor, ticking at most every `interval_seconds` (definitions.py: AISYST_STRIPE_SENSOR_INTERVAL_SECONDS)."""

    @dg.sensor(
        name=SENSOR_NAME,
        job=annotate_draft_invoices,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Queues new renewal invoices for annotation and requests a run for them unless one is in "
        "progress (it takes what is queued meanwhile); requests unfinished ones again.",
    )
    def draft_invoice_sensor(
        context: dg.SensorEvaluationContext, stripe: StripeResource, warehouse: WarehouseResource
    ) -> dg.SensorResult:
        return evaluate(context, stripe, warehouse.get())

    return draft_invoice_sensor


draft_invoice_sensor = build_draft_invoice_sensor()


# --- what annotation runs did, for `aisyst annotate` and the demo ---------------------------------------


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    invoices: int
    counts: dict[str, int]
    check_passed: bool | None
    success: bool


def annotation_outcomes(deployment: Deployment, run_ids: Sequence[str]) -> list[RunOutcome]:
    """The annotation runs once finished, with the counts their materializations recorded."""
    op = ASSET_KEY.to_python_identifier()
    outcomes = []
    for run in deployment.wait_for_runs(run_ids):
        invoices = len(run.run_config["ops"][op]["config"]["invoice_ids"])  # type: ignore[index]
        counts: dict[str, int] = {}
        check_passed = None
        success = run.status == dg.DagsterRunStatus.SUCCESS
        if success:
            metadata = next(m for m in deployment.run_materializations(run.run_id) if m.asset_key == ASSET_KEY).metadata
            counts = {key: int(metadata[key].value) for key in ("annotated", "missed", "failed", "skipped", "already_done")}  # type: ignore[arg-type]
            invoices = int(metadata["invoices"].value)  # type: ignore[arg-type]  # with the queued ones it took
            check_passed = all(check.passed for check in deployment.run_check_evaluations(run.run_id))
        outcomes.append(RunOutcome(run.run_id, invoices, counts, check_passed, success))
    return outcomes


def annotation_run_config(invoice_ids: Sequence[str], take_queued: bool = False, wait_for_queued_seconds: float = 0.0) -> dict:
    """The job's run config for these invoices (each must have a row) and, with `take_queued`, then the
    other queued ones (the sensor's runs)."""
    config: dict = {"invoice_ids": list(invoice_ids)}
    if take_queued:
        config.update(take_queued_invoices=True, wait_for_queued_seconds=wait_for_queued_seconds)
    return {"ops": {ASSET_KEY.to_python_identifier(): {"config": config}}}


# Brand fields go on each subscription's invoice settings ahead of its renewal (services/invoice_annotation.py):
# the Stripe mirror is refreshed and only changed subscriptions are written, once a day.
invoice_branding_job = dg.define_asset_job(
    "invoice_branding_job",
    selection=dg.AssetSelection.assets(dg.AssetKey("stripe_customers"), SUBSCRIPTIONS_ASSET_KEY, BRANDING_ASSET_KEY),
    description="Refresh the Stripe mirror, then write changed brand fields to subscriptions' invoice settings.",
)

invoice_branding_daily = dg.ScheduleDefinition(
    name="invoice_branding_daily",
    job=invoice_branding_job,
    cron_schedule="0 5 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

invoice_audit_job = dg.define_asset_job(
    "invoice_audit_job",
    selection=dg.AssetSelection.assets(AUDIT_ASSET_KEY),
    description="Audit the final renewal invoices: usage line vs. calls vs. Stripe's meter, causes named.",
)

invoice_audit_daily = dg.ScheduleDefinition(
    name="invoice_audit_daily",
    job=invoice_audit_job,
    cron_schedule="30 3 * * *",  # after the nightly reconciliation (02:00 UTC)
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

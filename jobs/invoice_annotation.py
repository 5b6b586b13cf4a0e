"""`draft_invoice_sensor`, the `annotate_draft_invoices` job and the daily brand-fields job (DESIGN.md §2.4).

Adapters of services/invoice_annotation_planning.py (which renewal invoices to queue and when, the
cursor, the batches and their run keys) and services/invoice_annotation.py (the work of a run, through
the `invoice_annotations` asset): every 30 s the sensor scans the invoices created since its cursor and
requests one run per planned batch of ids, new renewals first, then the rows to try again.
"""

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

import dagster as dg

from aisyst_pipelines.assets.invoice_annotation import ASSET_KEY, AUDIT_ASSET_KEY, BRANDING_ASSET_KEY, SUBSCRIPTIONS_ASSET_KEY
from aisyst_pipelines.services.invoice_annotation_planning import (
    DEFAULT_POLICY,
    PlannedRun,
    ScanCursor,
    SensorPolicy,
    planned_runs,
    scan_invoices,
)
from aisyst_pipelines.warehouse import Warehouse
from jobs.sensor_once import evaluate_sensor_once, store_sensor_cursor
from resources import StripeResource, WarehouseResource

annotate_draft_invoices = dg.define_asset_job(
    "annotate_draft_invoices",
    selection=dg.AssetSelection.assets(ASSET_KEY),
    description="Adds the usage lines to a batch of renewal invoices (ids in the run config).",
    # One annotation run at a time is enough (each saturates the Stripe rate limit) and keeps the runs'
    # own rate limiters from adding up; deploy/dagster.yaml caps this tag at 1.
    tags={"aisyst/stripe_writer": "annotate"},
)


def _run_request(run: PlannedRun) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=run.run_key,
        run_config={"ops": {ASSET_KEY.to_python_identifier(): {"config": {"invoice_ids": run.invoice_ids}}}},
        tags={"aisyst/invoices": str(len(run.invoice_ids)), "aisyst/retry": "true" if run.retry else "false"},
    )


def evaluate(
    context: dg.SensorEvaluationContext,
    stripe: StripeResource,
    warehouse: Warehouse,
    policy: SensorPolicy = DEFAULT_POLICY,
) -> dg.SensorResult:
    now = datetime.now(timezone.utc)
    cursor = ScanCursor.parse(context.cursor)
    plan = scan_invoices(stripe.invoices, warehouse, cursor, policy, now, stripe.effective_requests_per_second)
    requests = [_run_request(run) for run in planned_runs(plan, policy, now)]
    context.log.info(plan.summary())
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new renewal invoices"), cursor=plan.cursor.dump())
    return dg.SensorResult(run_requests=requests, cursor=plan.cursor.dump())


@dg.sensor(
    name="draft_invoice_sensor",
    job=annotate_draft_invoices,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests annotation runs for new renewal invoices (batches of ids) and for unfinished ones.",
)
def draft_invoice_sensor(
    context: dg.SensorEvaluationContext, stripe: StripeResource, warehouse: WarehouseResource
) -> dg.SensorResult:
    return evaluate(context, stripe, warehouse.get())


# --- one pass in this process (`aisyst annotate`, the demo) ----------------------------------------------

CLI_CURSOR_KEY = "aisyst/draft_invoice_sensor/cli_cursor"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    invoices: int
    counts: dict[str, int]
    check_passed: bool | None
    success: bool
    skipped_reason: str | None = None  # the run key was used before: nothing ran


def execute_annotation(
    instance: dg.DagsterInstance, definitions: dg.Definitions, run_config: dict, tags: dict[str, str] | None = None
) -> RunOutcome:
    job = definitions.resolve_job_def(annotate_draft_invoices.name)
    result = job.execute_in_process(run_config={**run_config, **QUIET}, instance=instance, tags=tags, raise_on_error=False)
    ids = run_config["ops"][ASSET_KEY.to_python_identifier()]["config"]["invoice_ids"]
    counts: dict[str, int] = {}
    check_passed = None
    if result.success:
        metadata = result.asset_materializations_for_node(ASSET_KEY.to_python_identifier())[0].metadata
        counts = {key: int(metadata[key].value) for key in ("annotated", "missed", "failed", "skipped", "already_done")}
        check_passed = all(check.passed for check in result.get_asset_check_evaluations())
    return RunOutcome(result.run_id, len(ids), counts, check_passed, result.success)


def annotate_once(
    instance: dg.DagsterInstance, definitions: dg.Definitions, invoice_ids: Sequence[str] | None = None
) -> list[RunOutcome]:
    """Evaluate `draft_invoice_sensor` once and execute the runs it requests here, tagged with the
    sensor's name and run key as the daemon would tag them (a run key used before is not run again);
    or, given `invoice_ids`, run the job for exactly those invoices (they must have a row). The pass
    keeps its own cursor in the instance: the daemon's cursor belongs to the running code location."""
    from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

    op = ASSET_KEY.to_python_identifier()
    if invoice_ids is not None:
        config = {"ops": {op: {"config": {"invoice_ids": list(invoice_ids)}}}}
        return [execute_annotation(instance, definitions, config, {"aisyst/manual": "true"})]
    sensor_name = draft_invoice_sensor.name
    tick = evaluate_sensor_once(instance, definitions, sensor_name, CLI_CURSOR_KEY)
    outcomes = []
    for request in tick.run_requests or []:
        tags = {**request.tags, RUN_KEY_TAG: str(request.run_key), SENSOR_NAME_TAG: sensor_name}
        earlier = instance.get_runs(
            filters=dg.RunsFilter(tags={RUN_KEY_TAG: str(request.run_key), SENSOR_NAME_TAG: sensor_name}), limit=1
        )
        ids = request.run_config["ops"][op]["config"]["invoice_ids"]
        if earlier:
            outcomes.append(RunOutcome(earlier[0].run_id, len(ids), {}, None, True, skipped_reason="run key used before"))
            continue
        outcomes.append(execute_annotation(instance, definitions, request.run_config, tags))
    # Only now: a run that could not be started leaves the cursor where the next pass lists its invoices
    # again (their rows stay queued and are requested again once stale).
    store_sensor_cursor(instance, CLI_CURSOR_KEY, tick)
    return outcomes


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

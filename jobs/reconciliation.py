"""The nightly reconciliation: a job over the `meter_reconciliation` asset (and its drift check) and
its schedule, 02:00 UTC by default (AISYST_RECONCILIATION_CRON).

The tick's own scheduled time is passed as `as_of`, so a run that starts late (daemon down, queue)
still reconciles exactly the windows of its tick, and a rerun of that run compares the same
windows again. Repair, settle lag and tolerance come from Settings (AISYST_RECONCILIATION_*); repair
is off unless AISYST_RECONCILIATION_REPAIR=true.
"""

from datetime import datetime, timezone
from typing import Any

import dagster as dg

from aisyst_pipelines.assets.reconciliation import ASSET_KEY
from aisyst_pipelines.assets.reconciliation import defs as asset_defs
from aisyst_pipelines.settings import Settings

JOB_NAME = "meter_reconciliation_job"
SCHEDULE_NAME = "nightly_meter_reconciliation"
OP_NAME = ASSET_KEY.to_python_identifier()

reconciliation_job = dg.define_asset_job(
    JOB_NAME,
    selection=dg.AssetSelection.assets(ASSET_KEY),
    description="Reconcile CDR minutes with Stripe's meter event summaries for every customer-period in scope "
    "(current, or closed within 35 days); repair under-metered days when the run config says so.",
)


def run_config(settings: Settings, as_of: datetime | None = None) -> dict[str, Any]:
    """The job's run config from Settings, reconciling at `as_of` (None = when the run starts)."""
    config: dict[str, Any] = {
        "repair": settings.reconciliation_repair,
        "settle_lag_minutes": settings.reconciliation_settle_lag_minutes,
        "tolerance_minutes": settings.reconciliation_tolerance_minutes,
    }
    if as_of is not None:
        config["as_of"] = as_of.astimezone(timezone.utc).isoformat()
    return {"ops": {OP_NAME: {"config": config}}}


def nightly_schedule(settings: Settings) -> dg.ScheduleDefinition:
    @dg.schedule(
        name=SCHEDULE_NAME,
        cron_schedule=settings.reconciliation_cron,
        execution_timezone="UTC",
        job=reconciliation_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Reconcile with Stripe's meter at {settings.reconciliation_cron} (UTC)"
        + (", repairing under-metered days" if settings.reconciliation_repair else ", report only"),
    )
    def nightly_meter_reconciliation(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        as_of = context.scheduled_execution_time or datetime.now(timezone.utc)
        return dg.RunRequest(run_config=run_config(settings, as_of), tags={"aisyst/as_of": as_of.isoformat()})

    return nightly_meter_reconciliation


def build_defs(settings: Settings) -> dg.Definitions:
    """The asset and its check, the job and the schedule (the cron comes from Settings)."""
    return dg.Definitions.merge(asset_defs, dg.Definitions(jobs=[reconciliation_job], schedules=[nightly_schedule(settings)]))


def reconcile_once(
    instance: dg.DagsterInstance, definitions: dg.Definitions, settings: Settings, *, repair: bool | None = None,
    as_of: datetime | None = None,
) -> dg.ExecuteInProcessResult:
    """`aisyst reconcile`: one run of the job in `instance` (runs show in `dagster dev` afterwards),
    with Settings' configuration unless `repair` / `as_of` say otherwise."""
    config = run_config(settings, as_of)
    if repair is not None:
        config["ops"][OP_NAME]["config"]["repair"] = repair
    job = definitions.resolve_job_def(JOB_NAME)
    return job.execute_in_process(run_config=config, instance=instance, raise_on_error=False)

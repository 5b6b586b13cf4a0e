"""The nightly reconciliation: a job over the `meter_reconciliation` asset (and its drift check) and
its schedule, 02:00 UTC by default (definitions.py builds it with AISYST_RECONCILIATION_CRON).

The tick's own scheduled time is passed as `as_of`, so a run that starts late (daemon down, queue)
still reconciles exactly the windows of its tick, and a rerun of that run compares the same
windows again. Repair, settle lag and tolerance come from the `reconciliation` resource
(AISYST_RECONCILIATION_*); repair is off unless AISYST_RECONCILIATION_REPAIR=true.
"""

from datetime import datetime, timezone
from typing import Any

import dagster as dg

from aisyst_pipelines.assets.reconciliation import ASSET_KEY
from aisyst_pipelines.settings import Settings
from resources.reconciliation import ReconciliationConfig

JOB_NAME = "meter_reconciliation_job"
SCHEDULE_NAME = "nightly_meter_reconciliation"
OP_NAME = ASSET_KEY.to_python_identifier()

reconciliation_job = dg.define_asset_job(
    JOB_NAME,
    selection=dg.AssetSelection.assets(ASSET_KEY),
    description="Reconcile CDR minutes with Stripe's meter event summaries for every customer-period in scope "
    "(current, or closed within 35 days); repair under-metered days when the `reconciliation` resource says so.",
)


def run_config(as_of: datetime | None = None) -> dict[str, Any]:
    """The job's run config, reconciling at `as_of` (None = when the run starts)."""
    config = {} if as_of is None else {"as_of": as_of.astimezone(timezone.utc).isoformat()}
    return {"ops": {OP_NAME: {"config": config}}}


def nightly_schedule(cron: str) -> dg.ScheduleDefinition:
    """The schedule at `cron` (UTC), requesting a run at each tick's time."""

    @dg.schedule(
        name=SCHEDULE_NAME,
        cron_schedule=cron,
        execution_timezone="UTC",
        job=reconciliation_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Reconcile with Stripe's meter at {cron} (UTC); repair, settle lag and tolerance: the "
        "`reconciliation` resource",
    )
    def nightly_meter_reconciliation(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        as_of = context.scheduled_execution_time or datetime.now(timezone.utc)
        return dg.RunRequest(run_config=run_config(as_of), tags={"aisyst/as_of": as_of.isoformat()})

    return nightly_meter_reconciliation


def one_off_run_config(settings: Settings, *, repair: bool | None = None, as_of: datetime | None = None) -> dict[str, Any]:
    """The run config of a reconciliation run submitted by hand (`aisyst reconcile`, the demo): at `as_of`,
    with Settings' configuration unless `repair` says otherwise."""
    config = run_config(as_of)
    if repair is not None:
        # A run's config for a resource replaces all of it (unset fields fall back to the class
        # defaults, not to the bound values), so the whole of it goes in.
        resource = ReconciliationConfig.from_settings(settings)
        config["resources"] = {"reconciliation": {"config": {
            "repair": repair, "settle_lag_minutes": resource.settle_lag_minutes, "tolerance_minutes": resource.tolerance_minutes}}}
    return config

"""The nightly reconciliation: a daily-partitioned job over the `meter_reconciliation` asset (and its
drift check) and the schedule built from its partitions, 02:00 UTC by default (definitions.py builds
it with the minute and hour of AISYST_RECONCILIATION_CRON).

Each tick requests the partition of the day that just ended (the 02:00 tick of 15 March reconciles
14 March); the partition's run reconciles as of the end of its day plus the settle lag
(assets/reconciliation.py), so a run that starts late (daemon down, queue) or a backfill days later
still compares exactly the windows of its day, and a rerun compares the same windows again. A night
without a run is a missing partition: ops backfill it from the UI (*Assets → meter_reconciliation →
Materialize → the missing days*). Repair, settle lag and tolerance come from the `reconciliation`
resource (AISYST_RECONCILIATION_*); repair is off unless AISYST_RECONCILIATION_REPAIR=true.
"""

from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg

from aisyst_pipelines.assets.reconciliation import ASSET_KEY, partition_for_as_of
from aisyst_pipelines.settings import Settings
from resources.reconciliation import ReconciliationConfig

JOB_NAME = "meter_reconciliation_job"
SCHEDULE_NAME = "nightly_meter_reconciliation"
OP_NAME = ASSET_KEY.to_python_identifier()
# A failed run is retried (run_retries in the instance: deploy/dagster.yaml, deployment.LOCAL_INSTANCE_CONFIG): a
# rerun compares the same windows and the corrections ledger never sends a correction twice.
RETRY_TAGS = {"dagster/max_retries": "2"}

reconciliation_job = dg.define_asset_job(
    JOB_NAME,
    selection=dg.AssetSelection.assets(ASSET_KEY),
    description="Reconcile CDR minutes with Stripe's meter event summaries for every customer-period in scope "
    "(current, or closed within 35 days) as of the end of the partition's UTC day plus the settle lag; repair "
    "under-metered days when the `reconciliation` resource says so.",
    tags=RETRY_TAGS,
)


def run_config(as_of: datetime | None = None) -> dict[str, Any]:
    """The job's run config: reconciling at `as_of`, or (None) as the partition says."""
    config = {} if as_of is None else {"as_of": as_of.astimezone(timezone.utc).isoformat()}
    return {"ops": {OP_NAME: {"config": config}}}


def partition_key(as_of: datetime, settle_lag_minutes: int) -> str:
    """The partition a reconciliation at `as_of` covers (the last UTC day settled by then): the
    partition to run an `as_of` reconciliation under (`aisyst reconcile --as-of`, the demo)."""
    return partition_for_as_of(as_of, timedelta(minutes=settle_lag_minutes))


def nightly_schedule(cron: str):  # noqa: ANN201 - Dagster's unresolved partitioned schedule (not exported)
    """The partitions' schedule at the minute and hour of `cron` (UTC, "M H * * *"); the code location
    resolves it against the job's assets."""
    minute, hour = daily_cron_time(cron)
    return dg.build_schedule_from_partitioned_job(
        reconciliation_job,
        name=SCHEDULE_NAME,
        minute_of_hour=minute,
        hour_of_day=hour,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Reconcile the UTC day that just ended with Stripe's meter, at {hour:02d}:{minute:02d} UTC; "
        "repair, settle lag and tolerance: the `reconciliation` resource",
    )


def daily_cron_time(cron: str) -> tuple[int, int]:
    """(minute, hour) of a daily cron "M H * * *"; anything else fails the code location's load, because
    a daily partition is reconciled once a day."""
    fields = cron.split()
    if len(fields) != 5 or fields[2:] != ["*", "*", "*"] or not (fields[0].isdigit() and fields[1].isdigit()):
        raise ValueError(f"AISYST_RECONCILIATION_CRON={cron!r}: a daily time \"M H * * *\" (UTC) is needed, e.g. \"0 2 * * *\"")
    minute, hour = int(fields[0]), int(fields[1])
    if minute > 59 or hour > 23:
        raise ValueError(f"AISYST_RECONCILIATION_CRON={cron!r}: minute 0-59 and hour 0-23")
    return minute, hour


def one_off_run_config(settings: Settings, *, repair: bool | None = None, as_of: datetime | None = None) -> dict[str, Any]:
    """The run config of a reconciliation run submitted by hand (`aisyst reconcile`, the demo): at `as_of`,
    with Settings' configuration unless `repair` says otherwise. Submit it under the partition
    `partition_key(as_of, settle_lag_minutes)` (tag `dagster/partition`): the job is partitioned."""
    config = run_config(as_of)
    if repair is not None:
        # A run's config for a resource replaces all of it (unset fields fall back to the class
        # defaults, not to the bound values), so the whole of it goes in.
        resource = ReconciliationConfig.from_settings(settings)
        config["resources"] = {"reconciliation": {"config": {
            "repair": repair, "settle_lag_minutes": resource.settle_lag_minutes, "tolerance_minutes": resource.tolerance_minutes}}}
    return config

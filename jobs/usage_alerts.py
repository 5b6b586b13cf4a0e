"""The daily usage-alerts job, daily-partitioned (UTC), and its 06:00 UTC schedule built from the
partitions (DESIGN.md §2.5).

The job first refreshes what the alerts read — the Stripe mirror (customers: e-mail addresses;
subscriptions: current periods and tiers, so a renewal or a tier change since yesterday counts) and
`usage_by_period` (the minutes of the current periods, stripe-sync's computation) and
`stripe_invoice_previews` (each customer's next invoice, for the dashboard) — then runs
`usage_alerts` for the partition's day, as of the end of that UTC day (assets/usage_alerts.py). The
06:00 tick requests the day that ended six hours before; a day without a run is a missing partition
that ops backfill from the UI, and the recorded alert state makes any further run of a day send
nothing new. The thresholds come from the `usage_alerts_config` resource.
"""

from datetime import datetime, timezone
from typing import Any

import dagster as dg

from aisyst_pipelines.assets.usage_alerts import ASSET_KEY, partition_for_as_of

JOB_NAME = "usage_alerts_job"
SCHEDULE_NAME = "usage_alerts_daily"
HOUR_UTC = 6
OP_NAME = ASSET_KEY.to_python_identifier()

usage_alerts_job = dg.define_asset_job(
    JOB_NAME,
    # The Stripe sync's assets by key: this feature does not import another feature's modules.
    selection=dg.AssetSelection.assets(
        "stripe_customers", "stripe_subscriptions", "usage_by_period", "stripe_invoice_previews", ASSET_KEY
    ),
    description="Refresh the Stripe mirror and the current periods' usage, then send the 80 %/100 % alerts "
    "as of the end of the partition's UTC day.",
    # A failed run is retried (run_retries in the instance): the alert ledger (claimed, notified)
    # never sends an alert twice, the sync steps are upserts.
    tags={"dagster/max_retries": "2"},
)

usage_alerts_schedule = dg.build_schedule_from_partitioned_job(
    usage_alerts_job,
    name=SCHEDULE_NAME,
    hour_of_day=HOUR_UTC,
    minute_of_hour=0,
    default_status=dg.DefaultScheduleStatus.RUNNING,
    description="Daily usage alerts at 06:00 UTC for the UTC day that just ended (thresholds: resource usage_alerts_config).",
)


def run_config(as_of: datetime | None = None) -> dict[str, Any]:
    """The job's run config: alerting at `as_of`, or (None) at the end of the partition's day."""
    config = {} if as_of is None else {"as_of": as_of.astimezone(timezone.utc).isoformat()}
    return {"ops": {OP_NAME: {"config": config}}}


def partition_key(as_of: datetime) -> str:
    """The partition to run an `as_of` alert pass under (the demo): the UTC day that ended last by then."""
    return partition_for_as_of(as_of)

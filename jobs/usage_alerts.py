"""The daily usage-alerts job and its 06:00 schedule (DESIGN.md §2.5).

The job first refreshes what the alerts read — the Stripe mirror (customers: e-mail addresses;
subscriptions: current periods and tiers, so a renewal or a tier change since yesterday counts) and
`usage_by_period` (the minutes of the current periods, stripe-sync's computation) and
`stripe_invoice_previews` (each customer's next invoice, for the dashboard) — then runs
`usage_alerts`. The schedule fires at 06:00 in AISYST_ALERTS_TIMEZONE (default UTC; definitions.py
builds it with that zone); the thresholds come from the `usage_alerts_config` resource. Its run key
is the local date, so a day gets one run even if the daemon ticks twice, and the recorded alert
state makes any further run send nothing new.
"""

from datetime import datetime
from zoneinfo import ZoneInfo

import dagster as dg

from aisyst_pipelines.assets.usage_alerts import ASSET_KEY

JOB_NAME = "usage_alerts_job"
SCHEDULE_NAME = "usage_alerts_daily"
CRON = "0 6 * * *"

usage_alerts_job = dg.define_asset_job(
    JOB_NAME,
    # The Stripe sync's assets by key: this feature does not import another feature's modules.
    selection=dg.AssetSelection.assets(
        "stripe_customers", "stripe_subscriptions", "usage_by_period", "stripe_invoice_previews", ASSET_KEY
    ),
    description="Refresh the Stripe mirror and the current periods' usage, then send the 80 %/100 % alerts.",
)


def usage_alerts_schedule(timezone: str) -> dg.ScheduleDefinition:
    """06:00 every day in `timezone` (an IANA name; a wrong one fails the code location's load)."""
    zone = ZoneInfo(timezone)

    @dg.schedule(
        name=SCHEDULE_NAME,
        cron_schedule=CRON,
        execution_timezone=timezone,
        target=usage_alerts_job,
        default_status=dg.DefaultScheduleStatus.RUNNING,
        description=f"Daily usage alerts at 06:00 {timezone} (thresholds: resource usage_alerts_config).",
    )
    def usage_alerts_daily(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        tick = context.scheduled_execution_time or datetime.now(zone)
        day = tick.astimezone(zone).date().isoformat()
        return dg.RunRequest(run_key=f"usage-alerts-{day}", tags={"aisyst/alerts_day": day})

    return usage_alerts_daily

"""The code location: one Definitions object with every asset, check, job, schedule, sensor and resource.

Everything is listed here by name, feature by feature. The settings are read once, when the code
location loads (`Settings.from_env`), and reach the assets, sensors and schedules only through the
resources built below; loading writes nothing.
"""

from __future__ import annotations

import os
from datetime import timedelta

import dagster as dg

from aisyst_pipelines.assets.ingestion import cdr_reject_share, load_cdr_file_assets
from aisyst_pipelines.assets.invoice_annotation import invoice_annotations, invoice_audits, invoice_branding_settings
from aisyst_pipelines.assets.reconciliation import meter_reconciliation
from aisyst_pipelines.assets.stripe_events import STRIPE_INVOICES
from aisyst_pipelines.assets.stripe_sync import stripe_customers, stripe_invoice_previews, stripe_subscriptions, usage_by_period
from aisyst_pipelines.assets.usage_alerts import usage_alerts, usage_alerts_delivered
from aisyst_pipelines.settings import Settings
from jobs.ingestion import build_cdr_files_sensor, cdr_ingest_job
from jobs.invoice_annotation import (
    annotate_draft_invoices,
    build_draft_invoice_sensor,
    invoice_audit_daily,
    invoice_audit_job,
    invoice_branding_daily,
    invoice_branding_job,
)
from jobs.ops import (
    cdr_freshness_checks,
    cdr_freshness_sensor,
    ops_check_failure_alert,
    ops_run_failure_alert,
    ops_tick_failure_alert,
)
from jobs.reconciliation import nightly_schedule, reconciliation_job
from jobs.stripe_events import build_stripe_events_sensor
from jobs.usage_alerts import usage_alerts_job, usage_alerts_schedule
from resources import (
    CatalogResource,
    NotifierResource,
    PiiKeyResource,
    StripeResource,
    UsageAlertsConfig,
    WarehouseResource,
)
from resources.ingestion import IngestionConfig
from resources.reconciliation import ReconciliationConfig


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    return {
        # AISYST_WAREHOUSE_URL via dg.EnvVar (it carries the password), or the home's embedded SQLite
        "warehouse": WarehouseResource.from_settings(settings),
        "pii_key": pii_key_resource(settings),
        # STRIPE_SECRET_KEY via dg.EnvVar, or the local emulator when it is unset (see from_settings)
        "stripe": StripeResource.from_settings(settings),
        # AISYST_SMTP_URL via dg.EnvVar (it carries the password), or .eml files in the outbox
        "notifier": NotifierResource.from_settings(settings),
        # tiers and brand files (launchpad-visible configuration instead of environment reads)
        "catalog": CatalogResource.from_settings(settings),
        # landing directory, Asterisk time zone and the CDR limits (AISYST_LANDING_DIR, AISYST_CDR_*)
        "ingestion": IngestionConfig.from_settings(settings),
        # repair, settle lag and tolerance of the meter reconciliation (AISYST_RECONCILIATION_*)
        "reconciliation": ReconciliationConfig.from_settings(settings),
        # thresholds and silence policy of the usage alerts (AISYST_ALERT_THRESHOLDS, …)
        "usage_alerts_config": UsageAlertsConfig.from_settings(settings),
    }


def pii_key_resource(settings: Settings) -> PiiKeyResource:
    """AISYST_PII_KEY through dg.EnvVar when set (production); else the home's key file, but only for
    the embedded warehouse it lives beside. Resolved when a run uses it: loading the definitions
    writes nothing (resources/pii.py)."""
    if os.environ.get("AISYST_PII_KEY"):
        return PiiKeyResource(key=dg.EnvVar("AISYST_PII_KEY"))
    if settings.uses_embedded_warehouse:
        return PiiKeyResource(local_key_file=str(settings.pii_key_file()))
    return PiiKeyResource()  # its use fails with "set AISYST_PII_KEY"


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    freshness_checks = cdr_freshness_checks(timedelta(hours=settings.cdr_freshness_hours))
    stripe_interval = min(settings.sensor_interval_seconds, settings.stripe_sensor_interval_seconds)
    return dg.Definitions(
        assets=[
            load_cdr_file_assets,  # call_records and usage_daily, one transaction per landing file
            stripe_customers, stripe_subscriptions, usage_by_period, stripe_invoice_previews,
            meter_reconciliation,  # with its check meter_drift_within_tolerance
            invoice_annotations, invoice_branding_settings,  # with no_missed_or_failed_invoices
            invoice_audits,  # with final_invoices_agree_with_calls
            usage_alerts,
            STRIPE_INVOICES,  # kept current by stripe_events_sensor
        ],
        asset_checks=[cdr_reject_share, *freshness_checks, usage_alerts_delivered],
        jobs=[
            cdr_ingest_job, reconciliation_job, annotate_draft_invoices, invoice_branding_job, invoice_audit_job,
            usage_alerts_job,
        ],
        sensors=[
            # each ticks at most every AISYST_SENSOR_INTERVAL_SECONDS (30 s by default); the two that
            # follow Stripe at most every AISYST_STRIPE_SENSOR_INTERVAL_SECONDS (5 s) if that is shorter
            build_cdr_files_sensor(settings.sensor_interval_seconds),
            build_draft_invoice_sensor(stripe_interval),
            build_stripe_events_sensor(stripe_interval),
            cdr_freshness_sensor(freshness_checks),  # evaluates the CDR freshness check when it may be overdue
            ops_run_failure_alert, ops_check_failure_alert, ops_tick_failure_alert,
        ],
        schedules=[
            nightly_schedule(settings.reconciliation_cron),  # yesterday's partition of meter_reconciliation
            invoice_branding_daily,
            invoice_audit_daily,
            usage_alerts_schedule,  # yesterday's partition of usage_alerts, 06:00 UTC
        ],
        resources=build_resources(settings),
        # Every job is one or two steps over one warehouse transaction: steps run in the run's own
        # process (the multiprocess default would start a Python process per step, and several
        # processes would write one SQLite event log at once).
        executor=dg.in_process_executor,
    )

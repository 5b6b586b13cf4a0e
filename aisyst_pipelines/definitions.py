"""The code location: one Definitions object with every asset, check, job, schedule, sensor and resource."""

from __future__ import annotations

import os

import dagster as dg

import jobs.ingest
import jobs.ops
import jobs.reconciliation
import jobs.stripe_events
from aisyst_pipelines.assets import cdr as cdr_assets
from aisyst_pipelines.assets import stripe_sync
from aisyst_pipelines.assets.invoice_annotation import invoice_annotations, invoice_branding_settings
from aisyst_pipelines.assets import stripe_events as stripe_events_assets
from aisyst_pipelines.assets.reconciliation import meter_reconciliation
from aisyst_pipelines.assets.usage_alerts import usage_alerts, usage_alerts_delivered
from aisyst_pipelines.settings import Settings
from jobs.invoice_annotation import annotate_draft_invoices, draft_invoice_sensor, invoice_branding_daily, invoice_branding_job
from jobs.usage_alerts import usage_alerts_job, usage_alerts_schedule
from resources import (
    CatalogResource,
    NotifierResource,
    PiiKeyResource,
    StripeResource,
    UsageAlertsConfig,
    WarehouseResource,
)
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
    return dg.Definitions.merge(
        cdr_assets.defs, jobs.ingest.defs,
        dg.Definitions(assets=[stripe_sync.stripe_customers, stripe_sync.stripe_subscriptions, stripe_sync.usage_by_period]),
        dg.Definitions(
            assets=[invoice_annotations, invoice_branding_settings],
            jobs=[annotate_draft_invoices, invoice_branding_job],
            sensors=[draft_invoice_sensor],
            schedules=[invoice_branding_daily],
        ),
        dg.Definitions(assets=[stripe_events_assets.STRIPE_INVOICES], sensors=[jobs.stripe_events.stripe_events_sensor]),
        dg.Definitions(
            assets=[meter_reconciliation],  # with its check meter_drift_within_tolerance
            jobs=[jobs.reconciliation.reconciliation_job],
            schedules=[jobs.reconciliation.nightly_schedule(settings.reconciliation_cron)],
        ),
        dg.Definitions(
            assets=[usage_alerts],
            asset_checks=[usage_alerts_delivered],
            jobs=[usage_alerts_job],
            schedules=[usage_alerts_schedule(settings.alerts_timezone)],
        ),
        jobs.ops.build_defs(settings),
        dg.Definitions(resources=build_resources(settings)),
    )

"""The code location: one Definitions object with every asset, check, job, schedule, sensor and resource."""

from __future__ import annotations

import os

import dagster as dg

import jobs.annotate_invoices
import jobs.ops
import jobs.reconciliation
import jobs.stripe_events
import jobs.usage_alerts
from aisyst_pipelines.assets import invoice_annotation, stripe_sync
from aisyst_pipelines.assets import stripe_events as stripe_events_assets
from aisyst_pipelines.assets.ingestion import cdr_reject_share, load_cdr_file_assets
from aisyst_pipelines.settings import Settings
from jobs.ingestion import cdr_files_sensor, cdr_ingest_job
from resources import CatalogResource, NotifierResource, PiiKeyResource, StripeResource, WarehouseResource
from resources.ingestion import IngestionConfig


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    warehouse_url = dg.EnvVar("AISYST_WAREHOUSE_URL") if os.environ.get("AISYST_WAREHOUSE_URL") else settings.warehouse_url
    return {
        "warehouse": WarehouseResource(url=warehouse_url),
        "pii_key": pii_key_resource(settings),
        # STRIPE_SECRET_KEY via dg.EnvVar, or the local emulator when it is unset (see from_settings)
        "stripe": StripeResource.from_settings(settings),
        # AISYST_SMTP_URL via dg.EnvVar (it carries the password), or .eml files in the outbox
        "notifier": NotifierResource.from_settings(settings),
        # tiers and brand files (launchpad-visible configuration instead of environment reads)
        "catalog": CatalogResource.from_settings(settings),
        # landing directory, Asterisk time zone and the CDR limits (AISYST_LANDING_DIR, AISYST_CDR_*)
        "ingestion": IngestionConfig.from_settings(settings),
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
        dg.Definitions(
            assets=[load_cdr_file_assets],  # call_records and usage_daily
            asset_checks=[cdr_reject_share],
            jobs=[cdr_ingest_job],
            sensors=[cdr_files_sensor],
        ),
        stripe_sync.defs,
        invoice_annotation.defs, jobs.annotate_invoices.defs,
        stripe_events_assets.defs, jobs.stripe_events.defs,
        jobs.reconciliation.build_defs(settings),
        jobs.usage_alerts.build_defs(settings),
        jobs.ops.build_defs(settings),
        dg.Definitions(resources=build_resources(settings)),
    )

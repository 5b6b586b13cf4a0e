"""The annotation tests' world: the shared StripeWorld (tests/stripe_world.py) and what only they need.

Customers on one test clock sign up at T0 (2026-03-01 00:00 UTC) to the tiers of the tiers file; the
Stripe sync mirrors them into the warehouse; calls are inserted into call_records; advancing the clock
past 2026-04-01 makes the emulator create the renewal drafts (invoice period = March). The services
are called directly (`plan`, `annotate`); the sensor and the job run through Dagster
(`build_sensor_context`, `execute_in_process`) with the real resources.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any

import dagster as dg
import pytest
from sqlalchemy import insert
from stripe_world import StripeWorld, Subscriber

from aisyst_pipelines.assets import stripe_sync
from aisyst_pipelines.assets.invoice_annotation import invoice_annotations, invoice_branding_settings
from aisyst_pipelines.billing.tiers import load_tier_catalog
from aisyst_pipelines.services.invoice_annotation import AnnotationRun, QueueWork, annotate_batch, brand_profiles
from aisyst_pipelines.services.invoice_annotation_planning import DEFAULT_POLICY, ScanCursor, SensorPolicy, TickPlan, scan_invoices
from aisyst_pipelines.billing.client_groups import BrandProfiles, load_client_groups
from aisyst_pipelines.templates import load_brand
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.schema import call_records
from jobs.invoice_annotation import (
    annotate_draft_invoices,
    draft_invoice_sensor,
    evaluate,
    invoice_branding_daily,
    invoice_branding_job,
)
from resources import CatalogResource, WarehouseResource
from resources.stripe import StripeResource

UTC = timezone.utc
T0 = datetime(2026, 3, 1, tzinfo=UTC)
RENEWAL = datetime(2026, 4, 1, tzinfo=UTC)  # end of the first period = the renewal drafts' period_end
_call_ids = itertools.count(1)


@dataclass(kw_only=True)
class AnnotationWorld(StripeWorld):
    warehouse: Warehouse
    warehouse_url: str
    instance: dg.DagsterInstance

    def calls(
        self, subscriber: Subscriber, minutes: Sequence[int], ended_at: datetime | None = None, answered: bool = True,
        ingested_at: datetime | None = None,
    ) -> None:
        """One answered call per entry, each `minutes` long (billable minutes = that number), ingested
        when it ended unless `ingested_at` says later (a late CDR)."""
        ended = ended_at or T0 + timedelta(days=10)
        rows = []
        for length in minutes:
            rows.append(
                dict(
                    call_id=f"call-{next(_call_ids)}",
                    account_code=subscriber.account_code,
                    customer_id=subscriber.customer_id,
                    direction="inbound",
                    disposition="completed" if answered else "no_answer",
                    started_at=ended - timedelta(minutes=length),
                    answered_at=ended - timedelta(minutes=length) if answered else None,
                    ended_at=ended,
                    billable_seconds=length * 60 if answered else 0,
                    billable_minutes=length if answered else 0,
                    content_hash="h",
                    source_file="calls.csv",
                    source_sha256="0" * 64,
                    source_line=1,
                    ingested_at=ingested_at or ended,
                )
            )
        with self.warehouse.begin() as connection:
            connection.execute(insert(call_records), rows)

    def renew(self) -> None:
        """Past the renewal: every subscription gets its draft renewal invoice (period = March)."""
        self.advance(RENEWAL + timedelta(minutes=1))

    def renewal_invoice(self, subscriber: Subscriber) -> Any:
        invoices = self.client.v1.invoices.list({"customer": subscriber.customer_id, "limit": 100}).data
        return next(i for i in invoices if i.billing_reason == "subscription_cycle")

    # --- the services ------------------------------------------------------------------------------------

    def plan(self, cursor: ScanCursor | None = None, policy: SensorPolicy = DEFAULT_POLICY, now: datetime | None = None) -> TickPlan:
        """One tick's planning: list, queue new renewals, pick rows to retry."""
        rate = self.stripe.effective_requests_per_second
        return scan_invoices(self.stripe.invoices, self.warehouse, cursor or ScanCursor(), policy, now or datetime.now(UTC), rate)

    def profiles(self) -> BrandProfiles:
        """The brand profiles the assets use: packaged brand and client groups, tax rates found in Stripe."""
        return brand_profiles(load_brand(), load_client_groups(), load_tier_catalog(), self.stripe.catalog)

    def annotate(self, invoice_ids: Sequence[str], finalize: bool = False, queue: QueueWork | None = None) -> AnnotationRun:
        """One batch, as a run of the job with its default concurrency would work it."""
        return annotate_batch(
            self.stripe.invoices, self.warehouse, invoice_ids, run_id="test-run", profiles=self.profiles,
            concurrency=64, requests_per_second=self.stripe.effective_requests_per_second, finalize=finalize, queue=queue,
        )

    # --- Dagster ---------------------------------------------------------------------------------------

    @property
    def resources(self) -> dict[str, Any]:
        return {"stripe": self.stripe, "warehouse": WarehouseResource(url=self.warehouse_url), "catalog": CatalogResource()}

    def definitions(self) -> dg.Definitions:
        return dg.Definitions.merge(
            dg.Definitions(assets=[stripe_sync.stripe_customers, stripe_sync.stripe_subscriptions, stripe_sync.usage_by_period]),
            dg.Definitions(
                assets=[invoice_annotations, invoice_branding_settings],
                jobs=[annotate_draft_invoices, invoice_branding_job],
                sensors=[draft_invoice_sensor],
                schedules=[invoice_branding_daily],
                resources=self.resources,
            ),
        )

    def tick(self, cursor: str | None = None, policy: SensorPolicy | None = None) -> dg.SensorResult:
        context = dg.build_sensor_context(cursor=cursor, resources=self.resources, instance=self.instance)
        if policy is None:
            return draft_invoice_sensor(context)
        return evaluate(context, self.stripe, self.warehouse, policy)

    def run(self, run_config: dict[str, Any], raise_on_error: bool = False) -> dg.ExecuteInProcessResult:
        job = self.definitions().resolve_job_def(annotate_draft_invoices.name)
        return job.execute_in_process(run_config=run_config, instance=self.instance, raise_on_error=raise_on_error)

    def annotate_all(self) -> list[dg.ExecuteInProcessResult]:
        """A sensor tick and every run it requests."""
        result = self.tick()
        return [self.run(request.run_config) for request in result.run_requests or []]

    def our_lines(self, invoice_id: str) -> list[tuple[str, str, int]]:
        return self.stripe.invoices.annotation_lines(invoice_id)


@pytest.fixture
def world(stripe_emulator: Any, stripe_resource: StripeResource, warehouse: Warehouse, warehouse_url: str) -> Iterator[AnnotationWorld]:
    with dg.instance_for_test() as instance:
        yield AnnotationWorld.build(
            stripe_emulator, stripe_resource, T0, warehouse=warehouse, warehouse_url=warehouse_url, instance=instance
        )

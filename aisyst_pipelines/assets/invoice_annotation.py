"""The invoice annotation assets (DESIGN.md §2.4): adapters of services/invoice_annotation.py.

`invoice_annotations` works the batch of invoice ids requested by `draft_invoice_sensor`
(jobs/invoice_annotation.py) with `annotate_batch`, and turns the result into metadata and the asset
check `no_missed_or_failed_invoices` — the ops alert for invoices finalized before we got there
(missed) or that could not be annotated (failed). `invoice_branding` writes the brand fields to the
subscriptions' invoice settings with `apply_invoice_branding`. `invoice_audits` audits the final
renewal invoices (`audit_final_invoices`) with its check `final_invoices_agree_with_calls`. The brand
comes from the `catalog` resource; Stripe and the warehouse from theirs.
"""

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone

import dagster as dg
from pydantic import Field

from aisyst_pipelines.assets.common import OWNERS, markdown_table, row_count_metadata, runbook_link, table_metadata
from aisyst_pipelines.billing.client_groups import BrandProfiles
from aisyst_pipelines.billing.invoice_lines import ANNOTATION_VERSION
from aisyst_pipelines.services.invoice_annotation import (
    AnnotationRun,
    QueueWork,
    UnknownInvoices,
    annotate_batch,
    apply_invoice_branding,
    brand_profiles,
)
from aisyst_pipelines.services.invoice_audit import LOOK_BACK, audit_final_invoices
from aisyst_pipelines.warehouse.invoice_annotation_store import AnnotationStatus
from resources import CatalogResource, StripeResource, WarehouseResource

ASSET_KEY = dg.AssetKey("invoice_annotations")
BRANDING_ASSET_KEY = dg.AssetKey("invoice_branding")
SUBSCRIPTIONS_ASSET_KEY = dg.AssetKey("stripe_subscriptions")  # the Stripe sync's mirror
CHECK_NAME = "no_missed_or_failed_invoices"
RUNBOOK_SECTION = "annotate_draft_invoices"
AUDIT_ASSET_KEY = dg.AssetKey("invoice_audits")
AUDIT_CHECK_NAME = "final_invoices_agree_with_calls"


class AuditConfig(dg.Config):
    look_back_days: int = Field(
        default=LOOK_BACK.days,
        description="Audit the renewal invoices finalized within this many days (late CDRs beyond it are a person's correction).",
    )


class AnnotateConfig(dg.Config):
    invoice_ids: list[str] = Field(description="Invoices to annotate (ids requested by draft_invoice_sensor).")
    concurrency: int = Field(
        default=64,
        description="Invoices worked at once, at most; the run uses no more than the Stripe rate limit × 0.6 s "
        "(60 at 100 requests/s). The StripeResource rate limiter, not this number, bounds the request rate.",
    )
    finalize_after_annotating: bool = Field(
        default=False,
        description="Finalize each invoice right after its lines are added, instead of waiting for "
        "Stripe's automatic finalization about an hour after creation (one more write per invoice).",
    )
    take_queued_invoices: bool = Field(
        default=False,
        description="After these invoices, also annotate the other invoices queued in invoice_annotations, as "
        "draft_invoice_sensor queues them (its runs do: one run works a month-start burst).",
    )
    wait_for_queued_seconds: float = Field(
        default=0.0,
        description="With take_queued_invoices: end once no invoice was queued for this many seconds "
        "(the sensor sets it while its scan of a burst continues).",
    )


# A run that works a month-start burst has thousands of results: the run's metadata shows the
# problems and the first of the rest (invoice_annotations has every row).
RESULTS_SHOWN = 500


def _results_table(run: AnnotationRun) -> dg.MetadataValue:
    rows = ["| invoice | customer | status | minutes used | included | lines | detail |", "|---|---|---|---|---|---|---|"]
    problems = run.problems
    listed = {result.invoice_id for result in problems}
    shown = (problems + [r for r in run.results if r.invoice_id not in listed])[: max(RESULTS_SHOWN, len(problems))]
    for result in shown:
        o = result.outcome
        included = "unlimited" if o.minutes_included is None and o.tier_name else (o.minutes_included or "")
        detail = (o.detail or "").replace("|", "/")
        status = f"{o.status.value} (earlier)" if result.already_done else o.status.value
        rows.append(
            f"| {result.invoice_id} | {result.customer_id} | {status} | {'' if o.minutes_used is None else o.minutes_used} "
            f"| {included} | {o.lines_added or 0} | {detail} |"
        )
    if len(shown) < len(run.results):
        rows.append(f"\n… and {len(run.results) - len(shown):,} more: see invoice_annotations (run_id = this run).")
    return dg.MetadataValue.md("\n".join(rows))


@dg.asset(
    key=ASSET_KEY,
    group_name="invoicing",
    kinds={"stripe", "sql"},
    owners=OWNERS,
    metadata=table_metadata("invoice_annotations"),
    description="Usage lines on renewal invoices (one row per invoice in invoice_annotations).",
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_NAME,
            asset=ASSET_KEY,
            description="Fails when an invoice of this run was finalized before we could annotate it "
            "(missed) or could not be annotated (failed): ops must look at it.",
        )
    ],
)
def invoice_annotations(
    context: dg.AssetExecutionContext,
    config: AnnotateConfig,
    stripe: StripeResource,
    warehouse: WarehouseResource,
    catalog: CatalogResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    try:
        run = annotate_batch(
            stripe.invoices,
            warehouse.get(),
            config.invoice_ids,
            run_id=context.run.run_id,
            profiles=lambda: _brand_profiles(stripe, catalog),
            concurrency=config.concurrency,
            requests_per_second=stripe.effective_requests_per_second,
            finalize=config.finalize_after_annotating,
            queue=QueueWork(idle_seconds=config.wait_for_queued_seconds) if config.take_queued_invoices else None,
        )
    except UnknownInvoices as error:
        raise dg.Failure(str(error)) from None
    for result in run.problems:
        context.log.error(f"invoice {result.invoice_id}: {result.outcome.status.value} — {result.outcome.detail}")
    yield dg.MaterializeResult(metadata={**_run_metadata(run), **row_count_metadata(warehouse.get(), "invoice_annotations")})
    yield dg.AssetCheckResult(
        check_name=CHECK_NAME,
        passed=not run.problems,
        severity=dg.AssetCheckSeverity.ERROR,
        description=f"{len(run.missed)} missed, {len(run.failed)} failed of {len(run.results)} invoice(s)",
        metadata={
            "missed_invoices": dg.MetadataValue.int(len(run.missed)),
            "failed_invoices": dg.MetadataValue.int(len(run.failed)),
            "offenders": markdown_table(
                ["invoice", "customer", "status", "detail"],
                [[r.invoice_id, r.customer_id, r.outcome.status.value, r.outcome.detail] for r in run.problems],
            ),
            "runbook": runbook_link(RUNBOOK_SECTION),
        },
    )


def _run_metadata(run: AnnotationRun) -> dict[str, dg.MetadataValue]:
    counted = (AnnotationStatus.ANNOTATED, AnnotationStatus.MISSED, AnnotationStatus.FAILED, AnnotationStatus.SKIPPED)
    counts = {status.value: dg.MetadataValue.int(run.count(status)) for status in counted}
    return {
        "invoices": dg.MetadataValue.int(len(run.results)),
        **counts,
        "already_done": dg.MetadataValue.int(len(run.already_done)),
        "annotated_invoices": dg.MetadataValue.json(run.annotated[:RESULTS_SHOWN]),
        "results": _results_table(run),
        "annotation_version": dg.MetadataValue.text(ANNOTATION_VERSION),
    }


@dg.asset(
    key=BRANDING_ASSET_KEY,
    deps=[SUBSCRIPTIONS_ASSET_KEY],
    group_name="invoicing",
    kinds={"stripe", "sql"},
    owners=OWNERS,
    metadata=table_metadata("invoice_branding"),
    description="Brand fields (Client ID, Tier, memo, footer) on each subscription's invoice settings, "
    "written only when they change; one row per subscription in invoice_branding.",
)
def invoice_branding_settings(
    context: dg.AssetExecutionContext, stripe: StripeResource, warehouse: WarehouseResource, catalog: CatalogResource
) -> dg.MaterializeResult:
    result = apply_invoice_branding(stripe.invoices, warehouse.get(), _brand_profiles(stripe, catalog))
    for subscription_id, error in result.failed.items():
        context.log.error(f"subscription {subscription_id}: brand fields not written — {error}")
    if result.failed:
        # The next run writes them (nothing was recorded); a draft created meanwhile gets them itself.
        raise dg.Failure(
            f"brand fields could not be written to {len(result.failed)} subscription(s)",
            metadata={"failed": dg.MetadataValue.json(result.failed), "updated": dg.MetadataValue.int(len(result.updated))},
        )
    return dg.MaterializeResult(
        metadata={
            "updated": dg.MetadataValue.int(len(result.updated)),
            "unchanged": dg.MetadataValue.int(result.unchanged),
            "updated_subscriptions": dg.MetadataValue.json(result.updated),
            **row_count_metadata(warehouse.get(), "invoice_branding"),
        }
    )


def _brand_profiles(stripe: StripeResource, catalog: CatalogResource) -> BrandProfiles:
    return brand_profiles(catalog.brand(), catalog.client_groups(), catalog.tiers(), stripe.catalog)


@dg.asset(
    key=AUDIT_ASSET_KEY,
    deps=[ASSET_KEY],
    group_name="invoicing",
    kinds={"stripe", "sql"},
    owners=OWNERS,
    metadata=table_metadata("invoice_audits"),
    description="The audit of every final renewal invoice: its usage line's minutes against the warehouse's "
    "and Stripe's meter summary, with the cause of each difference (one row per invoice in invoice_audits).",
    check_specs=[
        dg.AssetCheckSpec(
            AUDIT_CHECK_NAME,
            asset=AUDIT_ASSET_KEY,
            description="Fails when a final renewal invoice's minutes differ from the calls' or the meter's; "
            "the metadata names each invoice and its causes (late_cdr, invoice_mismatch, meter_drift).",
        )
    ],
)
def invoice_audits(
    context: dg.AssetExecutionContext, config: AuditConfig, stripe: StripeResource, warehouse: WarehouseResource
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    run = audit_final_invoices(
        warehouse.get(), stripe.meters, now=datetime.now(timezone.utc), look_back=timedelta(days=config.look_back_days)
    )
    differing = {audit.invoice_id: ",".join(audit.causes) for audit in run.disagreements}
    for invoice_id, causes in differing.items():
        context.log.warning(f"invoice {invoice_id}: {causes}")
    yield dg.MaterializeResult(
        metadata={"audited": dg.MetadataValue.int(len(run.audits)), "disagreeing": dg.MetadataValue.int(len(differing))}
    )
    yield dg.AssetCheckResult(
        check_name=AUDIT_CHECK_NAME,
        passed=not differing,
        severity=dg.AssetCheckSeverity.ERROR,
        metadata={"causes": dg.MetadataValue.json(differing)},
    )

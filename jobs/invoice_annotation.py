"""`draft_invoice_sensor` and the `annotate_draft_invoices` job (DESIGN.md §2.4).

Every 30 s the sensor lists the invoices created since its cursor, keeps the renewal invoices
(`billing_reason=subscription_cycle`) that have no invoice_annotations row yet, writes them there as
`queued` (with the customer, subscription and period it saw, so runs get ids only) and requests one
run per batch of ids. The run key is made of the ids and the annotation version: a sensor that
somehow re-emits the same batch launches nothing twice.

The cursor is the highest `created` seen (never "now": test clocks make Stripe time differ from the
wall clock). For ten minutes after it rose, each scan re-lists a small overlap below it, because
invoices created in the same second as the highest one seen can show up after our listing; the rows
make that overlap harmless. Stripe
lists newest first, so a scan that stops early stores where it stopped (the page cursor and the
highest `created` of the scan) and the next tick continues; the cursor only moves past the scan once
it has completed. A tick stops once it has found enough new renewals to keep the runs writing until
the next tick's batch is ready (so a month-start burst starts writing after seconds), or after its
time budget: every tick stays well under Dagster's 60 s limit even when 10,000 drafts appear at once.

The listing is not limited to drafts (except on the very first scan, which starts from today's drafts
and the newest invoice's `created`):
a renewal invoice that was finalized before the sensor saw it — the sensor was stopped for an hour —
is queued too, and the job records it `missed` and alerts, rather than nobody ever noticing.

Rows that should have finished by now (queued or pending for `stale_after`, or failed) are requested
again, a few attempts at most: that is how a run that died, or a Stripe outage, heals.
"""


import hashlib
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone

import dagster as dg

from aisyst_pipelines.assets.invoice_annotation import ASSET_KEY, BRANDING_ASSET_KEY, SUBSCRIPTIONS_ASSET_KEY
from aisyst_pipelines.billing.invoice_lines import ANNOTATION_VERSION, annotation_version_of
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.invoice_annotation_store import (
    AnnotationOutcome,
    AnnotationStatus,
    RenewalInvoice,
    invoice_ids_on_record,
    invoices_to_retry,
    queue_invoices,
    record_outcome,
    touch,
)
from resources import WarehouseResource
from jobs.sensor_once import evaluate_sensor_once
from resources.stripe import ListedInvoice, StaleListCursor, StripeResource

RENEWAL = "subscription_cycle"

annotate_draft_invoices = dg.define_asset_job(
    "annotate_draft_invoices",
    selection=dg.AssetSelection.assets(ASSET_KEY),
    description="Adds the usage lines to a batch of renewal invoices (ids in the run config).",
    # One annotation run at a time is enough (each saturates the Stripe rate limit) and keeps the runs'
    # own rate limiters from adding up; deploy/dagster.yaml caps this tag at 1.
    tags={"aisyst/stripe_writer": "annotate"},
)


@dataclass(frozen=True)
class SensorPolicy:
    # Invoices per run (ids only in the run config, ~30 bytes each). Large, because a run's start and
    # finish (~1–2 s) leave the rate limit unused and annotation runs go one at a time.
    batch_size: int = 5000
    page_size: int = 100  # Stripe's maximum
    max_pages_per_tick: int = 100  # 10,000 invoices
    # Stop listing once a tick has found this many renewals to queue, and request their runs; the next
    # tick (30 s after this one started) continues the scan. So the first writes of a month-start burst
    # start after seconds of listing instead of after the whole budget. None: what the runs write (one
    # request per invoice) at the Stripe rate in `writing_seconds_per_tick`.
    renewals_per_tick: int | None = None
    # Longer than the 30 s to the next tick plus that tick's own listing (slower while runs write):
    # the runs never wait for the next batch.
    writing_seconds_per_tick: float = 40.0
    # Never list longer than this in one tick (far from Dagster's 60 s limit).
    tick_budget_seconds: float = 15.0
    overlap_seconds: int = 60  # re-listed below the cursor …
    # … for this long (wall clock) after the cursor last rose: an invoice is listable within seconds of
    # its creation, so a late one in the same second shows up early or never. After that, only invoices
    # created after the cursor are listed — which matters with test clocks, where every renewal of an
    # advance has the same `created` and re-listing "the last minute" means re-listing all of them.
    overlap_grace: timedelta = timedelta(minutes=10)
    stale_after: timedelta = timedelta(minutes=10)  # queued/pending this long: the run is lost or died
    failed_after: timedelta = timedelta(minutes=2)  # a failed attempt is tried again after this pause
    max_attempts: int = 5
    max_retries_per_tick: int = 5000


DEFAULT_POLICY = SensorPolicy()


@dataclass
class ScanCursor:
    """The sensor's cursor. `hwm`: highest `created` of the last completed scan. `scan`: a scan that ran
    out of budget — its lower bound, status filter, the last id listed and the highest `created` seen."""

    hwm: int | None = None
    hwm_at: float | None = None  # wall clock (Unix seconds) when `hwm` last rose
    scan_gte: int | None = None
    scan_status: str | None = None
    scan_after: str | None = None
    scan_top: int | None = None
    scanning: bool = False

    @classmethod
    def parse(cls, text: str | None) -> "ScanCursor":
        if not text:
            return cls()
        return cls(**json.loads(text))

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dataclass
class TickPlan:
    cursor: ScanCursor
    listed: int = 0
    pages: int = 0
    renewals_seen: int = 0
    queued: list[str] = field(default_factory=list)
    retried: list[str] = field(default_factory=list)
    already_annotated: list[str] = field(default_factory=list)


def _renewal(listed: ListedInvoice) -> RenewalInvoice:
    invoice = listed.invoice
    if invoice.period_start is None or invoice.period_end is None:
        raise ValueError(f"renewal invoice {invoice.id} has no period")
    return RenewalInvoice(
        invoice_id=invoice.id,
        customer_id=invoice.customer_id,
        subscription_id=invoice.subscription_id,
        created=invoice.created,
        period_start=invoice.period_start,
        period_end=invoice.period_end,
        needs_branding=not listed.branded,
    )


def scan_invoices(
    stripe: StripeResource, warehouse: Warehouse, cursor: ScanCursor, policy: SensorPolicy, now: datetime
) -> TickPlan:
    """One tick's work, without Dagster: list, queue new renewals, pick rows to retry."""
    enough = policy.renewals_per_tick or round(stripe.effective_requests_per_second * policy.writing_seconds_per_tick)
    if cursor.scanning:
        gte, status, after, top = cursor.scan_gte, cursor.scan_status, cursor.scan_after, cursor.scan_top
    elif cursor.hwm is None:
        gte, status, after, top = None, "draft", None, None  # first tick ever: today's drafts
    else:
        recent = cursor.hwm_at is not None and now.timestamp() - cursor.hwm_at < policy.overlap_grace.total_seconds()
        gte = cursor.hwm - policy.overlap_seconds if recent else cursor.hwm + 1
        status, after, top = None, None, cursor.hwm
    plan = TickPlan(cursor=cursor)
    deadline = time.monotonic() + policy.tick_budget_seconds
    renewals: list[ListedInvoice] = []
    known: set[str] = set()  # renewals listed this tick that already have an invoice_annotations row
    while True:
        try:
            page = stripe.invoices.list_page(created_gte=gte, status=status, starting_after=after, limit=policy.page_size)
        except StaleListCursor:
            # The invoice we were to continue after is gone: list the window again from its newest end
            # (what was already queued is recognised by its row).
            after = None
            continue
        plan.pages += 1
        plan.listed += len(page.invoices)
        page_renewals = []
        for listed in page.invoices:
            created = int(listed.invoice.created.timestamp())
            top = created if top is None else max(top, created)
            if listed.invoice.billing_reason == RENEWAL:
                page_renewals.append(listed)
        if page_renewals:
            renewals.extend(page_renewals)
            known |= invoice_ids_on_record(warehouse, [invoice.id for invoice in page_renewals])
        if page.invoices:
            after = page.invoices[-1].id
        if not page.has_more:
            if cursor.hwm is None:
                # First scan ever: its drafts may all be older than the newest invoice (or there are
                # none). The newest invoice of any status sets the watermark, so that from now on a
                # renewal finalized before a tick saw it is still listed (and recorded as missed).
                newest = stripe.invoices.list_page(limit=1).invoices
                if newest:
                    created = int(newest[0].invoice.created.timestamp())
                    top = created if top is None else max(top, created)
            rose = top is not None and (cursor.hwm is None or top > cursor.hwm)
            plan.cursor = ScanCursor(hwm=top if rose else cursor.hwm, hwm_at=now.timestamp() if rose else cursor.hwm_at)
            break
        if plan.pages >= policy.max_pages_per_tick or len(renewals) - len(known) >= enough or time.monotonic() >= deadline:
            plan.cursor = ScanCursor(
                hwm=cursor.hwm,
                hwm_at=cursor.hwm_at,
                scan_gte=gte,
                scan_status=status,
                scan_after=after,
                scan_top=top,
                scanning=True,
            )
            break
    plan.renewals_seen = len(renewals)

    fresh = [invoice for invoice in renewals if invoice.id not in known]
    # Annotated by us, but no row (e.g. a restored warehouse): record it, never write it again.
    carrying = [listed for listed in fresh if annotation_version_of(listed.invoice.metadata)]
    to_queue = [listed for listed in fresh if not annotation_version_of(listed.invoice.metadata)]
    if carrying:
        queue_invoices(warehouse, [_renewal(invoice) for invoice in carrying], ANNOTATION_VERSION, now)
        for invoice in carrying:
            record_outcome(
                warehouse,
                invoice.id,
                AnnotationOutcome(
                    AnnotationStatus.SKIPPED,
                    detail=f"already carries annotation version {annotation_version_of(invoice.invoice.metadata)}",
                ),
                "draft_invoice_sensor",
                now,
            )
        plan.already_annotated = [invoice.id for invoice in carrying]
    plan.queued = queue_invoices(warehouse, [_renewal(invoice) for invoice in to_queue], ANNOTATION_VERSION, now)

    queued_now = set(plan.queued)
    retry = [
        invoice_id
        for invoice_id in invoices_to_retry(
            warehouse, now, policy.stale_after, policy.max_attempts, policy.max_retries_per_tick, policy.failed_after
        )
        if invoice_id not in queued_now
    ]
    if retry:
        touch(warehouse, retry, now)
    plan.retried = retry
    return plan


def batches(ids: Sequence[str], size: int) -> list[list[str]]:
    """At most `size` ids per batch, in even batches (5,400 → 2 × 2,700, not 5,000 + 400: a run's
    fixed start-up cost is better spent once on a large batch than on a small remainder)."""
    if not ids:
        return []
    count = -(-len(ids) // size)
    even = -(-len(ids) // count)
    return [list(ids[offset : offset + even]) for offset in range(0, len(ids), even)]


def run_key(invoice_ids: Sequence[str], version: str = ANNOTATION_VERSION, attempt: str = "") -> str:
    digest = hashlib.sha256(",".join(sorted(invoice_ids)).encode()).hexdigest()[:24]
    return f"annotate:v{version}:{digest}" + (f":retry-{attempt}" if attempt else "")


def run_requests(plan: TickPlan, policy: SensorPolicy, now: datetime) -> list[dg.RunRequest]:
    requests = []
    for ids, attempt in [(b, "") for b in batches(plan.queued, policy.batch_size)] + [
        (b, now.strftime("%Y%m%dT%H%M%S")) for b in batches(plan.retried, policy.batch_size)
    ]:
        requests.append(
            dg.RunRequest(
                run_key=run_key(ids, attempt=attempt),
                run_config={"ops": {ASSET_KEY.to_python_identifier(): {"config": {"invoice_ids": ids}}}},
                tags={"aisyst/invoices": str(len(ids)), "aisyst/retry": "true" if attempt else "false"},
            )
        )
    return requests


def evaluate(
    context: dg.SensorEvaluationContext,
    stripe: StripeResource,
    warehouse: Warehouse,
    policy: SensorPolicy = DEFAULT_POLICY,
) -> dg.SensorResult:
    now = datetime.now(timezone.utc)
    plan = scan_invoices(stripe, warehouse, ScanCursor.parse(context.cursor), policy, now)
    requests = run_requests(plan, policy, now)
    context.log.info(
        f"listed {plan.listed} invoices in {plan.pages} page(s), {plan.renewals_seen} renewals; queued {len(plan.queued)}, "
        f"retrying {len(plan.retried)}, already annotated {len(plan.already_annotated)}; "
        f"{'scan continues next tick' if plan.cursor.scanning else 'scan complete'}"
    )
    if not requests:
        return dg.SensorResult(skip_reason=dg.SkipReason("no new renewal invoices"), cursor=plan.cursor.dump())
    return dg.SensorResult(run_requests=requests, cursor=plan.cursor.dump())


@dg.sensor(
    name="draft_invoice_sensor",
    job=annotate_draft_invoices,
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests annotation runs for new renewal invoices (batches of ids) and for unfinished ones.",
)
def draft_invoice_sensor(
    context: dg.SensorEvaluationContext, stripe: StripeResource, warehouse: WarehouseResource
) -> dg.SensorResult:
    return evaluate(context, stripe, warehouse.get())


# --- one pass in this process (`aisyst annotate`, the demo, the benchmark) -------------------------------

CLI_CURSOR_KEY = "aisyst/draft_invoice_sensor/cli_cursor"
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


@dataclass(frozen=True)
class RunOutcome:
    run_id: str
    invoices: int
    counts: dict[str, int]
    check_passed: bool | None
    success: bool
    skipped_reason: str | None = None  # the run key was used before: nothing ran


def execute_annotation(
    instance: dg.DagsterInstance, definitions: dg.Definitions, run_config: dict, tags: dict[str, str] | None = None
) -> RunOutcome:
    job = definitions.resolve_job_def(annotate_draft_invoices.name)
    result = job.execute_in_process(run_config={**run_config, **QUIET}, instance=instance, tags=tags, raise_on_error=False)
    ids = run_config["ops"][ASSET_KEY.to_python_identifier()]["config"]["invoice_ids"]
    counts: dict[str, int] = {}
    check_passed = None
    if result.success:
        metadata = result.asset_materializations_for_node(ASSET_KEY.to_python_identifier())[0].metadata
        counts = {key: int(metadata[key].value) for key in ("annotated", "missed", "failed", "skipped", "already_done")}
        check_passed = all(check.passed for check in result.get_asset_check_evaluations())
    return RunOutcome(result.run_id, len(ids), counts, check_passed, result.success)


def annotate_once(
    instance: dg.DagsterInstance, definitions: dg.Definitions, invoice_ids: Sequence[str] | None = None
) -> list[RunOutcome]:
    """Evaluate `draft_invoice_sensor` once and execute the runs it requests here, tagged with the
    sensor's name and run key as the daemon would tag them (a run key used before is not run again);
    or, given `invoice_ids`, run the job for exactly those invoices (they must have a row). The pass
    keeps its own cursor in the instance: the daemon's cursor belongs to the running code location."""
    from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

    op = ASSET_KEY.to_python_identifier()
    if invoice_ids is not None:
        config = {"ops": {op: {"config": {"invoice_ids": list(invoice_ids)}}}}
        return [execute_annotation(instance, definitions, config, {"aisyst/manual": "true"})]
    sensor_name = draft_invoice_sensor.name
    tick = evaluate_sensor_once(instance, definitions, sensor_name, CLI_CURSOR_KEY)
    outcomes = []
    for request in tick.run_requests or []:
        tags = {**request.tags, RUN_KEY_TAG: str(request.run_key), SENSOR_NAME_TAG: sensor_name}
        earlier = instance.get_runs(
            filters=dg.RunsFilter(tags={RUN_KEY_TAG: str(request.run_key), SENSOR_NAME_TAG: sensor_name}), limit=1
        )
        ids = request.run_config["ops"][op]["config"]["invoice_ids"]
        if earlier:
            outcomes.append(RunOutcome(earlier[0].run_id, len(ids), {}, None, True, skipped_reason="run key used before"))
            continue
        outcomes.append(execute_annotation(instance, definitions, request.run_config, tags))
    return outcomes


# Brand fields go on each subscription's invoice settings ahead of its renewal (see the asset): the
# Stripe mirror is refreshed and only changed subscriptions are written, once a day.
invoice_branding_job = dg.define_asset_job(
    "invoice_branding_job",
    selection=dg.AssetSelection.assets(dg.AssetKey("stripe_customers"), SUBSCRIPTIONS_ASSET_KEY, BRANDING_ASSET_KEY),
    description="Refresh the Stripe mirror, then write changed brand fields to subscriptions' invoice settings.",
)

invoice_branding_daily = dg.ScheduleDefinition(
    name="invoice_branding_daily",
    job=invoice_branding_job,
    cron_schedule="0 5 * * *",
    execution_timezone="UTC",
    default_status=dg.DefaultScheduleStatus.RUNNING,
)

defs = dg.Definitions(
    jobs=[annotate_draft_invoices, invoice_branding_job],
    sensors=[draft_invoice_sensor],
    schedules=[invoice_branding_daily],
)

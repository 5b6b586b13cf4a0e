"""Which renewal invoices to annotate and when: the planning behind `draft_invoice_sensor` (DESIGN.md §2.4).

Every tick lists the invoices created since its cursor, keeps the renewal invoices
(`billing_reason=subscription_cycle`) that have no invoice_annotations row yet and writes them there
as `queued`, page by page (with the customer, subscription and period it saw, so runs get ids only).
A run, after the ids it was requested for, works the queue: it takes the `queued` rows as the ticks
write them (services/invoice_annotation.py, QueueWork). So a tick requests a run for its new renewals
only when no such run is in progress, and a month-start burst is one run that starts after the first
page, not one run per tick with a handover (run queue, run worker start) between each. The run key is
made of the ids and the annotation version: a tick that somehow re-plans the same batch launches
nothing twice.

The cursor is the highest `created` seen (never "now": test clocks make Stripe time differ from the
wall clock). For ten minutes after it rose, each scan re-lists a small overlap below it, because
invoices created in the same second as the highest one seen can show up after our listing; the rows
make that overlap harmless. Stripe lists newest first, so a scan that stops early stores where it
stopped (the page cursor and the highest `created` of the scan) and the next tick continues; the
cursor only moves past the scan once it has completed. A tick stops once it has found enough new
renewals to keep the runs writing until the next tick's batch is ready (so a month-start burst starts
writing after seconds), or after its time budget: every tick stays well under Dagster's 60 s limit
even when 10,000 drafts appear at once.

The listing is not limited to drafts (except on the very first scan, which starts from today's drafts
and the newest invoice's `created`): a renewal invoice that was finalized before the sensor saw it —
the sensor was stopped for an hour — is queued too, and its run records it `missed` and alerts,
rather than nobody ever noticing.

Rows that should have finished by now (pending for `stale_after`, failed for `failed_after`, or queued
for `orphaned_after` while no run works the queue) are planned again, a few attempts at most: that is
how a run that died, or a Stripe outage, heals.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta

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
from resources.stripe.client import StripeRateLimited
from resources.stripe.invoices import InvoiceGateway, StaleListCursor
from resources.stripe.records import ListedInvoice

RENEWAL = "subscription_cycle"
PLANNER = "draft_invoice_sensor"  # the run id on rows the planning itself records


@dataclass(frozen=True)
class SensorPolicy:
    # Invoice ids in one run's config (~30 bytes each): a run of new renewals takes the rest from the
    # queue; retries go in runs of this many.
    batch_size: int = 5000
    page_size: int = 100  # Stripe's maximum
    max_pages_per_tick: int = 100  # 10,000 invoices
    # Stop listing once a tick has found this many new renewals; the next tick (one sensor interval
    # later) continues the scan. None: what the run writes (one request per invoice) at the Stripe rate
    # in `writing_seconds_per_tick` — or, for the tick that starts a scan (the first of a burst), in
    # `first_writing_seconds`: its run starts writing within seconds, and the next ticks queue the rest
    # while it writes.
    renewals_per_tick: int | None = None
    # More than the run writes until the next tick has listed its first pages: the run never waits.
    writing_seconds_per_tick: float = 40.0
    first_writing_seconds: float = 1.0  # one page: the run then takes the next ticks' rows from the queue
    # A run requested while the scan continues waits this long for the next tick's rows before it ends
    # (longer than the interval between ticks plus a tick's listing budget).
    wait_for_queued_seconds: float = 25.0
    # A `queued` row this old, while no run that works the queue is in progress, is an orphan (queued just
    # as that run ended, or its run failed): it is requested again.
    orphaned_after: timedelta = timedelta(seconds=30)
    # Never list longer than this in one tick (far from Dagster's 60 s limit).
    tick_budget_seconds: float = 15.0
    overlap_seconds: int = 60  # re-listed below the cursor …
    # … for this long (wall clock) after the cursor last rose: an invoice is listable within seconds of
    # its creation, so a late one in the same second shows up early or never. After that, only invoices
    # created after the cursor are listed — which matters with test clocks, where every renewal of an
    # advance has the same `created` and re-listing "the last minute" means re-listing all of them.
    overlap_grace: timedelta = timedelta(minutes=10)
    # … and at most this often: in between, a tick lists only what is newer than the cursor. With a
    # tick every few seconds, re-listing the overlap each time would list a month-start burst's
    # thousands of same-second drafts over and over, spending the rate limit the runs write with.
    relist_every: timedelta = timedelta(seconds=30)
    stale_after: timedelta = timedelta(minutes=10)  # queued/pending this long: the run is lost or died
    failed_after: timedelta = timedelta(minutes=2)  # a failed attempt is tried again after this pause
    max_attempts: int = 5
    max_retries_per_tick: int = 5000

    def enough_renewals(self, requests_per_second: float, *, starts_scan: bool = False) -> int:
        """New renewals that end a tick's listing: `renewals_per_tick`, or what the runs write (one
        request per invoice) at `requests_per_second` in `writing_seconds_per_tick` (in
        `first_writing_seconds` for a tick that starts a scan)."""
        seconds = self.first_writing_seconds if starts_scan else self.writing_seconds_per_tick
        return self.renewals_per_tick or max(1, round(requests_per_second * seconds))


DEFAULT_POLICY = SensorPolicy()


@dataclass
class ScanCursor:
    """The sensor's cursor. `hwm`: highest `created` of the last completed scan. `scan`: a scan that ran
    out of budget — its lower bound, status filter, the last id listed and the highest `created` seen."""

    hwm: int | None = None
    hwm_at: float | None = None  # wall clock (Unix seconds) when `hwm` last rose
    relisted_at: float | None = None  # wall clock when a completed scan last re-listed the overlap
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
    rate_limited: bool = False  # the listing stopped on a 429 that outlasted the client's retries

    def summary(self) -> str:
        if self.rate_limited:
            scan = "listing paused by Stripe's rate limit (429 through every retry), continues next tick"
        else:
            scan = "scan continues next tick" if self.cursor.scanning else "scan complete"
        return (
            f"listed {self.listed} invoices in {self.pages} page(s), {self.renewals_seen} renewals; "
            f"queued {len(self.queued)}, retrying {len(self.retried)}, already annotated {len(self.already_annotated)}; {scan}"
        )


@dataclass(frozen=True)
class PlannedRun:
    """One annotation run to request: a batch of invoice ids under a run key of its own."""

    invoice_ids: list[str]
    run_key: str
    retry: bool
    wait_for_queued_seconds: float = 0.0  # then it works the queue (QueueWork) until nothing came for this long


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
    invoices: InvoiceGateway,
    warehouse: Warehouse,
    cursor: ScanCursor,
    policy: SensorPolicy,
    now: datetime,
    requests_per_second: float,
    queue_worked: bool = False,
) -> TickPlan:
    """One tick's work: list from `cursor`, queue new renewals page by page, pick rows to retry.
    `requests_per_second` is the Stripe rate the runs will write at (it decides how many new renewals
    are enough for a tick). `queue_worked`: a run that takes queued rows is in progress — it takes this
    tick's rows as they are queued, and queued rows are not orphans."""
    enough = policy.enough_renewals(requests_per_second, starts_scan=not cursor.scanning)
    plan = TickPlan(cursor=cursor)

    def queue_page(renewals: Sequence[ListedInvoice]) -> None:
        # Annotated by us, but no row (e.g. a restored warehouse): record it, never write it again.
        carrying = [listed for listed in renewals if annotation_version_of(listed.invoice.metadata)]
        to_queue = [listed for listed in renewals if not annotation_version_of(listed.invoice.metadata)]
        if carrying:
            _record_already_annotated(warehouse, carrying, now)
            plan.already_annotated += [invoice.id for invoice in carrying]
        plan.queued += queue_invoices(warehouse, [_renewal(invoice) for invoice in to_queue], ANNOTATION_VERSION, now)

    listing = _list_renewals(invoices, warehouse, cursor, policy, now, enough, queue_page, relist=not queue_worked)
    plan.cursor, plan.listed, plan.pages, plan.renewals_seen = listing.cursor, listing.listed, listing.pages, listing.renewals
    plan.rate_limited = listing.rate_limited

    queued_now = set(plan.queued)
    retry = [
        invoice_id
        for invoice_id in invoices_to_retry(
            warehouse, now, policy.stale_after, policy.max_attempts, policy.max_retries_per_tick, policy.failed_after,
            queued_after=None if queue_worked else policy.orphaned_after,
        )
        if invoice_id not in queued_now
    ]
    if retry:
        touch(warehouse, retry, now)
    plan.retried = retry
    return plan


@dataclass
class _Listing:
    """What one tick's listing found: how many renewals, how many of them new, and the cursor."""

    cursor: ScanCursor
    pages: int = 0
    listed: int = 0
    renewals: int = 0
    new_renewals: int = 0
    rate_limited: bool = False


def _list_renewals(
    invoices: InvoiceGateway,
    warehouse: Warehouse,
    cursor: ScanCursor,
    policy: SensorPolicy,
    now: datetime,
    enough: int,
    on_new_renewals: Callable[[list[ListedInvoice]], None],
    relist: bool = True,
) -> _Listing:
    """List pages from `cursor` until the scan is complete, or the tick has `enough` new renewals, or it
    is out of pages or time; the cursor says where the next tick goes on. Each page's renewals without
    a row go to `on_new_renewals` at once, so that a run working the queue can take them while the
    listing goes on. Without `relist` the overlap below the cursor waits for a later tick: while a
    month-start burst is written, re-listing its thousands of same-second drafts would take the
    requests and the CPU the writes need."""
    if cursor.scanning:
        gte, status, after, top = cursor.scan_gte, cursor.scan_status, cursor.scan_after, cursor.scan_top
    elif cursor.hwm is None:
        gte, status, after, top = None, "draft", None, None  # first tick ever: today's drafts
    else:
        recent = cursor.hwm_at is not None and now.timestamp() - cursor.hwm_at < policy.overlap_grace.total_seconds()
        due = relist and (cursor.relisted_at is None or now.timestamp() - cursor.relisted_at >= policy.relist_every.total_seconds())
        gte = cursor.hwm - policy.overlap_seconds if recent and due else cursor.hwm + 1
        status, after, top = None, None, cursor.hwm
    listing = _Listing(cursor=cursor)
    deadline = time.monotonic() + policy.tick_budget_seconds

    def paused_here() -> ScanCursor:
        """The cursor of a scan that the next tick continues from the page after this one."""
        return ScanCursor(
            hwm=cursor.hwm, hwm_at=cursor.hwm_at, relisted_at=cursor.relisted_at,
            scan_gte=gte, scan_status=status, scan_after=after, scan_top=top, scanning=True,
        )

    while True:
        try:
            page = invoices.list_page(created_gte=gte, status=status, starting_after=after, limit=policy.page_size)
        except StaleListCursor:
            # The invoice we were to continue after is gone: list the window again from its newest end
            # (what was already queued is recognised by its row).
            after = None
            continue
        except StripeRateLimited:
            # The account's requests are spent elsewhere (the burst's own writes share them): keep what
            # this tick queued — its run is requested as usual — and list on next tick. A red tick
            # would alarm ops about a burst that is going well.
            listing.rate_limited = True
            listing.cursor = paused_here() if listing.pages else cursor
            return listing
        listing.pages += 1
        listing.listed += len(page.invoices)
        page_renewals = []
        for listed in page.invoices:
            created = int(listed.invoice.created.timestamp())
            top = created if top is None else max(top, created)
            if listed.invoice.billing_reason == RENEWAL:
                page_renewals.append(listed)
        if page_renewals:
            known = invoice_ids_on_record(warehouse, [invoice.id for invoice in page_renewals])
            fresh = [listed for listed in page_renewals if listed.invoice.id not in known]
            listing.renewals += len(page_renewals)
            listing.new_renewals += len(fresh)
            if fresh:
                on_new_renewals(fresh)
        if page.invoices:
            after = page.invoices[-1].id
        if not page.has_more:
            if cursor.hwm is None:
                # First scan ever: its drafts may all be older than the newest invoice (or there are
                # none). The newest invoice of any status sets the watermark, so that from now on a
                # renewal finalized before a tick saw it is still listed (and recorded as missed).
                newest = invoices.list_page(limit=1).invoices
                if newest:
                    created = int(newest[0].invoice.created.timestamp())
                    top = created if top is None else max(top, created)
            rose = top is not None and (cursor.hwm is None or top > cursor.hwm)
            relisted = cursor.hwm is not None and gte is not None and gte <= cursor.hwm
            listing.cursor = ScanCursor(hwm=top if rose else cursor.hwm, hwm_at=now.timestamp() if rose else cursor.hwm_at,
                                        relisted_at=now.timestamp() if relisted else cursor.relisted_at)
            return listing
        if listing.pages >= policy.max_pages_per_tick or listing.new_renewals >= enough or time.monotonic() >= deadline:
            listing.cursor = paused_here()
            return listing


def _record_already_annotated(warehouse: Warehouse, carrying: Sequence[ListedInvoice], now: datetime) -> None:
    queue_invoices(warehouse, [_renewal(invoice) for invoice in carrying], ANNOTATION_VERSION, now)
    for invoice in carrying:
        version = annotation_version_of(invoice.invoice.metadata)
        outcome = AnnotationOutcome(AnnotationStatus.SKIPPED, detail=f"already carries annotation version {version}")
        record_outcome(warehouse, invoice.id, outcome, PLANNER, now)


def planned_runs(plan: TickPlan, policy: SensorPolicy, now: datetime, queue_worked: bool = False) -> list[PlannedRun]:
    """The runs a tick requests. Every run works the queue after its own ids (QueueWork), so new
    renewals need one run, and none while a run that works the queue is in progress (`queue_worked`):
    it takes them. Then the retries, in even batches (their run keys carry the tick's time, so that a
    row requested again is not taken for the earlier request)."""
    attempt = now.strftime("%Y%m%dT%H%M%S")
    # While the scan of a burst continues, its run waits for the next ticks' rows rather than end.
    wait = policy.wait_for_queued_seconds if plan.cursor.scanning else 0.0
    new = [] if queue_worked else batches(plan.queued, policy.batch_size)[:1]
    return [PlannedRun(ids, run_key(ids), retry=False, wait_for_queued_seconds=wait) for ids in new] + [
        PlannedRun(ids, run_key(ids, attempt=attempt), retry=True, wait_for_queued_seconds=wait)
        for ids in batches(plan.retried, policy.batch_size)
    ]


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

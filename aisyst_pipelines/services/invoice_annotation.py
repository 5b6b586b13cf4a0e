"""Invoice annotation and branding (DESIGN.md §2.4): usage lines on renewal invoices while they are
drafts, brand fields (and the client group's tax rate) on the subscriptions that create them.

`annotate_batch` works one batch of invoice ids (the ids `draft_invoice_sensor` queued; which ones and
when is `invoice_annotation_planning`). Per invoice:
1. the subscription, its tier (from the Stripe mirror) and the usage period — the invoice's own
   `period_start`/`period_end`, i.e. the period that just ended (see billing/invoice_lines.py);
2. the minutes of exactly that [start, end) window, summed fresh from call_records (for a chunk of
   invoices at once, as the run starts them, right after marking their rows `pending`);
3. ONE `add_lines` call carrying every line — with one "Late-reported minutes from March" line per
   earlier period whose late CDRs the audit found and no invoice carries yet — and the invoice
   metadata, with an idempotency key made of the invoice id and the annotation version;
4. the outcome in invoice_annotations (recorded with the other outcomes of the moment, see
   `_Dispatch`), and the carried late minutes in invoice_audits' ledger.

Never twice: a row that is final is not touched again; a row left `pending` (a write may have reached
Stripe before a crash) is read back from Stripe first, and an invoice whose metadata carries our
annotation version is recorded, not written; retries reuse the idempotency key. Never silently
missed: an invoice finalized before we reached it is recorded `missed` with its usage in its metadata
(metadata stays editable after finalization), and the result says so — the asset check
`no_missed_or_failed_invoices` turns that into the ops alert. `failed` rows are requested again by
the sensor.

At month start thousands of drafts arrive within minutes: invoices are worked by a thread pool, and
the Stripe client's rate limiter keeps the whole pool under Stripe's request rate.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import datetime, timezone
from enum import Enum
from functools import cache

from aisyst_pipelines.billing.invoice_lines import (
    ANNOTATION_VERSION,
    LATE_FROM_KEY,
    METADATA_VERSION_KEY,
    InvoiceBranding,
    InvoiceLine,
    LateMinutes,
    TierTerms,
    annotation_idempotency_key,
    annotation_version_of,
    invoice_lines,
    invoice_metadata,
    invoice_texts,
    late_minutes_line,
    period_usage,
)
from aisyst_pipelines.billing.client_groups import BrandProfiles, ClientGroups, TaxRateNotInStripe
from aisyst_pipelines.billing.periods import Period
from aisyst_pipelines.billing.tiers import TierCatalog
from aisyst_pipelines.templates import Brand
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.invoice_audit_store import late_minutes_to_carry, mark_carried
from aisyst_pipelines.warehouse.invoice_annotation_store import (
    FINAL_STATUSES,
    AnnotationOutcome,
    AnnotationRecord,
    AnnotationStatus,
    BrandingTarget,
    CustomerProfile,
    SubscriptionTerms,
    annotation_records,
    applied_branding_hashes,
    branding_hash,
    branding_targets,
    customer_profiles,
    mark_pending,
    queued_invoice_ids,
    record_branding,
    record_outcomes,
    subscription_terms,
)
from aisyst_pipelines.warehouse.stripe_sync_store import call_totals_in_windows
from resources.stripe.catalog import CatalogGateway
from resources.stripe.client import transient_stripe_error
from resources.stripe.invoices import AnnotationWriteConflict, InvoiceGateway, InvoiceGone, InvoiceNotEditable

TRANSIENT_ATTEMPTS = 3  # per invoice and run, on top of the client's own retries of each request
TRANSIENT_PAUSE_SECONDS = 1.0
# Metadata keys of a missed invoice: the usage goes on, but not our version key — it has no lines.
MISSED_MARKER_KEY = "aisyst_annotation_missed"


class UnknownInvoices(LookupError):
    """Invoice ids without an invoice_annotations row: the sensor writes the row before it requests
    the run, so such an id is a wrong run config, not work to do."""

    def __init__(self, invoice_ids: Sequence[str]) -> None:
        super().__init__(f"{len(invoice_ids)} invoice(s) have no invoice_annotations row: {', '.join(invoice_ids[:10])}")
        self.invoice_ids = list(invoice_ids)


@dataclass(frozen=True)
class InvoiceResult:
    invoice_id: str
    customer_id: str
    outcome: AnnotationOutcome
    already_done: bool = False  # final before this run: nothing was done


@dataclass(frozen=True)
class AnnotationRun:
    """What one batch came to: one result per invoice id asked for, in that order."""

    results: list[InvoiceResult]

    @property
    def done_now(self) -> list[InvoiceResult]:
        return [r for r in self.results if not r.already_done]

    @property
    def already_done(self) -> list[str]:
        """Invoice ids that were final before this run: nothing was done to them."""
        return [r.invoice_id for r in self.results if r.already_done]

    def count(self, status: AnnotationStatus) -> int:
        """Invoices of the batch that reached `status` in this run."""
        return sum(1 for r in self.done_now if r.outcome.status is status)

    @property
    def annotated(self) -> list[str]:
        """Invoice ids annotated by this run."""
        return [r.invoice_id for r in self.done_now if r.outcome.status is AnnotationStatus.ANNOTATED]

    @property
    def problems(self) -> list[InvoiceResult]:
        """Missed or failed invoices of the batch (also those missed before this run): ops must look."""
        return [r for r in self.results if r.outcome.status in (AnnotationStatus.MISSED, AnnotationStatus.FAILED)]

    @property
    def missed(self) -> list[str]:
        return [r.invoice_id for r in self.problems if r.outcome.status is AnnotationStatus.MISSED]

    @property
    def failed(self) -> dict[str, str | None]:
        return {r.invoice_id: r.outcome.detail for r in self.problems if r.outcome.status is AnnotationStatus.FAILED}


def annotate_batch(
    invoices: InvoiceGateway,
    warehouse: Warehouse,
    invoice_ids: Sequence[str],
    *,
    run_id: str,
    profiles: Callable[[], BrandProfiles],
    concurrency: int,
    requests_per_second: float,
    finalize: bool = False,
    queue: QueueWork | None = None,
) -> AnnotationRun:
    """Annotate the invoices (each id must have a row, else UnknownInvoices) with at most `concurrency`
    workers, fewer when the Stripe rate could not keep more busy (`workers_for`). `run_id` goes on the
    rows; `profiles` (called once, and only when a draft's subscription had no brand fields: it may
    read Stripe's tax rates) fill the brand fields and tax rates of such a draft; `finalize` finalizes
    each invoice right after its lines are on. With `queue`, the run then works the ledger's other
    `queued` rows too (see QueueWork)."""
    annotator = InvoiceAnnotator(invoices, warehouse, run_id, profiles, finalize)
    return AnnotationRun(annotator.annotate(invoice_ids, workers_for(concurrency, requests_per_second), queue))


@dataclass(frozen=True)
class QueueWork:
    """How a run works the queue after its own invoices: it keeps taking the `queued` rows of the ledger
    (the longest-waiting first) while its workers write, until no new row has come for `idle_seconds`.

    Why: at month start the sensor lists thousands of drafts over several ticks. If each tick's rows
    waited for a run of their own, every handover (the run queue, a run worker's start: seconds each)
    would leave the Stripe rate limit idle. So one run takes the rows as the ticks queue them, page by
    page, and the sensor requests no other run for new rows while it is in progress
    (invoice_annotation_planning)."""

    idle_seconds: float = 0.0
    poll_seconds: float = 0.25
    ahead_per_worker: int = 4  # invoices read ahead per worker, so that no worker waits for the next rows


def workers_for(concurrency: int, requests_per_second: float) -> int:
    """Workers that keep the rate limit busy and no more: one invoice takes ~0.3–0.6 s (a write at
    Stripe's latency plus our own work), so rate × 0.6 of them saturate it. More would only queue in the
    rate limiter — ahead of the sensor's list pages when both share a process."""
    return max(4, min(concurrency, math.ceil(requests_per_second * 0.6)))


@dataclass(frozen=True)
class _Inputs:
    """What the warehouse says about one invoice (read for the whole batch in a few queries)."""

    record: AnnotationRecord
    terms: SubscriptionTerms | None
    profile: CustomerProfile | None
    late: tuple[LateMinutes, ...] = ()  # earlier periods' late CDRs this draft carries (the audit's ledger)
    minutes_used: int | None = None  # of the invoice's period, read as its chunk was started
    claim: _Claim | None = None  # how the row was marked `pending` as its chunk was started (None: not yet)


class _Claim(Enum):
    MARKED = "marked"  # marked `pending` for this run: the worker writes
    LOST = "lost"  # final by the time it was to be marked: another run finished it


class InvoiceAnnotator:
    """Annotates one batch of invoices; thread-safe per invoice (each invoice is one worker's)."""

    def __init__(
        self, invoices: InvoiceGateway, warehouse: Warehouse, run_id: str, profiles: Callable[[], BrandProfiles], finalize: bool = False
    ) -> None:
        self.invoices = invoices
        self.warehouse = warehouse
        self.run_id = run_id
        self.profiles = cache(profiles)  # no request in the burst unless a draft needs brand fields
        self.finalize = finalize

    def annotate(self, invoice_ids: Sequence[str], workers: int, queue: QueueWork | None = None) -> list[InvoiceResult]:
        inputs = self._read_inputs(invoice_ids)
        unknown = [invoice_id for invoice_id in dict.fromkeys(invoice_ids) if invoice_id not in inputs]
        if unknown:
            raise UnknownInvoices(unknown)
        workers = max(1, workers)
        with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="annotate") as pool:
            dispatch = _Dispatch(self, pool)
            try:
                self._dispatch(dispatch, list(inputs.values()), queue, set(inputs), workers)
            finally:
                pool.shutdown(wait=True)
                dispatch.record_finished()  # what finished after the last look, even if the dispatch failed
        return [future.result() for future in dispatch.futures]

    def _dispatch(self, dispatch: _Dispatch, own: list[_Inputs], queue: QueueWork | None, taken: set[str], workers: int) -> None:
        """Start the run's own invoices, then (with `queue`) the ledger's `queued` rows as they come, a
        chunk at a time, keeping between half of `ahead` and `ahead` invoices in flight (`ahead_per_worker`
        of `queue`, or of the default QueueWork), and record what the workers finished at each look.
        Returns once its own are started and, with `queue`, no new row has come for `queue.idle_seconds`
        of looking (the workers may still be busy)."""
        pace = queue or QueueWork()
        ahead, poll_seconds = workers * pace.ahead_per_worker, pace.poll_seconds
        last_new = time.monotonic()
        while True:
            dispatch.record_finished()
            busy = dispatch.in_flight
            if busy > ahead // 2:
                # Refill by half the read-ahead at a time: the inputs of many rows cost a few queries,
                # those of each single row as many.
                last_new = time.monotonic()  # not looking: this is not idle time
            elif own:
                chunk, own[:] = own[: ahead - busy], own[ahead - busy :]
                dispatch.start(chunk)
                continue
            elif queue is None:
                return
            else:
                # Rows this run took stay `queued` until they are marked `pending`: skip those.
                fresh = [i for i in queued_invoice_ids(self.warehouse, ahead) if i not in taken][: ahead - busy]
                if fresh:
                    taken.update(fresh)
                    dispatch.start(list(self._read_inputs(fresh).values()))
                    last_new = time.monotonic()
                    continue
                if time.monotonic() - last_new >= queue.idle_seconds:
                    return
            time.sleep(poll_seconds)

    def _prepared(self, chunk: Sequence[_Inputs]) -> list[_Inputs]:
        """A chunk about to start, with what its workers need from the warehouse in a few statements
        for all of them: the rows that will be written marked `pending` (the write-ahead record a crash
        leaves, so that the next attempt asks Stripe first), and then the minutes of each period —
        read right before the writes, as fresh as they can be."""
        open_rows = [item for item in chunk if item.record.status not in FINAL_STATUSES]
        # A row left `pending` by an earlier attempt is marked by its worker, after Stripe was asked.
        to_mark = [
            item.record.invoice_id
            for item in open_rows
            if item.record.status is not AnnotationStatus.PENDING and _tier_terms(item.terms) is not None
        ]
        marked = mark_pending(self.warehouse, to_mark, self.run_id, _now()) if to_mark else set()
        totals = call_totals_in_windows(self.warehouse, [_window(item.record) for item in open_rows])
        claims = {invoice_id: _Claim.MARKED if invoice_id in marked else _Claim.LOST for invoice_id in to_mark}
        prepared = {
            item.record.invoice_id: replace(
                item, minutes_used=totals[_window(item.record)].billable_minutes, claim=claims.get(item.record.invoice_id)
            )
            for item in open_rows
        }
        return [prepared.get(item.record.invoice_id, item) for item in chunk]

    # --- reading the batch's inputs (a handful of queries for the whole batch) ------------------------

    def _read_inputs(self, invoice_ids: Sequence[str]) -> dict[str, _Inputs]:
        records = annotation_records(self.warehouse, invoice_ids)
        terms = subscription_terms(self.warehouse, [r.subscription_id for r in records.values() if r.subscription_id])
        profiles = customer_profiles(self.warehouse, [r.customer_id for r in records.values()])
        late = late_minutes_to_carry(self.warehouse, [r.customer_id for r in records.values()])
        return {
            invoice_id: _Inputs(
                record=record, terms=terms.get(record.subscription_id or ""), profile=profiles.get(record.customer_id),
                late=tuple(m for m in late.get(record.customer_id, []) if m.period.end <= record.period_start),
            )
            for invoice_id in dict.fromkeys(invoice_ids)
            if (record := records.get(invoice_id)) is not None
        }

    # --- one invoice ---------------------------------------------------------------------------------------

    def _annotate_one(self, inputs: _Inputs, on_outcome: Callable[[str, AnnotationOutcome], None]) -> InvoiceResult:
        """One invoice, start to end; its outcome goes to `on_outcome` (recorded with others)."""
        record = inputs.record
        if record.status in FINAL_STATUSES:
            return InvoiceResult(record.invoice_id, record.customer_id, _outcome_of(record), already_done=True)
        for attempt in range(1, TRANSIENT_ATTEMPTS + 1):
            try:
                outcome = self._work(inputs)
                break
            except _FinishedElsewhere:
                finished = annotation_records(self.warehouse, [record.invoice_id])[record.invoice_id]
                return InvoiceResult(record.invoice_id, record.customer_id, _outcome_of(finished), already_done=True)
            except Exception as error:  # noqa: BLE001 - one invoice's failure must not stop the batch
                if transient_stripe_error(error) and attempt < TRANSIENT_ATTEMPTS:
                    # The client already retried this request; Stripe is having a bad moment. The same
                    # idempotency key makes another go safe even if the last answer was lost.
                    time.sleep(TRANSIENT_PAUSE_SECONDS * attempt)
                    continue
                outcome = AnnotationOutcome(AnnotationStatus.FAILED, detail=_describe(error))
        on_outcome(record.invoice_id, outcome)
        return InvoiceResult(record.invoice_id, record.customer_id, outcome)

    def _work(self, inputs: _Inputs) -> AnnotationOutcome:
        record = inputs.record
        finalized_status: str | None = None
        if record.status is AnnotationStatus.PENDING:
            # A previous attempt may have written before it died: Stripe has the last word.
            state = self.invoices.if_exists(record.invoice_id)
            if state is None:
                return AnnotationOutcome(AnnotationStatus.SKIPPED, detail="invoice deleted")
            if annotation_version_of(state.metadata):
                detail = "found annotated after an interrupted attempt"
                return self._already_annotated(record.invoice_id, state.metadata, detail, inputs.late)
            if state.status != "draft":
                finalized_status = state.status
        terms = _tier_terms(inputs.terms)
        if terms is None:
            return AnnotationOutcome(
                AnnotationStatus.FAILED,
                detail=f"no tier known for subscription {record.subscription_id!r}; the Stripe sync has not mirrored it",
            )
        assert inputs.minutes_used is not None, "an invoice starts with its chunk's minutes (_prepared)"
        usage = period_usage(inputs.minutes_used, terms, Period(record.period_start, record.period_end))
        texts = invoice_texts(inputs.profile.preferred_locale if inputs.profile else None)
        lines = invoice_lines(terms, usage, texts) + [late_minutes_line(m, terms, texts, usage.period) for m in inputs.late]
        metadata = invoice_metadata(terms, usage)
        if inputs.late:
            metadata[LATE_FROM_KEY] = ",".join(m.from_invoice_id for m in inputs.late)
        figures = AnnotationOutcome(
            AnnotationStatus.ANNOTATED,
            tier_name=terms.tier_name,
            minutes_used=usage.minutes_used,
            minutes_included=usage.included_minutes,
            minutes_unused=usage.minutes_unused,
            overage_minutes=usage.overage_minutes,
            overage_amount=sum(line.amount for line in lines),
            usage_pct=usage.usage_pct,
            lines_added=len(lines),
            locale=texts.locale,
        )
        if finalized_status is not None:
            return self._not_a_draft(record.invoice_id, finalized_status, metadata, figures, inputs.late)
        if inputs.claim is None:  # left `pending` by an earlier attempt: marked now that Stripe was asked
            claimed = bool(mark_pending(self.warehouse, [record.invoice_id], self.run_id, _now()))
        else:
            claimed = inputs.claim is _Claim.MARKED
        if not claimed:
            raise _FinishedElsewhere(record.invoice_id)
        try:
            if record.needs_branding:
                # Its subscription had no brand fields yet when Stripe created the draft (see
                # `apply_invoice_branding` below): this one invoice gets them directly, a second write.
                account_code = inputs.profile.account_code if inputs.profile else None
                country = inputs.profile.country if inputs.profile else None
                _, branding = self.profiles().branding(account_code, terms.tier_name, texts.locale, country)
                self.invoices.write_branding(record.invoice_id, branding)
            self._add_lines(record.invoice_id, lines, metadata)
        except InvoiceGone:
            return AnnotationOutcome(AnnotationStatus.SKIPPED, detail="invoice deleted")
        except InvoiceNotEditable as error:
            return self._not_a_draft(record.invoice_id, error.status, metadata, figures, inputs.late)
        if inputs.late:
            mark_carried(self.warehouse, inputs.late, record.invoice_id, _now())
        if self.finalize:
            try:
                self.invoices.finalize(record.invoice_id)
            except Exception as error:  # noqa: BLE001 - the lines are on; Stripe finalizes it within the hour
                return replace(figures, detail=f"annotated; finalizing failed: {_describe(error)}")
        return figures

    def _add_lines(self, invoice_id: str, lines: Sequence[InvoiceLine], metadata: dict[str, str]) -> None:
        key = annotation_idempotency_key(invoice_id)
        try:
            self.invoices.add_annotation_lines(invoice_id, lines, metadata, idempotency_key=key)
        except AnnotationWriteConflict:
            # Stripe already has a request under this key with other parameters (the minutes changed
            # between two attempts, or its first answer was an error it keeps replaying). If the lines
            # are on, we are done; if not, the earlier request did not add them, and a fresh key is safe.
            state = self.invoices.if_exists(invoice_id)
            if state is None:
                raise InvoiceGone(invoice_id) from None
            if annotation_version_of(state.metadata):
                return
            if state.status != "draft":
                raise InvoiceNotEditable(invoice_id, state.status) from None
            self.invoices.add_annotation_lines(invoice_id, lines, metadata, idempotency_key=f"{key}-retry")

    def _not_a_draft(
        self,
        invoice_id: str,
        status: str | None,
        metadata: dict[str, str],
        figures: AnnotationOutcome,
        late: Sequence[LateMinutes] = (),
    ) -> AnnotationOutcome:
        state = self.invoices.if_exists(invoice_id)
        if state is None:
            return AnnotationOutcome(AnnotationStatus.SKIPPED, detail="invoice deleted")
        if annotation_version_of(state.metadata):
            # Our lines went on, then Stripe finalized it before our answer came back.
            return self._already_annotated(invoice_id, state.metadata, "annotated just before finalization", late)
        status = state.status or status
        if status == "void":
            return AnnotationOutcome(AnnotationStatus.SKIPPED, detail="invoice voided before annotation")
        # Without our lines it carries no late minutes either: they wait for the next draft.
        usage_metadata = {k: v for k, v in metadata.items() if k not in (METADATA_VERSION_KEY, LATE_FROM_KEY)}
        usage_metadata[MISSED_MARKER_KEY] = ANNOTATION_VERSION
        detail = f"invoice was {status} before annotation; usage written to its metadata"
        try:
            self.invoices.write_metadata(invoice_id, usage_metadata)
        except Exception as error:  # noqa: BLE001 - still missed; say why the metadata is not there
            detail = f"invoice was {status} before annotation; writing usage metadata failed: {_describe(error)}"
        # The figures it would have shown, no lines and nothing charged.
        return replace(figures, status=AnnotationStatus.MISSED, detail=detail, lines_added=0, overage_amount=None)

    def _already_annotated(
        self, invoice_id: str, metadata: dict[str, str], detail: str, late: Sequence[LateMinutes] = ()
    ) -> AnnotationOutcome:
        """The row for an invoice Stripe shows annotated: figures from its metadata and our lines counted
        on it (what is on the invoice is the truth, whatever this attempt would have written). Late
        minutes its metadata names as carried are marked so in the ledger."""
        carried_from = set((metadata.get(LATE_FROM_KEY) or "").split(","))
        carried = [m for m in late if m.from_invoice_id in carried_from]
        if carried:
            mark_carried(self.warehouse, carried, invoice_id, _now())

        def number(key: str) -> int | None:
            value = metadata.get(key, "")
            return int(value) if value.isdigit() else None

        percentage = metadata.get("usage_percentage")
        return AnnotationOutcome(
            AnnotationStatus.ANNOTATED,
            detail=detail,
            tier_name=metadata.get("tier_name"),
            minutes_used=number("minutes_used"),
            minutes_included=number("minutes_included"),
            minutes_unused=number("minutes_unused"),
            overage_minutes=number("overage_minutes") or 0,
            usage_pct=float(percentage) if percentage else None,
            lines_added=len(self.invoices.annotation_lines(invoice_id)),
        )


class _Dispatch:
    """The invoices one run has started on its pool, how many are in flight, and the outcomes its
    workers finished that are not recorded yet.

    Outcomes are recorded together, a few times a second, instead of one transaction per invoice: at
    month start a worker's own statements cost as much as its request to Stripe. If the run dies first,
    the rows stay `pending` and the next attempt asks Stripe what is on the invoice: nothing is written
    twice or lost."""

    def __init__(self, annotator: InvoiceAnnotator, pool: ThreadPoolExecutor) -> None:
        self.annotator = annotator
        self.pool = pool
        self.futures: list[Future[InvoiceResult]] = []
        self._lock = threading.Lock()
        self._in_flight = 0
        self._finished: list[tuple[str, AnnotationOutcome, datetime]] = []

    @property
    def in_flight(self) -> int:
        with self._lock:
            return self._in_flight

    def start(self, chunk: Sequence[_Inputs]) -> None:
        for item in self.annotator._prepared(chunk):
            with self._lock:
                self._in_flight += 1
            future = self.pool.submit(self.annotator._annotate_one, item, self._finish)
            future.add_done_callback(self._done)
            self.futures.append(future)

    def record_finished(self) -> None:
        with self._lock:
            finished, self._finished = self._finished, []
        if finished:
            record_outcomes(self.annotator.warehouse, finished, self.annotator.run_id)

    def _finish(self, invoice_id: str, outcome: AnnotationOutcome) -> None:
        with self._lock:
            self._finished.append((invoice_id, outcome, _now()))

    def _done(self, _: Future[InvoiceResult]) -> None:
        with self._lock:
            self._in_flight -= 1


def _window(record: AnnotationRecord) -> tuple[str, datetime, datetime]:
    return (record.customer_id, record.period_start, record.period_end)


def _tier_terms(terms: SubscriptionTerms | None) -> TierTerms | None:
    if terms is None or not terms.tier_name:
        return None
    return TierTerms(terms.tier_name, terms.included_minutes, terms.overage_unit_amount, terms.currency)


class _FinishedElsewhere(Exception):
    """Another run finished the invoice after this run read its row: nothing to write or record."""


def _outcome_of(record: AnnotationRecord) -> AnnotationOutcome:
    return AnnotationOutcome(
        record.status,
        detail=record.detail,
        tier_name=record.tier_name,
        minutes_used=record.minutes_used,
        minutes_included=record.minutes_included,
        lines_added=record.lines_added,
    )


def _describe(error: Exception) -> str:
    """A short, secret-free account of an error for the ledger and the run log."""
    return f"{type(error).__name__}: {str(error)[:300]}"


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --- brand fields ------------------------------------------------------------------------------------------
# Where the brand fields go (custom fields "Client ID" and "Tier", memo, footer). At month start every
# request counts against Stripe's rate limit: 10,000 renewals need 10,000 add_lines plus ~100 list pages,
# ≥ 101 s at 100 requests/s (≥ 404 s at the 25/s of test mode). add_lines cannot set custom_fields,
# description or footer, so putting them on each draft would take a second write per invoice and double
# the burst. Stripe copies a subscription's invoice_settings (custom_fields, description, footer) onto
# every invoice the subscription creates — the customer's invoice_settings would do for custom fields and
# footer but has no memo, and "Tier" belongs to the subscription anyway. So the brand fields are written
# once per subscription, after each Stripe sync, and only when they differ from what invoice_branding
# says was written last (new subscription, tier change, new account code or locale, rebrand): zero
# requests in the burst. A subscription created after the last branding run that renews before the next
# one is caught by the sensor (its draft is listed without brand fields) and gets them on the draft.

BRANDED_STATUSES = ("active", "trialing", "past_due", "unpaid", "incomplete", "paused")


@dataclass(frozen=True)
class BrandingResult:
    updated: list[str]
    unchanged: int
    failed: dict[str, str]


def brand_profiles(brand: Brand, groups: ClientGroups, tiers: TierCatalog, catalog: CatalogGateway) -> BrandProfiles:
    """The brand profiles with the Stripe ids of the client groups' tax rates (one tax rate listing)."""
    specs = [tiers.tax_rate(key) for key in sorted(groups.tax_rate_keys)]
    return BrandProfiles(brand, groups, catalog.tax_rate_ids(specs) if specs else {})


def apply_invoice_branding(
    invoices: InvoiceGateway, warehouse: Warehouse, profiles: BrandProfiles, concurrency: int = 16
) -> BrandingResult:
    """Write the brand fields and tax rates of its client group to every renewing subscription whose
    fields changed since last time (one subscription update each, none when nothing changed)."""
    applied = applied_branding_hashes(warehouse)
    pending: list[tuple[BrandingTarget, InvoiceBranding, str, str]] = []
    failed: dict[str, str] = {}
    unchanged = 0
    for target in branding_targets(warehouse, BRANDED_STATUSES):
        try:
            group, branding = profiles.branding(target.account_code, target.tier_name, target.preferred_locale, target.country)
        except TaxRateNotInStripe as error:
            failed[target.subscription_id] = str(error)
            continue
        fields = [(f.name, f.value) for f in branding.custom_fields]
        digest = branding_hash(fields, branding.memo, branding.footer, branding.tax_rate_ids, branding.rendering_template)
        if applied.get(target.subscription_id) == digest:
            unchanged += 1
        else:
            pending.append((target, branding, digest, group.key))

    def write(item: tuple[BrandingTarget, InvoiceBranding, str, str]) -> tuple[str, str | None]:
        target, branding, digest, group_key = item
        try:
            invoices.set_subscription_branding(target.subscription_id, branding)
            if branding.rendering_template:  # a second write, only for a group with a Stripe template
                invoices.set_customer_rendering_template(target.customer_id, branding.rendering_template)
        except Exception as error:  # noqa: BLE001 - one subscription must not stop the others
            return target.subscription_id, _describe(error)
        fields = [(f.name, f.value) for f in branding.custom_fields]
        record_branding(
            warehouse, target, fields, branding.locale, digest, _now(), client_group=group_key, tax_rate_ids=branding.tax_rate_ids
        )
        return target.subscription_id, None

    with ThreadPoolExecutor(max_workers=max(1, concurrency), thread_name_prefix="branding") as pool:
        outcomes = list(pool.map(write, pending))
    return BrandingResult(
        updated=[sub for sub, error in outcomes if error is None],
        unchanged=unchanged,
        failed=failed | {sub: error for sub, error in outcomes if error is not None},
    )

"""Reconciliation of CDR minutes with Stripe's meter event summaries (DESIGN.md §2.3): one run.

For every customer with a current period or one closed within the lookback (35 days), the run
compares the minutes in call_records with Stripe's summaries over the identical window
(billing/reconciliation.py explains the windows and makes every decision), names the causes of
drifting days, writes one meter_reconciliation row per customer-period, and — with `repair` on —
sends one corrective meter event per under-metered customer-day, recorded in meter_corrections
before it is sent.

Speed: one summaries request per customer-period (a second only to split a drifting edge day or
to read a just-closed period's unsettled last day), all of them concurrently on a thread pool; the
Stripe client's shared token bucket keeps the whole pool at the account's rate limit.

The verdict (`meter_drift_within_tolerance`: the asset check, and the exit code of
`aisyst reconcile`) fails when a customer-period's drift not covered by corrections exceeds the
tolerance, or when a customer-period could not be reconciled.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol

from aisyst_pipelines.billing.periods import Period
from aisyst_pipelines.billing.reconciliation import (
    CdrMinutes,
    Correction,
    CorrectionPlan,
    LedgerEntry,
    PeriodResult,
    ReconciliationPolicy,
    ReconciliationWindow,
    StripeMinutes,
    SummaryRequest,
    WindowComparison,
    compare,
    customer_periods,
    find_causes,
    in_flight_by_day,
    plan_corrections,
    reconciliation_window,
    splits_needed,
    with_repairs,
)
from aisyst_pipelines.warehouse import Warehouse, reconciliation_store, stripe_sync_store
from aisyst_pipelines.warehouse.reconciliation_store import ReconciliationRow

DRIFT_CHECK = "meter_drift_within_tolerance"  # the name ops see the verdict under (asset check, CLI)
LOG = logging.getLogger(__name__)

PeriodKey = tuple[str, datetime]  # (customer_id, period_start)


# --- the meters gateway, as far as the reconciliation uses it (resources/stripe/meters.py) ---------------


class MeterUsage(Protocol):
    @property
    def start(self) -> datetime: ...
    @property
    def end(self) -> datetime: ...
    @property
    def minutes(self) -> int: ...


class CorrectionSend(Protocol):
    @property
    def outcome(self) -> str: ...  # sent | already_received | rejected | uncertain
    @property
    def message(self) -> str | None: ...
    @property
    def counted(self) -> bool: ...


class Meters(Protocol):
    def meter_id(self) -> str: ...

    def summaries(self, meter_id: str, customer_id: str, start: datetime, end: datetime,
                  group_by_day: bool = False) -> Sequence[MeterUsage]: ...

    def send_correction(self, customer_id: str, value: int, timestamp: datetime, identifier: str) -> CorrectionSend: ...


# --- the result record ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconciliationSummary:
    """A run in numbers: the asset's metadata under these names, and the line `aisyst reconcile` prints."""

    customer_periods: int
    matched: int
    under_metered: int
    over_metered: int
    drifting_customer_periods: int
    total_drift_minutes: int
    unrepaired_drift_minutes: int
    net_delta_minutes: int
    repaired_minutes: int
    corrections_sent: int
    corrections_not_sent: int
    corrections_skipped: int
    over_metered_days: int
    # over-metering is for a person: how many of those days can still be cancelled (24 h window)
    over_metered_days_cancellable: int
    failed_customer_periods: int
    stripe_summary_requests: int
    unmapped_minutes: int
    seconds_given_way_to_drafts: int  # paused while renewal drafts awaited their annotation (DraftsFirst)


@dataclass(frozen=True)
class DriftVerdict:
    """`meter_drift_within_tolerance`: passed while no customer-period drifts beyond the tolerance
    unrepaired and every customer-period was reconciled."""

    tolerance_minutes: int
    offenders: list[PeriodResult]  # beyond the tolerance, the most unrepaired drift first
    failures: dict[PeriodKey, str]  # customer-periods that could not be reconciled, and why

    @property
    def passed(self) -> bool:
        return not self.offenders and not self.failures

    @property
    def description(self) -> str:
        tolerance = self.tolerance_minutes
        text = (f"{len(self.offenders)} customer-period(s) drift beyond {tolerance} min without repair" if self.offenders
                else f"every customer-period within {tolerance} min (or repaired)")
        if self.failures:
            text += f"; {len(self.failures)} customer-period(s) could not be reconciled"
        return text


@dataclass
class ReconciliationOutcome:
    run_id: str
    as_of: datetime
    policy: ReconciliationPolicy
    results: list[PeriodResult] = field(default_factory=list)
    failures: dict[PeriodKey, str] = field(default_factory=dict)  # customer-periods that could not be reconciled
    summary_requests: int = 0
    plan: CorrectionPlan | None = None
    sends: dict[str, str] = field(default_factory=dict)  # identifier -> outcome of this run's sends
    unmapped_minutes: int = 0
    seconds_given_way_to_drafts: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase (the phases overlap where said)

    def summary(self) -> ReconciliationSummary:
        results = self.results
        statuses = [r.status.value for r in results]
        counted = sum(1 for outcome in self.sends.values() if outcome in ("sent", "already_received"))
        return ReconciliationSummary(
            customer_periods=len(results),
            matched=statuses.count("match"),
            under_metered=statuses.count("under_metered"),
            over_metered=statuses.count("over_metered"),
            drifting_customer_periods=sum(1 for r in results if r.comparison.drift_minutes),
            total_drift_minutes=sum(r.comparison.drift_minutes for r in results),
            unrepaired_drift_minutes=sum(r.unrepaired_drift for r in results),
            net_delta_minutes=sum(r.comparison.delta for r in results),
            repaired_minutes=sum(r.repaired_minutes for r in results),
            corrections_sent=counted,
            corrections_not_sent=len(self.sends) - counted,
            corrections_skipped=len(self.plan.skipped) if self.plan else 0,
            over_metered_days=sum(1 for r in results for f in r.findings if f.delta < 0),
            over_metered_days_cancellable=sum(r.over_metered_days_cancellable(self.as_of) for r in results),
            failed_customer_periods=len(self.failures),
            stripe_summary_requests=self.summary_requests,
            unmapped_minutes=self.unmapped_minutes,
            seconds_given_way_to_drafts=round(self.seconds_given_way_to_drafts),
        )

    def most_drifting(self) -> list[PeriodResult]:
        """The customer-periods with drift, the most first."""
        return sorted((r for r in self.results if r.comparison.drift_minutes),
                      key=lambda r: (-r.comparison.drift_minutes, r.period.key))

    def verdict(self) -> DriftVerdict:
        tolerance = self.policy.tolerance_minutes
        offenders = sorted((r for r in self.results if r.beyond_tolerance(tolerance)),
                           key=lambda r: (-r.unrepaired_drift, r.period.key))
        return DriftVerdict(tolerance, offenders, dict(self.failures))


# --- the run ----------------------------------------------------------------------------------------------


def reconcile(warehouse: Warehouse, meters: Meters, policy: ReconciliationPolicy, *, repair: bool, run_id: str,
              as_of: datetime | None = None, concurrency: int = 32, log: logging.Logger = LOG,
              drafts_first: DraftsFirst | None = None) -> ReconciliationOutcome:
    """One reconciliation at `as_of` (default now), repairing when asked; writes the run's
    meter_reconciliation rows under `run_id` (a retry of the same run replaces them). With
    `drafts_first`, its summaries requests give way to the annotation of renewal drafts."""
    clock = RunClock(datetime.now(timezone.utc) if as_of is None else as_of)
    outcome = Reconciler(warehouse, meters, policy, clock, run_id, concurrency, log, drafts_first).run(repair)
    now = clock.now()
    reconciliation_store.write_results(warehouse, run_id, [result_row(r, now) for r in outcome.results], reconciled_at=now)
    for result in outcome.verdict().offenders:
        log.warning(
            f"{result.period.customer_id} period {result.period.period_start:%Y-%m-%d}: {result.status.value}, "
            f"delta {result.comparison.delta:+d} min, unrepaired drift {result.unrepaired_drift} min, "
            f"cause {result.cause.value if result.cause else 'not explained'}"
        )
    return outcome


class DraftsFirst:
    """Stripe's rate limit is one for the whole account. A month-start burst of renewal drafts has an
    hour to be annotated; the nightly reconciliation has the night. Each paces itself at the full
    limit, so running together they halve each other: at 100,000 drafts, when the 02:00 UTC
    reconciliation started mid-burst, the annotation fell from ~85 to ~55 invoices/s.

    So while drafts await their annotation (`drafts_awaiting`: rows queued or being written), the
    reconciliation sends no summaries request: `wait_for_turn` blocks, asking again every
    `poll_seconds` (one question for all the run's threads). It gives way for at most `max_wait` per
    run, counted from its first pause: a queue that does not empty (the sensor stopped with rows
    queued) must not cost the night's reconciliation."""

    def __init__(self, drafts_awaiting: Callable[[], int], *, poll_seconds: float = 5.0,
                 max_wait: timedelta = timedelta(minutes=45), log: logging.Logger = LOG) -> None:
        self._drafts_awaiting = drafts_awaiting
        self.poll_seconds = poll_seconds
        self.max_wait = max_wait
        self.log = log
        self.seconds_given_way = 0.0
        self._lock = threading.Lock()
        self._asked_at: float | None = None
        self._awaiting = 0
        self._first_pause: float | None = None
        self._paused_since: float | None = None

    def wait_for_turn(self) -> None:
        while self._must_wait():
            time.sleep(self.poll_seconds)

    def _must_wait(self) -> bool:
        with self._lock:
            now = time.monotonic()
            if self._asked_at is None or now - self._asked_at >= self.poll_seconds:
                self._awaiting, self._asked_at = self._drafts_awaiting(), now
            if self._first_pause is not None and now - self._first_pause >= self.max_wait.total_seconds():
                self._resume(now, f"gave way for {self.max_wait}, its most; it goes on beside the annotation "
                                  f"({self._awaiting} drafts still awaiting theirs)")
                return False
            if not self._awaiting:
                self._resume(now, "no renewal draft awaits its annotation any more")
                return False
            if self._paused_since is None:
                self._first_pause = self._first_pause or now
                self._paused_since = now
                self.log.info(f"reconciliation gives way: {self._awaiting} renewal drafts await their annotation, "
                              "which has Stripe's rate limit first (an hour to write them)")
            return True

    def _resume(self, now: float, why: str) -> None:
        if self._paused_since is None:
            return
        paused = now - self._paused_since
        self.seconds_given_way += paused
        self._paused_since = None
        self.log.info(f"reconciliation resumes after giving way for {paused:.0f} s: {why}")


class RunClock:
    """The run's notion of now: `as_of` plus the time the run has taken (so `sent_at` stays ordered
    on the same clock as `as_of`, a test clock's time included)."""

    def __init__(self, start: datetime) -> None:
        if start.tzinfo is None:
            raise ValueError(f"as_of {start.isoformat()} needs a UTC offset")
        self.start = start.astimezone(timezone.utc)
        self._monotonic = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self._monotonic)


class Phases:
    """Seconds from the start of the run to the end of each phase."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self.seconds: dict[str, float] = {}

    def done(self, name: str) -> None:
        self.seconds[name] = round(time.monotonic() - self._start, 3)


class Reconciler:
    """One reconciliation run: windows, both sides, comparison, causes, optional repair (no rows written)."""

    def __init__(self, warehouse: Warehouse, meters: Meters, policy: ReconciliationPolicy, clock: RunClock,
                 run_id: str, concurrency: int = 32, log: logging.Logger = LOG, drafts_first: DraftsFirst | None = None) -> None:
        self.warehouse = warehouse
        self.drafts_first = drafts_first
        self.meters = meters
        self.policy = policy
        self.clock = clock
        self.run_id = run_id
        self.concurrency = max(1, concurrency)
        self.log = log
        self._requests = 0
        self._lock = threading.Lock()

    def run(self, repair: bool) -> ReconciliationOutcome:
        as_of = self.clock.start
        phases = Phases()
        outcome = ReconciliationOutcome(self.run_id, as_of, self.policy, timings=phases.seconds)
        periods = customer_periods(reconciliation_store.subscription_cycles(self.warehouse), as_of, self.policy.lookback)
        windows = [w for p in periods if (w := reconciliation_window(p, as_of, self.policy.settle_lag)) is not None]
        phases.done("windows")
        if not windows:
            return outcome
        meter_id = self.meters.meter_id()
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="reconcile") as pool:
            # Stripe first: the rate limit sets the pace of the run, so the requests start at once
            # and the CDR side is read while they are in flight.
            fetches = {w.period.key: pool.submit(self._fetch, meter_id, w.period.customer_id, w.requests(), StripeMinutes())
                       for w in windows}
            cdr = reconciliation_store.cdr_minutes_by_window(self.warehouse, windows)
            phases.done("cdr_side")
            comparisons, outcome.failures = self._compare_all(pool, meter_id, windows, fetches, cdr)
        phases.done("stripe_side")
        outcome.summary_requests = self._requests
        if self.drafts_first is not None:
            outcome.seconds_given_way_to_drafts = self.drafts_first.seconds_given_way
        drifting_customers = sorted({c.window.period.customer_id for c in comparisons if c.drifting})
        ledger = reconciliation_store.ledger(self.warehouse, drifting_customers, self._ledger_since())
        outcome.results = [self._findings(c, ledger) for c in comparisons]
        cover_start = min(w.cover.start for w in windows)
        cover_end = max(w.cover.end for w in windows)
        outcome.unmapped_minutes = stripe_sync_store.unmapped_call_minutes(self.warehouse, cover_start, cover_end)
        phases.done("causes")
        if repair:
            self._repair(outcome, ledger)
            phases.done("repair")
        else:
            now = self.clock.now()
            outcome.results = [with_repairs(r, ledger, now, self.policy) if r.findings else r for r in outcome.results]
        return outcome

    def _ledger_since(self) -> date:
        """The first usage day whose corrections can matter (the lookback, and the edge days before it)."""
        return (self.clock.start - self.policy.lookback - timedelta(days=2)).date()

    # --- Stripe side, concurrently -------------------------------------------------------------------

    def _fetch(self, meter_id: str, customer_id: str, requests: Sequence[SummaryRequest], stripe: StripeMinutes) -> StripeMinutes:
        for request in requests:
            if self.drafts_first is not None:
                self.drafts_first.wait_for_turn()
            usages = self.meters.summaries(meter_id, customer_id, request.span.start, request.span.end, request.by_day)
            with self._lock:
                self._requests += 1
            stripe.add(request, [(u.start, u.end, u.minutes) for u in usages])
        return stripe

    def _compare_all(self, pool: ThreadPoolExecutor, meter_id: str, windows: Sequence[ReconciliationWindow],
                     fetches: dict[PeriodKey, Future[StripeMinutes]],
                     cdr: dict[PeriodKey, CdrMinutes]) -> tuple[list[WindowComparison], dict[PeriodKey, str]]:
        """Compare every window once its base requests are in; a drifting edge day gets its split
        request (rare) before the comparison."""
        failures: dict[PeriodKey, str] = {}
        ready: dict[PeriodKey, Future[StripeMinutes] | StripeMinutes] = {}
        for window in windows:
            key = window.period.key
            try:
                stripe = fetches[key].result()
                splits = splits_needed(window, cdr[key], stripe)
                ready[key] = pool.submit(self._fetch, meter_id, window.period.customer_id, splits, stripe) if splits else stripe
            except Exception as error:  # noqa: BLE001 - one customer's failure must not hide the others
                failures[key] = self._failed(window, error)
        comparisons = []
        for window in windows:
            key = window.period.key
            if key in failures:
                continue
            try:
                fetched = ready[key]
                stripe = fetched if isinstance(fetched, StripeMinutes) else fetched.result()
                comparisons.append(compare(window, cdr[key], stripe))
            except Exception as error:  # noqa: BLE001
                failures[key] = self._failed(window, error)
        return comparisons, failures

    def _failed(self, window: ReconciliationWindow, error: Exception) -> str:
        reason = f"{type(error).__name__}: {str(error)[:300]}"
        self.log.error(f"{window.period.customer_id} {window.period.period_start:%Y-%m-%d}: not reconciled — {reason}")
        return reason

    # --- causes ----------------------------------------------------------------------------------------

    def _findings(self, comparison: WindowComparison, ledger: Sequence[LedgerEntry]) -> PeriodResult:
        if not comparison.drifting:
            return PeriodResult(comparison)
        period = comparison.window.period
        # One query per drifting customer-period, from its first to its last drifting day;
        # day_evidence picks each day's calls out of it.
        span = Period(min(d.slice.span.start for d in comparison.drifting), max(d.slice.span.end for d in comparison.drifting))
        calls = reconciliation_store.evidence_calls(self.warehouse, period.customer_id, period.account_code, span)
        in_flight = in_flight_by_day(ledger, period, self.clock.start, self.policy)
        return PeriodResult(comparison, find_causes(comparison, calls, in_flight))

    # --- repair ----------------------------------------------------------------------------------------

    def _repair(self, outcome: ReconciliationOutcome, ledger: Sequence[LedgerEntry]) -> None:
        drifting = [r for r in outcome.results if r.findings]
        plan = plan_corrections(drifting, ledger, self.clock.start, self.policy)
        outcome.plan = plan
        reconciliation_store.expire(self.warehouse, [e.identifier for e in plan.expire])
        # The ledger first: a crash after this line leaves pending rows that the next run re-sends
        # under the same identifiers, never a second correction.
        recorded = set(reconciliation_store.record_pending(self.warehouse, plan.new, self.clock.now(), self.run_id))
        to_send: list[Correction | LedgerEntry] = [c for c in plan.new if c.identifier in recorded] + list(plan.resend)
        by_customer: dict[str, list[Correction | LedgerEntry]] = defaultdict(list)
        for item in to_send:
            by_customer[item.customer_id].append(item)
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="correct") as pool:
            for sent in pool.map(self._send_all, by_customer.values()):
                outcome.sends.update(sent)
        customers = sorted({r.period.customer_id for r in drifting} | {e.customer_id for e in to_send})
        ledger_after = reconciliation_store.ledger(self.warehouse, customers, self._ledger_since())
        now = self.clock.now()
        notes = _repair_notes(plan, ledger_after, outcome.sends)
        outcome.results = [
            with_repairs(r, ledger_after, now, self.policy, notes.get(r.period.key)) if r.findings else r for r in outcome.results
        ]

    def _send_all(self, items: Sequence[Correction | LedgerEntry]) -> dict[str, str]:
        """A customer's corrections one after the other (Stripe: one concurrent call per customer)."""
        outcomes = {}
        for item in items:
            result = self.meters.send_correction(item.customer_id, item.value, item.event_timestamp, item.identifier)
            if result.counted:
                reconciliation_store.mark_sent(self.warehouse, item.identifier, self.clock.now())
            elif result.outcome == "rejected":
                reconciliation_store.mark_failed(self.warehouse, item.identifier, result.message or "rejected")
            else:
                reconciliation_store.note_attempt_error(self.warehouse, item.identifier, result.message or "uncertain")
            outcomes[item.identifier] = result.outcome
            if not result.counted:
                self.log.warning(f"correction {item.identifier}: {result.outcome} — {result.message}")
        return outcomes


def _repair_notes(plan: CorrectionPlan, ledger_after: Sequence[LedgerEntry],
                  sends: dict[str, str]) -> dict[PeriodKey, dict[date, dict[str, Any]]]:
    """Per customer-period and day: what repair did, for the row's detail JSON."""
    notes: dict[PeriodKey, dict[date, dict[str, Any]]] = defaultdict(dict)
    by_identifier = {e.identifier: e for e in ledger_after}
    for item in [*plan.new, *plan.resend]:
        entry = by_identifier.get(item.identifier)
        key = (item.customer_id, item.period_start)
        notes[key].setdefault(item.usage_date, {"corrections": []})["corrections"].append({
            "identifier": item.identifier,
            "value": item.value,
            "event_timestamp": item.event_timestamp.isoformat(),
            "send": sends.get(item.identifier, "owned by another run"),
            "status": entry.status.value if entry else None,
        })
    for customer_id, period_start, day, why in plan.skipped:
        notes[(customer_id, period_start)].setdefault(day, {})["skipped"] = why
    return notes


def result_row(result: PeriodResult, now: datetime) -> ReconciliationRow:
    """The customer-period's meter_reconciliation row."""
    comparison, window = result.comparison, result.window
    return ReconciliationRow(
        customer_id=window.period.customer_id,
        period_start=window.period.period_start,
        period_end=window.period.period_end,
        subscription_id=window.period.subscription_id,
        window_start=window.span.start,
        window_end=window.span.end,
        window_closed=window.closed,
        cdr_minutes=comparison.cdr_minutes,
        stripe_minutes=comparison.stripe_minutes,
        delta_minutes=comparison.delta,
        drift_minutes=comparison.drift_minutes,
        drifting_days=len(comparison.drifting),
        status=result.status.value,
        cause=result.cause.value if result.cause else None,
        detail=json.dumps(result.detail(now), sort_keys=True),
        repaired_minutes=result.repaired_minutes,
        unrepaired_drift_minutes=result.unrepaired_drift,
    )

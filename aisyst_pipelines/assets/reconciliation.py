"""Nightly reconciliation of CDR minutes with Stripe's meter event summaries (DESIGN.md §2.3).

The asset `meter_reconciliation` compares, for every customer with a current period or one closed
within the last 35 days, the minutes in call_records with Stripe's summaries over the identical
window (billing/reconciliation.py explains the windows), writes one meter_reconciliation row per
customer-period, and — with `repair` on — sends one corrective meter event per under-metered
customer-day, recorded in meter_corrections before it is sent.

Speed: one summaries request per customer-period (a second only to split a drifting edge day or
to read a just-closed period's unsettled last day), all of them concurrently on a thread pool;
StripeResource's shared token bucket keeps the whole pool at the account's rate limit.

The check `meter_drift_within_tolerance` (ERROR) fails when a customer-period's drift not covered
by corrections exceeds the tolerance, or when a customer-period could not be reconciled.
"""


import json
import threading
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any

import dagster as dg

from aisyst_pipelines.billing.periods import Period
from aisyst_pipelines.billing.reconciliation import (
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
from resources import StripeResource, WarehouseResource

ASSET_KEY = dg.AssetKey("meter_reconciliation")
CHECK_NAME = "meter_drift_within_tolerance"
OWNERS = ["team:billing-data"]
DEPS = [dg.AssetKey("call_records"), dg.AssetKey("stripe_customers"), dg.AssetKey("stripe_subscriptions")]
MAX_TABLE_ROWS = 100  # drifting customer-periods shown in metadata (the table in the warehouse has all)


class ReconciliationConfig(dg.Config):
    """Run config of the reconciliation (the nightly schedule fills it from Settings)."""

    repair: bool = False  # send corrective meter events for under-metered days
    settle_lag_minutes: int = 60  # compare only up to now minus this (Stripe aggregates asynchronously)
    tolerance_minutes: int = 0  # unrepaired drift per customer-period the check allows
    lookback_days: int = 35  # closed periods reconciled (Stripe accepts corrections for 35 days)
    concurrency: int = 32  # summaries requests in flight (the rate limiter sets the pace)
    as_of: str | None = None  # ISO-8601 instant to reconcile at (the schedule's tick, a test clock); default now

    def policy(self) -> ReconciliationPolicy:
        return ReconciliationPolicy(
            settle_lag=timedelta(minutes=self.settle_lag_minutes),
            tolerance_minutes=self.tolerance_minutes,
            lookback=timedelta(days=self.lookback_days),
        )

    def start_time(self) -> datetime:
        if self.as_of is None:
            return datetime.now(timezone.utc)
        moment = datetime.fromisoformat(self.as_of.replace("Z", "+00:00"))
        if moment.tzinfo is None:
            raise ValueError(f"as_of {self.as_of!r} needs a UTC offset")
        return moment.astimezone(timezone.utc)


class RunClock:
    """The run's notion of now: `as_of` plus the time the run has taken (so `sent_at` stays ordered
    on the same clock as `as_of`, a test clock's time included)."""

    def __init__(self, start: datetime) -> None:
        self.start = start
        self._monotonic = time.monotonic()

    def now(self) -> datetime:
        return self.start + timedelta(seconds=time.monotonic() - self._monotonic)


@dataclass
class ReconciliationOutcome:
    results: list[PeriodResult]
    failures: dict[tuple[str, datetime], str]  # customer-periods that could not be reconciled
    summary_requests: int
    plan: CorrectionPlan | None = None
    sends: dict[str, str] = field(default_factory=dict)  # identifier -> outcome of this run's sends
    unmapped_minutes: int = 0
    timings: dict[str, float] = field(default_factory=dict)  # seconds per phase (the phases overlap where said)


class Phases:
    """Seconds from the start of the run to the end of each phase."""

    def __init__(self) -> None:
        self._start = time.monotonic()
        self.seconds: dict[str, float] = {}

    def done(self, name: str) -> None:
        self.seconds[name] = round(time.monotonic() - self._start, 3)


class Reconciler:
    """One reconciliation run: windows, both sides, comparison, causes, optional repair."""

    def __init__(self, warehouse: Warehouse, stripe: StripeResource, policy: ReconciliationPolicy, clock: RunClock,
                 run_id: str, concurrency: int = 32, log: Any = None) -> None:
        self.warehouse = warehouse
        self.stripe = stripe
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
        periods = customer_periods(reconciliation_store.subscription_cycles(self.warehouse), as_of, self.policy.lookback)
        windows = [w for p in periods if (w := reconciliation_window(p, as_of, self.policy.settle_lag)) is not None]
        phases.done("windows")
        if not windows:
            return ReconciliationOutcome([], {}, 0, timings=phases.seconds)
        meter_id = self.stripe.meters.meter_id()
        with ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="reconcile") as pool:
            # Stripe first: the rate limit sets the pace of the run, so the requests start at once
            # and the CDR side is read while they are in flight.
            fetches = {w.period.key: pool.submit(self._fetch, meter_id, w.period.customer_id, w.requests(), StripeMinutes())
                       for w in windows}
            cdr = reconciliation_store.cdr_minutes_by_window(self.warehouse, windows)
            phases.done("cdr_side")
            comparisons, failures = self._compare_all(pool, meter_id, windows, fetches, cdr)
        phases.done("stripe_side")
        drifting_customers = sorted({c.window.period.customer_id for c in comparisons if c.drifting})
        ledger = reconciliation_store.ledger(self.warehouse, drifting_customers, (as_of - self.policy.lookback - timedelta(days=2)).date())
        results = [self._findings(c, ledger) for c in comparisons]
        outcome = ReconciliationOutcome(results, failures, self._requests, timings=phases.seconds)
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

    # --- Stripe side, concurrently -------------------------------------------------------------------

    def _fetch(self, meter_id: str, customer_id: str, requests: Sequence[SummaryRequest], stripe: StripeMinutes) -> StripeMinutes:
        for request in requests:
            usages = self.stripe.meters.summaries(meter_id, customer_id, request.span.start, request.span.end, request.by_day)
            with self._lock:
                self._requests += 1
            stripe.add(request, [(u.start, u.end, u.minutes) for u in usages])
        return stripe

    def _compare_all(self, pool: ThreadPoolExecutor, meter_id: str, windows: Sequence[ReconciliationWindow],
                     fetches: dict, cdr: dict) -> tuple[list[WindowComparison], dict]:  # type: ignore[type-arg]
        """Compare every window once its base requests are in; a drifting edge day gets its split
        request (rare) before the comparison."""
        failures: dict[tuple[str, datetime], str] = {}
        ready: dict[tuple[str, datetime], Any] = {}
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
                stripe = ready[key].result() if not isinstance(ready[key], StripeMinutes) else ready[key]
                comparisons.append(compare(window, cdr[key], stripe))
            except Exception as error:  # noqa: BLE001
                failures[key] = self._failed(window, error)
        return comparisons, failures

    def _failed(self, window: ReconciliationWindow, error: Exception) -> str:
        reason = f"{type(error).__name__}: {str(error)[:300]}"
        if self.log is not None:
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
        since = (self.clock.start - self.policy.lookback - timedelta(days=2)).date()
        ledger_after = reconciliation_store.ledger(self.warehouse, customers, since)
        now = self.clock.now()
        notes = _repair_notes(plan, ledger_after, outcome.sends)
        outcome.results = [
            with_repairs(r, ledger_after, now, self.policy, notes.get(r.period.key)) if r.findings else r for r in outcome.results
        ]

    def _send_all(self, items: Sequence[Correction | LedgerEntry]) -> dict[str, str]:
        """A customer's corrections one after the other (Stripe: one concurrent call per customer)."""
        outcomes = {}
        for item in items:
            result = self.stripe.meters.send_correction(item.customer_id, item.value, item.event_timestamp, item.identifier)
            if result.counted:
                reconciliation_store.mark_sent(self.warehouse, item.identifier, self.clock.now())
            elif result.outcome == "rejected":
                reconciliation_store.mark_failed(self.warehouse, item.identifier, result.message or "rejected")
            else:
                reconciliation_store.note_attempt_error(self.warehouse, item.identifier, result.message or "uncertain")
            outcomes[item.identifier] = result.outcome
            if self.log is not None and not result.counted:
                self.log.warning(f"correction {item.identifier}: {result.outcome} — {result.message}")
        return outcomes


def _repair_notes(plan: CorrectionPlan, ledger_after: Sequence[LedgerEntry],
                  sends: dict[str, str]) -> dict[tuple[str, datetime], dict[date, dict[str, Any]]]:
    """Per customer-period and day: what repair did, for the row's detail JSON."""
    notes: dict[tuple[str, datetime], dict[date, dict[str, Any]]] = defaultdict(dict)
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


# --- rows and metadata ---------------------------------------------------------------------------------


def result_row(result: PeriodResult, now: datetime) -> ReconciliationRow:
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


DRIFT_TABLE_SCHEMA = dg.TableSchema(
    columns=[
        dg.TableColumn("customer_id", "string"),
        dg.TableColumn("period_start", "string"),
        dg.TableColumn("status", "string"),
        dg.TableColumn("cdr_minutes", "int"),
        dg.TableColumn("stripe_minutes", "int"),
        dg.TableColumn("delta_minutes", "int"),
        dg.TableColumn("drift_minutes", "int"),
        dg.TableColumn("unrepaired_minutes", "int"),
        dg.TableColumn("drifting_days", "string"),
        dg.TableColumn("cause", "string"),
    ]
)


def drifting_table(results: Sequence[PeriodResult]) -> dg.MetadataValue:
    drifting = sorted((r for r in results if r.comparison.drift_minutes), key=lambda r: (-r.comparison.drift_minutes, r.period.key))
    records = [
        dg.TableRecord({
            "customer_id": r.period.customer_id,
            "period_start": r.period.period_start.isoformat(),
            "status": r.status.value,
            "cdr_minutes": r.comparison.cdr_minutes,
            "stripe_minutes": r.comparison.stripe_minutes,
            "delta_minutes": r.comparison.delta,
            "drift_minutes": r.comparison.drift_minutes,
            "unrepaired_minutes": r.unrepaired_drift,
            "drifting_days": ", ".join(f"{f.day:%m-%d}:{f.delta:+d}" for f in r.findings),
            "cause": r.cause.value if r.cause else "",
        })
        for r in drifting[:MAX_TABLE_ROWS]
    ]
    return dg.MetadataValue.table(records, schema=DRIFT_TABLE_SCHEMA)


def outcome_metadata(outcome: ReconciliationOutcome, config: ReconciliationConfig, as_of: datetime) -> dict[str, Any]:
    results = outcome.results
    statuses = [r.status.value for r in results]
    drifting = [r for r in results if r.comparison.drift_minutes]
    plan = outcome.plan
    return {
        "dagster/row_count": dg.MetadataValue.int(len(results)),
        "customer_periods": dg.MetadataValue.int(len(results)),
        "matched": dg.MetadataValue.int(statuses.count("match")),
        "under_metered": dg.MetadataValue.int(statuses.count("under_metered")),
        "over_metered": dg.MetadataValue.int(statuses.count("over_metered")),
        "drifting_customer_periods": dg.MetadataValue.int(len(drifting)),
        "total_drift_minutes": dg.MetadataValue.int(sum(r.comparison.drift_minutes for r in results)),
        "unrepaired_drift_minutes": dg.MetadataValue.int(sum(r.unrepaired_drift for r in results)),
        "net_delta_minutes": dg.MetadataValue.int(sum(r.comparison.delta for r in results)),
        "repaired_minutes": dg.MetadataValue.int(sum(r.repaired_minutes for r in results)),
        "corrections_sent": dg.MetadataValue.int(sum(1 for o in outcome.sends.values() if o in ("sent", "already_received"))),
        "corrections_not_sent": dg.MetadataValue.int(sum(1 for o in outcome.sends.values() if o not in ("sent", "already_received"))),
        "corrections_skipped": dg.MetadataValue.int(len(plan.skipped) if plan else 0),
        # over-metering is for a person: how many of those days can still be cancelled (24 h window)
        "over_metered_days": dg.MetadataValue.int(sum(1 for r in results for f in r.findings if f.delta < 0)),
        "over_metered_days_cancellable": dg.MetadataValue.int(sum(r.over_metered_days_cancellable(as_of) for r in results)),
        "failed_customer_periods": dg.MetadataValue.int(len(outcome.failures)),
        "stripe_summary_requests": dg.MetadataValue.int(outcome.summary_requests),
        "unmapped_minutes": dg.MetadataValue.int(outcome.unmapped_minutes),
        "drifting_customers": drifting_table(results),
        "as_of": dg.MetadataValue.timestamp(as_of),
        "repair": dg.MetadataValue.bool(config.repair),
        "settle_lag_minutes": dg.MetadataValue.int(config.settle_lag_minutes),
        "phase_end_seconds": dg.MetadataValue.json(outcome.timings),
        "dagster/table_name": dg.MetadataValue.text("meter_reconciliation"),
    }


def drift_check(outcome: ReconciliationOutcome, tolerance_minutes: int) -> dg.AssetCheckResult:
    offenders = [r for r in outcome.results if r.beyond_tolerance(tolerance_minutes)]
    offenders.sort(key=lambda r: (-r.unrepaired_drift, r.period.key))
    description = (
        f"{len(offenders)} customer-period(s) drift beyond {tolerance_minutes} min without repair"
        if offenders else f"every customer-period within {tolerance_minutes} min (or repaired)"
    )
    if outcome.failures:
        description += f"; {len(outcome.failures)} customer-period(s) could not be reconciled"
    return dg.AssetCheckResult(
        check_name=CHECK_NAME,
        asset_key=ASSET_KEY,
        passed=not offenders and not outcome.failures,
        severity=dg.AssetCheckSeverity.ERROR,
        description=description,
        metadata={
            "tolerance_minutes": dg.MetadataValue.int(tolerance_minutes),
            "customer_periods_beyond_tolerance": dg.MetadataValue.int(len(offenders)),
            "unrepaired_drift_minutes": dg.MetadataValue.int(sum(r.unrepaired_drift for r in offenders)),
            "offenders": dg.MetadataValue.json([
                {"customer_id": r.period.customer_id, "period_start": r.period.period_start.isoformat(),
                 "status": r.status.value, "unrepaired_drift_minutes": r.unrepaired_drift,
                 "cause": r.cause.value if r.cause else None}
                for r in offenders[:MAX_TABLE_ROWS]
            ]),
            "not_reconciled": dg.MetadataValue.json(
                {f"{customer} {start.isoformat()}": why for (customer, start), why in list(outcome.failures.items())[:MAX_TABLE_ROWS]}
            ),
        },
    )


@dg.asset(
    key=ASSET_KEY,
    deps=DEPS,
    group_name="reconciliation",
    kinds={"stripe", "sql"},
    owners=OWNERS,
    description="CDR minutes vs Stripe's meter event summaries per customer-period (current, or closed within "
    "35 days), day by day, with causes; optional repair by corrective meter events (meter_corrections).",
    check_specs=[
        dg.AssetCheckSpec(
            CHECK_NAME,
            asset=ASSET_KEY,
            description="Fails (ERROR) when a customer-period drifts beyond the tolerance (default 0 minutes) "
            "and the drift was not repaired, or when a customer-period could not be reconciled.",
        )
    ],
)
def meter_reconciliation(
    context: dg.AssetExecutionContext,
    config: ReconciliationConfig,
    warehouse: WarehouseResource,
    stripe: StripeResource,
) -> Iterator[dg.MaterializeResult | dg.AssetCheckResult]:
    clock = RunClock(config.start_time())
    wh = warehouse.get()
    reconciler = Reconciler(wh, stripe, config.policy(), clock, context.run.run_id, config.concurrency, context.log)
    outcome = reconciler.run(repair=config.repair)
    now = clock.now()
    reconciliation_store.write_results(wh, context.run.run_id, [result_row(r, now) for r in outcome.results], reconciled_at=now)
    for result in outcome.results:
        if result.beyond_tolerance(config.tolerance_minutes):
            context.log.warning(
                f"{result.period.customer_id} period {result.period.period_start:%Y-%m-%d}: {result.status.value}, "
                f"delta {result.comparison.delta:+d} min, unrepaired drift {result.unrepaired_drift} min, "
                f"cause {result.cause.value if result.cause else 'not explained'}"
            )
    yield dg.MaterializeResult(metadata=outcome_metadata(outcome, config, clock.start))
    yield drift_check(outcome, config.tolerance_minutes)


defs = dg.Definitions(assets=[meter_reconciliation])

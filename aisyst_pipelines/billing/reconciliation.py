"""Reconciliation of CDR minutes with Stripe's meter event summaries (DESIGN.md §2.3): the pure part.

For every customer-period it answers: over which window do we compare, which summary requests
does that take, which days drift and why, and — when repair is on — which corrective meter events
to send. No I/O here: the service (services/reconciliation.py) fetches, this module decides.

Windows (and why there is normally exactly ONE summaries request per customer-period)
-------------------------------------------------------------------------------------
Stripe wants `start_time`/`end_time` on minute boundaries, and on 00:00 UTC when
`value_grouping_window=day`. Billing periods start at the second the subscription was created
(14:23:17), so a period is neither minute- nor day-aligned. The rules:

* The compared window is `[floor_minute(period_start), end)`. Both period edges are floored to the
  minute, so the windows of consecutive periods tile the timeline with no gap and no overlap.
* `end` is `floor_minute(period_end)` once that moment is at least the settle lag old ("closed"
  window). A period still running (or that ended less than the lag ago) is compared up to the last
  UTC midnight at least the settle lag old: Stripe aggregates asynchronously, and a day-aligned
  end keeps the whole window inside one day-grouped request. At 02:00 UTC with the default 1 h
  lag that is today's 00:00 — nothing is lost, the hour after midnight is compared tomorrow.
* The day-grouped request covers the whole UTC days the window touches: `[floor_day(start),
  ceil_day(end))`. Its first (and, for a closed window, last) day reaches outside the window into
  the neighbouring period. Both sides are compared over the same *whole* day: when the day
  matches, the window's part of it is taken to match too (Stripe's value for the part is then
  recorded as inferred); when it drifts, ONE extra ungrouped, minute-aligned request for the
  window's part of that day tells exactly which period the drift belongs to. Drift is rare, so
  the common case stays at one request.
* Only when a closed window's last day is not yet fully settled (the period ended yesterday
  evening) is that partial day read with a second, ungrouped request.

What cannot be seen: minutes moved by an event timestamped on the wrong side of a period edge
*within the same UTC day* (a whole-day match hides it). The voice server stamps each event with
the call's `ended_at` — the same instant the CDR side uses — so this needs a clock error.

Days, statuses, causes
----------------------
Each UTC day of the window is compared (CDR minutes of calls whose `ended_at` falls in the day's
part of the window vs Stripe's summary). `delta = cdr − stripe`: positive is under-metered (Stripe
is missing minutes), negative over-metered. The status of the customer-period follows the sign of
the net delta (what the invoice will get wrong); the drift (Σ |daily delta|) is what ops watch.
A day's cause is named only when the evidence in the warehouse accounts for exactly its delta.

Repair
------
One corrective meter event per customer-day (and period) carrying the missing minutes, with a
deterministic identifier and a timestamp in that day's part of the window. Stripe remembers
identifiers for only ~24 h, so our ledger (`meter_corrections`) is the long-term authority: a
correction is recorded `pending` before it is sent and `sent` after. The plan subtracts the
corrections that may still be in flight (pending ones, re-sent under their own identifier while
Stripe still dedupes them; sent ones younger than the settle lag), so no rerun, crash or retry can
correct a day twice. A pending row older than the identifier window cannot be re-sent safely; it
is expired and the settled summary — which includes it if it ever reached Stripe — decides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import date, datetime, timedelta
from enum import StrEnum
from typing import Any

import pandas as pd

from .periods import DAY, BillingCycle, Period, ceil_day, day_start, floor_day, floor_minute, utc

SECOND = timedelta(seconds=1)

# Stripe's limits (reference/STRIPE.md §2.2, §2.4).
STRIPE_TIMESTAMP_WINDOW = timedelta(days=35)  # meter event timestamps: at most 35 days in the past
STRIPE_IDENTIFIER_WINDOW = timedelta(hours=24)  # identifier uniqueness: "at least 24 hours"
STRIPE_CANCEL_WINDOW = timedelta(hours=24)  # adjustments cancel events received < 24 h ago


class Status(StrEnum):
    MATCH = "match"
    UNDER_METERED = "under_metered"  # Stripe has fewer minutes than the CDRs
    OVER_METERED = "over_metered"  # Stripe has more minutes than the CDRs


class Cause(StrEnum):
    UNMAPPED_ACCOUNT = "unmapped_account_code"  # the customer's calls sit unmapped (customer_id NULL) in call_records
    LATE_CDR = "late_cdr"  # the CDRs arrived after their period had closed
    PERIOD_EDGE = "period_edge"  # calls straddling the period edge, metered on the other side
    DUPLICATE_CDR = "duplicate_cdr"  # the same call loaded twice under two call ids
    STRIPE_PROCESSING = "stripe_processing"  # our corrections are still being aggregated by Stripe
    SEVERAL = "several"  # row level: days with different causes


# Causes after which a positive correction would be wrong: the CDR side over-counts, or Stripe
# has the minutes on the other side of the period edge (a person must judge).
NOT_REPAIRABLE = frozenset({Cause.DUPLICATE_CDR, Cause.PERIOD_EDGE})


@dataclass(frozen=True)
class ReconciliationPolicy:
    """The knobs of a reconciliation run (defaults from the issue and Stripe's limits)."""

    settle_lag: timedelta = timedelta(hours=1)
    tolerance_minutes: int = 0
    lookback: timedelta = STRIPE_TIMESTAMP_WINDOW  # closed periods younger than this are reconciled
    # A correction's timestamp must be this recent; an hour inside Stripe's 35 days absorbs clock
    # skew and the run's own duration.
    correction_max_age: timedelta = STRIPE_TIMESTAMP_WINDOW - timedelta(hours=1)
    # A pending correction younger than this is re-sent under its identifier (Stripe still
    # dedupes it); an hour inside Stripe's 24 h for the same reasons.
    identifier_window: timedelta = STRIPE_IDENTIFIER_WINDOW - timedelta(hours=1)

    def __post_init__(self) -> None:
        if self.settle_lag < timedelta(0):
            raise ValueError("settle_lag must not be negative")
        if self.tolerance_minutes < 0:
            raise ValueError("tolerance_minutes must not be negative")
        if not timedelta(0) < self.correction_max_age <= STRIPE_TIMESTAMP_WINDOW:
            raise ValueError("correction_max_age must lie within Stripe's 35 days")
        if not timedelta(0) < self.identifier_window <= STRIPE_IDENTIFIER_WINDOW:
            raise ValueError("identifier_window must lie within Stripe's 24 hours")


# --- customer-periods and their windows ---------------------------------------------------------


@dataclass(frozen=True)
class CustomerPeriod:
    """One customer's Stripe billing period: what is reconciled, keyed like meter_reconciliation."""

    customer_id: str
    period: Period
    subscription_id: str | None = None
    account_code: str | None = None

    def __post_init__(self) -> None:
        if self.period.start.microsecond or self.period.end.microsecond:
            # Stripe's periods are Unix seconds; a correction's whole-second timestamp must fit inside.
            raise ValueError(f"period of {self.customer_id} is not on whole seconds (Stripe times are Unix seconds)")

    # meter_reconciliation's and meter_corrections' names for the edges.
    @property
    def period_start(self) -> datetime:
        return self.period.start

    @property
    def period_end(self) -> datetime:
        return self.period.end

    @property
    def key(self) -> tuple[str, datetime]:
        return (self.customer_id, self.period.start)


def in_scope(period: CustomerPeriod, now: datetime, lookback: timedelta = STRIPE_TIMESTAMP_WINDOW) -> bool:
    """A current period, or one that closed within `lookback` (Stripe accepts corrections for 35 days)."""
    now = utc(now)
    return period.period_start <= now and period.period_end > now - lookback


@dataclass(frozen=True)
class SubscriptionCycle:
    """What the Stripe mirror knows of a subscription's periods (stripe_subscriptions)."""

    subscription_id: str
    customer_id: str
    current_period_start: datetime
    current_period_end: datetime
    account_code: str | None = None
    billing_cycle_anchor: datetime | None = None
    interval: str | None = None
    interval_count: int | None = None
    started_at: datetime | None = None
    ended_at: datetime | None = None


def subscription_periods(
    subscription: SubscriptionCycle, now: datetime, lookback: timedelta = STRIPE_TIMESTAMP_WINDOW
) -> list[CustomerPeriod]:
    """The subscription's periods in scope at `now`, oldest first: the one running at `now` (or the
    last one, for an ended subscription) and those that closed within `lookback`.

    Periods come from the anniversary cycle (billing.periods), so a mirror that is a renewal behind
    still yields the period running now; an ended subscription's last period stops at `ended_at`.
    """
    now = utc(now)
    current = Period(subscription.current_period_start, subscription.current_period_end)
    cycle = BillingCycle.from_current_period(
        current, subscription.interval or "month", subscription.interval_count or 1, subscription.billing_cycle_anchor
    )
    last_moment = now if subscription.ended_at is None else min(now, utc(subscription.ended_at) - SECOND)
    period = current if current.contains(last_moment) else cycle.period_containing(last_moment)
    started = utc(subscription.started_at) if subscription.started_at is not None else None
    found: list[CustomerPeriod] = []
    while period.end > now - lookback and (started is None or period.end > started):
        end = period.end if subscription.ended_at is None else min(period.end, utc(subscription.ended_at))
        start = period.start if started is None else max(period.start, started)
        if start < end and start <= now:
            found.insert(0, CustomerPeriod(subscription.customer_id, Period(start, end), subscription.subscription_id,
                                           subscription.account_code))
        period = cycle.previous_period(period)
    return found


def customer_periods(
    subscriptions: Iterable[SubscriptionCycle], now: datetime, lookback: timedelta = STRIPE_TIMESTAMP_WINDOW
) -> list[CustomerPeriod]:
    """Every customer-period in scope. Stripe's summaries are per customer, not per subscription, so
    a customer's periods are made to tile: a period overlapping an earlier one (a second
    subscription) starts where the earlier one ends, and disappears when fully covered."""
    by_customer: dict[str, list[CustomerPeriod]] = {}
    for subscription in subscriptions:
        by_customer.setdefault(subscription.customer_id, []).extend(subscription_periods(subscription, now, lookback))
    tiled = []
    for customer_id in sorted(by_customer):
        covered_until: datetime | None = None
        for period in sorted(by_customer[customer_id], key=lambda p: p.period):
            if covered_until is not None and period.period_start < covered_until:
                if period.period_end <= covered_until:
                    continue
                period = replace(period, period=Period(covered_until, period.period_end))
            tiled.append(period)
            covered_until = period.period_end
    return tiled


@dataclass(frozen=True)
class SummaryRequest:
    """One `GET /v1/billing/meters/{id}/event_summaries` call: a span, grouped by UTC day or not."""

    span: Period
    by_day: bool

    def __post_init__(self) -> None:
        aligned = floor_day if self.by_day else floor_minute
        if aligned(self.span.start) != self.span.start or aligned(self.span.end) != self.span.end:
            raise ValueError(f"summary span {self.span} is not aligned for by_day={self.by_day}")


@dataclass(frozen=True)
class DaySlice:
    """The window's part of one UTC day; `grouped`: read from the day-grouped request."""

    day: date
    span: Period
    grouped: bool

    @property
    def full(self) -> Period:
        start = day_start(self.day)
        return Period(start, start + DAY)

    @property
    def partial(self) -> bool:
        return self.span != self.full


@dataclass(frozen=True)
class ReconciliationWindow:
    """The span compared for one customer-period and the summary requests that read it."""

    period: CustomerPeriod
    span: Period
    closed: bool  # the window reaches the period's end; False while the period is running or settling
    grouped: Period | None  # whole UTC days, read with value_grouping_window=day
    tail: Period | None  # a last partial day that is not fully settled yet, read ungrouped

    @property
    def cover(self) -> Period:
        """The whole UTC days the window touches."""
        return Period(floor_day(self.span.start), ceil_day(self.span.end))

    def requests(self) -> list[SummaryRequest]:
        """The requests every comparison needs (splits of drifting edge days come on top)."""
        found = []
        if self.grouped is not None:
            found.append(SummaryRequest(self.grouped, by_day=True))
        if self.tail is not None:
            found.append(SummaryRequest(self.tail, by_day=False))
        return found

    def days(self) -> list[DaySlice]:
        slices = []
        moment = self.cover.start
        while moment < self.span.end:
            nxt = moment + DAY
            part = Period(max(moment, self.span.start), min(nxt, self.span.end))
            grouped = self.grouped is not None and nxt <= self.grouped.end
            slices.append(DaySlice(moment.date(), part, grouped))
            moment = nxt
        return slices


def reconciliation_window(
    period: CustomerPeriod, now: datetime, settle_lag: timedelta = timedelta(hours=1)
) -> ReconciliationWindow | None:
    """The window to compare for `period` at `now`; None while nothing of the period has settled."""
    settled = floor_minute(utc(now) - settle_lag)
    start = floor_minute(period.period_start)
    period_end = floor_minute(period.period_end)
    closed = period_end <= settled
    end = period_end if closed else floor_day(settled)
    if end <= start:
        return None
    grouped_end = ceil_day(end) if ceil_day(end) <= settled else floor_day(end)
    grouped = Period(floor_day(start), grouped_end) if grouped_end > floor_day(start) else None
    tail = Period(max(grouped_end, start), end) if grouped_end < end else None
    return ReconciliationWindow(period, Period(start, end), closed, grouped, tail)


# --- the two sides ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CdrMinutes:
    """Billable minutes from call_records for one window: whole UTC days and the window's parts."""

    by_day: Mapping[date, int]  # every day of the window's cover, whole day
    in_window: Mapping[date, int]  # the window's part of each day

    @property
    def total(self) -> int:
        return sum(self.in_window.values())


def cdr_spans(window: ReconciliationWindow) -> list[Period]:
    """The spans whose CDR minutes the comparison of `window` needs: every whole UTC day of its
    cover, and the window's part of each partial day."""
    spans = []
    for day in window.days():
        spans.append(day.full)
        if day.partial:
            spans.append(day.span)
    return spans


def cdr_minutes_from_spans(window: ReconciliationWindow, minutes: Mapping[tuple[str, Period], int]) -> CdrMinutes:
    """The CDR side of `window` from the minutes of its `cdr_spans` (keyed by customer and span;
    a span without calls may be missing: 0)."""
    customer_id = window.period.customer_id
    by_day, in_window = {}, {}
    for day in window.days():
        by_day[day.day] = int(minutes.get((customer_id, day.full), 0))
        in_window[day.day] = int(minutes.get((customer_id, day.span), 0)) if day.partial else by_day[day.day]
    return CdrMinutes(by_day, in_window)


def summary_minutes(aggregated_value: float) -> int:
    """A summary's `aggregated_value` (a float on the wire) as whole minutes; fractions are refused."""
    if aggregated_value != int(aggregated_value):
        raise ValueError(f"meter summary value {aggregated_value} is not a whole number of minutes")
    return int(aggregated_value)


@dataclass
class StripeMinutes:
    """What Stripe's summaries said for one window: whole UTC days, and ungrouped spans."""

    by_day: dict[date, int] = field(default_factory=dict)
    by_span: dict[Period, int] = field(default_factory=dict)

    def add(self, request: SummaryRequest, summaries: Iterable[tuple[datetime, datetime, float]]) -> None:
        """Record the summaries (start, end, aggregated_value) answering `request`.

        Days without usage may be missing from a grouped answer; they count as 0.
        """
        if request.by_day:
            for start, _end, value in summaries:
                day = utc(start).date()
                self.by_day[day] = self.by_day.get(day, 0) + summary_minutes(value)
        else:
            self.by_span[request.span] = sum(summary_minutes(value) for _s, _e, value in summaries)


# --- comparison ---------------------------------------------------------------------------------


class MissingSplit(LookupError):
    """An edge day drifts and Stripe's value for the window's part of it has not been fetched."""


def splits_needed(window: ReconciliationWindow, cdr: CdrMinutes, stripe: StripeMinutes) -> list[SummaryRequest]:
    """Ungrouped requests for partial days whose whole-day comparison drifts (exact period split)."""
    needed = []
    for day in window.days():
        if day.grouped and day.partial and day.span not in stripe.by_span:
            if cdr.by_day[day.day] != stripe.by_day.get(day.day, 0):
                needed.append(SummaryRequest(day.span, by_day=False))
    return needed


@dataclass(frozen=True)
class DayComparison:
    slice: DaySlice
    cdr_minutes: int
    stripe_minutes: int
    inferred: bool = False  # Stripe's part of an edge day taken as equal: the whole day matched

    @property
    def delta(self) -> int:
        return self.cdr_minutes - self.stripe_minutes


@dataclass(frozen=True)
class WindowComparison:
    window: ReconciliationWindow
    days: tuple[DayComparison, ...]

    @property
    def cdr_minutes(self) -> int:
        return sum(day.cdr_minutes for day in self.days)

    @property
    def stripe_minutes(self) -> int:
        return sum(day.stripe_minutes for day in self.days)

    @property
    def delta(self) -> int:
        return self.cdr_minutes - self.stripe_minutes

    @property
    def drifting(self) -> tuple[DayComparison, ...]:
        return tuple(day for day in self.days if day.delta != 0)

    @property
    def drift_minutes(self) -> int:
        """Gross drift: under- and over-metered days do not cancel out here."""
        return sum(abs(day.delta) for day in self.days)

    @property
    def status(self) -> Status:
        return status_of(self.delta)


def status_of(delta: int) -> Status:
    if delta > 0:
        return Status.UNDER_METERED
    if delta < 0:
        return Status.OVER_METERED
    return Status.MATCH


def compare(window: ReconciliationWindow, cdr: CdrMinutes, stripe: StripeMinutes) -> WindowComparison:
    """Day-by-day comparison over the window; raises MissingSplit when a split is still to fetch."""
    days = []
    for day in window.days():
        cdr_part = cdr.in_window[day.day]
        if not day.grouped:
            days.append(DayComparison(day, cdr_part, stripe.by_span[day.span]))
        elif not day.partial:
            days.append(DayComparison(day, cdr_part, stripe.by_day.get(day.day, 0)))
        elif day.span in stripe.by_span:
            days.append(DayComparison(day, cdr_part, stripe.by_span[day.span]))
        elif cdr.by_day[day.day] == stripe.by_day.get(day.day, 0):
            days.append(DayComparison(day, cdr_part, cdr_part, inferred=True))
        else:
            raise MissingSplit(f"{window.period.customer_id} {day.day}: edge day drifts, fetch {day.span}")
    return WindowComparison(window, tuple(days))


# --- causes -------------------------------------------------------------------------------------

EVIDENCE_COLUMNS = (
    "call_id", "customer_id", "account_code", "started_at", "ended_at", "billable_seconds",
    "billable_minutes", "caller_hash", "callee_hash", "ingested_at",
)
# Two CDRs with different call ids but these fields equal are the same call loaded twice.
_DUPLICATE_KEY = ["account_code", "started_at", "ended_at", "billable_seconds", "caller_hash", "callee_hash"]


@dataclass(frozen=True)
class DayEvidence:
    """Minutes in the warehouse that could explain a day's drift."""

    duplicate_cdr_minutes: int = 0  # extra copies of calls loaded twice under different call ids
    late_cdr_minutes: int = 0  # calls whose CDR arrived after their period had closed
    unmapped_minutes: int = 0  # calls of the customer's account code not attributed to any customer
    edge_in_minutes: int = 0  # calls that started before the period and ended in this day's part
    edge_out_minutes: int = 0  # calls that started in this day's part and ended after the period
    in_flight_correction_minutes: int = 0  # our corrections Stripe may not have aggregated yet

    def nonzero(self) -> dict[str, int]:
        return {name: value for name, value in self.__dict__.items() if value}


def day_evidence(
    period: CustomerPeriod, span: Period, calls: pd.DataFrame, in_flight_minutes: int = 0
) -> DayEvidence:
    """Evidence for one day's part `span` of `period`'s window.

    `calls` holds (at least) the calls of the customer and of its account code that ended or
    started in the span, with the EVIDENCE_COLUMNS.
    """
    if not len(calls):
        return DayEvidence(in_flight_correction_minutes=in_flight_minutes)
    ended = pd.to_datetime(calls["ended_at"], utc=True)
    started = pd.to_datetime(calls["started_at"], utc=True)
    minutes = calls["billable_minutes"].astype("int64")
    start, end = pd.Timestamp(span.start), pd.Timestamp(span.end)
    p_start, p_end = pd.Timestamp(period.period_start), pd.Timestamp(period.period_end)
    mine = (calls["customer_id"] == period.customer_id).to_numpy()
    ends_here = ((ended >= start) & (ended < end)).to_numpy()
    here = calls[mine & ends_here]
    duplicates = 0
    if len(here):
        copies = here.groupby(_DUPLICATE_KEY, dropna=False)["billable_minutes"].agg(["sum", "first"])
        duplicates = int((copies["sum"] - copies["first"]).sum())
    late = int(minutes[mine & ends_here & (pd.to_datetime(calls["ingested_at"], utc=True) >= p_end).to_numpy()].sum())
    unmapped = 0
    if period.account_code is not None:
        unmapped_rows = calls["customer_id"].isna().to_numpy() & (calls["account_code"] == period.account_code).to_numpy()
        unmapped = int(minutes[unmapped_rows & ends_here].sum())
    edge_in = int(minutes[mine & ends_here & (started < p_start).to_numpy()].sum())
    starts_here = ((started >= start) & (started < end)).to_numpy()
    edge_out = int(minutes[mine & starts_here & (ended >= p_end).to_numpy()].sum())
    return DayEvidence(duplicates, late, unmapped, edge_in, edge_out, in_flight_minutes)


def name_cause(delta: int, evidence: DayEvidence) -> Cause | None:
    """The cause whose evidence accounts for exactly the day's delta (in-flight corrections: at least)."""
    if delta > 0:
        if 0 < delta <= evidence.in_flight_correction_minutes:
            return Cause.STRIPE_PROCESSING
        if evidence.duplicate_cdr_minutes == delta:
            return Cause.DUPLICATE_CDR
        if evidence.edge_in_minutes == delta:
            return Cause.PERIOD_EDGE
        if evidence.late_cdr_minutes == delta:
            return Cause.LATE_CDR
    elif delta < 0:
        if evidence.unmapped_minutes == -delta:
            return Cause.UNMAPPED_ACCOUNT
        if evidence.edge_out_minutes == -delta:
            return Cause.PERIOD_EDGE
    return None


# --- the result of one customer-period ----------------------------------------------------------


@dataclass(frozen=True)
class DayFinding:
    comparison: DayComparison
    evidence: DayEvidence
    cause: Cause | None

    @property
    def delta(self) -> int:
        return self.comparison.delta

    @property
    def day(self) -> date:
        return self.comparison.slice.day


@dataclass(frozen=True)
class PeriodResult:
    """A reconciled customer-period: the comparison, the drifting days with their causes."""

    comparison: WindowComparison
    findings: tuple[DayFinding, ...] = ()
    repaired_minutes: int = 0  # minutes of corrections sent this run or still in flight
    repairs: Mapping[date, Mapping[str, Any]] = field(default_factory=dict)  # day -> what repair did

    @property
    def window(self) -> ReconciliationWindow:
        return self.comparison.window

    @property
    def period(self) -> CustomerPeriod:
        return self.comparison.window.period

    @property
    def status(self) -> Status:
        return self.comparison.status

    @property
    def cause(self) -> Cause | None:
        causes = {finding.cause for finding in self.findings if finding.cause is not None}
        if len(causes) > 1:
            return Cause.SEVERAL
        return next(iter(causes), None)

    @property
    def unrepaired_drift(self) -> int:
        return max(self.comparison.drift_minutes - self.repaired_minutes, 0)

    def over_metered_days_cancellable(self, now: datetime) -> int:
        """Over-metered days whose events may still be cancelled by identifier (Stripe's 24 h)."""
        return sum(1 for f in self.findings if f.delta < 0 and cancel_window_open(f.comparison.slice.span, now))

    def beyond_tolerance(self, tolerance_minutes: int) -> bool:
        return self.unrepaired_drift > tolerance_minutes

    def detail(self, now: datetime) -> dict[str, Any]:
        """The JSON detail of the row: the window, and every drifting day with its evidence."""
        window = self.window
        days = []
        for finding in self.findings:
            comparison = finding.comparison
            entry: dict[str, Any] = {
                "day": finding.day.isoformat(),
                "cdr": comparison.cdr_minutes,
                "stripe": comparison.stripe_minutes,
                "delta": finding.delta,
                "cause": finding.cause.value if finding.cause else None,
            }
            if comparison.slice.partial:
                entry["part"] = comparison.slice.span.iso()
            if evidence := finding.evidence.nonzero():
                entry["evidence"] = evidence
            if finding.delta < 0:
                entry.update(over_metering_note(comparison.slice.span, now))
            if finding.day in self.repairs:
                entry["repair"] = dict(self.repairs[finding.day])
            days.append(entry)
        return {
            "window": window.span.iso() | {"closed": window.closed},
            "days_compared": len(self.comparison.days),
            "inferred_edge_days": [d.slice.day.isoformat() for d in self.comparison.days if d.inferred],
            "under_metered_minutes": sum(f.delta for f in self.findings if f.delta > 0),
            "over_metered_minutes": -sum(f.delta for f in self.findings if f.delta < 0),
            "drifting_days": days,
        }


def cancel_window_open(span: Period, now: datetime) -> bool:
    """Can events of calls that ended in `span` (sent on time) still be cancelled at `now`?"""
    return span.end + STRIPE_CANCEL_WINDOW > utc(now)


def over_metering_note(span: Period, now: datetime) -> dict[str, Any]:
    """Over-metering is for a person to judge; say whether Stripe's 24 h cancel window may still apply.

    Stripe cancels an event by identifier (the call id) only within 24 h of receiving it. Events of
    calls that ended in `span` and were sent on time were received before `span.end`; if that is
    less than 24 h ago, some of them can still be cancelled.
    """
    until = span.end + STRIPE_CANCEL_WINDOW
    if cancel_window_open(span, now):
        return {"cancel_window": "open", "cancellable_until": until.isoformat(),
                "action": "cancel the duplicate events by identifier (meter event adjustment) before they age out"}
    return {"cancel_window": "closed",
            "action": "events sent on time are past Stripe's 24 h cancel window (a duplicate received within the "
                      "last 24 h may still be cancelled by its identifier); otherwise a negative correction or a "
                      "credit note, for a person to decide"}


def find_causes(
    comparison: WindowComparison, calls: pd.DataFrame, in_flight: Mapping[date, int] | None = None
) -> tuple[DayFinding, ...]:
    """Evidence and named cause for every drifting day of `comparison`."""
    in_flight = in_flight or {}
    findings = []
    for day in comparison.drifting:
        evidence = day_evidence(comparison.window.period, day.slice.span, calls, in_flight.get(day.slice.day, 0))
        findings.append(DayFinding(day, evidence, name_cause(day.delta, evidence)))
    return tuple(findings)


# --- repair -------------------------------------------------------------------------------------


class CorrectionStatus(StrEnum):
    PENDING = "pending"  # recorded, not known to have reached Stripe
    SENT = "sent"  # Stripe accepted it (or already held its identifier)
    FAILED = "failed"  # Stripe refused it (validation): it never counted
    EXPIRED = "expired"  # pending beyond Stripe's identifier window: the settled summary decides


@dataclass(frozen=True)
class LedgerEntry:
    """A row of meter_corrections."""

    identifier: str
    customer_id: str
    usage_date: date
    period_start: datetime
    value: int
    event_timestamp: datetime
    status: CorrectionStatus
    created_at: datetime
    sent_at: datetime | None = None

    def in_flight(self, now: datetime, policy: ReconciliationPolicy) -> bool:
        """May Stripe still be missing this correction from its settled summaries?"""
        if self.status == CorrectionStatus.PENDING:
            return self.resendable(now, policy)
        if self.status == CorrectionStatus.SENT and self.sent_at is not None:
            return self.sent_at > utc(now) - policy.settle_lag
        return False

    def resendable(self, now: datetime, policy: ReconciliationPolicy) -> bool:
        """Pending and young enough that Stripe would still reject a second copy of the identifier."""
        return self.status == CorrectionStatus.PENDING and self.created_at > utc(now) - policy.identifier_window


@dataclass(frozen=True)
class Correction:
    """A corrective meter event to record and send."""

    identifier: str
    customer_id: str
    usage_date: date
    period_start: datetime
    value: int
    event_timestamp: datetime
    reason: str

    def ledger_entry(self, created_at: datetime) -> LedgerEntry:
        return LedgerEntry(self.identifier, self.customer_id, self.usage_date, self.period_start, self.value,
                           self.event_timestamp, CorrectionStatus.PENDING, created_at)


def correction_identifier(customer_id: str, day: date, sequence: int) -> str:
    """Deterministic: the n-th correction of a customer's UTC day. The ledger's primary key makes a
    second writer of the same number lose, so concurrent runs cannot both correct."""
    return f"aisyst-correction-{customer_id}-{day:%Y%m%d}-{sequence}"


def correction_timestamp(span: Period) -> datetime:
    """The last second of the day's part of the window: inside that day and that period, and as
    recent as possible (Stripe accepts timestamps up to 35 days old)."""
    return span.end - SECOND


def in_flight_by_day(entries: Iterable[LedgerEntry], period: CustomerPeriod, now: datetime,
                     policy: ReconciliationPolicy) -> dict[date, int]:
    found: dict[date, int] = {}
    for entry in entries:
        if entry.customer_id == period.customer_id and entry.period_start == period.period_start and entry.in_flight(now, policy):
            found[entry.usage_date] = found.get(entry.usage_date, 0) + entry.value
    return found


@dataclass(frozen=True)
class CorrectionPlan:
    new: tuple[Correction, ...] = ()
    resend: tuple[LedgerEntry, ...] = ()  # pending rows re-sent under their own identifier
    expire: tuple[LedgerEntry, ...] = ()  # pending rows too old to re-send safely
    skipped: tuple[tuple[str, datetime, date, str], ...] = ()  # (customer, period_start, day, why not repaired)


def plan_corrections(
    results: Sequence[PeriodResult], ledger: Sequence[LedgerEntry], now: datetime, policy: ReconciliationPolicy
) -> CorrectionPlan:
    """What repair does this run: new corrections for under-metered days, re-sends, expiries.

    `ledger` holds the existing meter_corrections rows of the customers in `results`.
    """
    now = utc(now)
    resend = tuple(e for e in ledger if e.resendable(now, policy))
    expire = tuple(e for e in ledger if e.status == CorrectionStatus.PENDING and not e.resendable(now, policy))
    used_sequences: dict[tuple[str, date], int] = {}
    for entry in ledger:
        key = (entry.customer_id, entry.usage_date)
        used_sequences[key] = used_sequences.get(key, 0) + 1
    new, skipped = [], []
    for result in results:
        period = result.period
        in_flight = in_flight_by_day(ledger, period, now, policy)
        for finding in result.findings:
            if finding.delta <= 0:
                continue
            day, span = finding.day, finding.comparison.slice.span
            missing = finding.delta - in_flight.get(day, 0)
            if finding.cause is not None and finding.cause in NOT_REPAIRABLE:
                skipped.append((period.customer_id, period.period_start, day, f"cause {finding.cause.value}: for a person to judge"))
                continue
            if missing <= 0:
                continue
            timestamp = correction_timestamp(span)
            if timestamp < now - policy.correction_max_age:
                skipped.append((period.customer_id, period.period_start, day, "outside Stripe's 35-day timestamp window"))
                continue
            key = (period.customer_id, day)
            used_sequences[key] = used_sequences.get(key, 0) + 1
            reason = f"under-metered by {finding.delta} min on {day.isoformat()}"
            if in_flight.get(day):
                reason += f" ({in_flight[day]} min already in flight)"
            if finding.cause is not None:
                reason += f"; cause {finding.cause.value}"
            new.append(Correction(correction_identifier(period.customer_id, day, used_sequences[key]),
                                  period.customer_id, day, period.period_start, missing, timestamp, reason))
    return CorrectionPlan(tuple(new), resend, expire, tuple(skipped))


def with_repairs(result: PeriodResult, ledger_after: Iterable[LedgerEntry], now: datetime,
                 policy: ReconciliationPolicy, notes: Mapping[date, Mapping[str, Any]] | None = None) -> PeriodResult:
    """`result` with the minutes repaired: corrections of its days that are sent recently or in flight.

    `ledger_after` is the ledger after this run's sends; a correction counts as repairing the
    current drift when it is still in flight (Stripe's summary cannot include it yet).
    """
    repaired = in_flight_by_day(ledger_after, result.period, now, policy)
    drifting_days = {f.day for f in result.findings if f.delta > 0}
    minutes = sum(min(value, next(f.delta for f in result.findings if f.day == day))
                  for day, value in repaired.items() if day in drifting_days)
    return replace(result, repaired_minutes=minutes, repairs=dict(notes or {}))

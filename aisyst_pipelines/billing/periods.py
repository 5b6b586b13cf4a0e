"""Time in billing: aware UTC instants, half-open periods [start, end), and Stripe's anniversary cycle.

Every period here — a subscription's billing period, a reconciliation window, the part of a UTC day
it covers — is one `Period`: half-open, so a call that ends exactly at `end` belongs to the next
one, and in UTC, so two periods compare equal whatever zone their datetimes arrived in.

Stripe counts every period boundary from the subscription's `billing_cycle_anchor`: boundary k is
"anchor + k intervals" with the day clamped to the month's length. A monthly subscription anchored
on Jan 31 renews on Feb 28 (Feb 29 in a leap year), Mar 31, Apr 30, May 31 — never "previous
boundary + 1 month", which would slide to the 28th for good. The time of day is the anchor's.

The sync knows the current period from the subscription item (`current_period_start/end`); this
module derives the neighbouring periods from it. When the anchor is unknown it is recovered from
the current period itself: of two consecutive monthly boundaries at least one is unclamped (every
pair of neighbouring months has a 31-day month), so the anchor day is the larger of the two days.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone

from dateutil.relativedelta import relativedelta

UTC = timezone.utc
DAY = timedelta(days=1)

_FIXED_INTERVALS = {"day": DAY, "week": timedelta(weeks=1)}
_MONTHS_PER = {"month": 1, "year": 12}


# --- UTC instants ---------------------------------------------------------------------------------


def utc(moment: datetime) -> datetime:
    """`moment` in UTC. A naive datetime is refused: which zone it meant cannot be known."""
    if moment.tzinfo is None:
        raise ValueError(f"naive datetime {moment!r}: billing works in aware UTC datetimes")
    return moment.astimezone(UTC)


def from_unix(seconds: int | float | None) -> datetime | None:
    """Stripe's Unix seconds as an aware UTC datetime (None stays None)."""
    return None if seconds is None else datetime.fromtimestamp(int(seconds), UTC)


def floor_minute(moment: datetime) -> datetime:
    return utc(moment).replace(second=0, microsecond=0)


def floor_day(moment: datetime) -> datetime:
    return utc(moment).replace(hour=0, minute=0, second=0, microsecond=0)


def ceil_day(moment: datetime) -> datetime:
    start = floor_day(moment)
    return start if start == utc(moment) else start + DAY


def day_start(day: date) -> datetime:
    return datetime.combine(day, time(0), UTC)


# --- periods --------------------------------------------------------------------------------------


@dataclass(frozen=True, order=True)
class Period:
    """A half-open period [start, end) between two aware UTC datetimes, start < end."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", utc(self.start))
        object.__setattr__(self, "end", utc(self.end))
        if self.end <= self.start:
            raise ValueError(f"period end {self.end} is not after its start {self.start}")

    def contains(self, moment: datetime) -> bool:
        return self.start <= utc(moment) < self.end

    def covers(self, other: Period) -> bool:
        return self.start <= other.start and other.end <= self.end

    def iso(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def add_months(moment: datetime, months: int, anchor_day: int) -> datetime:
    """`moment` moved by `months` calendar months, on `anchor_day` clamped to the target month."""
    return moment + relativedelta(months=months, day=anchor_day)


@dataclass(frozen=True)
class BillingCycle:
    """The boundaries of a recurring price's periods.

    `reference` is any one boundary (the anchor itself, or a period start); `anchor_day` is the
    day of month the anchor falls on (29, 30, 31 survive short months through clamping);
    `interval` is Stripe's `recurring.interval` (day, week, month, year).
    """

    reference: datetime
    anchor_day: int
    interval: str = "month"
    interval_count: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "reference", utc(self.reference))
        if self.interval not in (*_FIXED_INTERVALS, *_MONTHS_PER):
            raise ValueError(f"unknown billing interval {self.interval!r}")
        if self.interval_count < 1:
            raise ValueError(f"interval_count {self.interval_count} must be at least 1")
        if not 1 <= self.anchor_day <= 31:
            raise ValueError(f"anchor day {self.anchor_day} is not a day of a month")

    @classmethod
    def from_anchor(cls, anchor: datetime, interval: str = "month", interval_count: int = 1) -> "BillingCycle":
        anchor = utc(anchor)
        return cls(reference=anchor, anchor_day=anchor.day, interval=interval, interval_count=interval_count)

    @classmethod
    def from_current_period(
        cls,
        period: Period,
        interval: str = "month",
        interval_count: int = 1,
        anchor: datetime | None = None,
    ) -> "BillingCycle":
        """The cycle of a subscription item; Stripe's `billing_cycle_anchor` when known (exact)."""
        if anchor is not None:
            return cls.from_anchor(anchor, interval, interval_count)
        anchor_day = max(period.start.day, period.end.day) if interval in _MONTHS_PER else period.start.day
        return cls(reference=period.start, anchor_day=anchor_day, interval=interval, interval_count=interval_count)

    def boundary(self, k: int) -> datetime:
        """The k-th boundary counted from the reference (k may be negative)."""
        if self.interval in _FIXED_INTERVALS:
            return self.reference + k * self.interval_count * _FIXED_INTERVALS[self.interval]
        return add_months(self.reference, k * self.interval_count * _MONTHS_PER[self.interval], self.anchor_day)

    def _index_at_or_before(self, moment: datetime) -> int:
        """The largest k with boundary(k) <= moment."""
        if self.interval in _FIXED_INTERVALS:
            return (moment - self.reference) // (self.interval_count * _FIXED_INTERVALS[self.interval])
        average = timedelta(days=30.436875 * self.interval_count * _MONTHS_PER[self.interval])
        k = (moment - self.reference) // average  # close; corrected by a step or two below
        while self.boundary(k) > moment:
            k -= 1
        while self.boundary(k + 1) <= moment:
            k += 1
        return k

    def period_containing(self, moment: datetime) -> Period:
        k = self._index_at_or_before(utc(moment))
        return Period(self.boundary(k), self.boundary(k + 1))

    def previous_period(self, period: Period) -> Period:
        """The period that ends where `period` starts.

        When `period` starts off-cycle (a trial that ended mid-cycle, a proration), the previous
        period runs from the last boundary before that start.
        """
        return Period(self.boundary(self._index_at_or_before(period.start - timedelta(microseconds=1))), period.start)

    def next_period(self, period: Period) -> Period:
        k = self._index_at_or_before(period.end)
        return Period(period.end, self.boundary(k + 1))


def recent_periods(
    current: Period,
    cycle: BillingCycle,
    count: int = 2,
    not_before: datetime | None = None,
) -> list[Period]:
    """The current period and the `count - 1` before it, oldest first.

    Periods that end on or before `not_before` (the subscription's start) are left out: a
    subscription that began this period has no previous one.
    """
    periods = [current]
    while len(periods) < count:
        previous = cycle.previous_period(periods[0])
        if not_before is not None and previous.end <= utc(not_before):
            break
        periods.insert(0, previous)
    return periods

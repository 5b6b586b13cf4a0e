"""Billing periods on Stripe's anniversary cycle, half-open [start, end) in UTC.

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

import calendar
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

_FIXED_INTERVALS = {"day": timedelta(days=1), "week": timedelta(weeks=1)}
_MONTHS_PER = {"month": 1, "year": 12}


def _require_aware(moment: datetime, what: str) -> datetime:
    if moment.tzinfo is None:
        raise ValueError(f"{what} {moment!r} is naive; billing periods are aware UTC datetimes")
    return moment.astimezone(timezone.utc)


@dataclass(frozen=True, order=True)
class BillingPeriod:
    """A billing period [start, end): a call that ends exactly at `end` belongs to the next one."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        object.__setattr__(self, "start", _require_aware(self.start, "period start"))
        object.__setattr__(self, "end", _require_aware(self.end, "period end"))
        if self.end <= self.start:
            raise ValueError(f"period end {self.end} is not after its start {self.start}")

    def contains(self, moment: datetime) -> bool:
        return self.start <= _require_aware(moment, "moment") < self.end

    @classmethod
    def from_unix(cls, start: int, end: int) -> "BillingPeriod":
        """From Stripe's Unix seconds (`current_period_start`, `current_period_end`)."""
        return cls(datetime.fromtimestamp(start, timezone.utc), datetime.fromtimestamp(end, timezone.utc))


def add_months(moment: datetime, months: int, anchor_day: int) -> datetime:
    """`moment` moved by `months` calendar months, on `anchor_day` clamped to the target month."""
    month_index = moment.month - 1 + months
    year = moment.year + month_index // 12
    month = month_index % 12 + 1
    return moment.replace(year=year, month=month, day=min(anchor_day, calendar.monthrange(year, month)[1]))


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
        object.__setattr__(self, "reference", _require_aware(self.reference, "cycle reference"))
        if self.interval not in (*_FIXED_INTERVALS, *_MONTHS_PER):
            raise ValueError(f"unknown billing interval {self.interval!r}")
        if self.interval_count < 1:
            raise ValueError(f"interval_count {self.interval_count} must be at least 1")
        if not 1 <= self.anchor_day <= 31:
            raise ValueError(f"anchor day {self.anchor_day} is not a day of a month")

    @classmethod
    def from_anchor(cls, anchor: datetime, interval: str = "month", interval_count: int = 1) -> "BillingCycle":
        anchor = _require_aware(anchor, "billing cycle anchor")
        return cls(reference=anchor, anchor_day=anchor.day, interval=interval, interval_count=interval_count)

    @classmethod
    def from_current_period(
        cls,
        period: BillingPeriod,
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

    def period_containing(self, moment: datetime) -> BillingPeriod:
        k = self._index_at_or_before(_require_aware(moment, "moment"))
        return BillingPeriod(self.boundary(k), self.boundary(k + 1))

    def previous_period(self, period: BillingPeriod) -> BillingPeriod:
        """The period that ends where `period` starts.

        When `period` starts off-cycle (a trial that ended mid-cycle, a proration), the previous
        period runs from the last boundary before that start.
        """
        return BillingPeriod(self.boundary(self._index_at_or_before(period.start - timedelta(microseconds=1))), period.start)

    def next_period(self, period: BillingPeriod) -> BillingPeriod:
        k = self._index_at_or_before(period.end)
        return BillingPeriod(period.end, self.boundary(k + 1))


def recent_periods(
    current: BillingPeriod,
    cycle: BillingCycle,
    count: int = 2,
    not_before: datetime | None = None,
) -> list[BillingPeriod]:
    """The current period and the `count - 1` before it, oldest first.

    Periods that end on or before `not_before` (the subscription's start) are left out: a
    subscription that began this period has no previous one.
    """
    periods = [current]
    while len(periods) < count:
        previous = cycle.previous_period(periods[0])
        if not_before is not None and previous.end <= _require_aware(not_before, "not_before"):
            break
        periods.insert(0, previous)
    return periods

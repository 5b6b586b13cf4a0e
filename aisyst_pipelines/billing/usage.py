"""Minutes used in a billing period, and what they mean against the tier's allowance.

A call belongs to the period that contains its `ended_at` (the voice server sends the meter event
when the call ends), so a call that starts before a renewal and ends after it counts entirely in
the new period. The minutes of a period are the sum of the per-call billable minutes (each call
rounded up on its own, as the meter events are) — never the rounded sum of seconds.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from .periods import BillingPeriod
from .thresholds import usage_percentage


@dataclass(frozen=True)
class CallTotals:
    """What the calls of one customer in one period add up to."""

    calls: int = 0
    billable_seconds: int = 0
    billable_minutes: int = 0

    def __add__(self, other: "CallTotals") -> "CallTotals":
        return CallTotals(
            self.calls + other.calls,
            self.billable_seconds + other.billable_seconds,
            self.billable_minutes + other.billable_minutes,
        )


@dataclass(frozen=True)
class RatedCall:
    ended_at: datetime
    billable_seconds: int
    billable_minutes: int


def totals_in_period(calls: Iterable[RatedCall], period: BillingPeriod) -> CallTotals:
    """Sum the calls whose `ended_at` lies in [period.start, period.end)."""
    total = CallTotals()
    for call in calls:
        if period.contains(call.ended_at):
            total += CallTotals(1, call.billable_seconds, call.billable_minutes)
    return total


@dataclass(frozen=True)
class PeriodUsage:
    """One row of `usage_by_period`: minutes used against the included minutes (None = unlimited)."""

    period: BillingPeriod
    included_minutes: int | None
    totals: CallTotals

    @property
    def minutes_used(self) -> int:
        return self.totals.billable_minutes

    @property
    def minutes_unused(self) -> int | None:
        """Included minutes left; None for unlimited tiers (there is nothing to leave unused)."""
        if self.included_minutes is None:
            return None
        return max(self.included_minutes - self.minutes_used, 0)

    @property
    def overage_minutes(self) -> int:
        """Minutes beyond the allowance; always 0 on unlimited tiers."""
        if self.included_minutes is None:
            return 0
        return max(self.minutes_used - self.included_minutes, 0)

    @property
    def usage_pct(self) -> float | None:
        """Minutes used as a percentage of the included ones; None for unlimited (and 0-minute) tiers."""
        return usage_percentage(self.minutes_used, self.included_minutes)

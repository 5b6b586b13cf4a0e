"""Minutes used in a billing period, and what they mean against the tier's allowance.

A call belongs to the period that contains its `ended_at` (the voice server sends the meter event
when the call ends), so a call that starts before a renewal and ends after it counts entirely in
the new period. The minutes of a period are the sum of the per-call billable minutes (each call
rounded up on its own, as the meter events are) — never the rounded sum of seconds.
"""

from __future__ import annotations

from dataclasses import dataclass

from .periods import Period
from .thresholds import usage_percentage


@dataclass(frozen=True)
class CallTotals:
    """What the calls of one customer in one period add up to."""

    calls: int = 0
    billable_seconds: int = 0
    billable_minutes: int = 0


@dataclass(frozen=True)
class PeriodUsage:
    """One row of `usage_by_period`: minutes used against the included minutes (None = unlimited)."""

    period: Period
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

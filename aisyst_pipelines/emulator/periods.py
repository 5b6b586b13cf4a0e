"""Billing-period arithmetic as Stripe does it: anniversaries counted from the cycle anchor.

A monthly subscription anchored on Jan 31 renews on Feb 28 (Feb 29 in a leap year), then on
Mar 31 again: each boundary is "anchor + k intervals" with the day clamped to the month's length,
never "previous boundary + 1 month" (which would drift to the 28th for good).
"""

from __future__ import annotations

import calendar
from datetime import UTC, datetime

_FIXED = {"day": 86400, "week": 7 * 86400}


def _add_months(moment: datetime, months: int) -> datetime:
    month_index = moment.month - 1 + months
    year = moment.year + month_index // 12
    month = month_index % 12 + 1
    day = min(moment.day, calendar.monthrange(year, month)[1])
    return moment.replace(year=year, month=month, day=day)


def boundary(anchor: int, interval: str, interval_count: int, k: int) -> int:
    """The k-th period boundary (k may be negative) of a cycle anchored at `anchor` (Unix s)."""
    if interval in _FIXED:
        return anchor + k * interval_count * _FIXED[interval]
    start = datetime.fromtimestamp(anchor, UTC)
    months = k * interval_count * (12 if interval == "year" else 1)
    if interval not in ("month", "year"):
        raise ValueError(f"unknown interval {interval!r}")
    return int(_add_months(start, months).timestamp())


def next_boundary_after(anchor: int, interval: str, interval_count: int, moment: int) -> int:
    """The first boundary strictly after `moment`."""
    if interval in _FIXED:
        step = interval_count * _FIXED[interval]
        k = (moment - anchor) // step + 1
        return anchor + k * step
    # Estimate k from an average month, then correct by walking (a step or two at most).
    step_guess = 30.436875 * 86400 * interval_count * (12 if interval == "year" else 1)
    k = int((moment - anchor) // step_guess)
    while boundary(anchor, interval, interval_count, k) > moment:
        k -= 1
    while boundary(anchor, interval, interval_count, k) <= moment:
        k += 1
    return boundary(anchor, interval, interval_count, k)


def iso(moment: int) -> str:
    return datetime.fromtimestamp(moment, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")

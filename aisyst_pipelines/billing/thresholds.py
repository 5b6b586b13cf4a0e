"""Usage-threshold alerts (DESIGN.md §2.5): which thresholds a customer reached, which alert to send.

Plain decision logic, no I/O. The rules, and the bugs of other billing systems they avoid
(BILLING_ANCHORS.md §4.1, §7.4):

- An alert is identified by (customer, period_start, included_minutes, threshold). The period in the
  key re-arms every threshold at renewal without comparing against a carried-over value (the
  lago-api#6132 bug: a crossing in the first hours of a new period was never reported); the
  included minutes in the key re-arm them after a tier change.
- Only the highest newly reached threshold is notified. A customer who jumps from 70 % to 105 %
  between two runs gets the 100 % message; the 80 % row is recorded as `superseded`, so the
  history says what happened and a later run does not send it.
- Alerts are recorded state, not recomputed events: a second run finds its rows and sends nothing
  (the flexprice#1916 review: stateless alerts re-fire on every run).
- A row stays `pending` until its delivery succeeded; a later run retries it while it is still
  true. A pending alert that stopped being true (usage corrected downwards, tier changed, plan
  became unlimited) is `withdrawn`; one whose period ended before delivery is `expired`.
- Unlimited tiers (included_minutes None) never alert; neither does a tier with 0 included minutes
  (there is no allowance to warn about).

Percentages are compared in integers (minutes_used * 100 >= threshold * included), so exactly
400 of 500 minutes is 80 % and 399 of 500 is not — no floating-point edge.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from enum import StrEnum

DEFAULT_THRESHOLDS: tuple[int, ...] = (80, 100)


class AlertStatus(StrEnum):
    PENDING = "pending"  # reached, delivery not yet successful
    NOTIFIED = "notified"  # the customer e-mail was delivered
    SUPERSEDED = "superseded"  # reached together with a higher threshold: recorded, never sent
    WITHDRAWN = "withdrawn"  # was pending, no longer true (usage corrected, tier changed)
    EXPIRED = "expired"  # was pending when its period ended: too late to warn


def parse_thresholds(text: str | Iterable[int]) -> tuple[int, ...]:
    """`"80,100"` (or an iterable of ints) → (80, 100): sorted, unique, each 1..1000 percent."""
    raw = [part.strip() for part in text.split(",")] if isinstance(text, str) else list(text)
    values: set[int] = set()
    for part in raw:
        if part == "":
            continue
        try:
            value = int(part)
        except (TypeError, ValueError):
            raise ValueError(f"threshold {part!r} is not a whole percentage") from None
        if not 1 <= value <= 1000:
            raise ValueError(f"threshold {value} is outside 1..1000 percent")
        values.add(value)
    if not values:
        raise ValueError("at least one threshold percentage is needed")
    return tuple(sorted(values))


def is_limited(included_minutes: int | None) -> bool:
    """A tier with an allowance worth warning about (not unlimited, not zero)."""
    return included_minutes is not None and included_minutes > 0


def usage_percentage(minutes_used: int, included_minutes: int | None) -> float | None:
    """Minutes used as a percentage of the included minutes; None for unlimited or 0-minute tiers."""
    if not is_limited(included_minutes):
        return None
    assert included_minutes is not None
    return round(minutes_used * 100 / included_minutes, 2)


def reached_thresholds(minutes_used: int, included_minutes: int | None, thresholds: Sequence[int]) -> tuple[int, ...]:
    """The thresholds (ascending) that `minutes_used` has reached; empty for unlimited tiers."""
    if not is_limited(included_minutes):
        return ()
    assert included_minutes is not None
    return tuple(t for t in sorted(thresholds) if minutes_used * 100 >= t * included_minutes)


@dataclass(frozen=True)
class RecordedAlert:
    """An existing usage_alerts row of the same customer and period (any included_minutes)."""

    threshold_pct: int
    included_minutes: int
    status: AlertStatus


@dataclass(frozen=True)
class StatusChange:
    threshold_pct: int
    included_minutes: int
    status: AlertStatus


@dataclass(frozen=True)
class AlertPlan:
    """What one run does for one customer-period.

    `new_alerts`: (threshold, status) rows to insert under the current included minutes;
    `status_changes`: existing rows whose status changes; `notify`: the threshold (current
    included minutes) whose customer e-mail is to be delivered now, new or a retry.
    """

    new_alerts: tuple[tuple[int, AlertStatus], ...] = ()
    status_changes: tuple[StatusChange, ...] = ()
    notify: int | None = None

    @property
    def is_empty(self) -> bool:
        return not self.new_alerts and not self.status_changes and self.notify is None


def plan_alerts(
    minutes_used: int, included_minutes: int | None, recorded: Sequence[RecordedAlert], thresholds: Sequence[int]
) -> AlertPlan:
    """Decide the alert rows and the one notification of a customer's current period.

    `minutes_used` and `included_minutes` (None = unlimited) describe the period now; `recorded`
    holds every row of this customer and period_start (also those of an earlier tier, i.e. other
    included_minutes). Deterministic and idempotent: applying the plan and planning again with the
    same usage yields an empty plan.
    """
    reached = reached_thresholds(minutes_used, included_minutes, thresholds)
    current = {r.threshold_pct: r for r in recorded if r.included_minutes == included_minutes}
    changes: list[StatusChange] = []

    # Pending rows that are no longer true: another tier's rows, or thresholds usage fell back under.
    for row in recorded:
        if row.status is not AlertStatus.PENDING:
            continue
        if row.included_minutes != included_minutes or row.threshold_pct not in reached:
            changes.append(StatusChange(row.threshold_pct, row.included_minutes, AlertStatus.WITHDRAWN))

    if not reached:
        return AlertPlan(status_changes=tuple(changes))

    highest = reached[-1]
    new_alerts: list[tuple[int, AlertStatus]] = []
    for threshold in reached:
        row = current.get(threshold)
        if threshold == highest:
            if row is None:
                new_alerts.append((threshold, AlertStatus.PENDING))
        elif row is None:
            new_alerts.append((threshold, AlertStatus.SUPERSEDED))
        elif row.status is AlertStatus.PENDING:
            # A lower alert whose delivery failed is overtaken by the higher one: send only that.
            changes.append(StatusChange(threshold, row.included_minutes, AlertStatus.SUPERSEDED))

    top = current.get(highest)
    notify = highest if top is None or top.status is AlertStatus.PENDING else None
    return AlertPlan(new_alerts=tuple(new_alerts), status_changes=tuple(changes), notify=notify)


def days_left_in_period(period_end: datetime, now: datetime) -> int:
    """Whole days until the period ends, counting a started day (0 once the period is over)."""
    remaining = (period_end - now).total_seconds()
    return max(math.ceil(remaining / 86400), 0)


# --- silence: usage that stops is news too ---------------------------------------------------------


@dataclass(frozen=True)
class SilencePolicy:
    """A customer is *silent* when usage was recorded on at least `min_active_days` of the last
    `window_days` complete UTC days, and on none of the last `quiet_days`. A metering or CDR outage
    looks exactly like zero usage, so ops want to see it (BILLING_ANCHORS.md §7.4)."""

    window_days: int = 14
    quiet_days: int = 2
    min_active_days: int = 8  # "most of" 14 days

    def __post_init__(self) -> None:
        if not 0 < self.quiet_days < self.window_days:
            raise ValueError("quiet_days must be at least 1 and shorter than window_days")
        if not 0 < self.min_active_days <= self.window_days - self.quiet_days:
            raise ValueError("min_active_days must fit into the window before the quiet days")

    def window(self, today: date) -> tuple[date, date]:
        """The complete days looked at: [first, last] inclusive, ending yesterday."""
        return today - timedelta(days=self.window_days), today - timedelta(days=1)


@dataclass(frozen=True)
class SilentCustomer:
    customer_id: str
    active_days: int  # days with usage in the window
    last_usage_date: date
    silent_since: date  # the first day without usage: identifies one silence episode

    def days_silent(self, today: date) -> int:
        """Complete days without usage before `today`."""
        return (today - self.silent_since).days


def find_silent_customers(
    daily_minutes: Mapping[str, Mapping[date, int]], today: date, policy: SilencePolicy = SilencePolicy()
) -> list[SilentCustomer]:
    """Customers whose usage stopped: active on most of the window, nothing in the last quiet days.

    `daily_minutes[customer][day]` are billable minutes per UTC day (missing day = 0); days
    outside the window are ignored. `today` is the (incomplete) current UTC day, not looked at.
    """
    first, last = policy.window(today)
    quiet_from = today - timedelta(days=policy.quiet_days)
    silent: list[SilentCustomer] = []
    for customer_id, by_day in sorted(daily_minutes.items()):
        active = sorted(day for day, minutes in by_day.items() if minutes > 0 and first <= day <= last)
        if not active or active[-1] >= quiet_from or len(active) < policy.min_active_days:
            continue
        silent.append(
            SilentCustomer(
                customer_id=customer_id,
                active_days=len(active),
                last_usage_date=active[-1],
                silent_since=active[-1] + timedelta(days=1),
            )
        )
    return silent

"""usage_alerts and usage_silence: the recorded state that makes each alert go out once.

usage_alerts has one row per (customer, period_start, included_minutes, threshold). Life of a row
(decisions in `aisyst_pipelines.billing.thresholds`):
- `pending`     reached; the customer e-mail is not delivered yet (a failed attempt keeps the row
                pending with `last_error`, and the next run retries it while it is still true);
- `notified`    the e-mail was accepted by the mail server (or written to the outbox);
- `superseded`  reached together with a higher threshold (only the highest is sent);
- `withdrawn`   was pending, no longer true (usage corrected, tier changed);
- `expired`     was pending when its period ended.

`ops_notified_at` says the row's current status went out in an ops digest; it is cleared whenever
the status changes, so the digest reports each transition once (a failure, later its delivery) and
a second run that changes nothing sends no digest.

usage_silence keeps one row per silence episode (customer, first day without usage), so ops hear
about an episode once.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import astuple, dataclass, fields
from datetime import date, datetime, timedelta

from sqlalchemy import and_, func, select, tuple_, update

from aisyst_pipelines.billing.thresholds import AlertPlan, AlertStatus, RecordedAlert, SilentCustomer

from . import work_queue
from .database import Warehouse
from .schema import (
    stripe_customers,
    stripe_subscriptions,
    usage_alerts,
    usage_by_period,
    usage_daily,
    usage_silence,
)
from .upsert import conflict_insert

_CHUNK = 400  # keys per IN list: far below SQLite's and PostgreSQL's bound-parameter limits


def _chunks(values: Sequence, size: int = _CHUNK) -> Iterable[Sequence]:  # type: ignore[type-arg]
    for offset in range(0, len(values), size):
        yield values[offset : offset + size]


@dataclass(frozen=True)
class AlertKey:
    customer_id: str
    period_start: datetime
    included_minutes: int
    threshold_pct: int


@dataclass(frozen=True)
class AlertRow:
    customer_id: str
    period_start: datetime
    threshold_pct: int
    included_minutes: int
    subscription_id: str
    period_end: datetime
    tier_name: str | None
    minutes_used: int
    usage_pct: float
    crossed_at: datetime
    status: AlertStatus
    attempts: int
    last_attempt_at: datetime | None
    claimed_at: datetime | None
    notified_at: datetime | None
    ops_notified_at: datetime | None
    last_error: str | None

    @property
    def key(self) -> AlertKey:
        return AlertKey(self.customer_id, self.period_start, self.included_minutes, self.threshold_pct)


# The customer e-mails are a leased work queue keyed like AlertKey (its fields, in their order).
ALERTS = work_queue.WorkQueue(usage_alerts, tuple(f.name for f in fields(AlertKey)))


_ALERT_COLUMNS = [usage_alerts.c[name] for name in AlertRow.__dataclass_fields__]


def _alert_row(row) -> AlertRow:  # type: ignore[no-untyped-def]
    values = row._asdict()
    values["status"] = AlertStatus(values["status"])
    return AlertRow(**values)


def _key_values(key: AlertKey) -> list[work_queue.Key]:
    return [astuple(key)]


# --- the current periods to look at ----------------------------------------------------------------

# Subscriptions that are still being served: alerts (and silence) concern these only.
SERVED_STATUSES = ("active", "trialing", "past_due")


@dataclass(frozen=True)
class CurrentPeriodUsage:
    """A served subscription's mirrored current period with the usage_by_period row computed for it
    (None when usage_by_period has not been computed for that period yet) and its customer."""

    subscription_id: str
    customer_id: str
    status: str
    tier_name: str | None
    included_minutes: int | None  # None = unlimited (or an unknown tier: never alerted)
    period_start: datetime
    period_end: datetime
    test_clock: str | None
    calls: int | None
    billable_seconds: int | None
    minutes_used: int | None
    usage_computed_at: datetime | None
    customer_name: str | None
    customer_email: str | None
    preferred_locale: str | None = None  # the customer's language for its alert e-mail


def current_period_usage(warehouse: Warehouse) -> list[CurrentPeriodUsage]:
    """Every served subscription's current period as the Stripe sync mirrored it, with the minutes
    the usage_by_period asset computed for exactly that period (reused, never recomputed here)."""
    s, u, k = stripe_subscriptions.c, usage_by_period.c, stripe_customers.c
    statement = (
        select(
            s.subscription_id, s.customer_id, s.status, s.tier_name, s.included_minutes,
            s.current_period_start.label("period_start"), s.current_period_end.label("period_end"), s.test_clock,
            u.calls, u.billable_seconds, u.minutes_used, u.computed_at.label("usage_computed_at"),
            k.name.label("customer_name"), k.email.label("customer_email"), k.preferred_locale,
        )
        .select_from(
            stripe_subscriptions.outerjoin(
                usage_by_period,
                and_(u.subscription_id == s.subscription_id, u.period_start == s.current_period_start),
            ).outerjoin(stripe_customers, k.customer_id == s.customer_id)
        )
        .where(
            s.status.in_(SERVED_STATUSES),
            s.current_period_start.is_not(None),
            s.current_period_end.is_not(None),
        )
        .order_by(s.customer_id, s.subscription_id)
    )
    with warehouse.connect() as connection:
        return [CurrentPeriodUsage(**row._asdict()) for row in connection.execute(statement)]


# --- reading and recording decisions --------------------------------------------------------------


def recorded_alerts(
    warehouse: Warehouse, periods: Iterable[tuple[str, datetime]]
) -> dict[tuple[str, datetime], list[RecordedAlert]]:
    """The rows of each (customer_id, period_start), whatever their included minutes."""
    wanted = sorted(set(periods))
    result: dict[tuple[str, datetime], list[RecordedAlert]] = defaultdict(list)
    c = usage_alerts.c
    with warehouse.connect() as connection:
        for chunk in _chunks(wanted):
            statement = select(c.customer_id, c.period_start, c.threshold_pct, c.included_minutes, c.status).where(
                tuple_(c.customer_id, c.period_start).in_(chunk)
            )
            for row in connection.execute(statement):
                result[(row.customer_id, row.period_start)].append(
                    RecordedAlert(row.threshold_pct, row.included_minutes, AlertStatus(row.status))
                )
    return {key: result.get(key, []) for key in wanted}


@dataclass(frozen=True)
class AlertFacts:
    """What a new row records about the period at the time its threshold was first seen crossed."""

    customer_id: str
    subscription_id: str
    period_start: datetime
    period_end: datetime
    tier_name: str | None
    included_minutes: int | None  # None (unlimited) only for plans that merely withdraw old rows
    minutes_used: int
    usage_pct: float


def record_plan(warehouse: Warehouse, facts: AlertFacts, plan: AlertPlan, as_of: datetime) -> None:
    """Store a plan: insert its new rows (a row already there is kept as it is) and apply its status
    changes to rows that are still pending (a concurrent run cannot undo a delivery)."""
    with warehouse.begin() as connection:
        if plan.new_alerts:
            assert facts.included_minutes is not None, "an unlimited tier has no thresholds"
            rows = [
                dict(
                    customer_id=facts.customer_id, period_start=facts.period_start, threshold_pct=threshold,
                    included_minutes=facts.included_minutes, subscription_id=facts.subscription_id,
                    period_end=facts.period_end, tier_name=facts.tier_name, minutes_used=facts.minutes_used,
                    usage_pct=facts.usage_pct, crossed_at=as_of, status=status.value, attempts=0,
                )
                for threshold, status in plan.new_alerts
            ]
            work_queue.enqueue(connection, ALERTS, rows)
        for change in plan.status_changes:
            key = AlertKey(facts.customer_id, facts.period_start, change.included_minutes, change.threshold_pct)
            work_queue.update_rows(
                connection, ALERTS, _key_values(key), where=usage_alerts.c.status == AlertStatus.PENDING.value,
                status=change.status.value, ops_notified_at=None,
            )


def expire_pending(warehouse: Warehouse, current_periods: Iterable[tuple[str, datetime]]) -> int:
    """Pending alerts of any period that is not a current (customer_id, period_start) of this run —
    the period renewed, the subscription ended — are too late to send: `expired`. Returns how many."""
    current = set(current_periods)
    c = usage_alerts.c
    with warehouse.begin() as connection:
        stale = [
            (row.customer_id, row.period_start)
            for row in connection.execute(
                select(c.customer_id, c.period_start).where(c.status == AlertStatus.PENDING.value).distinct()
            )
            if (row.customer_id, row.period_start) not in current
        ]
        expired = 0
        for chunk in _chunks(stale):
            expired += connection.execute(
                update(usage_alerts)
                .where(c.status == AlertStatus.PENDING.value, tuple_(c.customer_id, c.period_start).in_(chunk))
                .values(status=AlertStatus.EXPIRED.value, ops_notified_at=None)
            ).rowcount
    return expired


def pending_alert(warehouse: Warehouse, key: AlertKey) -> AlertRow | None:
    with warehouse.connect() as connection:
        row = connection.execute(
            select(*_ALERT_COLUMNS).where(work_queue.key_clause(ALERTS, _key_values(key)), usage_alerts.c.status == AlertStatus.PENDING.value)
        ).first()
    return _alert_row(row) if row is not None else None


DELIVERY_LEASE = timedelta(minutes=15)  # a claim older than this belongs to a run that died


def claim_delivery(warehouse: Warehouse, key: AlertKey, at: datetime, lease: timedelta = DELIVERY_LEASE) -> bool:
    """Take the pending alert for delivery. False when it is no longer pending or another run is
    delivering it right now (two runs at once must not send the same e-mail twice). The row stays
    `pending` while claimed: its status says what the customer was told, not who is sending."""
    due = and_(work_queue.key_clause(ALERTS, _key_values(key)), usage_alerts.c.status == AlertStatus.PENDING.value)
    with warehouse.begin() as connection:
        claimed = work_queue.claim(connection, ALERTS, due=due, now=at, lease=lease)
    return len(claimed) == 1


def record_delivery(warehouse: Warehouse, key: AlertKey, at: datetime, error: str | None) -> None:
    """One delivery attempt of the customer e-mail: success makes the row `notified`; a failure keeps
    it `pending` with the (credential-free) error, so the next run retries it. Never marks a failed
    delivery sent."""
    values: dict[str, object] = {"last_attempt_at": at}
    if error is None:
        values |= {"status": AlertStatus.NOTIFIED.value, "notified_at": at, "ops_notified_at": None}
    # A failure leaves ops_notified_at alone: a new row is reported with its first failure, and a
    # retry that fails again is not news (the asset check keeps showing it).
    with warehouse.begin() as connection:
        work_queue.record_attempt(
            connection, ALERTS, _key_values(key), error=error, where=usage_alerts.c.status == AlertStatus.PENDING.value, **values
        )


def alerts_to_report(warehouse: Warehouse) -> list[AlertRow]:
    """Rows whose current status has not been in an ops digest yet, oldest first."""
    c = usage_alerts.c
    with warehouse.connect() as connection:
        rows = connection.execute(
            select(*_ALERT_COLUMNS)
            .where(c.ops_notified_at.is_(None))
            .order_by(c.crossed_at, c.customer_id, c.threshold_pct)
        ).all()
    return [_alert_row(row) for row in rows]


def alerts_in_periods(warehouse: Warehouse, periods: Iterable[tuple[str, datetime]]) -> list[AlertRow]:
    """All rows of the given (customer_id, period_start) pairs (for the flagged-customers table)."""
    wanted = sorted(set(periods))
    c = usage_alerts.c
    rows: list[AlertRow] = []
    with warehouse.connect() as connection:
        for chunk in _chunks(wanted):
            statement = select(*_ALERT_COLUMNS).where(tuple_(c.customer_id, c.period_start).in_(chunk))
            rows.extend(_alert_row(row) for row in connection.execute(statement))
    return sorted(rows, key=lambda r: (r.customer_id, r.period_start, r.included_minutes, r.threshold_pct))


def undelivered_alerts(warehouse: Warehouse) -> list[AlertRow]:
    """Pending rows with at least one failed attempt: what the asset check reports."""
    c = usage_alerts.c
    with warehouse.connect() as connection:
        rows = connection.execute(
            select(*_ALERT_COLUMNS)
            .where(c.status == AlertStatus.PENDING.value, c.last_error.is_not(None))
            .order_by(c.customer_id, c.period_start)
        ).all()
    return [_alert_row(row) for row in rows]


def status_counts(warehouse: Warehouse) -> dict[str, int]:
    c = usage_alerts.c
    with warehouse.connect() as connection:
        return {status: count for status, count in connection.execute(select(c.status, func.count()).group_by(c.status))}


# --- silence ----------------------------------------------------------------------------------------


def daily_minutes(
    warehouse: Warehouse, customer_ids: Iterable[str], first_day: date, last_day: date
) -> dict[str, dict[date, int]]:
    """Billable minutes per customer and UTC day in [first_day, last_day] from usage_daily (all of a
    customer's account codes summed). Every requested customer is in the result, days without usage
    are simply missing."""
    wanted = sorted(set(customer_ids))
    result: dict[str, dict[date, int]] = {customer_id: {} for customer_id in wanted}
    c = usage_daily.c
    with warehouse.connect() as connection:
        for chunk in _chunks(wanted):
            statement = (
                select(c.customer_id, c.usage_date, func.sum(c.billable_minutes))
                .where(c.customer_id.in_(chunk), c.usage_date >= first_day, c.usage_date <= last_day)
                .group_by(c.customer_id, c.usage_date)
            )
            for customer_id, usage_date, minutes in connection.execute(statement):
                result[customer_id][usage_date] = int(minutes or 0)
    return result


@dataclass(frozen=True)
class SilenceRow:
    customer_id: str
    silent_since: date
    last_usage_date: date
    active_days: int
    window_days: int
    detected_at: datetime
    ops_notified_at: datetime | None


def record_silence(warehouse: Warehouse, silent: Sequence[SilentCustomer], window_days: int, now: datetime) -> None:
    """One row per episode; an episode already recorded is kept as it is."""
    if not silent:
        return
    rows = [
        dict(
            customer_id=s.customer_id, silent_since=s.silent_since, last_usage_date=s.last_usage_date,
            active_days=s.active_days, window_days=window_days, detected_at=now,
        )
        for s in silent
    ]
    with warehouse.begin() as connection:
        connection.execute(conflict_insert(warehouse.dialect, usage_silence).on_conflict_do_nothing(), rows)


def silence_to_report(warehouse: Warehouse, current: Sequence[SilentCustomer]) -> list[SilenceRow]:
    """Episodes found in this run that no ops digest has carried yet (an episode that ended before
    its report could go out is not news any more)."""
    keys = sorted({(s.customer_id, s.silent_since) for s in current})
    c = usage_silence.c
    rows: list[SilenceRow] = []
    with warehouse.connect() as connection:
        for chunk in _chunks(keys):
            statement = select(*usage_silence.c).where(
                tuple_(c.customer_id, c.silent_since).in_(chunk), c.ops_notified_at.is_(None)
            )
            rows.extend(SilenceRow(**row._asdict()) for row in connection.execute(statement))
    return sorted(rows, key=lambda r: (r.customer_id, r.silent_since))


def mark_reported(
    warehouse: Warehouse, alerts: Sequence[AlertRow], silence: Sequence[SilenceRow], at: datetime
) -> None:
    """After a delivered digest: its rows are reported in the status the digest showed."""
    with warehouse.begin() as connection:
        for row in alerts:
            work_queue.update_rows(
                connection, ALERTS, _key_values(row.key), where=usage_alerts.c.status == row.status.value, ops_notified_at=at
            )
        c = usage_silence.c
        for row in silence:
            connection.execute(
                update(usage_silence)
                .where(c.customer_id == row.customer_id, c.silent_since == row.silent_since)
                .values(ops_notified_at=at)
            )

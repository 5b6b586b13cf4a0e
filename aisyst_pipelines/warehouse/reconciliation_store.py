"""All SQL of the reconciliation with Stripe's meter: meter_reconciliation and meter_corrections.

- `subscription_cycles`: what the Stripe mirror knows of each subscription's periods, with the
  customer's account code;
- `cdr_minutes_by_window` / `evidence_calls`: the CDR side (minutes by `ended_at`, summed in SQL over
  the spans the comparison needs) and the calls that can explain a drifting day (duplicates, late arrivals, unmapped calls, period-edge calls);
- the corrections ledger: `record_pending` inserts a correction before it is sent (a primary-key
  conflict means another run already owns that identifier, and this one must not send it);
  `mark_sent` / `mark_failed` / `note_attempt_error` / `expire` record what happened after (the
  queue steps of `work_queue`);
- `write_results`: one meter_reconciliation row per customer-period and run (a retried run
  rewrites its own rows; earlier runs stay as history, v_reconciliation_latest shows the newest).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

import pandas as pd
from sqlalchemy import Column, MetaData, String, Table, and_, bindparam, delete, func, insert, or_, select

from aisyst_pipelines.billing.periods import DAY, Period, day_start, floor_day
from aisyst_pipelines.billing.reconciliation import (
    EVIDENCE_COLUMNS,
    CdrMinutes,
    Correction,
    CorrectionStatus,
    LedgerEntry,
    ReconciliationWindow,
    SubscriptionCycle,
    cdr_minutes_from_spans,
    cdr_spans,
)

from . import work_queue
from .database import Warehouse
from .schema import call_records, meter_corrections, meter_reconciliation, stripe_customers, stripe_subscriptions
from .types import UtcDateTime
from .work_queue import WorkQueue

_CHUNK = 500  # keys per IN list: well below SQLite's and PostgreSQL's bound-parameter limits
# A subscription whose first payment failed for good never started: no usage belongs to it.
# (`incomplete` ones are reconciled: their period runs while the payment is retried.)
NEVER_STARTED = ("incomplete_expired",)


def _chunks(values: Sequence, size: int = _CHUNK) -> Iterable[Sequence]:  # type: ignore[type-arg]
    for offset in range(0, len(values), size):
        yield values[offset : offset + size]


# --- inputs ------------------------------------------------------------------------------------------


def subscription_cycles(warehouse: Warehouse) -> list[SubscriptionCycle]:
    """Every mirrored subscription with a known current period, with its customer's account code."""
    s, c = stripe_subscriptions.c, stripe_customers.c
    statement = (
        select(
            s.subscription_id, s.customer_id, s.current_period_start, s.current_period_end, c.account_code,
            s.billing_cycle_anchor, s.billing_interval, s.billing_interval_count, s.started_at, s.ended_at,
        )
        .select_from(stripe_subscriptions.outerjoin(stripe_customers, c.customer_id == s.customer_id))
        .where(s.current_period_start.is_not(None), s.current_period_end.is_not(None), s.status.not_in(NEVER_STARTED))
        .order_by(s.customer_id, s.subscription_id)
    )
    with warehouse.connect() as connection:
        return [
            SubscriptionCycle(
                subscription_id=row.subscription_id,
                customer_id=row.customer_id,
                current_period_start=row.current_period_start,
                current_period_end=row.current_period_end,
                account_code=row.account_code,
                billing_cycle_anchor=row.billing_cycle_anchor,
                interval=row.billing_interval,
                interval_count=row.billing_interval_count,
                started_at=row.started_at,
                ended_at=row.ended_at,
            )
            for row in connection.execute(statement)
        ]


# The window parts of partial days (at most two per window), summed in one indexed join.
_recon_parts = Table(
    "recon_parts",
    MetaData(),
    Column("customer_id", String(64), primary_key=True),
    Column("span_start", UtcDateTime, primary_key=True),
    Column("span_end", UtcDateTime, primary_key=True),
    prefixes=["TEMPORARY"],
)


def _utc_day(warehouse: Warehouse):  # type: ignore[no-untyped-def]
    """The UTC day of call_records.ended_at as 'YYYY-MM-DD' text. SQLite stores naive UTC text;
    PostgreSQL converts explicitly, whatever the session's time zone."""
    if warehouse.dialect == "postgresql":
        return func.to_char(func.timezone("UTC", call_records.c.ended_at), "YYYY-MM-DD")
    return func.substr(call_records.c.ended_at, 1, 10)


def cdr_minutes_in_spans(warehouse: Warehouse, spans: Iterable[tuple[str, Period]]) -> dict[tuple[str, Period], int]:
    """Billable minutes of each (customer_id, span) from call_records, by `ended_at` in [start, end).

    Whole UTC days are summed with one GROUP BY per chunk of customers; other spans (the parts of
    partial days) through a temporary table joined on the (customer_id, ended_at) index. Spans
    without calls are left out (0).
    """
    wanted = {(customer_id, span) for customer_id, span in spans}
    whole_days = {(customer_id, span) for customer_id, span in wanted
                  if span.end - span.start == DAY and span.start == floor_day(span.start)}
    parts = sorted((customer_id, span.start, span.end) for customer_id, span in wanted - whole_days)
    found: dict[tuple[str, Period], int] = {}
    if whole_days:
        c = call_records.c
        day = _utc_day(warehouse).label("day")
        first = min(span.start for _c, span in whole_days)
        last = max(span.end for _c, span in whole_days)
        statement = (
            select(c.customer_id, day, func.sum(c.billable_minutes))
            .where(c.customer_id.in_(bindparam("customers", expanding=True)),
                   c.ended_at >= bindparam("first", type_=UtcDateTime), c.ended_at < bindparam("last", type_=UtcDateTime))
            .group_by(c.customer_id, day)
        )
        with warehouse.connect() as connection:
            for chunk in _chunks(sorted({customer_id for customer_id, _span in whole_days})):
                for customer_id, text_day, minutes in connection.execute(
                        statement, {"customers": list(chunk), "first": first, "last": last}):
                    start = day_start(date.fromisoformat(str(text_day)))
                    key = (customer_id, Period(start, start + DAY))
                    if key in whole_days:
                        found[key] = int(minutes or 0)
    if parts:
        p, c = _recon_parts.c, call_records.c
        statement = (
            select(p.customer_id, p.span_start, p.span_end, func.sum(c.billable_minutes))
            .select_from(_recon_parts.join(
                call_records, and_(c.customer_id == p.customer_id, c.ended_at >= p.span_start, c.ended_at < p.span_end)))
            .group_by(p.customer_id, p.span_start, p.span_end)
        )
        with warehouse.begin() as connection:
            _recon_parts.create(connection)
            try:
                for chunk in _chunks(parts, 5000):
                    connection.execute(insert(_recon_parts), [
                        {"customer_id": customer_id, "span_start": start, "span_end": end} for customer_id, start, end in chunk
                    ])
                for customer_id, start, end, minutes in connection.execute(statement):
                    found[(customer_id, Period(start, end))] = int(minutes or 0)
            finally:
                _recon_parts.drop(connection)
    return found


def cdr_minutes_by_window(warehouse: Warehouse, windows: Sequence[ReconciliationWindow]) -> dict[tuple[str, datetime], CdrMinutes]:
    """The CDR side of every window, keyed by (customer_id, period_start): its `cdr_spans` summed in SQL."""
    minutes = cdr_minutes_in_spans(warehouse, [(w.period.customer_id, span) for w in windows for span in cdr_spans(w)])
    return {w.period.key: cdr_minutes_from_spans(w, minutes) for w in windows}


def evidence_calls(warehouse: Warehouse, customer_id: str, account_code: str | None, span: Period) -> pd.DataFrame:
    """The calls that can explain a drifting day `span` of a customer: its own calls and its account
    code's unmapped ones, that ended in the span or started in it (those may end after the period)."""
    c = call_records.c
    whose = c.customer_id == customer_id
    if account_code is not None:
        whose = or_(whose, and_(c.customer_id.is_(None), c.account_code == account_code))
    when = or_(and_(c.ended_at >= span.start, c.ended_at < span.end), and_(c.started_at >= span.start, c.started_at < span.end))
    statement = select(*(c[name] for name in EVIDENCE_COLUMNS)).where(whose, when)
    with warehouse.connect() as connection:
        rows = connection.execute(statement).all()
    return pd.DataFrame(rows, columns=list(EVIDENCE_COLUMNS))


# --- the corrections ledger ----------------------------------------------------------------------------


_LEDGER_COLUMNS = ("identifier", "customer_id", "usage_date", "period_start", "value", "event_timestamp", "status",
                   "created_at", "sent_at")


def _entry(row) -> LedgerEntry:  # type: ignore[no-untyped-def]
    return LedgerEntry(row.identifier, row.customer_id, row.usage_date, row.period_start, int(row.value),
                       row.event_timestamp, CorrectionStatus(row.status), row.created_at, row.sent_at)


def ledger(warehouse: Warehouse, customer_ids: Sequence[str], since: date) -> list[LedgerEntry]:
    """The corrections of these customers for days from `since` on (every status), and every
    pending correction whoever it is for (a pending row must be re-sent or expired even when its
    customer no longer drifts)."""
    m = meter_corrections.c
    columns = [m[name] for name in _LEDGER_COLUMNS]
    statement = select(*columns).where(m.customer_id.in_(bindparam("customers", expanding=True)), m.usage_date >= since)
    entries: dict[str, LedgerEntry] = {}
    with warehouse.connect() as connection:
        for chunk in _chunks(sorted(set(customer_ids))):
            for row in connection.execute(statement, {"customers": list(chunk)}):
                entries[row.identifier] = _entry(row)
        for row in connection.execute(select(*columns).where(m.status == CorrectionStatus.PENDING.value)):
            entries[row.identifier] = _entry(row)
    return sorted(entries.values(), key=lambda e: e.identifier)


# The ledger is a work queue without a lease: a correction is owned by the run whose insert won
# (`record_pending`), not claimed by whoever sends next, and no row carries a claim to expire.
CORRECTIONS = WorkQueue(meter_corrections, ("identifier",))


def record_pending(warehouse: Warehouse, corrections: Sequence[Correction], created_at: datetime, run_id: str) -> list[str]:
    """Record corrections as `pending` BEFORE they are sent; returns the identifiers this call
    inserted. An identifier already in the ledger (another run got there first) is not returned
    and must not be sent by this run."""
    rows = [
        dict(
            identifier=correction.identifier, customer_id=correction.customer_id, usage_date=correction.usage_date,
            period_start=correction.period_start, value=correction.value,
            event_timestamp=correction.event_timestamp, reason=correction.reason, run_id=run_id,
            created_at=created_at, status=CorrectionStatus.PENDING.value, attempts=0,
        )
        for correction in corrections
    ]
    if not rows:
        return []
    with warehouse.begin() as connection:
        return [identifier for (identifier,) in work_queue.enqueue(connection, CORRECTIONS, rows)]


def _record_attempt(warehouse: Warehouse, identifier: str, error: str | None, **values: Any) -> None:
    with warehouse.begin() as connection:
        work_queue.record_attempt(connection, CORRECTIONS, [(identifier,)], error=error, **values)


def mark_sent(warehouse: Warehouse, identifier: str, sent_at: datetime) -> None:
    """Stripe accepted the event (or already held its identifier)."""
    _record_attempt(warehouse, identifier, None, status=CorrectionStatus.SENT.value, sent_at=sent_at)


def mark_failed(warehouse: Warehouse, identifier: str, error: str) -> None:
    """Stripe refused the event for good (validation): it never counted."""
    _record_attempt(warehouse, identifier, error, status=CorrectionStatus.FAILED.value)


def note_attempt_error(warehouse: Warehouse, identifier: str, error: str) -> None:
    """A send that may or may not have reached Stripe: the row stays pending and is re-sent under
    its identifier while Stripe still dedupes it."""
    _record_attempt(warehouse, identifier, error)


def expire(warehouse: Warehouse, identifiers: Sequence[str]) -> None:
    """Pending rows past Stripe's identifier window: never re-sent; the settled summary decides."""
    if not identifiers:
        return
    with warehouse.begin() as connection:
        work_queue.update_rows(connection, CORRECTIONS, [(identifier,) for identifier in identifiers],
                               status=CorrectionStatus.EXPIRED.value)


# --- results -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReconciliationRow:
    customer_id: str
    period_start: datetime
    period_end: datetime
    subscription_id: str | None
    window_start: datetime
    window_end: datetime
    window_closed: bool
    cdr_minutes: int
    stripe_minutes: int
    delta_minutes: int
    drift_minutes: int
    drifting_days: int
    status: str
    cause: str | None
    detail: str
    repaired_minutes: int
    unrepaired_drift_minutes: int


def write_results(warehouse: Warehouse, run_id: str, rows: Sequence[ReconciliationRow], reconciled_at: datetime) -> int:
    """This run's rows: a retry of the same run replaces its own rows, other runs are kept."""
    records = [
        row.__dict__ | {"run_id": run_id, "window_closed": int(row.window_closed), "reconciled_at": reconciled_at}
        for row in rows
    ]
    with warehouse.begin() as connection:
        connection.execute(delete(meter_reconciliation).where(meter_reconciliation.c.run_id == run_id))
        for chunk in _chunks(records, 1000):
            connection.execute(insert(meter_reconciliation), list(chunk))
    return len(records)


def run_results(warehouse: Warehouse, run_id: str) -> list[dict]:  # type: ignore[type-arg]
    """The rows a run wrote (for checks and tests)."""
    with warehouse.connect() as connection:
        return [dict(row) for row in connection.execute(
            select(meter_reconciliation).where(meter_reconciliation.c.run_id == run_id)
            .order_by(meter_reconciliation.c.customer_id, meter_reconciliation.c.period_start)
        ).mappings()]

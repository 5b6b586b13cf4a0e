"""Stripe events into the warehouse: stripe_invoices, subscription status, the ledger and ops alerts.

`apply_events` (and `apply_event` for one) is the one handler behind both delivery paths (the
polling sensor, a page at a time, and the webhook, an event at a time). Events are applied in ONE
transaction together with their `stripe_events_applied` ledger rows, so an event is applied exactly
once however many times and by whichever path it arrives: the ledger rows are inserted first, and a
second delivery finds its row and stops (on PostgreSQL a concurrent second delivery waits on the
primary key until the first commits, then finds it).

Ops alerts raised by an event are queued in `stripe_event_alerts` inside the same transaction and
sent afterwards (`claim_event_alerts`, then `mark_event_alerts_sent` / `_failed`): an alert is never
lost to a mail outage and never sent twice for one event.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import (
    BigInteger,
    Connection,
    Integer,
    String,
    Table,
    and_,
    case,
    func,
    or_,
    select,
    update,
)
from aisyst_pipelines.warehouse.upsert import conflict_insert
from sqlalchemy.sql.elements import ColumnElement

from aisyst_pipelines.billing.invoice_lines import annotation_version_of
from aisyst_pipelines.billing.stripe_events import (
    INVOICE_STATUS_RANK,
    OpsAlert,
    OverdueInvoice,
    StripeEvent,
    days_overdue,
    invoice_alerts,
    overdue_alert,
    subscription_alerts,
)

from . import work_queue
from .database import Warehouse
from .invoice_annotation_store import FINAL_STATUSES as ANNOTATION_FINAL_STATUSES
from .schema import invoice_annotations, stripe_event_alerts, stripe_events_applied, stripe_invoices, stripe_subscriptions
from .types import UtcDateTime


# A Stripe subscription object (JSON) → the stripe_subscriptions columns (ValueError: cannot map it).
SubscriptionRowBuilder = Callable[[Mapping[str, Any]], Mapping[str, Any]]


@dataclass(frozen=True)
class EventOutcome:
    """What applying one event did. `outcome`: applied | stale (older than the stored row, kept out)
    | ignored (a type we do not track) | duplicate (delivered before: nothing done). The ledger row
    says `claimed` only inside the applying transaction, never after it commits."""

    event_id: str
    event_type: str
    outcome: str
    alerts: tuple[OpsAlert, ...] = ()

    @property
    def is_new(self) -> bool:
        return self.outcome != "duplicate"


def _insert(connection: Connection, table: Table):  # type: ignore[no-untyped-def]
    # RETURNING (not rowcount, which psycopg 3 reports as -1 here) tells whether a row was written.
    return conflict_insert(connection.dialect.name, table)


def apply_event(
    warehouse: Warehouse,
    event: StripeEvent,
    *,
    source: str,
    now: datetime,
    mirror_row: SubscriptionRowBuilder | None = None,
) -> EventOutcome:
    """Apply one Stripe event (idempotent). `source`: "sensor" or "webhook".

    `mirror_row` turns a subscription object into a full stripe_subscriptions row (the Stripe sync's
    own mapping, tier included); with it a subscription created or re-priced since the last sync is
    mirrored at once. Without it, events move status and period of mirrored subscriptions only."""
    [outcome] = apply_events(warehouse, [event], source=source, now=now, mirror_row=mirror_row)
    return outcome


def apply_events(
    warehouse: Warehouse,
    events: Sequence[StripeEvent],
    *,
    source: str,
    now: datetime,
    mirror_row: SubscriptionRowBuilder | None = None,
) -> list[EventOutcome]:
    """Apply events in the order given, in ONE transaction (a sensor page: one commit, not a hundred).

    The ledger rows of all the events are claimed first, in one statement, and only then are the
    invoices and subscriptions touched: a concurrent delivery of one of these events (the webhook)
    waits on its ledger row without holding any row this transaction still needs, so the two cannot
    deadlock; it then finds the event applied."""
    if not events:
        return []
    with warehouse.begin() as connection:
        claimed = _claim(connection, events, source=source, now=now)
        batch = _Batch()
        outcomes = []
        for event in events:
            if event.id not in claimed:
                outcomes.append(EventOutcome(event.id, event.type, "duplicate"))
                continue
            outcome = _apply_claimed(connection, event, now=now, mirror_row=mirror_row, batch=batch)
            batch.record(event, outcome.outcome)
            outcomes.append(outcome)
        by_outcome: dict[str, list[str]] = {}
        for outcome in outcomes:
            if outcome.outcome != "duplicate":
                by_outcome.setdefault(outcome.outcome, []).append(outcome.event_id)
        for name, ids in by_outcome.items():
            connection.execute(
                update(stripe_events_applied).where(stripe_events_applied.c.event_id.in_(ids)).values(outcome=name)
            )
        return outcomes


@dataclass
class _Batch:
    """The newest event applied per object within the current transaction (their ledger rows still
    say `claimed`, so the ledger alone would not tell an older event of the batch that it is stale)."""

    newest: dict[str, datetime] = field(default_factory=dict)

    def record(self, event: StripeEvent, outcome: str) -> None:
        object_id = event.object_id
        if outcome == "applied" and object_id is not None:
            self.newest[object_id] = max(self.newest.get(object_id, event.created), event.created)


def _claim(connection: Connection, events: Sequence[StripeEvent], *, source: str, now: datetime) -> set[str]:
    """Insert the ledger rows; the ids returned are the events no delivery has applied before."""
    rows = [
        dict(event_id=e.id, event_type=e.type, object_id=e.object_id, created=e.created, source=source,
             outcome="claimed", applied_at=now)
        for e in {e.id: e for e in events}.values()
    ]
    # The rows as executemany parameters: the statement is compiled once and cached (`.values(rows)`
    # compiled a 100-row INSERT for every page, a sixth of the events sensor's CPU).
    statement = (
        _insert(connection, stripe_events_applied)
        .on_conflict_do_nothing(index_elements=["event_id"])
        .returning(stripe_events_applied.c.event_id)
    )
    return set(connection.scalars(statement, rows))


def _apply_claimed(
    connection: Connection, event: StripeEvent, *, now: datetime, mirror_row: SubscriptionRowBuilder | None, batch: _Batch
) -> EventOutcome:
    if event.is_invoice_event:
        outcome, alerts = _apply_invoice_event(connection, event, now)
    elif event.is_subscription_event:
        outcome, alerts = _apply_subscription_event(connection, event, now, mirror_row, batch)
    else:
        outcome, alerts = "ignored", []
    _queue_alerts(connection, alerts, now)
    return EventOutcome(event.id, event.type, outcome, tuple(alerts))


# --- invoices --------------------------------------------------------------------------------------


def _status_rank(column: ColumnElement[str]) -> ColumnElement[int]:
    return case(INVOICE_STATUS_RANK, value=column, else_=0)


@cache
def _invoice_upsert(dialect_name: str):  # type: ignore[no-untyped-def]
    """INSERT … ON CONFLICT DO UPDATE … WHERE newer, built once per dialect and executed with bound
    parameters (building it per event cost more than the database work)."""
    statement = conflict_insert(dialect_name, stripe_invoices)
    excluded = statement.excluded
    stored = stripe_invoices.c
    # The row only moves forward: a newer event replaces it, an older one (arriving late) does not.
    # Same second: the lifecycle rank decides (finalized and paid are often one second apart or less).
    newer = or_(
        stored.last_event_created < excluded.last_event_created,
        and_(stored.last_event_created == excluded.last_event_created,
             _status_rank(stored.status) <= _status_rank(excluded.status)),
    )
    return statement.on_conflict_do_update(
        index_elements=["invoice_id"],
        set_={column.name: excluded[column.name] for column in stripe_invoices.columns if column.name not in _NOT_FROM_EVENTS},
        where=newer,
    ).returning(stored.invoice_id)


# Columns an event never writes: the key, and what the overdue watch keeps (`watch_overdue_invoices`).
_NOT_FROM_EVENTS = frozenset({"invoice_id", "overdue_at", "days_overdue"})


def _apply_invoice_event(connection: Connection, event: StripeEvent, now: datetime) -> tuple[str, list[OpsAlert]]:
    row = event.invoice_row
    written = connection.execute(_invoice_upsert(connection.dialect.name), asdict(row) | {"updated_at": now}).first()
    if written is None:
        return "stale", []
    annotated = event.type == "invoice.finalized" and _renewal_annotated(connection, event, row.invoice_id)
    return "applied", invoice_alerts(event, row, annotated=annotated)


def _renewal_annotated(connection: Connection, event: StripeEvent, invoice_id: str) -> bool:
    """Our usage annotation is on the invoice (its metadata) or accounted for by the annotation job:
    annotated, deliberately skipped, or already reported as missed (that job alerts ops itself)."""
    if annotation_version_of(event.object.get("metadata")):
        return True
    status = connection.scalar(
        select(invoice_annotations.c.status).where(invoice_annotations.c.invoice_id == invoice_id)
    )
    return status in ANNOTATION_FINAL_STATUSES


# --- subscriptions ---------------------------------------------------------------------------------


def _apply_subscription_event(
    connection: Connection, event: StripeEvent, now: datetime, mirror_row: SubscriptionRowBuilder | None, batch: _Batch
) -> tuple[str, list[OpsAlert]]:
    change = event.subscription_status
    subs = stripe_subscriptions.c
    # Lock the subscription's row (PostgreSQL; SQLite holds the database write lock already since
    # the ledger insert), so two deliveries of different events of one subscription serialize.
    stored = connection.execute(
        select(subs.status, subs.price_id).where(subs.subscription_id == change.subscription_id).with_for_update()
    ).first()
    newest_applied = connection.scalar(
        select(func.max(stripe_events_applied.c.created)).where(
            stripe_events_applied.c.object_id == change.subscription_id,
            stripe_events_applied.c.outcome == "applied",
        )
    )
    newest_in_batch = batch.newest.get(change.subscription_id)
    if any(newest is not None and newest > change.event_created for newest in (newest_applied, newest_in_batch)):
        return "stale", []
    stored_status = stored.status if stored is not None else None
    full_row = _mirror_row(mirror_row, event)
    if full_row is not None and (stored is None or stored.price_id != full_row.get("price_id")):
        # A subscription the mirror does not know yet, or a tier change: the whole mirror row, with
        # the tier resolved exactly as the Stripe sync does it.
        values = dict(full_row) | {"synced_at": now}
        statement = _insert(connection, stripe_subscriptions).values(**values)
        connection.execute(statement.on_conflict_do_update(
            index_elements=["subscription_id"],
            set_={name: statement.excluded[name] for name in values if name != "subscription_id"},
        ))
    elif stored is not None:
        values = {
            "status": change.status,
            "cancel_at_period_end": int(change.cancel_at_period_end),
            "canceled_at": change.canceled_at,
            "ended_at": change.ended_at,
            "synced_at": now,
        }
        if change.current_period_start is not None and change.current_period_end is not None:
            values |= {"current_period_start": change.current_period_start, "current_period_end": change.current_period_end}
        connection.execute(update(stripe_subscriptions).where(subs.subscription_id == change.subscription_id).values(**values))
    # else: unknown and not mappable here — the next Stripe sync inserts it (and reports why it can't).
    return "applied", subscription_alerts(event, change, stored_status=stored_status)


def _mirror_row(mirror_row: SubscriptionRowBuilder | None, event: StripeEvent) -> Mapping[str, Any] | None:
    """The full mirror row, or None when the sync's mapping cannot read the subscription (no items,
    unreadable tier metadata, an odd price) or its row would not fit `stripe_subscriptions`: such a
    subscription is left to the sync, which reports it, and the event still moves status and period."""
    if mirror_row is None:
        return None
    try:
        row = mirror_row(event.object)
    except Exception:  # noqa: BLE001 - a pure mapping of an object from an event: any failure is "cannot map"
        return None
    return row if _storable(stripe_subscriptions, row) else None


def _storable(table: Table, row: Mapping[str, Any]) -> bool:
    """Every value fits its column on both backends (PostgreSQL refuses what SQLite would store):
    text without NUL and within the column's length, whole numbers within its range, aware times."""
    for name, value in row.items():
        column_type = table.c[name].type
        if value is None:
            continue
        if isinstance(column_type, String):  # Text too
            length = column_type.length
            if not isinstance(value, str) or "\x00" in value or (length is not None and len(value) > length):
                return False
        elif isinstance(column_type, Integer):  # BigInteger too
            bits = 64 if isinstance(column_type, BigInteger) else 32
            if not isinstance(value, int) or not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
                return False
        elif isinstance(column_type, UtcDateTime):
            if not isinstance(value, datetime) or value.tzinfo is None:
                return False
    return True


# --- overdue invoices (paid by invoice: Net 30) ------------------------------------------------------


def watch_overdue_invoices(warehouse: Warehouse, *, now: datetime) -> list[OverdueInvoice]:
    """Open invoices whose due date has passed: each gets `overdue_at` and one ops alert the first time
    (in the same transaction, so never twice), and its whole `days_overdue` as of `now`; an invoice no
    longer open loses its days overdue. Returns the invoices that became overdue now."""
    t = stripe_invoices.c
    with warehouse.begin() as connection:
        connection.execute(update(stripe_invoices).where(t.status != "open", t.days_overdue.is_not(None)).values(days_overdue=None))
        due = connection.execute(
            select(t.invoice_id, t.customer_id, t.subscription_id, t.number, t.amount_remaining, t.currency, t.due_date,
                   t.overdue_at, t.days_overdue)
            .where(t.status == "open", t.due_date.is_not(None), t.due_date < now)
        ).all()
        newly: list[OverdueInvoice] = []
        for row in due:
            days = days_overdue(row.due_date, now)
            values: dict[str, Any] = {}
            if row.overdue_at is None:
                values["overdue_at"] = now
                newly.append(OverdueInvoice(row.invoice_id, row.customer_id, row.subscription_id, row.number,
                                            row.amount_remaining, row.currency, row.due_date))
            if row.days_overdue != days:
                values["days_overdue"] = days
            if values:
                connection.execute(update(stripe_invoices).where(t.invoice_id == row.invoice_id).values(**values))
        _queue_alerts(connection, [overdue_alert(invoice) for invoice in newly], now)
    return newly


# --- ops alerts ------------------------------------------------------------------------------------


# Ops alerts are a leased work queue: `pending` → `sending` (claimed) → `sent`, or back to `pending`.
EVENT_ALERTS = work_queue.WorkQueue(stripe_event_alerts, ("event_id", "kind"))


def _queue_alerts(connection: Connection, alerts: Sequence[OpsAlert], now: datetime) -> None:
    if not alerts:
        return
    work_queue.enqueue(connection, EVENT_ALERTS, [
        dict(event_id=alert.event_id, kind=str(alert.kind), customer_id=alert.customer_id,
             subscription_id=alert.subscription_id, invoice_id=alert.invoice_id, subject=alert.subject,
             detail=alert.detail, raised_at=now, status="pending", attempts=0)
        for alert in alerts
    ])


def queue_event_alert(warehouse: Warehouse, alert: OpsAlert, *, now: datetime) -> None:
    """Queue an alert that no single event raised (e.g. the sensor losing events to retention)."""
    with warehouse.begin() as connection:
        _queue_alerts(connection, [alert], now)


@dataclass(frozen=True)
class QueuedAlert:
    event_id: str
    kind: str
    subject: str
    detail: str
    customer_id: str | None
    subscription_id: str | None
    invoice_id: str | None
    raised_at: datetime
    attempts: int


_ALERT_COLUMNS = tuple(stripe_event_alerts.c[name] for name in (
    "event_id", "kind", "subject", "detail", "customer_id", "subscription_id", "invoice_id", "raised_at", "attempts"))
_OLDEST_FIRST = (stripe_event_alerts.c.raised_at, stripe_event_alerts.c.event_id, stripe_event_alerts.c.kind)
# A claim older than this is taken to have died with its process (the mail was not sent, or was and
# its confirmation was lost): the alert is claimable again. At-least-once, never silently dropped.
ALERT_CLAIM_TIMEOUT = timedelta(minutes=10)


def pending_event_alerts(warehouse: Warehouse, *, limit: int = 50) -> list[QueuedAlert]:
    """Alerts not yet delivered nor being delivered, oldest first."""
    c = stripe_event_alerts.c
    with warehouse.connect() as connection:
        rows = work_queue.due_rows(connection, EVENT_ALERTS, _ALERT_COLUMNS, due=c.status == "pending",
                                   order_by=_OLDEST_FIRST, limit=limit)
    return [QueuedAlert(**row._asdict()) for row in rows]


def claim_event_alerts(warehouse: Warehouse, *, limit: int, now: datetime) -> list[QueuedAlert]:
    """Take up to `limit` undelivered alerts for delivery (status `sending`), oldest first.

    One UPDATE … RETURNING (`work_queue.claim`): when the sensor and the webhook receiver deliver at
    the same moment, each alert is claimed by one of them only, so nobody mails it twice. A `sending`
    row is claimable again once its claim is ALERT_CLAIM_TIMEOUT old (a `pending` one holds no claim)."""
    due = stripe_event_alerts.c.status.in_(["pending", "sending"])
    with warehouse.begin() as connection:
        rows = work_queue.claim(connection, EVENT_ALERTS, due=due, now=now, lease=ALERT_CLAIM_TIMEOUT,
                                order_by=_OLDEST_FIRST, limit=limit, returning=_ALERT_COLUMNS, status="sending")
    return sorted((QueuedAlert(**row._asdict()) for row in rows), key=lambda a: (a.raised_at, a.event_id, a.kind))


def mark_event_alerts_sent(warehouse: Warehouse, alerts: Sequence[QueuedAlert], *, now: datetime) -> None:
    _finish_alerts(warehouse, alerts, None, status="sent", sent_at=now)


def mark_event_alerts_failed(warehouse: Warehouse, alerts: Sequence[QueuedAlert], error: str) -> None:
    """Back to pending (the next attempt retries them), with the reason delivery failed."""
    _finish_alerts(warehouse, alerts, error[:2000], status="pending")


def _finish_alerts(warehouse: Warehouse, alerts: Sequence[QueuedAlert], error: str | None, **values: Any) -> None:
    keys = [(alert.event_id, alert.kind) for alert in alerts]
    with warehouse.begin() as connection:
        work_queue.record_attempt(connection, EVENT_ALERTS, keys, error=error, **values)


def applied_by_source(warehouse: Warehouse) -> dict[str, int]:
    """How many Stripe events each path applied first: the events sensor or the webhook receiver."""
    with warehouse.connect() as connection:
        rows = connection.execute(
            select(stripe_events_applied.c.source, func.count()).group_by(stripe_events_applied.c.source)
        ).all()
    return {source: int(count) for source, count in rows}


@dataclass(frozen=True)
class InvoiceDue:
    """An invoice paid by invoice, as the mirror knows it: when it is due and how late it is."""

    invoice_id: str
    customer_id: str
    number: str | None
    status: str
    amount_remaining: int | None
    currency: str | None
    due_date: datetime | None
    days_overdue: int | None


def invoices_paid_by_invoice(warehouse: Warehouse, customer_ids: Sequence[str]) -> list[InvoiceDue]:
    """The customers' invoices with `collection_method` send_invoice (Net 30), newest first."""
    t = stripe_invoices.c
    with warehouse.connect() as connection:
        rows = connection.execute(
            select(t.invoice_id, t.customer_id, t.number, t.status, t.amount_remaining, t.currency, t.due_date, t.days_overdue)
            .where(t.collection_method == "send_invoice", t.customer_id.in_(list(customer_ids)))
            .order_by(t.created.desc())
        ).all()
    return [InvoiceDue(**row._asdict()) for row in rows]

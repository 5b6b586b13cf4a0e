"""invoice_annotations: the ledger that makes each renewal invoice's annotation happen exactly once.

Life of a row (one per invoice):
- `queued`    the draft_invoice_sensor saw a renewal invoice and requested a run for it; the row keeps
              what the sensor saw (customer, subscription, period), so run config carries only ids;
- `pending`   a run is about to send `add_lines`: from here on a write may have reached Stripe, so
              whoever picks the invoice up again reads it back from Stripe before writing;
- `annotated` the lines are on the invoice; `missed` it was finalized before we got there;
              `skipped` it was deleted/voided or already carried our annotation (recorded from Stripe);
- `failed`    an attempt failed (Stripe kept failing, unknown tier); the sensor requests it again
              after a pause, up to a number of attempts, and the asset check reports it meanwhile.

Also what the job reads besides Stripe: the tier terms and customer profile from the Stripe mirror
(the minutes of a window come from `stripe_sync_store.call_totals_in_windows`, fresh from call_records),
and the brand fields last written to each subscription (`invoice_branding`).
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, fields
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import and_, func, or_, select

from . import work_queue
from .database import Warehouse
from .schema import invoice_annotations, invoice_branding, stripe_customers, stripe_subscriptions

# SQLite allows 32,766 bound parameters, PostgreSQL 65,535: chunk IN lists well below both.
_CHUNK = 500


class AnnotationStatus(StrEnum):
    QUEUED = "queued"
    PENDING = "pending"
    ANNOTATED = "annotated"
    MISSED = "missed"
    SKIPPED = "skipped"
    FAILED = "failed"


FINAL_STATUSES = frozenset({AnnotationStatus.ANNOTATED, AnnotationStatus.MISSED, AnnotationStatus.SKIPPED})


@dataclass(frozen=True)
class RenewalInvoice:
    """A renewal invoice as the sensor listed it (times aware UTC; the period is [start, end))."""

    invoice_id: str
    customer_id: str
    subscription_id: str | None
    created: datetime
    period_start: datetime
    period_end: datetime
    needs_branding: bool = False  # listed without brand fields: its subscription was not branded yet


@dataclass(frozen=True)
class AnnotationRecord:
    invoice_id: str
    customer_id: str
    subscription_id: str | None
    invoice_created: datetime
    period_start: datetime
    period_end: datetime
    annotation_version: str
    status: AnnotationStatus
    attempts: int
    run_id: str | None
    detail: str | None
    tier_name: str | None = None
    minutes_used: int | None = None
    minutes_included: int | None = None
    lines_added: int | None = None
    needs_branding: bool = False

    @property
    def invoice(self) -> RenewalInvoice:
        return RenewalInvoice(
            self.invoice_id,
            self.customer_id,
            self.subscription_id,
            self.invoice_created,
            self.period_start,
            self.period_end,
            self.needs_branding,
        )


@dataclass(frozen=True)
class AnnotationOutcome:
    """What a run found and did for one invoice; written over the row in one statement."""

    status: AnnotationStatus
    detail: str | None = None
    tier_name: str | None = None
    minutes_used: int | None = None
    minutes_included: int | None = None
    minutes_unused: int | None = None
    overage_minutes: int | None = None
    overage_amount: int | None = None
    usage_pct: float | None = None
    lines_added: int | None = None
    locale: str | None = None


# A work queue without a lease: an invoice is not claimed by whoever comes next but requested by the
# sensor in a run per batch of invoice ids (`queued`); the run marks it `pending` before it writes,
# and what keeps a write from landing twice is Stripe's side (the idempotency key, our annotation
# version in the invoice metadata), not a claimed_at. A row left unfinished is due again after a
# pause (`invoices_to_retry`) while attempts remain.
ANNOTATIONS = work_queue.WorkQueue(invoice_annotations, ("invoice_id",))


def _chunks(values: Sequence[str]) -> Iterable[Sequence[str]]:
    for offset in range(0, len(values), _CHUNK):
        yield values[offset : offset + _CHUNK]


# --- the sensor's side ---------------------------------------------------------------------------------


def invoice_ids_on_record(warehouse: Warehouse, invoice_ids: Iterable[str]) -> set[str]:
    """The ids among `invoice_ids` that already have a row (in any status): the sensor leaves them to
    the retry rule instead of requesting them again from its listing."""
    wanted = sorted(set(invoice_ids))
    found: set[str] = set()
    with warehouse.connect() as connection:
        for chunk in _chunks(wanted):
            found.update(
                connection.scalars(select(invoice_annotations.c.invoice_id).where(invoice_annotations.c.invoice_id.in_(chunk)))
            )
    return found


def queue_invoices(warehouse: Warehouse, invoices: Sequence[RenewalInvoice], version: str, now: datetime) -> list[str]:
    """Insert `queued` rows for invoices without one; returns the ids actually queued (in input order).
    An id that appears twice in `invoices` is queued once."""
    rows = [
        dict(
            invoice_id=invoice.invoice_id,
            customer_id=invoice.customer_id,
            subscription_id=invoice.subscription_id,
            invoice_created=invoice.created,
            period_start=invoice.period_start,
            period_end=invoice.period_end,
            needs_branding=invoice.needs_branding,
            annotation_version=version,
            status=AnnotationStatus.QUEUED.value,
            attempts=0,
            queued_at=now,
            updated_at=now,
        )
        for invoice in invoices
    ]
    with warehouse.begin() as connection:
        return [invoice_id for (invoice_id,) in work_queue.enqueue(connection, ANNOTATIONS, rows)]


def invoices_to_retry(
    warehouse: Warehouse,
    now: datetime,
    stale_after: timedelta,
    max_attempts: int,
    limit: int,
    failed_after: timedelta | None = None,
    queued_after: timedelta | None = None,
) -> list[str]:
    """Rows that should have been finished by now, while attempts remain, oldest first: `pending`
    untouched for `stale_after` (the run died mid-way), `failed` ones untouched for `failed_after`
    (default: `stale_after`) and `queued` ones untouched for `queued_after` (None: never — a run that
    works the queue will take them)."""
    t = invoice_annotations.c
    due = [
        and_(t.status == AnnotationStatus.PENDING.value, t.updated_at < now - stale_after),
        and_(t.status == AnnotationStatus.FAILED.value, t.updated_at < now - (failed_after or stale_after)),
    ]
    if queued_after is not None:
        due.append(and_(t.status == AnnotationStatus.QUEUED.value, t.updated_at < now - queued_after))
    with warehouse.connect() as connection:
        rows = work_queue.due_rows(connection, ANNOTATIONS, [t.invoice_id], due=or_(*due), order_by=[t.updated_at, t.invoice_id],
                                   limit=limit, max_attempts=max_attempts)
    return [invoice_id for (invoice_id,) in rows]


def touch(warehouse: Warehouse, invoice_ids: Sequence[str], now: datetime) -> None:
    """Mark rows as just requested again, so the next tick does not request them once more."""
    with warehouse.begin() as connection:
        work_queue.update_rows(connection, ANNOTATIONS, [(invoice_id,) for invoice_id in invoice_ids], updated_at=now)


# --- the job's side ------------------------------------------------------------------------------------


def queued_invoice_ids(warehouse: Warehouse, limit: int) -> list[str]:
    """Up to `limit` `queued` invoice ids, the longest-waiting first: what a run that works the queue
    takes next (rows it already took are still `queued` until it marks them `pending`)."""
    t = invoice_annotations.c
    statement = (
        select(t.invoice_id).where(t.status == AnnotationStatus.QUEUED.value).order_by(t.updated_at, t.invoice_id).limit(limit)
    )
    with warehouse.connect() as connection:
        return list(connection.scalars(statement))


def annotation_records(warehouse: Warehouse, invoice_ids: Iterable[str]) -> dict[str, AnnotationRecord]:
    wanted = sorted(set(invoice_ids))
    columns = [invoice_annotations.c[f.name] for f in fields(AnnotationRecord)]
    records: dict[str, AnnotationRecord] = {}
    with warehouse.connect() as connection:
        for chunk in _chunks(wanted):
            for row in connection.execute(select(*columns).where(invoice_annotations.c.invoice_id.in_(chunk))):
                values = row._asdict()
                values["status"] = AnnotationStatus(values["status"])
                values["needs_branding"] = bool(values["needs_branding"])
                records[values["invoice_id"]] = AnnotationRecord(**values)
    return records


def mark_pending(warehouse: Warehouse, invoice_ids: Sequence[str], run_id: str, now: datetime) -> set[str]:
    """Record, before the writes to Stripe, that a write may be under way (and count the attempt: here
    an attempt is counted as it starts, since a run may die before it could record its end). Returns
    the ids marked, in one statement for all of them.

    An id is not marked, and its row not changed, when the row is final: another run finished the
    invoice after this one read it (e.g. a run worker that outlived its deployment, next to the run
    started again). A final row never goes back to `pending`."""
    if isinstance(invoice_ids, str):  # a str is a Sequence[str] too: of its characters
        raise TypeError("mark_pending takes a sequence of invoice ids, not one id")
    final = [status.value for status in FINAL_STATUSES]
    with warehouse.begin() as connection:
        marked = work_queue.count_attempt_returning(
            connection, ANNOTATIONS, [(invoice_id,) for invoice_id in invoice_ids],
            where=invoice_annotations.c.status.not_in(final),
            status=AnnotationStatus.PENDING.value, run_id=run_id, updated_at=now,
        )
    return {invoice_id for (invoice_id,) in marked}


def record_outcome(warehouse: Warehouse, invoice_id: str, outcome: AnnotationOutcome, run_id: str, now: datetime) -> None:
    record_outcomes(warehouse, [(invoice_id, outcome, now)], run_id)


def record_outcomes(warehouse: Warehouse, outcomes: Sequence[tuple[str, AnnotationOutcome, datetime]], run_id: str) -> None:
    """The outcomes of invoices (each with the moment it was reached) in one transaction: a run records
    what its workers finished in the last moment together, not one transaction per invoice."""
    by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = defaultdict(list)
    for invoice_id, outcome, now in outcomes:
        values: dict[str, Any] = {f.name: getattr(outcome, f.name) for f in fields(AnnotationOutcome)}
        values.update(status=outcome.status.value, run_id=run_id, updated_at=now)
        if outcome.status is AnnotationStatus.ANNOTATED:
            values["annotated_at"] = now
        by_columns[tuple(values)].append(values | {"key_invoice_id": invoice_id})
    with warehouse.begin() as connection:
        for rows in by_columns.values():
            work_queue.update_each(connection, ANNOTATIONS, rows)


def drafts_awaiting_annotation(warehouse: Warehouse) -> int:
    """Renewal invoices queued for an annotation run or being written by one (`failed` rows wait for a
    retry the planner decides on, and are not counted)."""
    waiting = [AnnotationStatus.QUEUED.value, AnnotationStatus.PENDING.value]
    with warehouse.connect() as connection:
        return connection.execute(select(func.count()).select_from(invoice_annotations).where(invoice_annotations.c.status.in_(waiting))).scalar_one()


def status_counts(warehouse: Warehouse, invoice_ids: Iterable[str] | None = None) -> dict[str, int]:
    """Rows per status (of the given invoices, or of the whole table)."""
    counts: dict[str, int] = defaultdict(int)
    statement = select(invoice_annotations.c.status, func.count()).group_by(invoice_annotations.c.status)
    with warehouse.connect() as connection:
        if invoice_ids is None:
            for status, count in connection.execute(statement):
                counts[status] += count
        else:
            for chunk in _chunks(sorted(set(invoice_ids))):
                for status, count in connection.execute(statement.where(invoice_annotations.c.invoice_id.in_(chunk))):
                    counts[status] += count
    return dict(counts)


def annotation_window(warehouse: Warehouse) -> tuple[datetime | None, datetime | None]:
    """The first and the last `annotated_at` in the table (for the month-start benchmark)."""
    with warehouse.connect() as connection:
        first, last = connection.execute(
            select(func.min(invoice_annotations.c.annotated_at), func.max(invoice_annotations.c.annotated_at))
        ).one()
    return first, last


# --- inputs of an annotation: tier, customer, minutes ------------------------------------------------


@dataclass(frozen=True)
class SubscriptionTerms:
    subscription_id: str
    tier_name: str | None
    included_minutes: int | None  # None = unlimited (when tier_name is known)
    overage_unit_amount: int | None
    currency: str | None


@dataclass(frozen=True)
class CustomerProfile:
    customer_id: str
    account_code: str | None
    preferred_locale: str | None
    country: str | None = None  # address.country: picks the client group


def subscription_terms(warehouse: Warehouse, subscription_ids: Iterable[str]) -> dict[str, SubscriptionTerms]:
    """Tier terms of the given subscriptions as the Stripe sync last mirrored them."""
    t = stripe_subscriptions.c
    result: dict[str, SubscriptionTerms] = {}
    with warehouse.connect() as connection:
        for chunk in _chunks(sorted(set(subscription_ids))):
            statement = select(t.subscription_id, t.tier_name, t.included_minutes, t.overage_unit_amount, t.currency).where(
                t.subscription_id.in_(chunk)
            )
            for row in connection.execute(statement):
                result[row.subscription_id] = SubscriptionTerms(*row)
    return result


def customer_profiles(warehouse: Warehouse, customer_ids: Iterable[str]) -> dict[str, CustomerProfile]:
    t = stripe_customers.c
    result: dict[str, CustomerProfile] = {}
    with warehouse.connect() as connection:
        for chunk in _chunks(sorted(set(customer_ids))):
            for row in connection.execute(
                select(t.customer_id, t.account_code, t.preferred_locale, t.country).where(t.customer_id.in_(chunk))
            ):
                result[row.customer_id] = CustomerProfile(*row)
    return result


# --- brand fields on subscriptions ---------------------------------------------------------------------


@dataclass(frozen=True)
class BrandingTarget:
    """A subscription whose invoices need brand fields, with what they are made of."""

    subscription_id: str
    customer_id: str
    account_code: str | None
    preferred_locale: str | None
    tier_name: str | None
    country: str | None = None


def branding_targets(warehouse: Warehouse, statuses: Iterable[str]) -> list[BrandingTarget]:
    """Mirrored subscriptions in `statuses` (those that will still renew), with their customer."""
    s, c = stripe_subscriptions.c, stripe_customers.c
    statement = (
        select(s.subscription_id, s.customer_id, c.account_code, c.preferred_locale, s.tier_name, c.country)
        .select_from(stripe_subscriptions.outerjoin(stripe_customers, c.customer_id == s.customer_id))
        .where(s.status.in_(list(statuses)))
        .order_by(s.subscription_id)
    )
    with warehouse.connect() as connection:
        return [BrandingTarget(*row) for row in connection.execute(statement)]


def branding_hash(
    custom_fields: Sequence[tuple[str, str]], memo: str, footer: str, tax_rate_ids: Sequence[str] = (), template: str | None = None
) -> str:
    fields: dict[str, Any] = {"custom_fields": list(custom_fields), "memo": memo, "footer": footer}
    if tax_rate_ids:  # absent when untaxed (or untemplated): the hashes recorded before stay valid
        fields["tax_rate_ids"] = list(tax_rate_ids)
    if template:
        fields["template"] = template
    payload = json.dumps(fields, sort_keys=True)
    return hashlib.sha256(payload.encode()).hexdigest()


def applied_branding_hashes(warehouse: Warehouse) -> dict[str, str]:
    with warehouse.connect() as connection:
        return dict(connection.execute(select(invoice_branding.c.subscription_id, invoice_branding.c.branding_hash)).all())


def record_branding(
    warehouse: Warehouse,
    target: BrandingTarget,
    custom_fields: Sequence[tuple[str, str]],
    locale: str,
    digest: str,
    now: datetime,
    *,
    client_group: str | None = None,
    tax_rate_ids: Sequence[str] = (),
) -> None:
    """Remember what was written to Stripe for a subscription (delete + insert: same on both backends)."""
    row = dict(
        subscription_id=target.subscription_id,
        customer_id=target.customer_id,
        branding_hash=digest,
        locale=locale,
        custom_fields=json.dumps([{"name": name, "value": value} for name, value in custom_fields]),
        applied_at=now,
        client_group=client_group,
        tax_rate_ids=json.dumps(list(tax_rate_ids)),
    )
    with warehouse.begin() as connection:
        connection.execute(invoice_branding.delete().where(invoice_branding.c.subscription_id == target.subscription_id))
        connection.execute(invoice_branding.insert(), [row])


__all__ = [
    "AnnotationOutcome",
    "BrandingTarget",
    "applied_branding_hashes",
    "branding_hash",
    "branding_targets",
    "record_branding",
    "AnnotationRecord",
    "AnnotationStatus",
    "CustomerProfile",
    "FINAL_STATUSES",
    "RenewalInvoice",
    "SubscriptionTerms",
    "annotation_records",
    "annotation_window",
    "customer_profiles",
    "drafts_awaiting_annotation",
    "invoice_ids_on_record",
    "invoices_to_retry",
    "mark_pending",
    "queue_invoices",
    "queued_invoice_ids",
    "record_outcome",
    "record_outcomes",
    "status_counts",
    "subscription_terms",
    "touch",
]

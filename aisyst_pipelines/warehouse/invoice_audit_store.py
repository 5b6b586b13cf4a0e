"""invoice_audits: the audit of final renewal invoices (billing/invoice_audit.py), and what it reads.

A renewal invoice is audited once it is final: annotated by us (invoice_annotations `annotated`, so
its usage line's minutes are on record) and finalized in the Stripe mirror (stripe_invoices open,
paid or uncollectible). Each audit replaces the invoice's row: the latest figures are the truth.

Late CDRs are those ingested after the usage line was written (invoice_annotations.annotated_at),
not after Stripe's `finalized_at`: the line's figure was taken then and is never written again, and
both times are our own clock's — Stripe's times follow a test clock where one is used (the demo's
September 2026 next to today's ingestion times), so comparing ingestion with them mixes two clocks.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import and_, case, func, select, update

from aisyst_pipelines.billing.invoice_audit import AuditCause
from aisyst_pipelines.billing.invoice_lines import LateMinutes
from aisyst_pipelines.billing.periods import Period

from .database import Warehouse
from .schema import call_records, invoice_annotations, invoice_audits, stripe_invoices
from .upsert import conflict_insert

FINAL_INVOICE_STATUSES = ("open", "paid", "uncollectible")


@dataclass(frozen=True)
class FinalRenewal:
    invoice_id: str
    customer_id: str
    period_start: datetime  # [start, end)
    period_end: datetime
    invoice_minutes: int  # what the usage line says
    finalized_at: datetime
    line_written_at: datetime  # when the annotation added the usage line (our clock): later CDRs are late
    carried_to_invoice_id: str | None  # its late minutes are on that later invoice already


@dataclass(frozen=True)
class AuditRow:
    invoice_id: str
    customer_id: str
    period_start: datetime
    period_end: datetime
    finalized_at: datetime
    invoice_minutes: int
    warehouse_minutes: int
    late_minutes: int
    meter_minutes: int
    causes: tuple[AuditCause, ...]
    audited_at: datetime
    carried_to_invoice_id: str | None = None  # read, never written by the audit

    @property
    def settled(self) -> bool:
        """No difference left open: they agree, or the only cause is late CDRs already carried."""
        return not self.causes or (self.causes == (AuditCause.LATE_CDR,) and self.carried_to_invoice_id is not None)


def final_renewals(warehouse: Warehouse, finalized_since: datetime) -> list[FinalRenewal]:
    """Renewal invoices with our usage line on them that Stripe finalized at or after `finalized_since`."""
    a, i, d = invoice_annotations.c, stripe_invoices.c, invoice_audits.c
    statement = (
        select(a.invoice_id, a.customer_id, a.period_start, a.period_end, a.minutes_used, i.finalized_at, a.annotated_at,
               d.carried_to_invoice_id)
        .join(stripe_invoices, i.invoice_id == a.invoice_id)
        .outerjoin(invoice_audits, d.invoice_id == a.invoice_id)
        .where(a.status == "annotated", a.minutes_used.is_not(None), a.annotated_at.is_not(None),
               i.status.in_(FINAL_INVOICE_STATUSES), i.finalized_at >= finalized_since)
        .order_by(a.customer_id, a.period_start)
    )
    with warehouse.connect() as connection:
        return [FinalRenewal(*row) for row in connection.execute(statement)]


def period_minutes(warehouse: Warehouse, customer_id: str, start: datetime, end: datetime, line_written_at: datetime) -> tuple[int, int]:
    """The customer's billable minutes of calls that ended in [start, end), and those of them
    ingested after `line_written_at` (the late CDRs: not on the usage line)."""
    c = call_records.c
    late = case((c.ingested_at > line_written_at, c.billable_minutes), else_=0)
    statement = select(func.coalesce(func.sum(c.billable_minutes), 0), func.coalesce(func.sum(late), 0)).where(
        and_(c.customer_id == customer_id, c.ended_at >= start, c.ended_at < end)
    )
    with warehouse.connect() as connection:
        total, late_total = connection.execute(statement).one()
    return int(total), int(late_total)


def record_audits(warehouse: Warehouse, rows: Sequence[AuditRow]) -> None:
    """Replace each audited invoice's row (INSERT … ON CONFLICT DO UPDATE)."""
    if not rows:
        return
    values = [asdict(row) | {"causes": ",".join(row.causes)} for row in rows]
    for value in values:
        del value["carried_to_invoice_id"]
    with warehouse.begin() as connection:
        statement = conflict_insert(connection.dialect.name, invoice_audits)
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=["invoice_id"],
                set_={column.name: statement.excluded[column.name] for column in invoice_audits.columns if column.name not in _LEDGER},
            ),
            values,
        )


# Columns the audit never overwrites: the key and the late minutes' ledger (`mark_carried`).
_LEDGER = frozenset({"invoice_id", "carried_to_invoice_id", "carried_minutes", "carried_at"})


def late_minutes_to_carry(warehouse: Warehouse, customer_ids: Iterable[str]) -> dict[str, list[LateMinutes]]:
    """Per customer, the audited invoices whose late CDRs (cause `late_cdr`) no later invoice carries yet."""
    d = invoice_audits.c
    result: dict[str, list[LateMinutes]] = defaultdict(list)
    wanted = sorted(set(customer_ids))
    with warehouse.connect() as connection:
        for start in range(0, len(wanted), 500):
            statement = (
                select(d.customer_id, d.invoice_id, d.period_start, d.period_end, d.invoice_minutes, d.late_minutes)
                .where(d.customer_id.in_(wanted[start:start + 500]), d.carried_to_invoice_id.is_(None), d.late_minutes > 0,
                       d.causes.like(f"%{AuditCause.LATE_CDR.value}%"))
                .order_by(d.customer_id, d.period_start)
            )
            for row in connection.execute(statement):
                result[row.customer_id].append(
                    LateMinutes(row.invoice_id, Period(row.period_start, row.period_end), row.invoice_minutes, row.late_minutes)
                )
    return dict(result)


def mark_carried(warehouse: Warehouse, carried: Sequence[LateMinutes], to_invoice_id: str, now: datetime) -> None:
    """Record that `to_invoice_id` carries these late minutes. Only a row not carried yet is marked:
    the first invoice to carry them keeps them."""
    d = invoice_audits.c
    with warehouse.begin() as connection:
        for late in carried:
            connection.execute(
                update(invoice_audits)
                .where(d.invoice_id == late.from_invoice_id, d.carried_to_invoice_id.is_(None))
                .values(carried_to_invoice_id=to_invoice_id, carried_minutes=late.late_minutes, carried_at=now)
            )

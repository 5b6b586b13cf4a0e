"""invoice_audits: the audit of final renewal invoices (billing/invoice_audit.py), and what it reads.

A renewal invoice is audited once it is final: annotated by us (invoice_annotations `annotated`, so
its usage line's minutes are on record) and finalized in the Stripe mirror (stripe_invoices open,
paid or uncollectible). Each audit replaces the invoice's row: the latest figures are the truth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from datetime import datetime

from sqlalchemy import and_, case, func, select

from aisyst_pipelines.billing.invoice_audit import AuditCause

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


def final_renewals(warehouse: Warehouse, finalized_since: datetime) -> list[FinalRenewal]:
    """Renewal invoices with our usage line on them that Stripe finalized at or after `finalized_since`."""
    a, i = invoice_annotations.c, stripe_invoices.c
    statement = (
        select(a.invoice_id, a.customer_id, a.period_start, a.period_end, a.minutes_used, i.finalized_at)
        .join(stripe_invoices, i.invoice_id == a.invoice_id)
        .where(a.status == "annotated", a.minutes_used.is_not(None), i.status.in_(FINAL_INVOICE_STATUSES), i.finalized_at >= finalized_since)
        .order_by(a.customer_id, a.period_start)
    )
    with warehouse.connect() as connection:
        return [FinalRenewal(*row) for row in connection.execute(statement)]


def period_minutes(warehouse: Warehouse, customer_id: str, start: datetime, end: datetime, finalized_at: datetime) -> tuple[int, int]:
    """The customer's billable minutes of calls that ended in [start, end), and those of them
    ingested after `finalized_at` (the late CDRs)."""
    c = call_records.c
    late = case((c.ingested_at > finalized_at, c.billable_minutes), else_=0)
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
    with warehouse.begin() as connection:
        statement = conflict_insert(connection.dialect.name, invoice_audits)
        connection.execute(
            statement.on_conflict_do_update(
                index_elements=["invoice_id"],
                set_={column.name: statement.excluded[column.name] for column in invoice_audits.columns if column.name != "invoice_id"},
            ),
            values,
        )

"""The audit of final renewal invoices (issue 15 item 9; the rules are billing/invoice_audit.py).

For every renewal invoice finalized within the look-back window: the minutes on its usage line (the
annotation ledger), the period's minutes in call_records now (and those of CDRs ingested after the
usage line was written, so not on the final invoice), and Stripe's meter summary for the customer over the period — one summary
request per invoice. Each invoice's latest audit replaces its row in invoice_audits; the asset check
fails on any difference and names its cause.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta

from aisyst_pipelines.billing.invoice_audit import InvoiceMinutes, audit_causes
from aisyst_pipelines.billing.invoice_lines import LateMinutes, invoice_texts
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.invoice_annotation_store import customer_profiles
from aisyst_pipelines.warehouse.invoice_audit_store import (
    AuditRow,
    final_renewals,
    late_minutes_to_carry,
    period_minutes,
    record_audits,
)
from resources.stripe.meters import MeterGateway

# Late CDRs of an invoice's period keep arriving for a while; beyond two months they are a
# correction for a person, not for the nightly audit.
LOOK_BACK = timedelta(days=62)


@dataclass(frozen=True)
class AuditRun:
    audits: list[AuditRow]

    @property
    def disagreements(self) -> list[AuditRow]:
        """Audits with a difference still open (late CDRs already carried onto a later invoice are settled)."""
        return [audit for audit in self.audits if not audit.settled]


def audit_final_invoices(warehouse: Warehouse, meters: MeterGateway, *, now: datetime, look_back: timedelta = LOOK_BACK) -> AuditRun:
    """Audit every renewal invoice finalized within `look_back` of `now`, record and return the rows."""
    renewals = final_renewals(warehouse, now - look_back)
    meter_id = meters.meter_id() if renewals else ""
    audits = []
    for renewal in renewals:
        total, late = period_minutes(warehouse, renewal.customer_id, renewal.period_start, renewal.period_end, renewal.line_written_at)
        summaries = meters.summaries(meter_id, renewal.customer_id, renewal.period_start, renewal.period_end)
        minutes = InvoiceMinutes(renewal.invoice_minutes, total, late, sum(summary.minutes for summary in summaries))
        audits.append(
            AuditRow(
                invoice_id=renewal.invoice_id, customer_id=renewal.customer_id,
                period_start=renewal.period_start, period_end=renewal.period_end, finalized_at=renewal.finalized_at,
                invoice_minutes=minutes.invoice, warehouse_minutes=minutes.warehouse, late_minutes=minutes.late,
                meter_minutes=minutes.meter, causes=audit_causes(minutes), audited_at=now,
                carried_to_invoice_id=renewal.carried_to_invoice_id,
            )
        )
    record_audits(warehouse, audits)
    return AuditRun(audits)


@dataclass(frozen=True)
class PendingLateMinutes:
    """Late minutes of a final invoice (cause `late_cdr`) that no renewal draft carries yet, with the
    line the customer's next renewal draft will carry them on."""

    customer_id: str
    account_code: str | None
    late: LateMinutes
    line_text: str  # "Late-reported minutes from September: 12", in the customer's language


def pending_late_minutes(warehouse: Warehouse, customer_ids: Iterable[str]) -> list[PendingLateMinutes]:
    """The late minutes' ledger of these customers, not carried yet, by customer and period. The text
    is the annotation's own (`InvoiceTexts.late_minutes`, the customer's preferred locale)."""
    pending = late_minutes_to_carry(warehouse, customer_ids)
    profiles = customer_profiles(warehouse, pending)
    result = []
    for customer_id, carried_later in sorted(pending.items()):
        profile = profiles.get(customer_id)
        texts = invoice_texts(profile.preferred_locale if profile else None)
        result += [
            PendingLateMinutes(customer_id, profile.account_code if profile else None, late, texts.late_minutes(late.period, late.late_minutes))
            for late in carried_later
        ]
    return result

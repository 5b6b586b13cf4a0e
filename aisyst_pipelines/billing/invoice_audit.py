"""The invoice agrees with the calls, after the fact too (issue 15 item 9): the audit of a final
renewal invoice.

Once a renewal invoice is final (finalized: open, paid or uncollectible) its usage line can no longer
change. The audit compares, per customer and period, three whole numbers of minutes:

- `invoice`: the minutes on its usage line ("Voice minutes used: 395 of 500"), as the annotation wrote them;
- `warehouse`: the minutes of the period's calls in call_records now;
- `meter`: Stripe's meter summary for the customer over the period;

and names the cause of every difference, never an epsilon:

- `late_cdr`: the warehouse has more minutes than the line, and exactly the difference arrived in
  CDR files ingested after the line was written — so after the invoice's draft took its figure, and
  nothing can put them on that invoice any more (they go onto the next draft: `late_minutes`);
- `invoice_mismatch`: the line and the warehouse differ in any other way (calls removed or changed
  after the line was written, or the line written from other data);
- `meter_drift`: Stripe's meter and the warehouse differ (reconciliation's business: the nightly
  run names the days and the causes).

Plain values in, plain values out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class AuditCause(StrEnum):
    LATE_CDR = "late_cdr"
    INVOICE_MISMATCH = "invoice_mismatch"
    METER_DRIFT = "meter_drift"


@dataclass(frozen=True)
class InvoiceMinutes:
    invoice: int  # on the usage line
    warehouse: int  # the period's calls now
    late: int  # of `warehouse`: calls ingested after the usage line was written
    meter: int  # Stripe's meter summary for the period

    def __post_init__(self) -> None:
        if min(self.invoice, self.warehouse, self.late, self.meter) < 0 or self.late > self.warehouse:
            raise ValueError(f"impossible minutes: {self}")


def audit_causes(minutes: InvoiceMinutes) -> tuple[AuditCause, ...]:
    """The causes of every difference between the three figures (empty: they agree)."""
    causes: list[AuditCause] = []
    if minutes.invoice != minutes.warehouse:
        explained = minutes.late > 0 and minutes.warehouse - minutes.late == minutes.invoice
        causes.append(AuditCause.LATE_CDR if explained else AuditCause.INVOICE_MISMATCH)
    if minutes.meter != minutes.warehouse:
        causes.append(AuditCause.METER_DRIFT)
    return tuple(causes)

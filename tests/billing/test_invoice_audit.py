"""The audit rules of final renewal invoices (billing/invoice_audit.py): whole minutes, named causes."""

import pytest

from aisyst_pipelines.billing.invoice_audit import AuditCause, InvoiceMinutes, audit_causes


@pytest.mark.parametrize(
    ("minutes", "causes"),
    [
        (InvoiceMinutes(395, 395, 0, 395), ()),
        (InvoiceMinutes(395, 407, 12, 407), (AuditCause.LATE_CDR,)),
        (InvoiceMinutes(395, 407, 5, 407), (AuditCause.INVOICE_MISMATCH,)),  # late CDRs explain only part of it
        (InvoiceMinutes(395, 390, 0, 390), (AuditCause.INVOICE_MISMATCH,)),  # calls gone since the line was written
        (InvoiceMinutes(395, 395, 0, 380), (AuditCause.METER_DRIFT,)),
        (InvoiceMinutes(395, 407, 12, 395), (AuditCause.LATE_CDR, AuditCause.METER_DRIFT)),  # never metered either
    ],
)
def test_each_difference_has_its_named_cause(minutes: InvoiceMinutes, causes: tuple) -> None:
    assert audit_causes(minutes) == causes


def test_impossible_figures_are_refused() -> None:
    with pytest.raises(ValueError):
        InvoiceMinutes(1, 2, 3, 2)

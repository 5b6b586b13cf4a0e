"""The CDR side of reconciliation windows computed in memory: an oracle for the SQL path.

Production sums the minutes in the warehouse (`reconciliation_store.cdr_minutes_by_window`); this
sums the same spans over a DataFrame, as plainly as possible, so the two can be compared and the
plain unit tests of the comparison need no database.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime

import pandas as pd

from aisyst_pipelines.billing.reconciliation import CdrMinutes, ReconciliationWindow, cdr_minutes_from_spans, cdr_spans


def cdr_minutes_in_memory(calls: pd.DataFrame, windows: Iterable[ReconciliationWindow]) -> dict[tuple[str, datetime], CdrMinutes]:
    """`calls` has customer_id, ended_at (aware) and billable_minutes; a call counts in the spans
    that contain its `ended_at`, [start, end)."""
    ended = pd.to_datetime(calls["ended_at"], utc=True)
    result = {}
    for window in windows:
        customer_id = window.period.customer_id
        mine = calls["customer_id"] == customer_id
        minutes = {(customer_id, span): int(calls["billable_minutes"][mine & (ended >= span.start) & (ended < span.end)].sum())
                   for span in cdr_spans(window)}
        result[window.period.key] = cdr_minutes_from_spans(window, minutes)
    return result

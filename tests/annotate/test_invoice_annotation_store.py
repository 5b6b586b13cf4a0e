"""The invoice_annotations ledger and the reads of an annotation, on SQLite and PostgreSQL."""

from datetime import datetime, timedelta, timezone

import pytest
from sqlalchemy import insert, select

from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.invoice_annotation_store import (
    AnnotationOutcome,
    AnnotationStatus,
    RenewalInvoice,
    annotation_records,
    invoice_ids_on_record,
    invoices_to_retry,
    queued_invoice_ids,
    mark_pending,
    queue_invoices,
    record_outcome,
    record_outcomes,
    status_counts,
    touch,
)
from aisyst_pipelines.warehouse.schema import call_records, invoice_annotations
from aisyst_pipelines.warehouse.stripe_sync_store import call_totals_in_windows

UTC = timezone.utc
START = datetime(2026, 3, 1, tzinfo=UTC)
END = datetime(2026, 4, 1, tzinfo=UTC)
NOW = datetime(2026, 4, 1, 0, 5, tzinfo=UTC)


def renewal(n: int, customer: str = "cus_A") -> RenewalInvoice:
    return RenewalInvoice(f"in_{n}", customer, f"sub_{n}", END, START, END)


def test_queue_once_and_walk_the_ledger(warehouse: Warehouse) -> None:
    assert queue_invoices(warehouse, [renewal(1), renewal(2), renewal(1)], "1", NOW) == ["in_1", "in_2"]
    assert queue_invoices(warehouse, [renewal(2), renewal(3)], "1", NOW) == ["in_3"]
    assert invoice_ids_on_record(warehouse, ["in_1", "in_3", "in_9"]) == {"in_1", "in_3"}

    assert mark_pending(warehouse, ["in_1"], "run-a", NOW) == {"in_1"}
    record_outcome(
        warehouse, "in_1",
        AnnotationOutcome(AnnotationStatus.ANNOTATED, tier_name="Tier 1", minutes_used=395, minutes_included=500,
                          minutes_unused=105, overage_minutes=0, overage_amount=0, usage_pct=79.0, lines_added=2, locale="en"),
        "run-a", NOW,
    )
    record = annotation_records(warehouse, ["in_1"])["in_1"]
    assert (record.status, record.attempts, record.run_id, record.minutes_used, record.lines_added) == (
        AnnotationStatus.ANNOTATED, 1, "run-a", 395, 2)
    assert record.invoice == renewal(1) and record.period_start == START
    assert status_counts(warehouse) == {"annotated": 1, "queued": 2}
    assert status_counts(warehouse, ["in_1", "in_2"]) == {"annotated": 1, "queued": 1}

    # A run that read in_1 before it was final (a worker outliving its deployment) cannot take it back.
    assert mark_pending(warehouse, ["in_1"], "run-stale", NOW) == set()
    again = annotation_records(warehouse, ["in_1"])["in_1"]
    assert (again.status, again.attempts, again.run_id) == (AnnotationStatus.ANNOTATED, 1, "run-a")


def test_a_chunk_is_marked_and_recorded_in_one_statement_each(warehouse: Warehouse) -> None:
    queue_invoices(warehouse, [renewal(n) for n in range(1, 6)], "1", NOW)
    record_outcome(warehouse, "in_5", AnnotationOutcome(AnnotationStatus.ANNOTATED), "run-other", NOW)
    # in_5 was finished by another run: of the chunk, the others are marked; in_9 has no row.
    assert mark_pending(warehouse, ["in_1", "in_2", "in_3", "in_4", "in_5", "in_9"], "run-a", NOW) == {"in_1", "in_2", "in_3", "in_4"}
    later = NOW + timedelta(seconds=2)
    record_outcomes(warehouse, [
        ("in_1", AnnotationOutcome(AnnotationStatus.ANNOTATED, minutes_used=395, lines_added=2), later),
        ("in_2", AnnotationOutcome(AnnotationStatus.FAILED, detail="boom"), later + timedelta(seconds=1)),
        ("in_3", AnnotationOutcome(AnnotationStatus.ANNOTATED, minutes_used=12, lines_added=3), later + timedelta(seconds=2)),
        ("in_4", AnnotationOutcome(AnnotationStatus.MISSED, detail="open", minutes_used=7), later),
    ], "run-a")
    records = annotation_records(warehouse, ["in_1", "in_2", "in_3", "in_4", "in_5"])
    assert {i: (r.status, r.minutes_used, r.lines_added, r.run_id, r.attempts) for i, r in records.items()} == {
        "in_1": (AnnotationStatus.ANNOTATED, 395, 2, "run-a", 1),
        "in_2": (AnnotationStatus.FAILED, None, None, "run-a", 1),
        "in_3": (AnnotationStatus.ANNOTATED, 12, 3, "run-a", 1),
        "in_4": (AnnotationStatus.MISSED, 7, None, "run-a", 1),
        "in_5": (AnnotationStatus.ANNOTATED, None, None, "run-other", 0),
    }
    assert records["in_2"].detail == "boom"
    # each row keeps its own moment; only annotated rows get an annotated_at
    with warehouse.connect() as connection:
        moments = dict(connection.execute(select(invoice_annotations.c.invoice_id, invoice_annotations.c.annotated_at)).all())
    assert moments == {"in_1": later, "in_2": None, "in_3": later + timedelta(seconds=2), "in_4": None, "in_5": NOW}
    with pytest.raises(TypeError):
        mark_pending(warehouse, "in_1", "run-a", NOW)


def test_retry_rule_picks_stale_and_failed_rows_until_attempts_run_out(warehouse: Warehouse) -> None:
    queue_invoices(warehouse, [renewal(n) for n in range(1, 6)], "1", NOW)
    mark_pending(warehouse, ["in_2"], "run-dead", NOW)  # the run died after this
    mark_pending(warehouse, ["in_3"], "run-a", NOW)
    record_outcome(warehouse, "in_3", AnnotationOutcome(AnnotationStatus.FAILED, detail="boom"), "run-a", NOW)
    record_outcome(warehouse, "in_4", AnnotationOutcome(AnnotationStatus.MISSED), "run-a", NOW)
    record_outcome(warehouse, "in_5", AnnotationOutcome(AnnotationStatus.ANNOTATED), "run-a", NOW)

    assert invoices_to_retry(warehouse, NOW + timedelta(minutes=1), timedelta(minutes=10), 3, 100) == []
    # a failed attempt may come back sooner than a lost run
    assert invoices_to_retry(warehouse, NOW + timedelta(minutes=3), timedelta(minutes=10), 3, 100, timedelta(minutes=2)) == ["in_3"]
    later = NOW + timedelta(minutes=11)
    # A queued row is left to the run that works the queue, unless it waited `queued_after`.
    assert sorted(invoices_to_retry(warehouse, later, timedelta(minutes=10), 3, 100)) == ["in_2", "in_3"]
    orphaned = timedelta(seconds=30)
    assert sorted(invoices_to_retry(warehouse, later, timedelta(minutes=10), 3, 100, queued_after=orphaned)) == ["in_1", "in_2", "in_3"]
    assert len(invoices_to_retry(warehouse, later, timedelta(minutes=10), 3, 2, queued_after=orphaned)) == 2
    touch(warehouse, ["in_1", "in_2", "in_3"], later)
    assert invoices_to_retry(warehouse, later + timedelta(seconds=20), timedelta(minutes=10), 3, 100, queued_after=orphaned) == []
    assert invoices_to_retry(warehouse, later + timedelta(minutes=5), timedelta(minutes=10), 3, 100) == []
    # in_2 and in_3 have used one attempt each: with at most one attempt they stay where they are
    assert invoices_to_retry(warehouse, later + timedelta(hours=1), timedelta(minutes=10), 1, 100, queued_after=orphaned) == ["in_1"]


def test_the_queue_gives_queued_rows_longest_waiting_first(warehouse: Warehouse) -> None:
    queue_invoices(warehouse, [renewal(n) for n in (3, 1)], "1", NOW)
    queue_invoices(warehouse, [renewal(2)], "1", NOW - timedelta(seconds=5))
    mark_pending(warehouse, ["in_1"], "run-a", NOW)
    assert queued_invoice_ids(warehouse, 10) == ["in_2", "in_3"]
    assert queued_invoice_ids(warehouse, 1) == ["in_2"]


def test_minutes_of_exactly_the_invoice_window(warehouse: Warehouse) -> None:
    def call(call_id: str, customer: str | None, ended_at: datetime, minutes: int) -> dict:
        return dict(call_id=call_id, account_code="acct", customer_id=customer, direction="inbound",
                    disposition="completed", started_at=ended_at - timedelta(minutes=minutes), answered_at=None,
                    ended_at=ended_at, billable_seconds=minutes * 60, billable_minutes=minutes, content_hash="h",
                    source_file="f.csv", source_sha256="s" * 64, source_line=1, ingested_at=NOW)

    with warehouse.begin() as connection:
        connection.execute(insert(call_records), [
            call("c1", "cus_A", START, 3),  # exactly at the start: in
            call("c2", "cus_A", END - timedelta(seconds=1), 4),  # last second: in
            call("c3", "cus_A", END, 100),  # exactly at the end: next period
            call("c4", "cus_A", START - timedelta(seconds=1), 100),  # previous period
            call("c5", "cus_B", START + timedelta(days=3), 7),
            call("c6", None, START + timedelta(days=3), 50),  # unmapped account: nobody's
        ])
    other_end = START + timedelta(days=10)
    windows = [("cus_A", START, END), ("cus_B", START, END), ("cus_C", START, END), ("cus_A", START, other_end)]
    minutes = {window: totals.billable_minutes for window, totals in call_totals_in_windows(warehouse, windows).items()}
    assert minutes == {
        ("cus_A", START, END): 7, ("cus_B", START, END): 7, ("cus_C", START, END): 0, ("cus_A", START, other_end): 3,
    }

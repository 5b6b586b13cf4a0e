"""reconciliation_store and the views of migration 0004, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from sqlalchemy import insert, select, text

from aisyst_pipelines.billing.periods import Period
from aisyst_pipelines.billing.reconciliation import Correction
from aisyst_pipelines.warehouse import Warehouse, reconciliation_store
from aisyst_pipelines.warehouse.reconciliation_store import ReconciliationRow
from aisyst_pipelines.warehouse.schema import call_records, stripe_customers

UTC = timezone.utc
T = lambda *a: datetime(*a, tzinfo=UTC)  # noqa: E731


def row(customer: str, status: str, delta: int) -> ReconciliationRow:
    return ReconciliationRow(
        customer_id=customer, period_start=T(2026, 3, 4, 14, 23, 17), period_end=T(2026, 4, 4, 14, 23, 17),
        subscription_id="sub_1", window_start=T(2026, 3, 4, 14, 23), window_end=T(2026, 3, 14), window_closed=False,
        cdr_minutes=100, stripe_minutes=100 - delta, delta_minutes=delta, drift_minutes=abs(delta),
        drifting_days=int(delta != 0), status=status, cause=None, detail='{"drifting_days": []}',
        repaired_minutes=0, unrepaired_drift_minutes=abs(delta),
    )


def add_customer(connection, customer_id: str, account_code: str | None) -> None:  # type: ignore[no-untyped-def]
    connection.execute(insert(stripe_customers).values(customer_id=customer_id, account_code=account_code, deleted=0,
                                                       synced_at=T(2026, 3, 1)))


def add_call(connection, call_id: str, account: str, customer: str | None, ended: datetime, minutes: int,  # type: ignore[no-untyped-def]
             started: datetime | None = None) -> None:
    connection.execute(insert(call_records).values(
        call_id=call_id, account_code=account, customer_id=customer, direction="inbound", disposition="completed",
        started_at=started or ended - timedelta(minutes=minutes), answered_at=ended - timedelta(minutes=minutes),
        ended_at=ended, billable_seconds=minutes * 60 - 5, billable_minutes=minutes, caller_hash="a", callee_hash="b",
        content_hash="h", source_file="f.csv", source_sha256="0" * 64, source_line=1, ingested_at=ended))


def test_latest_view_shows_the_newest_run_per_customer_period(warehouse: Warehouse) -> None:
    with warehouse.begin() as connection:
        add_customer(connection, "cus_1", "ACME")
    reconciliation_store.write_results(warehouse, "run-1", [row("cus_1", "under_metered", 5), row("cus_2", "match", 0)], T(2026, 3, 14, 2))
    reconciliation_store.write_results(warehouse, "run-2", [row("cus_1", "match", 0)], T(2026, 3, 15, 2))
    # A retry of run-2 rewrites its own rows, never duplicates them.
    reconciliation_store.write_results(warehouse, "run-2", [row("cus_1", "match", 0)], T(2026, 3, 15, 2, 5))
    with warehouse.connect() as connection:
        latest = connection.execute(text(
            "SELECT customer_id, account_code, status, run_id, reconciled_at, window_start FROM v_reconciliation_latest "
            "ORDER BY customer_id")).all()
    assert [(r.customer_id, r.account_code, r.status, r.run_id) for r in latest] == [
        ("cus_1", "ACME", "match", "run-2"), ("cus_2", None, "match", "run-1")]
    assert len(reconciliation_store.run_results(warehouse, "run-2")) == 1
    assert reconciliation_store.run_results(warehouse, "run-1")[0]["window_start"] == T(2026, 3, 4, 14, 23)


def test_unmapped_usage_view(warehouse: Warehouse) -> None:
    with warehouse.begin() as connection:
        add_customer(connection, "cus_1", "ACME")
        add_customer(connection, "cus_2", "SHARED")
        add_customer(connection, "cus_3", "SHARED")
        add_call(connection, "c1", "ACME", "cus_1", T(2026, 3, 5, 10), 3)
        add_call(connection, "c2", "SHARED", None, T(2026, 3, 5, 11), 4)
        add_call(connection, "c3", "SHARED", None, T(2026, 3, 6, 12), 6)
        add_call(connection, "c4", "NOBODY", None, T(2026, 3, 7, 9), 2)
    with warehouse.connect() as connection:
        rows = connection.execute(text("SELECT * FROM v_unmapped_usage ORDER BY account_code")).mappings().all()
    assert [(r["account_code"], r["calls"], r["billable_minutes"], r["mapped_customers"], r["mapped_customer_id"]) for r in rows] == [
        ("NOBODY", 1, 2, 0, None), ("SHARED", 2, 10, 2, None)]
    first = rows[1]["first_call_ended_at"]
    assert str(first).startswith("2026-03-05 11:00:00")


def test_cdr_side_and_evidence_queries(warehouse: Warehouse) -> None:
    with warehouse.begin() as connection:
        add_call(connection, "c1", "ACME", "cus_1", T(2026, 3, 5, 10), 3)
        add_call(connection, "c2", "ACME", "cus_1", T(2026, 3, 6, 0, 0), 4)  # on the edge: belongs to the 6th
        add_call(connection, "c3", "ACME", None, T(2026, 3, 5, 12), 6)  # unmapped copy of the account
        add_call(connection, "c4", "OTHER", "cus_2", T(2026, 3, 5, 12), 7)
        add_call(connection, "c5", "ACME", "cus_1", T(2026, 3, 6, 0, 30), 40, started=T(2026, 3, 5, 23, 50))
    day5, day6 = Period(T(2026, 3, 5), T(2026, 3, 6)), Period(T(2026, 3, 6), T(2026, 3, 7))
    part = Period(T(2026, 3, 5, 11), T(2026, 3, 6))
    minutes = reconciliation_store.cdr_minutes_in_spans(
        warehouse, [("cus_1", day5), ("cus_1", day6), ("cus_1", part), ("cus_2", day5), ("cus_2", day5), ("cus_3", day5)])
    # [start, end) by ended_at; unmapped calls count for nobody; spans without calls are left out.
    assert minutes == {("cus_1", day5): 3, ("cus_1", day6): 44, ("cus_2", day5): 7}
    assert ("cus_1", part) not in minutes and reconciliation_store.cdr_minutes_in_spans(warehouse, []) == {}
    evidence = reconciliation_store.evidence_calls(warehouse, "cus_1", "ACME", Period(T(2026, 3, 5), T(2026, 3, 6)))
    # its calls, its account's unmapped one, and c2 and c5 that started that day (they may end past the period)
    assert sorted(evidence["call_id"]) == ["c1", "c2", "c3", "c5"]
    assert evidence["ended_at"].iloc[0].tzinfo is not None


def correction(identifier: str, customer: str = "cus_1", value: int = 5) -> Correction:
    return Correction(identifier, customer, date(2026, 3, 6), T(2026, 3, 4, 14, 23, 17), value, T(2026, 3, 6, 23, 59, 59), "test")


def test_ledger_records_once_and_tracks_each_outcome(warehouse: Warehouse) -> None:
    created = T(2026, 3, 14, 2)
    assert reconciliation_store.record_pending(warehouse, [correction("x-1"), correction("x-2")], created, "run-1") == ["x-1", "x-2"]
    # A second writer of the same identifier (a concurrent or repeated run) inserts nothing.
    assert reconciliation_store.record_pending(warehouse, [correction("x-1", value=99)], created, "run-2") == []
    reconciliation_store.mark_sent(warehouse, "x-1", created + timedelta(seconds=1))
    reconciliation_store.note_attempt_error(warehouse, "x-2", "APIConnectionError: timeout")
    assert reconciliation_store.record_pending(warehouse, [correction("y-1", customer="cus_9")], created, "run-1") == ["y-1"]
    entries = {e.identifier: e for e in reconciliation_store.ledger(warehouse, ["cus_1"], date(2026, 3, 1))}
    assert entries["x-1"].status.value == "sent" and entries["x-1"].value == 5
    assert entries["x-1"].sent_at == created + timedelta(seconds=1)
    assert entries["x-2"].status.value == "pending"
    assert entries["y-1"].status.value == "pending"  # pending rows of any customer come along
    reconciliation_store.mark_failed(warehouse, "x-2", "timestamp_too_far_in_past")
    reconciliation_store.expire(warehouse, ["y-1"])
    entries = {e.identifier: e for e in reconciliation_store.ledger(warehouse, ["cus_1", "cus_9"], date(2026, 3, 1))}
    assert (entries["x-2"].status.value, entries["y-1"].status.value) == ("failed", "expired")
    from aisyst_pipelines.warehouse.schema import meter_corrections

    with warehouse.connect() as connection:
        attempts = dict(connection.execute(select(meter_corrections.c.identifier, meter_corrections.c.attempts)).all())
        errors = dict(connection.execute(select(meter_corrections.c.identifier, meter_corrections.c.last_error)).all())
    assert attempts == {"x-1": 1, "x-2": 2, "y-1": 0}
    assert errors["x-2"] == "timestamp_too_far_in_past" and errors["x-1"] is None

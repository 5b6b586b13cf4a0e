"""The shared work-queue steps, on both backends: enqueue once, claim with a lease, count attempts,
stop at max attempts, and two workers racing for one row never both win it."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from sqlalchemy import select

from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse import work_queue
from aisyst_pipelines.warehouse.schema import meter_corrections, stripe_event_alerts
from aisyst_pipelines.warehouse.work_queue import WorkQueue

NOW = datetime(2026, 3, 1, 12, tzinfo=timezone.utc)
LEASE = timedelta(minutes=10)
# A leased queue with a two-column key, and one without a lease keyed by one column.
ALERTS = WorkQueue(stripe_event_alerts, ("event_id", "kind"))
CORRECTIONS = WorkQueue(meter_corrections, ("identifier",))
c = stripe_event_alerts.c
PENDING = c.status == "pending"
OLDEST_FIRST = (c.raised_at, c.event_id)


def alert(n: int, kind: str = "payment_failed") -> dict[str, object]:
    return dict(event_id=f"evt_{n:03d}", kind=kind, subject=f"alert {n}", detail="-",
                raised_at=NOW + timedelta(seconds=n), status="pending", attempts=0)


def queue_alerts(warehouse: Warehouse, count: int) -> None:
    with warehouse.begin() as connection:
        work_queue.enqueue(connection, ALERTS, [alert(n) for n in range(count)])


def claim(warehouse: Warehouse, at: datetime, limit: int | None = None) -> list[str]:
    with warehouse.begin() as connection:
        rows = work_queue.claim(connection, ALERTS, due=PENDING, now=at, lease=LEASE, order_by=OLDEST_FIRST, limit=limit)
    return sorted(row.event_id for row in rows)


def row(warehouse: Warehouse, event_id: str) -> dict[str, object]:
    with warehouse.connect() as connection:
        return dict(connection.execute(select(stripe_event_alerts).where(c.event_id == event_id)).mappings().one())


def test_enqueue_inserts_each_key_once_and_says_which(warehouse: Warehouse) -> None:
    with warehouse.begin() as connection:
        first = work_queue.enqueue(connection, ALERTS, [alert(2), alert(1), alert(2) | {"subject": "again"}])
        second = work_queue.enqueue(connection, ALERTS, [alert(3), alert(1), alert(1, kind="subscription_past_due")])
    assert first == [("evt_002", "payment_failed"), ("evt_001", "payment_failed")]
    assert second == [("evt_003", "payment_failed"), ("evt_001", "subscription_past_due")]
    assert row(warehouse, "evt_002")["subject"] == "alert 2"  # the first row of a key given twice


def test_claim_takes_the_oldest_due_rows_up_to_the_limit_and_sets_values(warehouse: Warehouse) -> None:
    queue_alerts(warehouse, 5)
    with warehouse.begin() as connection:
        rows = work_queue.claim(connection, ALERTS, due=PENDING, now=NOW, lease=LEASE, order_by=OLDEST_FIRST, limit=2,
                                returning=[c.event_id, c.status], status="sending")
    assert sorted(rows) == [("evt_000", "sending"), ("evt_001", "sending")]
    assert row(warehouse, "evt_000")["claimed_at"] == NOW
    # no longer due (status) and leased: the next claim gets the others only
    assert claim(warehouse, NOW) == ["evt_002", "evt_003", "evt_004"]


def test_a_claim_is_free_again_once_its_lease_is_over(warehouse: Warehouse) -> None:
    queue_alerts(warehouse, 1)
    assert claim(warehouse, NOW) == ["evt_000"]
    assert claim(warehouse, NOW + LEASE - timedelta(microseconds=1)) == []  # still held
    assert claim(warehouse, NOW + LEASE) == ["evt_000"]  # the claimer is taken to have died
    assert row(warehouse, "evt_000")["claimed_at"] == NOW + LEASE


def test_an_ended_attempt_is_counted_keeps_its_error_and_releases_the_claim(warehouse: Warehouse) -> None:
    queue_alerts(warehouse, 2)
    assert claim(warehouse, NOW) == ["evt_000", "evt_001"]
    keys = [("evt_000", "payment_failed")]
    with warehouse.begin() as connection:
        assert work_queue.record_attempt(connection, ALERTS, keys, error="421 try later") == 1
    failed = row(warehouse, "evt_000")
    assert (failed["attempts"], failed["last_error"], failed["claimed_at"]) == (1, "421 try later", None)
    assert claim(warehouse, NOW) == ["evt_000"]  # released: claimable at once, not after the lease
    with warehouse.begin() as connection:
        assert work_queue.record_attempt(connection, ALERTS, keys, error=None, status="sent", sent_at=NOW) == 1
        # `where` narrows the rows: evt_001 is pending, not sent, so nothing changes
        assert work_queue.record_attempt(connection, ALERTS, [("evt_001", "payment_failed")], error="x",
                                         where=c.status == "sent") == 0
    sent = row(warehouse, "evt_000")
    assert (sent["attempts"], sent["last_error"], sent["status"], sent["sent_at"]) == (2, None, "sent", NOW)
    assert row(warehouse, "evt_001")["attempts"] == 0


def test_a_queue_without_a_lease_counts_attempts_and_stops_at_max_attempts(warehouse: Warehouse) -> None:
    m = meter_corrections.c
    with warehouse.begin() as connection:
        work_queue.enqueue(connection, CORRECTIONS, [
            dict(identifier=f"corr-{n}", customer_id="cus_A", usage_date=NOW.date(), period_start=NOW, value=5,
                 event_timestamp=NOW, reason="late CDR", created_at=NOW, status="pending", attempts=0)
            for n in range(3)
        ])
        for attempts, identifier in ((1, "corr-0"), (3, "corr-2")):
            for _ in range(attempts):
                work_queue.record_attempt(connection, CORRECTIONS, [(identifier,)], error="timeout")

    def due(max_attempts: int) -> list[str]:
        with warehouse.connect() as connection:
            rows = work_queue.due_rows(connection, CORRECTIONS, [m.identifier], due=m.status == "pending",
                                       order_by=[m.identifier], max_attempts=max_attempts)
        return [identifier for (identifier,) in rows]

    assert due(max_attempts=3) == ["corr-0", "corr-1"]  # corr-2 used its three attempts
    assert due(max_attempts=1) == ["corr-1"]
    assert due(max_attempts=4) == ["corr-0", "corr-1", "corr-2"]


def test_update_rows_reaches_keys_beyond_one_statement(warehouse: Warehouse) -> None:
    queue_alerts(warehouse, 1201)  # more keys than one IN list carries
    keys = [(f"evt_{n:03d}", "payment_failed") for n in range(1201)]
    with warehouse.begin() as connection:
        assert work_queue.count_attempt(connection, ALERTS, keys, status="sent") == 1201
    assert claim(warehouse, NOW) == []


def test_two_claimers_racing_never_both_win_a_row(warehouse: Warehouse) -> None:
    """Two workers, each on its own connection, start their claims together, round after round, each
    for one row of the same queue: every row is won by one of them, none by both."""
    queue_alerts(warehouse, 20)
    won: dict[str, list[str]] = {"a": [], "b": []}
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def worker(name: str) -> None:
        try:
            for _ in range(10):
                start.wait(timeout=30)
                won[name] += claim(warehouse, NOW, limit=1)
        except BaseException as error:  # noqa: BLE001 - reported by the test below
            errors.append(error)
            start.abort()

    threads = [threading.Thread(target=worker, args=(name,)) for name in won]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert errors == []
    assert set(won["a"]).isdisjoint(won["b"])
    assert len(won["a"]) == len(set(won["a"])) and len(won["b"]) == len(set(won["b"]))
    assert claim(warehouse, NOW) == sorted(set(f"evt_{n:03d}" for n in range(20)) - set(won["a"]) - set(won["b"]))


def test_a_claim_waiting_on_an_open_claim_finds_the_row_taken(warehouse: Warehouse) -> None:
    """Worker A has claimed the row but not committed yet; worker B's claim must wait for A and then
    find the row claimed (PostgreSQL re-checks the WHERE on the row it waited for; on SQLite B waits
    for A's write lock), never claim it as well."""
    queue_alerts(warehouse, 1)
    second: list[list[str]] = []
    with warehouse.engine.connect() as a:
        transaction = a.begin()
        claimed = work_queue.claim(a, ALERTS, due=PENDING, now=NOW, lease=LEASE)
        assert [row.event_id for row in claimed] == ["evt_000"]
        b = threading.Thread(target=lambda: second.append(claim(warehouse, NOW + timedelta(seconds=1))))
        b.start()
        b.join(timeout=0.5)
        assert b.is_alive()  # B waits for A
        transaction.commit()
    b.join(timeout=30)
    assert second == [[]]

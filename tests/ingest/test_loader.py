"""The warehouse loader (warehouse/cdr_store.py) on SQLite and PostgreSQL, with chunks built by hand."""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import pytest
from ingest_samples import (
    at,
    call,
    chunk,
    count_rows,
    crashing,
    expected_usage,
    load_cdr_file,
    reject,
    snapshot,
    source,
    usage,
    usage_calls_minutes,
    write_sample,
)
from sqlalchemy import insert, select

from aisyst_pipelines.cdr import ReadOptions, read_cdr_file
from aisyst_pipelines.services.ingestion import file_sha256
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.cdr_store import (
    CdrFileIdentity,
    cdr_file,
    last_ingested_at,
    loaded_sha256s,
    read_ahead,
    record_failed_file,
)
from aisyst_pipelines.warehouse.schema import call_records, call_records_rejected, stripe_customers, usage_daily

T = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)


def map_accounts(warehouse: Warehouse, mapping: dict[str, str]) -> None:
    with warehouse.begin() as connection:
        connection.execute(
            insert(stripe_customers),
            [{"customer_id": customer, "account_code": account, "synced_at": T} for account, customer in mapping.items()],
        )


def stored_calls(warehouse: Warehouse) -> dict[str, tuple]:
    with warehouse.connect() as connection:
        rows = connection.execute(
            select(call_records.c.call_id, call_records.c.customer_id, call_records.c.billable_seconds,
                   call_records.c.content_hash, call_records.c.source_file, call_records.c.source_line)
        )
        return {row.call_id: tuple(row)[1:] for row in rows}


def test_a_new_file_loads_its_calls_rejects_file_row_and_usage(warehouse: Warehouse) -> None:
    map_accounts(warehouse, {"acct-a": "cus_A"})
    calls = [
        call("c1", "acct-a", at("2026-03-01T10:00:00+00:00"), 61, line=2),
        call("c2", "acct-a", at("2026-03-01T11:00:00+00:00"), 30, line=3, disposition="no_answer"),
        call("c3", "acct-b", at("2026-03-02T00:00:00+00:00"), 120, line=5),
    ]
    bad = [reject(4, "unparseable_time", "c9,acct-a,inbound,completed,yesterday,,,,,")]

    result = load_cdr_file(warehouse, source("day1.csv"), [chunk(calls, bad)], now=T)

    assert not result.skipped
    assert (result.rows_total, result.rows_loaded, result.rows_duplicate, result.rows_rejected) == (4, 3, 0, 1)
    assert result.rejected_by_reason == {"unparseable_time": 1}
    assert result.unmapped_accounts == ["acct-b"]
    stored = stored_calls(warehouse)
    assert stored["c1"][:2] == ("cus_A", 61)
    assert stored["c3"][:2] == (None, 120)  # unmapped account: kept, customer unknown
    assert usage(warehouse) == {
        ("acct-a", "2026-03-01"): (2, 61, 2, "cus_A"),
        ("acct-b", "2026-03-02"): (1, 120, 2, None),
    }
    row = cdr_file(warehouse, source("day1.csv").sha256)
    assert row is not None
    assert (row.file_path, row.format, row.rows_total, row.rows_loaded, row.rows_rejected) == (
        "/landing/day1.csv", "canonical_csv", 4, 3, 1)
    assert row.ingested_at == T
    with warehouse.connect() as connection:
        stored_reject = connection.execute(select(call_records_rejected)).one()
    assert (stored_reject.source_line, stored_reject.reason_code) == (4, "unparseable_time")
    assert stored_reject.raw_record.startswith("c9,acct-a")


def test_the_same_file_twice_is_skipped_and_changes_nothing(warehouse: Warehouse) -> None:
    chunks = [chunk([call("c1", "a", T, 61, line=2)], [reject(3, "missing_field", "x")])]
    load_cdr_file(warehouse, source("f.csv"), chunks, now=T)
    before = snapshot(warehouse)

    again = load_cdr_file(warehouse, source("f.csv"), chunks, now=datetime(2026, 4, 1, tzinfo=timezone.utc))

    assert again.skipped
    assert snapshot(warehouse) == before


def test_overlapping_files_count_identical_calls_once(warehouse: Warehouse) -> None:
    first = [call(f"c{i}", "a", at(f"2026-03-01T1{i}:00:00+00:00"), 60 * i, line=i + 2) for i in range(1, 5)]
    second = first[2:] + [call("c5", "a", at("2026-03-01T16:00:00+00:00"), 90, line=9)]
    load_cdr_file(warehouse, source("first.csv"), [chunk(first)], now=T)

    result = load_cdr_file(warehouse, source("second.csv"), [chunk(second)], now=T)

    assert (result.rows_loaded, result.rows_duplicate, result.rows_rejected) == (1, 2, 0)
    assert usage(warehouse)[("a", "2026-03-01")] == (5, 60 + 120 + 180 + 240 + 90, 1 + 2 + 3 + 4 + 2, None)
    assert stored_calls(warehouse)["c3"][3:] == ("/landing/first.csv", 5)  # the first delivery stays the record


def test_a_conflicting_duplicate_is_rejected_and_the_first_version_stays(warehouse: Warehouse) -> None:
    load_cdr_file(warehouse, source("first.csv"), [chunk([call("c1", "a", T, 61, line=2)])], now=T)
    changed = call("c1", "a", T, 3600, line=7, variant="re-rated")

    result = load_cdr_file(warehouse, source("second.csv"), [chunk([changed])], now=T)

    assert (result.rows_loaded, result.rows_duplicate, result.rows_rejected) == (0, 0, 1)
    assert result.rejected_by_reason == {"conflicting_duplicate": 1}
    assert stored_calls(warehouse)["c1"][1] == 61
    assert usage(warehouse)[("a", "2026-03-10")] == (1, 61, 2, None)
    with warehouse.connect() as connection:
        row = connection.execute(select(call_records_rejected)).one()
    assert (row.source_line, row.call_id, row.reason_code, row.source_file) == (7, "c1", "conflicting_duplicate", "/landing/second.csv")
    assert "/landing/first.csv, line 2" in row.reason
    assert '"billable_seconds": 3600' in row.raw_record  # the rejected version, as parsed
    assert cdr_file(warehouse, source("second.csv").sha256).rows_rejected == 1


def test_duplicates_within_one_file_within_and_across_chunks(warehouse: Warehouse) -> None:
    c1 = call("c1", "a", T, 61, line=2)
    c2 = call("c2", "a", T, 30, line=3)
    chunks = [
        chunk([c1, c2, {**c1, "source_line": 4}, {**call("c2", "a", T, 999, line=5, variant="x")}]),
        chunk([{**c1, "source_line": 6}, call("c1", "a", T, 5, line=7, variant="y"), call("c3", "a", T, 1, line=8)]),
    ]

    result = load_cdr_file(warehouse, source("dups.csv"), chunks, now=T)

    assert (result.rows_total, result.rows_loaded, result.rows_duplicate, result.rows_rejected) == (7, 3, 2, 2)
    with warehouse.connect() as connection:
        rejected = connection.execute(
            select(call_records_rejected.c.source_line, call_records_rejected.c.call_id).order_by(call_records_rejected.c.source_line)
        ).all()
    assert rejected == [(5, "c2"), (7, "c1")]
    stored = stored_calls(warehouse)
    assert (stored["c1"][1], stored["c1"][4]) == (61, 2)
    assert (stored["c2"][1], stored["c2"][4]) == (30, 3)
    assert usage(warehouse)[("a", "2026-03-10")] == (3, 92, 4, None)


def test_a_crash_mid_file_loads_nothing_and_the_next_run_loads_it_fully(warehouse: Warehouse) -> None:
    load_cdr_file(warehouse, source("earlier.csv"), [chunk([call("c0", "a", T, 60, line=2)])], now=T)
    before = snapshot(warehouse)
    chunks = [
        chunk([call(f"c{i}", "a", T, 60, line=i + 2) for i in range(1, 4)], [reject(9, "missing_field", "x")]),
        chunk([call(f"c{i}", "b", T, 60, line=i + 2) for i in range(4, 7)]),
    ]

    with pytest.raises(RuntimeError, match="simulated crash"):
        load_cdr_file(warehouse, source("big.csv"), crashing(chunks, after=1), now=T)

    assert snapshot(warehouse) == before
    result = load_cdr_file(warehouse, source("big.csv"), chunks, now=T)
    assert not result.skipped
    assert (result.rows_loaded, result.rows_rejected) == (6, 1)
    assert usage(warehouse) == {("a", "2026-03-10"): (4, 240, 4, None), ("b", "2026-03-10"): (3, 180, 3, None)}


def test_usage_daily_is_recomputed_only_for_touched_days_and_late_cdrs_land_in_their_day(warehouse: Warehouse) -> None:
    first = [
        call("c1", "a", at("2026-03-01T10:00:00+00:00"), 60, line=2),
        call("c2", "a", at("2026-03-05T10:00:00+00:00"), 60, line=3),
        call("c3", "b", at("2026-03-01T10:00:00+00:00"), 60, line=4),
    ]
    load_cdr_file(warehouse, source("march.csv"), [chunk(first)], now=T)
    # A late CDR for 1 March arrives weeks later, in a file with an identical copy of c2.
    late_time = datetime(2026, 4, 2, tzinfo=timezone.utc)
    late = [call("c9", "a", at("2026-03-01T23:59:59+00:00"), 125, line=2), {**first[1], "source_line": 3}]

    result = load_cdr_file(warehouse, source("late.csv"), [chunk(late)], now=late_time)

    assert (result.rows_loaded, result.rows_duplicate, result.usage_days_recomputed) == (1, 1, 1)
    with warehouse.connect() as connection:
        rows = {(r.account_code, r.usage_date.isoformat()): (r.calls, r.billable_minutes, r.updated_at)
                for r in connection.execute(select(usage_daily))}
    assert rows == {
        ("a", "2026-03-01"): (2, 1 + 3, late_time),  # recomputed from call_records, late call included
        ("a", "2026-03-05"): (1, 1, T),  # only the duplicate touched it: left alone
        ("b", "2026-03-01"): (1, 1, T),
    }


def test_the_utc_day_of_ended_at_decides_the_usage_day(warehouse: Warehouse) -> None:
    calls = [
        call("late-evening", "a", at("2026-03-01T23:59:59.999999+00:00"), 60, line=2),
        call("midnight", "a", at("2026-03-02T00:00:00+00:00"), 60, line=3),
        call("berlin-morning", "a", at("2026-03-02T00:30:00+01:00"), 60, line=4),  # 23:30 UTC on 1 March
    ]
    load_cdr_file(warehouse, source("edges.csv"), [chunk(calls)], now=T)
    assert {day: value[0] for (_, day), value in usage(warehouse).items()} == {"2026-03-01": 2, "2026-03-02": 1}


def test_unmapped_and_ambiguous_accounts_are_kept_without_customer(warehouse: Warehouse) -> None:
    map_accounts(warehouse, {"mapped": "cus_1"})
    with warehouse.begin() as connection:  # two live customers claim the same account code
        connection.execute(insert(stripe_customers), [
            {"customer_id": "cus_2", "account_code": "shared", "deleted": 0, "synced_at": T},
            {"customer_id": "cus_3", "account_code": "shared", "deleted": 0, "synced_at": T},
            {"customer_id": "cus_old", "account_code": "moved", "deleted": 1, "synced_at": T},
        ])
    calls = [call(f"c-{account}", account, T, 60, line=n + 2) for n, account in enumerate(["mapped", "shared", "moved", "nobody"])]

    result = load_cdr_file(warehouse, source("mix.csv"), [chunk(calls)], now=T)

    assert result.rows_loaded == 4
    assert result.unmapped_accounts == ["moved", "nobody", "shared"]
    assert {call_id: row[0] for call_id, row in stored_calls(warehouse).items()} == {
        "c-mapped": "cus_1", "c-shared": None, "c-moved": None, "c-nobody": None}
    assert {account: value[3] for (account, _), value in usage(warehouse).items()} == {
        "mapped": "cus_1", "shared": None, "moved": None, "nobody": None}


def test_reject_text_that_the_databases_would_refuse_is_stored_escaped(warehouse: Warehouse) -> None:
    raw = "c1,acct\x00,inbound," + b"\xff\xfe".decode("utf-8", errors="surrogateescape")
    result = load_cdr_file(warehouse, source("bytes.csv"), [chunk([], [reject(2, "invalid_utf8", raw)])], now=T)
    assert result.rejected_by_reason == {"invalid_utf8": 1}
    with warehouse.connect() as connection:
        [(stored, reason_code)] = connection.execute(
            select(call_records_rejected.c.raw_record, call_records_rejected.c.reason_code)).all()
    assert stored == "c1,acct\\x00,inbound,\\xff\\xfe"
    assert reason_code == "invalid_utf8"


def test_a_file_of_only_rejects_still_gets_its_cdr_files_row(warehouse: Warehouse) -> None:
    result = load_cdr_file(warehouse, source("junk.csv"), [chunk([], [reject(n, "malformed_row", "?") for n in range(1, 4)])], now=T)
    assert (result.rows_total, result.rows_loaded, result.rows_rejected, result.reject_share) == (3, 0, 3, 1.0)
    assert cdr_file(warehouse, source("junk.csv").sha256).rows_rejected == 3
    assert usage(warehouse) == {}


def test_a_failed_file_keeps_a_row_that_does_not_count_as_loaded(warehouse: Warehouse) -> None:
    failed = source("broken.csv")

    assert record_failed_file(warehouse, failed, "truncated: the last line does not end with a newline", now=T)

    row = cdr_file(warehouse, failed.sha256)
    assert (row.status, row.failure_reason, row.file_path, row.rows_total) == (
        "failed", "truncated: the last line does not end with a newline", failed.path, 0)
    assert loaded_sha256s(warehouse, [failed.sha256]) == set()  # the same content is still requested
    assert last_ingested_at(warehouse) is None  # a failed file does not make ingestion look fresh
    # The same content failing again under another name: the row follows the latest copy.
    assert record_failed_file(warehouse, CdrFileIdentity("/landing/again.csv", failed.sha256, "unknown", 1), "empty", now=T)
    row = cdr_file(warehouse, failed.sha256)
    assert (row.status, row.file_path, row.failure_reason) == ("failed", "/landing/again.csv", "empty")


def test_content_that_failed_before_loads_and_its_row_becomes_loaded(warehouse: Warehouse) -> None:
    failed = source("renamed.csv")
    record_failed_file(warehouse, CdrFileIdentity("/landing/\\xe9t\\xe9.csv", failed.sha256, "unknown", 7), "name not UTF-8", now=T)

    result = load_cdr_file(warehouse, failed, [chunk([call("c1", "a", T, 61, line=2)], [reject(3, "malformed_row", "?")])], now=T)

    assert not result.skipped and result.rows_loaded == 1
    row = cdr_file(warehouse, failed.sha256)
    assert (row.status, row.failure_reason, row.file_path, row.format, row.rows_total, row.rows_loaded, row.rows_rejected) == (
        "loaded", None, failed.path, failed.format, 2, 1, 1)
    assert loaded_sha256s(warehouse, [failed.sha256]) == {failed.sha256}
    assert last_ingested_at(warehouse) == T
    # A loaded row is never turned back into a failed one, whatever later happens to a copy.
    assert not record_failed_file(warehouse, failed, "a later copy was truncated", now=T)
    assert cdr_file(warehouse, failed.sha256).status == "loaded"
    assert load_cdr_file(warehouse, failed, [chunk([call("c1", "a", T, 61, line=2)])], now=T).skipped


KILLED_LOADER = """
import os, signal, sys
from pathlib import Path
from aisyst_pipelines.cdr import ReadOptions, read_cdr_file
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.cdr_store import CdrFileIdentity, load_cdr_file

def killed_after(chunks, n):
    for index, item in enumerate(chunks):
        if index == n:
            os.kill(os.getpid(), signal.SIGKILL)  # no exception, no rollback: the process just dies
        yield item

url, path, sha256 = sys.argv[1:]
chunks = read_cdr_file(Path(path), ReadOptions(pii_key=b"k", chunk_rows=25))
load_cdr_file(Warehouse(url), CdrFileIdentity(path, sha256, "canonical_csv", 0), killed_after(chunks, 3), pii_key_fingerprint="k")
"""


def test_a_process_killed_mid_file_leaves_nothing_and_the_file_loads_afterwards(warehouse: Warehouse, tmp_path: Path) -> None:
    path = tmp_path / "calls.csv"
    written, calls = write_sample(path, "canonical_csv", days=4, calls_per_day=40)
    assert written.rows > 100  # several chunks of 25
    sha256 = file_sha256(path)

    killed = subprocess.run([sys.executable, "-c", KILLED_LOADER, warehouse.url, str(path), sha256], capture_output=True, timeout=120)

    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert count_rows(warehouse) == {"cdr_files": 0, "call_records": 0, "call_records_rejected": 0, "usage_daily": 0}
    result = load_cdr_file(
        warehouse, CdrFileIdentity(str(path), sha256, "canonical_csv", 0), read_cdr_file(path, ReadOptions(pii_key=b"k", chunk_rows=25)),
        pii_key_fingerprint="k",
    )
    assert result.rows_loaded == written.rows
    assert usage_calls_minutes(warehouse) == expected_usage(calls)


def test_read_ahead_yields_in_order_and_hands_over_the_producers_error() -> None:
    def items():
        yield from range(5)
        raise ValueError("truncated file")

    seen = []
    with pytest.raises(ValueError, match="truncated file"):
        for item in read_ahead(items()):
            seen.append(item)
    assert seen == [0, 1, 2, 3, 4]


def test_read_ahead_stops_its_producer_when_the_consumer_gives_up() -> None:
    produced = []

    def items():
        for n in range(1000):
            produced.append(n)
            yield n

    with pytest.raises(RuntimeError):
        for item in read_ahead(items()):
            if item == 2:
                raise RuntimeError("the transaction failed")
    assert len(produced) <= 5  # one handed over, one waiting: the producer did not run on to the end


def test_concurrent_loads_serialise_and_agree_on_usage_daily(warehouse: Warehouse) -> None:
    """Two loads at once that touch the same account-day (each would recompute it without seeing the
    other's uncommitted calls), one of them also re-delivering calls of the other."""
    first = [call(f"x{i}", "a", T, 60 * i, line=i + 2) for i in range(1, 6)]
    second = [call(f"y{i}", "a", T, 90, line=i + 2) for i in range(1, 4)]
    files = {"first.csv": [chunk(first[:3]), chunk(first[3:])], "second.csv": [chunk(second), chunk([])]}
    start = threading.Barrier(2)

    def slow(chunks):  # a pause between chunks, so that the two loads would interleave if they could
        for item in chunks:
            yield item
            time.sleep(0.3)

    def load(name: str):
        start.wait()
        return load_cdr_file(warehouse, source(name), slow(files[name]), now=T)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(load, files))

    assert [r.rows_loaded for r in results] == [5, 3]
    assert usage(warehouse) == {("a", "2026-03-10"): (8, 60 * 15 + 270, 15 + 6, None)}
    redelivered = load_cdr_file(warehouse, source("third.csv"), [chunk(first + second)], now=T)
    assert (redelivered.rows_loaded, redelivered.rows_duplicate) == (0, 8)
    assert usage(warehouse) == {("a", "2026-03-10"): (8, 60 * 15 + 270, 15 + 6, None)}


def usage_from_call_records(warehouse: Warehouse) -> dict[tuple[str, str], tuple[int, int, int, int, str | None]]:
    """usage_daily as it must be: call_records grouped by account and UTC day of ended_at."""
    with warehouse.connect() as connection:
        calls = connection.execute(select(call_records.c.account_code, call_records.c.ended_at, call_records.c.disposition,
                                          call_records.c.billable_seconds, call_records.c.billable_minutes, call_records.c.customer_id)).all()
    totals: dict[tuple[str, str], list] = {}
    for account, ended_at, disposition, seconds, minutes, customer in calls:
        day = totals.setdefault((account, ended_at.astimezone(timezone.utc).date().isoformat()), [0, 0, 0, 0, customer])
        day[0] += 1
        day[1] += disposition == "completed"
        day[2] += seconds
        day[3] += minutes
    return {key: tuple(value) for key, value in totals.items()}  # type: ignore[misc]


def usage_daily_rows(warehouse: Warehouse) -> dict[tuple[str, str], tuple[int, int, int, int, str | None]]:
    with warehouse.connect() as connection:
        return {(r.account_code, r.usage_date.isoformat()): (r.calls, r.answered_calls, r.billable_seconds, r.billable_minutes, r.customer_id)
                for r in connection.execute(select(usage_daily))}


def test_usage_daily_always_equals_call_records_by_account_and_utc_day(warehouse: Warehouse) -> None:
    """Whatever mix of files arrives — new days, days with calls already, repeats within a chunk and
    across chunks and files, conflicting re-deliveries, calls on the edge of a UTC day — usage_daily
    is call_records grouped by account and UTC day. (New days take the totals summed while the calls
    were copied, days with calls are rebuilt from call_records: both must give the same answer.)"""
    rng = random.Random(12)
    map_accounts(warehouse, {"a": "cus_A"})
    edges = ["2026-03-01T00:00:00+00:00", "2026-03-01T23:59:59.999999+00:00", "2026-03-02T00:30:00+01:00"]
    known: list[dict] = []
    for file_number in range(6):
        chunks = []
        line = 2
        for _ in range(rng.randint(1, 3)):
            calls = []
            for _ in range(rng.randint(1, 25)):
                if known and rng.random() < 0.3:  # a re-delivery, identical or changed
                    again = rng.choice(known)
                    calls.append({**again, "source_line": line} if rng.random() < 0.5 else
                                 call(again["call_id"], again["account_code"], again["ended_at"], 7, line=line, variant="changed"))
                else:
                    ended = at(rng.choice(edges)) if rng.random() < 0.3 else at(f"2026-03-{rng.randint(1, 5):02d}T{rng.randint(0, 23):02d}:00:00+00:00")
                    disposition = rng.choice(["completed", "completed", "no_answer"])
                    calls.append(call(f"f{file_number}-{line}", rng.choice("abc"), ended, rng.randint(1, 400), line=line, disposition=disposition))
                line += 1
            known += calls
            chunks.append(chunk(calls))
        load_cdr_file(warehouse, source(f"mix-{file_number}.csv"), chunks, now=T)

        assert usage_daily_rows(warehouse) == usage_from_call_records(warehouse), f"after file {file_number}"

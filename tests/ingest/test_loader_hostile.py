"""Hostile CDR files through the real reader and loader, on SQLite and PostgreSQL (issue 12 items 1,
2, 3, 5): the hostile rows are rejected with their reason, the rest loads, nothing is billed for
them, and memory stays bounded whatever a line holds."""

from __future__ import annotations

import gzip
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest
from ingest_samples import count_rows, expected_usage, usage_calls_minutes
from sqlalchemy import select

from aisyst_pipelines.cdr import ReadOptions, read_cdr_file
from aisyst_pipelines.cdr.privacy import pii_key_fingerprint
from aisyst_pipelines.cdr.records import MAX_RAW_RECORD_CHARS
from aisyst_pipelines.services.ingestion import file_sha256
from aisyst_pipelines.simulation import simulate_calls, write_calls
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.cdr_store import CdrFileIdentity, load_cdr_file
from aisyst_pipelines.warehouse.schema import call_records, call_records_rejected

FORMATS = ("canonical_csv", "canonical_jsonl", "twilio", "asterisk")
LOADED_AT = datetime(2026, 12, 1, tzinfo=timezone.utc)  # the sample calls are of October 2026
MAX_RECORD_BYTES = 2048


def hostile_calls(calls: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """Copies of answered sample calls made hostile, and the reason each must be rejected for."""
    answered = calls[calls["disposition"] == "completed"].head(5).reset_index(drop=True).copy()
    answered["call_id"] = ["over", "future", "old", "nul", "long"]
    answered.loc[0, "billable_seconds"] = 86_000  # on a call of a few minutes
    for row, moved_to in ((1, pd.Timestamp("2099-01-01", tz="UTC")), (2, pd.Timestamp("1970-01-01", tz="UTC"))):
        shift = moved_to - answered.loc[row, "started_at"]
        for name in ("started_at", "answered_at", "ended_at"):
            answered.loc[row, name] += shift
    answered.loc[3, "callee"] = "+1415\x00555"
    answered.loc[4, "callee"] = "9" * (MAX_RECORD_BYTES * 2)
    reasons = {"over": "billable_exceeds_call", "future": "call_in_future", "old": "call_too_old", "nul": "nul_byte",
               "long": "record_too_long"}
    return answered, reasons


def load(warehouse: Warehouse, path: Path, fmt: str):
    options = ReadOptions(pii_key=b"k", forced_format=fmt, loaded_at=LOADED_AT, max_record_bytes=MAX_RECORD_BYTES)
    identity = CdrFileIdentity(str(path), file_sha256(path), fmt, path.stat().st_size)
    return load_cdr_file(warehouse, identity, read_cdr_file(path, options), now=LOADED_AT,
                         pii_key_fingerprint=pii_key_fingerprint(b"k"))


@pytest.mark.parametrize("fmt", FORMATS)
def test_hostile_rows_are_rejected_and_never_billed(warehouse: Warehouse, tmp_path: Path, fmt: str) -> None:
    calls = simulate_calls(["acct_a", "acct_b"], days=2, seed=4, mean_calls_per_day=10)
    hostile, reasons = hostile_calls(calls)
    # the hostile rows in the middle of the file, between good ones
    written = write_calls(pd.concat([calls.iloc[:10], hostile, calls.iloc[10:]], ignore_index=True), tmp_path / "calls.dat", fmt)
    first_line = 2 if fmt == "canonical_csv" else 1
    line_of = {call_id: first_line + 10 + i for i, call_id in enumerate(hostile["call_id"])}

    result = load(warehouse, written.path, fmt)  # on PostgreSQL a NUL used to fail the whole file

    assert (result.rows_total, result.rows_loaded, result.rows_rejected) == (len(calls) + 5, len(calls), 5)
    assert result.rejected_by_reason == {reason: 1 for reason in reasons.values()}
    with warehouse.connect() as connection:
        loaded = set(connection.scalars(select(call_records.c.call_id)))
        stored = {row.source_line: row for row in connection.execute(select(call_records_rejected))}
    assert loaded == set(calls["call_id"])
    assert {line: row.reason_code for line, row in stored.items()} == {line_of[call_id]: reasons[call_id] for call_id in reasons}
    for row in stored.values():
        assert "\x00" not in row.raw_record and len(row.raw_record) <= MAX_RAW_RECORD_CHARS + len("…[cut]")
    assert "86000" in stored[line_of["over"]].reason
    assert stored[line_of["nul"]].raw_record  # kept, its NUL escaped
    assert stored[line_of["long"]].raw_record.endswith("…[cut]")
    assert usage_calls_minutes(warehouse) == expected_usage(calls)  # not a minute of the hostile rows


MEASURED_LOAD = """
import resource, sys
from datetime import datetime, timezone
from pathlib import Path
from aisyst_pipelines.cdr import ReadOptions, read_cdr_file
from aisyst_pipelines.cdr.privacy import pii_key_fingerprint
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.cdr_store import CdrFileIdentity, load_cdr_file

url, fmt, warm_up, path = sys.argv[1:]
options = ReadOptions(pii_key=b"k", forced_format=fmt, loaded_at=datetime(2026, 12, 1, tzinfo=timezone.utc))
warehouse = Warehouse(url)
# a small file first: libraries, connections and allocators are warm, what follows is the big one's
load_cdr_file(warehouse, CdrFileIdentity(warm_up, "0" * 64, fmt, 0), read_cdr_file(Path(warm_up), options),
              pii_key_fingerprint=pii_key_fingerprint(b"k"))
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
load_cdr_file(warehouse, CdrFileIdentity(path, "1" * 64, fmt, 0), read_cdr_file(Path(path), options),
              pii_key_fingerprint=pii_key_fingerprint(b"k"))
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print((after - before) // 1024)  # MiB: ru_maxrss is in KiB on Linux
"""
HUGE_LINE_BYTES = 80 * 1024 * 1024
PEAK_GROWTH_LIMIT_MIB = 64  # less than the line: the line is never held


def huge_line_pieces(fmt: str, neighbour: str) -> tuple[str, str]:
    """What comes before and after 80 MiB of "x" to make a line of the format: a JSON object with
    one giant value, or an Asterisk row with one giant field."""
    if fmt == "canonical_jsonl":
        return '{"padding": "', '", ' + neighbour[1:]
    before, after = neighbour.split('"Dial"', 1)
    return before + '"', '"' + after


@pytest.mark.slow
@pytest.mark.parametrize("fmt", ["canonical_jsonl", "asterisk"])
def test_a_gzip_with_one_giant_line_loads_its_neighbours_in_bounded_memory(warehouse: Warehouse, tmp_path: Path, fmt: str) -> None:
    calls = simulate_calls(["acct_a"], days=1, seed=2, mean_calls_per_day=6)
    neighbours = write_calls(calls.iloc[:2], tmp_path / "neighbours.dat", fmt).path.read_text().splitlines()
    warm_up = write_calls(calls.iloc[2:4], tmp_path / "warm_up.dat", fmt).path
    before, after = huge_line_pieces(fmt, neighbours[0])
    path = tmp_path / "hostile.gz"
    with gzip.open(path, "wb", compresslevel=1) as out:  # streamed: the test never holds the line either
        out.write(f"{neighbours[0]}\n{before}".encode())
        piece = b"x" * (1024 * 1024)
        for _ in range(HUGE_LINE_BYTES // len(piece)):
            out.write(piece)
        out.write(f"{after}\n{neighbours[1]}\n".encode())
    assert path.stat().st_size < 1024 * 1024

    measured = subprocess.run([sys.executable, "-c", MEASURED_LOAD, warehouse.url, fmt, str(warm_up), str(path)],
                              capture_output=True, text=True, timeout=300)

    assert measured.returncode == 0, measured.stderr[-2000:]
    growth = int(measured.stdout.split()[-1])
    assert growth < PEAK_GROWTH_LIMIT_MIB, f"peak memory grew by {growth} MiB reading an {HUGE_LINE_BYTES >> 20} MiB line"
    with warehouse.connect() as connection:
        loaded = set(connection.scalars(select(call_records.c.call_id)))
        rejected = connection.execute(select(call_records_rejected)).one()
    assert loaded == set(calls["call_id"].iloc[:4])  # the warm-up's two and the giant line's two neighbours
    assert (rejected.source_line, rejected.reason_code) == (2, "record_too_long")
    assert f"{len(before) + HUGE_LINE_BYTES + len(after)} bytes long" in rejected.reason
    assert len(rejected.raw_record) <= MAX_RAW_RECORD_CHARS + len("…[cut]")
    assert count_rows(warehouse)["cdr_files"] == 2

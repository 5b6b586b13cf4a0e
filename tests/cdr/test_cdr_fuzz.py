"""Whatever the lines hold, every non-blank line ends up as exactly one record or one reject."""

from __future__ import annotations

import json
import tempfile
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aisyst_pipelines.cdr import CdrFileError, RatingPolicy, reader
from aisyst_pipelines.cdr.records import MAX_RAW_RECORD_CHARS

from .conftest import read_all

HEADER = b"call_id,account_code,direction,disposition,started_at,answered_at,ended_at,billable_seconds,caller,callee"
GOOD_CSV = b"c1,acct_1,inbound,completed,2026-10-01T10:00:00Z,2026-10-01T10:00:05Z,2026-10-01T10:01:05Z,60,+14155550100,"
GOOD_TWILIO = (
    b'{"sid": "CA1", "account_sid": "AC1", "from": "+1", "to": "+2", "status": "completed", "start_time": '
    b'"Thu, 01 Oct 2026 10:00:00 +0000", "end_time": "Thu, 01 Oct 2026 10:01:00 +0000", "duration": "60", "direction": "inbound"}'
)
GOOD_ASTERISK = (
    b'"acme","100","200","from-pstn","","","","Dial","","2026-10-01 10:00:00","2026-10-01 10:00:05",'
    b'"2026-10-01 10:01:05",65,60,"ANSWERED","DOCUMENTATION","1.1",""'
)

line_bytes = st.one_of(
    st.binary(max_size=80),
    st.binary(min_size=200, max_size=600),  # longer than some max_record_bytes below
    st.text(max_size=80).map(lambda text: text.encode("utf-8", errors="surrogatepass")),
    st.sampled_from([GOOD_CSV, GOOD_TWILIO, GOOD_ASTERISK, b"", b"\r", b'"', b"{}", b"[]", b",,,,,,,,,"]),
).map(lambda line: line.replace(b"\n", b" "))


@pytest.mark.slow
@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    lines=st.lists(line_bytes, max_size=25),
    file_format=st.sampled_from(["canonical_csv", "twilio", "asterisk"]),
    chunk_rows=st.integers(1, 30),
    max_record_bytes=st.integers(len(HEADER), 700),
    read_size=st.integers(3, 300),  # small reads: long lines also arrive across reads, and are skipped there
)
def test_every_line_is_accounted_for(lines, file_format, chunk_rows, max_record_bytes, read_size):
    body = [HEADER] + lines if file_format == "canonical_csv" else lines
    data = b"".join(line + b"\n" for line in body)
    options = {"forced_format": file_format, "chunk_rows": chunk_rows, "max_record_bytes": max_record_bytes}
    with tempfile.TemporaryDirectory() as folder, pytest.MonkeyPatch.context() as patch:
        patch.setattr(reader, "READ_SIZE", read_size)
        path = Path(folder) / "fuzz.dat"
        path.write_bytes(data)
        if data.startswith(b"\x1f\x8b"):  # gzip magic: read as gzip, and not a valid one
            with pytest.raises(CdrFileError):
                read_all(path, **options)
            return
        result = read_all(path, **options)
    first = 2 if file_format == "canonical_csv" else 1
    expected = [first + i for i, line in enumerate(lines) if line not in (b"", b"\r") and not (i == 0 and first == 1 and line.startswith(b"\xef\xbb\xbf") and line[3:] in (b"", b"\r"))]
    seen = sorted(result.records["source_line"].tolist() + result.rejects["source_line"].tolist())
    assert result.rows_total == len(seen)
    assert set(seen) <= set(range(first, first + len(lines)))
    assert len(seen) == len(set(seen))
    assert set(expected) - set(seen) == set()
    assert set(result.rejects["reason_code"]) <= {
        "missing_field", "unparseable_time", "ended_before_started", "negative_duration", "absurd_duration",
        "unknown_disposition", "invalid_utf8", "malformed_row", "unknown_direction", "call_not_finished", "nul_byte",
        "record_too_long",
    }
    bom = 3 if first == 1 and lines and lines[0].startswith(b"\xef\xbb\xbf") else 0  # dropped from the first line
    too_long = [first + i for i, line in enumerate(lines) if len(line) - (bom if i == 0 else 0) > max_record_bytes]
    assert sorted(result.rejects.loc[result.rejects["reason_code"] == "record_too_long", "source_line"]) == too_long
    assert (result.rejects["raw_record"].str.len() <= MAX_RAW_RECORD_CHARS + len("…[cut]")).all()
    assert not result.rejects["raw_record"].str.contains("\x00", regex=False).any()


def never_billed_beyond_the_call(records) -> bool:
    """Issue 12 item 1: a call bills at most its own length, rounded up, + 1 s of truncation."""
    lasted = np.ceil((records["ended_at"] - records["started_at"]).dt.total_seconds())
    return bool((records["billable_seconds"] <= lasted + 1).all())


@given(seconds=st.lists(st.integers(0, 10**7), max_size=50), free=st.integers(0, 600))
def test_rounding_policies_are_ordered_and_monotonic(seconds, free):
    values = np.array(sorted(seconds), dtype=np.int64)
    ceil = RatingPolicy("ceil", free).billable_minutes(values)
    nearest = RatingPolicy("nearest", free).billable_minutes(values)
    floor = RatingPolicy("floor", free).billable_minutes(values)
    assert (ceil >= nearest).all() and (nearest >= floor).all()
    assert (np.diff(ceil) >= 0).all()
    assert (ceil * 60 >= np.where(values < free, 0, values)).all()
    assert (ceil[values >= free] * 60 - values[values >= free] < 60).all()


GOOD_FIELDS = {
    "call_id": "c1", "account_code": "acct_1", "direction": "inbound", "disposition": "completed",
    "started_at": "2026-10-01T10:00:00Z", "answered_at": "2026-10-01T10:00:05Z", "ended_at": "2026-10-01T10:01:05Z",
    "billable_seconds": "60", "caller": "+14155550100", "callee": "+14155550199",
}
odd_values = st.one_of(
    st.sampled_from([
        "", " ", "inf", "-inf", "nan", "1e400", "-0", "0x10", "+60", "60.0", "9" * 30, "-1", "86401",
        "0001-01-01T00:00:00Z", "9999-12-31T23:59:59Z", "2026-10-01T10:00:00+99:99", "2026-02-30T10:00:00Z",
        "2026-10-01T10:00:00", "Thu, 01 Oct 2026 10:00:00 +0000", "COMPLETED", "No-Answer", "cancelled", "outbound",
        "null", "None", "x" * 200,
    ]),
    st.text(alphabet=st.characters(blacklist_characters='\n\r",', blacklist_categories=("Cs",)), max_size=30),
)


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.dictionaries(st.sampled_from(list(GOOD_FIELDS)), odd_values, max_size=4), min_size=1, max_size=12))
def test_odd_field_values_are_loaded_or_rejected_never_crash(rows):
    lines = [HEADER]
    for i, overrides in enumerate(rows):
        fields = dict(GOOD_FIELDS, call_id=f"c{i}")
        fields.update(overrides)
        lines.append(",".join(fields.values()).encode())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "calls.csv"
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        result = read_all(path)
    assert result.rows_total == len(rows) == len(result.records) + len(result.rejects)
    records = result.records
    assert (records["billable_seconds"] >= 0).all() and (records["billable_seconds"] <= 86_400).all()
    assert (records["ended_at"] >= records["started_at"]).all()
    assert (records["ended_at"] - records["started_at"] <= np.timedelta64(86_400, "s")).all()
    assert never_billed_beyond_the_call(records)
    assert records["direction"].isin(["inbound", "outbound"]).all()
    assert records["disposition"].isin(["completed", "no_answer", "busy", "failed", "canceled"]).all()
    assert (records["call_id"].str.len() <= 128).all() and (records["account_code"].str.len() > 0).all()


TWILIO_FIELDS = {
    "sid": "CA1", "account_sid": "AC1", "from": "+14155550100", "to": "+14155550199", "status": "completed",
    "start_time": "Thu, 01 Oct 2026 10:00:00 +0000", "end_time": "Thu, 01 Oct 2026 10:01:05 +0000",
    "duration": "65", "direction": "outbound-api",
}
json_values = st.one_of(
    odd_values,
    st.text(alphabet=st.characters(blacklist_categories=()), max_size=6),  # NUL and lone surrogates too: JSON escapes them
    st.none(),
    st.booleans(),
    st.integers(-(10**20), 10**20),
    st.floats(allow_nan=False),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
    st.sampled_from(["Thu, 01 Oct 99999 10:00:00 +0000", "01 Oct 2026 10:00:00 GMT", "Thu, 01 Oct 2026 10:00:00 -0000"]),
)


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rows=st.lists(st.dictionaries(st.sampled_from(list(TWILIO_FIELDS)), json_values, max_size=4), min_size=1, max_size=12))
def test_odd_twilio_values_are_loaded_or_rejected_never_crash(rows):
    lines = []
    for i, overrides in enumerate(rows):
        fields = dict(TWILIO_FIELDS, sid=f"CA{i}")
        fields.update(overrides)
        lines.append(json.dumps(fields).encode())
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "calls.jsonl"
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        result = read_all(path, forced_format="twilio")
    assert result.rows_total == len(rows) == len(result.records) + len(result.rejects)
    records = result.records
    assert (records["billable_seconds"] >= 0).all() and (records["ended_at"] >= records["started_at"]).all()
    assert (records["answered_at"].isna() | (records["answered_at"] >= records["started_at"])).all()
    assert never_billed_beyond_the_call(records)


asterisk_times = st.one_of(
    st.sampled_from(["", "2026-11-01 01:30:00", "2026-03-08 02:30:00", "2026-13-01 00:00:00", "garbage"]),
    st.datetimes(min_value=datetime(2026, 3, 8), max_value=datetime(2026, 11, 2)).map(
        lambda moment: moment.strftime("%Y-%m-%d %H:%M:%S")
    ),
)
asterisk_numbers = st.one_of(st.integers(-100, 200_000).map(str), st.sampled_from(["", "inf", "x", "1.5"]))


@pytest.mark.slow
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=st.lists(
        st.tuples(asterisk_times, asterisk_times, asterisk_times, asterisk_numbers, asterisk_numbers,
                  st.sampled_from(["ANSWERED", "NO ANSWER", "BUSY", "FAILED", "CONGESTION", "", "odd"])),
        min_size=1,
        max_size=12,
    )
)
def test_odd_asterisk_values_are_loaded_or_rejected_never_crash(rows):
    lines = []
    for i, (start, answer, end, duration, billsec, disposition) in enumerate(rows):
        lines.append(
            f'"acme","100","200","from-pstn","","","","Dial","","{start}","{answer}","{end}",{duration},{billsec},'
            f'"{disposition}","DOCUMENTATION","u{i}",""'.encode()
        )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "Master.csv"
        path.write_bytes(b"".join(line + b"\n" for line in lines))
        result = read_all(path, forced_format="asterisk", asterisk_timezone="America/New_York")
    assert result.rows_total == len(rows) == len(result.records) + len(result.rejects)
    records = result.records
    assert (records["ended_at"] >= records["started_at"]).all()
    assert (records["answered_at"].isna() | (records["answered_at"] <= records["ended_at"])).all()
    assert never_billed_beyond_the_call(records)

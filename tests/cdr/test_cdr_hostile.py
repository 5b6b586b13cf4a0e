"""Hostile rows (issue 12): billed beyond the call, dated outside any billing period, holding a NUL,
longer than a record may be. Each gets its own reason, the same in every format, and the rows
around it load."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from aisyst_pipelines.cdr import CdrFileError, reader
from aisyst_pipelines.cdr.records import MAX_RAW_RECORD_CHARS

from .conftest import LOADED_AT, read_all

FORMATS = ("canonical_csv", "canonical_jsonl", "twilio", "asterisk")
CANONICAL_HEADER = "call_id,account_code,direction,disposition,started_at,answered_at,ended_at,billable_seconds,caller,callee"
T = datetime(2026, 10, 1, 10, 0, 0, tzinfo=timezone.utc)
COVERED = {"billable_exceeds_call", "duration_mismatch", "call_in_future", "call_too_old", "nul_byte", "record_too_long"}


@dataclass(frozen=True)
class Call:
    """One call, written in any format by `line` (Twilio has no answer time: `answer` is left out)."""

    call_id: str
    start: datetime = T
    answer: datetime | None = T + timedelta(seconds=1)
    end: datetime = T + timedelta(seconds=10)
    seconds: int | None = 9  # billable_seconds / Twilio duration / Asterisk billsec
    duration: int | None = None  # Asterisk only; None = end − start
    callee: str = "+14155550199"
    note: str = "Alice"  # Twilio caller_name, Asterisk clid, canonical JSONL an unknown key: kept for redaction only


def line(fmt: str, call: Call) -> str:
    iso = lambda moment: "" if moment is None else moment.strftime("%Y-%m-%dT%H:%M:%SZ")  # noqa: E731
    seconds = "" if call.seconds is None else str(call.seconds)
    if fmt == "canonical_csv":
        fields = [call.call_id, "acct_1", "inbound", "completed", iso(call.start), iso(call.answer), iso(call.end), seconds,
                  "+14155550100", call.callee]
        return ",".join(fields)
    if fmt == "canonical_jsonl":
        return json.dumps({"call_id": call.call_id, "account_code": "acct_1", "direction": "inbound", "disposition": "completed",
                           "started_at": iso(call.start), "answered_at": iso(call.answer), "ended_at": iso(call.end),
                           "billable_seconds": seconds, "caller": "+14155550100", "callee": call.callee, "note": call.note})
    if fmt == "twilio":
        rfc = lambda moment: moment.strftime("%a, %d %b %Y %H:%M:%S +0000")  # noqa: E731
        return json.dumps({"sid": call.call_id, "account_sid": "AC1", "from": "+14155550100", "to": call.callee,
                           "status": "completed", "start_time": rfc(call.start), "end_time": rfc(call.end), "duration": seconds,
                           "direction": "inbound", "caller_name": call.note})
    assert fmt == "asterisk"
    local = lambda moment: "" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%S")  # noqa: E731
    duration = call.duration if call.duration is not None else int((call.end - call.start).total_seconds())
    cells = ["acme", "+14155550100", call.callee, "from-pstn", f"{call.note} <+14155550100>", "PJSIP/trunk-1", "PJSIP/2001-2",
             "Dial", "PJSIP/2001,30,tT", local(call.start), local(call.answer), local(call.end)]
    quoted = ['"' + cell.replace('"', '""') + '"' for cell in cells]
    tail = ['"ANSWERED"', '"DOCUMENTATION"', f'"{call.call_id}"', '""']
    return ",".join([*quoted, str(duration), seconds, *tail])


def write_calls(path_of, fmt: str, calls: list[Call | str]) -> Path:
    """A file of `calls` (a str is written as it is); canonical CSV gets its header."""
    lines = [line(fmt, call) if isinstance(call, Call) else call for call in calls]
    if fmt == "canonical_csv":
        lines = [CANONICAL_HEADER, *lines]
    return path_of(f"{fmt}.dat", lines)


def read(path: Path, fmt: str, **options: object):
    return read_all(path, forced_format=fmt, **options)


def only_reject(result, code: str):
    assert result.rejects["reason_code"].tolist() == [code], result.rejects[["reason_code", "reason"]].values.tolist()
    return result.rejects.iloc[0]


# --- item 1: never billed for more than the call lasted ----------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_billable_seconds_far_beyond_the_call_are_rejected_with_both_numbers(write, fmt):
    # the rows: 86000 s billed on a call answered 10:00:01 and ended 10:00:10 (Twilio: 10 s start..end)
    path = write_calls(write, fmt, [Call("ok1"), Call("huge", seconds=86_000), Call("ok2")])
    result = read(path, fmt)
    assert result.records["call_id"].tolist() == ["ok1", "ok2"]
    reject = only_reject(result, "billable_exceeds_call")
    lasted = "10 s" if fmt == "twilio" else "9 s"  # Twilio bills from its start: it has no answer time
    assert "86000 s" in reject["reason"] and lasted in reject["reason"]
    assert reject["call_id"] == "huge"


@pytest.mark.parametrize("fmt", FORMATS)
def test_one_second_of_truncation_is_allowed_and_no_more(write, fmt):
    # answered 10:00:01 .. ended 10:00:10 is 9 s (Twilio: 10 s from its start); 1 s more may be truncation
    lasted = 10 if fmt == "twilio" else 9
    path = write_calls(write, fmt, [Call("exact", seconds=lasted), Call("truncated", seconds=lasted + 1), Call("over", seconds=lasted + 2)])
    result = read(path, fmt)
    assert dict(zip(result.records["call_id"], result.records["billable_seconds"])) == {"exact": lasted, "truncated": lasted + 1}
    assert only_reject(result, "billable_exceeds_call")["call_id"] == "over"


@pytest.mark.parametrize("fmt", ["canonical_csv", "canonical_jsonl", "asterisk"])
def test_without_an_answer_time_the_call_is_measured_from_its_start(write, fmt):
    path = write_calls(write, fmt, [Call("fits", answer=None, seconds=11), Call("over", answer=None, seconds=12)])
    result = read(path, fmt)
    assert result.records["call_id"].tolist() == ["fits"]
    assert "started_at" in only_reject(result, "billable_exceeds_call")["reason"]


def test_asterisk_billsec_never_exceeds_its_duration(write):
    # answered at the start, 10 s by the clock: billsec 11 fits the times, not a duration of 9
    calls = [Call("fits", answer=T, seconds=10, duration=9), Call("over", answer=T, seconds=11, duration=9)]
    result = read(write_calls(write, "asterisk", calls), "asterisk")
    assert result.records["call_id"].tolist() == ["fits"]
    reject = only_reject(result, "billable_exceeds_call")
    assert "11 s" in reject["reason"] and "duration is 9 s" in reject["reason"]


def test_asterisk_duration_must_agree_with_end_minus_start(write):
    # 10 s by the clock: Asterisk truncates its times and its duration, so 9..11 agree
    calls = [Call(f"d{d}", seconds=8, duration=d) for d in (9, 10, 11)] + [Call("short", seconds=8, duration=8), Call("long", seconds=8, duration=80_000)]
    result = read(write_calls(write, "asterisk", calls), "asterisk")
    assert result.records["call_id"].tolist() == ["d9", "d10", "d11"]
    assert dict(zip(result.rejects["call_id"], result.rejects["reason_code"])) == {"short": "duration_mismatch", "long": "duration_mismatch"}
    assert "80000 s" in result.rejects["reason"].iloc[1] and "10 s" in result.rejects["reason"].iloc[1]


# --- item 2: calls outside any billing period ---------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
def test_calls_ending_after_the_load_or_before_the_earliest_date_are_rejected(write, fmt):
    def at(moment: datetime, call_id: str) -> Call:
        return Call(call_id, start=moment - timedelta(seconds=10), answer=moment - timedelta(seconds=9), end=moment)

    calls = [
        at(datetime(2099, 1, 1, tzinfo=timezone.utc), "2099"),
        at(LOADED_AT + timedelta(days=1, seconds=1), "tomorrow_and_a_second"),
        at(LOADED_AT + timedelta(days=1), "tomorrow"),  # within the default tolerance of one day
        at(datetime(2020, 1, 1, tzinfo=timezone.utc), "earliest"),
        at(datetime(2019, 12, 31, 23, 59, 59, tzinfo=timezone.utc), "2019"),
        at(datetime(1970, 1, 1, 0, 0, 10, tzinfo=timezone.utc), "1970"),
    ]
    result = read(write_calls(write, fmt, calls), fmt, loaded_at=LOADED_AT)
    assert result.records["call_id"].tolist() == ["tomorrow", "earliest"]
    assert dict(zip(result.rejects["call_id"], result.rejects["reason_code"])) == {
        "2099": "call_in_future", "tomorrow_and_a_second": "call_in_future", "2019": "call_too_old", "1970": "call_too_old",
    }
    reasons = dict(zip(result.rejects["call_id"], result.rejects["reason"]))
    assert "2099-01-01T00:00:00Z" in reasons["2099"] and "24 h after this load (2026-12-01T00:00:00Z)" in reasons["2099"]
    assert "1970-01-01T00:00:10Z" in reasons["1970"] and "2020-01-01T00:00:00Z" in reasons["1970"]


def test_the_billing_window_is_configurable(write):
    calls = [Call("october"), Call("next_day", start=T + timedelta(days=1), answer=T + timedelta(days=1, seconds=1), end=T + timedelta(days=1, seconds=10))]
    path = write_calls(write, "canonical_csv", calls)
    loaded_at = T + timedelta(minutes=5)
    future = read(path, "canonical_csv", loaded_at=loaded_at, future_tolerance=timedelta(hours=2))
    assert future.records["call_id"].tolist() == ["october"] and future.rejects["reason_code"].tolist() == ["call_in_future"]
    assert "2 h after" in future.rejects["reason"].iloc[0]
    old = read(path, "canonical_csv", loaded_at=loaded_at + timedelta(days=2), earliest_call=T + timedelta(hours=1))
    assert old.records["call_id"].tolist() == ["next_day"] and old.rejects["reason_code"].tolist() == ["call_too_old"]


# --- item 3: NUL ------------------------------------------------------------------------------


NUL_ROWS = {
    # format: (field the NUL is in, how it is written)
    "canonical_csv": [("callee", "byte"), ("call_id", "byte")],
    "canonical_jsonl": [("callee", "escape"), ("note", "escape"), ("note", "byte")],
    "twilio": [("callee", "escape"), ("note", "escape"), ("note", "byte")],
    "asterisk": [("callee", "byte"), ("note", "byte")],
}


@pytest.mark.parametrize(("fmt", "field", "written"), [(fmt, f, w) for fmt, cases in NUL_ROWS.items() for f, w in cases])
def test_a_nul_in_any_field_rejects_the_row(write, fmt, field, written):
    if written == "escape":  # json.dumps writes the character as \u0000
        hostile = line(fmt, replace(Call("nul"), **{field: "+1415\x0055"}))
    else:  # the byte itself in the line
        hostile = line(fmt, replace(Call("nul"), **{field: "+1415MARK55"})).replace("MARK", "\x00")
    assert ("\\u0000" in hostile) == (written == "escape")
    path = write_calls(write, fmt, [Call("ok1"), hostile, Call("ok2")])
    result = read(path, fmt)
    assert result.records["call_id"].tolist() == ["ok1", "ok2"]
    reject = only_reject(result, "nul_byte")
    assert reject["source_line"] == (3 if fmt == "canonical_csv" else 2)
    assert "NUL" in reject["reason"]
    assert "\x00" not in reject["raw_record"]  # PostgreSQL text cannot hold it
    assert ("\\u0000" if written == "escape" else "\\x00") in reject["raw_record"]


@pytest.mark.parametrize("fmt", ["canonical_jsonl", "twilio"])
def test_an_escaped_backslash_before_u0000_is_text_not_a_nul(write, fmt):
    # "\\u0000" in JSON is a backslash followed by "u0000"; "\\\u0000" is a backslash and a NUL
    path = write_calls(write, fmt, [Call("text", note="a\\u0000b"), Call("nul", note="a\\\x00b")])
    result = read(path, fmt)
    assert result.records["call_id"].tolist() == ["text"]
    assert only_reject(result, "nul_byte")["source_line"] == 2


@pytest.mark.parametrize("fmt", ["canonical_jsonl", "twilio"])
def test_a_json_escape_of_half_a_character_is_invalid_text_not_a_crash(write, fmt):
    # "\ud800" alone is no character: no database stores it (it used to stop the whole file)
    calls = [
        Call("high", callee="+1415\ud800555"),
        Call("low", note="\\\udc00"),  # a backslash (escaped in JSON), then a lone low half
        Call("pair", note="\U0001F600"),  # json.dumps writes it as the pair \ud83d\ude00: one character
        Call("text", note="\\ud800"),  # a backslash and "ud800"
    ]
    result = read(write_calls(write, fmt, calls), fmt)
    assert result.records["call_id"].tolist() == ["pair", "text"]
    assert result.rejects["source_line"].tolist() == [1, 2]
    assert set(result.rejects["reason_code"]) == {"invalid_utf8"} and "half a character" in result.rejects["reason"].iloc[0]


# --- item 5: records too long -----------------------------------------------------------------


@pytest.mark.parametrize("read_size", [None, 256], ids=["whole_in_one_read", "across_reads"])
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_record_longer_than_the_limit_is_rejected_and_cut(write, monkeypatch, fmt, read_size):
    if read_size:  # the long line then arrives over several reads and is dropped as it is read
        monkeypatch.setattr(reader, "READ_SIZE", read_size)
    hostile = line(fmt, Call("long", callee="+14155550199" + "9" * 5000))
    path = write_calls(write, fmt, [Call("ok1"), hostile, Call("ok2")])
    result = read(path, fmt, max_record_bytes=1024, chunk_rows=2)
    assert result.records["call_id"].tolist() == ["ok1", "ok2"]
    assert result.rows_total == 3
    reject = only_reject(result, "record_too_long")
    assert reject["source_line"] == (3 if fmt == "canonical_csv" else 2)
    assert f"{len(hostile)} bytes long" in reject["reason"] and "1024" in reject["reason"]
    assert reject["raw_record"].endswith("…[cut]") and len(reject["raw_record"]) <= 1024 + len("…[cut]")
    assert "+14155550100" not in reject["raw_record"]  # still masked


@pytest.mark.parametrize("fmt", ["canonical_jsonl", "twilio", "asterisk"])
def test_a_first_line_too_long_to_sniff_does_not_hide_the_format(write, fmt):
    # 100 KiB: more than detection reads (64 KiB) and than a record may be; the lines after it tell the format
    path = write_calls(write, fmt, [Call("long", callee="9" * 100_000), Call("ok1"), Call("ok2")])
    result = read_all(path)  # not forced
    assert result.records["call_id"].tolist() == ["ok1", "ok2"]
    assert only_reject(result, "record_too_long")["source_line"] == 1


def test_a_long_first_line_of_a_canonical_csv_is_a_header_that_cannot_be_read(write):
    header = CANONICAL_HEADER + "," + "x" * 2000
    path = write("calls.csv", [header, line("canonical_csv", Call("ok"))])
    with pytest.raises(CdrFileError, match=f"header cannot be read: the record is {len(header)} bytes long"):
        read(path, "canonical_csv", max_record_bytes=1024)


@pytest.mark.parametrize("fmt", FORMATS)
def test_any_rejected_row_keeps_at_most_a_bounded_prefix(write, fmt):
    # a long row, within max_record_bytes, rejected for a plain reason (an extra CSV column, a billable
    # duration beyond the call in JSON)
    padding = "x" * 10_000
    hostile = line(fmt, Call("wide", seconds=86_000))
    hostile = hostile + f',"{padding}"' if fmt in ("canonical_csv", "asterisk") else '{"padding": "' + padding + '", ' + hostile[1:]
    result = read(write_calls(write, fmt, [hostile]), fmt)
    assert len(result.rejects) == 1 and result.records.empty
    raw = result.rejects["raw_record"].iloc[0]
    assert len(raw) == MAX_RAW_RECORD_CHARS + len("…[cut]") and raw.endswith("…[cut]")

"""Every reject reason, and bad rows never stopping the good ones around them."""

from __future__ import annotations

import json

import pytest

from aisyst_pipelines.cdr import REASON_CODES

from .conftest import read_all
from .test_cdr_hostile import COVERED as HOSTILE_CASES

HEADER = "call_id,account_code,direction,disposition,started_at,answered_at,ended_at,billable_seconds,caller,callee"
GOOD = "good{n},acct_1,inbound,completed,2026-10-01T10:00:00Z,2026-10-01T10:00:05Z,2026-10-01T10:01:05Z,60,+14155550100,+14155550199"


def row(**overrides: str) -> str:
    fields = {
        "call_id": "bad", "account_code": "acct_1", "direction": "inbound", "disposition": "completed",
        "started_at": "2026-10-01T10:00:00Z", "answered_at": "2026-10-01T10:00:05Z", "ended_at": "2026-10-01T10:01:05Z",
        "billable_seconds": "60", "caller": "+14155550100", "callee": "+14155550199",
    }
    fields.update(overrides)
    return ",".join(fields.values())


CANONICAL_CASES = [
    ("missing_field", row(account_code=""), "account_code"),
    ("missing_field", row(call_id=""), "call_id"),
    ("missing_field", row(started_at=""), "started_at"),
    ("missing_field", row(disposition=""), "disposition"),
    ("missing_field", row(answered_at="", billable_seconds=""), "answered_at"),
    ("unparseable_time", row(started_at="yesterday"), "yesterday"),
    ("unparseable_time", row(ended_at="2026-10-01T25:61:00Z"), "ended_at"),
    ("unparseable_time", row(answered_at="2026-10-01T10:00:05"), "no UTC offset"),
    ("ended_before_started", row(ended_at="2026-10-01T09:59:59Z", answered_at=""), "before started_at"),
    ("ended_before_started", row(answered_at="2026-10-01T10:05:00Z"), "before answered_at"),
    ("negative_duration", row(billable_seconds="-3"), "negative"),
    ("absurd_duration", row(ended_at="2026-10-02T10:00:01Z"), "more than 24 h"),
    ("absurd_duration", row(billable_seconds="90000"), "more than 24 h"),
    ("unknown_disposition", row(disposition="exploded"), "exploded"),
    ("unknown_direction", row(direction="sideways"), "sideways"),
    ("malformed_row", row() + ",one too many", "columns"),
    ("malformed_row", "just,three,fields", "columns"),
    ("malformed_row", row(billable_seconds="sixty"), "whole number"),
    ("malformed_row", row(billable_seconds="60.5"), "whole number"),
    ("malformed_row", row(call_id="x" * 129), "longer than 128"),
]


@pytest.mark.parametrize(("code", "bad_row", "reason_says"), CANONICAL_CASES)
def test_each_bad_canonical_row_is_rejected_with_its_reason_and_the_rest_loads(write, code, bad_row, reason_says):
    path = write("calls.csv", [HEADER, GOOD.format(n=1), bad_row, GOOD.format(n=2)])
    result = read_all(path)
    assert result.records["call_id"].tolist() == ["good1", "good2"]
    assert result.rows_total == 3
    assert len(result.rejects) == 1
    reject = result.rejects.iloc[0]
    assert reject["source_line"] == 3
    assert reject["reason_code"] == code
    assert reason_says in reject["reason"]
    assert reject["raw_record"] == bad_row.replace("+14155550100", "[redacted]").replace("+14155550199", "[redacted]")


def test_reject_rows_name_the_call_when_it_is_known(write):
    path = write("calls.csv", [HEADER, row(call_id="c9", disposition="exploded"), "a,b"])
    rejects = read_all(path).rejects
    assert rejects["call_id"].tolist() == ["c9", None]
    assert rejects["source_line"].dtype == "int64"


def test_json_lines_that_are_not_objects_or_not_json_are_malformed(write):
    good = json.dumps({"call_id": "j1", "account_code": "a", "direction": "inbound", "disposition": "busy",
                       "started_at": "2026-10-01T10:00:00Z", "ended_at": "2026-10-01T10:00:03Z"})
    path = write("calls.jsonl", [good, "[1, 2]", '{"call_id": "j2", "account_code": ', "42", good.replace("j1", "j3")])
    result = read_all(path)
    assert result.records["call_id"].tolist() == ["j1", "j3"]
    assert result.rejects[["source_line", "reason_code"]].values.tolist() == [[2, "malformed_row"], [3, "malformed_row"], [4, "malformed_row"]]
    assert "not a JSON object" in result.rejects["reason"].iloc[0] and "invalid JSON" in result.rejects["reason"].iloc[1]


def test_invalid_utf8_mid_file_rejects_only_that_line(write):
    lines = [HEADER.encode()] + [GOOD.format(n=i).encode() for i in range(1, 6)]
    lines.insert(3, b"bad\xff\xfe,acct_1,inbound,completed,2026-10-01T10:00:00Z,,2026-10-01T10:00:30Z,30,,")
    path = write("calls.csv", b"\n".join(lines) + b"\n")
    result = read_all(path, chunk_rows=4)  # the bad line sits inside a chunk, not at its edge
    assert result.records["call_id"].tolist() == [f"good{i}" for i in range(1, 6)]
    assert result.records["source_line"].tolist() == [2, 3, 5, 6, 7]
    reject = result.rejects.iloc[0]
    assert (reject["source_line"], reject["reason_code"], reject["call_id"]) == (4, "invalid_utf8", None)
    assert reject["raw_record"].startswith("bad\\xff\\xfe,acct_1")


def test_twilio_rejects(write):
    def call(**fields: object) -> str:
        base = {"sid": "CA1", "account_sid": "AC1", "from": "+14155550100", "to": "+14155550199", "status": "completed",
                "start_time": "Thu, 01 Oct 2026 10:00:00 +0000", "end_time": "Thu, 01 Oct 2026 10:01:05 +0000",
                "duration": "65", "direction": "inbound"}
        base.update(fields)
        return json.dumps(base)

    path = write(
        "calls.jsonl",
        [
            call(sid="ok"),
            call(sid="t1", direction="trunking-originating"),
            call(sid="t2", status="exploded"),
            call(sid="t3", duration="-1"),
            call(sid="t4", start_time="the day before yesterday"),
            call(sid="t5", account_sid=None),
            call(sid="t6", status="in-progress", end_time=None, duration=None),
        ],
    )
    result = read_all(path)
    assert result.records["call_id"].tolist() == ["ok"]
    assert dict(zip(result.rejects["call_id"], result.rejects["reason_code"])) == {
        "t1": "unknown_direction", "t2": "unknown_disposition", "t3": "negative_duration",
        "t4": "unparseable_time", "t5": "missing_field", "t6": "call_not_finished",
    }


def test_every_reason_code_the_reader_can_give_is_covered():
    covered = {code for code, _, _ in CANONICAL_CASES} | {"invalid_utf8", "call_not_finished"} | HOSTILE_CASES
    # conflicting_duplicate is the loader's: only it knows what was loaded before
    assert covered == set(REASON_CODES) - {"conflicting_duplicate"}

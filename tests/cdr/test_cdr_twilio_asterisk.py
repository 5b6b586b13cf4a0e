"""Twilio Call resources and Asterisk Master.csv: mapping, times with offsets, local time and DST."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from .conftest import read_all


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def twilio(**fields: object) -> str:
    call = {
        "sid": "CA1",
        "account_sid": "AC1",
        "from": "+14155550100",
        "to": "+14155550199",
        "status": "completed",
        "start_time": "Mon, 10 Aug 2026 14:03:05 +0000",
        "end_time": "Mon, 10 Aug 2026 14:04:10 +0000",
        "duration": "61",
        "direction": "inbound",
        "price": "-0.0085",
        "api_version": "2010-04-01",
    }
    call.update(fields)
    return json.dumps(call)


def test_twilio_calls_map_onto_canonical_calls(write):
    path = write(
        "calls.jsonl",
        [
            twilio(sid="CA1", start_time="Mon, 10 Aug 2026 14:03:05 +0200", end_time="Mon, 10 Aug 2026 14:04:10 +0200", direction="outbound-api"),
            twilio(sid="CA2", status="busy", duration="0", direction="outbound-dial"),
            twilio(sid="CA3", status="no-answer", duration=None, start_time="Mon, 10 Aug 2026 09:03:05 -0500"),
            twilio(sid="CA4", status="canceled", duration=0),
            twilio(sid="CA5", status="failed", duration=""),
            twilio(sid="CA6", duration=66),
            twilio(sid="CA7", duration=None),
        ],
    )
    result = read_all(path)
    records = result.records.set_index("call_id")
    assert result.rejects.empty
    assert records["account_code"].unique().tolist() == ["AC1"]
    assert records["disposition"].to_dict() == {
        "CA1": "completed", "CA2": "busy", "CA3": "no_answer", "CA4": "canceled", "CA5": "failed", "CA6": "completed",
        "CA7": "completed",
    }
    assert records["direction"].to_dict() == {
        "CA1": "outbound", "CA2": "outbound", "CA3": "inbound", "CA4": "inbound", "CA5": "inbound", "CA6": "inbound",
        "CA7": "inbound",
    }
    # RFC 2822 offsets are honoured
    assert records.loc["CA1", "started_at"] == utc("2026-08-10 12:03:05")
    assert records.loc["CA1", "ended_at"] == utc("2026-08-10 12:04:10")
    assert records.loc["CA3", "started_at"] == utc("2026-08-10 14:03:05")
    # duration is the billable seconds; answered_at = end_time - duration
    assert records.loc["CA1", "billable_seconds"] == 61 and records.loc["CA1", "billable_minutes"] == 2
    assert records.loc["CA1", "answered_at"] == utc("2026-08-10 12:03:09")
    assert records.loc["CA6", "billable_seconds"] == 66 and records.loc["CA6", "billable_minutes"] == 2
    # Twilio's duration can exceed end - start (65 s) by a second of rounding: answered_at never goes
    # before the start (a longer duration is billable_exceeds_call)
    assert records.loc["CA6", "answered_at"] == records.loc["CA6", "started_at"]
    # a completed call without a duration bills from start to end
    assert records.loc["CA7", "billable_seconds"] == 65 and records.loc["CA7", "answered_at"] == records.loc["CA7", "started_at"]
    assert records.loc[["CA2", "CA3", "CA4", "CA5"], "billable_minutes"].tolist() == [0, 0, 0, 0]
    assert records.loc[["CA2", "CA3", "CA4", "CA5"], "answered_at"].isna().all()


def test_twilio_accepts_other_rfc_2822_spellings_and_iso_8601(write):
    path = write(
        "calls.jsonl",
        [
            twilio(sid="CA1", start_time="10 Aug 2026 14:03:05 GMT", end_time="Mon, 10 Aug 2026 14:04:10 GMT"),
            twilio(sid="CA2", start_time="2026-08-10T14:03:05Z", end_time="2026-08-10T16:04:10+02:00"),
        ],
    )
    records = read_all(path).records.set_index("call_id")
    assert records.loc["CA1", "started_at"] == utc("2026-08-10 14:03:05")
    assert records.loc["CA2", "ended_at"] == utc("2026-08-10 14:04:10")


@pytest.mark.parametrize("status", ["queued", "initiated", "ringing", "in-progress"])
def test_twilio_calls_that_have_not_ended_are_rejected(write, status):
    path = write("calls.jsonl", [twilio(status=status, end_time=None, duration=None), twilio(sid="CA2")])
    result = read_all(path)
    assert result.records["call_id"].tolist() == ["CA2"]
    assert result.rejects[["source_line", "call_id", "reason_code"]].values.tolist() == [[1, "CA1", "call_not_finished"]]
    assert status in result.rejects["reason"].iloc[0]


ASTERISK_FIELDS = [
    "accountcode", "src", "dst", "dcontext", "clid", "channel", "dstchannel", "lastapp", "lastdata",
    "start", "answer", "end", "duration", "billsec", "disposition", "amaflags", "uniqueid", "userfield",
]


def asterisk(**fields: object) -> str:
    row = {
        "accountcode": "acme", "src": "+14155550100", "dst": "+14155550199", "dcontext": "from-pstn",
        "clid": '"Alice" <+14155550100>', "channel": "PJSIP/trunk-00000001", "dstchannel": "PJSIP/2001-00000002",
        "lastapp": "Dial", "lastdata": "PJSIP/2001,30,tT", "start": "2026-10-01 10:00:00",
        "answer": "2026-10-01 10:00:05", "end": "2026-10-01 10:01:05", "duration": 65, "billsec": 60,
        "disposition": "ANSWERED", "amaflags": "DOCUMENTATION", "uniqueid": "1790000000.1", "userfield": "",
    }
    row.update(fields)
    cells = []
    for name in ASTERISK_FIELDS:
        value = row[name]
        cells.append(str(value) if name in ("duration", "billsec") else '"' + str(value).replace('"', '""') + '"')
    return ",".join(cells)


def test_asterisk_rows_map_onto_canonical_calls(write):
    path = write(
        "Master.csv",
        [
            asterisk(uniqueid="a1"),
            asterisk(uniqueid="a2", disposition="NO ANSWER", answer="", billsec=0, dcontext="from-internal"),
            asterisk(uniqueid="a3", disposition="BUSY", answer="", billsec=0, dcontext="outbound-allroutes"),
            asterisk(uniqueid="a4", disposition="FAILED", answer="", billsec=0, dcontext="macro-dialout-trunk"),
            asterisk(uniqueid="a5", disposition="CONGESTION", answer="", billsec=0, dcontext="ext-did-0002"),
            asterisk(uniqueid="a6", billsec=121, duration=126, end="2026-10-01 10:02:06", dcontext="inbound-route"),
        ],
    )
    result = read_all(path)
    records = result.records.set_index("call_id")
    assert result.rejects.empty
    assert records["account_code"].unique().tolist() == ["acme"]
    assert records["disposition"].tolist() == ["completed", "no_answer", "busy", "failed", "failed", "completed"]
    assert records["direction"].tolist() == ["inbound", "outbound", "outbound", "outbound", "inbound", "inbound"]
    assert records["billable_seconds"].tolist() == [60, 0, 0, 0, 0, 121]
    assert records["billable_minutes"].tolist() == [1, 0, 0, 0, 0, 3]
    assert records.loc["a1", "answered_at"] == utc("2026-10-01 10:00:05")
    assert records.loc[["a2", "a3"], "answered_at"].isna().all()


def test_asterisk_local_times_are_converted_to_utc(write):
    path = write("Master.csv", [asterisk()])
    records = read_all(path, asterisk_timezone="Europe/Berlin").records
    assert records["started_at"].iloc[0] == utc("2026-10-01 08:00:00")  # CEST = UTC+2
    assert records["ended_at"].iloc[0] == utc("2026-10-01 08:01:05")
    assert read_all(path).records["started_at"].iloc[0] == utc("2026-10-01 10:00:00")  # default UTC


def test_asterisk_times_in_the_repeated_dst_hour_are_resolved_by_duration(write):
    # America/New_York falls back on 2026-11-01: 01:00-02:00 local happens twice (EDT, then EST).
    path = write(
        "Master.csv",
        [
            # 01:50 EDT -> 01:10 EST: 20 minutes, although the wall clock went backwards
            asterisk(uniqueid="across", start="2026-11-01 01:50:00", answer="2026-11-01 01:50:05", end="2026-11-01 01:10:00", duration=1200, billsec=1195),
            # 00:55 EDT -> 01:20 in the second pass (EST): 85 minutes, not 25
            asterisk(uniqueid="second", start="2026-11-01 00:55:00", answer="2026-11-01 00:55:10", end="2026-11-01 01:20:00", duration=5100, billsec=5090),
            # start in the repeated hour, end after it: the later reading fits the 10-minute duration
            asterisk(uniqueid="late_start", start="2026-11-01 01:55:00", answer="2026-11-01 01:55:05", end="2026-11-01 02:05:00", duration=600, billsec=595),
            # entirely inside the repeated hour: nothing tells the readings apart, the earlier one is taken
            asterisk(uniqueid="ambiguous", start="2026-11-01 01:30:00", answer="2026-11-01 01:30:05", end="2026-11-01 01:31:05", duration=65, billsec=60),
        ],
    )
    records = read_all(path, asterisk_timezone="America/New_York").records.set_index("call_id")
    assert records.loc["across", "started_at"] == utc("2026-11-01 05:50:00")
    assert records.loc["across", "ended_at"] == utc("2026-11-01 06:10:00")
    assert records.loc["across", "answered_at"] == utc("2026-11-01 05:50:05")
    assert records.loc["second", "ended_at"] == utc("2026-11-01 06:20:00")
    assert records.loc["late_start", "started_at"] == utc("2026-11-01 06:55:00")
    assert records.loc["late_start", "answered_at"] == utc("2026-11-01 06:55:05")
    assert records.loc["ambiguous", "started_at"] == utc("2026-11-01 05:30:00")
    for call in records.itertuples():
        assert call.ended_at >= call.answered_at >= call.started_at


def test_asterisk_times_in_the_skipped_dst_hour_are_rejected(write):
    # America/New_York springs forward on 2026-03-08: 02:00-03:00 local does not exist
    path = write(
        "Master.csv",
        [
            asterisk(uniqueid="gap", start="2026-03-08 02:30:00", answer="", end="2026-03-08 03:00:10", duration=10, billsec=0, disposition="NO ANSWER"),
            asterisk(uniqueid="fine", start="2026-03-08 01:59:50", answer="2026-03-08 01:59:55", end="2026-03-08 03:00:55", duration=65, billsec=60),
        ],
    )
    result = read_all(path, asterisk_timezone="America/New_York")
    assert result.records["call_id"].tolist() == ["fine"]
    assert result.records["ended_at"].iloc[0] - result.records["started_at"].iloc[0] == pd.Timedelta(seconds=65)
    reject = result.rejects.iloc[0]
    assert (reject["call_id"], reject["reason_code"]) == ("gap", "unparseable_time")
    assert "does not exist in America/New_York" in reject["reason"]


def test_asterisk_optional_columns_are_tolerated_and_other_widths_are_malformed(write):
    base = asterisk(uniqueid="u18")
    path = write(
        "Master.csv",
        [
            base,
            asterisk(uniqueid="u21") + ',"peer","1790000000.1","7"',  # newcdrcolumns
            base.rsplit(",", 1)[0].replace("u18", "u17"),  # no userfield
            ",".join(base.split(",")[:16]),  # no uniqueid
        ],
    )
    result = read_all(path)
    assert result.records["call_id"].tolist() == ["u18", "u21", "u17"]
    assert result.records["source_line"].tolist() == [1, 2, 3]
    assert result.rejects[["source_line", "reason_code"]].values.tolist() == [[4, "malformed_row"]]
    assert "columns, expected" in result.rejects["reason"].iloc[0]

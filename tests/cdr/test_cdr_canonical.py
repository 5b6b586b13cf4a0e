"""Canonical CSV and JSONL: parsing, time offsets, derived billable seconds, line numbers, chunks."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from aisyst_pipelines.cdr import RECORD_COLUMNS, REJECT_COLUMNS

from .conftest import read_all

HEADER = "call_id,account_code,direction,disposition,started_at,answered_at,ended_at,billable_seconds,caller,callee"


def utc(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_canonical_csv_rows_become_rated_records(write):
    path = write(
        "calls.csv",
        [
            HEADER,
            "c1,acct_1,inbound,completed,2026-10-01T10:00:00Z,2026-10-01T10:00:05Z,2026-10-01T10:01:06Z,61,+14155550100,+14155550199",
            "c2,acct_1,outbound,no_answer,2026-10-01T11:00:00+02:00,,2026-10-01T11:00:30+02:00,0,+14155550100,+14155550199",
            "c3,acct_2,Outbound,Busy,2026-10-01T12:00:00.250-05:00,,2026-10-01T12:00:03.250-05:00,,,",
        ],
    )
    result = read_all(path)
    records = result.records
    assert list(records.columns) == list(RECORD_COLUMNS)
    assert list(result.rejects.columns) == list(REJECT_COLUMNS)
    assert result.rows_total == 3 and result.rejects.empty
    assert records["call_id"].tolist() == ["c1", "c2", "c3"]
    assert records["direction"].tolist() == ["inbound", "outbound", "outbound"]
    assert records["disposition"].tolist() == ["completed", "no_answer", "busy"]
    assert str(records["started_at"].dtype) == "datetime64[us, UTC]"
    assert records["started_at"].tolist() == [utc("2026-10-01 10:00:00"), utc("2026-10-01 09:00:00"), utc("2026-10-01 17:00:00.250")]
    assert records["answered_at"].iloc[0] == utc("2026-10-01 10:00:05") and records["answered_at"].iloc[1:].isna().all()
    assert records["billable_seconds"].tolist() == [61, 0, 0]
    assert records["billable_minutes"].tolist() == [2, 0, 0]
    assert records["billable_seconds"].dtype == np.int64 and records["billable_minutes"].dtype == np.int64
    assert records["source_line"].tolist() == [2, 3, 4]
    assert records["caller_hash"].iloc[2] is None and records["callee_hash"].iloc[2] is None
    assert all(len(h) == 64 for h in records["content_hash"])


def test_empty_billable_seconds_are_derived_from_answer_to_end(write):
    path = write(
        "calls.csv",
        [
            HEADER,
            "c1,acct_1,inbound,completed,2026-10-01T10:00:00Z,2026-10-01T10:00:05Z,2026-10-01T10:02:05Z,,,",
            # fractions of a second are billed as a started second
            "c2,acct_1,inbound,completed,2026-10-01T10:00:00Z,2026-10-01T10:00:05Z,2026-10-01T10:01:05.2Z,,,",
            # a given value wins over the derived one
            "c3,acct_1,inbound,completed,2026-10-01T10:00:00Z,2026-10-01T10:00:05Z,2026-10-01T10:02:05Z,100,,",
        ],
    )
    records = read_all(path).records
    assert records["billable_seconds"].tolist() == [120, 61, 100]
    assert records["billable_minutes"].tolist() == [2, 2, 2]


def test_unanswered_calls_bill_nothing_even_when_seconds_are_given(write):
    path = write("calls.csv", [HEADER, "c1,acct_1,inbound,failed,2026-10-01T10:00:00Z,,2026-10-01T10:05:00Z,300,,"])
    records = read_all(path).records
    assert records["billable_seconds"].tolist() == [0]
    assert records["billable_minutes"].tolist() == [0]


def test_header_order_case_and_extra_columns_do_not_matter(write):
    path = write(
        "calls.csv",
        [
            "Ended_At,CALL_ID,note,account_code,direction,disposition,started_at,billable_seconds",
            '2026-10-01T10:01:00Z,c1,"a note, with a comma",acct_1,inbound,completed,2026-10-01T10:00:00Z,60',
        ],
    )
    records = read_all(path).records
    assert records[["call_id", "account_code", "billable_seconds"]].values.tolist() == [["c1", "acct_1", 60]]
    assert records["answered_at"].isna().all() and records["caller_hash"].iloc[0] is None


def test_quoted_fields_crlf_line_ends_and_surrounding_spaces(write):
    path = write(
        "calls.csv",
        (HEADER + "\r\n" + '"c1", acct_1 ,inbound,"completed",2026-10-01T10:00:00Z,2026-10-01T10:00:05Z,2026-10-01T10:01:05Z, 60 ,"+1 (415) 555-0100",\r\n').encode(),
    )
    records = read_all(path).records
    assert records["call_id"].tolist() == ["c1"] and records["account_code"].tolist() == ["acct_1"]
    assert records["billable_seconds"].tolist() == [60]


def test_blank_lines_are_skipped_and_line_numbers_stay_physical(write):
    row = "{n},acct_1,inbound,completed,2026-10-01T10:00:00Z,2026-10-01T10:00:05Z,2026-10-01T10:01:05Z,60,,"
    path = write("calls.csv", ["", HEADER, row.format(n="c1"), "", "", row.format(n="c2"), "\r"])
    result = read_all(path)
    assert result.records["source_line"].tolist() == [3, 6]
    assert result.rows_total == 2 and result.rejects.empty


def test_canonical_jsonl_with_numbers_nulls_and_missing_keys(write):
    rows = [
        {"call_id": "j1", "account_code": "acct_1", "direction": "inbound", "disposition": "completed",
         "started_at": "2026-10-01T10:00:00Z", "answered_at": "2026-10-01T10:00:05Z", "ended_at": "2026-10-01T10:01:05Z",
         "billable_seconds": 60, "caller": "+14155550100", "callee": None},
        {"call_id": "j2", "account_code": "acct_1", "direction": "outbound", "disposition": "canceled",
         "started_at": "2026-10-01T10:00:00Z", "ended_at": "2026-10-01T10:00:09Z"},
        {"call_id": "j3", "account_code": "acct_1", "direction": "inbound", "disposition": "completed",
         "started_at": "2026-10-01T10:00:00Z", "answered_at": "2026-10-01T10:00:05Z", "ended_at": "2026-10-01T10:01:05Z",
         "billable_seconds": "61.0"},
    ]
    result = read_all(write("calls.jsonl", [json.dumps(row) for row in rows]))
    records = result.records
    assert records["call_id"].tolist() == ["j1", "j2", "j3"]
    assert records["billable_seconds"].tolist() == [60, 0, 61]
    assert records["billable_minutes"].tolist() == [1, 0, 2]
    assert records["disposition"].tolist() == ["completed", "canceled", "completed"]
    assert records["callee_hash"].iloc[0] is None and records["caller_hash"].iloc[0] is not None


@pytest.mark.parametrize("chunk_rows", [1, 3, 7, 1000])
def test_a_file_bigger_than_a_chunk_streams_in_chunks_with_the_same_result(write, chunk_rows):
    lines = [HEADER]
    for i in range(20):
        seconds = 30 * i
        lines.append(f"c{i},acct_{i % 3},inbound,completed,2026-10-01T10:00:00Z,2026-10-01T10:00:00Z,2026-10-01T10:{seconds // 60:02d}:{seconds % 60:02d}Z,,,")
        if i % 6 == 5:
            lines.append(f"bad{i},acct_1,inbound,exploded,2026-10-01T10:00:00Z,,2026-10-01T10:00:30Z,0,,")
    path = write("calls.csv", lines)
    whole = read_all(path, chunk_rows=100_000)
    chunked = read_all(path, chunk_rows=chunk_rows)
    assert len(chunked.chunks) >= (len(lines) - 1) // chunk_rows  # 23 rows after the header
    assert all(chunk.rows_total <= chunk_rows for chunk in chunked.chunks)
    assert chunked.rows_total == whole.rows_total == 23
    pd.testing.assert_frame_equal(chunked.records, whole.records)
    pd.testing.assert_frame_equal(chunked.rejects, whole.rejects)
    assert chunked.records["source_line"].tolist() == sorted(chunked.records["source_line"])
    assert chunked.rejects["source_line"].tolist() == [8, 15, 22]


def test_a_header_only_file_has_no_rows(write):
    result = read_all(write("calls.csv", [HEADER]))
    assert result.rows_total == 0 and result.records.empty and result.rejects.empty
    assert list(result.records.columns) == list(RECORD_COLUMNS)


def test_wide_rows_are_cut_into_chunks_by_size_too(write, monkeypatch):
    from aisyst_pipelines.cdr import reader

    lines = [HEADER] + [
        f"c{i},acct_1,inbound,completed,2026-10-01T10:00:00Z,2026-10-01T10:00:05Z,2026-10-01T10:01:05Z,60,+14155550100,+14155550199"
        for i in range(40)
    ]
    path = write("calls.csv", lines)
    whole = read_all(path)
    monkeypatch.setattr(reader, "MAX_BLOCK_BYTES", 1000)  # about 8 rows
    cut = read_all(path)
    assert len(whole.chunks) == 1 and len(cut.chunks) >= 4
    assert all(chunk.rows_total <= 10 for chunk in cut.chunks)
    pd.testing.assert_frame_equal(cut.records, whole.records)

"""Format detection from content, forced sub-folders, and whole-file failures."""

from __future__ import annotations

import gzip

import pytest

from aisyst_pipelines.cdr import CdrFileError, detect_format, forced_format_for, read_cdr_file, ReadOptions

from .conftest import PII_KEY, read_all

CANONICAL_HEADER = "call_id,account_code,direction,disposition,started_at,answered_at,ended_at,billable_seconds,caller,callee"
CANONICAL_ROW = "c1,acct_1,inbound,completed,2026-10-01T10:00:00Z,2026-10-01T10:00:05Z,2026-10-01T10:01:05Z,60,+14155550100,+14155550199"
CANONICAL_JSON = (
    '{"call_id": "c1", "account_code": "acct_1", "direction": "inbound", "disposition": "completed", '
    '"started_at": "2026-10-01T10:00:00Z", "answered_at": "2026-10-01T10:00:05Z", "ended_at": "2026-10-01T10:01:05Z", '
    '"billable_seconds": 60, "caller": "+14155550100", "callee": "+14155550199"}'
)
TWILIO_JSON = (
    '{"sid": "CA1", "account_sid": "AC1", "from": "+14155550100", "to": "+14155550199", "status": "completed", '
    '"start_time": "Thu, 01 Oct 2026 10:00:00 +0000", "end_time": "Thu, 01 Oct 2026 10:01:05 +0000", '
    '"duration": "65", "direction": "inbound"}'
)
ASTERISK_ROW = (
    '"acct_1","+14155550100","+14155550199","from-pstn","""Alice"" <+14155550100>","PJSIP/trunk-1","PJSIP/2001-1",'
    '"Dial","PJSIP/2001,30","2026-10-01 10:00:00","2026-10-01 10:00:05","2026-10-01 10:01:05",65,60,"ANSWERED",'
    '"DOCUMENTATION","1700000000.1",""'
)


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ([CANONICAL_HEADER, CANONICAL_ROW], "canonical_csv"),
        ([CANONICAL_JSON], "canonical_jsonl"),
        ([TWILIO_JSON], "twilio"),
        ([ASTERISK_ROW], "asterisk"),
        # the header may come in any order and case, with extra columns
        (["CALLEE,Caller,extra,call_id,account_code,direction,disposition,started_at,answered_at,ended_at,billable_seconds"], "canonical_csv"),
        # a broken first line does not hide the format of the next ones
        (["{not json", TWILIO_JSON], "twilio"),
        (["", "", ASTERISK_ROW], "asterisk"),
    ],
)
def test_format_is_detected_from_content(write, lines, expected):
    assert detect_format(write("landing/file.dat", lines)) == expected


def test_detection_sees_through_gzip_and_a_byte_order_mark(tmp_path):
    path = tmp_path / "calls.jsonl.gz"
    path.write_bytes(gzip.compress(("\ufeff" + TWILIO_JSON + "\n").encode()))
    assert detect_format(path) == "twilio"
    assert len(read_all(path).records) == 1


@pytest.mark.parametrize(
    "content",
    [
        "hello world\nthis is not a CDR\n",
        '{"name": "a JSON object of another kind"}\n',
        "a,b,c\n1,2,3\n",
        "\n\n  \n",
    ],
)
def test_undetectable_content_fails_the_whole_file(write, content):
    path = write("garbage.txt", content)
    with pytest.raises(CdrFileError, match="garbage.txt"):
        detect_format(path)
    with pytest.raises(CdrFileError):
        list(read_cdr_file(path, ReadOptions(pii_key=PII_KEY)))


def test_an_empty_file_fails_unless_its_format_is_forced(write):
    path = write("empty.csv", b"")
    with pytest.raises(CdrFileError, match="empty"):
        detect_format(path)
    result = read_all(path, forced_format="twilio")
    assert result.rows_total == 0 and result.records.empty and result.rejects.empty


def test_forced_format_wins_over_content(write):
    path = write("twilio/looks_canonical.csv", [CANONICAL_HEADER, CANONICAL_ROW])
    assert detect_format(path, "twilio") == "twilio"
    result = read_all(path, forced_format="twilio")
    # not JSON at all: every line is a malformed Twilio record, nothing is guessed
    assert result.records.empty
    assert set(result.rejects["reason_code"]) == {"malformed_row"}


def test_forced_canonical_still_tells_csv_from_jsonl(write):
    assert detect_format(write("canonical/a.txt", [CANONICAL_JSON]), "canonical") == "canonical_jsonl"
    assert detect_format(write("canonical/b.txt", [CANONICAL_HEADER, CANONICAL_ROW]), "canonical") == "canonical_csv"


def test_forced_canonical_csv_without_a_header_fails(write):
    path = write("canonical/no_header.csv", [CANONICAL_ROW])
    with pytest.raises(CdrFileError, match="header"):
        list(read_cdr_file(path, ReadOptions(pii_key=PII_KEY, forced_format="canonical")))


def test_unknown_forced_format_is_refused(write):
    with pytest.raises(ValueError, match="unknown forced format"):
        detect_format(write("x.csv", [CANONICAL_HEADER]), "excel")


def test_forced_format_comes_from_the_nearest_landing_sub_folder(tmp_path):
    landing = tmp_path / "landing"
    assert forced_format_for(landing / "twilio" / "2026-10" / "calls.jsonl", landing) == "twilio"
    assert forced_format_for(landing / "Asterisk" / "Master.csv", landing) == "asterisk"
    assert forced_format_for(landing / "canonical" / "twilio" / "calls.jsonl", landing) == "twilio"
    assert forced_format_for(landing / "canonical" / "calls.csv", landing) == "canonical"
    assert forced_format_for(landing / "incoming" / "calls.csv", landing) is None
    assert forced_format_for(landing / "calls.csv", landing) is None
    # only folders below the landing directory count
    assert forced_format_for(tmp_path / "twilio" / "calls.jsonl", landing) is None
    assert forced_format_for(tmp_path / "twilio" / "landing" / "calls.jsonl", tmp_path / "twilio" / "landing") is None


def test_a_file_whose_last_line_has_no_newline_is_truncated(write):
    path = write("calls.csv", CANONICAL_HEADER + "\n" + CANONICAL_ROW + "\n" + CANONICAL_ROW[:40])
    with pytest.raises(CdrFileError, match="truncated"):
        next(read_cdr_file(path, ReadOptions(pii_key=PII_KEY)))  # refused before the first chunk


def test_a_truncated_gzip_file_fails(tmp_path):
    data = gzip.compress(((CANONICAL_JSON + "\n") * 5000).encode())
    path = tmp_path / "calls.jsonl.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CdrFileError, match="truncated"):
        read_all(path)


def test_a_corrupt_gzip_file_fails(tmp_path):
    data = bytearray(gzip.compress(((CANONICAL_JSON + "\n") * 200).encode()))
    data[len(data) // 2 : len(data) // 2 + 16] = b"\x00" * 16
    path = tmp_path / "calls.jsonl.gz"
    path.write_bytes(bytes(data))
    with pytest.raises(CdrFileError, match="calls.jsonl.gz"):
        read_all(path, forced_format="canonical_jsonl")


def test_an_unreadable_file_fails_with_its_name_and_cause(tmp_path):
    missing = tmp_path / "gone.csv"
    with pytest.raises(CdrFileError, match="gone.csv.*No such file"):
        detect_format(missing)
    with pytest.raises(CdrFileError, match="gone.csv"):
        list(read_cdr_file(missing, ReadOptions(pii_key=PII_KEY, forced_format="asterisk")))
    folder = tmp_path / "a_directory.csv"
    folder.mkdir()
    with pytest.raises(CdrFileError, match="a_directory.csv"):
        list(read_cdr_file(folder, ReadOptions(pii_key=PII_KEY, forced_format="asterisk")))


def test_error_messages_never_quote_file_content(write):
    path = write("secret.txt", "+14155550100 called +14155550199\n")
    with pytest.raises(CdrFileError) as error:
        detect_format(path)
    assert "4155550" not in str(error.value)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"asterisk_timezone": "Mars/Olympus_Mons"}, "time zone"),
        ({"forced_format": "excel"}, "forced format"),
        ({"chunk_rows": 0}, "chunk_rows"),
    ],
)
def test_bad_read_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        ReadOptions(pii_key=PII_KEY, **options)

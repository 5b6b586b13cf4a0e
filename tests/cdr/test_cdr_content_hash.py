"""content_hash: identical calls hash alike whatever file, line or format they come from."""

from __future__ import annotations

from aisyst_pipelines.simulation import simulate_calls, write_calls

from .conftest import read_all

HEADER = "call_id,account_code,direction,disposition,started_at,answered_at,ended_at,billable_seconds,caller,callee"
ROW = "c1,acct_1,inbound,completed,2026-10-01T10:00:00Z,2026-10-01T10:00:05Z,2026-10-01T10:01:05Z,60,+14155550100,+14155550199"


def hashes(path, **options) -> dict[str, str]:
    records = read_all(path, **options).records
    return dict(zip(records["call_id"], records["content_hash"]))


def test_the_same_calls_hash_alike_in_every_format(tmp_path):
    calls = simulate_calls(5, 2, seed=3)
    calls = calls[calls["disposition"] != "canceled"]  # Asterisk cannot say "canceled"
    by_format = {}
    for file_format in ("canonical_csv", "canonical_jsonl", "twilio", "asterisk"):
        written = write_calls(calls, tmp_path / file_format, file_format, asterisk_timezone="Europe/Paris")
        by_format[file_format] = hashes(written.path, asterisk_timezone="Europe/Paris")
    reference = by_format["canonical_csv"]
    assert len(reference) == len(calls)
    for file_format, found in by_format.items():
        assert found == reference, file_format


def test_position_in_the_file_and_spelling_do_not_change_the_hash(write):
    first = write("a.csv", [HEADER, ROW])
    second = write(
        "b.csv",
        [
            "ended_at,call_id,account_code,direction,disposition,started_at,answered_at,billable_seconds,caller,callee",
            "",
            "2026-10-01T12:01:05+02:00,c0,acct_1,inbound,completed,2026-10-01T10:00:00Z,,1,,",
            "2026-10-01T12:01:05+02:00,c1, acct_1 ,INBOUND,completed,2026-10-01T12:00:00+02:00,2026-10-01T10:00:05.000Z,60,+1 (415) 555-0100,+14155550199",
        ],
    )
    assert hashes(first)["c1"] == hashes(second)["c1"]


def test_any_change_to_the_call_changes_the_hash(write):
    original = hashes(write("a.csv", [HEADER, ROW]))["c1"]
    changes = [
        ROW.replace(",60,", ",59,"),
        ROW.replace("10:01:05Z", "10:01:06Z"),
        ROW.replace("acct_1", "acct_2"),
        ROW.replace("inbound", "outbound"),
        ROW.replace("+14155550100", "+14155550101"),
        ROW.replace("+14155550199", ""),
    ]
    changed = {hashes(write(f"changed{i}.csv", [HEADER, row]))["c1"] for i, row in enumerate(changes)}
    assert original not in changed and len(changed) == len(changes)

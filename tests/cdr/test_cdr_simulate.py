"""The call simulator: deterministic, realistic in shape, exact when given minute targets, and
round-trips through every format's writer and reader."""

from __future__ import annotations

import gzip
from datetime import date

import pandas as pd
import pytest

from aisyst_pipelines.cdr import CANONICAL_COLUMNS, hash_phone_number, rate_calls
from aisyst_pipelines.simulation import (
    account_profiles,
    iter_simulated_calls,
    simulate_calls,
    write_calls,
    write_sample_files,
)
from aisyst_pipelines.cli import main

from .conftest import PII_KEY, read_all


def test_the_same_seed_gives_the_same_calls_and_another_seed_other_calls():
    first = simulate_calls(6, 3, seed=42)
    pd.testing.assert_frame_equal(first, simulate_calls(6, 3, seed=42))
    other = simulate_calls(6, 3, seed=43)
    assert set(first["call_id"]).isdisjoint(other["call_id"])
    assert list(first.columns) == list(CANONICAL_COLUMNS)
    assert first["call_id"].is_unique


def test_a_day_does_not_depend_on_how_many_days_are_asked_for():
    short = simulate_calls(4, 2, seed=7)
    long = simulate_calls(4, 5, seed=7)
    cutoff = pd.Timestamp("2026-10-03", tz="UTC")
    pd.testing.assert_frame_equal(short, long[long["started_at"] < cutoff].reset_index(drop=True))
    streamed = pd.concat(list(iter_simulated_calls(4, 5, seed=7)), ignore_index=True)
    pd.testing.assert_frame_equal(streamed, long)


def test_calls_look_like_a_voice_platform():
    calls = simulate_calls(30, 14, seed=1)
    assert len(calls) > 5_000
    answered = calls["disposition"] == "completed"
    assert 0.15 <= 1 - answered.mean() <= 0.25
    assert set(calls.loc[~answered, "disposition"]) == {"no_answer", "busy", "failed", "canceled"}
    assert (calls.loc[~answered, "billable_seconds"] == 0).all() and calls.loc[~answered, "answered_at"].isna().all()
    talk = calls.loc[answered, "billable_seconds"]
    assert 60 <= talk.median() <= 150 and talk.quantile(0.99) > 6 * talk.median()  # long tail
    assert (calls["started_at"] <= calls["ended_at"]).all()
    assert (calls.loc[answered, "answered_at"] >= calls.loc[answered, "started_at"]).all()
    # business hours: most calls fall 08:00-18:00 in the account's own time zone
    offsets = {p.account_code: p.utc_offset_hours for p in account_profiles(30, 1)}
    local_hour = (calls["started_at"].dt.hour + calls["account_code"].map(offsets)) % 24
    assert local_hour.between(8, 17).mean() > 0.7
    # weekends are quieter (2026-10-03/04 and 10/11 are a Saturday and Sunday)
    per_day = calls.groupby(calls["started_at"].dt.date).size()
    weekend = per_day[[d.weekday() >= 5 for d in per_day.index]]
    weekday = per_day[[d.weekday() < 5 for d in per_day.index]]
    assert weekend.mean() < 0.6 * weekday.mean()
    # accounts differ in volume
    volume = calls.groupby("account_code").size()
    assert volume.max() > 3 * volume.min()


def test_accounts_can_be_given_exact_minutes_and_volumes():
    targets = {"acct_0001": 395, "acct_0002": 0, "acct_0003": 1234}
    calls = simulate_calls(4, 30, seed=9, target_minutes=targets, calls_per_day={"acct_0004": 2.0})
    minutes = rate_calls(calls["disposition"], calls["billable_seconds"]).groupby(calls["account_code"]).sum()
    assert minutes["acct_0001"] == 395 and minutes["acct_0003"] == 1234
    assert "acct_0002" not in minutes or minutes["acct_0002"] == 0
    assert calls[calls["account_code"] == "acct_0004"].shape[0] < 80
    unanswered = (calls.loc[calls["account_code"] == "acct_0003", "disposition"] != "completed").mean()
    assert 0.08 < unanswered < 0.35
    named = simulate_calls(["acme", "globex"], 3, seed=1, target_minutes={"globex": 77})
    assert set(named["account_code"]) == {"acme", "globex"}
    assert rate_calls(named["disposition"], named["billable_seconds"])[named["account_code"] == "globex"].sum() == 77


@pytest.mark.parametrize("file_format", ["canonical_csv", "canonical_jsonl", "twilio", "asterisk"])
def test_simulated_calls_round_trip_through_every_format(tmp_path, file_format):
    calls = simulate_calls(5, 3, seed=21)
    tz = "America/New_York"
    written = write_calls(calls, tmp_path / f"calls-{file_format}", file_format, asterisk_timezone=tz)
    assert written.rows == len(calls) and written.malformed == {}
    result = read_all(written.path, asterisk_timezone=tz, chunk_rows=100)
    assert result.rejects.empty and len(result.chunks) > 1
    records = result.records.set_index("call_id").loc[calls["call_id"]]
    expected = calls.set_index("call_id")
    if file_format == "asterisk":
        expected["disposition"] = expected["disposition"].replace("canceled", "no_answer")
    for column in ("account_code", "direction", "disposition", "billable_seconds"):
        assert records[column].tolist() == expected[column].tolist(), column
    for column in ("started_at", "answered_at", "ended_at"):
        pd.testing.assert_series_equal(records[column], expected[column], check_names=False)
    assert records["caller_hash"].tolist() == [hash_phone_number(n, PII_KEY) for n in expected["caller"]]
    assert records["billable_minutes"].tolist() == rate_calls(expected["disposition"], expected["billable_seconds"]).tolist()


@pytest.mark.parametrize("file_format", ["canonical_csv", "canonical_jsonl", "twilio", "asterisk"])
def test_malformed_rows_are_rejected_with_the_reason_they_were_broken_for(tmp_path, file_format):
    calls = simulate_calls(5, 2, seed=4)
    written = write_calls(calls, tmp_path / "calls", file_format, malformed_rate=0.1, seed=2)
    assert len(written.malformed) > 10
    assert len(set(written.malformed.values())) >= 5  # a mix of kinds
    result = read_all(written.path)
    assert dict(zip(result.rejects["source_line"], result.rejects["reason_code"])) == written.malformed
    assert len(result.records) == len(calls) - len(written.malformed)


def test_gzip_files_are_written_and_read(tmp_path):
    calls = simulate_calls(2, 1, seed=5)
    written = write_calls(calls, tmp_path / "calls.jsonl.gz", "twilio")
    assert gzip.decompress(written.path.read_bytes()).count(b"\n") == len(calls)
    assert len(read_all(written.path).records) == len(calls)


def test_sample_files_put_each_account_on_one_platform(tmp_path):
    files = write_sample_files(tmp_path, 6, 2, seed=3, malformed_rate=0.0, asterisk_timezone="Europe/London")
    assert [f.path.relative_to(tmp_path).parts[0] for f in files] == ["canonical", "twilio", "asterisk"]
    accounts = []
    for file in files:
        result = read_all(file.path, asterisk_timezone="Europe/London")
        assert result.rejects.empty and len(result.records) == file.rows
        accounts.append(set(result.records["account_code"]))
    assert accounts[0] | accounts[1] | accounts[2] == {f"acct_{i:04d}" for i in range(1, 7)}
    assert not (accounts[0] & accounts[1] or accounts[1] & accounts[2] or accounts[0] & accounts[2])
    total = sum(f.rows for f in files)
    assert total == len(simulate_calls(6, 2, seed=3))
    assert not list(tmp_path.rglob("*.partial"))  # written aside, renamed into place


def test_simulate_calls_command_is_deterministic(tmp_path, capsys):
    args = ["simulate-calls", "--customers", "5", "--days", "2", "--seed", "9", "--malformed-rate", "0.01",
            "--start", "2026-11-01", "--formats", "canonical_csv,canonical_jsonl,twilio,asterisk"]
    assert main([*args, "--out", str(tmp_path / "one")]) == 0
    assert main([*args, "--out", str(tmp_path / "two")]) == 0
    printed = capsys.readouterr().out
    assert "calls (twilio)" in printed and "malformed rows" in printed
    one = sorted(p.relative_to(tmp_path / "one") for p in (tmp_path / "one").rglob("*") if p.is_file())
    two = sorted(p.relative_to(tmp_path / "two") for p in (tmp_path / "two").rglob("*") if p.is_file())
    assert one == two and len(one) == 4
    assert str(one[0]).startswith("asterisk/Master-20261101-2d-seed9")
    for relative in one:
        assert (tmp_path / "one" / relative).read_bytes() == (tmp_path / "two" / relative).read_bytes()


def test_bad_simulation_requests_are_refused(tmp_path):
    with pytest.raises(ValueError):
        simulate_calls(0, 1)
    with pytest.raises(ValueError):
        simulate_calls(["a", "a"], 1)
    with pytest.raises(ValueError):
        simulate_calls(1, 0)
    with pytest.raises(ValueError):
        write_sample_files(tmp_path, 1, 1, 1, formats=["excel"])
    with pytest.raises(ValueError):
        write_calls(simulate_calls(1, 1), tmp_path / "x", "twilio", malformed_rate=2)
    with pytest.raises(ValueError):
        simulate_calls(1, 1, target_minutes={"acct_0001": -5})
    with pytest.raises(ValueError, match="acct_0009"):
        simulate_calls(2, 1, target_minutes={"acct_0009": 10})
    january = simulate_calls(1, 1, start=date(2026, 1, 1))["started_at"]
    assert january.min() >= pd.Timestamp("2026-01-01", tz="UTC") and january.max() < pd.Timestamp("2026-01-02", tz="UTC")


@pytest.mark.parametrize("file_format", ["canonical_csv", "canonical_jsonl", "twilio", "asterisk"])
def test_windows_line_ends_read_the_same(tmp_path, file_format):
    calls = simulate_calls(2, 1, seed=12)
    written = write_calls(calls, tmp_path / "unix", file_format)
    crlf = tmp_path / "windows"
    crlf.write_bytes(written.path.read_bytes().replace(b"\n", b"\r\n"))
    unix, windows = read_all(written.path), read_all(crlf)
    assert windows.rejects.empty
    pd.testing.assert_frame_equal(windows.records, unix.records)

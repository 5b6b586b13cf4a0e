"""`aisyst ingest` against a persistent Dagster instance (DAGSTER_HOME)."""

from __future__ import annotations

import os
import re
from pathlib import Path

import dagster as dg
import pytest
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG
from ingest_samples import expected_usage, usage_calls_minutes, write_sample

from aisyst_pipelines.cli import main
from aisyst_pipelines.services.ingestion import file_sha256
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.cdr_store import loaded_sha256s
from jobs.ingestion import JOB_NAME, SENSOR_NAME, ingest_once


def runs_in(settings: Settings) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        return list(instance.get_runs())


def test_ingest_loads_new_files_records_runs_and_exits_zero(
    ingest_settings: Settings, warehouse: Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    _, calls = write_sample(ingest_settings.landing_dir / "canonical" / "calls.csv", "canonical_csv")

    assert main(["ingest"]) == 0

    out = capsys.readouterr().out
    assert "loaded  canonical/calls.csv: canonical_csv:" in out
    assert usage_calls_minutes(warehouse) == expected_usage(calls)
    (run,) = runs_in(ingest_settings)
    assert run.job_name == JOB_NAME
    assert run.is_success
    assert run.tags[SENSOR_NAME_TAG] == SENSOR_NAME
    assert run.tags[RUN_KEY_TAG].count(":") == 2
    assert (ingest_settings.dagster_home / "dagster.yaml").exists()

    assert main(["ingest"]) == 0  # nothing new: no run, no change
    assert "no new CDR files" in capsys.readouterr().out
    assert len(runs_in(ingest_settings)) == 1


def test_ingest_finds_its_instance_without_changing_the_environment(
    ingest_settings: Settings, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGSTER_HOME")  # the default: $AISYST_HOME/dagster
    write_sample(ingest_settings.landing_dir / "calls.csv", "canonical_csv")
    environment = dict(os.environ)

    assert main(["ingest"]) == 0

    assert dict(os.environ) == environment
    with dg.DagsterInstance.from_config(str(Settings.from_env().dagster_home)) as instance:
        assert [run.job_name for run in instance.get_runs()] == [JOB_NAME]


def test_ingest_exits_non_zero_when_a_file_fails_and_still_loads_the_others(
    ingest_settings: Settings, warehouse: Warehouse, capsys: pytest.CaptureFixture[str]
) -> None:
    good = ingest_settings.landing_dir / "good.csv"
    _, calls = write_sample(good, "canonical_csv")
    broken = ingest_settings.landing_dir / "twilio" / "broken.jsonl"
    write_sample(broken, "twilio", accounts=("acct_z",))
    broken.write_bytes(broken.read_bytes()[:-20])  # truncated mid-line

    assert main(["ingest"]) == 1

    out = capsys.readouterr().out
    assert "loaded  good.csv" in out
    assert " FAILED  twilio/broken.jsonl: truncated" in out
    assert usage_calls_minutes(warehouse) == expected_usage(calls)
    assert sorted(run.is_success for run in runs_in(ingest_settings)) == [False, True]


FAILED_LINE = re.compile(r"^ FAILED  (?P<file>\S+): (?P<cause>[^\n]+); details: (?P<where>[^\n;]+)$")


def test_each_failed_file_is_one_line_of_cause_and_where_the_details_are(
    ingest_settings: Settings, warehouse: Warehouse, capfd: pytest.CaptureFixture[str]
) -> None:
    landing = ingest_settings.landing_dir
    _, calls = write_sample(landing / "good.csv", "canonical_csv")
    truncated = landing / "twilio" / "broken.jsonl"
    write_sample(truncated, "twilio", accounts=("acct_z",))
    truncated.write_bytes(truncated.read_bytes()[:-20])
    latin1 = Path(os.fsdecode(os.fsencode(landing / "asterisk") + b"/\xe9t\xe9.csv"))
    write_sample(latin1, "asterisk", accounts=("acct_y",))
    os.mkfifo(landing / "pipe.csv")  # a file no one can read as a CDR file (tests run as root: chmod 000 would not stop them)

    assert main(["ingest"]) == 1

    out, err = capfd.readouterr()
    assert err == ""  # no traceback, no Dagster log lines: the run logs are in the instance
    lines = out.splitlines()
    assert len(lines) == 4 and sum(line.startswith(" loaded  good.csv:") for line in lines) == 1  # one line per file
    failed = {match["file"]: match for match in map(FAILED_LINE.match, lines) if match}
    assert set(failed) == {"twilio/broken.jsonl", "asterisk/\\xe9t\\xe9.csv", "pipe.csv"}, out
    (run,) = [run for run in runs_in(ingest_settings) if not run.is_success]
    assert failed["twilio/broken.jsonl"]["cause"].startswith("truncated: the last line does not end with a newline")
    assert failed["twilio/broken.jsonl"]["where"] == f"Dagster run {run.run_id} / cdr_files"
    assert failed["asterisk/\\xe9t\\xe9.csv"]["cause"].startswith("the file name is not valid UTF-8")
    assert failed["asterisk/\\xe9t\\xe9.csv"]["where"] == "cdr_files"
    assert failed["pipe.csv"]["cause"] == "not a regular file but a named pipe (FIFO): not read"
    assert failed["pipe.csv"]["where"] == "the ops alert"
    assert usage_calls_minutes(warehouse) == expected_usage(calls)

    assert main(["ingest"]) == 0  # reported once; nothing new
    assert capfd.readouterr().out == f"no new CDR files in {landing}\n"


def test_a_run_that_cannot_start_fails_alone_and_the_next_pass_tries_its_file_again(
    ingest_settings: Settings, instance: dg.DagsterInstance, definitions: dg.Definitions, warehouse: Warehouse,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    first = ingest_settings.landing_dir / "a.csv"
    write_sample(first, "canonical_csv", accounts=("acct_a",))
    second = ingest_settings.landing_dir / "b.csv"
    write_sample(second, "canonical_csv", accounts=("acct_b",), seed=2)
    # The run storage refuses b.csv's run once (a database hiccup): a failure that no sensor can foresee.
    add_run = instance.run_storage.add_run
    refused: list[str] = []

    def refusing_once(run: dg.DagsterRun) -> dg.DagsterRun:
        if run.tags.get("aisyst/cdr_file") == "b.csv" and not refused:
            refused.append(run.run_id)
            raise OSError("run storage unavailable")
        return add_run(run)

    monkeypatch.setattr(instance.run_storage, "add_run", refusing_once)

    outcomes = {Path(o.file).name: o for o in ingest_once(instance, definitions)}

    assert outcomes["a.csv"].status == "loaded"
    assert outcomes["b.csv"].status == "failed"
    assert "could not be started (OSError: run storage unavailable)" in outcomes["b.csv"].detail
    assert loaded_sha256s(warehouse, [file_sha256(second)]) == set()

    again = {Path(o.file).name: o for o in ingest_once(instance, definitions)}  # the cursor did not move past b.csv

    assert again["b.csv"].status == "loaded"
    assert again["a.csv"].status == "skipped"  # loaded before: not loaded twice
    assert ingest_once(instance, definitions) == []  # now the cursor has moved on

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
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse
from jobs.ingestion import JOB_NAME, SENSOR_NAME


def runs_in(settings: Settings) -> list[dg.DagsterRun]:
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        return list(instance.get_runs())


def test_ingest_waits_for_the_daemons_tick_and_its_runs_and_exits_zero(
    ingest_settings: Settings, warehouse: Warehouse, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("DAGSTER_HOME")  # the default: $AISYST_HOME/dagster, found without changing the environment
    _, calls = write_sample(ingest_settings.landing_dir / "canonical" / "calls.csv", "canonical_csv")
    environment = dict(os.environ)

    assert main(["ingest"]) == 0

    assert dict(os.environ) == environment
    out = capsys.readouterr().out
    assert "loaded  canonical/calls.csv: canonical_csv:" in out
    assert usage_calls_minutes(warehouse) == expected_usage(calls)
    home = Settings.from_env()
    (run,) = [run for run in runs_in(home) if run.job_name == JOB_NAME]  # (other sensors may launch runs too)
    assert run.job_name == JOB_NAME
    assert run.is_success
    # launched by the daemon's tick of the sensor, from the code location (not in this process)
    assert run.tags[SENSOR_NAME_TAG] == SENSOR_NAME
    assert run.tags[RUN_KEY_TAG].count(":") == 2
    assert run.remote_job_origin is not None and run.remote_job_origin.location_name == "aisyst_pipelines"
    assert (home.dagster_home / "dagster.yaml").exists()

    assert main(["ingest"]) == 0  # the daemon's cursor moved on: nothing new, no run, no change
    assert "no new CDR files" in capsys.readouterr().out
    assert len([run for run in runs_in(home) if run.job_name == JOB_NAME]) == 1


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

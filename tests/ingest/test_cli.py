"""`aisyst ingest` against a persistent Dagster instance (DAGSTER_HOME)."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG
from ingest_samples import expected_usage, usage_calls_minutes, write_sample

from aisyst_pipelines.cli import main
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse
from jobs.ingest import JOB_NAME, SENSOR_NAME


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
    assert "failed  twilio/broken.jsonl:" in out and "truncated" in out
    assert usage_calls_minutes(warehouse) == expected_usage(calls)
    assert sorted(run.is_success for run in runs_in(ingest_settings)) == [False, True]

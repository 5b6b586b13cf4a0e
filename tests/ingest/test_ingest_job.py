"""The cdr_ingest job and its assets, executed by Dagster against the real warehouse (SQLite and PostgreSQL)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
from ingest_samples import PII_KEY, count_rows, expected_usage, usage_calls_minutes, write_sample
from sqlalchemy import func, select

from aisyst_pipelines.assets.ingestion import LOAD_OP_NAME, cdr_reject_share, load_cdr_file_assets
from aisyst_pipelines.cdr.records import REASON_CODES
from aisyst_pipelines.services.ingestion import file_sha256
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.cdr_store import cdr_file, loaded_sha256s
from aisyst_pipelines.warehouse.schema import call_records
from jobs.ingestion import JOB_NAME, REJECT_SHARE_CHECK_OP, SENSOR_NAME
from resources import PiiKeyResource, WarehouseResource
from resources.ingestion import IngestionConfig

EXTENSIONS = {"canonical_csv": "csv", "canonical_jsonl": "jsonl", "twilio": "jsonl", "asterisk": "csv"}


def run_config(path: Path, *, sha256: str = "", forced_format: str | None = None, max_reject_share: float = 0.01) -> dict:
    return {
        "ops": {
            LOAD_OP_NAME: {"config": {"path": str(path), "sha256": sha256, "forced_format": forced_format}},
            REJECT_SHARE_CHECK_OP: {"config": {"max_reject_share": max_reject_share}},
        }
    }


def execute(definitions: dg.Definitions, instance: dg.DagsterInstance, config: dict) -> dg.ExecuteInProcessResult:
    return definitions.resolve_job_def(JOB_NAME).execute_in_process(run_config=config, instance=instance, raise_on_error=False)


def call_records_metadata(result: dg.ExecuteInProcessResult) -> dict[str, object]:
    (materialization,) = [m for m in result.asset_materializations_for_node(LOAD_OP_NAME) if m.asset_key.path == ["call_records"]]
    return {key: value.value for key, value in materialization.metadata.items()}


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(event.step_failure_data.error.message for event in result.get_step_failure_events())


@pytest.mark.parametrize("fmt", ["canonical_csv", "canonical_jsonl", "twilio", "asterisk"])
def test_every_format_loads_end_to_end(
    fmt: str, ingest_settings: Settings, instance: dg.DagsterInstance, definitions: dg.Definitions, warehouse: Warehouse
) -> None:
    path = ingest_settings.landing_dir / f"calls.{EXTENSIONS[fmt]}"  # no forcing folder: detected from content
    written, calls = write_sample(path, fmt, seed=len(fmt))

    result = execute(definitions, instance, run_config(path, sha256=file_sha256(path)))

    assert result.success, failure_message(result)
    metadata = call_records_metadata(result)
    assert metadata["format"] == fmt
    assert metadata["file"] == str(path)
    assert (metadata["rows_total"], metadata["rows_loaded"], metadata["rows_rejected"]) == (written.rows, written.rows, 0)
    assert {key for key in metadata if key.startswith("rejected_")} == {f"rejected_{code}" for code in REASON_CODES}
    assert usage_calls_minutes(warehouse) == expected_usage(calls)
    with warehouse.connect() as connection:
        hashes = connection.execute(select(call_records.c.caller_hash, call_records.c.callee_hash)).all()
    numbers = set(calls["caller"].dropna()) | set(calls["callee"].dropna())
    assert all(len(h) == 64 and h not in numbers for pair in hashes for h in pair if h is not None)
    (check,) = result.get_asset_check_evaluations()
    assert check.passed


def test_a_file_in_a_forcing_subfolder_is_read_as_that_format(
    ingest_settings: Settings, instance: dg.DagsterInstance, definitions: dg.Definitions
) -> None:
    path = ingest_settings.landing_dir / "asterisk" / "Master.csv"
    write_sample(path, "asterisk")
    result = execute(definitions, instance, run_config(path))  # forced_format unset: the sub-folder decides
    assert result.success, failure_message(result)
    assert call_records_metadata(result)["format"] == "asterisk"


def test_the_same_file_run_twice_is_skipped_and_changes_nothing(
    ingest_settings: Settings, instance: dg.DagsterInstance, definitions: dg.Definitions, warehouse: Warehouse
) -> None:
    path = ingest_settings.landing_dir / "calls.csv"
    write_sample(path, "canonical_csv")
    assert execute(definitions, instance, run_config(path)).success
    rows = count_rows(warehouse)

    again = execute(definitions, instance, run_config(path))

    assert again.success
    assert call_records_metadata(again)["outcome"] == "skipped"
    assert count_rows(warehouse) == rows


def test_the_reject_share_check_fails_above_its_limit_and_passes_below(
    ingest_settings: Settings, instance: dg.DagsterInstance, definitions: dg.Definitions
) -> None:
    messy = ingest_settings.landing_dir / "messy.csv"
    written, _ = write_sample(messy, "canonical_csv", malformed_rate=0.1, days=3)
    assert len(written.malformed) / written.rows > 0.01

    result = execute(definitions, instance, run_config(messy))

    assert result.success  # the good rows load; the check reports the share
    metadata = call_records_metadata(result)
    assert metadata["rows_rejected"] == len(written.malformed)
    assert sum(value for key, value in metadata.items() if key.startswith("rejected_")) == len(written.malformed)
    (check,) = result.get_asset_check_evaluations()
    assert not check.passed
    assert check.severity == dg.AssetCheckSeverity.ERROR
    assert check.metadata["reject_share"].value == pytest.approx(len(written.malformed) / written.rows)

    lenient = execute(definitions, instance, {"ops": {REJECT_SHARE_CHECK_OP: {"config": {"max_reject_share": 0.5}},
                                                      LOAD_OP_NAME: {"config": {"path": str(messy)}}}})
    (check,) = lenient.get_asset_check_evaluations()
    assert check.passed


def write_window_file(path: Path) -> None:
    """Five calls: too old and too long for the limits below, two in the future, one that loads."""
    soon = datetime.now(timezone.utc) + timedelta(hours=2)  # the run loads "now": within a day, not within an hour

    def row(call_id: str, ended: datetime, callee: str = "") -> str:
        times = [(ended - timedelta(seconds=s)).strftime("%Y-%m-%dT%H:%M:%SZ") for s in (10, 9, 0)]
        return ",".join([call_id, "acct_a", "inbound", "completed", *times, "9", "+14155550100", callee])

    path.write_text("\n".join([
        "call_id,account_code,direction,disposition,started_at,answered_at,ended_at,billable_seconds,caller,callee",
        row("oct1", datetime(2026, 10, 1, 10, tzinfo=timezone.utc)),
        row("oct5", datetime(2026, 10, 5, 10, tzinfo=timezone.utc)),
        row("soon", soon),
        row("far", datetime(2099, 1, 1, tzinfo=timezone.utc)),
        row("long", datetime(2026, 10, 5, 11, tzinfo=timezone.utc), callee="x" * 3000),
    ]) + "\n")


WINDOW_LIMITS = {"future_tolerance_hours": 1, "earliest_call": "2026-10-02T00:00:00Z", "max_record_bytes": 2048}


def test_the_billing_window_and_the_record_limit_come_from_the_run_config(
    ingest_settings: Settings, instance: dg.DagsterInstance, definitions: dg.Definitions, warehouse: Warehouse
) -> None:
    path = ingest_settings.landing_dir / "window.csv"
    write_window_file(path)
    load = {"path": str(path), **WINDOW_LIMITS}

    result = execute(definitions, instance, {"ops": {LOAD_OP_NAME: {"config": load}}})

    assert result.success, failure_message(result)
    metadata = call_records_metadata(result)
    assert (metadata["rows_total"], metadata["rows_loaded"]) == (5, 1)
    assert (metadata["rejected_call_too_old"], metadata["rejected_call_in_future"], metadata["rejected_record_too_long"]) == (1, 2, 1)

    refused = execute(definitions, instance, {"ops": {LOAD_OP_NAME: {"config": {**load, "earliest_call": "2026-10-02"}}}})

    assert not refused.success
    assert "the run config is invalid: earliest_call must carry a time zone" in failure_message(refused)


def test_the_sensors_runs_load_under_the_configured_limits(
    ingest_settings: Settings, instance: dg.DagsterInstance, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """AISYST_CDR_* reach the runs the sensor requests (their run config names only the file) through the
    ingestion resource; a one-off run config still overrides them."""
    monkeypatch.setenv("AISYST_CDR_FUTURE_TOLERANCE_HOURS", "1")
    monkeypatch.setenv("AISYST_CDR_EARLIEST_CALL", "2026-10-02T00:00:00Z")
    monkeypatch.setenv("AISYST_CDR_MAX_RECORD_BYTES", "2048")
    path = ingest_settings.landing_dir / "window.csv"
    write_window_file(path)
    from aisyst_pipelines.definitions import defs

    definitions = defs()
    with dg.build_sensor_context(instance=instance, definitions=definitions, resources=dict(definitions.resources or {})) as context:
        tick = definitions.resolve_sensor_def(SENSOR_NAME)(context)
    (request,) = tick.run_requests
    loaded = call_records_metadata(execute(definitions, instance, request.run_config))

    assert (loaded["rows_total"], loaded["rows_loaded"], loaded["rows_rejected"]) == (5, 1, 4)
    assert (loaded["rejected_call_too_old"], loaded["rejected_call_in_future"], loaded["rejected_record_too_long"]) == (1, 2, 1)

    lenient = {"path": str(path.with_name("again.csv")), "earliest_call": "2020-01-01T00:00:00Z"}
    path.with_name("again.csv").write_bytes(path.read_bytes() + b"\n")  # other content: loaded, not skipped
    result = execute(defs(), instance, {"ops": {LOAD_OP_NAME: {"config": lenient}}})

    assert (call_records_metadata(result)["rejected_call_too_old"], call_records_metadata(result)["rows_duplicate"]) == (0, 1)


def test_a_configured_limit_must_be_valid() -> None:
    with pytest.raises(ValueError, match="AISYST_CDR_EARLIEST_CALL='2026-10-02' is invalid: an ISO 8601 time with an offset"):
        Settings.from_env({"AISYST_CDR_EARLIEST_CALL": "2026-10-02"})
    with pytest.raises(ValueError, match="AISYST_CDR_MAX_RECORD_BYTES='64k' is invalid"):
        Settings.from_env({"AISYST_CDR_MAX_RECORD_BYTES": "64k"})


@pytest.mark.parametrize("damage", ["truncated", "changed"])
def test_a_broken_or_changed_file_fails_its_run_and_loads_nothing(
    damage: str, ingest_settings: Settings, instance: dg.DagsterInstance, definitions: dg.Definitions, warehouse: Warehouse
) -> None:
    path = ingest_settings.landing_dir / "calls.csv"
    write_sample(path, "canonical_csv")
    seen = file_sha256(path)
    data = path.read_bytes()
    if damage == "truncated":  # cut in the middle of the last line, as a writer still at work would leave it
        path.write_bytes(data[: len(data) - 7])
        seen = file_sha256(path)
    else:
        path.write_bytes(data + data.splitlines(keepends=True)[1])

    result = execute(definitions, instance, run_config(path, sha256=seen))

    assert not result.success
    message = failure_message(result)
    assert str(path) in message
    assert ("truncated" if damage == "truncated" else "changed after the sensor saw it") in message
    # A broken file keeps a failed cdr_files row (its content, its reason); a changed one is requested again.
    failed_rows = int(damage == "truncated")
    assert count_rows(warehouse) == {"cdr_files": failed_rows, "call_records": 0, "call_records_rejected": 0, "usage_daily": 0}


@pytest.mark.parametrize("fmt", ["canonical_csv", "canonical_jsonl", "twilio", "asterisk"])
@pytest.mark.parametrize("damage", ["truncated", "empty"])
def test_a_file_that_cannot_be_loaded_gets_a_failed_row_with_its_reason(
    fmt: str, damage: str, ingest_settings: Settings, instance: dg.DagsterInstance, definitions: dg.Definitions, warehouse: Warehouse
) -> None:
    path = ingest_settings.landing_dir / f"calls.{EXTENSIONS[fmt]}"
    write_sample(path, fmt)
    path.write_bytes(path.read_bytes()[:-7] if damage == "truncated" else b"")
    sha256 = file_sha256(path)

    result = execute(definitions, instance, run_config(path, sha256=sha256))

    assert not result.success
    row = cdr_file(warehouse, sha256)
    assert row is not None and (row.status, row.file_path, row.rows_loaded) == ("failed", str(path), 0)
    assert row.failure_reason.startswith("truncated" if damage == "truncated" else "the file is empty")
    assert str(path) not in row.failure_reason  # the path is in file_path; the reason is the cause alone
    assert loaded_sha256s(warehouse, [sha256]) == set()
    assert count_rows(warehouse)["call_records"] == 0


@pytest.mark.parametrize("entry", ["directory", "missing"])
def test_a_path_that_is_not_a_readable_file_fails_its_run_with_the_cause(
    entry: str, ingest_settings: Settings, instance: dg.DagsterInstance, definitions: dg.Definitions, warehouse: Warehouse
) -> None:
    path = ingest_settings.landing_dir / "calls.csv"
    if entry == "directory":  # e.g. replaced by a folder after the sensor saw it
        path.mkdir()

    result = execute(definitions, instance, run_config(path, sha256="0" * 64))

    assert not result.success
    assert ("not a regular file" if entry == "directory" else "no such file") in failure_message(result)
    assert count_rows(warehouse)["cdr_files"] == 0  # no content, no key to record it under


def test_dg_materialize_with_the_real_warehouse(ingest_settings: Settings, warehouse: Warehouse) -> None:
    path = ingest_settings.landing_dir / "twilio" / "calls.jsonl"
    written, calls = write_sample(path, "twilio")
    resources = {"warehouse": WarehouseResource(url=warehouse.url), "pii_key": PiiKeyResource(key=PII_KEY),
                 "ingestion": IngestionConfig.from_settings(ingest_settings)}

    result = dg.materialize([load_cdr_file_assets, cdr_reject_share], resources=resources, run_config=run_config(path))

    assert result.success
    assert [m.asset_key.path for m in result.asset_materializations_for_node(LOAD_OP_NAME)] == [["call_records"], ["usage_daily"]]
    with warehouse.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(call_records)) == written.rows
    assert usage_calls_minutes(warehouse) == expected_usage(calls)


def test_the_check_on_its_own_judges_the_file_loaded_last(
    ingest_settings: Settings, instance: dg.DagsterInstance, definitions: dg.Definitions, warehouse: Warehouse
) -> None:
    messy = ingest_settings.landing_dir / "messy.csv"
    write_sample(messy, "canonical_csv", malformed_rate=0.1, days=3)
    clean = ingest_settings.landing_dir / "clean.csv"
    write_sample(clean, "canonical_csv", seed=5)
    resources = {"warehouse": WarehouseResource(url=warehouse.url), "pii_key": PiiKeyResource(key=PII_KEY),
                 "ingestion": IngestionConfig.from_settings(ingest_settings)}
    check_only = dg.AssetSelection.checks(cdr_reject_share)

    def check_alone() -> bool:
        result = dg.materialize([load_cdr_file_assets, cdr_reject_share], selection=check_only, resources=resources,
                                instance=instance, run_config={"ops": {REJECT_SHARE_CHECK_OP: {"config": {"max_reject_share": 0.01}}}})
        (evaluation,) = result.get_asset_check_evaluations()
        return evaluation.passed

    assert not execute(definitions, instance, run_config(messy)).get_asset_check_evaluations()[0].passed
    assert not check_alone()
    assert execute(definitions, instance, run_config(clean)).get_asset_check_evaluations()[0].passed
    assert check_alone()

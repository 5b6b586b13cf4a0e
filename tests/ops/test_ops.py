"""Ops wiring: the run-failure e-mail and the CDR-freshness check, through real Dagster execution."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from email import message_from_bytes
from pathlib import Path

import dagster as dg
from sqlalchemy import insert

from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.schema import cdr_files
from jobs.ops import CDR_FRESHNESS_CHECK, build_cdr_freshness_check, cdr_freshness_job, ops_run_failure_alert
from resources import NotifierResource, WarehouseResource


def _outbox_notifier(outbox: Path) -> NotifierResource:
    return NotifierResource(outbox_dir=str(outbox), sender="billing@aisyst.example", ops_recipients=["ops@aisyst.example"])


def test_a_failed_run_sends_one_ops_email(tmp_path: Path) -> None:
    @dg.op
    def load_step() -> None:
        raise RuntimeError("landing disk unreadable")

    @dg.job
    def nightly_job() -> None:
        load_step()

    instance = dg.DagsterInstance.ephemeral()
    result = nightly_job.execute_in_process(instance=instance, raise_on_error=False)
    assert not result.success
    context = dg.build_run_status_sensor_context(
        sensor_name="ops_run_failure_alert",
        dagster_instance=instance,
        dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(),
        resources={"notifier": _outbox_notifier(tmp_path / "outbox")},
    ).for_run_failure()
    ops_run_failure_alert(context)

    messages = list((tmp_path / "outbox").glob("*.eml"))
    assert len(messages) == 1
    mail = message_from_bytes(messages[0].read_bytes())
    assert mail["To"] == "ops@aisyst.example"
    assert mail["Subject"] == "[aisyst] run failed: nightly_job"
    body = mail.get_content() if hasattr(mail, "get_content") else mail.get_payload()
    assert result.dagster_run.run_id in str(body)
    decoded = mail.get_payload(decode=True).decode()
    assert "- step load_step: RuntimeError: landing disk unreadable" in decoded  # the cause, not only the step


def test_the_ops_email_of_a_failed_cdr_run_says_which_file_and_why(tmp_path: Path, warehouse: Warehouse) -> None:
    from aisyst_pipelines.assets.ingestion import LOAD_OP_NAME, load_cdr_file_assets
    from resources import PiiKeyResource
    from resources.ingestion import IngestionConfig

    unknown = tmp_path / "calls.csv"
    unknown.write_text("not,a,cdr\nfile,at,all\n")
    instance = dg.DagsterInstance.ephemeral()
    result = dg.materialize(
        [load_cdr_file_assets], instance=instance, raise_on_error=False,
        resources={"warehouse": WarehouseResource(url=warehouse.url), "pii_key": PiiKeyResource(key="k"),
                   "ingestion": IngestionConfig(landing_dir=str(tmp_path))},
        run_config={"ops": {LOAD_OP_NAME: {"config": {"path": str(unknown)}}}},
    )
    context = dg.build_run_status_sensor_context(
        sensor_name="ops_run_failure_alert", dagster_instance=instance, dagster_run=result.dagster_run,
        dagster_event=result.get_run_failure_event(), resources={"notifier": _outbox_notifier(tmp_path / "outbox")},
    ).for_run_failure()
    ops_run_failure_alert(context)

    (message,) = (tmp_path / "outbox").glob("*.eml")
    body = str(message_from_bytes(message.read_bytes()).get_payload(decode=True).decode())
    assert f"- step {LOAD_OP_NAME}: CDR file not loaded, nothing was written: {unknown}: cannot detect the CDR format" in body


def _freshness(warehouse: Warehouse) -> dg.AssetCheckEvaluation:
    check = build_cdr_freshness_check(timedelta(hours=Settings.from_env({"AISYST_CDR_FRESHNESS_HOURS": "6"}).cdr_freshness_hours))
    definitions = dg.Definitions(
        asset_checks=[check], jobs=[cdr_freshness_job(check)], resources={"warehouse": WarehouseResource(url=warehouse.url)}
    )
    result = definitions.resolve_job_def("cdr_freshness_job").execute_in_process()
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.check_name == CDR_FRESHNESS_CHECK
    return evaluation


def _loaded_file(warehouse: Warehouse, sha256: str, ingested_at: datetime) -> None:
    with warehouse.begin() as connection:
        connection.execute(insert(cdr_files).values(
            sha256=sha256, file_path=f"/landing/{sha256}.csv", format="canonical_csv", size_bytes=10,
            rows_total=1, rows_loaded=1, rows_duplicate=0, rows_rejected=0, ingested_at=ingested_at))


def test_cdr_freshness_fails_when_nothing_was_loaded_recently(warehouse: Warehouse) -> None:
    assert not _freshness(warehouse).passed  # never loaded
    _loaded_file(warehouse, "a" * 64, datetime.now(timezone.utc) - timedelta(hours=7))
    stale = _freshness(warehouse)
    assert not stale.passed
    assert stale.metadata["age_minutes"].value >= 7 * 60
    _loaded_file(warehouse, "b" * 64, datetime.now(timezone.utc) - timedelta(minutes=5))
    assert _freshness(warehouse).passed

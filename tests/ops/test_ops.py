"""Ops wiring: the run-failure e-mail (and Dagster's run retries) and the CDR-freshness check (Dagster's
last-update freshness check and its sensor), through real Dagster execution."""

from __future__ import annotations

import time
from datetime import timedelta
from email import message_from_bytes
from pathlib import Path

import dagster as dg

from aisyst_pipelines.assets.ingestion import CALL_RECORDS
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse
from jobs.ops import (
    CDR_FRESHNESS_CHECK,
    CDR_FRESHNESS_SENSOR,
    cdr_freshness_checks,
    cdr_freshness_sensor,
    ops_check_failure_alert,
    ops_run_failure_alert,
    will_be_retried,
)
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


def _freshness_definitions(max_age: timedelta) -> dg.Definitions:
    checks = cdr_freshness_checks(max_age)
    return dg.Definitions(
        assets=[dg.AssetSpec(CALL_RECORDS)],  # materialized below as a load would, without a file
        asset_checks=checks, sensors=[cdr_freshness_sensor(checks)],
        jobs=[dg.define_asset_job("freshness", selection=dg.AssetSelection.checks(*checks))],
    )


def _freshness(definitions: dg.Definitions, instance: dg.DagsterInstance) -> dg.AssetCheckEvaluation:
    result = definitions.resolve_job_def("freshness").execute_in_process(instance=instance)
    (evaluation,) = result.get_asset_check_evaluations()
    assert evaluation.asset_check_key == dg.AssetCheckKey(CALL_RECORDS, CDR_FRESHNESS_CHECK)
    assert evaluation.severity == dg.AssetCheckSeverity.ERROR  # red: ops_check_failure_alert e-mails it
    return evaluation


def test_cdr_freshness_is_dagsters_last_update_check_with_the_configured_hours() -> None:
    hours = Settings.from_env({"AISYST_CDR_FRESHNESS_HOURS": "6"}).cdr_freshness_hours
    definitions = _freshness_definitions(timedelta(hours=hours))
    with dg.instance_for_test() as instance:
        assert not _freshness(definitions, instance).passed  # never loaded
        instance.report_runless_asset_event(dg.AssetMaterialization(CALL_RECORDS))  # a file loaded now
        fresh = _freshness(definitions, instance)
        assert fresh.passed
        assert fresh.metadata["dagster/freshness_params"].value["lower_bound_delta_seconds"] == 6 * 3600
        # The sensor requests an evaluation only once the check may have turned overdue (6 h later).
        sensor = definitions.resolve_sensor_def(CDR_FRESHNESS_SENSOR)
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING
        with dg.build_sensor_context(instance=instance, definitions=definitions) as context:
            assert not sensor.evaluate_tick(context).run_requests


def test_cdr_freshness_fails_once_the_last_load_is_older_than_the_max_age_and_ops_are_told(tmp_path: Path) -> None:
    definitions = _freshness_definitions(timedelta(seconds=1))
    outbox = tmp_path / "outbox"
    with dg.instance_for_test() as instance:

        def alert_tick(cursor: str | None) -> str | None:
            with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"notifier": _outbox_notifier(outbox)}) as context:
                return ops_check_failure_alert(context).cursor

        cursor = alert_tick(None)
        instance.report_runless_asset_event(dg.AssetMaterialization(CALL_RECORDS))
        time.sleep(1.5)
        assert not _freshness(definitions, instance).passed
        alert_tick(cursor)
        (message,) = outbox.glob("*.eml")
        body = message_from_bytes(message.read_bytes()).get_payload(decode=True).decode()
        assert "The ERROR check freshness_check on call_records failed" in body
        assert "Runbook: docs/operations.md#cdr_freshness" in body
        sensor = definitions.resolve_sensor_def(CDR_FRESHNESS_SENSOR)
        instance.report_runless_asset_event(dg.AssetMaterialization(CALL_RECORDS))
        with dg.build_sensor_context(instance=instance, definitions=definitions) as context:
            (request,) = sensor.evaluate_tick(context).run_requests
        assert request.asset_check_keys == [dg.AssetCheckKey(CALL_RECORDS, CDR_FRESHNESS_CHECK)]


def test_a_failed_run_that_dagster_retries_is_emailed_only_after_its_last_attempt(tmp_path: Path) -> None:
    @dg.op
    def flaky() -> None:
        raise RuntimeError("database restarting")

    @dg.job(tags={"dagster/max_retries": "2"})
    def retried_job() -> None:
        flaky()

    outbox = tmp_path / "outbox"
    with dg.instance_for_test(overrides={"run_retries": {"enabled": True, "max_retries": 1}}) as instance:
        for attempt in ("0", "1", "2"):
            tags = {"dagster/retry_number": attempt} if attempt != "0" else {}
            result = retried_job.execute_in_process(instance=instance, raise_on_error=False, tags=tags)
            context = dg.build_run_status_sensor_context(
                sensor_name="ops_run_failure_alert", dagster_instance=instance, dagster_run=result.dagster_run,
                dagster_event=result.get_run_failure_event(), resources={"notifier": _outbox_notifier(outbox)},
            ).for_run_failure()
            ops_run_failure_alert(context)
            assert len(list(outbox.glob("*.eml"))) == (1 if attempt == "2" else 0)


def test_the_local_and_production_instances_retry_the_jobs_tagged_for_it(tmp_path: Path) -> None:
    import yaml

    from aisyst_pipelines.deployment import open_instance

    with open_instance(Settings.from_env({"AISYST_HOME": str(tmp_path)})) as instance:
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 0  # only tagged jobs
        assert will_be_retried(instance, {"dagster/max_retries": "2", "dagster/retry_number": "1"})
        assert not will_be_retried(instance, {"dagster/max_retries": "2", "dagster/retry_number": "2"})
        assert not will_be_retried(instance, {})  # e.g. a cdr_ingest run: e-mailed at once
        assert instance.run_coordinator.dequeue_interval_seconds == 1  # type: ignore[attr-defined]  # the queue's loop
    production = yaml.safe_load((Path(__file__).resolve().parents[2] / "deploy" / "dagster.yaml").read_text())
    assert production["run_retries"] == {"enabled": True, "max_retries": 0}
    assert production["run_coordinator"]["config"]["dequeue_interval_seconds"] == 1

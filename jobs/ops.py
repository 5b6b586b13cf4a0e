"""Ops wiring that watches the other jobs: a run-failure alert and the CDR-freshness check's schedule.

Every failed run of this code location (ingestion, sync, reconciliation, alerts, annotation) becomes
one ops e-mail through the notifier, so a failure at 02:00 is in the ops inbox, not only in the UI.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import dagster as dg

from aisyst_pipelines.assets.ingestion import CALL_RECORDS
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse.cdr_store import last_ingested_at
from resources import NotifierResource, WarehouseResource

CDR_FRESHNESS_CHECK = "cdr_ingestion_fresh"


def run_failure_text(job_name: str, run_id: str, message: str) -> str:
    return (
        f"The Dagster run {run_id} of job {job_name} failed.\n\n"
        f"{message}\n\n"
        f"Runbook: docs/operations.md, section for {job_name}. Run details: Dagster UI, Runs, {run_id}.\n"
    )


@dg.run_failure_sensor(
    name="ops_run_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="E-mails ops (the notifier's ops recipients) once for every failed run of this code location.",
)
def ops_run_failure_alert(context: dg.RunFailureSensorContext, notifier: NotifierResource) -> None:
    run = context.dagster_run
    # Dagster's run failure message only names the failed steps: the cause of each is added, in one
    # line (a Failure's description, written for people, else the exception's first line; our
    # resources scrub secrets from their exceptions, so it is safe to forward).
    message = "\n".join(
        [context.failure_event.message or "no failure message"]
        + [f"- step {event.step_key}: {step_failure_cause(event)}" for event in context.get_step_failure_events()]
    )
    notifier.send_ops_alert(
        subject=f"[aisyst] run failed: {run.job_name}",
        text=run_failure_text(run.job_name, run.run_id, message),
    )


def step_failure_cause(event: dg.DagsterEvent) -> str:
    """Why a step failed, in one line: a Failure's description (written for people), else the first
    line of the exception that the op raised (not Dagster's wrapper around it)."""
    data = event.step_failure_data
    if data.user_failure_data is not None and data.user_failure_data.description:
        return data.user_failure_data.description
    error = data.error
    if error is not None and error.cls_name == "DagsterExecutionStepExecutionError" and error.cause is not None:
        error = error.cause
    lines = error.message.strip().splitlines() if error is not None else []
    return lines[0] if lines else "no cause recorded"


def build_cdr_freshness_check(max_age: timedelta) -> dg.AssetChecksDefinition:
    @dg.asset_check(
        asset=CALL_RECORDS,
        name=CDR_FRESHNESS_CHECK,
        description=f"Fails when no CDR file was loaded in the last {max_age} (the voice platform or the "
        "landing transfer has stopped).",
    )
    def cdr_ingestion_fresh(warehouse: WarehouseResource) -> dg.AssetCheckResult:
        last = last_ingested_at(warehouse.get())
        now = datetime.now(timezone.utc)
        age = None if last is None else now - last
        return dg.AssetCheckResult(
            passed=age is not None and age <= max_age,
            severity=dg.AssetCheckSeverity.ERROR,
            metadata={
                "last_ingested_at": dg.MetadataValue.text(last.isoformat() if last else "never"),
                "age_minutes": dg.MetadataValue.int(int(age.total_seconds() // 60) if age is not None else -1),
                "max_age_minutes": dg.MetadataValue.int(int(max_age.total_seconds() // 60)),
            },
        )

    return cdr_ingestion_fresh


def cdr_freshness_job(check: dg.AssetChecksDefinition) -> dg.UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        "cdr_freshness_job",
        selection=dg.AssetSelection.checks(check),
        description="Runs the CDR-ingestion freshness check.",
    )


def cdr_freshness_hourly(job: dg.UnresolvedAssetJobDefinition) -> dg.ScheduleDefinition:
    return dg.ScheduleDefinition(
        name="cdr_freshness_hourly",
        job=job,
        cron_schedule="15 * * * *",
        execution_timezone="UTC",
        default_status=dg.DefaultScheduleStatus.RUNNING,
    )

"""Ops wiring that watches the rest of the code location: red means someone is told.

- `ops_run_failure_alert`: every failed run becomes one ops e-mail (a run Dagster will retry is
  e-mailed only if its last attempt fails).
- `ops_check_failure_alert`: every failed ERROR-severity asset check evaluation becomes one ops e-mail
  with the check's description, its offenders and its runbook section.
- `ops_tick_failure_alert`: a sensor or schedule whose last three ticks failed becomes one e-mail per
  failing streak (the next one after it has recovered).
- The CDR freshness check on `call_records` (Dagster's last-update freshness check, max age
  AISYST_CDR_FRESHNESS_HOURS) and the sensor that evaluates it.

The notifier sends them all (resources/notifier.py). The check and tick alerts keep what they have
told in their cursors (small JSON with named fields, readable in the UI), so a daemon restart neither
repeats nor loses an e-mail; an e-mail that cannot be sent leaves the cursor where the next tick tries
again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Literal

import dagster as dg

from aisyst_pipelines.assets.common import RUNBOOK
from aisyst_pipelines.assets.ingestion import CALL_RECORDS
from aisyst_pipelines.mail import DeliveryError
from resources import NotifierResource

# The name Dagster's freshness-check factory gives its check (jobs/ingestion.py leaves it out of the
# per-file runs: it is about the landing feed, not about one file).
CDR_FRESHNESS_CHECK = "freshness_check"
CDR_FRESHNESS_SENSOR = "cdr_freshness_sensor"
FAILING_TICKS = 3  # a sensor or schedule failing this many ticks in a row is e-mailed
MAX_RUNS_PER_TICK = 200  # finished runs whose checks one tick of ops_check_failure_alert reads
TICK_RUNBOOK = f"{RUNBOOK}#a-sensor-or-schedule-keeps-failing"
CHECK_RUNBOOK = f"{RUNBOOK}#failed-checks-ops_check_failure_alert"
# Checks Dagster builds (no `runbook` in their metadata): their sections.
RUNBOOK_OF_CHECK = {CDR_FRESHNESS_CHECK: f"{RUNBOOK}#cdr_freshness"}


def run_failure_text(job_name: str, run_id: str, message: str) -> str:
    return (
        f"The Dagster run {run_id} of job {job_name} failed.\n\n"
        f"{message}\n\n"
        f"Runbook: docs/operations.md, section for {job_name}. Run details: Dagster UI, Runs, {run_id}.\n"
    )


@dg.run_failure_sensor(
    name="ops_run_failure_alert",
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="E-mails ops (the notifier's ops recipients) once for every failed run of this code location; "
    "a run that Dagster retries (tag dagster/max_retries) only when its last attempt fails.",
)
def ops_run_failure_alert(context: dg.RunFailureSensorContext, notifier: NotifierResource) -> None:
    run = context.dagster_run
    if will_be_retried(context.instance, run.tags):
        context.log.info(f"run {run.run_id} of {run.job_name} failed and will be retried: no e-mail for this attempt")
        return
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


def will_be_retried(instance: dg.DagsterInstance, tags: Mapping[str, str]) -> bool:
    """Whether Dagster's run retries (instance `run_retries`) start another attempt of a failed run
    with these tags: `dagster/max_retries` (else the instance's default) above `dagster/retry_number`."""
    if not instance.run_retries_enabled:
        return False
    max_retries = int(tags.get("dagster/max_retries", instance.run_retries_max_retries))
    return int(tags.get("dagster/retry_number", "0")) < max_retries


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


# --- CDR freshness ----------------------------------------------------------------------------------


def cdr_freshness_checks(max_age: timedelta) -> Sequence[dg.AssetChecksDefinition]:
    """Fails (ERROR) when call_records has not been materialized (a landing file loaded, or re-delivered)
    for longer than `max_age`: the voice platform or the landing transfer has stopped."""
    return dg.build_last_update_freshness_checks(
        assets=[CALL_RECORDS], lower_bound_delta=max_age, severity=dg.AssetCheckSeverity.ERROR
    )


def cdr_freshness_sensor(checks: Sequence[dg.AssetChecksDefinition]) -> dg.SensorDefinition:
    """Dagster's sensor for freshness checks: evaluates them when they may have turned overdue."""
    return dg.build_sensor_for_freshness_checks(
        freshness_checks=checks, name=CDR_FRESHNESS_SENSOR, minimum_interval_seconds=300,
        default_status=dg.DefaultSensorStatus.RUNNING,
    )


# --- failed checks ----------------------------------------------------------------------------------


@dataclass
class CheckAlertCursor:
    """Storage ids of the last RUN_SUCCESS / RUN_FAILURE events whose runs' checks were read."""

    after_run_success_event: int = 0
    after_run_failure_event: int = 0

    @classmethod
    def parse(cls, text: str | None) -> "CheckAlertCursor | None":
        return cls(**json.loads(text)) if text else None

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


RunEnd = Literal[dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.RUN_FAILURE]
RUN_END_EVENTS: dict[str, RunEnd] = {
    "after_run_success_event": dg.DagsterEventType.RUN_SUCCESS,
    "after_run_failure_event": dg.DagsterEventType.RUN_FAILURE,
}


@dg.sensor(
    name="ops_check_failure_alert",
    minimum_interval_seconds=30,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="E-mails ops once for every failed ERROR-severity asset check evaluation (the check's "
    "description, its offenders, the runbook section), read from the runs that finished since its cursor.",
)
def ops_check_failure_alert(context: dg.SensorEvaluationContext, notifier: NotifierResource) -> dg.SensorResult:
    instance = context.instance
    cursor = CheckAlertCursor.parse(context.cursor)
    if cursor is None:  # first tick: start from now, the past was seen in the UI
        cursor = CheckAlertCursor(**{name: _latest_storage_id(instance, kind) for name, kind in RUN_END_EVENTS.items()})
        return dg.SensorResult(cursor=cursor.dump(), skip_reason="started watching check evaluations from now")
    sent = 0
    for name, kind in RUN_END_EVENTS.items():
        records = instance.fetch_run_status_changes(
            dg.RunStatusChangeRecordsFilter(kind, after_storage_id=getattr(cursor, name)), limit=MAX_RUNS_PER_TICK, ascending=True
        ).records
        for record in records:
            try:
                sent += alert_failed_checks(instance, notifier, record.run_id, context.repository_def)
            except DeliveryError as error:  # this run again next tick
                context.log.warning(f"ops e-mail about a failed check of run {record.run_id} not sent, retried next tick: {error}")
                return dg.SensorResult(cursor=cursor.dump(), skip_reason=f"e-mail not sent: {error}")
            setattr(cursor, name, record.storage_id)
    if not sent:
        return dg.SensorResult(cursor=cursor.dump(), skip_reason="no failed ERROR check in the runs finished since the last tick")
    context.log.info(f"{sent} ops e-mail(s) about failed checks sent")
    return dg.SensorResult(cursor=cursor.dump())


def _latest_storage_id(instance: dg.DagsterInstance, kind: RunEnd) -> int:
    records = instance.fetch_run_status_changes(kind, limit=1, ascending=False).records
    return records[0].storage_id if records else 0


def alert_failed_checks(
    instance: dg.DagsterInstance, notifier: NotifierResource, run_id: str, repository: dg.RepositoryDefinition | None
) -> int:
    """One ops e-mail per failed ERROR check evaluation of the run; the number sent."""
    entries = instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
    failed = [
        evaluation for record in entries
        if (evaluation := record.event_log_entry.asset_check_evaluation) is not None
        and not evaluation.passed and evaluation.severity == dg.AssetCheckSeverity.ERROR
    ]
    if not failed:
        return 0
    run = instance.get_run_by_id(run_id)
    for evaluation in failed:
        notifier.send_ops_alert(
            subject=f"[aisyst] check failed: {evaluation.asset_key.to_user_string()} {evaluation.check_name}",
            text=check_failure_text(evaluation, run, _check_description(repository, evaluation.asset_check_key)),
        )
    return len(failed)


def check_failure_text(evaluation: dg.AssetCheckEvaluation, run: dg.DagsterRun | None, described: str | None) -> str:
    metadata = evaluation.metadata
    where = f"run {run.run_id} of job {run.job_name}" if run else "a run"
    partition = run.tags.get("dagster/partition") if run else None
    lines = [
        f"The ERROR check {evaluation.check_name} on {evaluation.asset_key.to_user_string()} failed in {where}"
        + (f" (partition {partition})" if partition else "") + ".",
        "",
    ]
    if described:
        lines += [f"What it checks: {described}"]
    if evaluation.description:
        lines += [f"Result: {evaluation.description}"]
    figures = [f"- {key}: {value.value}" for key, value in metadata.items()
               if key not in ("offenders", "runbook") and isinstance(value.value, (int, float, str)) and "\n" not in str(value.value)]
    if figures:
        lines += ["", *figures]
    if "offenders" in metadata:
        lines += ["", "Top offenders:", str(metadata["offenders"].value)]
    runbook = str(metadata["runbook"].value) if "runbook" in metadata else RUNBOOK_OF_CHECK.get(evaluation.check_name, CHECK_RUNBOOK)
    lines += ["", f"Runbook: {runbook}"]
    lines += [f"Run details: Dagster UI, Runs, {run.run_id}."] if run else []
    lines += [f"The check's metadata: Dagster UI, Assets, {evaluation.asset_key.to_user_string()}, Checks."]
    return "\n".join(lines) + "\n"


def _check_description(repository: dg.RepositoryDefinition | None, key: dg.AssetCheckKey) -> str | None:
    """The check's own description (its spec), from the code location's definitions."""
    if repository is None:
        return None
    checks = repository.asset_checks_defs_by_key.get(key)
    specs = list(checks.check_specs) if checks else []
    assets = repository.assets_defs_by_key.get(key.asset_key)
    specs += list(assets.check_specs) if assets else []
    return next((spec.description for spec in specs if spec.key == key and spec.description), None)


# --- failing sensors and schedules ----------------------------------------------------------------


@dataclass
class TickAlertCursor:
    """The sensors and schedules in a failing streak that ops were told about, with when it began."""

    failing_since: dict[str, str] = field(default_factory=dict)  # "sensor cdr_files_sensor" -> ISO time

    @classmethod
    def parse(cls, text: str | None) -> "TickAlertCursor":
        return cls(**json.loads(text)) if text else cls()

    def dump(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


@dg.sensor(
    name="ops_tick_failure_alert",
    minimum_interval_seconds=60,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description=f"E-mails ops once when a sensor or schedule has failed {FAILING_TICKS} ticks in a row, and "
    "again only after it has recovered and started failing anew. Cursor: the failing streaks told about.",
)
def ops_tick_failure_alert(context: dg.SensorEvaluationContext, notifier: NotifierResource) -> dg.SensorResult:
    instance = context.instance
    cursor = TickAlertCursor.parse(context.cursor)
    sent: list[str] = []
    for state in instance.all_instigator_state():
        if not state.is_running:
            continue
        name = f"{state.instigator_type.value.lower()} {state.instigator_name}"
        ticks = [
            tick for tick in instance.get_ticks(state.instigator_origin_id, state.selector_id, limit=FAILING_TICKS + 2)
            if tick.status.value != "STARTED"  # an evaluation in progress says nothing yet
        ][:FAILING_TICKS]
        if ticks and ticks[0].status.value != "FAILURE":
            cursor.failing_since.pop(name, None)  # recovered: the next streak is told again
            continue
        streak = len(ticks) == FAILING_TICKS and all(tick.status.value == "FAILURE" for tick in ticks)
        if not streak or name in cursor.failing_since:
            continue
        since = datetime.fromtimestamp(ticks[-1].timestamp, timezone.utc)
        error = tick_error_text(ticks[0].error)
        try:
            notifier.send_ops_alert(
                subject=f"[aisyst] {name} failing: {FAILING_TICKS} ticks in a row",
                text=(
                    f"The {name} of the aisyst_pipelines code location has failed its last {FAILING_TICKS} ticks "
                    f"(since {since:%Y-%m-%d %H:%M:%S} UTC). Last error:\n\n{error}\n\n"
                    f"Runbook: {TICK_RUNBOOK}. Ticks: Dagster UI, Automation, {state.instigator_name}.\n"
                    "No further e-mail about it until it has recovered.\n"
                ),
            )
        except DeliveryError as error_sending:
            context.log.warning(f"ops e-mail about the failing {name} not sent, retried next tick: {error_sending}")
            continue
        cursor.failing_since[name] = since.isoformat()
        sent.append(name)
    if not sent:
        return dg.SensorResult(cursor=cursor.dump(), skip_reason="no new failing streak")
    return dg.SensorResult(cursor=cursor.dump())


def tick_error_text(error: object) -> str:
    """A tick's error and its causes (Dagster wraps the sensor's own exception), without the stacks."""
    lines: list[str] = []
    while error is not None:
        message = str(getattr(error, "message", "")).strip()
        lines.append(message if not lines else f"caused by: {message}")
        error = getattr(error, "cause", None)
    return "\n".join(lines) or "no error recorded"

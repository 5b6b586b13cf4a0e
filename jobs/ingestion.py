"""CDR ingestion in Dagster: the job, the landing-directory sensor that triggers it, and one pass of
both for `aisyst ingest`.

The sensor (`cdr_files_sensor`, every ~30 s) requests one run of `cdr_ingest` per new file in the
landing directory; which files are new, the cursor and the entries refused are
`services.ingestion.scan_landing`'s (the cursor format and its guarantees are described there and in
docs/ingestion.md). Run keys are the files' delivery keys (`sha256:size:change time`): Dagster never
repeats a run key, so a file is requested once per delivery, while a re-delivery gets a new run. A
file whose content is already in cdr_files is not requested; the sensor records an observation of
`call_records` instead, so the re-delivery shows in the UI. A file that still changes after the sensor
hashed it fails its run (sha256 mismatch) and is requested again under its new change time.
"""


from dataclasses import dataclass
from pathlib import Path

import dagster as dg

from aisyst_pipelines.assets.ingestion import CALL_RECORDS, LOAD_OP_NAME, REJECT_SHARE_CHECK_NAME, USAGE_DAILY
from aisyst_pipelines.cdr import forced_format_for
from aisyst_pipelines.deployment import Deployment, DeploymentError
from aisyst_pipelines.services.ingestion import LandingCursor, NewFile, printable, scan_landing, shown_path
from aisyst_pipelines.warehouse.cdr_store import FILE_FAILED
from jobs.cursors import state_of, utc_time, with_readable
from jobs.ops import CDR_FRESHNESS_CHECK, step_failure_cause
from resources import NotifierResource, WarehouseResource
from resources.ingestion import IngestionConfig

JOB_NAME = "cdr_ingest"
SENSOR_NAME = "cdr_files_sensor"
SENSOR_INTERVAL_SECONDS = 30
# The check's op name in run config (asset checks run as ops named <asset>_<check>).
REJECT_SHARE_CHECK_OP = f"{CALL_RECORDS.to_python_identifier()}_{REJECT_SHARE_CHECK_NAME}"

cdr_ingest_job = dg.define_asset_job(
    JOB_NAME,
    # The hourly freshness check (jobs/ops.py) is about the landing feed, not about one file: not run here.
    selection=dg.AssetSelection.assets(CALL_RECORDS, USAGE_DAILY)
    - dg.AssetSelection.checks(dg.AssetCheckKey(CALL_RECORDS, CDR_FRESHNESS_CHECK)),
    description="Load one landing CDR file (run config: path, sha256, forced format) into call_records and "
    "usage_daily in one transaction, then check its reject share.",
)


def run_request_for(new: NewFile, ingestion: IngestionConfig) -> dg.RunRequest:
    path = new.file.path
    landing_dir = Path(ingestion.landing_dir)
    return dg.RunRequest(
        run_key=new.delivery_key,
        run_config={
            "ops": {
                LOAD_OP_NAME: {"config": {"path": str(path), "sha256": new.sha256, "forced_format": forced_format_for(path, landing_dir)}},
                REJECT_SHARE_CHECK_OP: {"config": {"max_reject_share": ingestion.max_reject_share}},
            }
        },
        tags={"aisyst/cdr_file": shown_path(str(path), landing_dir)[-200:], "aisyst/cdr_sha256": new.sha256 or "unreadable"},
    )


def build_cdr_files_sensor(interval_seconds: int = SENSOR_INTERVAL_SECONDS) -> dg.SensorDefinition:
    """The sensor, ticking at most every `interval_seconds` (definitions.py: AISYST_SENSOR_INTERVAL_SECONDS)."""

    @dg.sensor(
        name=SENSOR_NAME,
        target=cdr_ingest_job,
        minimum_interval_seconds=interval_seconds,
        default_status=dg.DefaultSensorStatus.RUNNING,
        description="Requests one cdr_ingest run per new file in the landing directory (sub-folders canonical, "
        "twilio, asterisk force the format). Files whose content is already loaded are not requested; entries "
        "that cannot be loaded (a name that is not UTF-8, a symlink leading outside, a named pipe) are "
        "recorded and e-mailed to ops once.",
    )
    def cdr_files_sensor(
        context: dg.SensorEvaluationContext, warehouse: WarehouseResource, notifier: NotifierResource, ingestion: IngestionConfig
    ) -> dg.SensorResult:
        return landing_tick(context, warehouse, notifier, ingestion)

    return cdr_files_sensor


def landing_tick(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, notifier: NotifierResource, ingestion: IngestionConfig
) -> dg.SensorResult:
    landing_dir = Path(ingestion.landing_dir)
    if not landing_dir.is_dir():
        return dg.SensorResult(skip_reason=f"landing directory {landing_dir} does not exist", cursor=context.cursor)
    scan = scan_landing(
        warehouse.get(), notifier, landing_dir, LandingCursor.loads(state_of(context.cursor)),
        request=lambda new: run_request_for(new, ingestion), log=context.log,
    )
    observations = [
        _observation("already_loaded", printable(n.file.path), sha256=n.sha256) for n in scan.already_loaded
    ] + [
        _observation("failed", r.path, reason=r.reason, cdr_files=FILE_FAILED if r.failed_row else "no row") for r in scan.refusals
    ]
    if not scan.requests:
        refused = len(scan.refusals)
        refused_now = f"; {refused} entr{'y' if refused == 1 else 'ies'} not loaded (see the log)" if refused else ""
        return dg.SensorResult(skip_reason=f"no new CDR files{refused_now}", cursor=readable_cursor(scan.cursor), asset_events=observations)
    return dg.SensorResult(run_requests=scan.requests, cursor=readable_cursor(scan.cursor), asset_events=observations)


def readable_cursor(cursor: LandingCursor) -> str:
    """The landing cursor with what it means in words (jobs/cursors.py)."""
    return with_readable(cursor.dumps(), {
        "newest_file_change_seen": utc_time(cursor.watermark_ns / 1e9) if cursor.watermark_ns else None,
        "files_kept_for_the_overlap": len(cursor.recent),
        "entries_refused": len(cursor.refused),
        "ops_alerts_not_yet_sent": len(cursor.unalerted),
    })


cdr_files_sensor = build_cdr_files_sensor()


def _observation(outcome: str, path: str, **metadata: str) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=CALL_RECORDS, metadata={"outcome": outcome, "file": dg.MetadataValue.path(path), **metadata}
    )


# --- what the sensor's ticks and their runs did, for `aisyst ingest` and the demo ---------------------


@dataclass(frozen=True)
class FileOutcome:
    file: str
    status: str  # loaded, skipped, failed
    detail: str  # for a failed file: the cause, in one line
    run_id: str | None = None
    check_passed: bool | None = None
    failed_row: bool = False  # a cdr_files row with status 'failed' records the file

    @property
    def details_at(self) -> str:
        """Where a failure is described in full."""
        places = ([f"Dagster run {self.run_id}"] if self.run_id else []) + (["cdr_files"] if self.failed_row else [])
        return " / ".join(places) or "the ops alert"


def landing_outcomes(deployment: Deployment, *, since: float, after: float | None = None) -> list[FileOutcome]:
    """What the daemon's ticks of `cdr_files_sensor` since `since` (a time.time()) did, up to the first
    tick that started after `after` (default: `since`) and the runs they launched, once finished: one
    outcome per file. The daemon's own cursor and run keys decide what is new."""
    ticks = deployment.wait_for_ticks(SENSOR_NAME, since=since, after=since if after is None else after)
    outcomes: list[FileOutcome] = []
    for tick in ticks:
        if tick.status == "FAILURE":
            raise DeploymentError(f"a tick of {SENSOR_NAME} failed: {tick.error}")
        records = deployment.instance.fetch_observations(
            dg.AssetRecordsFilter(asset_key=CALL_RECORDS, after_timestamp=tick.timestamp, before_timestamp=tick.end_timestamp),
            limit=10_000, ascending=True,
        ).records
        for record in records:
            observation = record.event_log_entry.asset_observation
            metadata = {key: value.value for key, value in (observation.metadata if observation else {}).items()}
            if metadata.get("outcome") == "failed":
                outcomes.append(FileOutcome(str(metadata["file"]), "failed", str(metadata["reason"]),
                                            failed_row=metadata["cdr_files"] == FILE_FAILED))
            elif metadata.get("outcome") == "already_loaded":
                outcomes.append(FileOutcome(str(metadata["file"]), "skipped", "content already loaded"))
    run_ids = [run_id for tick in ticks for run_id in tick.run_ids]
    outcomes += [_outcome(deployment, run) for run in deployment.wait_for_runs(run_ids)]
    return outcomes


def _outcome(deployment: Deployment, run: dg.DagsterRun) -> FileOutcome:
    file = str(run.run_config["ops"][LOAD_OP_NAME]["config"]["path"])  # type: ignore[index]
    if run.status != dg.DagsterRunStatus.SUCCESS:
        return _failure(deployment, file, run.run_id)
    materialization = next(m for m in deployment.run_materializations(run.run_id) if m.asset_key == CALL_RECORDS)
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    checks = deployment.run_check_evaluations(run.run_id)
    check_passed = all(check.passed for check in checks) if checks else None
    if metadata["outcome"] == "skipped":
        return FileOutcome(file, "skipped", "content already loaded", run.run_id, check_passed)
    reasons = ", ".join(
        f"{key.removeprefix('rejected_')} {value}" for key, value in metadata.items() if key.startswith("rejected_") and value
    )
    detail = (
        f"{metadata['format']}: {metadata['rows_total']} rows, {metadata['rows_loaded']} loaded, "
        f"{metadata['rows_duplicate']} duplicate, {metadata['rows_rejected']} rejected" + (f" ({reasons})" if reasons else "")
    )
    if metadata["unmapped_accounts"]:
        detail += f"; {metadata['unmapped_accounts']} account(s) without a Stripe customer"
    if check_passed is False:
        detail += f"; check {REJECT_SHARE_CHECK_NAME} FAILED (reject share {metadata['reject_share']:.2%})"
    return FileOutcome(file, "loaded", detail, run.run_id, check_passed)


def _failure(deployment: Deployment, file: str, run_id: str) -> FileOutcome:
    """A failed run as one line: the cause the load gave (Failure metadata `reason`), else the step's
    cause; the full error and stack stay in the run's logs."""
    for event in deployment.run_step_failures(run_id):
        data = event.step_failure_data
        metadata = data.user_failure_data.metadata if data.user_failure_data else {}
        if "reason" in metadata:
            recorded = "cdr_files" in metadata and metadata["cdr_files"].value == FILE_FAILED
            return FileOutcome(file, "failed", str(metadata["reason"].value), run_id, failed_row=recorded)
        return FileOutcome(file, "failed", step_failure_cause(event), run_id)
    return FileOutcome(file, "failed", "the run failed (canceled, or its process died: see the run's logs)", run_id)

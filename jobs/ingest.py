"""CDR ingestion: the job, the landing-directory sensor that triggers it, and one pass of both for `aisyst ingest`.

The sensor (`cdr_files_sensor`, every ~30 s) lists the landing directory and requests one run of
`cdr_ingest` per new file. Its cursor is a watermark: the highest change time of the files it has
dealt with, plus the few files within a small overlap window below it (so files landing in the same
instant are neither missed nor hashed twice). Only files above the watermark are hashed, so an
unchanged landing directory costs one directory listing per tick.

A file's change time is max(mtime, ctime): a file copied or moved in with a preserved mtime
(`cp -p`, `rsync -t`, `mv`) still gets a fresh ctime, so it is never mistaken for an old one.

Run keys are `sha256:size:change time`: Dagster never repeats a run key, so a file is requested
once per delivery, while a re-delivery (the file copied in again or touched after a failed run)
gets a new key and a new run. A file whose sha256 is already in cdr_files is never requested; the
sensor records an observation of `call_records` instead, so the re-delivery shows in the UI.

Writers should land files atomically (write `name.part`, then rename): names starting with "." and
the usual partial-download suffixes are ignored. A file that still changes after the sensor hashed
it fails its run (sha256 mismatch) and is requested again under its new change time.
"""


import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import dagster as dg
from dagster._core.storage.tags import RUN_KEY_TAG, SENSOR_NAME_TAG

from aisyst_pipelines.assets.cdr import (
    CALL_RECORDS,
    LOAD_OP_NAME,
    REJECT_SHARE_CHECK_NAME,
    USAGE_DAILY,
    file_sha256,
)
from aisyst_pipelines.cdr import forced_format_for
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse.cdr_store import loaded_sha256s
from jobs.ops import CDR_FRESHNESS_CHECK
from jobs.sensor_once import evaluate_sensor_once
from resources import WarehouseResource

JOB_NAME = "cdr_ingest"
SENSOR_NAME = "cdr_files_sensor"
SENSOR_INTERVAL_SECONDS = 30
IGNORED_SUFFIXES = (".part", ".partial", ".tmp", ".crdownload", ".filepart", ".swp")
# Files whose change times are this close below the watermark are re-listed (not re-hashed): a
# coarse file-system clock can give a later file the same or a slightly earlier time.
OVERLAP_NS = 5 * 1_000_000_000
# Per tick at most this much hashing, so that an evaluation stays far below Dagster's 60 s limit;
# the next tick continues from the watermark.
MAX_FILES_PER_TICK = 200
MAX_BYTES_PER_TICK = 4 * 1024**3
# Where `aisyst ingest` keeps its own cursor in the Dagster instance (key-value storage).
CLI_CURSOR_KEY = f"aisyst/{SENSOR_NAME}/cli_cursor"
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


# --- the landing directory ------------------------------------------------------------------------


@dataclass(frozen=True)
class LandingFile:
    path: Path
    size: int
    changed_ns: int  # max(mtime, ctime) in ns since the epoch


def list_landing_files(landing_dir: Path) -> list[LandingFile]:
    """Regular files under the landing directory (sub-folders included), minus hidden and partial ones."""
    files: list[LandingFile] = []
    for folder, subfolders, names in os.walk(landing_dir):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in sorted(names):
            if name.startswith(".") or name.lower().endswith(IGNORED_SUFFIXES):
                continue
            path = Path(folder) / name
            try:
                stat = path.stat()
            except FileNotFoundError:  # renamed or removed while listing
                continue
            if path.is_file():
                files.append(LandingFile(path=path, size=stat.st_size, changed_ns=max(stat.st_mtime_ns, stat.st_ctime_ns)))
    return files


@dataclass
class LandingCursor:
    """The sensor's cursor: watermark plus the files seen within the overlap window below it."""

    watermark_ns: int = 0
    recent: dict[str, tuple[int, int]] = field(default_factory=dict)  # path → (size, changed_ns)

    def dumps(self) -> str:
        return json.dumps({"watermark_ns": self.watermark_ns, "recent": {p: list(v) for p, v in sorted(self.recent.items())}})

    @classmethod
    def loads(cls, text: str | None) -> "LandingCursor":
        """An absent or unreadable cursor starts over: every file is hashed once more, and files
        already in cdr_files are not requested again, so starting over is safe."""
        if not text:
            return cls()
        try:
            data = json.loads(text)
            return cls(
                watermark_ns=int(data["watermark_ns"]),
                recent={str(path): (int(size), int(changed)) for path, (size, changed) in data.get("recent", {}).items()},
            )
        except (ValueError, KeyError, TypeError):
            return cls()


@dataclass(frozen=True)
class NewFile:
    file: LandingFile
    sha256: str  # "" when the file could not be read (its run then fails with the reason)


@dataclass
class LandingPlan:
    to_load: list[NewFile]
    already_loaded: list[NewFile]  # content already in cdr_files (or twice in this tick)
    cursor: LandingCursor
    deferred: int  # new files left for the next tick (per-tick hashing budget)


def plan_landing(
    files: Sequence[LandingFile],
    cursor: LandingCursor,
    loaded: Callable[[Iterable[str]], set[str]],
    *,
    max_files: int = MAX_FILES_PER_TICK,
    max_bytes: int = MAX_BYTES_PER_TICK,
) -> LandingPlan:
    """Decide which files to request: the pure core of the sensor (`loaded` asks cdr_files)."""
    floor = cursor.watermark_ns - OVERLAP_NS
    candidates = sorted(
        (f for f in files if f.changed_ns >= floor and cursor.recent.get(str(f.path)) != (f.size, f.changed_ns)),
        key=lambda f: (f.changed_ns, str(f.path)),
    )
    taken: list[NewFile] = []
    hashed_bytes = 0
    for candidate in candidates:
        if taken and (len(taken) >= max_files or hashed_bytes + candidate.size > max_bytes):
            break
        try:
            sha256 = file_sha256(candidate.path)
        except FileNotFoundError:
            continue  # gone since the listing
        except OSError:
            sha256 = ""
        hashed_bytes += candidate.size
        taken.append(NewFile(candidate, sha256))

    already = loaded(n.sha256 for n in taken if n.sha256)
    to_load: list[NewFile] = []
    already_loaded: list[NewFile] = []
    requested: set[str] = set()
    for new in taken:
        if new.sha256 in already or new.sha256 in requested:
            already_loaded.append(new)
        else:
            to_load.append(new)
            if new.sha256:
                requested.add(new.sha256)

    watermark = max([cursor.watermark_ns, *(n.file.changed_ns for n in taken)])
    recent = {
        path: seen for path, seen in cursor.recent.items() if seen[1] >= watermark - OVERLAP_NS
    } | {str(n.file.path): (n.file.size, n.file.changed_ns) for n in taken if n.file.changed_ns >= watermark - OVERLAP_NS}
    return LandingPlan(
        to_load=to_load,
        already_loaded=already_loaded,
        cursor=LandingCursor(watermark_ns=watermark, recent=recent),
        deferred=len(candidates) - len(taken),
    )


def run_request_for(new: NewFile, settings: Settings) -> dg.RunRequest:
    path = new.file.path
    forced = forced_format_for(path, settings.landing_dir)
    key = f"{new.sha256 or 'unreadable'}:{new.file.size}:{new.file.changed_ns}"
    try:
        shown = str(path.relative_to(settings.landing_dir))
    except ValueError:
        shown = str(path)
    return dg.RunRequest(
        run_key=key,
        run_config={
            "ops": {
                LOAD_OP_NAME: {"config": {"path": str(path), "sha256": new.sha256, "forced_format": forced}},
                REJECT_SHARE_CHECK_OP: {"config": {"max_reject_share": settings.cdr_max_reject_share}},
            }
        },
        tags={"aisyst/cdr_file": shown[-200:], "aisyst/cdr_sha256": new.sha256 or "unreadable"},
    )


@dg.sensor(
    name=SENSOR_NAME,
    target=cdr_ingest_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests one cdr_ingest run per new file in the landing directory (sub-folders canonical, "
    "twilio, asterisk force the format). Files whose content is already loaded are not requested.",
)
def cdr_files_sensor(context: dg.SensorEvaluationContext, warehouse: WarehouseResource) -> dg.SensorResult:
    settings = Settings.from_env()
    if not settings.landing_dir.is_dir():
        return dg.SensorResult(skip_reason=f"landing directory {settings.landing_dir} does not exist", cursor=context.cursor)
    plan = plan_landing(
        list_landing_files(settings.landing_dir),
        LandingCursor.loads(context.cursor),
        lambda shas: loaded_sha256s(warehouse.get(), shas),
    )
    observations = [
        dg.AssetObservation(
            asset_key=CALL_RECORDS,
            metadata={"outcome": "already_loaded", "file": dg.MetadataValue.path(str(n.file.path)), "sha256": n.sha256},
        )
        for n in plan.already_loaded
    ]
    for new in plan.already_loaded:
        context.log.info(f"{new.file.path}: content already loaded (sha256 {new.sha256[:12]}…), not requested")
    if plan.deferred:
        context.log.info(f"{plan.deferred} more new file(s) left for the next tick")
    requests = [run_request_for(new, settings) for new in plan.to_load]
    if not requests:
        return dg.SensorResult(skip_reason="no new CDR files", cursor=plan.cursor.dumps(), asset_events=observations)
    return dg.SensorResult(run_requests=requests, cursor=plan.cursor.dumps(), asset_events=observations)


defs = dg.Definitions(jobs=[cdr_ingest_job], sensors=[cdr_files_sensor])


# --- one pass for `aisyst ingest` --------------------------------------------------------------------


@dataclass(frozen=True)
class FileOutcome:
    file: str
    status: str  # loaded, skipped, failed
    detail: str
    run_id: str | None = None
    check_passed: bool | None = None


def ingest_once(instance: dg.DagsterInstance, definitions: dg.Definitions) -> list[FileOutcome]:
    """Evaluate `cdr_files_sensor` once and execute the runs it requests, in this process.

    The runs go into `instance` (the persistent one under DAGSTER_HOME), tagged with the sensor's
    name and run key exactly as the daemon would tag them, so `dagster dev` shows them and the daemon
    never repeats a file this pass already ran. This pass keeps its own cursor in the instance's
    key-value storage: the daemon's cursor belongs to the running code location.
    """
    job_def = definitions.resolve_job_def(JOB_NAME)
    tick = evaluate_sensor_once(instance, definitions, SENSOR_NAME, CLI_CURSOR_KEY)
    outcomes: list[FileOutcome] = []
    for event in tick.asset_events:
        instance.report_runless_asset_event(event)
        outcomes.append(FileOutcome(str(event.metadata["file"].value), "skipped", "content already loaded"))

    for request in tick.run_requests or []:
        file = request.run_config["ops"][LOAD_OP_NAME]["config"]["path"]
        tags = {**request.tags, RUN_KEY_TAG: str(request.run_key), SENSOR_NAME_TAG: SENSOR_NAME}
        earlier = instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: str(request.run_key), SENSOR_NAME_TAG: SENSOR_NAME}), limit=1)
        if earlier:
            outcomes.append(FileOutcome(file, "skipped", f"already requested (run {earlier[0].run_id}, {earlier[0].status.value})", earlier[0].run_id))
            continue
        run_config = {**request.run_config, "loggers": {"console": {"config": {"log_level": "WARNING"}}}}  # a quiet terminal
        result = job_def.execute_in_process(run_config=run_config, instance=instance, tags=tags, raise_on_error=False)
        outcomes.append(_outcome(file, result))
    return outcomes


def _outcome(file: str, result: dg.ExecuteInProcessResult) -> FileOutcome:
    run_id = result.run_id
    if not result.success:
        failures = [event.step_failure_data.error for event in result.get_step_failure_events() if event.step_failure_data.error]
        message = failures[0].message.strip() if failures else "the run failed"
        return FileOutcome(file, "failed", message.splitlines()[0] if message else "the run failed", run_id)
    materialization = next(m for m in result.asset_materializations_for_node(LOAD_OP_NAME) if m.asset_key == CALL_RECORDS)
    metadata = {key: value.value for key, value in materialization.metadata.items()}
    checks = result.get_asset_check_evaluations()
    check_passed = all(check.passed for check in checks) if checks else None
    if metadata["outcome"] == "skipped":
        return FileOutcome(file, "skipped", "content already loaded", run_id, check_passed)
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
    return FileOutcome(file, "loaded", detail, run_id, check_passed)


def shown_path(file: str, landing_dir: Path) -> str:
    try:
        return str(Path(file).relative_to(landing_dir))
    except ValueError:
        return file


LOCAL_INSTANCE_CONFIG = """\
# Local Dagster instance of aisyst (written by `aisyst ingest`/`aisyst demo` when missing): SQLite
# storage in this folder. Production uses deploy/dagster.yaml (PostgreSQL) instead.
telemetry:
  enabled: false
"""


@contextmanager
def local_instance(settings: Settings) -> Iterator[dg.DagsterInstance]:
    """The persistent Dagster instance under settings.dagster_home (what `dagster dev` shows with the
    same DAGSTER_HOME). An instance folder without dagster.yaml gets the local one above."""
    settings.ensure_dirs()
    os.environ["DAGSTER_HOME"] = str(settings.dagster_home)
    config = settings.dagster_home / "dagster.yaml"
    if not config.exists():
        config.touch(mode=0o600)
        config.write_text(LOCAL_INSTANCE_CONFIG)
    with dg.DagsterInstance.get() as instance:
        yield instance


def ingest_pass(settings: Settings) -> list[FileOutcome]:
    """`aisyst ingest`: one pass against the persistent Dagster instance under settings.dagster_home."""
    from aisyst_pipelines.definitions import defs  # the code location imports this module

    # The sensor's per-file log lines belong in the UI's tick log; on a terminal the outcomes say it.
    dagster_logger = logging.getLogger("dagster")
    level = dagster_logger.level
    dagster_logger.setLevel(logging.WARNING)
    try:
        with local_instance(settings) as instance:
            return ingest_once(instance, defs())
    finally:
        dagster_logger.setLevel(level)

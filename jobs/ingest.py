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
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
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
from aisyst_pipelines.cdr.records import FORMATS
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.cdr_store import (
    FILE_FAILED,
    UNKNOWN_FORMAT,
    CdrFileIdentity,
    loaded_sha256s,
    record_failed_file,
)
from jobs.ops import CDR_FRESHNESS_CHECK, step_failure_cause
from jobs.sensor_once import evaluate_sensor_once, store_sensor_cursor
from resources import NotifierResource, WarehouseResource
from resources.notifier import DeliveryError

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
# An ops alert lists at most this many refused entries (the sensor's log has them all).
MAX_ALERTED_REFUSALS = 50
# While alerts cannot be sent, the cursor keeps at most this many refusals to alert about later.
MAX_UNALERTED_REFUSALS = 1000
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


@dataclass(frozen=True)
class LandingListing:
    files: list[LandingFile]
    # Entries the pipeline does not take and never reads, by printable path: why (symlinks leading
    # outside the landing directory, named pipes and other non-regular files, folders it cannot list).
    refused: dict[str, str]


def printable(path: str | Path) -> str:
    """A path as one readable line, whatever its name holds: bytes that are not UTF-8 as \\xNN
    (os.walk hands them over as surrogate escapes, which no database, log or e-mail can carry) and
    control characters escaped."""
    text = os.fsencode(path).decode("utf-8", "backslashreplace")
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def name_refusal(path: Path) -> str | None:
    """Why a run cannot be requested for this path, None when it can. A name that is not UTF-8 cannot
    go into run config, tags or the run storage (creating its run fails)."""
    try:
        str(path).encode("utf-8")
    except UnicodeEncodeError:
        return "the file name is not valid UTF-8, so no run can carry it: rename the file (UTF-8) to load it"
    return None


_NOT_REGULAR = {"p": "a named pipe (FIFO)", "s": "a socket", "c": "a character device", "b": "a block device"}


def list_landing_files(landing_dir: Path) -> LandingListing:
    """Regular files under the landing directory (sub-folders included), minus hidden and partial ones;
    and the entries refused without being read.

    Symlinks are followed only where they lead to a place inside the landing directory (a file linked
    twice is loaded once: its sha256 is the same). Symlinked folders are never entered (os.walk's
    default): one inside is listed where it really is, one outside is refused.
    """
    root = Path(os.path.realpath(landing_dir))
    files: list[LandingFile] = []
    refused: dict[str, str] = {}

    def unlistable(error: OSError) -> None:
        if not isinstance(error, FileNotFoundError):  # a folder removed while listing is no news
            refused[printable(error.filename)] = f"cannot list the folder: {error.strerror or error}"

    for folder, subfolders, names in os.walk(landing_dir, onerror=unlistable):
        subfolders[:] = sorted(name for name in subfolders if not name.startswith("."))
        for name in subfolders:
            outside = _outside_target(Path(folder) / name, root)
            if outside is not None:
                reason = f"symlink to a folder outside the landing directory ({outside}): not followed"
                refused[printable(Path(folder) / name)] = reason
        for name in sorted(names):
            if name.startswith(".") or name.lower().endswith(IGNORED_SUFFIXES):
                continue
            entry = _landing_entry(Path(folder) / name, root)
            if isinstance(entry, LandingFile):
                files.append(entry)
            elif entry is not None:
                refused[printable(Path(folder) / name)] = entry
    return LandingListing(files, refused)


def _outside_target(path: Path, root: Path) -> str | None:
    """Where a symlink leads when that is outside `root` (printable), else None."""
    if not path.is_symlink():
        return None
    target = Path(os.path.realpath(path))
    return None if target.is_relative_to(root) else printable(target)


def _landing_entry(path: Path, root: Path) -> LandingFile | str | None:
    """The file to consider, or why the entry is refused; None for an entry gone since the listing."""
    try:
        outside = _outside_target(path, root)
        if outside is not None:
            return f"symlink to a file outside the landing directory ({outside}): not read"
        status = path.stat()
    except FileNotFoundError:
        return "symlink to a file that does not exist" if path.is_symlink() else None
    except OSError as error:
        return f"cannot read the file's status: {error.strerror or error}"
    if not stat.S_ISREG(status.st_mode):
        return f"not a regular file but {_NOT_REGULAR.get(stat.filemode(status.st_mode)[0], 'a special file')}: not read"
    return LandingFile(path=path, size=status.st_size, changed_ns=max(status.st_mtime_ns, status.st_ctime_ns))


@dataclass
class LandingCursor:
    """The sensor's cursor: watermark plus the files seen within the overlap window below it; and the
    refused entries, so that ops are alerted about each once (and again while the alert is unsent)."""

    watermark_ns: int = 0
    recent: dict[str, tuple[int, int]] = field(default_factory=dict)  # path → (size, changed_ns)
    refused: dict[str, str] = field(default_factory=dict)  # printable path → reason, as last seen
    unalerted: dict[str, str] = field(default_factory=dict)  # refusals whose ops alert is not sent yet

    def dumps(self) -> str:
        return json.dumps({
            "watermark_ns": self.watermark_ns,
            "recent": {p: list(v) for p, v in sorted(self.recent.items())},
            "refused": dict(sorted(self.refused.items())),
            "unalerted": dict(sorted(self.unalerted.items())),
        })

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
                refused={str(path): str(reason) for path, reason in data.get("refused", {}).items()},
                unalerted={str(path): str(reason) for path, reason in data.get("unalerted", {}).items()},
            )
        except (ValueError, KeyError, TypeError, AttributeError):
            return cls()


@dataclass(frozen=True)
class NewFile:
    file: LandingFile
    sha256: str  # "" when the file could not be read (its run then fails with the reason)


@dataclass(frozen=True)
class RefusedFile:
    new: NewFile
    reason: str


@dataclass
class LandingPlan:
    to_load: list[NewFile]
    already_loaded: list[NewFile]  # content already in cdr_files (or twice in this tick)
    refused: list[RefusedFile]  # new files no run can be requested for (hashed, for their cdr_files row)
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
    refused: list[RefusedFile] = []
    requested: set[str] = set()
    for new in taken:
        reason = name_refusal(new.file.path)
        if reason is not None:
            refused.append(RefusedFile(new, reason))
        elif new.sha256 in already or new.sha256 in requested:
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
        refused=refused,
        cursor=replace(cursor, watermark_ns=watermark, recent=recent),
        deferred=len(candidates) - len(taken),
    )


def run_request_for(new: NewFile, settings: Settings) -> dg.RunRequest:
    path = new.file.path
    forced = forced_format_for(path, settings.landing_dir)
    key = f"{new.sha256 or 'unreadable'}:{new.file.size}:{new.file.changed_ns}"
    return dg.RunRequest(
        run_key=key,
        run_config={
            "ops": {
                LOAD_OP_NAME: {"config": {"path": str(path), "sha256": new.sha256, "forced_format": forced}},
                REJECT_SHARE_CHECK_OP: {"config": {"max_reject_share": settings.cdr_max_reject_share}},
            }
        },
        tags={"aisyst/cdr_file": shown_path(str(path), settings.landing_dir)[-200:], "aisyst/cdr_sha256": new.sha256 or "unreadable"},
    )


def record_refused_file(warehouse: Warehouse, refused: RefusedFile, settings: Settings) -> bool:
    """The failed cdr_files row of a refused file whose content could be read (its key); True if written."""
    new = refused.new
    if not new.sha256:
        return False
    forced = forced_format_for(new.file.path, settings.landing_dir)
    identity = CdrFileIdentity(
        path=printable(new.file.path), sha256=new.sha256, format=forced if forced in FORMATS else UNKNOWN_FORMAT,
        size_bytes=new.file.size,
    )
    return record_failed_file(warehouse, identity, refused.reason)


def alert_refusals(notifier: NotifierResource, refusals: dict[str, str], landing_dir: Path) -> None:
    """One ops e-mail about the landing entries the pipeline did not take. Raises DeliveryError."""
    listed = list(refusals.items())[:MAX_ALERTED_REFUSALS]
    lines = [f"  {shown_path(path, landing_dir)}: {reason}" for path, reason in listed]
    if len(refusals) > len(listed):
        lines.append(f"  … and {len(refusals) - len(listed)} more (the sensor's log lists them)")
    notifier.send_ops_alert(
        subject=f"[aisyst] {len(refusals)} landing entr{'y' if len(refusals) == 1 else 'ies'} not loaded",
        text=(
            f"cdr_files_sensor did not load these entries of the landing directory {printable(landing_dir)}:\n\n"
            + "\n".join(lines)
            + "\n\nNothing of these was loaded; the other files are loaded as usual. Those whose content could be read have a "
            "cdr_files row with status 'failed' and this reason.\n"
            "Runbook: docs/operations.md, section \"A landing file was not loaded\".\n"
        ),
    )


def report_refusals(
    context: dg.SensorEvaluationContext, notifier: NotifierResource, cursor: LandingCursor, seen: dict[str, str], landing_dir: Path
) -> tuple[dict[str, str], LandingCursor]:
    """Log and e-mail ops the refusals `seen` this tick that were not reported before (new, or with a
    new reason), plus those whose alert could not be sent yet. Returns the new ones and the cursor
    that remembers them."""
    new = {path: reason for path, reason in seen.items() if cursor.refused.get(path) != reason}
    for path, reason in new.items():
        context.log.warning(f"{path}: not loaded — {reason}")
    unalerted = dict(list((cursor.unalerted | new).items())[-MAX_UNALERTED_REFUSALS:])
    if unalerted:
        try:
            alert_refusals(notifier, unalerted, landing_dir)
            unalerted = {}
        except DeliveryError as error:
            context.log.warning(f"ops alert about {len(unalerted)} refused landing entries not sent, retried next tick: {error}")
    return new, replace(cursor, refused=seen, unalerted=unalerted)


@dg.sensor(
    name=SENSOR_NAME,
    target=cdr_ingest_job,
    minimum_interval_seconds=SENSOR_INTERVAL_SECONDS,
    default_status=dg.DefaultSensorStatus.RUNNING,
    description="Requests one cdr_ingest run per new file in the landing directory (sub-folders canonical, "
    "twilio, asterisk force the format). Files whose content is already loaded are not requested; entries "
    "that cannot be loaded (a name that is not UTF-8, a symlink leading outside, a named pipe) are "
    "recorded and e-mailed to ops once.",
)
def cdr_files_sensor(
    context: dg.SensorEvaluationContext, warehouse: WarehouseResource, notifier: NotifierResource
) -> dg.SensorResult:
    settings = Settings.from_env()
    if not settings.landing_dir.is_dir():
        return dg.SensorResult(skip_reason=f"landing directory {settings.landing_dir} does not exist", cursor=context.cursor)
    wh = warehouse.get()
    listing = list_landing_files(settings.landing_dir)
    plan = plan_landing(listing.files, LandingCursor.loads(context.cursor), lambda shas: loaded_sha256s(wh, shas))
    requests: list[dg.RunRequest] = []
    refused_files = list(plan.refused)
    for new in plan.to_load:
        try:
            requests.append(run_request_for(new, settings))
        except Exception as error:  # noqa: BLE001 - one file's problem must not cost the other files their runs
            refused_files.append(RefusedFile(new, f"no run could be requested: {type(error).__name__}: {error}"))
    recorded = {printable(r.new.file.path) for r in refused_files if record_refused_file(wh, r, settings)}
    seen = listing.refused | {printable(r.new.file.path): r.reason for r in refused_files}
    new_refusals, cursor = report_refusals(context, notifier, plan.cursor, seen, settings.landing_dir)

    observations = [
        _observation("already_loaded", printable(n.file.path), sha256=n.sha256) for n in plan.already_loaded
    ] + [
        _observation("failed", path, reason=reason, cdr_files=FILE_FAILED if path in recorded else "no row")
        for path, reason in new_refusals.items()
    ]
    for new in plan.already_loaded:
        context.log.info(f"{printable(new.file.path)}: content already loaded (sha256 {new.sha256[:12]}…), not requested")
    if plan.deferred:
        context.log.info(f"{plan.deferred} more new file(s) left for the next tick")
    if not requests:
        refused_now = f"; {len(new_refusals)} entr{'y' if len(new_refusals) == 1 else 'ies'} not loaded (see the log)" if new_refusals else ""
        return dg.SensorResult(skip_reason=f"no new CDR files{refused_now}", cursor=cursor.dumps(), asset_events=observations)
    return dg.SensorResult(run_requests=requests, cursor=cursor.dumps(), asset_events=observations)


def _observation(outcome: str, path: str, **metadata: str) -> dg.AssetObservation:
    return dg.AssetObservation(
        asset_key=CALL_RECORDS, metadata={"outcome": outcome, "file": dg.MetadataValue.path(path), **metadata}
    )


defs = dg.Definitions(jobs=[cdr_ingest_job], sensors=[cdr_files_sensor])


# --- one pass for `aisyst ingest` --------------------------------------------------------------------


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


def ingest_once(instance: dg.DagsterInstance, definitions: dg.Definitions) -> list[FileOutcome]:
    """Evaluate `cdr_files_sensor` once and execute the runs it requests, in this process.

    The runs go into `instance` (the persistent one under DAGSTER_HOME), tagged with the sensor's
    name and run key exactly as the daemon would tag them, so `dagster dev` shows them and the daemon
    never repeats a file this pass already ran. This pass keeps its own cursor in the instance's
    key-value storage: the daemon's cursor belongs to the running code location. As with the daemon,
    the cursor is stored only once every requested run exists: when one cannot be started, that file
    is reported failed, the others still run, and the next pass sees the file again.
    """
    job_def = definitions.resolve_job_def(JOB_NAME)
    with _quiet_sensor_log():
        tick = evaluate_sensor_once(instance, definitions, SENSOR_NAME, CLI_CURSOR_KEY)
    outcomes: list[FileOutcome] = []
    for event in tick.asset_events:
        instance.report_runless_asset_event(event)
        metadata = {key: value.value for key, value in event.metadata.items()}
        file = str(metadata["file"])
        if metadata["outcome"] == "failed":
            outcomes.append(FileOutcome(file, "failed", str(metadata["reason"]), failed_row=metadata["cdr_files"] == FILE_FAILED))
        else:
            outcomes.append(FileOutcome(file, "skipped", "content already loaded"))

    all_started = True
    for request in tick.run_requests or []:
        file = request.run_config["ops"][LOAD_OP_NAME]["config"]["path"]
        tags = {**request.tags, RUN_KEY_TAG: str(request.run_key), SENSOR_NAME_TAG: SENSOR_NAME}
        earlier = instance.get_runs(filters=dg.RunsFilter(tags={RUN_KEY_TAG: str(request.run_key), SENSOR_NAME_TAG: SENSOR_NAME}), limit=1)
        if earlier:
            outcomes.append(FileOutcome(file, "skipped", f"already requested (run {earlier[0].run_id}, {earlier[0].status.value})", earlier[0].run_id))
            continue
        run_config = {**request.run_config, "loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}  # the outcome says it
        try:
            result = job_def.execute_in_process(run_config=run_config, instance=instance, tags=tags, raise_on_error=False)
        except Exception as error:  # noqa: BLE001 - this file's run could not start; the others still run
            all_started = False
            detail = f"its run could not be started ({_one_line(error)}); the next pass tries again"
            outcomes.append(FileOutcome(file, "failed", detail))
            continue
        outcomes.append(_outcome(file, result))
    if all_started:
        store_sensor_cursor(instance, CLI_CURSOR_KEY, tick)
    return outcomes


@contextmanager
def _quiet_sensor_log() -> Iterator[None]:
    """The sensor's per-file log lines belong in the UI's tick log; on a terminal the outcomes say it,
    one line per file. (Its logger is not in logging's hierarchy, so only logging.disable reaches it;
    runs are not evaluated inside, so their events still reach the instance.)"""
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(logging.NOTSET)


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


def _outcome(file: str, result: dg.ExecuteInProcessResult) -> FileOutcome:
    run_id = result.run_id
    if not result.success:
        return _failure(file, result)
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


def _failure(file: str, result: dg.ExecuteInProcessResult) -> FileOutcome:
    """A failed run as one line: the cause the load gave (Failure metadata `reason`), else the step's
    cause; the full error and stack stay in the run's logs."""
    for event in result.get_step_failure_events():
        data = event.step_failure_data
        metadata = data.user_failure_data.metadata if data.user_failure_data else {}
        if "reason" in metadata:
            recorded = "cdr_files" in metadata and metadata["cdr_files"].value == FILE_FAILED
            return FileOutcome(file, "failed", str(metadata["reason"].value), result.run_id, failed_row=recorded)
        return FileOutcome(file, "failed", step_failure_cause(event), result.run_id)
    return FileOutcome(file, "failed", "the run failed", result.run_id)


def shown_path(file: str, landing_dir: Path) -> str:
    """A file as people see it: relative to the landing directory when inside, one printable line."""
    try:
        return printable(Path(file).relative_to(landing_dir))
    except ValueError:
        return printable(file)


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

    with local_instance(settings) as instance:
        return ingest_once(instance, defs())

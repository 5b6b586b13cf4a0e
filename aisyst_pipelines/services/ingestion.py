"""CDR ingestion (DESIGN.md §2.1): loading one landing file, and deciding which files to load.

**One file** (`load_landing_file`): hash the file as it is now (a file that changed since the sensor
hashed it is not loaded: the sensor requests the new version), detect its format, and load it into
`call_records` (+ rejects) and `usage_daily` in one transaction. A file that cannot be read as a whole
(truncated, undetectable, empty) loads nothing and leaves a `failed` cdr_files row with the cause.

**The landing directory** (`scan_landing`, one tick of the landing sensor): list it, decide which files
are new, and report once the entries that cannot be loaded. The cursor is a watermark: the highest
change time of the files dealt with, plus the few files within a small overlap window below it (so
files landing in the same instant are neither missed nor hashed twice). Only files above the
watermark are hashed, so an unchanged landing directory costs one directory listing per tick.

A file's change time is max(mtime, ctime): a file copied or moved in with a preserved mtime
(`cp -p`, `rsync -t`, `mv`) still gets a fresh ctime, so it is never mistaken for an old one.
A delivery is `sha256:size:change time` (`NewFile.delivery_key`): a re-delivery (the file copied in
again or touched after a failed run) is a new delivery. A file whose sha256 is already in cdr_files
is never requested.

Writers should land files atomically (write `name.part`, then rename): names starting with "." and
the usual partial-download suffixes are ignored.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Generic, TypeVar

from aisyst_pipelines.cdr import CdrFileError, RatingPolicy, ReadOptions, detect_format, forced_format_for, read_cdr_file
from aisyst_pipelines.cdr.privacy import pii_key_fingerprint
from aisyst_pipelines.cdr.records import FORMATS
from aisyst_pipelines.mail import DeliveryError, Notifier
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.cdr_store import (
    UNKNOWN_FORMAT,
    CdrFileIdentity,
    CdrLoadResult,
    cdr_file,
    load_cdr_file,
    loaded_sha256s,
    record_failed_file,
)
from aisyst_pipelines.warehouse.properties import PiiKeyMismatch

# Largest acceptable share of rejected rows in one file (the check cdr_reject_share; 0.01 = 1 %).
DEFAULT_MAX_REJECT_SHARE = 0.01
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


# --- one landing file ---------------------------------------------------------------------------------


class FileNotLoaded(Exception):
    """Nothing of the file was written. `reason` is the cause in one line, never the file's content
    (CDRs carry phone numbers); `failed_row`: a `failed` cdr_files row records the file and the reason."""

    def __init__(self, path: Path, reason: str, *, failed_row: bool = False) -> None:
        super().__init__(f"CDR file not loaded, nothing was written: {path}: {reason}")
        self.path = path
        self.reason = reason
        self.failed_row = failed_row


class InvalidLoadConfig(ValueError):
    """A value of the load's configuration is invalid (the message names it); the file was not read."""


@dataclass(frozen=True)
class LoadConfig:
    """How to read one landing file, as plain values (a run's config over the ingestion resource's)."""

    landing_dir: Path
    forced_format: str | None  # None: the landing sub-folder decides, else the content
    asterisk_timezone: str
    rounding: str
    free_seconds: int
    chunk_rows: int
    future_tolerance_hours: float
    earliest_call: str  # ISO 8601 with offset
    max_record_bytes: int


def read_options(config: LoadConfig, path: Path, pii_key: bytes) -> ReadOptions:
    """The reader's options for `path`, loading now. Raises InvalidLoadConfig."""
    try:
        return ReadOptions(
            pii_key=pii_key,
            forced_format=config.forced_format or forced_format_for(path, config.landing_dir),
            asterisk_timezone=config.asterisk_timezone,
            policy=RatingPolicy(rounding=config.rounding, free_seconds=config.free_seconds),  # type: ignore[arg-type]
            chunk_rows=config.chunk_rows,
            future_tolerance=timedelta(hours=config.future_tolerance_hours),
            earliest_call=datetime.fromisoformat(config.earliest_call),
            max_record_bytes=config.max_record_bytes,
        )
    except ValueError as error:
        raise InvalidLoadConfig(str(error)) from error


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def current_sha256(path: Path) -> str:
    """The file's sha256 now. Raises FileNotLoaded when it is gone, not a regular file or unreadable
    (no cdr_files row: without its content there is no key to record it under)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise FileNotLoaded(path, "not a regular file")  # a FIFO would block the read forever
        return file_sha256(path)
    except FileNotFoundError:
        raise FileNotLoaded(path, "no such file (moved or deleted since it was requested)") from None
    except OSError as error:
        raise FileNotLoaded(path, f"cannot read the file: {error.strerror or error}") from None


def load_landing_file(warehouse: Warehouse, path: Path, options: ReadOptions, *, expected_sha256: str = "") -> CdrLoadResult:
    """Load one file in one transaction (`skipped` when its content was loaded before). With
    `expected_sha256` (what the sensor saw) a file that has changed since is not loaded.
    Raises FileNotLoaded; a file unreadable as a whole leaves a `failed` cdr_files row."""
    sha256 = current_sha256(path)
    if expected_sha256 and sha256 != expected_sha256:
        raise FileNotLoaded(
            path, f"the file changed after the sensor saw it (sha256 {expected_sha256[:12]}… → {sha256[:12]}…); "
            "the sensor requests the new version"
        )
    forced = options.forced_format
    identity = CdrFileIdentity(
        path=str(path), sha256=sha256, format=forced if forced in FORMATS else UNKNOWN_FORMAT, size_bytes=path.stat().st_size
    )
    try:
        identity = replace(identity, format=detect_format(path, forced))
        return load_cdr_file(
            warehouse,
            identity,
            read_cdr_file(path, options),
            pii_key_fingerprint=pii_key_fingerprint(options.pii_key),
            now=options.loaded_at,
        )
    except PiiKeyMismatch as error:
        # The host's key is wrong, not the file: nothing is recorded, the file loads once the key is right.
        raise FileNotLoaded(path, str(error)) from error
    except CdrFileError as error:
        # The load has rolled back; the failed row is written on its own, so that the file keeps a
        # trace (and the same content is still requested when it comes again).
        reason = str(error).removeprefix(f"{path}: ")
        raise FileNotLoaded(path, reason, failed_row=record_failed_file(warehouse, identity, reason)) from error


def describe_load(result: CdrLoadResult) -> str:
    if result.skipped:
        return f"{result.file_path}: skipped, this content (sha256 {result.sha256[:12]}…) was loaded before"
    reasons = ", ".join(f"{code} {count}" for code, count in result.rejected_by_reason.items())
    text = (
        f"{result.file_path} ({result.format}): {result.rows_total} rows, {result.rows_loaded} loaded, "
        f"{result.rows_duplicate} duplicate, {result.rows_rejected} rejected"
    )
    if reasons:
        text += f" ({reasons})"
    if result.unmapped_accounts:
        text += f"; {len(result.unmapped_accounts)} account(s) without a Stripe customer"
    return text


@dataclass(frozen=True)
class RejectShare:
    """The rejected rows of one loaded file against the largest acceptable share."""

    file_path: str
    rows_total: int
    rows_rejected: int
    max_share: float

    @property
    def share(self) -> float:
        return self.rows_rejected / self.rows_total if self.rows_total else 0.0

    @property
    def passed(self) -> bool:
        return self.share <= self.max_share

    def describe(self) -> str:
        return f"{self.rows_rejected} of {self.rows_total} rows rejected ({self.share:.2%}); limit {self.max_share:.2%}"


def reject_share(warehouse: Warehouse, sha256: str, max_share: float) -> RejectShare | None:
    """The reject share of the file with this content; None when cdr_files has no such file."""
    row = cdr_file(warehouse, sha256)
    if row is None:
        return None
    return RejectShare(row.file_path, row.rows_total, row.rows_rejected, max_share)


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


def shown_path(file: str, landing_dir: Path) -> str:
    """A file as people see it: relative to the landing directory when inside, one printable line."""
    try:
        return printable(Path(file).relative_to(landing_dir))
    except ValueError:
        return printable(file)


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

    @property
    def delivery_key(self) -> str:
        """Content, size and change time: the same file delivered again (copied in, touched) is a new delivery."""
        return f"{self.sha256 or 'unreadable'}:{self.file.size}:{self.file.changed_ns}"


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


def record_refused_file(warehouse: Warehouse, refused: RefusedFile, landing_dir: Path) -> bool:
    """The failed cdr_files row of a refused file whose content could be read (its key); True if written."""
    new = refused.new
    if not new.sha256:
        return False
    forced = forced_format_for(new.file.path, landing_dir)
    identity = CdrFileIdentity(
        path=printable(new.file.path), sha256=new.sha256, format=forced if forced in FORMATS else UNKNOWN_FORMAT,
        size_bytes=new.file.size,
    )
    return record_failed_file(warehouse, identity, refused.reason)


def alert_refusals(notifier: Notifier, refusals: dict[str, str], landing_dir: Path) -> None:
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
    log: logging.Logger, notifier: Notifier, cursor: LandingCursor, seen: dict[str, str], landing_dir: Path
) -> tuple[dict[str, str], LandingCursor]:
    """Log and e-mail ops the refusals `seen` this tick that were not reported before (new, or with a
    new reason), plus those whose alert could not be sent yet. Returns the new ones and the cursor
    that remembers them."""
    new = {path: reason for path, reason in seen.items() if cursor.refused.get(path) != reason}
    for path, reason in new.items():
        log.warning(f"{path}: not loaded — {reason}")
    unalerted = dict(list((cursor.unalerted | new).items())[-MAX_UNALERTED_REFUSALS:])
    if unalerted:
        try:
            alert_refusals(notifier, unalerted, landing_dir)
            unalerted = {}
        except DeliveryError as error:
            log.warning(f"ops alert about {len(unalerted)} refused landing entries not sent, retried next tick: {error}")
    return new, replace(cursor, refused=seen, unalerted=unalerted)


Request = TypeVar("Request")


@dataclass(frozen=True)
class Refusal:
    path: str  # printable
    reason: str
    failed_row: bool  # a `failed` cdr_files row records it (its content could be read)


@dataclass
class LandingScan(Generic[Request]):
    """One tick of the landing sensor: what to request, what to tell, and the cursor that stands for it."""

    requests: list[Request]  # one per new file
    already_loaded: list[NewFile]  # new files whose content is loaded: not requested
    refusals: list[Refusal]  # entries refused for the first time (or for a new reason): reported once
    cursor: LandingCursor  # store it only once every request's run exists


def scan_landing(
    warehouse: Warehouse,
    notifier: Notifier,
    landing_dir: Path,
    cursor: LandingCursor,
    request: Callable[[NewFile], Request],
    log: logging.Logger,
) -> LandingScan[Request]:
    """List the landing directory and plan from `cursor`: `request` makes each new file's run request.
    Entries no run can be requested for (refused by the listing or the plan, or `request` raised) get
    their failed cdr_files row where their content could be read, a warning in `log` and one ops
    alert, once."""
    listing = list_landing_files(landing_dir)
    plan = plan_landing(listing.files, cursor, lambda shas: loaded_sha256s(warehouse, shas))
    requests: list[Request] = []
    refused = list(plan.refused)
    for new in plan.to_load:
        try:
            requests.append(request(new))
        except Exception as error:  # noqa: BLE001 - one file's problem must not cost the other files their runs
            refused.append(RefusedFile(new, f"no run could be requested: {type(error).__name__}: {error}"))
    recorded = {printable(r.new.file.path) for r in refused if record_refused_file(warehouse, r, landing_dir)}
    seen = listing.refused | {printable(r.new.file.path): r.reason for r in refused}
    new_refusals, next_cursor = report_refusals(log, notifier, plan.cursor, seen, landing_dir)
    for new in plan.already_loaded:
        log.info(f"{printable(new.file.path)}: content already loaded (sha256 {new.sha256[:12]}…), not requested")
    if plan.deferred:
        log.info(f"{plan.deferred} more new file(s) left for the next tick")
    return LandingScan(
        requests=requests,
        already_loaded=plan.already_loaded,
        refusals=[Refusal(path, reason, path in recorded) for path, reason in new_refusals.items()],
        cursor=next_cursor,
    )

"""CDR ingestion as Dagster assets: one landing file → `call_records` (+ rejects) → `usage_daily`.

Which file a run loads is **run config** (`CdrFileConfig`), not a dynamic partition. A landing file
is an event, not a slice of the table: partitions per file would grow without bound (every file
ever received would stay a partition the UI, the daemon and every sensor tick have to carry, see
reference/DAGSTER.md §9.1), and `usage_daily` is keyed by account and day, not by file, so it
could not share a per-file partitioning. Run config keeps each run self-describing (the launchpad
shows path and sha256, a failed run can be re-executed as is) and each materialization's metadata
names its file, so the history of call_records is the history of files.

`call_records` and `usage_daily` are one `multi_asset` step because the issue demands one
transaction per file: the load and the recompute of the touched usage days commit together or not
at all. The two specs keep separate lineage (usage_daily depends on call_records) and separate
metadata plots.
"""


import hashlib
import stat
from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
from pydantic import Field

from aisyst_pipelines.cdr import CdrFileError, RatingPolicy, ReadOptions, detect_format, forced_format_for, read_cdr_file
from aisyst_pipelines.cdr.privacy import pii_key_fingerprint
from aisyst_pipelines.cdr.records import (
    DEFAULT_EARLIEST_CALL,
    DEFAULT_FUTURE_TOLERANCE,
    DEFAULT_MAX_RECORD_BYTES,
    FORCED_FOLDERS,
    FORMATS,
    REASON_CODES,
)
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse.cdr_store import (
    FILE_FAILED,
    UNKNOWN_FORMAT,
    CdrFileIdentity,
    CdrLoadResult,
    cdr_file,
    load_cdr_file,
    record_failed_file,
)
from resources import PiiKeyResource, WarehouseResource

CALL_RECORDS = dg.AssetKey("call_records")
USAGE_DAILY = dg.AssetKey("usage_daily")
LOAD_OP_NAME = "load_cdr_file"
REJECT_SHARE_CHECK_NAME = "cdr_reject_share"
DEFAULT_MAX_REJECT_SHARE = 0.01
OWNERS = ["team:billing-data"]
MAX_LISTED_ACCOUNTS = 20


class CdrFileConfig(dg.Config):
    """The landing file one run loads (the sensor fills this in)."""

    path: str = Field(description="Absolute path of the CDR file.")
    sha256: str = Field(
        default="",
        description="sha256 the sensor saw. When set, the run fails if the file has changed since "
        "(the sensor then requests the new version); empty = load whatever the file holds now.",
    )
    forced_format: str | None = Field(
        default=None,
        description="canonical, twilio or asterisk (or one of the exact formats) to skip detection. "
        "Unset = the landing sub-folder decides, else the content.",
    )
    rounding: str = Field(default="ceil", description="Rating of answered calls: ceil (per-call ceiling), nearest or floor.")
    free_seconds: int = Field(default=0, description="Answered calls shorter than this bill 0 minutes.")
    chunk_rows: int = Field(default=200_000, description="Rows per chunk: bounds the memory of a load.")
    max_record_bytes: int = Field(
        default=DEFAULT_MAX_RECORD_BYTES,
        description="A line longer than this many bytes is rejected (record_too_long) without being held in memory.",
    )
    future_tolerance_hours: float = Field(
        default=DEFAULT_FUTURE_TOLERANCE / timedelta(hours=1),
        description="Calls that end more than this many hours after the load are rejected (call_in_future).",
    )
    earliest_call: str = Field(
        default=DEFAULT_EARLIEST_CALL.isoformat(),
        description="ISO 8601 time with offset: calls that end before it are rejected (call_too_old).",
    )


class RejectShareConfig(dg.Config):
    max_reject_share: float = Field(
        default=DEFAULT_MAX_REJECT_SHARE,
        description="Largest acceptable share of rejected rows in one file (0.01 = 1 %).",
    )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as stream:
        for block in iter(lambda: stream.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_not_loaded(path: Path, cause: str, **metadata: object) -> dg.Failure:
    """The run's failure for one file: the cause in a line (metadata `reason`, shown by `aisyst ingest`)."""
    return dg.Failure(
        description=f"CDR file not loaded, nothing was written: {path}: {cause}",
        metadata={"file": dg.MetadataValue.path(str(path)), "reason": cause, **metadata},
    )


def _current_sha256(path: Path) -> str:
    """The file's sha256 now. A file that is gone, not a regular file or unreadable fails the run with
    the cause (no cdr_files row: without its content there is no key to record it under)."""
    try:
        if not stat.S_ISREG(path.stat().st_mode):
            raise _file_not_loaded(path, "not a regular file")  # a FIFO would block the read forever
        return file_sha256(path)
    except FileNotFoundError:
        raise _file_not_loaded(path, "no such file (moved or deleted since it was requested)") from None
    except OSError as error:
        raise _file_not_loaded(path, f"cannot read the file: {error.strerror or error}") from None


def rejected_metadata(rejected_by_reason: dict[str, int]) -> dict[str, int]:
    """One int per known reason code, zeros included, so each key plots as a time series."""
    return {f"rejected_{code}": int(rejected_by_reason.get(code, 0)) for code in REASON_CODES}


@dg.multi_asset(
    name=LOAD_OP_NAME,
    specs=[
        dg.AssetSpec(
            CALL_RECORDS,
            description="One row per call (call_id) from the landing files, rated in billable minutes; "
            "phone numbers only as keyed hashes. Rejected input rows go to call_records_rejected, "
            "one row per landing file to cdr_files.",
            group_name="cdr",
            owners=OWNERS,
            kinds={"python", "pandas", "sql"},
            metadata={"dagster/table_name": "call_records"},
        ),
        dg.AssetSpec(
            USAGE_DAILY,
            deps=[CALL_RECORDS],
            description="Calls, billable seconds and minutes per account code and UTC day of ended_at, "
            "recomputed from call_records for the days each load touches (late CDRs land in their day).",
            group_name="cdr",
            owners=OWNERS,
            kinds={"sql"},
            metadata={"dagster/table_name": "usage_daily"},
        ),
    ],
    description="Load one landing CDR file into the warehouse in one transaction.",
)
def load_cdr_file_assets(
    context: dg.AssetExecutionContext,
    config: CdrFileConfig,
    warehouse: WarehouseResource,
    pii_key: PiiKeyResource,
) -> Iterator[dg.MaterializeResult]:
    settings = Settings.from_env()
    path = Path(config.path)
    sha256 = _current_sha256(path)
    if config.sha256 and sha256 != config.sha256:
        raise _file_not_loaded(
            path, f"the file changed after the sensor saw it (sha256 {config.sha256[:12]}… → {sha256[:12]}…); "
            "the sensor requests the new version"
        )
    forced = config.forced_format or forced_format_for(path, settings.landing_dir)
    if forced is not None and forced not in FORCED_FOLDERS + FORMATS:
        raise dg.Failure(description=f"unknown forced_format {forced!r}: use one of {FORCED_FOLDERS + FORMATS}")
    loaded_at = datetime.now(timezone.utc)
    try:
        options = ReadOptions(
            pii_key=pii_key.key_bytes(),
            forced_format=forced,
            asterisk_timezone=settings.asterisk_timezone,
            policy=RatingPolicy(rounding=config.rounding, free_seconds=config.free_seconds),  # type: ignore[arg-type]
            chunk_rows=config.chunk_rows,
            loaded_at=loaded_at,
            future_tolerance=timedelta(hours=config.future_tolerance_hours),
            earliest_call=datetime.fromisoformat(config.earliest_call),
            max_record_bytes=config.max_record_bytes,
        )
    except ValueError as error:
        raise dg.Failure(description=f"CDR file not loaded, the run config is invalid: {error}") from error
    identity = CdrFileIdentity(
        path=str(path), sha256=sha256, format=forced if forced in FORMATS else UNKNOWN_FORMAT, size_bytes=path.stat().st_size
    )
    try:
        identity = replace(identity, format=detect_format(path, forced))
        result = load_cdr_file(
            warehouse.get(),
            identity,
            read_cdr_file(path, options),
            pii_key_fingerprint=pii_key_fingerprint(options.pii_key),
            now=loaded_at,
        )
    except CdrFileError as error:
        # The load has rolled back; the failed row is written on its own, so that the file keeps a
        # trace (and the same content is still requested when it comes again). The message names the
        # file and the cause, never its content (CDRs carry phone numbers).
        reason = str(error).removeprefix(f"{path}: ")
        record_failed_file(warehouse.get(), identity, reason)
        raise _file_not_loaded(path, reason, cdr_files=FILE_FAILED) from error
    context.log.info(describe_load(result))
    yield dg.MaterializeResult(asset_key=CALL_RECORDS, metadata=call_records_metadata(result))
    yield dg.MaterializeResult(
        asset_key=USAGE_DAILY,
        metadata={
            "outcome": "skipped" if result.skipped else "loaded",
            "file": dg.MetadataValue.path(result.file_path),
            "usage_days_recomputed": result.usage_days_recomputed,
        },
    )


def call_records_metadata(result: CdrLoadResult) -> dict[str, object]:
    unmapped = result.unmapped_accounts
    return {
        "outcome": "skipped" if result.skipped else "loaded",  # skipped = this content was loaded before
        "file": dg.MetadataValue.path(result.file_path),
        "format": result.format,
        "sha256": result.sha256,
        "rows_total": result.rows_total,
        "rows_loaded": result.rows_loaded,
        "rows_duplicate": result.rows_duplicate,
        "rows_rejected": result.rows_rejected,
        "reject_share": float(result.reject_share),
        **rejected_metadata(result.rejected_by_reason),
        "unmapped_accounts": len(unmapped),
        "unmapped_account_codes": ", ".join(unmapped[:MAX_LISTED_ACCOUNTS]) + (" …" if len(unmapped) > MAX_LISTED_ACCOUNTS else ""),
    }


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


@dg.asset_check(
    asset=CALL_RECORDS,
    name=REJECT_SHARE_CHECK_NAME,
    description="Fails when the share of rejected rows of the file loaded last exceeds max_reject_share "
    "(default 1 %). The good rows are loaded either way; a failure means the source needs a look.",
)
def cdr_reject_share(
    context: dg.AssetCheckExecutionContext, config: RejectShareConfig, warehouse: WarehouseResource
) -> dg.AssetCheckResult:
    materialization = _file_materialization(context)
    if materialization is None or "sha256" not in materialization.metadata:
        return dg.AssetCheckResult(passed=True, description="no CDR file loaded yet")
    sha256 = str(materialization.metadata["sha256"].value)
    row = cdr_file(warehouse.get(), sha256)
    if row is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"the last materialization names a file (sha256 {sha256[:12]}…) that is not in cdr_files",
        )
    share = row.rows_rejected / row.rows_total if row.rows_total else 0.0
    passed = share <= config.max_reject_share
    return dg.AssetCheckResult(
        passed=passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=(
            f"{row.rows_rejected} of {row.rows_total} rows rejected ({share:.2%}); limit {config.max_reject_share:.2%}"
        ),
        metadata={
            "file": dg.MetadataValue.path(row.file_path),
            "reject_share": float(share),
            "max_reject_share": float(config.max_reject_share),
            "rows_total": row.rows_total,
            "rows_rejected": row.rows_rejected,
        },
    )


def _file_materialization(context: dg.AssetCheckExecutionContext) -> dg.AssetMaterialization | None:
    """The call_records materialization of this check's own run; the latest one when the check runs
    on its own. (Not simply the latest: runs of several files can overlap.)"""
    own = [
        entry.asset_materialization
        for entry in context.instance.all_logs(context.run.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        if entry.asset_materialization is not None and entry.asset_materialization.asset_key == CALL_RECORDS
    ]
    if own:
        return own[-1]
    latest = context.instance.get_latest_materialization_event(CALL_RECORDS)
    return latest.asset_materialization if latest else None


defs = dg.Definitions(assets=[load_cdr_file_assets], asset_checks=[cdr_reject_share])

"""CDR ingestion as Dagster assets: one landing file → `call_records` (+ rejects) → `usage_daily`.

The work is `services/ingestion.py`'s; the asset and the check read their configuration from the run
config and the `ingestion` resource (`IngestionConfig`) and turn the service's results into metadata.

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

from collections.abc import Iterator
from pathlib import Path
from typing import TypeVar

import dagster as dg
from pydantic import Field

from aisyst_pipelines.assets.common import OWNERS, row_count_metadata, runbook_link, table_metadata
from aisyst_pipelines.cdr.records import REASON_CODES
from aisyst_pipelines.services.ingestion import (
    FileNotLoaded,
    InvalidLoadConfig,
    LoadConfig,
    describe_load,
    load_landing_file,
    read_options,
    reject_share,
)
from aisyst_pipelines.warehouse.cdr_store import FILE_FAILED, CdrLoadResult
from resources import PiiKeyResource, WarehouseResource
from resources.ingestion import IngestionConfig

CALL_RECORDS = dg.AssetKey("call_records")
USAGE_DAILY = dg.AssetKey("usage_daily")
LOAD_OP_NAME = "load_cdr_file"
REJECT_SHARE_CHECK_NAME = "cdr_reject_share"
RUNBOOK_SECTION = "cdr_ingest"
MAX_LISTED_ACCOUNTS = 20
FROM_RESOURCE = "Unset = the ingestion resource's value"


class CdrFileConfig(dg.Config):
    """The landing file one run loads (the sensor fills this in), and one-off overrides of the limits."""

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
    max_record_bytes: int | None = Field(
        default=None,
        description=f"A line longer than this many bytes is rejected (record_too_long). {FROM_RESOURCE}.",
    )
    future_tolerance_hours: float | None = Field(
        default=None,
        description=f"Calls that end more than this many hours after the load are rejected (call_in_future). {FROM_RESOURCE}.",
    )
    earliest_call: str | None = Field(
        default=None,
        description=f"ISO 8601 time with offset: calls that end before it are rejected (call_too_old). {FROM_RESOURCE}.",
    )

    def load_config(self, ingestion: IngestionConfig) -> LoadConfig:
        """This run's values over the ingestion resource's."""
        return LoadConfig(
            landing_dir=Path(ingestion.landing_dir),
            forced_format=self.forced_format,
            asterisk_timezone=ingestion.asterisk_timezone,
            rounding=self.rounding,
            free_seconds=self.free_seconds,
            chunk_rows=self.chunk_rows,
            future_tolerance_hours=_either(self.future_tolerance_hours, ingestion.future_tolerance_hours),
            earliest_call=_either(self.earliest_call, ingestion.earliest_call),
            max_record_bytes=_either(self.max_record_bytes, ingestion.max_record_bytes),
        )


class RejectShareConfig(dg.Config):
    max_reject_share: float | None = Field(
        default=None, description=f"Largest acceptable share of rejected rows in one file (0.01 = 1 %). {FROM_RESOURCE}."
    )


T = TypeVar("T")


def _either(override: T | None, configured: T) -> T:
    return configured if override is None else override


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
            metadata=table_metadata("call_records"),
        ),
        dg.AssetSpec(
            USAGE_DAILY,
            deps=[CALL_RECORDS],
            description="Calls, billable seconds and minutes per account code and UTC day of ended_at, "
            "recomputed from call_records for the days each load touches (late CDRs land in their day).",
            group_name="cdr",
            owners=OWNERS,
            kinds={"sql"},
            metadata=table_metadata("usage_daily"),
        ),
    ],
    description="Load one landing CDR file into the warehouse in one transaction.",
)
def load_cdr_file_assets(
    context: dg.AssetExecutionContext,
    config: CdrFileConfig,
    warehouse: WarehouseResource,
    pii_key: PiiKeyResource,
    ingestion: IngestionConfig,
) -> Iterator[dg.MaterializeResult]:
    path = Path(config.path)
    try:
        options = read_options(config.load_config(ingestion), path, pii_key.key_bytes())
        result = load_landing_file(warehouse.get(), path, options, expected_sha256=config.sha256)
    except InvalidLoadConfig as error:
        raise dg.Failure(description=f"CDR file not loaded, the run config is invalid: {error}") from error
    except FileNotLoaded as error:  # the cause in a line (metadata `reason`, shown by `aisyst ingest`)
        recorded = {"cdr_files": FILE_FAILED} if error.failed_row else {}
        raise dg.Failure(
            description=str(error), metadata={"file": dg.MetadataValue.path(str(path)), "reason": error.reason, **recorded}
        ) from error
    context.log.info(describe_load(result))
    yield dg.MaterializeResult(
        asset_key=CALL_RECORDS, metadata={**call_records_metadata(result), **row_count_metadata(warehouse.get(), "call_records")}
    )
    yield dg.MaterializeResult(
        asset_key=USAGE_DAILY,
        metadata={
            "outcome": "skipped" if result.skipped else "loaded",
            "file": dg.MetadataValue.path(result.file_path),
            "usage_days_recomputed": result.usage_days_recomputed,
            **row_count_metadata(warehouse.get(), "usage_daily"),
        },
    )


def call_records_metadata(result: CdrLoadResult) -> dict[str, dg.MetadataValue | str | int | float]:
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


@dg.asset_check(
    asset=CALL_RECORDS,
    name=REJECT_SHARE_CHECK_NAME,
    description="Fails when the share of rejected rows of the file loaded last exceeds max_reject_share "
    "(the ingestion resource's, default 1 %). The good rows are loaded either way; a failure means the source needs a look.",
)
def cdr_reject_share(
    context: dg.AssetCheckExecutionContext, config: RejectShareConfig, warehouse: WarehouseResource, ingestion: IngestionConfig
) -> dg.AssetCheckResult:
    materialization = _file_materialization(context)
    if materialization is None or "sha256" not in materialization.metadata:
        return dg.AssetCheckResult(passed=True, description="no CDR file loaded yet")
    sha256 = str(materialization.metadata["sha256"].value)
    share = reject_share(warehouse.get(), sha256, _either(config.max_reject_share, ingestion.max_reject_share))
    if share is None:
        return dg.AssetCheckResult(
            passed=False,
            severity=dg.AssetCheckSeverity.ERROR,
            description=f"the last materialization names a file (sha256 {sha256[:12]}…) that is not in cdr_files",
            metadata={"runbook": runbook_link(RUNBOOK_SECTION)},
        )
    return dg.AssetCheckResult(
        passed=share.passed,
        severity=dg.AssetCheckSeverity.ERROR,
        description=share.describe(),
        metadata={
            "file": dg.MetadataValue.path(share.file_path),
            "reject_share": float(share.share),
            "max_reject_share": float(share.max_share),
            "rows_total": share.rows_total,
            "rows_rejected": share.rows_rejected,
            "runbook": runbook_link(RUNBOOK_SECTION),
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


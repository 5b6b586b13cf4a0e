"""services/ingestion.py without Dagster: one landing file loaded, the options it is read with, and one
scan of the landing directory (real warehouse on SQLite and PostgreSQL, real outbox notifier)."""

from __future__ import annotations

import logging
import os
from datetime import timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from ingest_samples import PII_KEY, count_rows, expected_usage, usage_calls_minutes, write_sample

from aisyst_pipelines.cdr import ReadOptions
from aisyst_pipelines.services.ingestion import (
    FileNotLoaded,
    InvalidLoadConfig,
    LandingCursor,
    LandingScan,
    LoadConfig,
    NewFile,
    file_sha256,
    load_landing_file,
    read_options,
    reject_share,
    scan_landing,
)
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.cdr_store import cdr_file
from resources import NotifierResource
from resources.ingestion import IngestionConfig

KEY = PII_KEY.encode()
LOG = logging.getLogger(__name__)
EXTENSIONS = {"canonical_csv": "csv", "canonical_jsonl": "jsonl", "twilio": "jsonl", "asterisk": "csv"}


def load_config(landing_dir: Path, **changes: object) -> LoadConfig:
    values: dict = dict(
        landing_dir=landing_dir, forced_format=None, asterisk_timezone="UTC", rounding="ceil", free_seconds=0,
        chunk_rows=1000, future_tolerance_hours=24.0, earliest_call="2020-01-01T00:00:00+00:00", max_record_bytes=65536,
    )
    return LoadConfig(**(values | changes))


def test_a_file_loads_once_and_its_content_is_skipped_after(warehouse: Warehouse, tmp_path: Path) -> None:
    path = tmp_path / "twilio" / "calls.jsonl"
    written, calls = write_sample(path, "twilio")
    options = read_options(load_config(tmp_path), path, KEY)

    first = load_landing_file(warehouse, path, options, expected_sha256=file_sha256(path))
    again = load_landing_file(warehouse, path, options)

    assert (first.skipped, first.format, first.rows_loaded) == (False, "twilio", written.rows)
    assert again.skipped
    assert usage_calls_minutes(warehouse) == expected_usage(calls)
    share = reject_share(warehouse, first.sha256, 0.01)
    assert share is not None and (share.passed, share.rows_total, share.rows_rejected) == (True, written.rows, 0)
    assert reject_share(warehouse, "0" * 64, 0.01) is None


@pytest.mark.parametrize("fmt", ["canonical_csv", "canonical_jsonl", "twilio", "asterisk"])
def test_a_truncated_file_loads_nothing_and_keeps_a_failed_row(fmt: str, warehouse: Warehouse, tmp_path: Path) -> None:
    path = tmp_path / f"calls.{EXTENSIONS[fmt]}"
    write_sample(path, fmt)
    path.write_bytes(path.read_bytes()[:-7])

    with pytest.raises(FileNotLoaded) as raised:
        load_landing_file(warehouse, path, read_options(load_config(tmp_path), path, KEY))

    assert raised.value.failed_row and raised.value.reason.startswith("truncated")
    row = cdr_file(warehouse, file_sha256(path))
    assert row is not None and (row.status, row.failure_reason) == ("failed", raised.value.reason)
    assert count_rows(warehouse)["call_records"] == 0


def test_a_file_changed_since_the_sensor_saw_it_is_not_read(warehouse: Warehouse, tmp_path: Path) -> None:
    path = tmp_path / "calls.csv"
    write_sample(path, "canonical_csv")

    with pytest.raises(FileNotLoaded, match="changed after the sensor saw it") as raised:
        load_landing_file(warehouse, path, read_options(load_config(tmp_path), path, KEY), expected_sha256="0" * 64)

    assert not raised.value.failed_row
    assert count_rows(warehouse)["cdr_files"] == 0


def test_the_read_options_come_from_the_config_and_the_landing_subfolder(tmp_path: Path) -> None:
    forced = read_options(load_config(tmp_path, future_tolerance_hours=1.5), tmp_path / "asterisk" / "Master.csv", KEY)
    chosen = read_options(load_config(tmp_path, forced_format="twilio"), tmp_path / "asterisk" / "Master.csv", KEY)

    assert (forced.forced_format, forced.future_tolerance) == ("asterisk", timedelta(hours=1.5))
    assert chosen.forced_format == "twilio"
    with pytest.raises(InvalidLoadConfig, match="earliest_call must carry a time zone"):
        read_options(load_config(tmp_path, earliest_call="2026-10-02"), tmp_path / "a.csv", KEY)
    with pytest.raises(InvalidLoadConfig, match="unknown forced format"):
        read_options(load_config(tmp_path, forced_format="excel"), tmp_path / "a.csv", KEY)


def test_the_ingestion_resource_defaults_are_the_readers() -> None:
    configured = IngestionConfig(landing_dir="/landing")
    defaults = ReadOptions(pii_key=KEY)
    assert timedelta(hours=configured.future_tolerance_hours) == defaults.future_tolerance
    assert configured.earliest_call == defaults.earliest_call.isoformat()
    assert configured.max_record_bytes == defaults.max_record_bytes


def test_one_scan_requests_the_new_files_and_reports_a_refused_entry_once(warehouse: Warehouse, tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    write_sample(landing / "a.csv", "canonical_csv", seed=1)
    write_sample(landing / "twilio" / "b.jsonl", "twilio", seed=2)
    os.mkfifo(landing / "pipe.csv")
    notifier = NotifierResource(outbox_dir=str(tmp_path / "outbox"), sender="billing@aisyst.example", ops_recipients=["ops@aisyst.example"])

    def scan(cursor: LandingCursor) -> LandingScan[NewFile]:
        return scan_landing(warehouse, notifier, landing, cursor, request=lambda new: new, log=LOG)

    first = scan(LandingCursor())
    second = scan(first.cursor)

    assert sorted(new.file.path.name for new in first.requests) == ["a.csv", "b.jsonl"]
    assert all(new.delivery_key.startswith(f"{file_sha256(new.file.path)}:{new.file.size}:") for new in first.requests)
    assert [(r.path, r.failed_row) for r in first.refusals] == [(str(landing / "pipe.csv"), False)]
    assert (second.requests, second.refusals, second.already_loaded) == ([], [], [])
    (alert,) = (tmp_path / "outbox").glob("*.eml")
    message = BytesParser(policy=policy.default).parsebytes(alert.read_bytes())
    assert message["Subject"] == "[aisyst] 1 landing entry not loaded"

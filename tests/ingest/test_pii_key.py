"""The phone-number key: the warehouse records its fingerprint on the first load and refuses any
other key; without AISYST_PII_KEY only the embedded warehouse gets a generated key (beside it)."""

from __future__ import annotations

import os
import stat
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest
from ingest_samples import PII_KEY, Chunk, call, chunk, count_rows, load_cdr_file, source, write_sample
from sqlalchemy import select

from aisyst_pipelines.assets.ingestion import LOAD_OP_NAME, load_cdr_file_assets
from aisyst_pipelines.cdr.privacy import pii_key_fingerprint
from aisyst_pipelines.cli import main
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.properties import PII_KEY_FINGERPRINT, PiiKeyMismatch
from aisyst_pipelines.warehouse.schema import warehouse_properties
from jobs.ingestion import JOB_NAME
from resources import PiiKeyResource, WarehouseResource
from resources.ingestion import IngestionConfig

EXTENSIONS = {"canonical_csv": "csv", "twilio": "jsonl", "asterisk": "csv"}
OTHER_KEY = "another-key-not-the-warehouses"
T = datetime(2026, 3, 10, 12, 0, tzinfo=timezone.utc)


def load_with_key(warehouse: Warehouse, path: Path, key: str) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        [load_cdr_file_assets],
        resources={"warehouse": WarehouseResource(url=warehouse.url), "pii_key": PiiKeyResource(key=key),
                   "ingestion": IngestionConfig(landing_dir=str(path.parent))},
        run_config={"ops": {LOAD_OP_NAME: {"config": {"path": str(path)}}}},
        raise_on_error=False,
    )


def failure_message(result: dg.ExecuteInProcessResult) -> str:
    return " ".join(event.step_failure_data.error.message for event in result.get_step_failure_events())


def recorded_fingerprint(warehouse: Warehouse) -> str | None:
    with warehouse.connect() as connection:
        return connection.scalar(select(warehouse_properties.c.value).where(warehouse_properties.c.name == PII_KEY_FINGERPRINT))


@pytest.mark.parametrize("fmt", sorted(EXTENSIONS))
def test_a_load_with_another_key_is_refused_and_writes_nothing(fmt: str, warehouse: Warehouse, tmp_path: Path) -> None:
    first = tmp_path / "first.csv"
    write_sample(first, "canonical_csv")
    assert load_with_key(warehouse, first, PII_KEY).success
    assert recorded_fingerprint(warehouse) == pii_key_fingerprint(PII_KEY.encode())
    before = count_rows(warehouse)

    second = tmp_path / fmt / f"second.{EXTENSIONS[fmt]}"
    write_sample(second, fmt, accounts=("acct_c",), seed=3)
    refused = load_with_key(warehouse, second, OTHER_KEY)

    assert not refused.success
    message = failure_message(refused)
    assert "nothing was written" in message
    assert f"made with key fingerprint {pii_key_fingerprint(PII_KEY.encode())[:16]}" in message
    assert f"has fingerprint {pii_key_fingerprint(OTHER_KEY.encode())[:16]}" in message
    assert "set AISYST_PII_KEY to the key the warehouse was loaded with" in message
    assert PII_KEY not in message and OTHER_KEY not in message
    assert count_rows(warehouse) == before
    assert recorded_fingerprint(warehouse) == pii_key_fingerprint(PII_KEY.encode())

    again = load_with_key(warehouse, second, PII_KEY)  # the warehouse's own key: loads
    assert again.success, failure_message(again)
    assert count_rows(warehouse)["cdr_files"] == 2


def test_two_first_loads_with_different_keys_at_once_agree_on_one(warehouse: Warehouse) -> None:
    """Both start on a warehouse without a fingerprint; one records its key, the other is refused."""
    start = threading.Barrier(2)

    def slow(name: str) -> Iterator[Chunk]:  # keeps the first load's transaction open a while
        yield chunk([call(f"{name}-1", "a", T, 60, line=2)])
        time.sleep(0.3)

    def load(name: str) -> str | PiiKeyMismatch:
        start.wait()
        try:
            load_cdr_file(warehouse, source(f"{name}.csv"), slow(name), pii_key_fingerprint=f"fingerprint-{name}")
            return f"fingerprint-{name}"
        except PiiKeyMismatch as error:
            return error

    with ThreadPoolExecutor(max_workers=2) as pool:
        outcomes = list(pool.map(load, ["a", "b"]))

    (winner,) = [outcome for outcome in outcomes if isinstance(outcome, str)]
    (refused,) = [outcome for outcome in outcomes if isinstance(outcome, PiiKeyMismatch)]
    assert recorded_fingerprint(warehouse) == winner == refused.recorded
    assert count_rows(warehouse)["cdr_files"] == 1


def test_without_a_key_a_configured_warehouse_is_refused_and_no_key_is_made(
    warehouse: Warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AISYST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AISYST_WAREHOUSE_URL", warehouse.url)
    monkeypatch.delenv("AISYST_PII_KEY", raising=False)
    monkeypatch.delenv("AISYST_LANDING_DIR", raising=False)
    settings = Settings.from_env()
    path = settings.landing_dir / "calls.csv"
    write_sample(path, "canonical_csv")
    from aisyst_pipelines.definitions import defs

    with dg.instance_for_test() as instance:
        result = defs().resolve_job_def(JOB_NAME).execute_in_process(
            instance=instance, raise_on_error=False, run_config={"ops": {LOAD_OP_NAME: {"config": {"path": str(path)}}}}
        )

    assert not result.success
    assert "AISYST_PII_KEY is not set" in failure_message(result) and "set AISYST_PII_KEY" in failure_message(result)
    assert count_rows(warehouse) == {"cdr_files": 0, "call_records": 0, "call_records_rejected": 0, "usage_daily": 0}
    assert not settings.pii_key_file().exists()
    assert "AISYST_PII_KEY" not in os.environ


def test_the_embedded_warehouse_makes_its_key_once_beside_it_and_says_so(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ("AISYST_PII_KEY", "AISYST_WAREHOUSE_URL", "AISYST_LANDING_DIR", "AISYST_OUTBOX_DIR", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AISYST_HOME", str(tmp_path / "home"))
    settings = Settings.from_env()
    key_file = settings.pii_key_file()
    write_sample(settings.landing_dir / "day1.csv", "canonical_csv")

    assert main(["ingest"]) == 0
    first = capsys.readouterr()
    assert key_file.parent == Path(settings.warehouse_url.removeprefix("sqlite:///")).parent
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    key = key_file.read_bytes()
    assert f"created a new phone-number key in {key_file}" in first.out + first.err
    assert key.decode() not in first.out + first.err

    write_sample(settings.landing_dir / "day2.csv", "canonical_csv", seed=2)
    assert main(["ingest"]) == 0
    second = capsys.readouterr()
    assert "loaded  day2.csv" in second.out
    assert "created a new phone-number key" not in second.out + second.err
    assert key_file.read_bytes() == key
    assert recorded_fingerprint(Warehouse(settings.warehouse_url)) == pii_key_fingerprint(key.strip())
    assert "AISYST_PII_KEY" not in os.environ


def test_loading_the_definitions_writes_nothing_and_leaves_the_environment_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("AISYST_PII_KEY", "AISYST_WAREHOUSE_URL", "AISYST_LANDING_DIR", "AISYST_OUTBOX_DIR", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AISYST_HOME", str(tmp_path / "home"))
    environment = dict(os.environ)
    from aisyst_pipelines.definitions import defs

    defs()

    assert not (tmp_path / "home").exists()
    assert dict(os.environ) == environment


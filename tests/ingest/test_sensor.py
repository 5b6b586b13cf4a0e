"""cdr_files_sensor through build_sensor_context, and the pure landing plan behind it."""

from __future__ import annotations

import json
import os
import time
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import pytest
from ingest_samples import call, chunk, load_cdr_file, write_sample

import jobs.ingest
from aisyst_pipelines.assets.cdr import LOAD_OP_NAME, file_sha256
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.cdr_store import CdrFileIdentity
from jobs.ingest import (
    JOB_NAME,
    OVERLAP_NS,
    REJECT_SHARE_CHECK_OP,
    SENSOR_NAME,
    LandingCursor,
    LandingFile,
    cdr_files_sensor,
    list_landing_files,
    plan_landing,
)
from resources import WarehouseResource


def tick(instance: dg.DagsterInstance, warehouse: Warehouse, cursor: str | None = None) -> dg.SensorResult:
    context = dg.build_sensor_context(
        instance=instance, cursor=cursor, sensor_name=SENSOR_NAME, resources={"warehouse": WarehouseResource(url=warehouse.url)}
    )
    result = cdr_files_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def load_config(request: dg.RunRequest) -> dict:
    return request.run_config["ops"][LOAD_OP_NAME]["config"]


def mark_loaded(warehouse: Warehouse, path: Path) -> None:
    """Load the file's content as the job would have (a one-call chunk is enough for cdr_files)."""
    identity = CdrFileIdentity(path=str(path), sha256=file_sha256(path), format="canonical_csv", size_bytes=path.stat().st_size)
    load_cdr_file(warehouse, identity, [chunk([call("x", "a", datetime.now(timezone.utc), 1, line=2)])])


@pytest.fixture
def hashed(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """Records every file the sensor hashes (the real hashing still happens)."""
    seen: list[Path] = []
    real = jobs.ingest.file_sha256

    def counting(path: Path) -> str:
        seen.append(Path(path))
        return real(path)

    monkeypatch.setattr(jobs.ingest, "file_sha256", counting)
    return seen


def test_a_new_file_is_requested_once_with_its_config(
    ingest_settings: Settings, instance: dg.DagsterInstance, warehouse: Warehouse, definitions: dg.Definitions, hashed: list[Path]
) -> None:
    path = ingest_settings.landing_dir / "calls.csv"
    write_sample(path, "canonical_csv")
    sha256 = file_sha256(path)

    first = tick(instance, warehouse)

    (request,) = first.run_requests
    stat = path.stat()
    assert request.run_key == f"{sha256}:{stat.st_size}:{max(stat.st_mtime_ns, stat.st_ctime_ns)}"
    assert load_config(request) == {"path": str(path), "sha256": sha256, "forced_format": None}
    assert request.run_config["ops"][REJECT_SHARE_CHECK_OP] == {"config": {"max_reject_share": 0.01}}
    dg.validate_run_config(definitions.resolve_job_def(JOB_NAME), request.run_config)
    assert hashed == [path]

    second = tick(instance, warehouse, cursor=first.cursor)  # unchanged landing folder: nothing, and no hashing

    assert not second.run_requests
    assert second.skip_reason is not None
    assert hashed == [path]


def test_a_file_whose_content_is_loaded_is_not_requested(
    ingest_settings: Settings, instance: dg.DagsterInstance, warehouse: Warehouse
) -> None:
    loaded = ingest_settings.landing_dir / "day1.csv"
    write_sample(loaded, "canonical_csv")
    mark_loaded(warehouse, loaded)
    copy = ingest_settings.landing_dir / "again" / "day1-copy.csv"
    copy.parent.mkdir()
    copy.write_bytes(loaded.read_bytes())

    result = tick(instance, warehouse)

    assert not result.run_requests
    observed = sorted(event.metadata["file"].value for event in result.asset_events)
    assert observed == sorted([str(loaded), str(copy)])
    assert all(event.metadata["outcome"].value == "already_loaded" for event in result.asset_events)


def test_two_new_files_with_the_same_content_are_requested_once(
    ingest_settings: Settings, instance: dg.DagsterInstance, warehouse: Warehouse
) -> None:
    first = ingest_settings.landing_dir / "a.csv"
    write_sample(first, "canonical_csv")
    (ingest_settings.landing_dir / "b.csv").write_bytes(first.read_bytes())
    result = tick(instance, warehouse)
    assert len(result.run_requests) == 1
    assert len(result.asset_events) == 1


@pytest.mark.parametrize("folder, forced", [("canonical", "canonical"), ("twilio", "twilio"), ("asterisk", "asterisk"), ("other", None)])
def test_a_forcing_subfolder_goes_into_the_run_config(
    folder: str, forced: str | None, ingest_settings: Settings, instance: dg.DagsterInstance, warehouse: Warehouse
) -> None:
    path = ingest_settings.landing_dir / folder / "2026" / "calls.jsonl"
    write_sample(path, "twilio" if folder == "twilio" else "canonical_jsonl")
    (request,) = tick(instance, warehouse).run_requests
    assert load_config(request)["forced_format"] == forced


def test_a_redelivery_after_a_failed_run_gets_a_new_run_key(
    ingest_settings: Settings, instance: dg.DagsterInstance, warehouse: Warehouse
) -> None:
    path = ingest_settings.landing_dir / "calls.csv"
    write_sample(path, "canonical_csv")
    first = tick(instance, warehouse)
    # The run failed (nothing in cdr_files); the operator copies the same file in again.
    time.sleep(0.01)
    os.utime(path)

    second = tick(instance, warehouse, cursor=first.cursor)

    (old,), (new,) = first.run_requests, second.run_requests
    assert new.run_key != old.run_key
    assert new.run_key.split(":")[0] == old.run_key.split(":")[0]  # same content, new delivery


def test_a_file_arriving_with_an_old_preserved_mtime_is_still_noticed(
    ingest_settings: Settings, instance: dg.DagsterInstance, warehouse: Warehouse
) -> None:
    write_sample(ingest_settings.landing_dir / "first.csv", "canonical_csv")
    first = tick(instance, warehouse)
    late = ingest_settings.landing_dir / "late.csv"
    write_sample(late, "canonical_csv", seed=9)
    os.utime(late, (1_600_000_000, 1_600_000_000))  # as `cp -p` of a file from 2020 would leave it

    (request,) = tick(instance, warehouse, cursor=first.cursor).run_requests
    assert load_config(request)["path"] == str(late)


def test_hidden_and_partial_files_are_ignored(ingest_settings: Settings, instance: dg.DagsterInstance, warehouse: Warehouse) -> None:
    landing = ingest_settings.landing_dir
    for name in (".calls.csv.x1.partial", "calls.csv.part", "upload.tmp", ".hidden/calls.csv"):
        (landing / name).parent.mkdir(parents=True, exist_ok=True)
        (landing / name).write_text("call_id\n")
    result = tick(instance, warehouse)
    assert not result.run_requests
    assert list_landing_files(landing) == []


def test_a_missing_landing_folder_is_a_skip(ingest_settings: Settings, instance: dg.DagsterInstance, warehouse: Warehouse) -> None:
    ingest_settings.landing_dir.rmdir()
    result = tick(instance, warehouse, cursor="kept")
    assert "does not exist" in str(result.skip_reason)
    assert result.cursor == "kept"


# --- the pure plan ------------------------------------------------------------------------------


def landing_file(tmp_path: Path, name: str, changed_ns: int, content: str = "x\n") -> LandingFile:
    path = tmp_path / name
    path.write_text(content + name)
    return LandingFile(path=path, size=path.stat().st_size, changed_ns=changed_ns)


def nothing_loaded(_shas: object) -> set[str]:
    return set()


def test_the_per_tick_budget_defers_files_to_the_next_tick(tmp_path: Path) -> None:
    files = [landing_file(tmp_path, f"f{i}.csv", 10**12 + i) for i in range(5)]

    first = plan_landing(files, LandingCursor(), nothing_loaded, max_files=2)
    second = plan_landing(files, first.cursor, nothing_loaded, max_files=2)
    third = plan_landing(files, second.cursor, nothing_loaded, max_files=2)
    fourth = plan_landing(files, third.cursor, nothing_loaded, max_files=2)

    names = [[n.file.path.name for n in plan.to_load] for plan in (first, second, third, fourth)]
    assert names == [["f0.csv", "f1.csv"], ["f2.csv", "f3.csv"], ["f4.csv"], []]
    assert (first.deferred, third.deferred) == (3, 0)


def test_files_within_the_overlap_below_the_watermark_are_seen_once(tmp_path: Path) -> None:
    newest = landing_file(tmp_path, "newest.csv", 10**12)
    first = plan_landing([newest], LandingCursor(), nothing_loaded)
    # A file with a slightly older change time shows up later (coarse clock, slow rename).
    slightly_older = landing_file(tmp_path, "older.csv", 10**12 - OVERLAP_NS // 2)
    long_ago = landing_file(tmp_path, "ancient.csv", 10**12 - 2 * OVERLAP_NS)

    second = plan_landing([newest, slightly_older, long_ago], first.cursor, nothing_loaded)
    third = plan_landing([newest, slightly_older, long_ago], second.cursor, nothing_loaded)

    assert [n.file.path.name for n in second.to_load] == ["older.csv"]
    assert third.to_load == []
    assert second.cursor.watermark_ns == 10**12


def test_an_unreadable_cursor_starts_over_safely(tmp_path: Path) -> None:
    assert LandingCursor.loads("not json") == LandingCursor()
    assert LandingCursor.loads(json.dumps({"watermark_ns": "x"})) == LandingCursor()
    cursor = LandingCursor(watermark_ns=5, recent={"/a": (1, 5)})
    assert LandingCursor.loads(cursor.dumps()) == cursor

"""cdr_files_sensor through build_sensor_context, and the pure landing plan behind it."""

from __future__ import annotations

import json
import logging
import os
import socket
import time
from datetime import datetime, timezone
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path

import dagster as dg
import pytest
from ingest_samples import call, chunk, load_cdr_file, write_sample

from aisyst_pipelines.assets.ingestion import LOAD_OP_NAME
from aisyst_pipelines.services import ingestion
from aisyst_pipelines.services.ingestion import (
    OVERLAP_NS,
    LandingCursor,
    LandingFile,
    LandingListing,
    file_sha256,
    list_landing_files,
    plan_landing,
)
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.cdr_store import CdrFileIdentity, cdr_file
from jobs.ingestion import JOB_NAME, REJECT_SHARE_CHECK_OP, SENSOR_NAME, cdr_files_sensor
from resources import NotifierResource, WarehouseResource
from resources.ingestion import IngestionConfig


def tick(
    instance: dg.DagsterInstance, warehouse: Warehouse, cursor: str | None = None, notifier: NotifierResource | None = None
) -> dg.SensorResult:
    settings = Settings.from_env()
    resources = {
        "warehouse": WarehouseResource(url=warehouse.url),
        "notifier": notifier or NotifierResource.from_settings(settings),
        "ingestion": IngestionConfig.from_settings(settings),
    }
    context = dg.build_sensor_context(instance=instance, cursor=cursor, sensor_name=SENSOR_NAME, resources=resources)
    result = cdr_files_sensor(context)
    assert isinstance(result, dg.SensorResult)
    return result


def ops_alerts(settings: Settings) -> list[EmailMessage]:
    """The ops alerts the notifier dropped into the outbox (no SMTP configured), oldest first."""
    return [
        BytesParser(policy=policy.default).parsebytes(path.read_bytes())  # type: ignore[misc]
        for path in sorted(settings.outbox_dir.glob("*.eml"))
    ]


def can_create_runs(instance: dg.DagsterInstance, definitions: dg.Definitions, requests: list[dg.RunRequest]) -> None:
    """Create each requested run as the daemon would: it stores a tick's cursor only once they all exist."""
    job = definitions.resolve_job_def(JOB_NAME)
    for request in requests:
        instance.create_run_for_job(job, run_config=request.run_config, tags={**request.tags, "dagster/run_key": request.run_key})


def failure_observations(result: dg.SensorResult) -> dict[str, dict]:
    return {
        str(event.metadata["file"].value): {key: value.value for key, value in event.metadata.items()}
        for event in result.asset_events
        if event.metadata["outcome"].value == "failed"
    }


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
    real = ingestion.file_sha256

    def counting(path: Path) -> str:
        seen.append(Path(path))
        return real(path)

    monkeypatch.setattr(ingestion, "file_sha256", counting)
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
    assert list_landing_files(landing) == LandingListing(files=[], refused={})


def test_a_missing_landing_folder_is_a_skip(ingest_settings: Settings, instance: dg.DagsterInstance, warehouse: Warehouse) -> None:
    ingest_settings.landing_dir.rmdir()
    result = tick(instance, warehouse, cursor="kept")
    assert "does not exist" in str(result.skip_reason)
    assert result.cursor == "kept"


# --- entries the pipeline cannot take: they fail alone, loudly, once ------------------------------


def test_a_file_name_that_is_not_utf8_fails_alone_with_a_failed_row_and_one_alert(
    ingest_settings: Settings, instance: dg.DagsterInstance, warehouse: Warehouse, definitions: dg.Definitions
) -> None:
    landing = ingest_settings.landing_dir
    latin1 = Path(os.fsdecode(os.fsencode(landing / "asterisk") + b"/\xe9t\xe9.csv"))  # "été.csv" in Latin-1
    write_sample(latin1, "asterisk", seed=3)
    good = landing / "good.csv"
    write_sample(good, "canonical_csv")
    shown = f"{landing}/asterisk/\\xe9t\\xe9.csv"

    first = tick(instance, warehouse)

    assert [load_config(request)["path"] for request in first.run_requests] == [str(good)]
    can_create_runs(instance, definitions, first.run_requests)
    failed = failure_observations(first)
    assert list(failed) == [shown] and "not valid UTF-8" in failed[shown]["reason"]
    row = cdr_file(warehouse, file_sha256(latin1))
    assert row is not None
    assert (row.status, row.file_path, row.format, row.rows_loaded) == ("failed", shown, "asterisk", 0)
    assert "not valid UTF-8" in row.failure_reason
    (alert,) = ops_alerts(ingest_settings)
    assert "1 landing entry not loaded" in alert["Subject"]
    assert "asterisk/\\xe9t\\xe9.csv: the file name is not valid UTF-8" in alert.get_content()

    second = tick(instance, warehouse, cursor=first.cursor)  # seen and alerted: not again

    assert not second.run_requests and not failure_observations(second)
    assert len(ops_alerts(ingest_settings)) == 1

    renamed = landing / "asterisk" / "ete.csv"  # what ops do: give it a UTF-8 name (a rename is a new change time)
    latin1.rename(renamed)
    third = tick(instance, warehouse, cursor=second.cursor)

    assert [load_config(request)["path"] for request in third.run_requests] == [str(renamed)]  # failed ≠ loaded


# A code location of just the landing sensor, its job (and the ops checks it leaves out) and the project's
# resources, for a real daemon tick.
LANDING_LOCATION = """
from datetime import timedelta

import dagster as dg
from aisyst_pipelines.assets.ingestion import cdr_reject_share, load_cdr_file_assets
from aisyst_pipelines.definitions import build_resources
from aisyst_pipelines.settings import Settings
from jobs.ingestion import cdr_files_sensor, cdr_ingest_job
from jobs.ops import cdr_freshness_checks

settings = Settings.from_env()
freshness_checks = cdr_freshness_checks(timedelta(hours=settings.cdr_freshness_hours))
defs = dg.Definitions(
    assets=[load_cdr_file_assets],
    asset_checks=[cdr_reject_share, *freshness_checks],
    jobs=[cdr_ingest_job],
    sensors=[cdr_files_sensor],
    resources=build_resources(settings),
)
"""


@pytest.mark.slow
def test_the_daemon_tick_launches_the_other_files_and_stores_its_cursor(
    ingest_settings: Settings, warehouse: Warehouse, tmp_path: Path
) -> None:
    """The sensor daemon stores a tick's cursor only when every requested run was created; a request
    whose run cannot be created fails the tick, every tick, and the requests after it never run. So no
    request may carry what run storage cannot store (dagster/_daemon/sensor.py, docs/ingestion.md)."""
    from dagster._core.test_utils import MockedRunLauncher, create_test_daemon_workspace_context, instance_for_test
    from dagster._core.workspace.load_target import PythonFileTarget
    from dagster._daemon.sensor import execute_sensor_iteration

    landing = ingest_settings.landing_dir
    write_sample(landing / "a.csv", "canonical_csv", seed=1)
    write_sample(Path(os.fsdecode(os.fsencode(landing) + b"/b\xe9.csv")), "canonical_csv", seed=2)
    write_sample(landing / "c.jsonl", "twilio", seed=3)
    location = tmp_path / "landing_location.py"
    location.write_text(LANDING_LOCATION)
    launcher = {"module": MockedRunLauncher.__module__, "class": MockedRunLauncher.__name__}  # runs are created, not executed

    with instance_for_test(overrides={"run_launcher": launcher}) as daemon_instance:
        target = PythonFileTarget(str(location), attribute="defs", working_directory=str(Path.cwd()), location_name="landing")
        with create_test_daemon_workspace_context(target, daemon_instance) as workspace:
            (entry,) = workspace.create_request_context().get_code_location_entries().values()
            assert entry.code_location is not None, entry.load_error
            (repository,) = entry.code_location.get_repositories().values()
            sensor = repository.get_sensor(SENSOR_NAME)
            list(execute_sensor_iteration(workspace, logging.getLogger("test"), None, None))

            (last_tick,) = daemon_instance.get_ticks(sensor.get_remote_origin_id(), sensor.selector_id)
            state = daemon_instance.get_instigator_state(sensor.get_remote_origin_id(), sensor.selector_id)
            launched = sorted(run.tags["aisyst/cdr_file"] for run in daemon_instance.get_runs())

    assert last_tick.status.value == "SUCCESS", last_tick.error
    assert launched == ["a.csv", "c.jsonl"]
    assert LandingCursor.loads(state.instigator_data.cursor).watermark_ns > 0
    assert cdr_file(warehouse, file_sha256(Path(os.fsdecode(os.fsencode(landing) + b"/b\xe9.csv")))).status == "failed"


def test_symlinks_leading_outside_the_landing_directory_are_refused_unread_and_alerted_once(
    ingest_settings: Settings, instance: dg.DagsterInstance, warehouse: Warehouse, hashed: list[Path], tmp_path: Path
) -> None:
    landing = ingest_settings.landing_dir
    elsewhere = tmp_path / "elsewhere"
    write_sample(elsewhere / "secret.csv", "canonical_csv", seed=4)
    write_sample(elsewhere / "folder" / "more.csv", "canonical_csv", seed=5)
    (landing / "link.csv").symlink_to(elsewhere / "secret.csv")
    (landing / "twilio").mkdir()
    (landing / "twilio" / "linked-folder").symlink_to(elsewhere / "folder", target_is_directory=True)
    (landing / "dangling.csv").symlink_to(elsewhere / "gone.csv")
    real = landing / "real.csv"
    write_sample(real, "canonical_csv")
    (landing / "alias.csv").symlink_to("real.csv")  # inside: followed, and its content requested once

    first = tick(instance, warehouse)

    assert len(first.run_requests) == 1 and load_config(first.run_requests[0])["path"] in {str(real), str(landing / "alias.csv")}
    assert all(path.resolve().is_relative_to(landing.resolve()) for path in hashed)  # nothing outside was read
    failed = failure_observations(first)
    assert set(failed) == {str(landing / "link.csv"), str(landing / "twilio" / "linked-folder"), str(landing / "dangling.csv")}
    assert "outside the landing directory" in failed[str(landing / "link.csv")]["reason"]
    assert "not followed" in failed[str(landing / "twilio" / "linked-folder")]["reason"]
    assert all(observation["cdr_files"] == "no row" for observation in failed.values())
    (alert,) = ops_alerts(ingest_settings)
    assert "3 landing entries not loaded" in alert["Subject"]
    assert "twilio/linked-folder: symlink to a folder outside the landing directory" in alert.get_content()

    second = tick(instance, warehouse, cursor=first.cursor)

    assert not second.run_requests and not failure_observations(second)
    assert len(ops_alerts(ingest_settings)) == 1


def test_a_named_pipe_is_refused_without_being_opened(
    ingest_settings: Settings, instance: dg.DagsterInstance, warehouse: Warehouse, hashed: list[Path]
) -> None:
    os.mkfifo(ingest_settings.landing_dir / "calls.csv")  # opening it to hash it would block the sensor for ever
    write_sample(ingest_settings.landing_dir / "good.csv", "canonical_csv")

    result = tick(instance, warehouse)

    assert [Path(load_config(request)["path"]).name for request in result.run_requests] == ["good.csv"]
    assert [path.name for path in hashed] == ["good.csv"]
    (reason,) = [observation["reason"] for observation in failure_observations(result).values()]
    assert reason == "not a regular file but a named pipe (FIFO): not read"
    assert "calls.csv: not a regular file" in ops_alerts(ingest_settings)[0].get_content()


def test_an_alert_that_cannot_be_sent_is_sent_on_a_later_tick(
    ingest_settings: Settings, instance: dg.DagsterInstance, warehouse: Warehouse
) -> None:
    os.mkfifo(ingest_settings.landing_dir / "pipe.csv")
    with socket.socket() as closed:  # a port nobody listens on: the SMTP server is down
        closed.bind(("127.0.0.1", 0))
        down = NotifierResource.from_settings(ingest_settings).model_copy(
            update={"smtp_url": f"smtp://127.0.0.1:{closed.getsockname()[1]}", "timeout_seconds": 2.0}
        )

    first = tick(instance, warehouse, notifier=down)
    second = tick(instance, warehouse, cursor=first.cursor)  # SMTP back (here: the outbox)
    third = tick(instance, warehouse, cursor=second.cursor)

    assert set(failure_observations(first)) == {str(ingest_settings.landing_dir / "pipe.csv")}
    assert not failure_observations(second) and not failure_observations(third)  # recorded once
    (alert,) = ops_alerts(ingest_settings)
    assert "pipe.csv: not a regular file" in alert.get_content()
    assert LandingCursor.loads(third.cursor).unalerted == {}


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

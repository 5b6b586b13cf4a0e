"""The nightly schedule, built from the daily partitions: 02:00 UTC by default, configurable; each tick
requests the partition of the day that just ended, whose run reconciles as of that day's end plus the
settle lag, through the whole code location's job with the code location's `reconciliation` resource
(repair, settle lag, tolerance from the environment)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from aisyst_pipelines.assets.reconciliation import meter_reconciliation
from aisyst_pipelines.definitions import build_resources
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.simulation import VoiceServerFaults
from jobs.reconciliation import (
    JOB_NAME,
    SCHEDULE_NAME,
    nightly_schedule,
    one_off_run_config,
    partition_key,
    reconciliation_job,
    run_config,
)
from resources import WarehouseResource
from resources.reconciliation import ReconciliationConfig

from .conftest import ReconWorld

UTC = timezone.utc
TICK = datetime(2026, 3, 14, 2, 0, tzinfo=UTC)


def settings_for(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"AISYST_HOME": str(tmp_path), **env})


def reconciliation_resource(settings: Settings) -> tuple[bool, int, int]:
    """The code location's `reconciliation` resource, as definitions.py binds it."""
    resource = build_resources(settings)["reconciliation"]
    assert isinstance(resource, ReconciliationConfig)
    return resource.repair, resource.settle_lag_minutes, resource.tolerance_minutes


def world_definitions(world: ReconWorld, settings: Settings) -> dg.Definitions:
    """What definitions.py lists for the reconciliation, on the test world's Stripe and warehouse."""
    return dg.Definitions(
        assets=[meter_reconciliation], jobs=[reconciliation_job], schedules=[nightly_schedule(settings.reconciliation_cron)],
        resources={"stripe": world.stripe, "warehouse": WarehouseResource(url=world.warehouse.url),
                   "reconciliation": ReconciliationConfig.from_settings(settings)},
    )


def test_defaults_nightly_at_two_utc_report_only(tmp_path: Path) -> None:
    settings = settings_for(tmp_path)
    schedule = resolved(nightly_schedule(settings.reconciliation_cron), settings)
    assert schedule.name == SCHEDULE_NAME and schedule.job_name == JOB_NAME
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    (request,) = evaluate(schedule, TICK).run_requests
    assert request.partition_key == "2026-03-13"  # the day that ended two hours before
    assert request.run_config == {}  # as_of follows from the partition
    assert reconciliation_resource(settings) == (False, 60, 0)  # report only, 1 h settle lag, no tolerance
    assert partition_key(TICK, 60) == "2026-03-13"  # `aisyst reconcile --as-of` and the demo run under it


def resolved(schedule: object, settings: Settings) -> dg.ScheduleDefinition:
    """The partitioned schedule resolved against the assets its job targets, as the code location does."""
    definitions = dg.Definitions(
        assets=[meter_reconciliation], jobs=[reconciliation_job], schedules=[schedule], resources=build_resources(settings)
    )
    return definitions.resolve_schedule_def(SCHEDULE_NAME)


def evaluate(schedule: dg.ScheduleDefinition, tick: datetime) -> dg.ScheduleExecutionData:
    with dg.instance_for_test() as instance:
        return schedule.evaluate_tick(dg.build_schedule_context(instance=instance, scheduled_execution_time=tick))


def test_a_cron_that_is_not_daily_fails_the_load(tmp_path: Path) -> None:
    import pytest

    with pytest.raises(ValueError, match="daily time"):
        nightly_schedule("*/15 * * * *")


def test_cron_repair_lag_and_tolerance_come_from_the_environment(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, AISYST_RECONCILIATION_CRON="30 3 * * *", AISYST_RECONCILIATION_REPAIR="true",
                            AISYST_RECONCILIATION_SETTLE_LAG_MINUTES="120", AISYST_RECONCILIATION_TOLERANCE_MINUTES="2")
    schedule = resolved(nightly_schedule(settings.reconciliation_cron), settings)
    assert schedule.cron_schedule == "30 3 * * *"
    (request,) = evaluate(schedule, TICK.replace(hour=3, minute=30)).run_requests
    assert request.partition_key == "2026-03-13"
    assert reconciliation_resource(settings) == (True, 120, 2)


def test_the_scheduled_run_reconciles(recon_world: ReconWorld, tmp_path: Path) -> None:
    world = recon_world
    world.sign_up_all(["acct_a"])
    world.load_calls(days=10, seed=2)
    world.plan_voice_server()
    world.send(TICK)
    defs = world_definitions(world, settings_for(tmp_path))
    schedule = defs.resolve_schedule_def(SCHEDULE_NAME)
    job = defs.resolve_job_def(JOB_NAME)
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=TICK)
        (request,) = schedule.evaluate_tick(context).run_requests
        assert dg.validate_run_config(job, request.run_config)
        result = job.execute_in_process(
            run_config=request.run_config, instance=instance, tags=request.tags, partition_key=request.partition_key
        )
        assert result.success
        # The partition of 13 March reconciles up to midnight after it (end of day + settle lag).
        rows = world.rows(result)
        assert [(r["status"], r["window_end"]) for r in rows] == [("match", datetime(2026, 3, 14, tzinfo=UTC))]
        assert result.get_asset_check_evaluations()[0].passed
        assert run_config()["ops"]["meter_reconciliation"]["config"].get("as_of") is None
        # A backfill of the same day a week later compares the same windows.
        later = job.execute_in_process(instance=instance, partition_key="2026-03-13")
        assert [(r["status"], r["window_end"]) for r in world.rows(later)] == [("match", datetime(2026, 3, 14, tzinfo=UTC))]
        materialized = instance.get_materialized_partitions(dg.AssetKey("meter_reconciliation"))
        assert materialized == {"2026-03-13"}


def test_a_repairing_run_keeps_the_configured_lag_and_tolerance(recon_world: ReconWorld, tmp_path: Path) -> None:
    """The demo's run turns repair on for itself; the rest of the resource stays as the environment says."""
    world = recon_world
    world.sign_up_all(["acct_a"])
    world.load_calls(days=10, seed=3)
    billed = sorted(c.call_id for c in world.metered_calls() if c.billable_minutes)
    world.plan_voice_server(VoiceServerFaults(drop=frozenset(billed[:1])))
    world.send(TICK)
    settings = settings_for(tmp_path, AISYST_RECONCILIATION_SETTLE_LAG_MINUTES="90", AISYST_RECONCILIATION_TOLERANCE_MINUTES="1000")
    with dg.instance_for_test() as instance:
        job = world_definitions(world, settings).resolve_job_def(JOB_NAME)
        result = job.execute_in_process(run_config=one_off_run_config(settings, repair=True, as_of=TICK), instance=instance,
                                        partition_key=partition_key(TICK, settings.reconciliation_settle_lag_minutes))
    assert result.success
    metadata = result.asset_materializations_for_node("meter_reconciliation")[0].metadata
    assert metadata["repair"].value is True and metadata["settle_lag_minutes"].value == 90
    assert result.get_asset_check_evaluations()[0].metadata["tolerance_minutes"].value == 1000
    assert len(world.ledger()) == 1

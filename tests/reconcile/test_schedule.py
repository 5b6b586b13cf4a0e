"""The nightly schedule: 02:00 UTC by default, configurable; the tick's time becomes `as_of`, and the
run it requests reconciles through the whole code location's job."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from aisyst_pipelines.settings import Settings
from jobs.reconciliation import JOB_NAME, SCHEDULE_NAME, build_defs, nightly_schedule, run_config
from resources import WarehouseResource

from .conftest import ReconWorld

UTC = timezone.utc
TICK = datetime(2026, 3, 14, 2, 0, tzinfo=UTC)


def settings_for(tmp_path: Path, **env: str) -> Settings:
    return Settings.from_env({"AISYST_HOME": str(tmp_path), **env})


def test_defaults_nightly_at_two_utc_report_only(tmp_path: Path) -> None:
    schedule = nightly_schedule(settings_for(tmp_path))
    assert schedule.name == SCHEDULE_NAME and schedule.job_name == JOB_NAME
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    context = dg.build_schedule_context(scheduled_execution_time=TICK)
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.run_config == {"ops": {"meter_reconciliation": {"config": {
        "repair": False, "settle_lag_minutes": 60, "tolerance_minutes": 0, "as_of": "2026-03-14T02:00:00+00:00"}}}}
    assert request.tags["aisyst/as_of"] == TICK.isoformat()


def test_cron_repair_lag_and_tolerance_come_from_the_environment(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, AISYST_RECONCILIATION_CRON="30 3 * * *", AISYST_RECONCILIATION_REPAIR="true",
                            AISYST_RECONCILIATION_SETTLE_LAG_MINUTES="120", AISYST_RECONCILIATION_TOLERANCE_MINUTES="2")
    schedule = nightly_schedule(settings)
    assert schedule.cron_schedule == "30 3 * * *"
    (request,) = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=TICK)).run_requests
    assert request.run_config["ops"]["meter_reconciliation"]["config"] == {
        "repair": True, "settle_lag_minutes": 120, "tolerance_minutes": 2, "as_of": TICK.isoformat()}


def test_the_scheduled_run_reconciles(recon_world: ReconWorld, tmp_path: Path) -> None:
    world = recon_world
    world.subscribe(["acct_a"])
    world.load_calls(days=10, seed=2)
    world.plan_voice_server()
    world.send(TICK)
    settings = settings_for(tmp_path)
    defs = dg.Definitions.merge(build_defs(settings), dg.Definitions(
        resources={"stripe": world.stripe, "warehouse": WarehouseResource(url=world.warehouse.url)}))
    schedule = defs.resolve_schedule_def(SCHEDULE_NAME)
    (request,) = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=TICK)).run_requests
    job = defs.resolve_job_def(JOB_NAME)
    assert dg.validate_run_config(job, request.run_config)
    with dg.instance_for_test() as instance:
        result = job.execute_in_process(run_config=request.run_config, instance=instance, tags=request.tags)
    assert result.success
    rows = world.rows(result)
    assert [(r["status"], r["window_end"]) for r in rows] == [("match", datetime(2026, 3, 14, tzinfo=UTC))]
    assert result.get_asset_check_evaluations()[0].passed
    assert run_config(settings)["ops"]["meter_reconciliation"]["config"].get("as_of") is None

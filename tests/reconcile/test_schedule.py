"""The nightly schedule: 02:00 UTC by default, configurable; the tick's time becomes `as_of`, and the
run it requests reconciles through the whole code location's job with the code location's
`reconciliation` resource (repair, settle lag, tolerance from the environment)."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import dagster as dg

from aisyst_pipelines.assets.reconciliation import meter_reconciliation
from aisyst_pipelines.definitions import build_resources
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.simulation import VoiceServerFaults
from jobs.reconciliation import JOB_NAME, SCHEDULE_NAME, nightly_schedule, one_off_run_config, reconciliation_job, run_config
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
    schedule = nightly_schedule(settings.reconciliation_cron)
    assert schedule.name == SCHEDULE_NAME and schedule.job_name == JOB_NAME
    assert schedule.cron_schedule == "0 2 * * *" and schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    context = dg.build_schedule_context(scheduled_execution_time=TICK)
    (request,) = schedule.evaluate_tick(context).run_requests
    assert request.run_config == {"ops": {"meter_reconciliation": {"config": {"as_of": "2026-03-14T02:00:00+00:00"}}}}
    assert request.tags["aisyst/as_of"] == TICK.isoformat()
    assert reconciliation_resource(settings) == (False, 60, 0)  # report only, 1 h settle lag, no tolerance


def test_cron_repair_lag_and_tolerance_come_from_the_environment(tmp_path: Path) -> None:
    settings = settings_for(tmp_path, AISYST_RECONCILIATION_CRON="30 3 * * *", AISYST_RECONCILIATION_REPAIR="true",
                            AISYST_RECONCILIATION_SETTLE_LAG_MINUTES="120", AISYST_RECONCILIATION_TOLERANCE_MINUTES="2")
    schedule = nightly_schedule(settings.reconciliation_cron)
    assert schedule.cron_schedule == "30 3 * * *"
    (request,) = schedule.evaluate_tick(dg.build_schedule_context(scheduled_execution_time=TICK)).run_requests
    assert request.run_config["ops"]["meter_reconciliation"]["config"] == {"as_of": TICK.isoformat()}
    assert reconciliation_resource(settings) == (True, 120, 2)


def test_the_scheduled_run_reconciles(recon_world: ReconWorld, tmp_path: Path) -> None:
    world = recon_world
    world.sign_up_all(["acct_a"])
    world.load_calls(days=10, seed=2)
    world.plan_voice_server()
    world.send(TICK)
    defs = world_definitions(world, settings_for(tmp_path))
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
    assert run_config()["ops"]["meter_reconciliation"]["config"].get("as_of") is None


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
        result = job.execute_in_process(run_config=one_off_run_config(settings, repair=True, as_of=TICK), instance=instance)
    assert result.success
    metadata = result.asset_materializations_for_node("meter_reconciliation")[0].metadata
    assert metadata["repair"].value is True and metadata["settle_lag_minutes"].value == 90
    assert result.get_asset_check_evaluations()[0].metadata["tolerance_minutes"].value == 1000
    assert len(world.ledger()) == 1

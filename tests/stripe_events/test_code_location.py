"""The events sensor as the code location wires it: the resources bound in definitions.py, a real
Dagster instance, the emulator as Stripe (STRIPE_SECRET_KEY unset), ops mail to the outbox."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import func, select

from aisyst_pipelines.definitions import defs
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.schema import stripe_invoices

from .events_helpers import events_world


@pytest.fixture
def location(stripe_emulator, warehouse: Warehouse, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dg.Definitions:
    monkeypatch.setenv("AISYST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AISYST_WAREHOUSE_URL", warehouse.url)
    monkeypatch.setenv("AISYST_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("STRIPE_API_BASE", stripe_emulator.url)
    monkeypatch.setenv("AISYST_PII_KEY", "0" * 64)
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    monkeypatch.delenv("AISYST_SMTP_URL", raising=False)
    return defs()


def test_the_code_location_runs_the_events_sensor(location: dg.Definitions, stripe_emulator, stripe_resource,
                                                  warehouse: Warehouse) -> None:
    dg.Definitions.validate_loadable(location)
    sensor = location.resolve_sensor_def("stripe_events_sensor")
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.minimum_interval_seconds == 5
    assert location.resolve_assets_def("stripe_invoices") is not None

    world = events_world(stripe_emulator, stripe_resource)
    world.subscribe(world.customer("ACME"))
    with dg.instance_for_test() as instance:
        context = dg.build_sensor_context(instance=instance, definitions=location, resources=dict(location.resources or {}))
        result = sensor.evaluate_tick(context)
    assert [e.asset_key for e in result.asset_events] == [dg.AssetKey("stripe_invoices")]
    with warehouse.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(stripe_invoices)) == 1

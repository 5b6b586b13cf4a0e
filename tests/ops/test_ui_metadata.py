"""Readable in the UI: every asset of the code location says who owns it, its domain, what it is and
which warehouse table holds it (with the columns of warehouse/schema.py); the per-day work is
partitioned by UTC day."""

from __future__ import annotations

from pathlib import Path

import dagster as dg
import pytest

from aisyst_pipelines.definitions import defs
from aisyst_pipelines.warehouse.schema import metadata as warehouse_schema

DOMAIN_GROUPS = {
    "call_records": "cdr", "usage_daily": "cdr",
    "stripe_customers": "stripe", "stripe_subscriptions": "stripe", "stripe_invoices": "stripe",
    "usage_by_period": "usage", "meter_reconciliation": "reconciliation",
    "invoice_annotations": "invoicing", "invoice_branding": "invoicing", "usage_alerts": "alerts",
    "stripe_invoice_previews": "stripe", "invoice_audits": "invoicing",
}


@pytest.fixture
def definitions(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> dg.Definitions:
    monkeypatch.setenv("AISYST_HOME", str(tmp_path))
    monkeypatch.setenv("AISYST_PII_KEY", "ab" * 32)
    return defs()


def test_every_asset_has_owner_domain_group_description_and_its_tables_columns(definitions: dg.Definitions) -> None:
    specs = {spec.key.to_user_string(): spec for spec in definitions.resolve_all_asset_specs()}
    assert set(specs) == set(DOMAIN_GROUPS)
    for name, spec in specs.items():
        assert spec.owners == ["team:billing-data"], name
        assert spec.group_name == DOMAIN_GROUPS[name], name
        assert spec.description and len(spec.description) > 40, name
        table = spec.metadata["dagster/table_name"]
        assert table in warehouse_schema.tables, name
        schema = spec.metadata["dagster/column_schema"]
        assert isinstance(schema, dg.TableSchema)
        assert [c.name for c in schema.columns] == [c.name for c in warehouse_schema.tables[table].columns], name
    call_id = specs["call_records"].metadata["dagster/column_schema"].columns[0]
    assert (call_id.name, call_id.type, call_id.constraints.nullable) == ("call_id", "VARCHAR(128)", False)
    ended_at = next(c for c in specs["call_records"].metadata["dagster/column_schema"].columns if c.name == "ended_at")
    assert ended_at.type == "timestamp (UTC)"


def test_stripe_invoices_has_lineage(definitions: dg.Definitions) -> None:
    specs = {spec.key.to_user_string(): spec for spec in definitions.resolve_all_asset_specs()}
    assert {dep.asset_key.to_user_string() for dep in specs["stripe_invoices"].deps} == {"stripe_subscriptions", "invoice_annotations"}


def test_reconciliation_and_alerts_are_partitioned_by_utc_day(definitions: dg.Definitions) -> None:
    specs = {spec.key.to_user_string(): spec for spec in definitions.resolve_all_asset_specs()}
    for name in ("meter_reconciliation", "usage_alerts"):
        partitions = specs[name].partitions_def
        assert isinstance(partitions, dg.DailyPartitionsDefinition) and partitions.timezone == "UTC", name
    # The demo month (September 2026) is in the past: its days are partitions ops can backfill.
    assert "2026-09-15" in specs["meter_reconciliation"].partitions_def.get_partition_keys()
    assert specs["usage_by_period"].partitions_def is None  # recomputed whole, for the current periods


def test_every_sensor_and_schedule_is_running_by_default_and_described(definitions: dg.Definitions) -> None:
    repository = definitions.get_repository_def()
    names = {s.name for s in repository.sensor_defs} | {s.name for s in repository.schedule_defs}
    assert {"ops_check_failure_alert", "ops_tick_failure_alert", "cdr_freshness_sensor", "nightly_meter_reconciliation",
            "usage_alerts_daily"} <= names
    assert not {"cdr_freshness_hourly"} & names  # replaced by Dagster's freshness check and its sensor
    for sensor in repository.sensor_defs:
        assert sensor.default_status == dg.DefaultSensorStatus.RUNNING and sensor.description, sensor.name
    for schedule in repository.schedule_defs:
        assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING, schedule.name

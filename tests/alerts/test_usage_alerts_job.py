"""The usage-alerts job through real Dagster execution (the project's Definitions, the Stripe emulator
with a test clock, both warehouse backends) and its 06:00 UTC schedule, built from the daily
partitions, through build_schedule_context."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import dagster as dg
import pytest
from sqlalchemy import insert
from stripe_world import StripeWorld

from aisyst_pipelines.assets.stripe_sync import usage_by_period
from aisyst_pipelines.assets.usage_alerts import usage_alerts, usage_alerts_delivered
from aisyst_pipelines.billing.thresholds import SilencePolicy
from aisyst_pipelines.definitions import defs
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.schema import call_records
from jobs.usage_alerts import JOB_NAME, SCHEDULE_NAME, partition_key, run_config
from resources import CatalogResource, UsageAlertsConfig, WarehouseResource

from .alerts_world import MARCH, AlertsWorld, outbox_notifier, read_eml, text_of

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)  # the test clock starts at midnight: periods renew at 00:00
APRIL = datetime(2026, 4, 1, tzinfo=timezone.utc)


@pytest.fixture
def location(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, warehouse: Warehouse, stripe_emulator) -> Iterator[Path]:  # noqa: ANN001
    """The environment `defs()` reads: this warehouse, the emulator (no Stripe key), an outbox."""
    for name in ("STRIPE_SECRET_KEY", "AISYST_SMTP_URL", "AISYST_ALERTS_TIMEZONE", "AISYST_ALERT_THRESHOLDS", "AISYST_OPS_EMAIL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AISYST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AISYST_WAREHOUSE_URL", warehouse.url)
    monkeypatch.setenv("STRIPE_API_BASE", stripe_emulator.url)
    monkeypatch.setenv("AISYST_OUTBOX_DIR", str(tmp_path / "outbox"))
    monkeypatch.setenv("AISYST_PII_KEY", "ab" * 32)
    yield tmp_path / "outbox"


def add_calls(warehouse: Warehouse, account: str, minutes: int, day: datetime, first: int) -> None:
    """Calls of an account not mapped yet (customer_id NULL): the job's Stripe sync maps them."""
    with warehouse.begin() as connection:
        rows = []
        for n in range(minutes // 50):
            ended = day + timedelta(minutes=30 * n + 50)  # overlapping calls: several lines in use
            started = ended - timedelta(minutes=50)
            rows.append(dict(
                call_id=f"{account}-{first + n}", account_code=account, customer_id=None, direction="inbound",
                disposition="completed", started_at=started, answered_at=started, ended_at=ended,
                billable_seconds=3000, billable_minutes=50, content_hash="x", source_file="f.csv",
                source_sha256="1" * 64, source_line=first + n, ingested_at=ended,
            ))
        connection.execute(insert(call_records), rows)


def run_job(as_of: datetime) -> dg.ExecuteInProcessResult:
    job = defs().resolve_job_def(JOB_NAME)
    return job.execute_in_process(
        run_config=run_config(as_of), partition_key=partition_key(as_of), instance=dg.DagsterInstance.ephemeral()
    )


def flagged(metadata: dict) -> list[dict[str, str]]:
    """The rows of the flagged_customers Markdown table, by column."""
    header, _rule, *rows = metadata["flagged_customers"].value.splitlines()
    names = [cell.strip() for cell in header.strip("|").split("|")]
    return [dict(zip(names, (cell.strip() for cell in row.strip("|").split("|")), strict=True)) for row in rows]


def alert_metadata(result: dg.ExecuteInProcessResult) -> dict:
    [materialization] = result.asset_materializations_for_node("usage_alerts")
    return materialization.metadata


def mails(outbox: Path) -> list:
    return [read_eml(p) for p in sorted(outbox.glob("*.eml"))]


def test_job_alerts_with_portal_links_reruns_quietly_and_re_arms_after_renewal(
    location: Path, warehouse: Warehouse, stripe_resource, stripe_emulator  # noqa: ANN001
) -> None:
    world = StripeWorld.build(stripe_emulator, stripe_resource, T0)
    customers = {account: world.sign_up(account, tier).customer_id for account, tier in (("ACME", 1), ("BETA", 2), ("GIGA", 3))}
    add_calls(warehouse, "ACME", 400, T0 + timedelta(days=8), 0)  # 80 % of Tier 1
    add_calls(warehouse, "BETA", 750, T0 + timedelta(days=8), 0)  # 75 % of Tier 2
    add_calls(warehouse, "GIGA", 5000, T0 + timedelta(days=2), 0)  # unlimited
    world.advance(T0 + timedelta(days=10, hours=6))

    result = run_job(T0 + timedelta(days=10, hours=6))
    assert result.success
    metadata = alert_metadata(result)
    assert metadata["alerts_sent_80pct"].value == 1 and metadata["alerts_sent_100pct"].value == 0
    assert metadata["customers_at_80pct"].value == 1 and metadata["customers_at_100pct"].value == 0
    assert metadata["subscriptions_checked"].value == 2 and metadata["delivery_channel"].value == "outbox"
    [record] = flagged(metadata)
    assert record["customer id"] == customers["ACME"] and record["threshold % reached"] == "80"
    assert record["minutes used"] == "400" and record["alert status"] == "notified"
    assert record["days left"] == "21"  # counted from the test clock's time
    [check] = result.get_asset_check_evaluations()
    assert check.check_name == "usage_alerts_delivered" and check.passed

    customer_mails = [m for m in mails(location) if m["To"] == "billing@acme.example"]
    [mail] = customer_mails
    assert f"{stripe_emulator.url}/_emulator/portal/" in text_of(mail)
    assert len(stripe_emulator.requests("/v1/billing_portal/sessions", "POST")) == 1
    [digest] = [m for m in mails(location) if m["To"] == "billing-ops@aisyst.example"]
    assert customers["ACME"] in text_of(digest)

    rerun = run_job(T0 + timedelta(days=10, hours=9))  # the same day again: nothing new
    assert rerun.success and alert_metadata(rerun)["alerts_sent_80pct"].value == 0
    assert alert_metadata(rerun)["ops_digest_sent"].value == 0 and len(mails(location)) == 2

    # Renewal at 00:00 on April 1 (the test clock renews the subscriptions); 400 minutes by 06:00.
    world.advance(APRIL + timedelta(hours=6))
    add_calls(warehouse, "ACME", 400, APRIL, 100)  # eight calls ending 00:50 … 04:20
    result = run_job(APRIL + timedelta(hours=6))
    assert result.success
    metadata = alert_metadata(result)
    [record] = flagged(metadata)
    assert record["minutes used"] == "400" and record["days left"] == "30"
    assert metadata["alerts_sent_80pct"].value == 1
    april_mail = [m for m in mails(location) if m["To"] == "billing@acme.example"][-1]
    assert "renews on 1 May 2026" in text_of(april_mail)


def test_schedule_requests_yesterdays_partition_at_6_utc(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("AISYST_HOME", str(tmp_path))
    monkeypatch.setenv("AISYST_PII_KEY", "cd" * 32)
    monkeypatch.setenv("AISYST_ALERT_THRESHOLDS", "100,75")
    definitions = defs()
    schedule = definitions.resolve_schedule_def(SCHEDULE_NAME)
    assert schedule.cron_schedule == "0 6 * * *" and schedule.execution_timezone == "UTC"
    assert schedule.default_status == dg.DefaultScheduleStatus.RUNNING
    with dg.instance_for_test() as instance:
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=datetime(2026, 3, 2, 6, tzinfo=timezone.utc))
        request = schedule.evaluate_tick(context).run_requests[0]
    assert request.partition_key == "2026-03-01"
    assert request.run_config == {}  # as of the end of the day; thresholds and silence policy are the resource's:
    config = definitions.resources["usage_alerts_config"]
    assert config.threshold_percentages() == (75, 100) and config.silence_policy() == SilencePolicy(14, 2, 8)
    job = definitions.resolve_job_def(JOB_NAME)
    assert dg.validate_run_config(job, request.run_config)
    assert job.asset_layer.selected_asset_keys == {
        dg.AssetKey(k)
        for k in ("stripe_customers", "stripe_subscriptions", "usage_by_period", "stripe_invoice_previews", "usage_alerts")
    }
    assert job.tags["dagster/max_retries"] == "2"  # a failed day is retried by Dagster (run_retries)
    assert partition_key(datetime(2026, 3, 2, 6, tzinfo=timezone.utc)) == "2026-03-01"


def test_the_asset_takes_thresholds_and_tiers_from_its_resources(
    warehouse: Warehouse, stripe_resource, stripe_emulator, tmp_path: Path  # noqa: ANN001
) -> None:
    """Every run alerts at the usage_alerts_config resource's thresholds (here 75 %, not the default 80/100)."""
    world = AlertsWorld.create(stripe_emulator, stripe_resource, warehouse, tmp_path / "outbox")
    world.customer("ACME")
    world.subscription("ACME", 500, MARCH, APRIL)
    world.calls("ACME", 375, MARCH + timedelta(days=9))  # 75 %
    result = dg.materialize(
        [usage_by_period, usage_alerts, usage_alerts_delivered],
        resources={
            "warehouse": WarehouseResource(url=warehouse.url),
            "notifier": outbox_notifier(world.outbox),
            "stripe": stripe_resource,
            "catalog": CatalogResource(),
            "usage_alerts_config": UsageAlertsConfig(thresholds=[100, 75]),
        },
        run_config=run_config(MARCH + timedelta(days=10, hours=6)),
        partition_key=partition_key(MARCH + timedelta(days=10, hours=6)),
        instance=dg.DagsterInstance.ephemeral(),
    )
    [materialization] = result.asset_materializations_for_node("usage_alerts")
    assert materialization.metadata["alerts_sent_75pct"].value == 1
    assert materialization.metadata["alerts_sent_100pct"].value == 0
    assert "alerts_sent_80pct" not in materialization.metadata
    [mail] = world.customer_mails()
    assert "Tier 2 includes 1,000 minutes" in text_of(mail)  # the upgrade hint from the catalog's tiers file


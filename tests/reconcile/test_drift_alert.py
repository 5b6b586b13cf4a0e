"""Red means someone is told: a failed `meter_drift_within_tolerance` (a real reconciliation run on the
emulator, both warehouse backends) becomes exactly one ops e-mail over real SMTP (aiosmtpd), naming
the offenders and the runbook section; later ticks, from the stored cursor, send nothing again."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import dagster as dg
import pytest
from alerts.conftest import RecordingHandler, SmtpServer, _start

from aisyst_pipelines.assets.reconciliation import meter_reconciliation
from aisyst_pipelines.simulation import VoiceServerFaults
from jobs.ops import ops_check_failure_alert
from resources import NotifierResource, WarehouseResource
from resources.reconciliation import ReconciliationConfig

from .conftest import ReconWorld

AS_OF = datetime(2026, 3, 14, 2, 0, tzinfo=timezone.utc)


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    yield from _start(RecordingHandler())


def tick(instance: dg.DagsterInstance, world: ReconWorld, smtp: SmtpServer, cursor: str | None) -> dg.SensorResult:
    """One evaluation of the sensor as the daemon would run it: the code location's definitions (for
    the check's description), the instance, the stored cursor."""
    notifier = NotifierResource(smtp_url=smtp.url(), outbox_dir="unused", sender="billing@aisyst.example",
                                ops_recipients=["ops@aisyst.example"])
    definitions = dg.Definitions(
        assets=[meter_reconciliation], sensors=[ops_check_failure_alert],
        resources={"stripe": world.stripe, "warehouse": WarehouseResource(url=world.warehouse.url),
                   "reconciliation": ReconciliationConfig(), "notifier": notifier},
    )
    with dg.build_sensor_context(instance=instance, cursor=cursor, definitions=definitions,
                                 sensor_name=ops_check_failure_alert.name, resources={"notifier": notifier}) as context:
        result = ops_check_failure_alert(context)
    assert isinstance(result, dg.SensorResult)
    return result


def test_a_failed_drift_check_sends_one_ops_email_with_offenders_and_runbook(
    recon_world: ReconWorld, smtp_server: SmtpServer
) -> None:
    world = recon_world
    world.sign_up_all(["acct_a", "acct_b"])
    world.load_calls(days=10, seed=11)
    calls = world.metered_calls()
    dropped = sorted(c.call_id for c in calls if c.customer_id == world.customers["acct_a"] and c.billable_minutes)[:3]
    world.plan_voice_server(VoiceServerFaults(drop=frozenset(dropped)))
    world.send(AS_OF)

    with dg.instance_for_test() as instance:
        started = tick(instance, world, smtp_server, None)  # the first tick starts from now
        assert smtp_server.received == []
        result = world.reconcile(AS_OF, instance)
        (evaluation,) = result.get_asset_check_evaluations()
        assert not evaluation.passed
        told = tick(instance, world, smtp_server, started.cursor)
        again = tick(instance, world, smtp_server, told.cursor)  # the next tick, e.g. after a daemon restart
        passing = world.reconcile(AS_OF, instance, tolerance_minutes=10_000)  # a passing evaluation: no e-mail
        assert passing.get_asset_check_evaluations()[0].passed
        tick(instance, world, smtp_server, again.cursor)

    (mail,) = smtp_server.received
    message = mail.message
    assert mail.rcpt_tos == ["ops@aisyst.example"]
    assert " ".join(str(message["Subject"]).split()) == "[aisyst] check failed: meter_reconciliation meter_drift_within_tolerance"
    body = message.get_content()
    assert f"run {result.run_id} of job {result.dagster_run.job_name} (partition 2026-03-13)" in body
    assert "What it checks: Fails (ERROR) when a customer-period drifts beyond the tolerance" in body
    assert "Result: 1 customer-period(s) drift beyond 0 min without repair" in body
    assert "| account | period | delta min | cause | unrepaired min |" in body
    assert "| acct_a | 2026-03-04 14:23 – " in body and "acct_b" not in body
    assert "Runbook: docs/operations.md#meter_reconciliation_job" in body
    assert "- tolerance_minutes: 0" in body
    assert again.skip_reason is not None and "no failed ERROR check" in again.skip_reason.skip_message

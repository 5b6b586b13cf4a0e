"""A sensor failing three ticks in a row is e-mailed once per failing streak: real daemon ticks
(`execute_sensor_iteration`, as `dagster-daemon` runs them) of a sensor that raises, then
`ops_tick_failure_alert` evaluated with the cursor it stored, over real SMTP (aiosmtpd)."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from alerts.conftest import RecordingHandler, SmtpServer, _start

from jobs.ops import ops_tick_failure_alert
from resources import NotifierResource

FLAKY_LOCATION = """
from pathlib import Path

import dagster as dg

BROKEN = Path(__file__).with_name("broken")


@dg.sensor(name="landing_watch", minimum_interval_seconds=1, default_status=dg.DefaultSensorStatus.RUNNING)
def landing_watch(context):
    if BROKEN.exists():
        raise RuntimeError("landing share unreachable")
    return dg.SkipReason("nothing new")


defs = dg.Definitions(sensors=[landing_watch])
"""


@pytest.fixture
def smtp_server() -> Iterator[SmtpServer]:
    yield from _start(RecordingHandler())


def test_three_failed_ticks_in_a_row_send_one_email_per_failing_streak(tmp_path: Path, smtp_server: SmtpServer) -> None:
    from dagster._core.test_utils import create_test_daemon_workspace_context
    from dagster._core.workspace.load_target import PythonFileTarget
    from dagster._daemon.sensor import execute_sensor_iteration

    location = tmp_path / "flaky_location.py"
    location.write_text(FLAKY_LOCATION)
    broken = tmp_path / "broken"
    notifier = NotifierResource(smtp_url=smtp_server.url(), outbox_dir=str(tmp_path / "outbox"),
                                sender="billing@aisyst.example", ops_recipients=["ops@aisyst.example"])
    cursor: str | None = None

    with dg.instance_for_test() as instance:
        target = PythonFileTarget(str(location), attribute="defs", working_directory=str(tmp_path), location_name="flaky")
        with create_test_daemon_workspace_context(target, instance) as workspace:

            def daemon_tick() -> None:
                time.sleep(1.1)  # the sensor's minimum interval
                list(execute_sensor_iteration(workspace, logging.getLogger("test"), None, None))

            def alert_tick() -> int:
                nonlocal cursor
                before = len(smtp_server.received)
                with dg.build_sensor_context(instance=instance, cursor=cursor, resources={"notifier": notifier}) as context:
                    result = ops_tick_failure_alert(context)
                cursor = result.cursor  # stored by the daemon after the tick: survives a restart
                return len(smtp_server.received) - before

            broken.touch()
            for _ in range(2):
                daemon_tick()
                assert alert_tick() == 0  # one or two failures are not a streak yet
            daemon_tick()
            assert alert_tick() == 1  # the third in a row
            daemon_tick()
            assert alert_tick() == 0  # still failing: told already
            broken.unlink()
            daemon_tick()
            assert alert_tick() == 0  # recovered
            broken.touch()
            for _ in range(3):
                daemon_tick()
            assert alert_tick() == 1  # a new streak

    first, second = smtp_server.received
    assert " ".join(str(first.message["Subject"]).split()) == "[aisyst] sensor landing_watch failing: 3 ticks in a row"
    body = first.message.get_content()
    assert "RuntimeError: landing share unreachable" in body
    assert "Runbook: docs/operations.md#a-sensor-or-schedule-keeps-failing" in body
    assert second.message["Subject"] == first.message["Subject"]
    # The cursor says, readably, which streak ops were told about (cleared once the sensor recovers).
    assert list(json.loads(cursor or "{}")["failing_since"]) == ["sensor landing_watch"]

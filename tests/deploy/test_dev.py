"""`aisyst dev`: the UI, the daemon and the emulator on a home, every sensor ticking without a failure,
everything stopped on Ctrl-C or `kill`; a one-off command killed while its deployment runs leaves no process
behind; and the one line a sensor fails with when Stripe is down."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import stripe

from aisyst_pipelines.deployment import DEV_SERVER_FILE, LOCATION_NAME, REPOSITORY_NAME, free_port
from resources.stripe import StripeResource

from deploy_processes import command_environment, processes_of, wait_for_processes, wait_until_gone

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
SENSORS = ("cdr_files_sensor", "draft_invoice_sensor", "stripe_events_sensor")
TICKS = """query Ticks($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) { ... on Sensor {
  sensorState { status ticks(limit: 10) { status error { message } } } } } }"""


def sensor_state(url: str, name: str) -> dict[str, Any]:
    selector = {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY_NAME, "sensorName": name}
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": TICKS, "variables": {"selector": selector}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())["data"]["sensorOrError"]["sensorState"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("started_ignoring_ctrl_c", "stop"),
    [(False, lambda dev: os.killpg(dev.pid, signal.SIGINT)), (True, lambda dev: os.kill(dev.pid, signal.SIGTERM))],
    ids=["ctrl-c", "background-job-stopped-by-kill"],
)
def test_aisyst_dev_ticks_every_sensor_without_a_failure_and_stops_cleanly(
    tmp_path: Path, started_ignoring_ctrl_c: bool, stop: Callable[[subprocess.Popen], None],
) -> None:
    """Ctrl-C in its terminal; or `kill` of it started as a script's background job, which ignores Ctrl-C:
    `dagster dev` must hear the Ctrl-C aisyst sends its group all the same (group_leader.py), or its
    stop ends 30 s later in SIGKILL of the webserver, the daemon and any run worker."""
    home = tmp_path / "home"
    emulator_port, ui_port = free_port(), free_port()
    env = command_environment(home, STRIPE_API_BASE=f"http://127.0.0.1:{emulator_port}", AISYST_SENSOR_INTERVAL_SECONDS="5")
    dev = subprocess.Popen([BIN / "aisyst", "dev", "--port", str(ui_port)], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                           # as a background job of a script, or as from a terminal whatever this test run ignores
                           preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN if started_ignoring_ctrl_c else signal.SIG_DFL))
    url = f"http://127.0.0.1:{ui_port}"
    try:
        deadline = time.monotonic() + 300
        while not (home / "dagster" / DEV_SERVER_FILE).exists():
            assert dev.poll() is None, dev.stdout.read() if dev.stdout else ""
            assert time.monotonic() < deadline, "aisyst dev did not come up within 300 s"
            time.sleep(1)
        assert json.loads((home / "dagster" / DEV_SERVER_FILE).read_text())["url"] == url

        def ticked_everywhere() -> bool:
            states = {name: sensor_state(url, name) for name in SENSORS}
            for name, state in states.items():
                assert state["status"] == "RUNNING", name
                failures = [t["error"]["message"] for t in state["ticks"] if t["status"] == "FAILURE"]
                assert failures == [], (name, failures)
            return all(state["ticks"] for state in states.values())

        while not ticked_everywhere():
            assert time.monotonic() < deadline, "not every sensor ticked"
            time.sleep(2)
    finally:
        stop(dev)
        output, _ = dev.communicate(timeout=120)
    assert dev.returncode == 0, output
    # `dagster dev`'s own last words after a Ctrl-C; a SIGKILL leaves none
    assert "Dagster services shut down." in (home / "dagster" / "dagster-dev.log").read_text()
    assert "Stripe emulator on" in output and f"Dagster UI: {url}" in output and "stopping" in output
    assert not (home / "dagster" / DEV_SERVER_FILE).exists()
    assert (home / "emulator-state.json").is_file()  # the emulator's objects, for the next start
    assert wait_until_gone(home) == []


# The processes in the order they start: the command and its group watchdog, `dagster dev`, its code
# server (two processes), its webserver, its daemon.
@pytest.mark.parametrize("started", [3, 6, 7], ids=["dagster-dev-starting", "daemon-starting", "all-started"])
def test_a_one_off_command_killed_by_sigkill_leaves_no_dagster_process_behind(tmp_path: Path, started: int) -> None:
    """Killed at any point of its deployment's start: `dagster dev` killed while it starts its webserver
    and daemon would leave those behind, so the whole group is stopped (group_watchdog.py)."""
    home = tmp_path / "home"
    env = command_environment(home, STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}")
    # `aisyst ingest` starts a local deployment and waits for the landing sensor's next tick (30 s)
    command = subprocess.Popen([BIN / "aisyst", "ingest"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        wait_for_processes(home, started, command)
        command.kill()  # no clean-up of its own: SIGKILL
        command.wait(30)
        assert wait_until_gone(home) == []
    finally:
        for pid in processes_of(home):
            os.kill(pid, signal.SIGKILL)


def test_a_one_off_command_stopped_by_kill_stops_its_deployment_cleanly(tmp_path: Path) -> None:
    """SIGTERM (`kill`, a service manager) is a Ctrl-C: the command's clean-up stops `dagster dev` with
    a Ctrl-C, not the watchdog's SIGKILL; it says it was interrupted and exits 130."""
    home = tmp_path / "home"
    env = command_environment(home, STRIPE_API_BASE=f"http://127.0.0.1:{free_port()}")
    command = subprocess.Popen([BIN / "aisyst", "ingest"], cwd=tmp_path, env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True, start_new_session=True)
    log = home / "dagster" / "dagster-dev.log"
    try:
        # Its daemon is up: `dagster dev` has started everything and waits in its loop. (Seven processes
        # are not enough: the daemon's appears while `dagster dev` still starts it, and a Ctrl-C then ends
        # `dagster dev` with click's "Aborted!" before its shutdown message, its group stopped all the same.)
        deadline = time.monotonic() + 240
        while "Instance is configured with the following daemons" not in (log.read_text() if log.exists() else ""):
            assert command.poll() is None and time.monotonic() < deadline, "the deployment did not start"
            time.sleep(0.2)
        command.terminate()
        _, errors = command.communicate(timeout=120)
        assert command.returncode == 130, errors
        assert "aisyst ingest: interrupted" in errors
        assert "Dagster services shut down." in log.read_text()
        assert wait_until_gone(home) == []
    finally:
        for pid in processes_of(home):
            os.kill(pid, signal.SIGKILL)


def test_stripe_down_is_one_line_saying_where_not_a_support_address() -> None:
    port = free_port()  # nothing listens there
    resource = StripeResource(api_key="sk_test_x", api_base=f"http://127.0.0.1:{port}", max_network_retries=1)
    with pytest.raises(stripe.APIConnectionError) as raised:
        resource.customers.list_customers()
    message = str(raised.value)
    assert message.startswith(f"Stripe is not reachable at http://127.0.0.1:{port}: ")
    assert "support@stripe.com" not in message and "\n" not in message.strip()

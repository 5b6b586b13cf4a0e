"""The deployment ops run, end to end: `dagster-webserver` and `dagster-daemon` as separate processes on
PostgreSQL instance storage with deploy/dagster.yaml (its run queue included), the Stripe emulator in
a process of its own, the warehouse on PostgreSQL. Everything is asserted through the webserver's
GraphQL API, the Stripe SDK and the warehouse — nothing runs in this process but the test's clock.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
import stripe
from sqlalchemy import create_engine, text

from aisyst_pipelines.billing.tiers import load_tier_catalog
from aisyst_pipelines.deployment import LOCATION_NAME, REPOSITORY_NAME, free_port
from aisyst_pipelines.emulator.testing import TEST_API_KEY
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.invoice_annotation_store import status_counts
from resources.stripe import StripeResource

from deploy_processes import stop_whatever_is_left
from test_production_instance import _environment

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
UTC = timezone.utc
T0 = datetime(2026, 9, 1, tzinfo=UTC)
RENEWAL = datetime(2026, 10, 1, tzinfo=UTC)
PII_KEY = "5" * 64

pytestmark = pytest.mark.slow


def graphql(url: str, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{url}/graphql", data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.loads(response.read())
    assert not answer.get("errors"), answer["errors"]
    return answer["data"]


def wait_until(what: str, condition: Any, timeout: float = 240) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        assert time.monotonic() < deadline, f"not within {timeout:.0f} s: {what}"
        time.sleep(1)


RUN_QUERY = """query Run($runId: ID!) { runOrError(runId: $runId) { __typename ... on Run {
  status jobName repositoryOrigin { repositoryLocationName } tags { key value } } } }"""
TICKS_QUERY = """query Ticks($selector: SensorSelector!) { sensorOrError(sensorSelector: $selector) { ... on Sensor {
  sensorState { status ticks(limit: 20) { status timestamp runIds error { message } } } } } }"""
LAUNCH = """mutation Launch($params: ExecutionParams!) { launchRun(executionParams: $params) { __typename
  ... on LaunchRunSuccess { run { runId } } ... on PythonError { message } ... on RunConfigValidationInvalid { errors { message } } } }"""
DAEMONS = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"


def run_of(url: str, run_id: str) -> dict[str, Any]:
    return graphql(url, RUN_QUERY, {"runId": run_id})["runOrError"]


def finished_run(url: str, run_id: str) -> dict[str, Any]:
    return wait_until(f"run {run_id} finished",
                      lambda: (run := run_of(url, run_id))["status"] in ("SUCCESS", "FAILURE", "CANCELED") and run)


def launch(url: str, job: str, run_config: dict[str, Any] | None = None, tags: dict[str, str] | None = None) -> str:
    params = {
        "selector": {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY_NAME, "jobName": job},
        "runConfigData": run_config or {},
        "executionMetadata": {"tags": [{"key": k, "value": v} for k, v in (tags or {}).items()]},
    }
    answer = graphql(url, LAUNCH, {"params": params})["launchRun"]
    assert answer["__typename"] == "LaunchRunSuccess", answer
    return answer["run"]["runId"]


@pytest.fixture
def deployment(tmp_path: Path, postgres_database: str) -> Iterator[dict[str, Any]]:
    """Emulator, webserver and daemon, each its own process, on PostgreSQL; stopped afterwards."""
    env = _environment(tmp_path, postgres_database)
    schema_url = f"{postgres_database}?options=-csearch_path%3Dwarehouse"
    engine = create_engine(postgres_database)
    with engine.begin() as connection:
        connection.execute(text("CREATE SCHEMA warehouse"))
    engine.dispose()
    Warehouse(schema_url).upgrade()  # `aisyst db upgrade`: production warehouses are not migrated on first use
    emulator_port, web_port = free_port(), free_port()
    env.update(
        AISYST_WAREHOUSE_URL=schema_url, AISYST_PII_KEY=PII_KEY, STRIPE_API_BASE=f"http://127.0.0.1:{emulator_port}",
        AISYST_SENSOR_INTERVAL_SECONDS="5", AISYST_OUTBOX_DIR=str(tmp_path / "outbox"),
    )
    logs = tmp_path / "logs"
    logs.mkdir()
    commands = {
        "emulator": [BIN / "aisyst", "emulator", "--port", str(emulator_port)],
        "daemon": [BIN / "dagster-daemon", "run", "-w", "workspace.yaml"],
        "webserver": [BIN / "dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(web_port)],
    }
    processes = {
        name: subprocess.Popen(command, cwd=REPO, env=env, stdout=(logs / f"{name}.log").open("wb"), stderr=subprocess.STDOUT)
        for name, command in commands.items()
    }
    url = f"http://127.0.0.1:{web_port}"
    try:
        def ready() -> bool:
            for name, process in processes.items():
                assert process.poll() is None, f"{name} exited: {(logs / f'{name}.log').read_text()[-3000:]}"
            try:
                statuses = graphql(url, DAEMONS)["instance"]["daemonHealth"]["allDaemonStatuses"]
            except OSError:
                return False
            healthy = {s["daemonType"] for s in statuses if s["healthy"]}
            return {"SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR"} <= healthy

        wait_until("webserver answers and daemons are healthy", ready, timeout=300)
        yield {"url": url, "emulator": env["STRIPE_API_BASE"], "warehouse": Warehouse(schema_url), "logs": logs}
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        stop_whatever_is_left(Path(env["AISYST_HOME"]))


def test_the_daemon_annotates_every_renewal_draft_and_the_queue_runs_what_is_launched(deployment: dict[str, Any]) -> None:
    url, warehouse = deployment["url"], deployment["warehouse"]
    client = stripe.StripeClient(TEST_API_KEY, base_addresses={"api": deployment["emulator"]})
    resource = StripeResource(api_key=TEST_API_KEY, api_base=deployment["emulator"])
    prices = [price.id for price in resource.catalog.ensure(load_tier_catalog()).prices]
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": int(T0.timestamp())})
    for n in range(4):
        customer = client.v1.customers.create({
            "name": f"Customer {n}", "email": f"c{n}@example.com", "metadata": {"aisyst_account_code": f"acct_{n}"},
            "test_clock": clock.id, "payment_method": "pm_card_visa", "invoice_settings": {"default_payment_method": "pm_card_visa"},
        })
        client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": prices[n % 3]}]})

    # A job launched as the UI's Launch button does: queued, dequeued by the daemon, run from the code location.
    mirror = finished_run(url, launch(url, "invoice_branding_job"))
    assert mirror["status"] == "SUCCESS" and mirror["repositoryOrigin"]["repositoryLocationName"] == LOCATION_NAME

    renewed_at = time.time()
    client.v1.test_helpers.test_clocks.advance(clock.id, {"frozen_time": int((RENEWAL + timedelta(minutes=1)).timestamp())})
    selector = {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY_NAME, "sensorName": "draft_invoice_sensor"}

    def tick_with_runs() -> list[str]:
        state = graphql(url, TICKS_QUERY, {"selector": selector})["sensorOrError"]["sensorState"]
        assert state["status"] == "RUNNING"
        assert all(t["status"] != "FAILURE" for t in state["ticks"] if float(t["timestamp"]) > renewed_at), state["ticks"]
        # Every tick counts, not only those that started after the advance: a tick that started just
        # before it may list the drafts once they exist. No tick before the advance had a draft to see.
        return [run_id for t in state["ticks"] for run_id in t["runIds"]]

    (run_id,) = wait_until("a draft_invoice_sensor tick launched a run", tick_with_runs)
    run = finished_run(url, run_id)
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert run["status"] == "SUCCESS" and run["jobName"] == "annotate_draft_invoices"
    assert tags["dagster/sensor_name"] == "draft_invoice_sensor" and tags["aisyst/stripe_writer"] == "annotate"
    assert status_counts(warehouse) == {"annotated": 4}
    drafts = [i for i in client.v1.invoices.list({"limit": 100}).data if i.billing_reason == "subscription_cycle"]
    assert len(drafts) == 4
    for invoice in drafts:
        lines = client.v1.invoices.line_items.list(invoice.id, {"limit": 100}).data
        assert any((line.description or "").startswith("Voice minutes used") for line in lines)

    # One partition of the nightly reconciliation, launched through the instance's queue.
    reconciliation = finished_run(url, launch(url, "meter_reconciliation_job", tags={"dagster/partition": "2026-09-30"}))
    assert reconciliation["status"] == "SUCCESS"
    assert {tag["key"]: tag["value"] for tag in reconciliation["tags"]}["dagster/partition"] == "2026-09-30"

"""The Dagster deployment every command works through: webserver, daemon, code server and run queue.

Ops run Dagster as a webserver and a daemon over one instance (deploy/dagster.yaml). The commands
that run jobs take the same path instead of imitating it in their own process:

- `aisyst dev` starts `dagster dev` (webserver + daemon + one code server) on the home's instance and
  records where it listens (`DEV_SERVER_FILE`), so that later commands use it;
- `aisyst ingest | annotate | reconcile`, the demo and the benches find the deployment
  (`AISYST_DAGSTER_URL`, else the running `aisyst dev`), or start a local one for their own
  duration (`local_deployment`);
- a job is submitted through the webserver's GraphQL API (`Deployment.submit`): the call behind the
  UI's Launch button, so the run carries its code location, waits in the run queue under the
  instance's tag limits and shows under its job;
- sensor work is left to the daemon: a command waits for the sensor's next tick
  (`Deployment.next_tick`) and for the runs that tick launched, tagged by Dagster with the sensor.

Outcomes are read back from the instance by run id (`run_status`, `run_materializations`, …).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from aisyst_pipelines.group_watchdog import GroupWatchdog
from aisyst_pipelines.instance_lock import instance_lock
from aisyst_pipelines.settings import Settings

LOCATION_NAME = "aisyst_pipelines"  # workspace.yaml's location_name; the local deployment uses the same
REPOSITORY_NAME = "__repository__"  # the name a module's Definitions are served under
DEV_SERVER_FILE = "aisyst-dev.json"  # in DAGSTER_HOME: where the running `aisyst dev` listens
WORKSPACE_FILE = "aisyst-workspace.yaml"  # in DAGSTER_HOME: the local deployment's code location
FINISHED = frozenset({"SUCCESS", "FAILURE", "CANCELED"})
IN_FLIGHT = [dg.DagsterRunStatus.QUEUED, dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING,
             dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING]
DAEMONS_NEEDED = ("SENSOR", "SCHEDULER", "QUEUED_RUN_COORDINATOR")

LOCAL_INSTANCE_CONFIG = """\
# Local Dagster instance of aisyst (written by `aisyst ingest`/`aisyst demo` when missing; `aisyst dev` too):
# SQLite storage in this folder, the daemon's run queue with the production tag limits.
# Production uses deploy/dagster.yaml (PostgreSQL) instead.
concurrency:
  runs:
    # SQLite takes one writer at a time: two runs at once keep the event log from locking up.
    max_concurrent_runs: 2
    tag_concurrency_limits:
      - key: aisyst/stripe_writer
        limit: 1
# the queue looked at every second, as deploy/dagster.yaml
run_coordinator:
  module: dagster
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
    dequeue_use_threads: true
# Dagster's run retries for the jobs tagged dagster/max_retries (as deploy/dagster.yaml)
run_retries:
  enabled: true
  max_retries: 0
telemetry:
  enabled: false
# no "join the community" dialog over the local UI (and its screenshots)
nux:
  enabled: false
"""


class DeploymentError(RuntimeError):
    """The deployment could not be started or reached, or did not do what was asked in time."""


@dataclass(frozen=True)
class SensorTick:
    """One finished tick of a sensor, as the daemon recorded it."""

    sensor_name: str
    status: str  # SUCCESS, SKIPPED or FAILURE
    timestamp: float  # when it started
    end_timestamp: float
    run_ids: tuple[str, ...]
    skip_reason: str | None
    error: str | None
    cursor: str | None


def _error_text(error: dict[str, Any] | None) -> str | None:
    """A failed tick's error with what caused it: Dagster's own message only says that the sensor's
    function raised ("Error occurred during the execution of evaluation_fn…"); the cause says what."""
    if not error:
        return None
    return " — caused by: ".join([error["message"].strip(), *(cause["message"].strip() for cause in error.get("causes") or [])])


SENSOR_TICKS_QUERY = """
query SensorTicks($selector: SensorSelector!, $limit: Int) {
  sensorOrError(sensorSelector: $selector) {
    __typename
    ... on Sensor {
      sensorState {
        status
        ticks(limit: $limit) { status timestamp endTimestamp runIds skipReason cursor error { message causes { message } } }
      }
    }
    ... on PythonError { message }
    ... on SensorNotFoundError { message }
  }
}
"""

READY_QUERY = """
{
  workspaceOrError { ... on Workspace { locationEntries { name loadStatus
    locationOrLoadError { __typename ... on PythonError { message } } } } }
  instance { daemonHealth { allDaemonStatuses { daemonType healthy required } } }
}
"""


@dataclass
class Deployment:
    """A running webserver (and its daemon) over `instance`."""

    url: str
    instance: dg.DagsterInstance

    # ------------------------------------------------------------------ GraphQL

    def graphql(self, query: str, variables: Mapping[str, Any] | None = None, timeout: float = 30) -> dict[str, Any]:
        request = urllib.request.Request(
            f"{self.url}/graphql", data=json.dumps({"query": query, "variables": dict(variables or {})}).encode(),
            headers={"Content-Type": "application/json"}, method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                answer = json.loads(response.read())
        except (urllib.error.URLError, OSError) as error:
            raise DeploymentError(f"the Dagster webserver at {self.url} does not answer: {error}") from None
        if answer.get("errors"):
            raise DeploymentError(f"GraphQL error from {self.url}: {answer['errors'][0].get('message')}")
        return answer["data"]

    def _client(self) -> DagsterGraphQLClient:
        host, _, port = self.url.removeprefix("http://").partition(":")
        return DagsterGraphQLClient(host, port_number=int(port) if port else None)

    # ------------------------------------------------------------------ runs

    def submit(self, job_name: str, *, run_config: Mapping[str, Any] | None = None, tags: Mapping[str, str] | None = None) -> str:
        """Queue a run of `job_name` as the UI's Launch button does; its run id."""
        try:
            return self._client().submit_job_execution(
                job_name, repository_location_name=LOCATION_NAME, repository_name=REPOSITORY_NAME,
                run_config=dict(run_config or {}), tags=dict(tags or {}),
            )
        except DagsterGraphQLClientError as error:
            raise DeploymentError(f"run of {job_name} not accepted: {error}") from None

    def wait_for_runs(self, run_ids: Sequence[str], timeout: float = 600) -> list[dg.DagsterRun]:
        """The runs once each has finished (succeeded, failed or was canceled)."""
        deadline = time.monotonic() + timeout
        pending = list(run_ids)
        while True:
            runs = [self.instance.get_run_by_id(run_id) for run_id in pending]
            if all(run is not None and run.status.value in FINISHED for run in runs):
                return [run for run in runs if run is not None]
            if time.monotonic() > deadline:
                waiting = [run_id for run_id, run in zip(pending, runs) if run is None or run.status.value not in FINISHED]
                raise DeploymentError(
                    f"{len(waiting)} run(s) not finished after {timeout:.0f} s (e.g. {waiting[0]}): is the daemon "
                    "running and the run queue moving? See the Runs page."
                )
            time.sleep(0.5)

    def settle(self, timeout: float = 120) -> None:
        """Wait, at most `timeout` seconds, until no run is queued or in flight — e.g. one another
        sensor launched meanwhile: stopping a local deployment would kill it half done."""
        deadline = time.monotonic() + timeout
        while self.instance.get_runs(filters=dg.RunsFilter(statuses=IN_FLIGHT), limit=1) and time.monotonic() < deadline:
            time.sleep(0.5)

    def run_materializations(self, run_id: str) -> list[dg.AssetMaterialization]:
        records = self.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records
        return [r.event_log_entry.asset_materialization for r in records if r.event_log_entry.asset_materialization]

    def run_check_evaluations(self, run_id: str) -> list[dg.AssetCheckEvaluation]:
        records = self.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION).records
        return [
            r.event_log_entry.dagster_event.event_specific_data  # type: ignore[misc]
            for r in records
            if r.event_log_entry.dagster_event is not None
        ]

    def run_step_failures(self, run_id: str) -> list[dg.DagsterEvent]:
        records = self.instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.STEP_FAILURE).records
        return [r.event_log_entry.dagster_event for r in records if r.event_log_entry.dagster_event is not None]

    # ------------------------------------------------------------------ sensors

    def sensor_ticks(self, sensor_name: str, limit: int = 5) -> tuple[str, list[SensorTick]]:
        """The sensor's status (RUNNING/STOPPED) and its newest ticks, newest first."""
        selector = {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY_NAME, "sensorName": sensor_name}
        answer = self.graphql(SENSOR_TICKS_QUERY, {"selector": selector, "limit": limit})["sensorOrError"]
        if answer["__typename"] != "Sensor":
            raise DeploymentError(f"sensor {sensor_name}: {answer.get('message', answer['__typename'])}")
        state = answer["sensorState"]
        ticks = [
            SensorTick(
                sensor_name, tick["status"], float(tick["timestamp"]), float(tick["endTimestamp"] or tick["timestamp"]), tuple(tick["runIds"] or ()), tick["skipReason"],
                _error_text(tick["error"]), tick["cursor"],
            )
            for tick in state["ticks"]
        ]
        return state["status"], ticks

    def wait_for_ticks(self, sensor_name: str, *, since: float, after: float | None = None, timeout: float = 180) -> list[SensorTick]:
        """The finished ticks of `sensor_name` that ended after `since` (a time.time()), oldest first,
        once one of them started after `after` (default: `since`): that one saw everything done before
        `after`. A tick running at `since` counts: it may have seen what was done after `since` (e.g.
        files landing while it listed the directory) and launched their runs."""
        after = since if after is None else after
        deadline = time.monotonic() + timeout
        while True:
            status, ticks = self.sensor_ticks(sensor_name, limit=50)
            if status != "RUNNING":
                raise DeploymentError(f"sensor {sensor_name} is {status.lower()}: start it on its page in the Dagster UI")
            finished = [t for t in reversed(ticks) if t.end_timestamp > since and t.status != "STARTED"]
            seen_all = next((i for i, tick in enumerate(finished) if tick.timestamp > after), None)
            if seen_all is not None:
                return finished[: seen_all + 1]
            if time.monotonic() > deadline:
                raise DeploymentError(f"no tick of {sensor_name} within {timeout:.0f} s: is the daemon running?")
            time.sleep(0.5)


# ---------------------------------------------------------------------- finding or starting one


def prepare_instance(settings: Settings) -> Path:
    """The home's Dagster folder with its instance config (written when missing) and the local
    deployment's workspace file; returns the workspace file."""
    settings.ensure_dirs()
    config = settings.dagster_home / "dagster.yaml"
    # Written when missing, and replaced when it is an older one of ours (same first line); an instance
    # configured by hand (deploy/dagster.yaml) is never touched.
    ours = LOCAL_INSTANCE_CONFIG.splitlines()[0]
    if not config.exists() or (config.read_text().startswith(ours) and config.read_text() != LOCAL_INSTANCE_CONFIG):
        config.write_text(LOCAL_INSTANCE_CONFIG)
    workspace = settings.dagster_home / WORKSPACE_FILE
    workspace.write_text(
        "load_from:\n  - python_module:\n      module_name: aisyst_pipelines.definitions\n"
        f"      location_name: {LOCATION_NAME}\n"
    )
    return workspace


@contextmanager
def open_instance(settings: Settings) -> Iterator[dg.DagsterInstance]:
    """The instance under settings.dagster_home (opened from its folder: a command does not change
    its own environment to find it)."""
    prepare_instance(settings)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        yield instance


def running_deployment_url(settings: Settings) -> str | None:
    """Where an already running deployment of this home listens: AISYST_DAGSTER_URL, else the
    `aisyst dev` recorded in DAGSTER_HOME if it still answers."""
    if settings.dagster_url:
        return settings.dagster_url.rstrip("/")
    record = settings.dagster_home / DEV_SERVER_FILE
    try:
        url = json.loads(record.read_text())["url"]
    except (OSError, ValueError, KeyError):
        return None
    return url if _answers(url) else None


@contextmanager
def deployment(
    settings: Settings, *, environ: Mapping[str, str] | None = None, log_path: Path | None = None
) -> Iterator[Deployment]:
    """The running deployment of this home, or a local one started for the block (and stopped after)."""
    url = running_deployment_url(settings)
    if url:
        with open_instance(settings) as instance:
            yield Deployment(url, instance)
    else:
        with local_deployment(settings, environ=environ, log_path=log_path) as started:
            yield started


@contextmanager
def local_deployment(
    settings: Settings,
    *,
    port: int | None = None,
    environ: Mapping[str, str] | None = None,
    log_path: Path | None = None,
    ready_timeout: float = 240,
) -> Iterator[Deployment]:
    """`dagster dev` (webserver, daemon, one code server) on the home's instance, loopback only, until
    the block ends; ready when the code location is loaded and the daemons are healthy.

    If this process dies, even by SIGKILL, a watchdog stops `dagster dev` and every process it started
    (group_watchdog.py)."""
    # one deployment per instance (instance_lock.py); open_instance writes the instance's files
    with instance_lock(settings.dagster_home), open_instance(settings) as instance:
        workspace = settings.dagster_home / WORKSPACE_FILE
        port = port or free_port()
        env = {**os.environ, **(environ or {}), "DAGSTER_HOME": str(settings.dagster_home), "AISYST_HOME": str(settings.home)}
        log_path = log_path or settings.dagster_home / "dagster-dev.log"
        command = [sys.executable, "-m", "dagster", "dev", "-w", str(workspace), "-h", "127.0.0.1", "-p", str(port)]
        url = f"http://127.0.0.1:{port}"
        create_storage(instance)  # before the webserver and the daemon start: SQLite tables are made by one process
        watchdog = GroupWatchdog()  # first: from here on, whatever is started is stopped should this process die
        try:
            with log_path.open("ab") as log:
                process = watchdog.start(command, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT)
            try:
                started = Deployment(url, instance)
                _wait_until_ready(started, process, log_path, ready_timeout)
                yield started
                started.settle()
            finally:
                stop_process_group(process)
        finally:
            watchdog.release()


def create_storage(instance: dg.DagsterInstance) -> None:
    """Make a fresh instance's run, event-log and schedule storage now. Each is created on first use;
    on SQLite, a webserver and a daemon starting on a new instance would otherwise both create the
    same tables at once ("table run_tags already exists")."""
    instance.get_runs(limit=1)
    instance.fetch_materializations(dg.AssetKey("aisyst_storage_probe"), limit=1)
    instance.all_instigator_state()


def stop_process_group(process: subprocess.Popen, grace: float = 30) -> None:
    """Ctrl-C for `dagster dev` (it stops its webserver, daemon and code server), then SIGKILL for
    whatever of the group is left after `grace` seconds."""
    if process.poll() is None:
        try:
            os.killpg(process.pid, signal.SIGINT)
            process.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            pass
        except ProcessLookupError:
            return
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _wait_until_ready(started: Deployment, process: subprocess.Popen, log_path: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    problem = "the webserver did not answer"
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise DeploymentError(f"dagster dev exited with {process.returncode}; see {log_path}")
        if _answers(started.url):
            data = started.graphql(READY_QUERY)
            entries = data["workspaceOrError"].get("locationEntries") or []
            loaded = [e for e in entries if e["name"] == LOCATION_NAME]
            if loaded and loaded[0]["loadStatus"] == "LOADED":
                error = loaded[0]["locationOrLoadError"]
                if error and error["__typename"] == "PythonError":
                    raise DeploymentError(f"the code location does not load: {error['message'].strip()[:500]}")
                healthy = {d["daemonType"] for d in data["instance"]["daemonHealth"]["allDaemonStatuses"] if d["healthy"]}
                missing = [name for name in DAEMONS_NEEDED if name not in healthy]
                if not missing:
                    return
                problem = f"daemons not healthy yet: {', '.join(missing)}"
            else:
                problem = "the code location is still loading"
        time.sleep(0.5)
    raise DeploymentError(f"dagster dev not ready after {timeout:.0f} s ({problem}); see {log_path}")


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
            return response.status == 200
    except (urllib.error.URLError, OSError, ValueError):
        return False


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]

"""What the benches share to have their work done by Dagster's own runtime, as ops run it.

A bench builds its Stripe world, then starts `local_deployment` (aisyst_pipelines/deployment.py:
`dagster dev` = webserver + daemon + code server, run workers launched by the code server) on a
PostgreSQL Dagster instance configured like deploy/dagster.yaml (its run queue limits included), with
the warehouse on PostgreSQL too — a fresh database per bench on 127.0.0.1:5432 (user postgres, trust
auth; AISYST_BENCH_POSTGRES_URL to change), dropped afterwards. From then on the bench only changes
the Stripe world (advances a test clock) and observes: the warehouse's rows, the emulator's request
log, the sensors' ticks through GraphQL, the runs through the instance, and the memory and CPU of every
process of the deployment (`ProcessSampler`, from /proc).
"""

from __future__ import annotations

import os
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import dagster as dg
from sqlalchemy import create_engine, make_url, text

from aisyst_pipelines.deployment import LOCATION_NAME, REPOSITORY_NAME, Deployment, SensorTick, local_deployment
from aisyst_pipelines.settings import Settings

REPO = Path(__file__).resolve().parents[1]
ADMIN_URL = os.environ.get("AISYST_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
PII_KEY = "5" * 64  # the bench's warehouse holds simulated numbers only
WAREHOUSE_SCHEMA = "warehouse"

SET_SENSOR_CURSOR = """mutation SetCursor($selector: SensorSelector!, $cursor: String) {
  setSensorCursor(sensorSelector: $selector, cursor: $cursor) { __typename ... on PythonError { message } } }"""


@dataclass(frozen=True)
class BenchWorld:
    """A fresh home, Dagster instance (PostgreSQL) and warehouse (PostgreSQL schema) for one bench."""

    home: Path
    database: str
    warehouse_url: str
    environ: dict[str, str]  # what the deployment's processes (and so the sensors and runs) see

    @property
    def settings(self) -> Settings:
        return Settings.from_env(self.environ)


@contextmanager
def postgres_world(
    *, stripe_api_base: str, requests_per_second: float, sensor_interval_seconds: int = 30
) -> Iterator[BenchWorld]:
    """A new PostgreSQL database holding the Dagster instance's tables and the warehouse's schema,
    a temporary home whose DAGSTER_HOME has deploy/dagster.yaml; all dropped when the block ends."""
    admin_url = make_url(ADMIN_URL)
    database = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{database}"'))
    database_url = admin_url.set(database=database)
    engine = create_engine(database_url)
    with engine.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{WAREHOUSE_SCHEMA}"'))
    engine.dispose()
    home = Path(tempfile.mkdtemp(prefix="aisyst-bench-"))
    (home / "dagster").mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", home / "dagster" / "dagster.yaml")
    instance_env = {
        "DAGSTER_PG_HOST": admin_url.host or "127.0.0.1", "DAGSTER_PG_PORT": str(admin_url.port or 5432),
        "DAGSTER_PG_DB": database, "DAGSTER_PG_USER": admin_url.username or "postgres",
        "DAGSTER_PG_PASSWORD": admin_url.password or "",
    }
    # This process opens the same instance (to read runs): it needs the instance's variables, and none
    # of a developer's own AISYST_/STRIPE_ settings may leak into the deployment it starts.
    for name in [n for n in os.environ if n.startswith(("AISYST_", "STRIPE_", "DAGSTER_"))]:
        del os.environ[name]
    os.environ.update(instance_env)
    environ = instance_env | {
        "AISYST_HOME": str(home), "DAGSTER_HOME": str(home / "dagster"),
        "AISYST_WAREHOUSE_URL": f"{database_url.render_as_string(hide_password=False)}?options=-csearch_path%3D{WAREHOUSE_SCHEMA}",
        "AISYST_PII_KEY": PII_KEY, "AISYST_OUTBOX_DIR": str(home / "outbox"), "STRIPE_API_BASE": stripe_api_base,
        "AISYST_STRIPE_REQUESTS_PER_SECOND": f"{requests_per_second:g}",
        "AISYST_SENSOR_INTERVAL_SECONDS": str(sensor_interval_seconds),
    }
    try:
        yield BenchWorld(home, database, environ["AISYST_WAREHOUSE_URL"], environ)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)'))
        admin.dispose()
        shutil.rmtree(home, ignore_errors=True)


@contextmanager
def started_deployment(world: BenchWorld) -> Iterator[tuple[Deployment, float]]:
    """`local_deployment` on the world, and how long it took from start to ready (seconds)."""
    started = time.monotonic()
    with local_deployment(world.settings, environ=world.environ, log_path=world.home / "dagster-dev.log") as deployment:
        yield deployment, time.monotonic() - started


# --- what the deployment did ---------------------------------------------------------------------------------


def sensor_selector(sensor_name: str) -> dict[str, str]:
    return {"repositoryLocationName": LOCATION_NAME, "repositoryName": REPOSITORY_NAME, "sensorName": sensor_name}


def ticks_since(deployment: Deployment, sensor_name: str, since: float, limit: int = 500) -> list[SensorTick]:
    """The sensor's finished ticks that ended after `since` (time.time()), oldest first: a tick that
    started a moment before may have seen what happened at `since`."""
    _, ticks = deployment.sensor_ticks(sensor_name, limit=limit)
    return [tick for tick in reversed(ticks) if tick.end_timestamp > since and tick.status != "STARTED"]


def tick_figures(ticks: list[SensorTick], since: float | None = None) -> dict[str, Any]:
    """Durations and outcomes of the ticks; with `since`, the first ten as a timeline (start relative to
    `since`, duration, runs requested, skip reason)."""
    durations = [round(t.end_timestamp - t.timestamp, 1) for t in ticks]
    figures = {
        "ticks": len(ticks), "durations_seconds": durations, "longest_seconds": max(durations, default=None),
        "statuses": dict(sorted({t.status: sum(1 for u in ticks if u.status == t.status) for t in ticks}.items())),
        "runs_requested": sum(len(t.run_ids) for t in ticks), "errors": [t.error for t in ticks if t.error][:3],
    }
    if since is not None:
        figures["timeline"] = [
            f"{t.timestamp - since:+.1f} s, {t.end_timestamp - t.timestamp:.1f} s: {len(t.run_ids)} run(s); {t.skip_reason or ''}"
            for t in ticks[:10]
        ]
    return figures


def set_sensor_cursor(deployment: Deployment, sensor_name: str, cursor: str) -> None:
    """Set-up only: what the UI's "set cursor" does (e.g. an events sensor already current at month start)."""
    answer = deployment.graphql(SET_SENSOR_CURSOR, {"selector": sensor_selector(sensor_name), "cursor": cursor})
    if answer["setSensorCursor"]["__typename"] != "Sensor":
        raise RuntimeError(f"cursor of {sensor_name} not set: {answer}")


def run_figures(deployment: Deployment, sensor_name: str, since: float) -> list[dict[str, Any]]:
    """The runs the sensor requested after `since`: queued → started → finished, from the instance."""
    records = deployment.instance.get_run_records(
        filters=dg.RunsFilter(tags={"dagster/sensor_name": sensor_name},
                              created_after=datetime.fromtimestamp(since, timezone.utc)),
        ascending=True,
    )
    figures = []
    for record in records:
        created = record.create_timestamp.timestamp()
        launched = _event_time(deployment.instance, record.dagster_run.run_id, dg.DagsterEventType.RUN_STARTING)
        figures.append({
            "status": record.dagster_run.status.value,
            "invoices": int(record.dagster_run.tags.get("aisyst/invoices", 0)),
            "created_after": round(created - since, 1),
            # created → launched by the run queue (dequeue loop, tag limit) → its worker process executing
            "queued_seconds": round(launched - created, 1) if launched else None,
            "worker_start_seconds": round(record.start_time - launched, 1) if launched and record.start_time else None,
            "running_seconds": round(record.end_time - record.start_time, 1) if record.start_time and record.end_time else None,
        })
    return figures


def _event_time(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> float | None:
    records = instance.get_records_for_run(run_id, of_type=event_type, limit=1).records
    return records[0].event_log_entry.timestamp if records else None


def runs_in_flight(deployment: Deployment, sensor_name: str, since: float) -> int:
    return sum(1 for run in run_figures(deployment, sensor_name, since) if run["status"] not in ("SUCCESS", "FAILURE", "CANCELED"))


# --- memory and CPU of every process------------------------------------------------------------------------------


def _status_kib(pid: int) -> tuple[int, int] | None:
    """(VmHWM, VmRSS) in KiB, None once the process is gone."""
    try:
        lines = Path(f"/proc/{pid}/status").read_text().splitlines()
    except OSError:
        return None
    values = {line.split(":")[0]: int(line.split()[1]) for line in lines if line.startswith(("VmHWM", "VmRSS"))}
    return values.get("VmHWM", 0), values.get("VmRSS", 0)


def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _session(pid: int) -> int | None:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[3])
    except (OSError, IndexError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        return [part.decode(errors="replace") for part in Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0") if part]
    except OSError:
        return []


def role_of(cmdline: list[str]) -> str:
    """Which part of the deployment a process is, from its command line."""
    joined = " ".join(cmdline)
    for marker, role in (
        ("multiprocessing.spawn", "run worker"),  # the code server spawns each run's process
        ("execute_run", "run worker"),
        ("resource_tracker", "multiprocessing resource tracker"),
        ("code-server start", "code server (proxy)"),
        ("api grpc", "code server (gRPC)"),
        ("dagster-daemon", "daemon"), ("dagster_daemon", "daemon"), ("daemon run", "daemon"),
        ("dagster-webserver", "webserver"), ("dagster_webserver", "webserver"),
        ("dagster dev", "dagster dev"),
        ("tail -F", "compute-log tail"), ("watch_orphans", "compute-log tail"),
    ):
        if marker in joined:
            return role
    return joined[:100] or "?"


def dagster_dev_pid(deployment: Deployment) -> int:
    """The `dagster dev` process serving `deployment` (found by its port; it leads its own session)."""
    port = deployment.url.rsplit(":", 1)[1]
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            cmdline = _cmdline(int(entry.name))
            if "dev" in cmdline and "dagster" in " ".join(cmdline) and port in cmdline:
                return int(entry.name)
    raise RuntimeError(f"no dagster dev process listening on {deployment.url}")


@dataclass
class ProcessSampler:
    """Samples every second the peak RSS (VmHWM) and CPU time of each process in the deployment's session
    (webserver, daemon, code server, run workers) and of the named extra processes (the emulator, the
    bench). CPU is counted from the first sample (a process's earlier CPU, e.g. the set-up, is left out)."""

    session: int
    extra: dict[int, str]
    peaks_kib: dict[int, tuple[str, int]] = field(default_factory=dict)
    cpu: dict[int, tuple[float, float]] = field(default_factory=dict)  # pid → (first seen, last seen)
    _initial: set[int] = field(default_factory=set)  # the processes already there at start
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> "ProcessSampler":
        self._initial = {int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()}
        self.sample()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(1.0)

    def sample(self) -> None:
        pids = [int(e.name) for e in Path("/proc").iterdir() if e.name.isdigit()]
        for pid in pids:
            if pid in self.extra:
                role = self.extra[pid]
            elif _session(pid) == self.session:
                role = self.peaks_kib[pid][0] if pid in self.peaks_kib else role_of(_cmdline(pid))
            else:
                continue
            kib = _status_kib(pid)
            if kib:
                self.peaks_kib[pid] = (role, max(kib[0], self.peaks_kib.get(pid, (role, 0))[1]))
                seconds = _cpu_seconds(pid)
                # a process first seen after the start (a run worker) counts all its CPU
                first = self.cpu[pid][0] if pid in self.cpu else (seconds if pid in self._initial else 0.0)
                self.cpu[pid] = (first, max(seconds, self.cpu.get(pid, (0.0, 0.0))[1]))

    def stop(self) -> dict[str, Any]:
        """Per role: processes seen, their peak RSS in MiB (max; median too when several) and CPU seconds."""
        self._stop.set()
        if self._thread:
            self._thread.join()
        by_role: dict[str, list[int]] = {}
        cpu_by_role: dict[str, float] = {}
        for pid, (role, kib) in self.peaks_kib.items():
            by_role.setdefault(role, []).append(kib)
            first, last = self.cpu.get(pid, (0.0, 0.0))
            cpu_by_role[role] = cpu_by_role.get(role, 0.0) + last - first
        return {
            role: {"processes": len(kibs), "peak_rss_mib": round(max(kibs) / 1024), "cpu_seconds": round(cpu_by_role[role], 1)}
            | ({"median_peak_rss_mib": round(statistics.median(kibs) / 1024)} if len(kibs) > 1 else {})
            for role, kibs in sorted(by_role.items())
        }


def exit_cleanly_on_sigterm() -> None:
    """SIGTERM (e.g. `kill <bench pid>`) unwinds like Ctrl-C: the deployment is stopped, the database dropped."""
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))


def machine_load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{os.cpu_count()} CPUs, load average {one:.1f} / {five:.1f} / {fifteen:.1f}"

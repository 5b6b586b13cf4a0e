"""deploy/dagster.yaml as production runs it: PostgreSQL storage, a real job, the webserver answering."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from sqlalchemy import create_engine, make_url, text

from deploy_processes import command_environment, stop_whatever_is_left

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _environment(tmp_path: Path, database_url: str) -> dict[str, str]:
    dagster_home = tmp_path / "dagster"
    dagster_home.mkdir()
    shutil.copy(REPO / "deploy" / "dagster.yaml", dagster_home / "dagster.yaml")
    return command_environment(
        tmp_path / "home",
        DAGSTER_HOME=str(dagster_home),
        DAGSTER_PG_HOST="127.0.0.1",
        DAGSTER_PG_PORT="5432",
        DAGSTER_PG_DB=make_url(database_url).database,
        DAGSTER_PG_USER="postgres",
        DAGSTER_PG_PASSWORD="",
    )


def test_a_job_runs_on_postgres_storage_and_the_webserver_answers(tmp_path: Path, postgres_database: str) -> None:
    env = _environment(tmp_path, postgres_database)
    landing = Path(env["AISYST_HOME"]) / "landing" / "canonical"
    landing.mkdir(parents=True)
    (landing / "calls.csv").write_text(
        "call_id,account_code,direction,disposition,started_at,answered_at,ended_at,billable_seconds,caller,callee\n"
        "c-1,acct-1,inbound,completed,2026-11-01T10:00:00Z,2026-11-01T10:00:05Z,2026-11-01T10:02:05Z,,+15550001,+15550002\n"
    )
    ingest = subprocess.run([BIN / "aisyst", "ingest"], cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert ingest.returncode == 0, ingest.stdout + ingest.stderr

    # The run is in PostgreSQL's run storage (read directly: loading a second instance in this
    # process would leave Dagster's process-wide instance state pointing at it).
    engine = create_engine(postgres_database)
    with engine.connect() as connection:
        statuses = dict(connection.execute(text("SELECT pipeline_name, status FROM runs")).all())
    engine.dispose()
    # the ingestion run, and whatever else the daemon launched meanwhile (the freshness check's run):
    # all finished, none killed half done when the command stopped its deployment
    assert statuses["cdr_ingest"] == "SUCCESS" and set(statuses.values()) == {"SUCCESS"}, statuses

    port = _free_port()
    webserver = subprocess.Popen(
        [BIN / "dagster-webserver", "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=5) as response:
                    assert response.status == 200
                    assert b"dagster_webserver_version" in response.read()
                    break
            except OSError:
                assert webserver.poll() is None, "dagster-webserver exited"
                assert time.monotonic() < deadline, "dagster-webserver did not answer within 120 s"
                time.sleep(1)
    finally:
        webserver.terminate()
        webserver.wait(timeout=30)
        stop_whatever_is_left(Path(env["AISYST_HOME"]))

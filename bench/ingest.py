"""CDR ingestion benchmark: end-to-end load vs each database's own bulk load of the same rows.

    ./run python bench/ingest.py                      # 2,000,000 calls into PostgreSQL and SQLite
    ./run python bench/ingest.py --rss-calls 10000000 # plus peak memory of a 10,000,000-call file

Per backend it measures, in separate child processes (each reports its own peak RSS), `--repeat`
times interleaved (the shared machine has slow spells; the medians are reported):

- end to end: `services.ingestion.load_landing_file`, exactly what the `call_records` asset runs: sha256
  of the file, format detection, then `read_cdr_file` (parse, validate, rate, hash phone numbers)
  streamed into `load_cdr_file` (copy into call_records, duplicate checks, rejects, usage_daily recompute), in
  one transaction, into a fresh, migrated warehouse;
- the database's own bulk load of the same rows (the call_records columns) into a copy of
  call_records with its key and indexes, chunks in call_id order: PostgreSQL COPY, SQLite
  executemany in one transaction. Only the database calls are timed; the rows are prepared untimed,
  chunk by chunk. For context also into an unindexed table and into one with the primary key only.

The figure of merit (issue 12) is end-to-end calls/s ÷ the indexed bulk load's calls/s, goal ≥ 0.9.
The sample file is canonical CSV from the call simulator, cached under $AISYST_HOME/bench/ (kept
between runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sqlite3
import subprocess
import sys
import time
import uuid
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
from sqlalchemy import MetaData, create_engine, text

from aisyst_pipelines.cdr import ReadOptions, read_cdr_file
from aisyst_pipelines.services.ingestion import load_landing_file
from aisyst_pipelines.simulation import CdrFileWriter, iter_simulated_calls
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.cdr_store import (
    arrow_for,
    copy_postgres,
    executemany_sqlite,
    postgres_csv,
    sqlite_rows,
)
from aisyst_pipelines.warehouse.schema import call_records

DEFAULT_POSTGRES_URL = os.environ.get("AISYST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
BENCH_KEY = b"bench-pii-key"
GOAL_RATIO = 0.9  # issue 12: end to end against the bulk load into a table keyed and indexed like call_records
GOAL_RSS_BYTES = 1024**3
BULK_KEYS = {"bulk": "none", "bulk-primary-key": "primary", "bulk-indexed": "all"}
MEASUREMENTS = {
    "bulk": "the database's bulk load into an unindexed table, for context",
    "bulk-primary-key": "into a copy with only call_records' primary key, chunks in call_id order, for context",
    "bulk-indexed": "into a copy with call_records' key and indexes, chunks in call_id order: the reference",
    "e2e": "end to end, as the call_records asset loads a landing file",
}


def median_run(runs: list[dict]) -> dict:
    """The run of median time (the lower middle one of an even number)."""
    return sorted(runs, key=lambda figures: figures["seconds"])[(len(runs) - 1) // 2]


# --- the sample file ---------------------------------------------------------------------------------


def sample_file(folder: Path, calls: int) -> Path:
    """A canonical CSV with exactly `calls` simulated calls (written once, then reused)."""
    path = folder / f"calls-{calls}.csv"
    if path.exists():
        return path
    accounts = max(50, calls // 4000)  # ~4,000 calls per account: a month of a busy client
    written = 0
    started = time.perf_counter()
    with CdrFileWriter(path, "canonical_csv") as writer:
        for day in iter_simulated_calls(accounts, days=400, seed=2026, mean_calls_per_day=160.0):
            part = day.iloc[: calls - written]
            writer.write(part)
            written += len(part)
            if written >= calls:
                break
    if written < calls:
        path.unlink()
        raise RuntimeError(f"the simulator produced only {written} calls")
    print(f"  wrote {path} ({calls:,} calls, {path.stat().st_size / 1e6:,.0f} MB) in {time.perf_counter() - started:.0f} s", flush=True)
    return path


# --- child processes: one measurement each, reporting its own peak RSS --------------------------------


def fresh_warehouse(backend: str, folder: Path, postgres_url: str) -> tuple[str, callable]:
    """A URL of an empty warehouse and a function that removes it."""
    if backend == "sqlite":
        path = folder / f"bench-{uuid.uuid4().hex[:8]}.db"
        return f"sqlite:///{path}", lambda: [p.unlink(missing_ok=True) for p in path.parent.glob(path.name + "*")]
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    admin = create_engine(postgres_url)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))

    def drop() -> None:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()

    separator = "&" if "?" in postgres_url else "?"
    return f"{postgres_url}{separator}options=-csearch_path%3D{schema}", drop


def child_end_to_end(url: str, path: Path, chunk_rows: int) -> dict:
    warehouse = Warehouse(url)
    warehouse.upgrade()
    started = time.perf_counter()
    result = load_landing_file(warehouse, path, ReadOptions(pii_key=BENCH_KEY, chunk_rows=chunk_rows))
    seconds = time.perf_counter() - started
    warehouse.dispose()
    return {"seconds": seconds, "rows_loaded": result.rows_loaded, "rows_total": result.rows_total,
            "usage_days": result.usage_days_recomputed}


def child_bulk(url: str, path: Path, chunk_rows: int, keys: str = "none") -> dict:
    """The same rows as call_records holds them, appended to an unindexed copy of the table (keys
    "none"), or, for context, to a copy with only call_records' primary key ("primary") or with its
    key and indexes ("all"); keyed copies get each chunk in call_id order, as the loader sends it."""
    warehouse = Warehouse(url)
    warehouse.upgrade()
    columns = [column.name for column in call_records.columns]
    now = pd.Timestamp(datetime.now(timezone.utc))
    timed = 0.0
    rows = 0
    with warehouse.begin() as connection:
        if keys == "none":
            definitions = ", ".join(f"{c.name} {c.type.compile(connection.dialect)}" for c in call_records.columns)
            connection.execute(text(f"CREATE TABLE bulk_call_records ({definitions})"))  # no key, no index
        else:
            copy = call_records.to_metadata(MetaData(), name="bulk_call_records")
            if keys == "primary":
                copy.indexes.clear()
            for index in copy.indexes:
                index.name = f"bulk_{index.name}"
            copy.create(connection)
        for chunk in read_cdr_file(path, ReadOptions(pii_key=BENCH_KEY, chunk_rows=chunk_rows)):
            frame = chunk.records.assign(customer_id=None, source_file=str(path), source_sha256="0" * 64, ingested_at=now)
            if keys != "none":
                frame = frame.sort_values("call_id")
            arrow = arrow_for(call_records, frame.loc[:, columns])
            if warehouse.dialect == "postgresql":
                data = postgres_csv(arrow)
                started = time.perf_counter()
                copy_postgres(connection, "bulk_call_records", columns, data)
            else:
                data = list(sqlite_rows(arrow))
                started = time.perf_counter()
                executemany_sqlite(connection, "bulk_call_records", columns, data)
            timed += time.perf_counter() - started
            rows += len(frame)
            del data
        started = time.perf_counter()
    timed += time.perf_counter() - started  # the commit
    warehouse.dispose()
    return {"seconds": timed, "rows_loaded": rows}


def settle(backend: str, postgres_url: str) -> None:
    """Start each measurement on a clean slate: a bulk load leaves a gigabyte or two of WAL and dirty
    buffers behind, and the checkpoint it triggers would otherwise run during the next measurement.
    (CHECKPOINT needs a superuser or pg_checkpoint; without it the figures are noisier.)"""
    if backend != "postgresql":
        return
    engine = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("CHECKPOINT"))
    except Exception as error:  # noqa: BLE001 - a bench without the privilege still runs
        print(f"  (no CHECKPOINT before the measurement: {type(error).__name__})", flush=True)
    finally:
        engine.dispose()


def run_child(kind: str, backend: str, path: Path, args: argparse.Namespace) -> dict:
    settle(backend, args.postgres_url)
    command = [sys.executable, __file__, "--child", kind, "--backend", backend, "--file", str(path),
               "--postgres-url", args.postgres_url, "--chunk-rows", str(args.chunk_rows), "--workdir", str(args.workdir)]
    finished = subprocess.run(command, capture_output=True, text=True, check=False)
    if finished.returncode != 0:
        raise RuntimeError(f"{kind} on {backend} failed:\n{finished.stderr[-4000:]}")
    return json.loads(finished.stdout.strip().splitlines()[-1])


def child_main(args: argparse.Namespace) -> None:
    url, drop = fresh_warehouse(args.backend, args.workdir, args.postgres_url)
    try:
        if args.child == "e2e":
            figures = child_end_to_end(url, Path(args.file), args.chunk_rows)
        else:
            figures = child_bulk(url, Path(args.file), args.chunk_rows, keys=BULK_KEYS[args.child])
    finally:
        drop()
    figures["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    print(json.dumps(figures))


# --- the report --------------------------------------------------------------------------------------


def machine() -> dict[str, str]:
    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")), platform.processor())
    memory = next((int(line.split()[1]) * 1024 for line in open("/proc/meminfo") if line.startswith("MemTotal")), 0)
    engine = create_engine(DEFAULT_POSTGRES_URL)
    with engine.connect() as connection:
        postgres = connection.scalar(text("SHOW server_version"))
    engine.dispose()
    return {
        "cpu": f"{cpu}, {os.cpu_count()} logical CPUs (shared with other work during the run)",
        "memory": f"{memory / 1024**3:.0f} GiB",
        "os": platform.platform(),
        "python": platform.python_version(),
        "postgresql": f"{postgres} (local, default configuration)",
        "sqlite": sqlite3.sqlite_version,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2_000_000)
    parser.add_argument("--rss-calls", type=int, default=0, help="also measure the peak RSS of loading a file this big (PostgreSQL)")
    parser.add_argument("--backends", default="postgresql,sqlite")
    parser.add_argument("--chunk-rows", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each measurement, interleaved; the medians are reported")
    parser.add_argument("--postgres-url", default=DEFAULT_POSTGRES_URL)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--child", choices=["e2e", *BULK_KEYS], help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--file", help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.workdir = (args.workdir or Settings.from_env().home / "bench").resolve()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.child:
        child_main(args)
        return

    print("machine:")
    for key, value in machine().items():
        print(f"  {key}: {value}")
    print(f"\nsample file ({args.calls:,} calls, canonical CSV):", flush=True)
    path = sample_file(args.workdir, args.calls)
    rows = []
    for backend in [name for name in args.backends.split(",") if name]:  # --backends "" with --rss-calls: memory only
        print(f"\n{backend}:", flush=True)
        runs: dict[str, list[dict]] = {kind: [] for kind in MEASUREMENTS}
        for repeat in range(args.repeat):  # interleaved, so that a slow spell of a shared machine hits all of them
            for kind in MEASUREMENTS:
                figures = run_child(kind, backend, path, args)
                if figures["rows_loaded"] != args.calls:
                    raise RuntimeError(f"{kind} loaded {figures['rows_loaded']} of {args.calls} calls")
                runs[kind].append(figures)
                print(f"  {kind:<17} run {repeat + 1}: {figures['seconds']:6.1f} s = {args.calls / figures['seconds']:>9,.0f} calls/s", flush=True)
        bulk, keyed, indexed, e2e = (median_run(runs[kind]) for kind in MEASUREMENTS)
        for kind, figures in zip(MEASUREMENTS, (bulk, keyed, indexed, e2e)):
            print(f"  {kind:<17} median {figures['seconds']:6.1f} s = {args.calls / figures['seconds']:>9,.0f} calls/s  ({MEASUREMENTS[kind]})", flush=True)
        ratio = indexed["seconds"] / e2e["seconds"]
        peak = max(figures["max_rss_bytes"] for figures in runs["e2e"])
        print(f"  end to end ÷ indexed bulk load: {ratio:.2f} (goal ≥ {GOAL_RATIO})  peak RSS {peak / 1024**2:,.0f} MiB", flush=True)
        rows.append((backend, bulk, keyed, indexed, e2e, ratio, peak))

    rss = None
    if args.rss_calls:
        print(f"\npeak memory for a {args.rss_calls:,}-call file (PostgreSQL, end to end, own process):", flush=True)
        big = sample_file(args.workdir, args.rss_calls)
        rss = run_child("e2e", "postgresql", big, args)
        print(f"  {rss['rows_loaded']:,} calls in {rss['seconds']:.0f} s, peak RSS {rss['max_rss_bytes'] / 1024**2:,.0f} MiB"
              f" = {rss['max_rss_bytes'] / GOAL_RSS_BYTES:.2f} of the 1 GiB limit", flush=True)

    print("\nmarkdown:\n")
    print(f"| backend | end to end calls/s | bulk load into a copy with call_records' key and indexes | **ratio** (goal ≥ {GOAL_RATIO}) "
          "| bulk into an unindexed table | bulk into a copy with the primary key only | peak RSS end to end |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for backend, bulk, keyed, indexed, e2e, ratio, peak in rows:
        rate = {name: args.calls / figures["seconds"] for name, figures in (("bulk", bulk), ("keyed", keyed), ("indexed", indexed), ("e2e", e2e))}
        print(f"| {backend} | {rate['e2e']:,.0f} | {rate['indexed']:,.0f} | **{ratio:.2f}** | {rate['bulk']:,.0f} | {rate['keyed']:,.0f} "
              f"| {peak / 1024**2:,.0f} MiB |")
    if rss:
        print(f"\n{args.rss_calls:,}-call file: peak RSS {rss['max_rss_bytes'] / 1024**2:,.0f} MiB "
              f"({rss['max_rss_bytes'] / GOAL_RSS_BYTES:.2f} of 1 GiB), {rss['rows_loaded'] / rss['seconds']:,.0f} calls/s")


if __name__ == "__main__":
    main()

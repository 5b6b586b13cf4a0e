"""The nightly reconciliation at scale: N customers against the emulator at Stripe's rate limit.

    .venv/bin/python bench/reconcile.py [--customers 10000] [--rps 100] [--latency-ms 200]
                                        [--concurrency 48] [--drop-share 0.01] [--active-share 1.0]
                                        [--max-calls 4] [--client-rps RPS] [--warehouse-url URL]

What it does:
1. starts the Stripe emulator in its own process (no faults yet) and creates the meter and N
   customers; mirrors them into a fresh warehouse with one subscription each, whose current period
   started 1–25 days before the last midnight at a random second (an anniversary that is neither
   minute- nor day-aligned); inserts 1–`--max-calls` answered calls for `--active-share` of the
   customers inside that window; the voice server's meter events for them go to the emulator,
   `--drop-share` of them dropped (all of this is set-up, not measured);
2. turns on the emulator's faults: `--latency-ms` on every request and `--rps` requests per rolling
   second (beyond it Stripe's 429); the StripeResource's rate limiter is set to `--rps`;
3. runs the reconciliation service (report only, what the `meter_reconciliation` asset calls) and
   measures it from start to end — reading the subscriptions and calls, one summaries request per
   customer-period (a split request for each drifting edge day), causes, writing the rows;
4. checks the result: every dropped event found as under-metering on its day, everything else a
   match; counts the requests the emulator served in the run (429s included).

With `--through-daemon` step 3 is what production does: the warehouse and the Dagster instance are on
a fresh PostgreSQL database (bench/real_daemon.py), `local_deployment` starts `dagster dev` with
deploy/dagster.yaml, and the scheduled job `meter_reconciliation_job` is launched for last night's
partition through the webserver and the daemon's run queue (as the schedule's tick or the UI's
backfill would); elapsed = launched → run finished (queue, run-worker start and the run), the run's
own time reported beside it.

The floor is the summaries requests the run needs ÷ `--rps` (the rate limit cannot be beaten);
the figure is elapsed ÷ floor (goal ≤ 1.2 at 100 requests/s and 200 ms latency).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

from annotate_burst import Emulator  # noqa: E402  (the emulator in its own process, shared with that bench)

from aisyst_pipelines.billing.periods import BillingCycle, floor_day  # noqa: E402
from aisyst_pipelines.billing.reconciliation import ReconciliationPolicy  # noqa: E402
from aisyst_pipelines.services.reconciliation import reconcile  # noqa: E402
from aisyst_pipelines.warehouse import Warehouse, reconciliation_store, stripe_sync_store  # noqa: E402
from aisyst_pipelines.warehouse.schema import call_records  # noqa: E402
from aisyst_pipelines.warehouse.stripe_sync_store import StripeCustomerRow, StripeSubscriptionRow  # noqa: E402
from resources.stripe import StripeResource  # noqa: E402

API_KEY = "sk_test_emulator"
UTC = timezone.utc


def set_up(emulator: Emulator, warehouse: Warehouse, customers: int, drop_share: float, seed: int, now: datetime,
           active_share: float = 1.0, max_calls: int = 4) -> dict[str, Any]:
    rng = random.Random(seed)
    seeding = StripeResource(api_key=API_KEY, api_base=emulator.url, requests_per_second=5000, burst=50)
    seeding.catalog.ensure_meter()
    client = emulator.client()
    with ThreadPoolExecutor(max_workers=16) as pool:
        ids = list(pool.map(lambda n: client.v1.customers.create(
            {"name": f"Customer {n}", "metadata": {"aisyst_account_code": f"ACCT-{n:05d}"}}).id, range(customers)))
    midnight = floor_day(now - timedelta(hours=1))
    synced = datetime.now(UTC)
    customer_rows, subscription_rows, calls, events = [], [], [], []
    dropped_minutes = 0
    for n, customer_id in enumerate(ids):
        start = midnight - timedelta(days=rng.randint(1, 25), seconds=rng.randint(1, 86399))
        end = BillingCycle.from_anchor(start).boundary(1)
        code = f"ACCT-{n:05d}"
        customer_rows.append(StripeCustomerRow(customer_id, code, f"Customer {n}", None, None, None))
        subscription_rows.append(StripeSubscriptionRow(
            f"sub_bench_{n}", customer_id, "active", f"si_bench_{n}", "price_bench", None, "prod_bench", "Tier 1", 500,
            "price_metadata", None, "usd", start, end, start, "month", 1, start, False, None, None, None))
        for k in range(rng.randint(1, max_calls) if rng.random() < active_share else 0):
            ended = start + timedelta(seconds=rng.randint(61, int((midnight - start).total_seconds()) - 1))
            minutes = rng.randint(1, 30)
            call_id = f"bench-{n}-{k}"
            calls.append(dict(
                call_id=call_id, account_code=code, customer_id=customer_id, direction="inbound", disposition="completed",
                started_at=ended - timedelta(minutes=minutes), answered_at=ended - timedelta(minutes=minutes), ended_at=ended,
                billable_seconds=minutes * 60, billable_minutes=minutes, content_hash="bench", source_file="bench.csv",
                source_sha256="0" * 64, source_line=len(calls) + 1, ingested_at=ended))
            if rng.random() >= drop_share:
                events.append((customer_id, minutes, ended, call_id))
            else:
                dropped_minutes += minutes
    stripe_sync_store.sync_customers(warehouse, customer_rows, synced)
    stripe_sync_store.sync_subscriptions(warehouse, subscription_rows, synced)
    with warehouse.begin() as connection:
        for offset in range(0, len(calls), 5000):
            connection.execute(call_records.insert(), calls[offset : offset + 5000])
    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(lambda e: seeding.meters.create_event(*e), events))
    return {"calls": len(calls), "meter_events": len(events), "dropped_events": len(calls) - len(events),
            "dropped_minutes": dropped_minutes}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--customers", type=int, default=10000)
    parser.add_argument("--rps", type=float, default=100.0)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--concurrency", type=int, default=48)
    parser.add_argument("--client-rps", type=float, default=None, help="StripeResource's limit (default: --rps)")
    parser.add_argument("--drop-share", type=float, default=0.01)
    parser.add_argument("--active-share", type=float, default=1.0, help="share of customers with calls")
    parser.add_argument("--max-calls", type=int, default=4, help="calls per active customer: 1..this")
    parser.add_argument("--warehouse-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    parser.add_argument("--through-daemon", action="store_true",
                        help="launch the scheduled job through a real deployment (PostgreSQL instance and warehouse)")
    args = parser.parse_args()
    if args.through_daemon:
        return through_daemon(args)

    temp = Path(tempfile.mkdtemp(prefix="aisyst-bench-reconcile-"))
    warehouse = Warehouse(args.warehouse_url or f"sqlite:///{temp / 'warehouse.db'}")
    warehouse.upgrade()
    emulator = Emulator(args.seed)
    report: dict[str, Any] = {
        "date": datetime.now(UTC).date().isoformat(), "customers": args.customers, "rps": args.rps,
        "latency_ms": args.latency_ms, "concurrency": args.concurrency, "client_rps": args.client_rps or args.rps, "warehouse": warehouse.dialect,
        "machine": f"{os.cpu_count()} CPU, Python {platform.python_version()}, load {os.getloadavg()[0]:.1f}",
    }
    try:
        now = datetime.now(UTC)
        started = time.monotonic()
        report |= set_up(emulator, warehouse, args.customers, args.drop_share, args.seed, now, args.active_share, args.max_calls)
        report |= {"active_share": args.active_share, "max_calls": args.max_calls}
        report["setup_seconds"] = round(time.monotonic() - started, 1)
        print(f"set-up: {json.dumps(report)}", flush=True)

        emulator.call("faults", {"latency_ms": args.latency_ms, "rps_limit": args.rps})
        stripe = StripeResource(api_key=API_KEY, api_base=emulator.url, requests_per_second=args.client_rps or args.rps, burst=1)
        window_start = time.time()
        started = time.monotonic()
        outcome = reconcile(warehouse, stripe.meters, ReconciliationPolicy(), repair=False, run_id="bench-reconcile",
                            as_of=now, concurrency=args.concurrency)
        elapsed = time.monotonic() - started
        served = emulator.call("requests_since", window_start)
        emulator.call("faults", {"latency_ms": 0, "rps_limit": None})

        report |= figures(warehouse, outcome.run_id, outcome.summary_requests, served, elapsed, args.rps, report["dropped_minutes"])
        report |= {"check_passed": outcome.verdict().passed, "phase_end_seconds": outcome.timings}
    finally:
        emulator.stop()
    return finish(report, args.json)


def figures(warehouse: Warehouse, run_id: str, requests: int, served: list[dict[str, Any]], elapsed: float, rps: float,
            dropped_minutes: int) -> dict[str, Any]:
    """Elapsed against the floor, and whether the drift found is exactly the dropped events."""
    rows = reconciliation_store.run_results(warehouse, run_id)
    under = sum(r["delta_minutes"] for r in rows if r["status"] == "under_metered")
    statuses = {s: sum(1 for r in rows if r["status"] == s) for s in ("match", "under_metered", "over_metered")}
    floor = requests / rps
    return {
        "customer_periods": len(rows),
        "summary_requests": requests,
        "requests_served": len(served),
        "answered_429": sum(1 for r in served if r.get("status") == 429),
        "elapsed_seconds": round(elapsed, 1),
        "floor_seconds": round(floor, 1),
        "ratio": round(elapsed / floor, 3),
        "statuses": statuses,
        "under_metered_minutes": under,
        # The only drift is the dropped events: every one must be found as under-metering.
        "drift_found_is_the_drops": under == dropped_minutes and not statuses["over_metered"]
        and sum(r["drift_minutes"] for r in rows) == dropped_minutes,
    }


def finish(report: dict[str, Any], path: Path | None) -> int:
    print(json.dumps(report, indent=2, default=str))
    if path:
        path.write_text(json.dumps(report, indent=2, default=str))
    return 0


# The deployment's names as the UI shows them (benches do not import the Dagster layer).
RECONCILIATION_JOB = "meter_reconciliation_job"
RECONCILIATION_ASSET = "meter_reconciliation"


def through_daemon(args: argparse.Namespace) -> int:
    from real_daemon import machine_load, postgres_world, started_deployment

    emulator = Emulator(args.seed)
    report: dict[str, Any] = {
        "mode": "through the daemon: meter_reconciliation_job, last night's partition, run queue",
        "date": datetime.now(UTC).date().isoformat(), "customers": args.customers, "rps": args.rps,
        "latency_ms": args.latency_ms, "concurrency": args.concurrency, "instance": "PostgreSQL (deploy/dagster.yaml)",
        "warehouse": "PostgreSQL", "machine": f"{os.cpu_count()} CPU, Python {platform.python_version()}",
        "load_before": machine_load(),
    }
    try:
        with postgres_world(stripe_api_base=emulator.url, requests_per_second=args.rps) as world:
            warehouse = Warehouse(world.warehouse_url)
            warehouse.upgrade()
            now = datetime.now(UTC)
            started = time.monotonic()
            report |= set_up(emulator, warehouse, args.customers, args.drop_share, args.seed, now, args.active_share, args.max_calls)
            report["setup_seconds"] = round(time.monotonic() - started, 1)
            # The night whose end (plus the hour of settle lag) is after every call and meter event of the set-up.
            night = (floor_day(now - timedelta(hours=1)) - timedelta(days=1)).date().isoformat()
            with started_deployment(world) as (deployment, ready_seconds):
                report["deployment_ready_seconds"] = round(ready_seconds, 1)
                emulator.call("faults", {"latency_ms": args.latency_ms, "rps_limit": args.rps})
                report["load_at_start"] = machine_load()
                window_start = time.time()
                run_id = deployment.submit(RECONCILIATION_JOB, tags={"dagster/partition": night}, run_config={
                    "ops": {RECONCILIATION_ASSET: {"config": {"concurrency": args.concurrency}}}})
                (run,) = deployment.wait_for_runs([run_id], timeout=3600)
                elapsed = time.time() - window_start
                served = emulator.call("requests_since", window_start)
                emulator.call("faults", {"latency_ms": 0, "rps_limit": None})
                record = deployment.instance.get_run_record_by_id(run_id)
                assert record is not None
                metadata = next(m for m in deployment.run_materializations(run_id) if m.asset_key.path == [RECONCILIATION_ASSET]).metadata
                report |= {"partition": night, "run_status": run.status.value, "load_after": machine_load()}
                report |= figures(warehouse, run_id, int(metadata["stripe_summary_requests"].value), served, elapsed, args.rps,
                                  report["dropped_minutes"])
                report |= {
                    "run_seconds": round((record.end_time or 0) - (record.start_time or 0), 1),
                    "launched_to_started_seconds": round((record.start_time or 0) - record.create_timestamp.timestamp(), 1),
                    "phase_end_seconds": metadata["phase_end_seconds"].value,
                }
    finally:
        emulator.stop()
    return finish(report, args.json)


if __name__ == "__main__":
    sys.exit(main())

"""The month-start burst: N renewal drafts at once, annotated by the real Dagster daemon's sensor and runs.

    .venv/bin/python bench/annotate_burst.py [--invoices 10000] [--rps 100] [--latency-ms 200] [--faults]
    .venv/bin/python bench/annotate_burst.py --single-draft 20      # a single draft on a quiet day, 20 times

What it does:
1. starts the Stripe emulator in its own process (no faults yet), creates the tier catalog, one test
   clock and N customers with a subscription each (tiers dealt round-robin, some German), mirrors them
   into a fresh PostgreSQL warehouse, inserts CDRs for March, and writes the brand fields to the
   subscriptions (all of this is set-up, not measured);
2. starts the deployment ops run (bench/real_daemon.py): `local_deployment` — `dagster dev` with
   webserver, daemon and code server — on a fresh PostgreSQL Dagster instance configured by
   deploy/dagster.yaml (run queue: annotation runs one at a time), sensors ticking every
   `--sensor-interval` seconds (30 = production), StripeResource at `--rps`; the events sensor is set
   current (its cursor on the newest set-up event), as it is in production at month start;
3. turns on the emulator's faults: `--latency-ms` on every request, `--rps` requests per rolling second
   (beyond it Stripe's 429), and with `--faults` 10 % 5xx, 5 % 429 and 2 % dropped connections;
4. advances the clock past the renewal (the emulator creates the N drafts) and from then on only
   observes: the warehouse's annotation rows, the emulator's request log, draft_invoice_sensor's and
   stripe_events_sensor's ticks through GraphQL (duration = endTimestamp − timestamp), the runs through
   the instance, and the peak RSS of every process (webserver, daemon, code server, run workers,
   emulator, this bench) sampled every second from /proc;
5. stops when every invoice has a final row and no annotation run is left; measures the time from the
   drafts' creation to the last `annotated_at` and counts the requests the emulator served;
6. turns the faults off and checks every renewal invoice: our lines counted from Stripe's side, exactly
   the lines the ledger says were added, once.

The floor is the Stripe requests the annotation needs (invoice list pages + one write per invoice, each
counted once however often it was retried; the events sensor's own requests are counted apart) ÷ `--rps`;
the figure is elapsed ÷ floor (goal ≤ 1.2 at 100 req/s).

`--single-draft N`: N customers, each on its own test clock, signed up a minute apart (so each draft is
created later than the one before, as in production); N times, at a random moment of the sensor's
interval, one clock is advanced past its renewal (one draft appears) and the bench waits until it is
annotated; reports the median and the worst time from the draft to its annotation (goal: ≤ 60 s median).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import stripe  # noqa: E402

from aisyst_pipelines.billing.stripe_events import WATCHED_EVENT_TYPES, EventsCursor  # noqa: E402
from aisyst_pipelines.billing.tiers import load_tier_catalog  # noqa: E402
from aisyst_pipelines.services.invoice_annotation_planning import DEFAULT_POLICY, ScanCursor  # noqa: E402
from aisyst_pipelines.services import stripe_sync  # noqa: E402
from aisyst_pipelines.services.invoice_annotation import apply_invoice_branding  # noqa: E402
from aisyst_pipelines.billing.client_groups import BrandProfiles, load_client_groups  # noqa: E402
from aisyst_pipelines.templates import load_brand  # noqa: E402
from aisyst_pipelines.warehouse import Warehouse, stripe_sync_store  # noqa: E402
from aisyst_pipelines.warehouse.invoice_annotation_store import (  # noqa: E402
    FINAL_STATUSES,
    annotation_records,
    annotation_window,
    status_counts,
)
from aisyst_pipelines.warehouse.schema import call_records  # noqa: E402
SENSOR_NAME = "draft_invoice_sensor"  # the deployment's sensors, by the names the UI shows
EVENTS_SENSOR_NAME = "stripe_events_sensor"
from real_daemon import (  # noqa: E402
    ProcessSampler,
    dagster_dev_pid,
    exit_cleanly_on_sigterm,
    machine_load,
    postgres_world,
    run_figures,
    runs_in_flight,
    set_sensor_cursor,
    started_deployment,
    tick_figures,
    ticks_since,
)
from resources.stripe import StripeResource  # noqa: E402

API_KEY = "sk_test_emulator"
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
RENEWAL = datetime(2026, 4, 1, tzinfo=timezone.utc)
FAULTS = {"error_rate": 0.10, "rate_limit_error_rate": 0.05, "drop_rate": 0.02}


# --- the emulator in its own process, with a pipe for faults and request counts ------------------------


def _serve(connection: Any, seed: int) -> None:
    from aisyst_pipelines.emulator import EmulatorServer

    # Every request of the burst is counted: the log keeps them all (~0.5 KB each), not the last 20,000.
    server = EmulatorServer(seed=seed, request_log_size=2_000_000)
    server.start()
    connection.send(server.url)
    while True:
        command, argument = connection.recv()
        if command == "faults":
            connection.send(server.set_faults(**argument).as_dict())
        elif command == "requests_since":
            connection.send([entry for entry in server.requests() if entry["at"] >= argument])
        elif command == "stop":
            server.stop()
            connection.send(True)
            return


class Emulator:
    def __init__(self, seed: int) -> None:
        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, seed), daemon=True)
        self.process.start()
        self.url: str = self._pipe.recv()

    def call(self, command: str, argument: Any = None) -> Any:
        self._pipe.send((command, argument))
        return self._pipe.recv()

    def client(self, timeout: float = 80) -> stripe.StripeClient:
        """The SDK against the emulator; `timeout` (the SDK's default, 80 s) is longer for the one clock
        advance that creates every draft (~1 s per 1,000 drafts): a timed-out advance would be retried."""
        return stripe.StripeClient(API_KEY, base_addresses={"api": self.url, "meter_events": self.url}, max_network_retries=3,
                                   http_client=stripe.RequestsClient(timeout=timeout))

    def stop(self) -> None:
        self.call("stop")
        self.process.join(10)


# --- set-up (not measured) -----------------------------------------------------------------------------------


def create_subscribers(emulator: Emulator, prices: list[str], clocks: list[str]) -> list[tuple[str, str, str]]:
    """(customer id, account code, subscription id) for one customer per entry of `clocks` (the test clock
    it lives on), tiers dealt round-robin."""
    client = emulator.client()

    def one(n: int) -> tuple[str, str, str]:
        code = f"ACCT-{n:05d}"
        params: dict[str, Any] = {
            "name": f"Customer {n}",
            "metadata": {"aisyst_account_code": code},
            "test_clock": clocks[n],
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
        if n % 5 == 0:
            params["preferred_locales"] = ["de-DE"]
        customer = client.v1.customers.create(params)
        subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": prices[n % len(prices)]}]})
        return customer.id, code, subscription.id

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, range(len(clocks))))


def insert_calls(warehouse: Warehouse, subscribers: list[tuple[str, str, str]], seed: int) -> int:
    """1–3 answered calls per customer in March, long enough that some tiers run over."""
    rng = random.Random(seed)
    rows = []
    for index, (customer_id, code, _) in enumerate(subscribers):
        for call in range(rng.randint(0, 3)):
            minutes = rng.randint(1, 450)
            ended = T0 + timedelta(days=rng.randint(0, 30), seconds=rng.randint(0, 86399))
            rows.append(
                dict(
                    call_id=f"bench-{index}-{call}", account_code=code, customer_id=customer_id, direction="inbound",
                    disposition="completed", started_at=ended - timedelta(minutes=minutes),
                    answered_at=ended - timedelta(minutes=minutes), ended_at=ended, billable_seconds=minutes * 60,
                    billable_minutes=minutes, content_hash="bench", source_file="bench.csv",
                    source_sha256="0" * 64, source_line=index + 1, ingested_at=ended,
                )
            )
    with warehouse.begin() as connection:
        for offset in range(0, len(rows), 5000):
            connection.execute(call_records.insert(), rows[offset : offset + 5000])
    return len(rows)


# --- checking Stripe's side ---------------------------------------------------------------------------------


def lines_on_renewals(emulator: Emulator) -> dict[str, dict[str, Any]]:
    """Per renewal invoice: our lines (by line metadata), its annotation version and status."""
    client = emulator.client()
    found = {}
    for invoice in client.v1.invoices.list({"limit": 100, "expand": ["data.lines"]}).auto_paging_iter():
        if invoice.billing_reason != "subscription_cycle":
            continue
        lines = invoice.lines.data
        if invoice.lines.has_more:
            lines = list(client.v1.invoices.line_items.list(invoice.id, {"limit": 100}).auto_paging_iter())
        ours = [line for line in lines if "aisyst_line" in line.metadata.to_dict()]
        found[invoice.id] = {
            "ours": len(ours),
            "version": invoice.metadata.to_dict().get("aisyst_annotation_version"),
            "status": invoice.status,
            "branded": bool(invoice.custom_fields) and bool(invoice.footer) and bool(invoice.description),
        }
    return found


ANNOTATION_PATHS = ("/v1/invoices", "/v1/subscriptions", "/v1/customers")  # what annotation runs and the draft sensor ask


def request_figures(entries: list[dict[str, Any]], invoices: int, rps: float) -> dict[str, Any]:
    def kind(entry: dict[str, Any]) -> str:
        path, method = entry["path"], entry["method"]
        if method == "GET" and path == "/v1/invoices":
            return "list invoices"
        if path.startswith("/v1/events"):
            return "events"
        if path.endswith("/add_lines"):
            return "add_lines"
        if method == "GET" and path.startswith("/v1/invoices/"):
            return "retrieve invoice"
        if method == "POST" and path.startswith("/v1/invoices/"):
            return "update invoice"
        return f"{method} {path}"

    served = Counter(kind(e) for e in entries)
    outcomes = Counter(f"{e['status']} {e['outcome']}" for e in entries)
    # What the work needed: each write once (by idempotency key, however often retried), each read that
    # was answered (a retried GET is a new read; the faulted attempts are not counted).
    # The events sensor's requests share the rate limit but are not the annotation's work: counted apart;
    # so are other jobs' (a nightly reconciliation's meter summaries, if its schedule fires meanwhile).
    annotation = [e for e in entries if e["path"].startswith(ANNOTATION_PATHS)]
    write_keys = {(kind(e), e["idempotency_key"]) for e in annotation if e["method"] == "POST" and e["idempotency_key"]}
    reads = sum(1 for e in annotation if e["method"] == "GET" and e["status"] == 200 and e["outcome"] != "drop")
    needed = len(write_keys) + reads
    writes = Counter(k for k, _ in write_keys)
    writes_at = [e["at"] for e in entries if kind(e) == "add_lines"]
    return {
        "requests_served": len(entries),
        "first_write_at": min(writes_at, default=None),
        "served_by_kind": dict(served),
        "served_by_outcome": dict(outcomes),
        "requests_needed": needed,
        "writes_needed": dict(writes),
        "writes_per_invoice": round(len(write_keys) / invoices, 3) if invoices else None,
        "floor_seconds": round(needed / rps, 1),
    }


# --- main ------------------------------------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process (Linux /proc): where the burst's CPU went."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def set_up(emulator: Emulator, warehouse: Warehouse, clocks: list[str], seed: int) -> dict[str, Any]:
    """Catalog, customers on `clocks` (one per entry), the Stripe mirror, March's calls and the brand
    fields on the subscriptions — written directly (not measured)."""
    started = time.monotonic()
    roomy = StripeResource(api_key=API_KEY, api_base=emulator.url, requests_per_second=2000, burst=50)
    subscribers = create_subscribers(emulator, PRICES, clocks)
    catalog = load_tier_catalog()
    now = datetime.now(timezone.utc)
    distinct_clocks = sorted(set(clocks))
    stripe_sync_store.sync_customers(warehouse, [stripe_sync.customer_row(c) for c in roomy.customers.list_customers(distinct_clocks)], now)
    stripe_sync_store.sync_subscriptions(
        warehouse, [stripe_sync.subscription_row(s, catalog, {}) for s in roomy.customers.list_subscriptions(distinct_clocks)], now
    )
    calls = insert_calls(warehouse, subscribers, seed)
    # the bench's customers have no address: the default group, untaxed
    branding = apply_invoice_branding(roomy.invoices, warehouse, BrandProfiles(load_brand(), load_client_groups(), {}), concurrency=16)
    figures = {"calls": calls, "branded_subscriptions": len(branding.updated), "setup_seconds": round(time.monotonic() - started, 1)}
    print(f"set-up: {len(clocks)} subscriptions, {calls} calls, brand fields on {len(branding.updated)} in "
          f"{figures['setup_seconds']} s", flush=True)
    return figures


PRICES: list[str] = []  # the tier prices, filled by main() before the set-up


def sensors_current(deployment: Any, emulator: Emulator, since: float) -> None:
    """Both sensors as at a quiet month start: draft_invoice_sensor has scanned the set-up's invoices (its
    first tick), stripe_events_sensor follows on from the newest set-up event (its cursor set after its
    first tick, between two ticks, on the newest event of the types it lists — the set-up's backlog of
    sign-up events is not the burst)."""
    deployment.wait_for_ticks(SENSOR_NAME, since=since, timeout=600)
    draft_cursor_aged(deployment)
    deployment.wait_for_ticks(EVENTS_SENSOR_NAME, since=since, timeout=600)
    events_cursor_current(deployment, emulator)


def events_cursor_current(deployment: Any, emulator: Emulator) -> None:
    """stripe_events_sensor following on from the newest set-up event. Checked on the next tick: with
    100,000 subscriptions its first ticks walk the set-up's history back for 20 s each, one after the
    other, and the tick in flight when the cursor is set stores its own when it ends (a 100,000 burst
    once ran with the sensor still walking the history, applying none of the burst's events)."""
    for _ in range(20):
        newest = emulator.client().v1.events.list({"limit": 1, "types": list(WATCHED_EVENT_TYPES)}).data[0]
        set_at = time.time()
        set_sensor_cursor(deployment, EVENTS_SENSOR_NAME,
                          EventsCursor(last_event_id=newest.id, last_created=newest.created, scanning=False).to_json())
        tick = deployment.wait_for_ticks(EVENTS_SENSOR_NAME, since=set_at, timeout=120)[-1]  # it started after the set
        if not EventsCursor.from_json(tick.cursor).scanning:
            return
    raise RuntimeError("stripe_events_sensor's cursor could not be set on the newest set-up event")


def draft_cursor_aged(deployment: Any) -> None:
    """draft_invoice_sensor as at a real month start, where the newest invoice it saw is hours old, so no
    tick re-lists the overlap below its cursor. Here the set-up's invoices came minutes ago, all in the
    same test-clock second: without this, a tick would re-list all 10,000 of them every 30 s, and one
    such tick would be in flight when the drafts appear. Set between ticks, checked on the next one."""
    for _ in range(20):
        tick = deployment.wait_for_ticks(SENSOR_NAME, since=time.time(), timeout=120)[-1]
        stored = json.loads(tick.cursor or "{}")
        stored.pop("readable", None)  # what the sensor adds for the UI (jobs/cursors.py); it reads either
        cursor = ScanCursor(**stored)
        if cursor.scanning or cursor.hwm_at is None:
            continue
        if time.time() - cursor.hwm_at > DEFAULT_POLICY.overlap_grace.total_seconds():
            return
        aged = cursor.hwm_at - DEFAULT_POLICY.overlap_grace.total_seconds() - 60
        set_sensor_cursor(deployment, SENSOR_NAME, replace(cursor, hwm_at=aged, relisted_at=aged).dump())
    raise RuntimeError("draft_invoice_sensor's cursor could not be set to a quiet month start")


def burst(args: argparse.Namespace, emulator: Emulator, warehouse: Warehouse, deployment: Any, clock: str) -> dict[str, Any]:
    """Advance the clock past the renewal and watch the daemon annotate every draft."""
    report: dict[str, Any] = {}
    advancing = time.time()
    advance = emulator.client(timeout=max(80.0, args.invoices / 250)).v1.test_helpers.test_clocks.advance
    advance(clock, {"frozen_time": int((RENEWAL + timedelta(minutes=1)).timestamp())})
    drafts_at = time.time()
    report["advance_seconds"] = round(drafts_at - advancing, 1)
    print(f"{args.invoices} drafts created; watching the daemon …", flush=True)
    cpu_before = cpu_seconds(emulator.process.pid)
    deadline = time.monotonic() + args.timeout
    while True:
        counts = status_counts(warehouse)
        final = sum(n for status, n in counts.items() if status in FINAL_STATUSES)
        if final >= args.invoices and runs_in_flight(deployment, SENSOR_NAME, drafts_at) == 0:
            break
        if time.monotonic() > deadline:
            report["timed_out"] = True
            break
        time.sleep(2)
    first_at, last_at = annotation_window(warehouse)
    report["emulator_cpu_seconds"] = round(cpu_seconds(emulator.process.pid) - cpu_before, 1)
    report["load_average_after"] = os.getloadavg()
    entries = emulator.call("requests_since", drafts_at)
    report["statuses"] = status_counts(warehouse)
    report["elapsed_seconds"] = round(last_at.timestamp() - drafts_at, 1) if last_at else None
    report["first_annotation_after_seconds"] = round(first_at.timestamp() - drafts_at, 1) if first_at else None
    report |= request_figures(entries, args.invoices, args.rps)
    report["first_write_after_seconds"] = round(report.pop("first_write_at") - drafts_at, 1) if entries else None
    if report["elapsed_seconds"]:
        report["ratio_to_floor"] = round(report["elapsed_seconds"] / report["floor_seconds"], 2)
    report["draft_invoice_sensor"] = tick_figures(ticks_since(deployment, SENSOR_NAME, drafts_at), since=drafts_at)
    report["stripe_events_sensor"] = tick_figures(ticks_since(deployment, EVENTS_SENSOR_NAME, drafts_at), since=drafts_at)
    report["runs"] = run_figures(deployment, SENSOR_NAME, drafts_at)
    return report


def single_drafts(args: argparse.Namespace, emulator: Emulator, warehouse: Warehouse, deployment: Any, clocks: list[str]) -> dict[str, Any]:
    """One draft at a time, each at a random moment of the sensor's interval: seconds to its annotation."""
    rng = random.Random(args.seed)
    client = emulator.client()
    started = time.time()
    latencies: list[float] = []
    for number, clock in enumerate(clocks, start=1):
        time.sleep(rng.uniform(0, args.sensor_interval))
        renewal = RENEWAL + timedelta(minutes=number - 1)  # its customer signed up number - 1 minutes after T0
        client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": int((renewal + timedelta(minutes=1)).timestamp())})
        created = time.time()
        deadline = time.monotonic() + args.timeout
        while sum(n for status, n in status_counts(warehouse).items() if status in FINAL_STATUSES) < number:
            if time.monotonic() > deadline:
                raise SystemExit(f"draft {number} not annotated within {args.timeout:.0f} s")
            time.sleep(0.25)
        _, last_at = annotation_window(warehouse)
        latencies.append(round(last_at.timestamp() - created, 1) if last_at else float("nan"))
        print(f"draft {number}: annotated {latencies[-1]} s after its creation", flush=True)
    runs = run_figures(deployment, SENSOR_NAME, started)
    queued = [r["queued_seconds"] for r in runs if r["queued_seconds"] is not None]
    running = [r["running_seconds"] for r in runs if r["running_seconds"] is not None]
    ticks = ticks_since(deployment, SENSOR_NAME, started)
    return {
        "drafts": len(latencies), "seconds_to_annotation": latencies,
        "median_seconds": statistics.median(latencies), "max_seconds": max(latencies),
        "runs": len(runs), "median_run_queued_seconds": statistics.median(queued) if queued else None,
        "median_run_running_seconds": statistics.median(running) if running else None,
        "draft_invoice_sensor": {k: v for k, v in tick_figures(ticks).items() if k != "durations_seconds"}
        | {"median_tick_seconds": statistics.median([t.end_timestamp - t.timestamp for t in ticks]) if ticks else None},
        "statuses": status_counts(warehouse),
    }


def check_stripe_side(emulator: Emulator, warehouse: Warehouse) -> dict[str, Any]:
    emulator.call("faults", {"latency_ms": 0, "rps_limit": None, "error_rate": 0, "rate_limit_error_rate": 0, "drop_rate": 0})
    found = lines_on_renewals(emulator)
    records = annotation_records(warehouse, found)
    mismatched = [i for i, f in found.items() if i not in records or f["ours"] != (records[i].lines_added or 0)]
    return {
        "renewal_invoices": len(found),
        "annotated_rows": sum(1 for r in records.values() if r.status.value == "annotated"),
        "lines_as_recorded": len(found) - len(mismatched),
        "lines_per_invoice": dict(Counter(f["ours"] for f in found.values())),
        "with_annotation_version": sum(1 for f in found.values() if f["version"]),
        "branded": sum(1 for f in found.values() if f["branded"]),
        "mismatched": mismatched[:20],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=10000)
    parser.add_argument("--single-draft", type=int, default=None, metavar="N",
                        help="instead of the burst: N single drafts one after another (median of their times)")
    parser.add_argument("--rps", type=float, default=100.0)
    parser.add_argument("--pace", type=float, default=None,
                        help="StripeResource's requests_per_second in the deployment (default: --rps, the emulator's limit)")
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--faults", action="store_true", help="10 %% 5xx, 5 %% 429, 2 %% dropped connections")
    parser.add_argument("--sensor-interval", type=int, default=30, help="AISYST_SENSOR_INTERVAL_SECONDS (30 = production)")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()
    exit_cleanly_on_sigterm()

    customers = args.single_draft or args.invoices
    pace = args.pace or args.rps  # the deployment's StripeResource rate
    emulator = Emulator(args.seed)
    report: dict[str, Any] = {
        "mode": f"single draft × {args.single_draft}" if args.single_draft else f"burst of {args.invoices}",
        "rps": args.rps, "pace": pace, "latency_ms": args.latency_ms, "faults": args.faults, "sensor_interval": args.sensor_interval,
        "machine": f"{platform.machine()}, Python {platform.python_version()}", "load_before": machine_load(),
        "instance": "PostgreSQL (deploy/dagster.yaml)", "warehouse": "PostgreSQL",
    }
    try:
        with postgres_world(stripe_api_base=emulator.url, requests_per_second=pace,
                            sensor_interval_seconds=args.sensor_interval) as world:
            warehouse = Warehouse(world.warehouse_url)
            warehouse.upgrade()
            roomy = StripeResource(api_key=API_KEY, api_base=emulator.url, requests_per_second=2000, burst=50)
            PRICES.extend(price.id for price in roomy.catalog.ensure(load_tier_catalog()).prices)
            new_clock = emulator.client().v1.test_helpers.test_clocks.create
            if args.single_draft:
                # Customer n signs up n minutes after the first, so that each draft is created later than
                # the one before, as real drafts are (the sensor scans by `created`).
                clocks = [new_clock({"frozen_time": int((T0 + timedelta(minutes=n)).timestamp())}).id for n in range(customers)]
            else:
                clocks = [new_clock({"frozen_time": int(T0.timestamp())}).id] * customers
            report |= set_up(emulator, warehouse, clocks, args.seed)

            deployment_since = time.time()
            with started_deployment(world) as (deployment, startup_seconds):
                report["deployment_ready_seconds"] = round(startup_seconds, 1)
                print(f"local_deployment ready after {startup_seconds:.1f} s on {deployment.url}", flush=True)
                memory = ProcessSampler(dagster_dev_pid(deployment), {emulator.process.pid: "emulator", os.getpid(): "bench"}).start()
                sensors_current(deployment, emulator, deployment_since)
                faults: dict[str, Any] = {"latency_ms": args.latency_ms, "rps_limit": args.rps}
                if args.faults:
                    faults |= FAULTS
                emulator.call("faults", faults)
                report["load_at_start"] = machine_load()
                if args.single_draft:
                    report |= single_drafts(args, emulator, warehouse, deployment, clocks)
                else:
                    report |= burst(args, emulator, warehouse, deployment, clocks[0])
                report["load_after"] = machine_load()
                report["peak_rss"] = memory.stop()
            report["check"] = check_stripe_side(emulator, warehouse)
            warehouse.dispose()
    finally:
        emulator.stop()

    print(json.dumps(report, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    ok = report.get("check", {}).get("mismatched") == [] and report["check"]["annotated_rows"] == customers
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

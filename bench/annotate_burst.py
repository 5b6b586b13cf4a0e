"""The month-start burst: N renewal drafts at once, annotated by the sensor's planning and the runs' work.

    .venv/bin/python bench/annotate_burst.py [--invoices 10000] [--rps 100] [--latency-ms 200]
                                             [--faults] [--kill-after-share 0.3] [--warehouse-url URL]

What it does:
1. starts the Stripe emulator in its own process (no faults yet), creates the tier catalog, one test
   clock and N customers with a subscription each (tiers dealt round-robin, some German), mirrors them
   into a fresh warehouse, inserts CDRs for March, and writes the brand fields to the subscriptions
   (all of this is set-up, not measured);
2. turns on the emulator's faults: `--latency-ms` on every request, `--rps` requests per rolling second
   (beyond it Stripe's 429), and with `--faults` 10 % 5xx, 5 % 429 and 2 % dropped connections;
3. advances the clock past the renewal: the emulator creates the N drafts (period = March). From the
   moment the advance returns, the daemon is imitated in this process with the services the sensor
   and the job adapt: the planning of draft_invoice_sensor (`scan_invoices`) at once and then every
   30 s (start to start), the batches it plans worked by `annotate_batch` one after another (as a tag
   concurrency limit of 1 would serialize the runs; run keys are honoured; a Dagster run's own
   start-up, ~1–2 s, is not in the figure); the StripeResource's rate limiter is set to `--rps`;
4. stops when every invoice has a final row; measures the time from the drafts' creation to the last
   `annotated_at`, and counts the requests the emulator served in that window;
5. turns the faults off and checks every renewal invoice: our lines counted from Stripe's side, exactly
   the lines the ledger says were added, once.

The floor is the Stripe requests the work needs (list pages + one write per invoice, each counted once
however often it was retried) ÷ `--rps`; the figure is elapsed ÷ floor (goal ≤ 1.2 at 100 req/s).
`--kill-after-share S` runs the first batch in a separate `aisyst annotate` process and SIGKILLs it once
S of that batch is annotated, then runs everything again in this process: the result must be the same.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import stripe  # noqa: E402

from aisyst_pipelines.services import stripe_sync  # noqa: E402
from aisyst_pipelines.billing.tiers import load_tier_catalog  # noqa: E402
from aisyst_pipelines.services.invoice_annotation import annotate_batch, apply_invoice_branding  # noqa: E402
from aisyst_pipelines.services.invoice_annotation_planning import (  # noqa: E402
    DEFAULT_POLICY,
    ScanCursor,
    planned_runs,
    scan_invoices,
)
from aisyst_pipelines.billing.client_groups import BrandProfiles, load_client_groups  # noqa: E402
from aisyst_pipelines.templates import load_brand  # noqa: E402
from aisyst_pipelines.warehouse import Warehouse, stripe_sync_store  # noqa: E402
from aisyst_pipelines.warehouse.invoice_annotation_store import (  # noqa: E402
    FINAL_STATUSES,
    AnnotationStatus,
    annotation_records,
    annotation_window,
    status_counts,
)
from aisyst_pipelines.warehouse.schema import call_records  # noqa: E402
from resources.stripe import StripeResource  # noqa: E402

API_KEY = "sk_test_emulator"
T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)
RENEWAL = datetime(2026, 4, 1, tzinfo=timezone.utc)
TICK_SECONDS = 30.0
CONCURRENCY = 64  # the job's default (`concurrency` of its run config)
COUNTED = (AnnotationStatus.ANNOTATED, AnnotationStatus.MISSED, AnnotationStatus.FAILED, AnnotationStatus.SKIPPED)
FAULTS = {"error_rate": 0.10, "rate_limit_error_rate": 0.05, "drop_rate": 0.02}


# --- the emulator in its own process, with a pipe for faults and request counts ------------------------


def _serve(connection: Any, seed: int) -> None:
    from aisyst_pipelines.emulator import EmulatorServer

    server = EmulatorServer(seed=seed)
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

    def client(self) -> stripe.StripeClient:
        return stripe.StripeClient(API_KEY, base_addresses={"api": self.url, "meter_events": self.url}, max_network_retries=3)

    def stop(self) -> None:
        self.call("stop")
        self.process.join(10)


# --- set-up (not measured) -----------------------------------------------------------------------------------


def create_subscribers(emulator: Emulator, count: int, prices: list[str], clock: str) -> list[tuple[str, str, str]]:
    """(customer id, account code, subscription id) for `count` customers, tiers dealt round-robin."""
    client = emulator.client()

    def one(n: int) -> tuple[str, str, str]:
        code = f"ACCT-{n:05d}"
        params: dict[str, Any] = {
            "name": f"Customer {n}",
            "metadata": {"aisyst_account_code": code},
            "test_clock": clock,
            "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"},
        }
        if n % 5 == 0:
            params["preferred_locales"] = ["de-DE"]
        customer = client.v1.customers.create(params)
        subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": prices[n % len(prices)]}]})
        return customer.id, code, subscription.id

    with ThreadPoolExecutor(max_workers=16) as pool:
        return list(pool.map(one, range(count)))


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


# --- the daemon, imitated ------------------------------------------------------------------------------------


class Daemon:
    """The sensor's planning every 30 s (start to start); the planned batches worked one after another,
    as runs limited to one at a time would be; run keys honoured."""

    def __init__(self, stripe_resource: StripeResource, warehouse: Warehouse) -> None:
        self.stripe = stripe_resource
        self.warehouse = warehouse
        self.profiles = BrandProfiles(load_brand(), load_client_groups(), {})  # the bench's customers have no address: untaxed
        self.cursor = ScanCursor()
        self.used_keys: set[str] = set()
        self.queue: list[list[str]] = []
        self.lock = threading.Lock()
        self.ticks: list[dict[str, Any]] = []
        self.runs: list[dict[str, Any]] = []
        self.running = False

    def tick(self) -> list[list[str]]:
        started = time.monotonic()
        now = datetime.now(timezone.utc)
        rate = self.stripe.effective_requests_per_second
        try:
            plan = scan_invoices(self.stripe.invoices, self.warehouse, self.cursor, DEFAULT_POLICY, now, rate)
        except Exception as error:  # noqa: BLE001 - a failed tick keeps its cursor; the next one retries
            self.ticks.append({"seconds": time.monotonic() - started, "error": f"{type(error).__name__}: {error}"[:200]})
            return []
        self.cursor = plan.cursor
        new = [run for run in planned_runs(plan, DEFAULT_POLICY, now) if run.run_key not in self.used_keys]
        self.used_keys.update(run.run_key for run in new)
        self.ticks.append({"seconds": round(time.monotonic() - started, 2), "runs": len(new)})
        return [run.invoice_ids for run in new]

    def run(self, invoice_ids: list[str]) -> None:
        started = time.monotonic()
        run = annotate_batch(
            self.stripe.invoices, self.warehouse, invoice_ids, run_id=f"bench-{len(self.runs) + 1}", profiles=lambda: self.profiles,
            concurrency=CONCURRENCY, requests_per_second=self.stripe.effective_requests_per_second,
        )
        counts = {status.value: run.count(status) for status in COUNTED}
        self.runs.append({"seconds": round(time.monotonic() - started, 2), "invoices": len(invoice_ids), **counts,
                          "already_done": len(run.already_done)})

    def until_done(self, invoices: int, timeout: float, first_batches: list[list[str]] | None = None) -> None:
        def runner() -> None:
            while not stop.is_set():
                with self.lock:
                    batch = self.queue.pop(0) if self.queue else None
                    self.running = batch is not None
                if batch is None:
                    time.sleep(0.05)
                    continue
                self.run(batch)
                with self.lock:
                    self.running = False

        stop = threading.Event()
        thread = threading.Thread(target=runner, daemon=True)
        thread.start()
        if first_batches:
            with self.lock:
                self.queue.extend(first_batches)
        deadline = time.monotonic() + timeout
        next_tick = time.monotonic()
        while time.monotonic() < deadline:
            if time.monotonic() >= next_tick:
                next_tick += TICK_SECONDS
                batches = self.tick()
                with self.lock:
                    self.queue.extend(batches)
            counts = status_counts(self.warehouse)
            final = sum(n for status, n in counts.items() if status in FINAL_STATUSES)
            with self.lock:
                idle = not self.queue and not self.running
            if final >= invoices and idle:
                break
            time.sleep(0.2)
        stop.set()
        thread.join()


# --- checking Stripe's side ---------------------------------------------------------------------------------


def lines_on_renewals(emulator: Emulator) -> dict[str, dict[str, Any]]:
    """Per renewal invoice: our lines (by line metadata), its annotation version and status."""
    client = stripe.StripeClient(API_KEY, base_addresses={"api": emulator.url}, max_network_retries=3)
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


def request_figures(entries: list[dict[str, Any]], invoices: int, rps: float) -> dict[str, Any]:
    def kind(entry: dict[str, Any]) -> str:
        path, method = entry["path"], entry["method"]
        if method == "GET" and path == "/v1/invoices":
            return "list invoices"
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
    write_keys = {(kind(e), e["idempotency_key"]) for e in entries if e["method"] == "POST" and e["idempotency_key"]}
    reads = sum(1 for e in entries if e["method"] == "GET" and e["status"] == 200 and e["outcome"] != "drop")
    needed = len(write_keys) + reads
    writes = Counter(k for k, _ in write_keys)
    return {
        "requests_served": len(entries),
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


def kill_midway(ids: list[str], env: dict[str, str], warehouse: Warehouse, share: float) -> dict[str, Any]:
    """Run the first batch in `aisyst annotate --invoice …` and SIGKILL it when `share` of it is annotated."""
    command = [str(REPO / ".venv/bin/aisyst"), "annotate", *[arg for invoice in ids for arg in ("--invoice", invoice)]]
    process = subprocess.Popen(command, env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    target = max(1, int(len(ids) * share))
    while process.poll() is None:
        done = status_counts(warehouse, ids).get("annotated", 0)
        if done >= target:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
            break
        time.sleep(0.2)
    counts = status_counts(warehouse, ids)
    return {"batch": len(ids), "killed_at": counts, "exit": process.returncode}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--invoices", type=int, default=10000)
    parser.add_argument("--rps", type=float, default=100.0)
    parser.add_argument("--latency-ms", type=float, default=200.0)
    parser.add_argument("--faults", action="store_true", help="10 %% 5xx, 5 %% 429, 2 %% dropped connections")
    parser.add_argument("--kill-after-share", type=float, default=None, help="SIGKILL the first run at this share")
    parser.add_argument("--warehouse-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="annotate-burst-"))
    warehouse_url = args.warehouse_url or f"sqlite:///{workdir / 'warehouse.db'}"
    warehouse = Warehouse(warehouse_url)
    warehouse.upgrade()
    emulator = Emulator(args.seed)
    report: dict[str, Any] = {
        "invoices": args.invoices, "rps": args.rps, "latency_ms": args.latency_ms, "faults": args.faults,
        "machine": f"{os.cpu_count()} CPU, Python {platform.python_version()}", "warehouse": warehouse.dialect,
    }
    try:
        setup_started = time.monotonic()
        roomy = StripeResource(api_key=API_KEY, api_base=emulator.url, requests_per_second=2000, burst=50)
        prices = [price.id for price in roomy.catalog.ensure(load_tier_catalog()).prices]
        clock = emulator.client().v1.test_helpers.test_clocks.create({"frozen_time": int(T0.timestamp())}).id
        subscribers = create_subscribers(emulator, args.invoices, prices, clock)
        catalog = load_tier_catalog()
        now = datetime.now(timezone.utc)
        stripe_sync_store.sync_customers(warehouse, [stripe_sync.customer_row(c) for c in roomy.customers.list_customers([clock])], now)
        stripe_sync_store.sync_subscriptions(
            warehouse, [stripe_sync.subscription_row(s, catalog, {}) for s in roomy.customers.list_subscriptions([clock])], now
        )
        report["calls"] = insert_calls(warehouse, subscribers, args.seed)
        branding = apply_invoice_branding(
            roomy.invoices, warehouse, BrandProfiles(load_brand(), load_client_groups(), {}), concurrency=16
        )
        report["branded_subscriptions"] = len(branding.updated)
        report["setup_seconds"] = round(time.monotonic() - setup_started, 1)
        print(f"set-up: {args.invoices} subscriptions, {report['calls']} calls, brand fields on "
              f"{len(branding.updated)} in {report['setup_seconds']} s", flush=True)

        faults: dict[str, Any] = {"latency_ms": args.latency_ms, "rps_limit": args.rps}
        if args.faults:
            faults |= FAULTS
        emulator.call("faults", faults)
        stripe_resource = StripeResource(api_key=API_KEY, api_base=emulator.url, requests_per_second=args.rps)
        daemon = Daemon(stripe_resource, warehouse)

        emulator.client().v1.test_helpers.test_clocks.advance(
            clock, {"frozen_time": int((RENEWAL + timedelta(minutes=1)).timestamp())}
        )
        drafts_at = time.time()
        cpu_before = {"emulator": cpu_seconds(emulator.process.pid), "pipeline": cpu_seconds(os.getpid())}
        first_batches = None
        if args.kill_after_share is not None:
            first_batches = daemon.tick()
            env = dict(os.environ, AISYST_HOME=str(workdir / "killed"), AISYST_WAREHOUSE_URL=warehouse_url,
                       STRIPE_API_BASE=emulator.url, AISYST_STRIPE_REQUESTS_PER_SECOND=str(args.rps))
            env.pop("STRIPE_SECRET_KEY", None)
            report["kill"] = kill_midway(first_batches[0], env, warehouse, args.kill_after_share)
            print(f"killed the first run: {report['kill']}", flush=True)
        daemon.until_done(args.invoices, args.timeout, first_batches)
        first_at, last_at = annotation_window(warehouse)
        report["cpu_seconds"] = {
            "emulator": round(cpu_seconds(emulator.process.pid) - cpu_before["emulator"], 1),
            "pipeline": round(cpu_seconds(os.getpid()) - cpu_before["pipeline"], 1),
        }
        report["load_average"] = os.getloadavg()
        entries = emulator.call("requests_since", drafts_at)
        report["statuses"] = status_counts(warehouse)
        report["elapsed_seconds"] = round(last_at.timestamp() - drafts_at, 1) if last_at else None
        report["first_annotation_after_seconds"] = round(first_at.timestamp() - drafts_at, 1) if first_at else None
        report |= request_figures(entries, args.invoices, args.rps)
        if report["elapsed_seconds"]:
            report["ratio_to_floor"] = round(report["elapsed_seconds"] / report["floor_seconds"], 2)
        report["ticks"] = daemon.ticks
        report["runs"] = daemon.runs

        emulator.call("faults", {"latency_ms": 0, "rps_limit": None, "error_rate": 0, "rate_limit_error_rate": 0, "drop_rate": 0})
        found = lines_on_renewals(emulator)
        records = annotation_records(warehouse, found)
        mismatched = [i for i, f in found.items() if i not in records or f["ours"] != (records[i].lines_added or 0)]
        report["check"] = {
            "renewal_invoices": len(found),
            "annotated_rows": sum(1 for r in records.values() if r.status.value == "annotated"),
            "lines_as_recorded": len(found) - len(mismatched),
            "lines_per_invoice": dict(Counter(f["ours"] for f in found.values())),
            "with_annotation_version": sum(1 for f in found.values() if f["version"]),
            "branded": sum(1 for f in found.values() if f["branded"]),
            "mismatched": mismatched[:20],
        }
    finally:
        emulator.stop()

    print(json.dumps({k: v for k, v in report.items() if k not in ("ticks", "runs")}, indent=2, default=str))
    print("ticks:", report.get("ticks"))
    print("runs:", report.get("runs"))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    ok = report.get("check", {}).get("mismatched") == [] and report["check"]["annotated_rows"] == args.invoices
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

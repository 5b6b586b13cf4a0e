"""The month-start burst through the real daemon's stripe_events_sensor: how long until stripe_invoices is current.

    .venv/bin/python bench/stripe_events_burst.py [--subscriptions 2000] [--rps 25] [--sensor-interval 30]

1. starts the Stripe emulator in its own process, creates the tier catalog, one test clock and N
   customers with a subscription each (not measured);
2. starts the deployment ops run (bench/real_daemon.py): `local_deployment` — `dagster dev` with
   webserver, daemon and code server — on a fresh PostgreSQL Dagster instance configured by
   deploy/dagster.yaml, the warehouse on PostgreSQL, the StripeResource at `--rps` requests per second
   (25 = Stripe's test-mode default), sensors ticking every `--sensor-interval` seconds (30 = production);
   waits until the daemon's stripe_events_sensor has applied every event of the set-up (a tick that
   found no new events; not measured);
3. advances the clock one clock-hour past the renewal: per subscription the emulator emits
   invoice.created, customer.subscription.updated, invoice.finalized, invoice.paid and
   invoice.payment_succeeded — 5 × N events with the same few timestamps;
4. only observes: the warehouse (events applied, renewal invoices `paid`), the sensor's ticks through
   GraphQL (duration = endTimestamp − timestamp) and the peak RSS of every process, until the 5 × N
   renewal events are applied — the daemon's draft_invoice_sensor annotates the drafts meanwhile, as in
   production, and its runs' invoice.updated events are applied by the same ticks; reports the ticks,
   the longest tick (ratio to Dagster's 60 s evaluation limit), the time from the advance until the
   bench saw the last renewal event applied (polled every 0.5 s; ratio to the one-minute promise), and
   checks that every renewal invoice is `paid` in the warehouse and that every watched event Stripe
   holds is applied (once: the applied table is keyed by event id).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import stripe  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from aisyst_pipelines.billing.stripe_events import WATCHED_EVENT_TYPES  # noqa: E402
from aisyst_pipelines.billing.tiers import load_tier_catalog  # noqa: E402
from aisyst_pipelines.deployment import Deployment, free_port  # noqa: E402
from aisyst_pipelines.warehouse import Warehouse  # noqa: E402
from aisyst_pipelines.warehouse.schema import stripe_events_applied, stripe_invoices  # noqa: E402
DRAFT_SENSOR_NAME = "draft_invoice_sensor"  # the deployment's sensors, by the names the UI shows
SENSOR_NAME = "stripe_events_sensor"
from real_daemon import (  # noqa: E402
    ProcessSampler,
    dagster_dev_pid,
    exit_cleanly_on_sigterm,
    machine_load,
    postgres_world,
    run_figures,
    runs_in_flight,
    started_deployment,
    tick_figures,
    ticks_since,
)
from resources.stripe import StripeResource  # noqa: E402

API_KEY = "sk_test_emulator"
T0 = 1_772_323_200  # 2026-03-01 00:00 UTC
DAGSTER_LIMIT_SECONDS = 60.0


def start_emulator(home: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "aisyst_pipelines.cli", "emulator", "--port", str(port), "--seed", "7"],
        env=os.environ | {"AISYST_HOME": str(home)}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, url
        except OSError:
            time.sleep(0.2)
    process.kill()
    raise SystemExit("the emulator did not start")


def set_up(client: stripe.StripeClient, resource: StripeResource, subscriptions: int) -> tuple[str, int]:
    prices = [entry.id for entry in resource.catalog.ensure(load_tier_catalog()).prices]
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": T0})

    def one(n: int) -> int:
        customer = client.v1.customers.create({
            "email": f"c{n}@burst.example", "test_clock": clock.id, "payment_method": "pm_card_visa",
            "invoice_settings": {"default_payment_method": "pm_card_visa"}, "metadata": {"aisyst_account_code": f"acct_{n:05d}"},
        })
        sub = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": prices[n % len(prices)]}]})
        return sub.items.data[0].current_period_end

    with ThreadPoolExecutor(8) as pool:
        ends = list(pool.map(one, range(subscriptions)))
    return clock.id, max(ends)


RENEWAL_EVENT_TYPES = ("invoice.created", "customer.subscription.updated", "invoice.finalized", "invoice.paid",
                       "invoice.payment_succeeded")


def renewal_events_applied(warehouse: Warehouse, renewed_at: int) -> int:
    """Events of the renewal's five types, created (clock time) at or after the renewal, in the warehouse.
    (The daemon's annotation runs add invoice.updated events of their own, which the sensor applies too.)"""
    with warehouse.connect() as connection:
        return connection.scalar(
            select(func.count()).select_from(stripe_events_applied).where(
                stripe_events_applied.c.event_type.in_(RENEWAL_EVENT_TYPES),
                stripe_events_applied.c.created >= datetime.fromtimestamp(renewed_at, timezone.utc),
            )
        ) or 0


def unapplied_events(client: stripe.StripeClient, warehouse: Warehouse) -> int:
    """Events of the types the sensor watches that Stripe holds and the warehouse has not applied."""
    listed = {e.id for e in client.v1.events.list({"limit": 100, "types": list(WATCHED_EVENT_TYPES)}).auto_paging_iter()}
    with warehouse.connect() as connection:
        applied = set(connection.scalars(select(stripe_events_applied.c.event_id)))
    return len(listed - applied)


def wait_until_current(deployment: Deployment, since: float, timeout: float = 900) -> None:
    """Until a tick that started after `since` found no new events (the set-up's backlog applied)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for tick in ticks_since(deployment, SENSOR_NAME, since):
            if tick.status == "SKIPPED" and (tick.skip_reason or "").startswith("no new Stripe events"):
                return
        time.sleep(1)
    raise SystemExit(f"stripe_events_sensor did not catch up with the set-up within {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=2000)
    parser.add_argument("--rps", type=float, default=25.0, help="StripeResource rate limit (requests/s)")
    parser.add_argument("--sensor-interval", type=int, default=30, help="AISYST_SENSOR_INTERVAL_SECONDS (30 = production)")
    parser.add_argument("--timeout", type=float, default=900)
    parser.add_argument("--json", type=Path, default=None, help="write the figures here too")
    args = parser.parse_args()
    exit_cleanly_on_sigterm()

    report: dict = {"subscriptions": args.subscriptions, "rps": args.rps, "sensor_interval": args.sensor_interval,
                    "machine": f"{platform.machine()}, Python {platform.python_version()}", "load_before": machine_load(),
                    "instance": "PostgreSQL (deploy/dagster.yaml)", "warehouse": "PostgreSQL"}
    work = Path(tempfile.mkdtemp(prefix="events_burst_"))  # the emulator's home
    emulator, url = start_emulator(work)
    try:
        with postgres_world(stripe_api_base=url, requests_per_second=args.rps, sensor_interval_seconds=args.sensor_interval) as world:
            warehouse = Warehouse(world.warehouse_url)
            warehouse.upgrade()
            client = stripe.StripeClient(API_KEY, base_addresses={"api": url}, max_network_retries=2)
            setup_resource = StripeResource(api_key=API_KEY, api_base=url, requests_per_second=400, burst=50)
            print(f"set-up: {args.subscriptions} subscriptions on one test clock …", flush=True)
            clock_id, period_end = set_up(client, setup_resource, args.subscriptions)
            since = time.time()
            with started_deployment(world) as (deployment, startup_seconds):
                report["deployment_ready_seconds"] = round(startup_seconds, 1)
                print(f"local_deployment ready after {startup_seconds:.1f} s; the sensor applies the set-up's events …", flush=True)
                memory = ProcessSampler(dagster_dev_pid(deployment), {emulator.pid: "emulator", os.getpid(): "bench"}).start()
                wait_until_current(deployment, since)
                with warehouse.connect() as connection:
                    report["setup_events"] = connection.scalar(select(func.count()).select_from(stripe_events_applied))
                report["load_at_start"] = machine_load()

                print("advancing the clock past the renewal (drafts, then finalized and paid one clock-hour later) …", flush=True)
                client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": period_end + 2 * 3600})
                advanced = time.time()
                expected = 5 * args.subscriptions
                deadline = time.monotonic() + args.timeout
                while renewal_events_applied(warehouse, period_end) < expected:
                    if time.monotonic() > deadline:
                        raise SystemExit(f"not every event applied within {args.timeout:.0f} s")
                    time.sleep(0.5)
                caught_up = time.time() - advanced
                while deployment.sensor_ticks(SENSOR_NAME, limit=1)[1][0].status == "STARTED":
                    time.sleep(0.5)  # the tick that applied the last event may still send its ops digest
                ticks = ticks_since(deployment, SENSOR_NAME, advanced)
                report["load_after"] = machine_load()
                report["peak_rss"] = memory.stop()
                # then what else the renewal set off: the annotation runs, and one more tick for their events
                while runs_in_flight(deployment, DRAFT_SENSOR_NAME, advanced):
                    time.sleep(1)
                report["annotation_runs"] = run_figures(deployment, DRAFT_SENSOR_NAME, advanced)
                deployment.wait_for_ticks(SENSOR_NAME, since=time.time(), timeout=300)
                missing = unapplied_events(client, warehouse)

            applied = renewal_events_applied(warehouse, period_end)
            with warehouse.connect() as connection:
                renewals = dict(connection.execute(
                    select(stripe_invoices.c.status, func.count()).where(stripe_invoices.c.billing_reason == "subscription_cycle")
                    .group_by(stripe_invoices.c.status)).all())
                report["events_applied_in_all"] = connection.scalar(select(func.count()).select_from(stripe_events_applied))
            warehouse.dispose()
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)

    report["renewal_events_applied"] = applied
    report["watched_events_not_applied"] = missing
    report["renewal_invoices_by_status"] = renewals
    report["sensor"] = tick_figures(ticks)
    report["longest_tick_ratio_to_60s"] = round(report["sensor"]["longest_seconds"] / DAGSTER_LIMIT_SECONDS, 2)
    report["advance_to_last_applied_seconds"] = round(caught_up, 1)
    report["ratio_to_one_minute"] = round(caught_up / 60, 2)
    print(json.dumps(report, indent=2, default=str))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, default=str))
    ok = renewals == {"paid": args.subscriptions} and applied == 5 * args.subscriptions and missing == 0
    print("check:", "every renewal paid, every event applied (once: by its key)" if ok
          else f"FAILED: {renewals}, {applied} renewal events applied, {missing} not applied")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

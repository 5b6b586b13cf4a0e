"""The month-start burst through the events sensor's ticks: how long until stripe_invoices is current.

    .venv/bin/python bench/stripe_events_burst.py [--subscriptions 2000] [--warehouse-url URL] [--rps 25]

1. starts the Stripe emulator in its own process, creates the tier catalog, one test clock and N
   customers with a subscription each; runs the sensor until it has applied every event of the
   set-up (not measured);
2. advances the clock one clock-hour past the renewal: per subscription the emulator emits
   invoice.created, customer.subscription.updated, invoice.finalized, invoice.paid and
   invoice.payment_succeeded — 5 × N events with the same few timestamps;
3. imitates the daemon: a tick at once, then one every 30 s (start to start) while the previous
   tick left events waiting; each tick is the sensor's work (`apply_new_events`, the events
   service) with its real budget, the StripeResource at `--rps` requests per second (25 = Stripe's
   test-mode default);
4. reports the events, the ticks, the longest tick (ratio to Dagster's 60 s evaluation limit), the
   time from the advance to the last event applied (ratio to the one-minute promise) and the rate,
   and checks that every renewal invoice is `paid` in the warehouse and each event applied once.
"""

from __future__ import annotations

import argparse
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

import stripe  # noqa: E402
from sqlalchemy import func, select  # noqa: E402

from aisyst_pipelines.billing.stripe_events import EventsCursor  # noqa: E402
from aisyst_pipelines.billing.tiers import load_tier_catalog  # noqa: E402
from aisyst_pipelines.services.stripe_events import EventsTick, apply_new_events  # noqa: E402
from aisyst_pipelines.services.stripe_sync import subscription_mirror_row  # noqa: E402
from aisyst_pipelines.warehouse import Warehouse  # noqa: E402
from aisyst_pipelines.warehouse.schema import stripe_events_applied, stripe_invoices  # noqa: E402
from resources.notifier import NotifierResource  # noqa: E402
from resources.stripe import StripeResource  # noqa: E402

API_KEY = "sk_test_emulator"
T0 = 1_772_323_200  # 2026-03-01 00:00 UTC
TICK_SECONDS = 30.0
DAGSTER_LIMIT_SECONDS = 60.0


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


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


def tick(warehouse: Warehouse, resource: StripeResource, outbox: str, cursor: EventsCursor) -> tuple[EventsTick, float]:
    """One tick as the sensor runs it: a mirror-row builder per tick, the tick's budget, the ops alerts."""
    notifier = NotifierResource(outbox_dir=outbox, sender="bench@aisyst.example", ops_recipients=["ops@aisyst.example"])
    started = time.monotonic()
    mirror_row = subscription_mirror_row(resource.catalog, load_tier_catalog(), {})
    result = apply_new_events(resource.events, warehouse, notifier, cursor, now=datetime.now(timezone.utc), mirror_row=mirror_row)
    return result, time.monotonic() - started


def backlog_left(result: EventsTick) -> bool:
    return result.poll.cursor.scanning or (bool(result.new_events) and result.poll.more_waiting)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscriptions", type=int, default=2000)
    parser.add_argument("--warehouse-url", default=None, help="default: a fresh SQLite file")
    parser.add_argument("--rps", type=float, default=25.0, help="StripeResource rate limit (requests/s)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="events_burst_"))
    warehouse_url = args.warehouse_url or f"sqlite:///{work / 'warehouse.db'}"
    warehouse = Warehouse(warehouse_url)
    warehouse.upgrade()
    emulator, url = start_emulator(work)
    try:
        client = stripe.StripeClient(API_KEY, base_addresses={"api": url}, max_network_retries=2)
        setup_resource = StripeResource(api_key=API_KEY, api_base=url, requests_per_second=400, burst=50)
        print(f"set-up: {args.subscriptions} subscriptions on one test clock …", flush=True)
        clock_id, period_end = set_up(client, setup_resource, args.subscriptions)
        resource = StripeResource(api_key=API_KEY, api_base=url, requests_per_second=args.rps)
        cursor = EventsCursor()
        while True:  # the set-up's own events, not measured
            result, _ = tick(warehouse, resource, str(work / "outbox"), cursor)
            cursor = result.poll.cursor
            if not backlog_left(result):
                break
        with warehouse.connect() as connection:
            before = connection.scalar(select(func.count()).select_from(stripe_events_applied))

        print("advancing the clock past the renewal (drafts, then finalized and paid one clock-hour later) …", flush=True)
        client.v1.test_helpers.test_clocks.advance(clock_id, {"frozen_time": period_end + 2 * 3600})
        advanced = time.monotonic()
        durations: list[float] = []
        while True:
            started = time.monotonic()
            result, seconds = tick(warehouse, resource, str(work / "outbox"), cursor)
            durations.append(seconds)
            cursor = result.poll.cursor
            if not backlog_left(result):
                break
            time.sleep(max(0.0, started + TICK_SECONDS - time.monotonic()))
        caught_up = time.monotonic() - advanced

        with warehouse.connect() as connection:
            applied = connection.scalar(select(func.count()).select_from(stripe_events_applied)) - before
            renewals = dict(connection.execute(
                select(stripe_invoices.c.status, func.count()).where(stripe_invoices.c.billing_reason == "subscription_cycle")
                .group_by(stripe_invoices.c.status)).all())
        assert renewals == {"paid": args.subscriptions}, renewals
        expected = 5 * args.subscriptions
        assert applied == expected, (applied, expected)
        backend = warehouse.dialect
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
              f"load average {os.getloadavg()[0]:.1f}; backend {backend}; StripeResource {args.rps:g} req/s")
        print(f"burst: {applied} events ({args.subscriptions} renewals), {len(durations)} tick(s): "
              + ", ".join(f"{d:.1f} s" for d in durations))
        print(f"longest tick {max(durations):.1f} s → ratio to the 60 s evaluation limit {max(durations) / DAGSTER_LIMIT_SECONDS:.2f}")
        print(f"advance → last event applied {caught_up:.1f} s → ratio to one minute {caught_up / 60:.2f}; "
              f"{applied / sum(durations):.0f} events/s inside the ticks")
    finally:
        emulator.terminate()
        emulator.wait(timeout=30)
        warehouse.dispose()


if __name__ == "__main__":
    main()

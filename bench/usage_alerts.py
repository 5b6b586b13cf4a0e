"""The daily usage-alerts pass at scale: how long the 06:00 run takes, and what bounds it.

    .venv/bin/python bench/usage_alerts.py [--subscriptions 5000] [--alerting 500] [--backend sqlite|postgresql]

A temporary warehouse holds N served Tier 1 subscriptions (one period, one call each); `--alerting`
of them are at 84 % and get an alert. Their customers exist in an in-process Stripe emulator, so each
alert creates a real customer-portal session through the StripeResource (default client-side limit:
25 requests/s in test mode). The e-mails go to an outbox folder. Measured: the first run (alerts
recorded, portal sessions, e-mails, digest), and a second run that finds nothing new. The limit the
first run is compared with is the Stripe rate limit: alerts/s ÷ 25/s = how close the run is to being
bound by Stripe rather than by our own work.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import sys
import tempfile
import time
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

from sqlalchemy import create_engine, insert, text

from aisyst_pipelines.services.stripe_sync import recompute_usage_by_period
from aisyst_pipelines.billing.thresholds import DEFAULT_THRESHOLDS, SilencePolicy
from aisyst_pipelines.billing.tiers import load_tier_catalog
from aisyst_pipelines.emulator import EmulatorServer
from aisyst_pipelines.services.usage_alerts import AlertRunOutcome, run_usage_alerts
from aisyst_pipelines.templates import load_brand
from aisyst_pipelines.warehouse import Warehouse, stripe_sync_store
from aisyst_pipelines.warehouse.schema import call_records
from aisyst_pipelines.warehouse.stripe_sync_store import StripeCustomerRow, StripeSubscriptionRow
from resources.notifier import NotifierResource
from resources.stripe import StripeResource

START = datetime(2026, 3, 1, tzinfo=timezone.utc)
END = datetime(2026, 4, 1, tzinfo=timezone.utc)
AS_OF = START + timedelta(days=20, hours=6)
STRIPE_TEST_RATE = 25.0
PG_URL = os.environ.get("AISYST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")


def seed(warehouse: Warehouse, client, subscriptions: int, alerting: int) -> None:  # noqa: ANN001
    customers, subs, calls = [], [], []
    for n in range(subscriptions):
        customer_id = client.v1.customers.create({"email": f"c{n}@bench.example", "name": f"C{n}"}).id if n < alerting else f"cus_bench{n}"
        customers.append(StripeCustomerRow(customer_id, f"ACCT{n}", f"C{n}", f"c{n}@bench.example", None, None))
        subs.append(StripeSubscriptionRow(
            f"sub_{n}", customer_id, "active", f"si_{n}", "price_t1", None, None, "Tier 1", 500, "tiers_file", None, "usd",
            START, END, START, "month", 1, START, False, None, None, None,
        ))
        minutes = 420 if n < alerting else 200
        ended = START + timedelta(days=10, minutes=n % 1000)
        calls.append(dict(
            call_id=f"call-{n}", account_code=f"ACCT{n}", customer_id=customer_id, direction="inbound",
            disposition="completed", started_at=ended - timedelta(minutes=minutes), answered_at=ended - timedelta(minutes=minutes),
            ended_at=ended, billable_seconds=minutes * 60, billable_minutes=minutes, content_hash="x",
            source_file="bench.csv", source_sha256="b" * 64, source_line=n, ingested_at=ended,
        ))
    now = datetime.now(timezone.utc)
    stripe_sync_store.sync_customers(warehouse, customers, synced_at=now)
    stripe_sync_store.sync_subscriptions(warehouse, subs, synced_at=now)
    with warehouse.begin() as connection:
        connection.execute(insert(call_records), calls)
    recompute_usage_by_period(warehouse, now=now)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--subscriptions", type=int, default=5000)
    parser.add_argument("--alerting", type=int, default=500)
    parser.add_argument("--backend", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    log = logging.getLogger("bench")

    with tempfile.TemporaryDirectory() as folder, EmulatorServer(seed=1) as emulator:
        schema = None
        if args.backend == "sqlite":
            url = f"sqlite:///{Path(folder) / 'warehouse.db'}"
        else:
            schema = f"bench_{uuid.uuid4().hex[:12]}"
            with create_engine(PG_URL).begin() as connection:
                connection.execute(text(f'CREATE SCHEMA "{schema}"'))
            url = f"{PG_URL}?options=-csearch_path%3D{schema}"
        warehouse = Warehouse(url)
        warehouse.upgrade()
        stripe = StripeResource(api_key="sk_test_emulator", api_base=emulator.url)
        import stripe as stripe_sdk

        client = stripe_sdk.StripeClient("sk_test_emulator", base_addresses={"api": emulator.url})
        seed(warehouse, client, args.subscriptions, args.alerting)
        notifier = NotifierResource(outbox_dir=str(Path(folder) / "outbox"), sender="Aisyst <billing@aisyst.example>", ops_recipients=["ops@aisyst.example"])
        brand, catalog = load_brand(), load_tier_catalog()

        def one_run() -> tuple[float, AlertRunOutcome]:
            began = time.perf_counter()
            outcome = run_usage_alerts(
                warehouse, notifier, stripe.customers, stripe.portal, stripe.invoices, brand=brand, catalog=catalog,
                thresholds=DEFAULT_THRESHOLDS, policy=SilencePolicy(), as_of=AS_OF, log=log,
            )
            return time.perf_counter() - began, outcome

        first_seconds, first = one_run()
        second_seconds, second = one_run()
        assert sum(first.sent.values()) == args.alerting and first.digest is not None, "every alert must be delivered"
        assert not second.sent and second.digest is None, "a second run must send nothing"
        rate = args.alerting / first_seconds
        print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, {args.backend}")
        print(f"subscriptions: {args.subscriptions:,}, alerting: {args.alerting:,}")
        print(f"first run:  {first_seconds:.2f} s, {rate:.1f} alerts/s "
              f"(ratio to the Stripe test-mode limit of {STRIPE_TEST_RATE:.0f} req/s: {rate / STRIPE_TEST_RATE:.2f})")
        print(f"second run: {second_seconds:.2f} s (nothing new, nothing sent)")
        warehouse.dispose()
        if schema:
            with create_engine(PG_URL).begin() as connection:
                connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
    return 0


if __name__ == "__main__":
    sys.exit(main())

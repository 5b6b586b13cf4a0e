"""A small world for the alert scenarios: customers in the Stripe emulator, their mirror rows in the
warehouse, calls, and one call to run the daily pass (usage_by_period by stripe-sync's asset, then
the `run_usage_alerts` service)."""

from __future__ import annotations

import itertools
import logging
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import dagster as dg
from sqlalchemy import insert

from aisyst_pipelines.assets.stripe_sync import usage_by_period
from aisyst_pipelines.billing.thresholds import DEFAULT_THRESHOLDS, SilencePolicy
from aisyst_pipelines.billing.tiers import load_tier_catalog
from aisyst_pipelines.services.usage_alerts import AlertRunOutcome, run_usage_alerts
from aisyst_pipelines.templates import load_brand
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse import stripe_sync_store, usage_alerts_store
from aisyst_pipelines.warehouse.schema import call_records, usage_daily
from aisyst_pipelines.services.stripe_sync import customer_row
from aisyst_pipelines.warehouse.stripe_sync_store import StripeSubscriptionRow
from resources.stripe.records import StripeCustomer
from aisyst_pipelines.warehouse.usage_alerts_store import AlertRow
from resources import WarehouseResource
from resources.notifier import NotifierResource
from resources.stripe import StripeResource

UTC = timezone.utc
MARCH = datetime(2026, 3, 1, tzinfo=UTC)
APRIL = datetime(2026, 4, 1, tzinfo=UTC)
MAY = datetime(2026, 5, 1, tzinfo=UTC)
TIERS = {500: "Tier 1", 1000: "Tier 2", None: "Tier 3"}
LOG = logging.getLogger("tests.alerts")


def outbox_notifier(outbox: Path) -> NotifierResource:
    return NotifierResource(outbox_dir=str(outbox), sender="Aisyst Billing <billing@aisyst.example>", ops_recipients=["ops@aisyst.example"])


def read_eml(path: Path) -> EmailMessage:
    message = message_from_bytes(path.read_bytes(), policy=policy.default)
    assert isinstance(message, EmailMessage)
    return message


@dataclass
class AlertsWorld:
    warehouse: Warehouse
    stripe: StripeResource
    client: Any  # stripe.StripeClient on the emulator
    outbox: Path
    customers: dict[str, str] = field(default_factory=dict)  # account code → customer id
    _call_ids: itertools.count = field(default_factory=itertools.count)  # type: ignore[type-arg]

    # --- Stripe side and its mirror ----------------------------------------------------------------

    def customer(self, account: str, email: str | None = "default", locale: str | None = None) -> str:
        """A customer in the emulator, mirrored into stripe_customers (with the sync's own row builder)."""
        address = f"billing@{account.lower()}.example" if email == "default" else email
        params: dict[str, Any] = {"name": f"{account} Ltd", "metadata": {"aisyst_account_code": account}}
        if address:
            params["email"] = address
        if locale:
            params["preferred_locales"] = [locale]
        customer_id = self.client.v1.customers.create(params).id
        self.customers[account] = customer_id
        rows = [
            customer_row(StripeCustomer.from_api(self.client.v1.customers.retrieve(cid).to_dict()))
            for cid in self.customers.values()
        ]
        stripe_sync_store.sync_customers(self.warehouse, rows, synced_at=datetime.now(UTC))
        return customer_id

    def subscription(
        self, account: str, included: int | None, start: datetime, end: datetime, status: str = "active"
    ) -> str:
        """The mirror row of the customer's subscription (what the Stripe sync would write)."""
        subscription_id = f"sub_{account}"
        row = StripeSubscriptionRow(
            subscription_id=subscription_id, customer_id=self.customers[account], status=status,
            subscription_item_id=f"si_{account}", price_id=f"price_{included}", price_lookup_key=None,
            product_id=None, tier_name=TIERS[included], included_minutes=included, tier_source="tiers_file",
            overage_unit_amount=None, currency="usd", current_period_start=start, current_period_end=end,
            billing_cycle_anchor=MARCH, billing_interval="month", billing_interval_count=1, started_at=MARCH,
            cancel_at_period_end=False, canceled_at=None, ended_at=None, test_clock=None,
        )
        stripe_sync_store.sync_subscriptions(self.warehouse, [row], synced_at=datetime.now(UTC))
        return subscription_id

    # --- calls ---------------------------------------------------------------------------------------

    def call(self, account: str, ended_at: datetime, minutes: int, started_at: datetime | None = None) -> None:
        """One answered call of `minutes` billable minutes ending at `ended_at`."""
        number = next(self._call_ids)
        started = started_at or ended_at - timedelta(minutes=minutes)
        with self.warehouse.begin() as connection:
            connection.execute(
                insert(call_records).values(
                    call_id=f"call-{number}", account_code=account, customer_id=self.customers[account],
                    direction="outbound", disposition="completed", started_at=started, answered_at=started,
                    ended_at=ended_at, billable_seconds=int((ended_at - started).total_seconds()),
                    billable_minutes=minutes, content_hash=f"h{number}", source_file="test.csv",
                    source_sha256="0" * 64, source_line=number + 2, ingested_at=ended_at,
                )
            )

    def calls(self, account: str, total_minutes: int, day: datetime, per_call: int = 50) -> None:
        """`total_minutes` in calls of at most `per_call` minutes, all ending on `day` (spread by hour)."""
        hour = 0
        while total_minutes > 0:
            minutes = min(per_call, total_minutes)
            self.call(account, day + timedelta(hours=hour % 23, minutes=59), minutes)
            total_minutes -= minutes
            hour += 1

    def usage_days(self, account: str, days: list[date], minutes: int = 30) -> None:
        with self.warehouse.begin() as connection:
            connection.execute(
                insert(usage_daily),
                [
                    dict(account_code=account, customer_id=self.customers[account], usage_date=day, calls=2,
                         answered_calls=2, billable_seconds=minutes * 60, billable_minutes=minutes,
                         updated_at=datetime.now(UTC))
                    for day in days
                ],
            )

    # --- the daily pass ----------------------------------------------------------------------------

    def run(
        self, as_of: datetime, notifier: NotifierResource | None = None, thresholds: tuple[int, ...] = DEFAULT_THRESHOLDS
    ) -> AlertRunOutcome:
        """Refresh usage_by_period with stripe-sync's asset, then the alerts, as of `as_of`."""
        usage_by_period(dg.build_asset_context(), warehouse=WarehouseResource(url=self.warehouse.url))
        return run_usage_alerts(
            self.warehouse, notifier or outbox_notifier(self.outbox), self.stripe.customers, self.stripe.portal,
            brand=load_brand(), catalog=load_tier_catalog(), thresholds=thresholds, policy=SilencePolicy(),
            as_of=as_of, log=LOG,
        )

    # --- what happened -----------------------------------------------------------------------------

    def mails(self) -> list[EmailMessage]:
        return [read_eml(path) for path in sorted(self.outbox.glob("*.eml"))] if self.outbox.exists() else []

    def customer_mails(self) -> list[EmailMessage]:
        return [m for m in self.mails() if m["To"] != "ops@aisyst.example"]

    def digests(self) -> list[EmailMessage]:
        return [m for m in self.mails() if m["To"] == "ops@aisyst.example"]

    def alerts(self, account: str, period_start: datetime) -> list[AlertRow]:
        return usage_alerts_store.alerts_in_periods(self.warehouse, [(self.customers[account], period_start)])

    def statuses(self, account: str, period_start: datetime) -> list[tuple[int, int, str]]:
        return [(r.included_minutes, r.threshold_pct, r.status.value) for r in self.alerts(account, period_start)]


def text_of(message: EmailMessage) -> str:
    body = message.get_body(("plain",))
    assert body is not None
    return body.get_content()

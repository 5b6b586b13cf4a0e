"""The Stripe sync and usage_by_period end to end: `dg.materialize` with the emulator (over HTTP)
and a real warehouse, on SQLite and on PostgreSQL.

The account is set up as the integration guide would leave it: the tiers bootstrapped, customers
on a test clock anchored on Jan 31 (so the renewal falls on the clamped Feb 28), one customer on a
legacy price known only through STRIPE_TIER2_PRICE_ID, one without an account code, and calls of
an account no customer carries. The calls were loaded before the customers were mapped.
"""

from dataclasses import dataclass
from datetime import date, datetime, timedelta, timezone

import dagster as dg
import pytest
from sqlalchemy import insert, select, text

from aisyst_pipelines.assets.stripe_sync import stripe_customers, stripe_subscriptions, usage_by_period
from aisyst_pipelines.billing.tiers import load_tier_catalog
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse, schema
from resources import CatalogResource, StripeResource, WarehouseResource

UTC = timezone.utc
T0 = datetime(2027, 1, 31, 10, tzinfo=UTC)  # subscriptions start (and anchor) here
RENEWAL = datetime(2027, 2, 28, 10, tzinfo=UTC)  # Jan 31 + 1 month, clamped
NEXT_RENEWAL = datetime(2027, 3, 31, 10, tzinfo=UTC)
ASSETS = [stripe_customers, stripe_subscriptions, usage_by_period]


@dataclass
class Account:
    customer_id: str
    subscription_id: str


def create_customer(client, name: str, account_code: str | None, clock: str | None, price_id: str) -> Account:
    params = {"name": name, "email": f"{name.lower().replace(' ', '.')}@example.com", "payment_method": "pm_card_visa",
              "invoice_settings": {"default_payment_method": "pm_card_visa"}, "preferred_locales": ["en-AU"]}
    if account_code:
        params["metadata"] = {"aisyst_account_code": account_code}
    if clock:
        params["test_clock"] = clock
    customer = client.v1.customers.create(params)
    subscription = client.v1.subscriptions.create({"customer": customer.id, "items": [{"price": price_id}]})
    return Account(customer.id, subscription.id)


@pytest.fixture
def stripe_account(stripe_emulator, stripe_resource: StripeResource, monkeypatch: pytest.MonkeyPatch) -> dict[str, Account]:
    prices = stripe_resource.catalog.ensure(load_tier_catalog()).prices
    client = stripe_emulator.client()
    legacy_product = client.v1.products.create({"name": "Voice plan (2024)"})
    legacy_price = client.v1.prices.create(
        {"product": legacy_product.id, "currency": "usd", "unit_amount": 49900, "recurring": {"interval": "month"}}
    )
    monkeypatch.setenv("STRIPE_TIER2_PRICE_ID", legacy_price.id)
    clock = client.v1.test_helpers.test_clocks.create({"frozen_time": int(T0.timestamp())}).id
    accounts = {
        "acct-a": create_customer(client, "Alpha Clinic", "acct-a", clock, prices[0].id),
        "acct-b": create_customer(client, "Bravo Dental", "acct-b", clock, prices[2].id),
        "acct-c": create_customer(client, "Charlie Legal", "acct-c", clock, legacy_price.id),
        "no-code": create_customer(client, "Delta Nocode", None, None, prices[1].id),
    }
    client.v1.test_helpers.test_clocks.advance(clock, {"frozen_time": int((RENEWAL + timedelta(hours=2)).timestamp())})
    return accounts


def call(call_id: str, account_code: str, ended_at: datetime, minutes: int, customer_id: str | None = None) -> dict:
    seconds = minutes * 60 - 15  # rated per call: ceil(seconds / 60) = minutes
    return dict(
        call_id=call_id, account_code=account_code, customer_id=customer_id, direction="inbound", disposition="completed",
        started_at=ended_at - timedelta(seconds=seconds), answered_at=ended_at - timedelta(seconds=seconds), ended_at=ended_at,
        billable_seconds=seconds, billable_minutes=minutes, caller_hash=None, callee_hash=None, content_hash="x",
        source_file="calls.csv", source_sha256="0" * 64, source_line=1, ingested_at=T0,
    )


CALLS = [
    call("a-before", "acct-a", T0 - timedelta(days=1), 50),  # before the first period: nowhere
    call("a-prev-1", "acct-a", datetime(2027, 2, 10, 12, tzinfo=UTC), 120),
    call("a-prev-2", "acct-a", datetime(2027, 2, 20, 8, tzinfo=UTC), 180),
    call("a-prev-last", "acct-a", RENEWAL - timedelta(seconds=1), 2),
    call("a-at-renewal", "acct-a", RENEWAL, 1),  # exactly at the boundary: the new period
    call("a-straddling", "acct-a", RENEWAL + timedelta(minutes=5), 15),  # started 10 min before the renewal
    call("a-cur", "acct-a", datetime(2027, 3, 5, 9, tzinfo=UTC), 585),
    call("b-cur", "acct-b", datetime(2027, 3, 1, 9, tzinfo=UTC), 1234),
    call("c-cur", "acct-c", datetime(2027, 3, 2, 9, tzinfo=UTC), 250),
    call("z-cur", "acct-zzz", datetime(2027, 3, 2, 9, tzinfo=UTC), 40),  # an account no customer carries
]


def load_calls(warehouse: Warehouse) -> None:
    with warehouse.begin() as connection:
        connection.execute(insert(schema.call_records), CALLS)
        connection.execute(insert(schema.usage_daily), [
            dict(account_code=code, usage_date=date(2027, 3, 2), customer_id=None, calls=1, answered_calls=1,
                 billable_seconds=60, billable_minutes=1, updated_at=T0)
            for code in ("acct-c", "acct-zzz")
        ])


def materialize(stripe_resource: StripeResource, warehouse: Warehouse, assets=ASSETS, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(
        assets,
        resources={
            "stripe": stripe_resource,
            "warehouse": WarehouseResource(url=warehouse.url),
            "catalog": CatalogResource.from_settings(Settings.from_env()),  # STRIPE_TIER2_PRICE_ID as set by the test
        },
        **kwargs,
    )


def usage_rows(warehouse: Warehouse) -> dict[tuple[str, datetime], dict]:
    with warehouse.connect() as connection:
        rows = connection.execute(select(schema.usage_by_period)).mappings().all()
    return {(row["subscription_id"], row["period_start"]): {k: v for k, v in row.items() if k != "computed_at"} for row in rows}


def metadata_of(result: dg.ExecuteInProcessResult, asset) -> dict:
    [materialization] = result.asset_materializations_for_node(asset.op.name)
    return {key: value.value for key, value in materialization.metadata.items()}


def test_sync_and_usage_by_period_end_to_end(warehouse: Warehouse, stripe_resource: StripeResource, stripe_account) -> None:
    load_calls(warehouse)
    result = materialize(stripe_resource, warehouse)
    assert result.success
    a, b, c, d = (stripe_account[key] for key in ("acct-a", "acct-b", "acct-c", "no-code"))

    # customers: the mapping, and the calls and usage days that were waiting for it
    with warehouse.connect() as connection:
        customers = {r.customer_id: r for r in connection.execute(select(schema.stripe_customers))}
        call_owner = dict(connection.execute(select(schema.call_records.c.call_id, schema.call_records.c.customer_id)).all())
        day_owner = dict(connection.execute(select(schema.usage_daily.c.account_code, schema.usage_daily.c.customer_id)).all())
        subscriptions = {r.subscription_id: r for r in connection.execute(select(schema.stripe_subscriptions))}
    assert {customers[x.customer_id].account_code for x in (a, b, c, d)} == {"acct-a", "acct-b", "acct-c", None}
    assert customers[a.customer_id].preferred_locale == "en-AU" and customers[a.customer_id].test_clock
    assert call_owner["a-prev-1"] == a.customer_id and call_owner["c-cur"] == c.customer_id
    assert call_owner["z-cur"] is None
    assert day_owner == {"acct-c": c.customer_id, "acct-zzz": None}
    customer_meta = metadata_of(result, stripe_customers)
    assert (customer_meta["customers"], customer_meta["customers_without_account_code"]) == (4, 1)
    assert (customer_meta["calls_backfilled"], customer_meta["usage_days_backfilled"]) == (9, 1)
    assert (customer_meta["newly_mapped_accounts"], customer_meta["unmapped_call_accounts"]) == (3, 1)

    # subscriptions: tier resolution and the item's anniversary period
    tiers = {s: (r.tier_name, r.included_minutes, r.tier_source) for s, r in subscriptions.items()}
    assert tiers == {
        a.subscription_id: ("Tier 1", 500, "price_metadata"),
        b.subscription_id: ("Tier 3", None, "price_metadata"),
        c.subscription_id: ("Tier 2", 1000, "legacy_price_id"),
        d.subscription_id: ("Tier 2", 1000, "price_metadata"),
    }
    alpha = subscriptions[a.subscription_id]
    assert (alpha.status, alpha.current_period_start, alpha.current_period_end) == ("active", RENEWAL, NEXT_RENEWAL)
    assert (alpha.billing_cycle_anchor, alpha.billing_interval, alpha.started_at) == (T0, "month", T0)
    assert "| Tier 3 | unlimited | price_metadata | active | 1 |" in metadata_of(result, stripe_subscriptions)["tiers"]

    # usage_by_period: current and previous period per subscription
    rows = usage_rows(warehouse)
    previous_a, current_a = rows[(a.subscription_id, T0)], rows[(a.subscription_id, RENEWAL)]
    assert (previous_a["period_end"], previous_a["calls"], previous_a["minutes_used"]) == (RENEWAL, 3, 302)
    assert (previous_a["minutes_unused"], previous_a["overage_minutes"], previous_a["usage_pct"]) == (198, 0, 60.4)
    assert (current_a["period_end"], current_a["calls"], current_a["minutes_used"]) == (NEXT_RENEWAL, 3, 601)
    assert (current_a["minutes_unused"], current_a["overage_minutes"], current_a["usage_pct"]) == (0, 101, 120.2)
    assert (current_a["tier_name"], current_a["included_minutes"], current_a["customer_id"]) == ("Tier 1", 500, a.customer_id)
    unlimited = rows[(b.subscription_id, RENEWAL)]
    assert (unlimited["minutes_used"], unlimited["included_minutes"], unlimited["minutes_unused"]) == (1234, None, None)
    assert (unlimited["overage_minutes"], unlimited["usage_pct"]) == (0, None)
    assert rows[(b.subscription_id, T0)]["minutes_used"] == 0
    assert (rows[(c.subscription_id, RENEWAL)]["minutes_used"], rows[(c.subscription_id, RENEWAL)]["usage_pct"]) == (250, 25.0)
    started_now = [key for key in rows if key[0] == d.subscription_id]
    assert len(started_now) == 1  # it began in its current period: no previous one
    assert len(rows) == 7
    usage_meta = metadata_of(result, usage_by_period)
    assert usage_meta["minutes_used_current_periods"] == 601 + 1234 + 250
    assert (usage_meta["subscriptions_over_allowance"], usage_meta["unmapped_call_minutes"]) == (1, 40)

    # the analysts' view of the current periods
    with warehouse.connect() as connection:
        view = {r.subscription_id: r for r in connection.execute(text(
            "SELECT subscription_id, account_code, minutes_used, minutes_unused, overage_minutes, usage_pct FROM v_current_usage"))}
    assert (view[a.subscription_id].account_code, view[a.subscription_id].minutes_used) == ("acct-a", 601)
    assert (view[a.subscription_id].minutes_unused, view[a.subscription_id].overage_minutes, view[a.subscription_id].usage_pct) == (0, 101, 120.2)
    assert (view[b.subscription_id].minutes_used, view[b.subscription_id].minutes_unused, view[b.subscription_id].usage_pct) == (1234, None, None)
    assert (view[d.subscription_id].minutes_used, view[d.subscription_id].minutes_unused) == (0, 1000)

    # a rerun rewrites the same rows; a late CDR of the closed period is picked up
    assert materialize(stripe_resource, warehouse).success
    assert usage_rows(warehouse) == rows
    # Alpha moved to Tier 2 at the renewal (the mirror only knows the new tier) and a late CDR of
    # the closed period arrives: that period is recomputed on the terms it was billed on.
    with warehouse.begin() as connection:
        connection.execute(insert(schema.call_records), [call("a-late", "acct-a", datetime(2027, 2, 27, tzinfo=UTC), 200, a.customer_id)])
        connection.execute(
            schema.stripe_subscriptions.update()
            .where(schema.stripe_subscriptions.c.subscription_id == a.subscription_id)
            .values(tier_name="Tier 2", included_minutes=1000)
        )
    assert materialize(stripe_resource, warehouse, assets=[usage_by_period]).success
    late, now = usage_rows(warehouse)[(a.subscription_id, T0)], usage_rows(warehouse)[(a.subscription_id, RENEWAL)]
    assert (late["tier_name"], late["included_minutes"], late["minutes_used"]) == ("Tier 1", 500, 502)
    assert (late["overage_minutes"], late["minutes_unused"], late["usage_pct"]) == (2, 0, 100.4)
    assert (now["tier_name"], now["included_minutes"], now["minutes_unused"], now["usage_pct"]) == ("Tier 2", 1000, 399, 60.1)


def test_unreadable_tier_metadata_fails_loudly_after_writing_the_good_rows(
    warehouse: Warehouse, stripe_emulator, stripe_resource: StripeResource
) -> None:
    client = stripe_emulator.client()
    product = client.v1.products.create({"name": "Typo plan"})
    good = client.v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 100, "recurring": {"interval": "month"},
                                    "metadata": {"aisyst_included_minutes": "500"}})
    typo = client.v1.prices.create({"product": product.id, "currency": "usd", "unit_amount": 100, "recurring": {"interval": "month"},
                                    "metadata": {"aisyst_included_minutes": "5OO"}})
    fine = create_customer(client, "Fine Co", "acct-f", None, good.id)
    broken = create_customer(client, "Typo Co", "acct-t", None, typo.id)
    result = materialize(stripe_resource, warehouse, assets=[stripe_customers, stripe_subscriptions], raise_on_error=False)
    assert not result.success
    [failure] = [event for event in result.all_events if event.is_step_failure]
    assert broken.subscription_id in str(failure.event_specific_data.error) and "5OO" in str(failure.event_specific_data.error)
    with warehouse.connect() as connection:
        written = dict(connection.execute(select(schema.stripe_subscriptions.c.subscription_id, schema.stripe_subscriptions.c.included_minutes)).all())
    assert written == {fine.subscription_id: 500}


def test_customers_stripe_no_longer_lists_are_marked_deleted(warehouse: Warehouse, stripe_emulator, stripe_resource: StripeResource) -> None:
    client = stripe_emulator.client()
    kept = client.v1.customers.create({"name": "Kept", "metadata": {"aisyst_account_code": "acct-k"}})
    gone = client.v1.customers.create({"name": "Gone", "metadata": {"aisyst_account_code": "acct-g"}})
    assert materialize(stripe_resource, warehouse, assets=[stripe_customers]).success
    client.v1.customers.delete(gone.id)
    with warehouse.begin() as connection:
        connection.execute(insert(schema.call_records), [call("g-1", "acct-g", T0, 3)])
    result = materialize(stripe_resource, warehouse, assets=[stripe_customers])
    with warehouse.connect() as connection:
        deleted = dict(connection.execute(select(schema.stripe_customers.c.customer_id, schema.stripe_customers.c.deleted)).all())
        owner = connection.scalar(select(schema.call_records.c.customer_id).where(schema.call_records.c.call_id == "g-1"))
    assert deleted == {kept.id: 0, gone.id: 1}
    assert owner is None  # a deleted customer maps nothing
    assert metadata_of(result, stripe_customers)["marked_deleted"] == 1

"""All SQL of the Stripe sync (services/stripe_sync.py): the Stripe mirror and usage per billing period.

- `sync_customers`: upsert stripe_customers, mark customers Stripe no longer lists as deleted, and
  back-fill `customer_id` on call_records and usage_daily rows of account codes that have just
  become mapped (the mapping rule is cdr_store's: exactly one live customer per account code).
- `sync_subscriptions`: upsert stripe_subscriptions.
- `call_totals_in_windows` / `upsert_usage_by_period`: the minutes of a customer in [start, end) from
  call_records (by `ended_at`), and the idempotent write of usage_by_period rows.

Everything is an upsert keyed by the table's primary key: a rerun writes the same rows again.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, RowMapping, Table, and_, bindparam, func, not_, select, update
from aisyst_pipelines.warehouse.upsert import conflict_insert

from aisyst_pipelines.billing.usage import CallTotals, PeriodUsage

from .cdr_store import account_customers
from .database import Warehouse
from .schema import call_records, stripe_customers, stripe_subscriptions, usage_by_period, usage_daily
from .types import UtcDateTime


@dataclass(frozen=True)
class StripeCustomerRow:
    customer_id: str
    account_code: str | None
    name: str | None
    email: str | None
    preferred_locale: str | None
    test_clock: str | None
    country: str | None = None  # ISO 3166-1 alpha-2 of the customer's address


@dataclass(frozen=True)
class StripeSubscriptionRow:
    subscription_id: str
    customer_id: str
    status: str
    subscription_item_id: str | None
    price_id: str | None
    price_lookup_key: str | None
    product_id: str | None
    tier_name: str | None
    included_minutes: int | None  # None = unlimited (or unknown: see tier_source)
    tier_source: str
    overage_unit_amount: int | None
    currency: str | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    billing_cycle_anchor: datetime | None
    billing_interval: str | None
    billing_interval_count: int | None
    started_at: datetime | None
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    test_clock: str | None


@dataclass(frozen=True)
class CustomerSyncResult:
    customers: int
    marked_deleted: int
    newly_mapped_accounts: list[str]  # account codes whose calls were unmapped until this sync
    calls_backfilled: int
    usage_days_backfilled: int
    ambiguous_account_codes: list[str]  # carried by several live customers: left unmapped
    unmapped_call_accounts: int  # account codes with calls and still no customer


def _upsert(connection: Connection, table: Table, rows: Sequence[dict], synced_column: str | None = None) -> None:
    """INSERT … ON CONFLICT (primary key) DO UPDATE every other column (SQLite and PostgreSQL)."""
    if not rows:
        return
    statement = conflict_insert(connection.dialect.name, table)
    keys = [column.name for column in table.primary_key.columns]
    changed = {name: statement.excluded[name] for name in rows[0] if name not in keys}
    connection.execute(statement.on_conflict_do_update(index_elements=keys, set_=changed), list(rows))


# --- customers ---------------------------------------------------------------------------------------


def sync_customers(warehouse: Warehouse, customers: Sequence[StripeCustomerRow], synced_at: datetime) -> CustomerSyncResult:
    """Mirror the full customer list in one transaction, then map the calls that were waiting for it."""
    seen = {customer.customer_id for customer in customers}
    with warehouse.begin() as connection:
        _upsert(
            connection,
            stripe_customers,
            [asdict(customer) | {"deleted": 0, "synced_at": synced_at} for customer in customers],
        )
        known = set(connection.scalars(select(stripe_customers.c.customer_id).where(stripe_customers.c.deleted == 0)))
        gone = sorted(known - seen)
        for chunk in _chunks(gone, 500):
            connection.execute(
                update(stripe_customers)
                .where(stripe_customers.c.customer_id.in_(chunk))
                .values(deleted=1, synced_at=synced_at)
            )
        newly_mapped, calls, days = _backfill_customer_ids(connection)
        ambiguous = _ambiguous_account_codes(connection)
        unmapped = connection.scalar(
            select(func.count(func.distinct(call_records.c.account_code))).where(call_records.c.customer_id.is_(None))
        )
    return CustomerSyncResult(
        customers=len(customers),
        marked_deleted=len(gone),
        newly_mapped_accounts=newly_mapped,
        calls_backfilled=calls,
        usage_days_backfilled=days,
        ambiguous_account_codes=ambiguous,
        unmapped_call_accounts=int(unmapped or 0),
    )


def _backfill_customer_ids(connection: Connection) -> tuple[list[str], int, int]:
    """Set customer_id where it is NULL and the account code now maps to exactly one customer.

    Only NULLs are filled: a call already attributed keeps its customer (re-attributing history
    after an account code moves between customers is a decision for a person, not a sync).
    """
    mapping = account_customers()
    waiting = (
        select(mapping.c.account_code)
        .where(
            mapping.c.account_code.in_(
                select(call_records.c.account_code).where(call_records.c.customer_id.is_(None)).distinct()
            )
        )
        .order_by(mapping.c.account_code)
    )
    newly_mapped = list(connection.scalars(waiting))
    calls = days = 0
    for table in (call_records, usage_daily):
        customer_of_row = (
            select(mapping.c.customer_id).where(mapping.c.account_code == table.c.account_code).scalar_subquery()
        )
        result = connection.execute(
            update(table)
            .where(table.c.customer_id.is_(None), table.c.account_code.in_(select(mapping.c.account_code)))
            .values(customer_id=customer_of_row),
            execution_options={"preserve_rowcount": True},
        )
        if table is call_records:
            calls = result.rowcount
        else:
            days = result.rowcount
    return newly_mapped, calls, days


def _ambiguous_account_codes(connection: Connection) -> list[str]:
    sc = stripe_customers
    return list(
        connection.scalars(
            select(sc.c.account_code)
            .where(sc.c.account_code.is_not(None), sc.c.deleted == 0)
            .group_by(sc.c.account_code)
            .having(func.count() > 1)
            .order_by(sc.c.account_code)
        )
    )


# --- subscriptions -----------------------------------------------------------------------------------


def sync_subscriptions(warehouse: Warehouse, subscriptions: Sequence[StripeSubscriptionRow], synced_at: datetime) -> int:
    rows = [
        asdict(subscription) | {"cancel_at_period_end": int(subscription.cancel_at_period_end), "synced_at": synced_at}
        for subscription in subscriptions
    ]
    with warehouse.begin() as connection:
        for chunk in _chunks(rows, 1000):
            _upsert(connection, stripe_subscriptions, chunk)
    return len(rows)


def subscriptions_for_usage(warehouse: Warehouse, exclude_statuses: Iterable[str] = ("incomplete_expired",)) -> list[StripeSubscriptionRow]:
    """Mirrored subscriptions that have a current period (all but the never-started ones)."""
    s = stripe_subscriptions
    columns = [s.c[name] for name in StripeSubscriptionRow.__dataclass_fields__]
    with warehouse.connect() as connection:
        rows = connection.execute(
            select(*columns)
            .where(
                s.c.current_period_start.is_not(None),
                s.c.current_period_end.is_not(None),
                not_(s.c.status.in_(list(exclude_statuses))),
            )
            .order_by(s.c.subscription_id)
        ).mappings()
        return [_subscription_row(row) for row in rows]


def _subscription_row(row: RowMapping) -> StripeSubscriptionRow:
    values: dict[str, Any] = dict(row)
    values["cancel_at_period_end"] = bool(values["cancel_at_period_end"])  # stored as 0/1
    return StripeSubscriptionRow(**values)


# --- usage per billing period ------------------------------------------------------------------------


def call_totals_in_windows(
    warehouse: Warehouse, windows: Iterable[tuple[str, datetime, datetime]]
) -> dict[tuple[str, datetime, datetime], CallTotals]:
    """Calls, seconds and minutes of each (customer_id, start, end) window, on the calls' `ended_at`
    in [start, end). Anniversary periods differ per subscription, so each window is its own indexed
    range query (ix_call_records_customer_ended), all on one connection."""
    c = call_records.c
    statement = select(
        func.count(),
        func.coalesce(func.sum(c.billable_seconds), 0),
        func.coalesce(func.sum(c.billable_minutes), 0),
    ).where(
        and_(
            c.customer_id == bindparam("customer_id"),
            c.ended_at >= bindparam("start", type_=UtcDateTime),
            c.ended_at < bindparam("end", type_=UtcDateTime),
        )
    )
    result: dict[tuple[str, datetime, datetime], CallTotals] = {}
    with warehouse.connect() as connection:
        for window in windows:
            customer_id, start, end = window
            calls, seconds, minutes = connection.execute(statement, {"customer_id": customer_id, "start": start, "end": end}).one()
            result[window] = CallTotals(calls=int(calls), billable_seconds=int(seconds), billable_minutes=int(minutes))
    return result


@dataclass(frozen=True)
class UsageByPeriodRow:
    subscription_id: str
    customer_id: str
    tier_name: str | None
    usage: PeriodUsage


def recorded_period_terms(
    warehouse: Warehouse, periods: Iterable[tuple[str, datetime]]
) -> dict[tuple[str, datetime], tuple[str | None, int | None]]:
    """(tier_name, included_minutes) already recorded for (subscription_id, period_start) rows.

    A closed period keeps the terms it was billed on: after an upgrade at renewal the mirror only
    knows the new tier, which must not be applied to the period before it."""
    u = usage_by_period.c
    statement = select(u.tier_name, u.included_minutes).where(
        u.subscription_id == bindparam("subscription_id"), u.period_start == bindparam("period_start", type_=UtcDateTime)
    )
    found: dict[tuple[str, datetime], tuple[str | None, int | None]] = {}
    with warehouse.connect() as connection:
        for key in periods:
            row = connection.execute(statement, {"subscription_id": key[0], "period_start": key[1]}).one_or_none()
            if row is not None:
                found[key] = (row.tier_name, row.included_minutes)
    return found


def upsert_usage_by_period(warehouse: Warehouse, rows: Sequence[UsageByPeriodRow], computed_at: datetime) -> int:
    records = [
        {
            "subscription_id": row.subscription_id,
            "period_start": row.usage.period.start,
            "period_end": row.usage.period.end,
            "customer_id": row.customer_id,
            "tier_name": row.tier_name,
            "included_minutes": row.usage.included_minutes,
            "calls": row.usage.totals.calls,
            "billable_seconds": row.usage.totals.billable_seconds,
            "minutes_used": row.usage.minutes_used,
            "minutes_unused": row.usage.minutes_unused,
            "overage_minutes": row.usage.overage_minutes,
            "usage_pct": row.usage.usage_pct,
            "computed_at": computed_at,
        }
        for row in rows
    ]
    with warehouse.begin() as connection:
        for chunk in _chunks(records, 1000):
            _upsert(connection, usage_by_period, chunk)
    return len(records)


def unmapped_call_minutes(warehouse: Warehouse, start: datetime, end: datetime) -> int:
    """Billable minutes of calls in [start, end) that no customer can be charged for yet."""
    c = call_records.c
    with warehouse.connect() as connection:
        minutes = connection.scalar(
            select(func.coalesce(func.sum(c.billable_minutes), 0)).where(
                c.customer_id.is_(None), c.ended_at >= start, c.ended_at < end
            )
        )
    return int(minutes or 0)


def _chunks(items: Sequence, size: int) -> Iterable[Sequence]:
    for offset in range(0, len(items), size):
        yield items[offset : offset + size]

"""stripe_invoice_previews: the next invoice of each renewing subscription (v_customer_dashboard)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from datetime import datetime

from sqlalchemy import delete, select

from aisyst_pipelines.billing.next_invoice import NextInvoice

from .database import Warehouse
from .schema import stripe_invoice_previews, stripe_subscriptions
from .upsert import conflict_insert

# Subscriptions that will be invoiced again at their period end (v_customer_dashboard's next_invoice_date).
RENEWING_STATUSES = ("active", "trialing", "past_due", "unpaid")


def renewing_subscriptions(warehouse: Warehouse) -> list[str]:
    """The mirrored subscriptions that renew at the end of their current period."""
    s = stripe_subscriptions.c
    statement = (
        select(s.subscription_id)
        .where(s.status.in_(RENEWING_STATUSES), s.cancel_at_period_end == 0)
        .order_by(s.subscription_id)
    )
    with warehouse.connect() as connection:
        return list(connection.scalars(statement))


def store_previews(
    warehouse: Warehouse, previews: Sequence[NextInvoice], not_renewing: Sequence[str], *, now: datetime
) -> None:
    """Replace the previews of these subscriptions; forget those of subscriptions that will not renew
    (Stripe said so) or are no longer renewing in the mirror."""
    renewing = set(renewing_subscriptions(warehouse))
    with warehouse.begin() as connection:
        if previews:
            statement = conflict_insert(connection.dialect.name, stripe_invoice_previews)
            rows = [asdict(preview) | {"previewed_at": now} for preview in previews]
            connection.execute(statement.on_conflict_do_update(
                index_elements=["subscription_id"],
                set_={name: statement.excluded[name] for name in rows[0] if name != "subscription_id"},
            ), rows)
        c = stripe_invoice_previews.c
        stale = set(not_renewing) | (set(connection.scalars(select(c.subscription_id))) - renewing)
        if stale:
            connection.execute(delete(stripe_invoice_previews).where(c.subscription_id.in_(sorted(stale))))


def stored_previews(warehouse: Warehouse) -> dict[str, NextInvoice]:
    c = stripe_invoice_previews.c
    with warehouse.connect() as connection:
        rows = connection.execute(select(stripe_invoice_previews).order_by(c.subscription_id)).all()
    return {row.subscription_id: NextInvoice(**{k: v for k, v in row._asdict().items() if k != "previewed_at"}) for row in rows}

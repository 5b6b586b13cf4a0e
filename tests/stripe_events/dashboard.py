"""v_customer_dashboard as an analyst reads it (sql/views/v_customer_dashboard.sql): rows of the view."""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Float, Integer, MetaData, String, Table, Text, select

from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.types import UtcDateTime

# The view's columns with their types, so that timestamps come back as aware UTC datetimes on both
# backends (SQLite returns a view's timestamps as text).
v_customer_dashboard = Table(
    "v_customer_dashboard",
    MetaData(),
    Column("customer_id", String),
    Column("account_code", String),
    Column("name", Text),
    Column("email", Text),
    Column("country", String),
    Column("client_group", String),
    Column("subscription_id", String),
    Column("subscription_status", String),
    Column("plan", Text),
    Column("price_id", String),
    Column("current_period_start", UtcDateTime),
    Column("current_period_end", UtcDateTime),
    Column("minutes_used", BigInteger),
    Column("minutes_included", Integer),
    Column("minutes_unused", BigInteger),
    Column("overage_minutes", BigInteger),
    Column("usage_pct", Float),
    Column("next_invoice_date", UtcDateTime),
    Column("next_invoice_amount_due", BigInteger),
    Column("next_invoice_total", BigInteger),
    Column("next_invoice_tax", BigInteger),
    Column("next_invoice_currency", String),
    Column("last_invoice_id", String),
    Column("last_invoice_number", String),
    Column("last_invoice_status", String),
    Column("last_invoice_amount_due", BigInteger),
    Column("last_invoice_amount_paid", BigInteger),
    Column("last_invoice_subtotal", BigInteger),
    Column("last_invoice_tax", BigInteger),
    Column("last_invoice_total", BigInteger),
    Column("last_invoice_currency", String),
    Column("last_invoice_created", UtcDateTime),
    Column("last_invoice_paid_at", UtcDateTime),
    Column("hosted_invoice_url", Text),
    Column("invoice_pdf", Text),
    Column("overdue_invoices", BigInteger),
    Column("overdue_amount", BigInteger),
    Column("days_overdue", Integer),
)


def customer_dashboard(warehouse: Warehouse, customer_id: str | None = None) -> list[dict[str, object]]:
    """Rows of v_customer_dashboard (all customers, or one)."""
    query = select(v_customer_dashboard)
    if customer_id is not None:
        query = query.where(v_customer_dashboard.c.customer_id == customer_id)
    with warehouse.connect() as connection:
        return [dict(row._mapping) for row in connection.execute(query.order_by(v_customer_dashboard.c.customer_id))]

"""Stripe mirror and usage per billing period: stripe_customers, stripe_subscriptions, usage_by_period;
view v_current_usage.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

from aisyst_pipelines.warehouse.views import create_view, drop_view

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "stripe_customers",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("account_code", sa.String(128), nullable=True),
        sa.Column("name", sa.Text, nullable=True),
        sa.Column("email", sa.Text, nullable=True),
        sa.Column("preferred_locale", sa.String(16), nullable=True),
        sa.Column("test_clock", sa.String(64), nullable=True),
        sa.Column("deleted", sa.Integer, nullable=False, server_default="0"),
        sa.Column("synced_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_stripe_customers_account_code", "stripe_customers", ["account_code"])
    op.create_table(
        "stripe_subscriptions",
        sa.Column("subscription_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("subscription_item_id", sa.String(64), nullable=True),
        sa.Column("price_id", sa.String(64), nullable=True),
        sa.Column("price_lookup_key", sa.String(200), nullable=True),
        sa.Column("product_id", sa.String(64), nullable=True),
        sa.Column("tier_name", sa.Text, nullable=True),
        sa.Column("included_minutes", sa.Integer, nullable=True),
        sa.Column("tier_source", sa.String(32), nullable=False),
        sa.Column("overage_unit_amount", sa.Integer, nullable=True),
        sa.Column("currency", sa.String(3), nullable=True),
        sa.Column("current_period_start", UTC_TIME, nullable=True),
        sa.Column("current_period_end", UTC_TIME, nullable=True),
        sa.Column("billing_cycle_anchor", UTC_TIME, nullable=True),
        sa.Column("billing_interval", sa.String(8), nullable=True),
        sa.Column("billing_interval_count", sa.Integer, nullable=True),
        sa.Column("started_at", UTC_TIME, nullable=True),
        sa.Column("cancel_at_period_end", sa.Integer, nullable=False, server_default="0"),
        sa.Column("canceled_at", UTC_TIME, nullable=True),
        sa.Column("ended_at", UTC_TIME, nullable=True),
        sa.Column("test_clock", sa.String(64), nullable=True),
        sa.Column("synced_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_stripe_subscriptions_customer", "stripe_subscriptions", ["customer_id"])
    op.create_table(
        "usage_by_period",
        sa.Column("subscription_id", sa.String(64), primary_key=True),
        sa.Column("period_start", UTC_TIME, primary_key=True),
        sa.Column("period_end", UTC_TIME, nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("tier_name", sa.Text, nullable=True),
        sa.Column("included_minutes", sa.Integer, nullable=True),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("billable_seconds", sa.BigInteger, nullable=False),
        sa.Column("minutes_used", sa.BigInteger, nullable=False),
        sa.Column("minutes_unused", sa.BigInteger, nullable=True),
        sa.Column("overage_minutes", sa.BigInteger, nullable=False),
        sa.Column("usage_pct", sa.Float, nullable=True),
        sa.Column("computed_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_usage_by_period_customer", "usage_by_period", ["customer_id", "period_start"])
    create_view(op, revision, "v_current_usage")


def downgrade() -> None:
    drop_view(op, "v_current_usage")
    for table in ("usage_by_period", "stripe_subscriptions", "stripe_customers"):
        op.drop_table(table)

"""Threshold alerts: usage_alerts.

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "usage_alerts",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("period_start", UTC_TIME, primary_key=True),
        sa.Column("threshold_pct", sa.Integer, primary_key=True),
        sa.Column("included_minutes", sa.Integer, primary_key=True),
        sa.Column("subscription_id", sa.String(64), nullable=False),
        sa.Column("period_end", UTC_TIME, nullable=False),
        sa.Column("minutes_used", sa.BigInteger, nullable=False),
        sa.Column("usage_pct", sa.Float, nullable=False),
        sa.Column("crossed_at", UTC_TIME, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("notified_at", UTC_TIME, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )


def downgrade() -> None:
    for table in ("usage_alerts",):
        op.drop_table(table)

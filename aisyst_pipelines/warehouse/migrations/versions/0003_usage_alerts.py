"""Threshold alerts: usage_alerts (one row per customer, period, included minutes and threshold) and
usage_silence (one row per episode of a normally active customer going silent).

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
        sa.Column("tier_name", sa.Text, nullable=True),
        sa.Column("minutes_used", sa.BigInteger, nullable=False),
        sa.Column("usage_pct", sa.Float, nullable=False),
        sa.Column("crossed_at", UTC_TIME, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_attempt_at", UTC_TIME, nullable=True),
        sa.Column("claimed_at", UTC_TIME, nullable=True),
        sa.Column("notified_at", UTC_TIME, nullable=True),
        sa.Column("ops_notified_at", UTC_TIME, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("ix_usage_alerts_status", "usage_alerts", ["status", "period_end"])
    op.create_table(
        "usage_silence",
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("silent_since", sa.Date, primary_key=True),
        sa.Column("last_usage_date", sa.Date, nullable=False),
        sa.Column("active_days", sa.Integer, nullable=False),
        sa.Column("window_days", sa.Integer, nullable=False),
        sa.Column("detected_at", UTC_TIME, nullable=False),
        sa.Column("ops_notified_at", UTC_TIME, nullable=True),
    )


def downgrade() -> None:
    for table in ("usage_silence", "usage_alerts"):
        op.drop_table(table)

"""Reconciliation with Stripe's meter: meter_reconciliation, meter_corrections.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "meter_reconciliation",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("period_start", UTC_TIME, primary_key=True),
        sa.Column("period_end", UTC_TIME, nullable=False),
        sa.Column("window_end", UTC_TIME, nullable=False),
        sa.Column("cdr_minutes", sa.BigInteger, nullable=False),
        sa.Column("stripe_minutes", sa.BigInteger, nullable=False),
        sa.Column("delta_minutes", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cause", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("repaired_minutes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("reconciled_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_meter_reconciliation_customer", "meter_reconciliation", ["customer_id", "period_start", "reconciled_at"])
    op.create_table(
        "meter_corrections",
        sa.Column("identifier", sa.String(128), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("usage_date", sa.Date, nullable=False),
        sa.Column("period_start", UTC_TIME, nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.Column("event_timestamp", UTC_TIME, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("sent_at", UTC_TIME, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
    )


def downgrade() -> None:
    for table in ("meter_corrections", "meter_reconciliation",):
        op.drop_table(table)

"""Reconciliation with Stripe's meter: meter_reconciliation, meter_corrections; views
v_reconciliation_latest and v_unmapped_usage.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

from aisyst_pipelines.warehouse.views import create_view, drop_view

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)
VIEWS = ("v_reconciliation_latest", "v_unmapped_usage")


def upgrade() -> None:
    op.create_table(
        "meter_reconciliation",
        sa.Column("run_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), primary_key=True),
        sa.Column("period_start", UTC_TIME, primary_key=True),
        sa.Column("period_end", UTC_TIME, nullable=False),
        sa.Column("subscription_id", sa.String(64), nullable=True),
        sa.Column("window_start", UTC_TIME, nullable=False),
        sa.Column("window_end", UTC_TIME, nullable=False),
        sa.Column("window_closed", sa.Integer, nullable=False),
        sa.Column("cdr_minutes", sa.BigInteger, nullable=False),
        sa.Column("stripe_minutes", sa.BigInteger, nullable=False),
        sa.Column("delta_minutes", sa.BigInteger, nullable=False),
        sa.Column("drift_minutes", sa.BigInteger, nullable=False),
        sa.Column("drifting_days", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("cause", sa.String(32), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("repaired_minutes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("unrepaired_drift_minutes", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("reconciled_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_meter_reconciliation_customer", "meter_reconciliation", ["customer_id", "period_start", "reconciled_at"])
    op.create_index("ix_meter_reconciliation_reconciled", "meter_reconciliation", ["reconciled_at"])
    op.create_table(
        "meter_corrections",
        sa.Column("identifier", sa.String(128), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("usage_date", sa.Date, nullable=False),
        sa.Column("period_start", UTC_TIME, nullable=False),
        sa.Column("value", sa.BigInteger, nullable=False),
        sa.Column("event_timestamp", UTC_TIME, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("created_at", UTC_TIME, nullable=False),
        sa.Column("sent_at", UTC_TIME, nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("ix_meter_corrections_customer_day", "meter_corrections", ["customer_id", "usage_date"])
    op.create_index("ix_meter_corrections_status", "meter_corrections", ["status"])
    for view in VIEWS:
        create_view(op, revision, view)


def downgrade() -> None:
    for view in VIEWS:
        drop_view(op, view)
    for table in ("meter_corrections", "meter_reconciliation"):
        op.drop_table(table)

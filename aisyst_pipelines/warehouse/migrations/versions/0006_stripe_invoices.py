"""Stripe events: stripe_invoices, stripe_events_applied, stripe_event_alerts; view v_customer_dashboard.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

from aisyst_pipelines.warehouse.views import create_view, drop_view

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "stripe_invoices",
        sa.Column("invoice_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("subscription_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("billing_reason", sa.String(48), nullable=True),
        sa.Column("number", sa.String(64), nullable=True),
        sa.Column("amount_due", sa.BigInteger, nullable=False),
        sa.Column("amount_paid", sa.BigInteger, nullable=False),
        sa.Column("amount_remaining", sa.BigInteger, nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("period_start", UTC_TIME, nullable=True),
        sa.Column("period_end", UTC_TIME, nullable=True),
        sa.Column("hosted_invoice_url", sa.Text, nullable=True),
        sa.Column("invoice_pdf", sa.Text, nullable=True),
        sa.Column("attempt_count", sa.Integer, nullable=False, server_default="0"),
        sa.Column("next_payment_attempt", UTC_TIME, nullable=True),
        sa.Column("due_date", UTC_TIME, nullable=True),
        sa.Column("finalized_at", UTC_TIME, nullable=True),
        sa.Column("paid_at", UTC_TIME, nullable=True),
        sa.Column("created", UTC_TIME, nullable=False),
        sa.Column("last_event_id", sa.String(64), nullable=False),
        sa.Column("last_event_type", sa.String(64), nullable=False),
        sa.Column("last_event_created", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_stripe_invoices_customer", "stripe_invoices", ["customer_id", "created"])
    op.create_index("ix_stripe_invoices_subscription", "stripe_invoices", ["subscription_id", "created"])
    op.create_table(
        "stripe_events_applied",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("object_id", sa.String(64), nullable=True),
        sa.Column("created", UTC_TIME, nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("outcome", sa.String(16), nullable=False),
        sa.Column("applied_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_stripe_events_applied_object", "stripe_events_applied", ["object_id", "created"])
    op.create_table(
        "stripe_event_alerts",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(32), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("subscription_id", sa.String(64), nullable=True),
        sa.Column("invoice_id", sa.String(64), nullable=True),
        sa.Column("subject", sa.Text, nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("raised_at", UTC_TIME, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("claimed_at", UTC_TIME, nullable=True),
        sa.Column("sent_at", UTC_TIME, nullable=True),
        sa.Column("last_error", sa.Text, nullable=True),
    )
    op.create_index("ix_stripe_event_alerts_status", "stripe_event_alerts", ["status", "raised_at"])
    create_view(op, revision, "v_customer_dashboard")


def downgrade() -> None:
    drop_view(op, "v_customer_dashboard")
    for table in ("stripe_event_alerts", "stripe_events_applied", "stripe_invoices"):
        op.drop_table(table)

"""Stripe events: stripe_invoices, stripe_events_applied.

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

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
        sa.Column("amount_due", sa.BigInteger, nullable=False),
        sa.Column("amount_paid", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("period_start", UTC_TIME, nullable=True),
        sa.Column("period_end", UTC_TIME, nullable=True),
        sa.Column("hosted_invoice_url", sa.Text, nullable=True),
        sa.Column("invoice_pdf", sa.Text, nullable=True),
        sa.Column("created", UTC_TIME, nullable=False),
        sa.Column("last_event_id", sa.String(64), nullable=True),
        sa.Column("last_event_created", UTC_TIME, nullable=True),
        sa.Column("updated_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_stripe_invoices_customer", "stripe_invoices", ["customer_id", "created"])
    op.create_table(
        "stripe_events_applied",
        sa.Column("event_id", sa.String(64), primary_key=True),
        sa.Column("event_type", sa.String(64), nullable=False),
        sa.Column("created", UTC_TIME, nullable=False),
        sa.Column("applied_at", UTC_TIME, nullable=False),
    )


def downgrade() -> None:
    for table in ("stripe_events_applied", "stripe_invoices",):
        op.drop_table(table)

"""The next invoice of each renewing subscription (Stripe's preview), shown by v_customer_dashboard.

- stripe_invoice_previews: one row per renewing subscription, refreshed by the
  `stripe_invoice_previews` asset from `POST /v1/invoices/create_preview`;
- v_customer_dashboard gains next_invoice_amount_due / _total / _tax / _currency (NULL when no
  preview of the current period is known).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

from aisyst_pipelines.warehouse.views import create_view

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "stripe_invoice_previews",
        sa.Column("subscription_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("invoice_date", UTC_TIME, nullable=False),
        sa.Column("period_start", UTC_TIME, nullable=False),
        sa.Column("period_end", UTC_TIME, nullable=False),
        sa.Column("amount_due", sa.BigInteger, nullable=False),
        sa.Column("total", sa.BigInteger, nullable=False),
        sa.Column("tax", sa.BigInteger, nullable=False),
        sa.Column("currency", sa.String(3), nullable=False),
        sa.Column("previewed_at", UTC_TIME, nullable=False),
    )
    create_view(op, revision, "v_customer_dashboard")


def downgrade() -> None:
    create_view(op, "0006", "v_customer_dashboard")
    op.drop_table("stripe_invoice_previews")

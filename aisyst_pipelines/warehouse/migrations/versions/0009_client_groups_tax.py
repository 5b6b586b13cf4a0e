"""Issue 15 (billing): client groups and tax.

- stripe_customers.country: the customer's address country, which picks its client group
  (client_groups.json: tax rate and invoice template);
- invoice_branding.client_group, tax_rate_ids: the group and the tax rates written with the brand
  fields onto each subscription;
- stripe_invoices.subtotal, tax: the invoice's subtotal and its tax (every amount of total_taxes),
  integer minor units; NULL on rows mirrored before this revision;
- stripe_invoices.collection_method, overdue_at, days_overdue (+ index status, due_date): invoices paid
  by invoice (Net 30), when the overdue watch saw one pass its due date, its days overdue;
- invoice_audits: each final renewal invoice's usage-line minutes against the warehouse's and
  Stripe's meter's, with the named cause of each difference (issue 15 item 9);
- v_customer_dashboard: the customer's country and client group, the last invoice's subtotal, tax
  and total, the customer's overdue invoices (count, amount, most days overdue).

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

from aisyst_pipelines.warehouse.views import create_view, drop_view

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("stripe_customers") as batch:
        batch.add_column(sa.Column("country", sa.String(2), nullable=True))
    with op.batch_alter_table("invoice_branding") as batch:
        batch.add_column(sa.Column("client_group", sa.String(64), nullable=True))
        batch.add_column(sa.Column("tax_rate_ids", sa.Text, nullable=True))
    with op.batch_alter_table("stripe_invoices") as batch:
        batch.add_column(sa.Column("subtotal", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("tax", sa.BigInteger, nullable=True))
        batch.add_column(sa.Column("collection_method", sa.String(32), nullable=True))
        batch.add_column(sa.Column("overdue_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("days_overdue", sa.Integer, nullable=True))
    op.create_index("ix_stripe_invoices_open_due", "stripe_invoices", ["status", "due_date"])
    op.create_table(
        "invoice_audits",
        sa.Column("invoice_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finalized_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("invoice_minutes", sa.BigInteger, nullable=False),
        sa.Column("warehouse_minutes", sa.BigInteger, nullable=False),
        sa.Column("late_minutes", sa.BigInteger, nullable=False),
        sa.Column("meter_minutes", sa.BigInteger, nullable=False),
        sa.Column("causes", sa.String(64), nullable=False),
        sa.Column("audited_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("carried_to_invoice_id", sa.String(64), nullable=True),
        sa.Column("carried_minutes", sa.BigInteger, nullable=True),
        sa.Column("carried_at", sa.DateTime(timezone=True), nullable=True),
    )
    op.create_index("ix_invoice_audits_customer", "invoice_audits", ["customer_id", "period_start"])
    create_view(op, revision, "v_customer_dashboard")


def downgrade() -> None:
    drop_view(op, "v_customer_dashboard")  # SQLite rebuilds a table to drop a column: no view may read it
    op.drop_table("invoice_audits")
    op.drop_index("ix_stripe_invoices_open_due", "stripe_invoices")
    with op.batch_alter_table("stripe_invoices") as batch:
        for column in ("days_overdue", "overdue_at", "collection_method"):
            batch.drop_column(column)
        batch.drop_column("tax")
        batch.drop_column("subtotal")
    with op.batch_alter_table("invoice_branding") as batch:
        batch.drop_column("tax_rate_ids")
        batch.drop_column("client_group")
    with op.batch_alter_table("stripe_customers") as batch:
        batch.drop_column("country")
    create_view(op, "0008", "v_customer_dashboard")

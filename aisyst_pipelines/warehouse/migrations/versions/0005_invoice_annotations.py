"""Draft invoice annotation: invoice_annotations (the once-only ledger of the annotation job) and
invoice_branding (brand fields last written to each subscription's invoice settings).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "invoice_annotations",
        sa.Column("invoice_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("subscription_id", sa.String(64), nullable=True),
        sa.Column("invoice_created", UTC_TIME, nullable=False),
        sa.Column("period_start", UTC_TIME, nullable=False),
        sa.Column("period_end", UTC_TIME, nullable=False),
        sa.Column("tier_name", sa.Text, nullable=True),
        sa.Column("minutes_used", sa.BigInteger, nullable=True),
        sa.Column("minutes_included", sa.Integer, nullable=True),
        sa.Column("minutes_unused", sa.BigInteger, nullable=True),
        sa.Column("overage_minutes", sa.BigInteger, nullable=True),
        sa.Column("overage_amount", sa.BigInteger, nullable=True),
        sa.Column("usage_pct", sa.Float, nullable=True),
        sa.Column("lines_added", sa.Integer, nullable=True),
        sa.Column("locale", sa.String(16), nullable=True),
        sa.Column("needs_branding", sa.Boolean, nullable=False, server_default=sa.false()),
        sa.Column("annotation_version", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
        sa.Column("run_id", sa.String(64), nullable=True),
        sa.Column("detail", sa.Text, nullable=True),
        sa.Column("queued_at", UTC_TIME, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
        sa.Column("annotated_at", UTC_TIME, nullable=True),
    )
    op.create_index("ix_invoice_annotations_status", "invoice_annotations", ["status", "updated_at"])
    op.create_table(
        "invoice_branding",
        sa.Column("subscription_id", sa.String(64), primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=False),
        sa.Column("branding_hash", sa.String(64), nullable=False),
        sa.Column("locale", sa.String(16), nullable=False),
        sa.Column("custom_fields", sa.Text, nullable=False),
        sa.Column("applied_at", UTC_TIME, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("invoice_branding")
    op.drop_index("ix_invoice_annotations_status", table_name="invoice_annotations")
    op.drop_table("invoice_annotations")

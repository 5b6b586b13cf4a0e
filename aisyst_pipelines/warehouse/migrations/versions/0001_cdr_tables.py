"""CDR ingestion: cdr_files, call_records, call_records_rejected, usage_daily.

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "cdr_files",
        sa.Column("sha256", sa.String(64), primary_key=True),
        sa.Column("file_path", sa.Text, nullable=False),
        sa.Column("format", sa.String(16), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("rows_total", sa.Integer, nullable=False),
        sa.Column("rows_loaded", sa.Integer, nullable=False),
        sa.Column("rows_duplicate", sa.Integer, nullable=False),
        sa.Column("rows_rejected", sa.Integer, nullable=False),
        sa.Column("ingested_at", UTC_TIME, nullable=False),
    )
    op.create_table(
        "call_records",
        sa.Column("call_id", sa.String(128), primary_key=True),
        sa.Column("account_code", sa.String(128), nullable=False),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("direction", sa.String(16), nullable=False),
        sa.Column("disposition", sa.String(16), nullable=False),
        sa.Column("started_at", UTC_TIME, nullable=False),
        sa.Column("answered_at", UTC_TIME, nullable=True),
        sa.Column("ended_at", UTC_TIME, nullable=False),
        sa.Column("billable_seconds", sa.Integer, nullable=False),
        sa.Column("billable_minutes", sa.Integer, nullable=False),
        sa.Column("caller_hash", sa.String(64), nullable=True),
        sa.Column("callee_hash", sa.String(64), nullable=True),
        sa.Column("content_hash", sa.String(64), nullable=False),
        sa.Column("source_file", sa.Text, nullable=False),
        sa.Column("source_sha256", sa.String(64), nullable=False),
        sa.Column("source_line", sa.Integer, nullable=False),
        sa.Column("ingested_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_call_records_customer_ended", "call_records", ["customer_id", "ended_at"])
    op.create_index(
        "ix_call_records_account_ended", "call_records",
        ["account_code", "ended_at", "disposition", "billable_seconds", "billable_minutes"],
    )
    op.create_table(
        "call_records_rejected",
        sa.Column("source_sha256", sa.String(64), primary_key=True),
        sa.Column("source_line", sa.Integer, primary_key=True),
        sa.Column("source_file", sa.Text, nullable=False),
        sa.Column("call_id", sa.String(128), nullable=True),
        sa.Column("reason_code", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("raw_record", sa.Text, nullable=False),
        sa.Column("ingested_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_call_records_rejected_reason", "call_records_rejected", ["reason_code"])
    op.create_table(
        "usage_daily",
        sa.Column("account_code", sa.String(128), primary_key=True),
        sa.Column("usage_date", sa.Date, primary_key=True),
        sa.Column("customer_id", sa.String(64), nullable=True),
        sa.Column("calls", sa.Integer, nullable=False),
        sa.Column("answered_calls", sa.Integer, nullable=False),
        sa.Column("billable_seconds", sa.BigInteger, nullable=False),
        sa.Column("billable_minutes", sa.BigInteger, nullable=False),
        sa.Column("updated_at", UTC_TIME, nullable=False),
    )
    op.create_index("ix_usage_daily_customer_date", "usage_daily", ["customer_id", "usage_date"])


def downgrade() -> None:
    for table in ("usage_daily", "call_records_rejected", "call_records", "cdr_files"):
        op.drop_table(table)

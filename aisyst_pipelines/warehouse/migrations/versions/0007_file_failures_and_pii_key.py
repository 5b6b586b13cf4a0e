"""Hostile inputs (issue 12): failed landing files in cdr_files; the warehouse's own properties.

- cdr_files.status (`loaded` | `failed`) and failure_reason: a file the pipeline cannot take (a name
  that is not UTF-8, an unreadable or truncated file, …) gets a row that says why, instead of
  leaving no trace. Only `loaded` rows make a later copy of the same content count as loaded.
- warehouse_properties: facts about the warehouse itself, e.g. the fingerprint of the key its
  phone-number hashes were made with (a load with another key is refused).

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

UTC_TIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    with op.batch_alter_table("cdr_files") as batch:
        batch.add_column(sa.Column("status", sa.String(16), nullable=False, server_default="loaded"))
        batch.add_column(sa.Column("failure_reason", sa.Text, nullable=True))
    op.create_table(
        "warehouse_properties",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("value", sa.Text, nullable=False),
        sa.Column("recorded_at", UTC_TIME, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("warehouse_properties")
    with op.batch_alter_table("cdr_files") as batch:
        batch.drop_column("failure_reason")
        batch.drop_column("status")

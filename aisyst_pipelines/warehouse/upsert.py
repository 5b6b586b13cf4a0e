"""INSERT … ON CONFLICT for either warehouse backend: the one place that picks the dialect's insert.

SQLite and PostgreSQL spell ON CONFLICT the same way (`on_conflict_do_nothing`, `on_conflict_do_update`
with `excluded`, `returning`), but SQLAlchemy gives each dialect its own `insert`.
"""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite


def conflict_insert(dialect_name: str, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An INSERT into `table` that takes ON CONFLICT clauses, for dialect `dialect_name`
    (`connection.dialect.name` or `Warehouse.dialect`)."""
    if dialect_name == "postgresql":
        return postgresql.insert(table)
    if dialect_name == "sqlite":
        return sqlite.insert(table)
    raise ValueError(f"no ON CONFLICT insert for the {dialect_name!r} dialect (the warehouse is SQLite or PostgreSQL)")

"""The analysts' views, created and replaced by migrations.

Each migration that introduces or changes a view carries that view's SELECT as it was at its own
revision, in `migrations/views/<revision>_<name>.sql` (package data), and runs
`create_view(op, revision, name)` (and `drop_view` on downgrade): upgrading to an old revision builds
the view of that revision, whatever the current files say. `sql/views/<name>.sql` is the analysts'
readable copy of the current view; `tests/warehouse/test_views.py` keeps it equal to the latest
migration's. A view's SQL is one SELECT, portable across SQLite and PostgreSQL.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

MIGRATION_VIEWS_DIR = Path(__file__).parent / "migrations" / "views"


def view_sql(revision: str, name: str) -> str:
    """The SELECT of view `name` as migration `revision` defines it."""
    path = MIGRATION_VIEWS_DIR / f"{revision}_{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"view {name!r} of revision {revision}: no file {path}")
    return path.read_text(encoding="utf-8").strip().rstrip(";")


def create_view(op: Any, revision: str, name: str) -> None:
    """(Re)create view `name` inside Alembic migration `revision` (`op` is `alembic.op`)."""
    drop_view(op, name)
    op.execute(f"CREATE VIEW {name} AS\n{view_sql(revision, name)}")


def drop_view(op: Any, name: str) -> None:
    op.execute(f"DROP VIEW IF EXISTS {name}")

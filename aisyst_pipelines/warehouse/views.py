"""The analysts' views: their SQL lives in `sql/views/<name>.sql`, migrations create and replace them.

A view's file holds only its SELECT (portable across SQLite and PostgreSQL); the migration that
introduces or changes a view runs `create_view(op, name)` (and `drop_view` on downgrade).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

VIEWS_DIR = Path(__file__).resolve().parents[2] / "sql" / "views"


def view_sql(name: str) -> str:
    """The SELECT of view `name`, from sql/views/<name>.sql."""
    path = VIEWS_DIR / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"view {name!r}: no file {path}")
    return path.read_text(encoding="utf-8").strip().rstrip(";")


def create_view(op: Any, name: str) -> None:
    """(Re)create view `name` inside an Alembic migration (`op` is `alembic.op`)."""
    drop_view(op, name)
    op.execute(f"CREATE VIEW {name} AS\n{view_sql(name)}")


def drop_view(op: Any, name: str) -> None:
    op.execute(f"DROP VIEW IF EXISTS {name}")

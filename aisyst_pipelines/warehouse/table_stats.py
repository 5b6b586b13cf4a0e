"""What the Dagster UI shows about a warehouse table: its columns (from `schema.py`) and its row count."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func, select

from .database import Warehouse
from .schema import metadata
from .types import UtcDateTime


@dataclass(frozen=True)
class ColumnShape:
    name: str
    type: str  # the SQL type as the analysts read it, e.g. VARCHAR(64), BIGINT, timestamp (UTC)
    nullable: bool
    primary_key: bool


def columns_of(table_name: str) -> list[ColumnShape]:
    """The columns of one table of `schema.py`, in order (KeyError for a table the schema lacks)."""
    table = metadata.tables[table_name]
    return [
        ColumnShape(
            name=column.name,
            type="timestamp (UTC)" if isinstance(column.type, UtcDateTime) else str(column.type),
            nullable=bool(column.nullable),
            primary_key=bool(column.primary_key),
        )
        for column in table.columns
    ]


def row_count(warehouse: Warehouse, table_name: str) -> int:
    """COUNT(*) of one table of `schema.py`."""
    table = metadata.tables[table_name]
    with warehouse.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())

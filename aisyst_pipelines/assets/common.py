"""What every feature's assets share (not a feature itself, so any of them may import it): the
description of a warehouse table in the UI, the link to the runbook, Markdown tables, the daily
partitions and the owner.

Every asset backed by a warehouse table carries `table_metadata(<table>)` as definition metadata
(`dagster/table_name`, and `dagster/column_schema` read from the SQLAlchemy schema, so the UI's
columns cannot drift from `warehouse/schema.py`) and `row_count_metadata` on each materialization.
"""

from __future__ import annotations

import dagster as dg

from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.table_stats import columns_of, row_count

OWNERS = ["team:billing-data"]
RUNBOOK = "docs/operations.md"
# One partition per UTC day, for the work the business does per day (the nightly reconciliation, the
# daily usage alerts). The first day is when the platform went live: every day since has a partition,
# and a day whose run is missing shows as a missing partition (Dagster's backfill fills it). The last
# partition is yesterday: a day is reconciled/alerted once it has ended.
DAILY_PARTITIONS = dg.DailyPartitionsDefinition(start_date="2026-01-01", timezone="UTC")


def table_metadata(table_name: str) -> dict[str, object]:
    """Definition metadata of an asset stored in the warehouse table `table_name`."""
    columns = [
        dg.TableColumn(
            column.name,
            column.type,
            description="primary key" if column.primary_key else None,
            constraints=dg.TableColumnConstraints(nullable=column.nullable, unique=False),
        )
        for column in columns_of(table_name)
    ]
    return {"dagster/table_name": table_name, "dagster/column_schema": dg.TableSchema(columns=columns)}


def row_count_metadata(warehouse: Warehouse, table_name: str) -> dict[str, dg.MetadataValue]:
    """`dagster/row_count`: the rows of the whole table after the materialization."""
    return {"dagster/row_count": dg.MetadataValue.int(row_count(warehouse, table_name))}


def runbook_link(section: str) -> dg.MetadataValue:
    """A check's runbook section, `docs/operations.md#<section>` (metadata key `runbook`; the ops
    e-mail of a failed check names it too)."""
    return dg.MetadataValue.path(f"{RUNBOOK}#{section}")


def markdown_table(header: list[str], rows: list[list[object]]) -> dg.MetadataValue:
    """A Markdown table (the UI shows every column, unlike table metadata); `|` in a cell is escaped."""
    def cell(value: object) -> str:
        return ("" if value is None else str(value)).replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell(value) for value in row) + " |" for row in rows]
    return dg.MetadataValue.md("\n".join(lines))

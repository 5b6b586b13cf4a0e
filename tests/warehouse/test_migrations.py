from datetime import date, datetime, timezone

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import func, insert, select

from aisyst_pipelines.warehouse import Warehouse, metadata
from aisyst_pipelines.warehouse.schema import call_records, usage_daily

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def test_migrations_build_exactly_the_schema_module(warehouse: Warehouse) -> None:
    with warehouse.connect() as connection:
        diffs = compare_metadata(MigrationContext.configure(connection), metadata)
    assert diffs == []
    assert warehouse.is_current()


def test_upgrade_keeps_rows_written_at_an_older_revision(warehouse_url: str) -> None:
    wh = Warehouse(warehouse_url)
    wh.upgrade("0001")
    with wh.begin() as connection:
        connection.execute(
            insert(call_records),
            [
                dict(call_id=f"c{i}", account_code="acct", direction="inbound", disposition="completed",
                     started_at=T0, answered_at=T0, ended_at=T0, billable_seconds=61, billable_minutes=2,
                     content_hash="x", source_file="f.csv", source_sha256="s", source_line=i + 2,
                     ingested_at=T0)
                for i in range(50)
            ],
        )
        connection.execute(insert(usage_daily).values(
            account_code="acct", usage_date=date(2026, 3, 1), calls=50, answered_calls=50,
            billable_seconds=3050, billable_minutes=100, updated_at=T0))
    wh.upgrade()
    with wh.connect() as connection:
        assert connection.scalar(select(func.count()).select_from(call_records)) == 50
        assert connection.scalar(select(usage_daily.c.billable_minutes)) == 100
        assert connection.scalar(select(call_records.c.ended_at).limit(1)) == T0
    wh.upgrade()  # a second upgrade is a no-op
    assert wh.is_current()
    wh.dispose()

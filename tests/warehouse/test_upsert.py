"""The one dialect-aware INSERT … ON CONFLICT, on both backends."""

from datetime import datetime, timezone

import pytest
from sqlalchemy import select

from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.schema import warehouse_properties
from aisyst_pipelines.warehouse.upsert import conflict_insert

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)


def test_insert_or_ignore_then_insert_or_update(warehouse: Warehouse) -> None:
    row = dict(name="p", value="first", recorded_at=T0)
    with warehouse.begin() as connection:
        ignore = conflict_insert(connection.dialect.name, warehouse_properties).on_conflict_do_nothing()
        assert connection.execute(ignore.returning(warehouse_properties.c.name), [row]).all() == [("p",)]
        assert connection.execute(ignore.values(row | {"value": "second"}).returning(warehouse_properties.c.name)).all() == []
        update = conflict_insert(warehouse.dialect, warehouse_properties)
        connection.execute(update.on_conflict_do_update(index_elements=["name"], set_={"value": update.excluded.value}),
                           [row | {"value": "third"}])
        assert connection.execute(select(warehouse_properties.c.value)).scalars().all() == ["third"]


def test_another_dialect_is_refused() -> None:
    with pytest.raises(ValueError, match="'mysql' dialect"):
        conflict_insert("mysql", warehouse_properties)

"""The warehouse as a Dagster resource: assets, sensors and checks get a `Warehouse` from it."""

from __future__ import annotations

import dagster as dg
from pydantic import PrivateAttr

from aisyst_pipelines.warehouse import Warehouse


class WarehouseResource(dg.ConfigurableResource):
    """SQLAlchemy URL of the warehouse. A PostgreSQL URL carries a password, so production binds it
    with `dg.EnvVar("AISYST_WAREHOUSE_URL")`; the embedded SQLite default is just a path."""

    url: str
    _warehouse: Warehouse | None = PrivateAttr(default=None)

    def get(self) -> Warehouse:
        """The migrated warehouse (migrations run once per process, on first use)."""
        if self._warehouse is None:
            warehouse = Warehouse(self.url)
            if not warehouse.is_current():
                warehouse.upgrade()
            self._warehouse = warehouse
        return self._warehouse

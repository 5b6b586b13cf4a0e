"""The warehouse as a Dagster resource: assets, sensors and checks get a `Warehouse` from it."""

from __future__ import annotations

import os

import dagster as dg
from pydantic import Field, PrivateAttr

from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse, WarehouseNotUpgraded


class WarehouseResource(dg.ConfigurableResource):
    """SQLAlchemy URL of the warehouse. A PostgreSQL URL carries a password, so production binds it
    with `dg.EnvVar("AISYST_WAREHOUSE_URL")`; the embedded SQLite default is just a path."""

    url: str
    upgrade_on_first_use: bool = Field(
        default=False,
        description="Only for the embedded SQLite warehouse of a home (demo, fresh clone): one file on "
        "one host, upgraded by the first process that opens it. A configured warehouse is upgraded by "
        "`aisyst db upgrade` and refused until then.",
    )
    _warehouse: Warehouse | None = PrivateAttr(default=None)

    @classmethod
    def from_settings(cls, settings: Settings) -> "WarehouseResource":
        if os.environ.get("AISYST_WAREHOUSE_URL"):
            return cls(url=dg.EnvVar("AISYST_WAREHOUSE_URL"))
        return cls(url=settings.warehouse_url, upgrade_on_first_use=settings.uses_embedded_warehouse)

    def get(self) -> Warehouse:
        """The warehouse, at the code's schema revision (checked once per process)."""
        if self._warehouse is None:
            try:
                self._warehouse = Warehouse(self.url).require_current(upgrade=self.upgrade_on_first_use)
            except WarehouseNotUpgraded as error:  # the run fails with the message, not a traceback
                raise dg.Failure(description=str(error)) from None
        return self._warehouse

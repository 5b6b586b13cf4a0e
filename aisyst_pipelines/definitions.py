"""The code location: one Definitions object with every asset, check, job, schedule, sensor and resource."""

from __future__ import annotations

import os

import dagster as dg

from aisyst_pipelines.settings import Settings
from resources import WarehouseResource


def build_resources(settings: Settings) -> dict[str, dg.ConfigurableResource]:
    warehouse_url = dg.EnvVar("AISYST_WAREHOUSE_URL") if os.environ.get("AISYST_WAREHOUSE_URL") else settings.warehouse_url
    return {"warehouse": WarehouseResource(url=warehouse_url)}


@dg.definitions
def defs() -> dg.Definitions:
    settings = Settings.from_env()
    return dg.Definitions(resources=build_resources(settings))

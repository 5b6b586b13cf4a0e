"""Warehouse access on SQLAlchemy Core: every SQL statement of the project goes through here."""

from .database import Warehouse, WarehouseNotUpgraded, normalize_url
from .schema import metadata

__all__ = ["Warehouse", "WarehouseNotUpgraded", "metadata", "normalize_url"]

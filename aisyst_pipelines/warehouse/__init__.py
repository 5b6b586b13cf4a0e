"""Warehouse access on SQLAlchemy Core: every SQL statement of the project goes through here."""

from .database import Warehouse, normalize_url
from .schema import metadata

__all__ = ["Warehouse", "metadata", "normalize_url"]

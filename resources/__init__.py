"""Dagster resources: the one Stripe client, the warehouse, the notifier."""

from .warehouse import WarehouseResource

__all__ = ["WarehouseResource"]

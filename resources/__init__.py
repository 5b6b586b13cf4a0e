"""Dagster resources: the one Stripe client, the warehouse, the notifier."""

from .stripe import StripeResource
from .warehouse import WarehouseResource

__all__ = ["StripeResource", "WarehouseResource"]

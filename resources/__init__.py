"""Dagster resources: the one Stripe client, the warehouse, the notifier."""

from .pii import PiiKeyResource
from .stripe import StripeResource
from .warehouse import WarehouseResource

__all__ = ["PiiKeyResource", "StripeResource", "WarehouseResource"]

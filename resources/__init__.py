"""Dagster resources: the one Stripe client, the warehouse, the notifier."""

from .notifier import NotifierResource
from .pii import PiiKeyResource
from .stripe import StripeResource
from .warehouse import WarehouseResource

__all__ = ["NotifierResource", "PiiKeyResource", "StripeResource", "WarehouseResource"]

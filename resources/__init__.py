"""Dagster resources: the one Stripe client, the warehouse, the notifier, the billing catalog."""

from .catalog import CatalogResource
from .notifier import NotifierResource
from .pii import PiiKeyResource
from .stripe import StripeResource
from .warehouse import WarehouseResource

__all__ = ["CatalogResource", "NotifierResource", "PiiKeyResource", "StripeResource", "WarehouseResource"]

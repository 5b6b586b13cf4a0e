"""Dagster resources: the one Stripe client, the warehouse, the notifier, the billing catalog,
the usage alerts' knobs."""

from .catalog import CatalogResource
from .notifier import NotifierResource
from .pii import PiiKeyResource
from .stripe import StripeResource
from .usage_alerts import UsageAlertsConfig
from .warehouse import WarehouseResource

__all__ = ["CatalogResource", "NotifierResource", "PiiKeyResource", "StripeResource", "UsageAlertsConfig", "WarehouseResource"]

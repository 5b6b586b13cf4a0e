"""Dagster resources: the one Stripe client, the warehouse, the notifier, the billing catalog, the
knobs of reconciliation and usage alerts.

The names below are imported on first use (PEP 562 `__getattr__`), not when the package is: the
plain services import the Stripe gateways (`resources.stripe.invoices`, …), which need no Dagster,
and importing this package must not load Dagster for them.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .catalog import CatalogResource
    from .notifier import NotifierResource
    from .pii import PiiKeyResource
    from .stripe import StripeResource
    from .usage_alerts import UsageAlertsConfig
    from .warehouse import WarehouseResource

_MODULE_OF = {
    "CatalogResource": ".catalog",
    "NotifierResource": ".notifier",
    "PiiKeyResource": ".pii",
    "StripeResource": ".stripe",
    "UsageAlertsConfig": ".usage_alerts",
    "WarehouseResource": ".warehouse",
}
__all__ = [  # the names above, listed for type checkers (tests/test_architecture.py keeps the two equal)
    "CatalogResource", "NotifierResource", "PiiKeyResource", "StripeResource", "UsageAlertsConfig", "WarehouseResource",
]


def __getattr__(name: str) -> Any:
    if name in _MODULE_OF:
        return getattr(importlib.import_module(_MODULE_OF[name], __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

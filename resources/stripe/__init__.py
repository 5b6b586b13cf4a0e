"""The one Stripe client of the project (DESIGN.md §1; reference/STRIPE.md §7, §8).

`client.py` is the core every call goes through (the StripeClient, the shared rate limit, retries
on the SDK's public error facts, no secret in errors). One gateway per domain — `catalog`,
`customers`, `meters`, `invoices`, `events`, `portal` — is reached as an attribute of
`StripeResource` (`stripe.invoices.add_annotation_lines(...)`); each builds its parameters as the
SDK's own TypedDicts (a wrong parameter name fails the type check) and returns the plain records of
`records.py`, never a StripeObject. A new Stripe call goes into the gateway of its domain.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .client import PAGE_SIZE, LiveModeRefused, transient_stripe_error
from .events import EventCursorGone
from .invoices import AnnotationWriteConflict, InvoiceGone, InvoiceNotEditable, StaleListCursor
from .meters import MeterNotFound
from .records import ListedInvoice

if TYPE_CHECKING:
    from .resource import StripeResource

__all__ = [
    "PAGE_SIZE",
    "AnnotationWriteConflict",
    "EventCursorGone",
    "InvoiceGone",
    "InvoiceNotEditable",
    "ListedInvoice",
    "LiveModeRefused",
    "MeterNotFound",
    "StaleListCursor",
    "StripeResource",
    "transient_stripe_error",
]


def __getattr__(name: str) -> Any:
    # The Dagster resource is imported on first use: the gateways and records of this package need no
    # Dagster, and the plain services import them (see resources/__init__.py).
    if name == "StripeResource":
        return importlib.import_module(".resource", __name__).StripeResource
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""Route handlers of the emulator's /v1 API, one module per area. Importing registers them."""

from aisyst_pipelines.emulator.resources import (  # noqa: F401
    catalog,
    clocks,
    customers,
    events,
    invoices,
    meters,
    previews,
    subscriptions,
    webhook_endpoints,
)

"""A local, stateful Stripe for tests, benchmarks and the demo (DESIGN.md §6).

    from aisyst_pipelines.emulator import EmulatorServer, Faults

    with EmulatorServer(faults=Faults(latency_ms=50), seed=1) as emulator:
        client = stripe.StripeClient("sk_test_emulator", base_addresses={"api": emulator.url, "meter_events": emulator.url})

Modules: `server` (HTTP, faults, auth — Bearer or curl's Basic —, idempotency), `wire` (form
decoding, errors), `params` (checks against the stripe package's typed params), `store` (state,
time, lists, expand, events), `billing` (periods, invoices, renewals, previews, payment, Smart
Retries), `dunning` (the revenue-recovery settings), `webhooks` (signed delivery to webhook
endpoints, with retries), `resources/*` (the routes), `pages`.
"""

from aisyst_pipelines.emulator.faults import Faults
from aisyst_pipelines.emulator.server import EmulatorServer

__all__ = ["EmulatorServer", "Faults"]

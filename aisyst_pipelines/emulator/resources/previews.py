"""`POST /v1/invoices/create_preview`: a subscription's next renewal invoice, before it exists.

The preview is built by the same code that creates the renewal at the period end
(`billing.preview_renewal` → `billing.renewal_invoice`), so its lines, pending invoice items and
taxes are the renewal's own. What the emulator previews is the next renewal as things stand: the
`customer` (and, when it has several subscriptions, the `subscription`) as the guide calls it.
Previews of changes (`subscription_details`, `schedule`, `invoice_items`, …) are not emulated and
answered 400 rather than ignored.
"""

from __future__ import annotations

from typing import Any

from aisyst_pipelines.emulator import billing
from aisyst_pipelines.emulator.router import Call, route
from aisyst_pipelines.emulator.wire import ApiError, invalid

SUPPORTED = {"customer", "subscription", "expand"}
RENEWING = ("active", "past_due", "trialing", "unpaid")


def _no_upcoming(message: str) -> ApiError:
    return ApiError(400, message, code="invoice_upcoming_none", cacheable=False)


@route("POST", "/v1/invoices/create_preview", "InvoiceCreatePreviewParams")
def create_preview(call: Call) -> dict[str, Any]:
    store, p = call.store, call.params
    unsupported = sorted(set(p) - SUPPORTED)
    if unsupported:
        raise invalid(
            f"The emulator previews a subscription's next renewal only; {unsupported[0]} is not emulated.",
            param=unsupported[0],
        )
    if p.get("subscription"):
        subscription = store.get("subscription", p["subscription"], param="subscription")
        if p.get("customer") and p["customer"] != subscription["customer"]:
            raise invalid("The subscription belongs to another customer.", param="subscription")
    else:
        customer = store.get_param("customer", p, "customer")
        candidates = [
            s for s in store.tables["subscription"].values() if s["customer"] == customer["id"] and s["status"] in RENEWING
        ]
        if not candidates:
            raise _no_upcoming(f"No upcoming invoices for customer: {customer['id']}")
        if len(candidates) > 1:
            raise invalid("The customer has several subscriptions: name one with `subscription`.", param="subscription")
        [subscription] = candidates
    if subscription["status"] not in RENEWING or subscription["cancel_at_period_end"] or not subscription["_items"]:
        raise _no_upcoming(f"No upcoming invoices for subscription: {subscription['id']} (it does not renew)")
    preview = billing.preview_renewal(store, subscription)
    for path in p.get("expand") or []:
        store.expand(preview, path.split("."), path)
    return preview

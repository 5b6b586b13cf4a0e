"""Stripe-shaped event payloads for the pure and warehouse tests (the emulator tests use real ones).

Field names and nesting follow stripe 16.1's Invoice / Subscription / Event objects at its pinned
API version (invoice.parent.subscription_details, periods on subscription items).
"""

from __future__ import annotations

from itertools import count
from typing import Any

_ids = count(1)

T0 = 1_772_323_200  # 2026-03-01 00:00:00 UTC
DAY = 86_400


def invoice(
    invoice_id: str = "in_1",
    *,
    status: str = "draft",
    customer: str = "cus_1",
    subscription: str | None = "sub_1",
    billing_reason: str = "subscription_cycle",
    amount_due: int = 29_900,
    amount_paid: int = 0,
    created: int = T0,
    period_start: int = T0 - 31 * DAY,
    period_end: int = T0,
    metadata: dict[str, str] | None = None,
    attempt_count: int = 0,
    paid_at: int | None = None,
) -> dict[str, Any]:
    return {
        "id": invoice_id,
        "object": "invoice",
        "customer": customer,
        "status": status,
        "billing_reason": billing_reason,
        "number": None if status == "draft" else f"NR-{invoice_id}",
        "amount_due": amount_due,
        "amount_paid": amount_paid,
        "amount_remaining": amount_due - amount_paid,
        "total": amount_due,
        "currency": "usd",
        "created": created,
        "period_start": period_start,
        "period_end": period_end,
        "hosted_invoice_url": None if status == "draft" else f"https://invoice.example/{invoice_id}",
        "invoice_pdf": None if status == "draft" else f"https://invoice.example/{invoice_id}/pdf",
        "attempt_count": attempt_count,
        "next_payment_attempt": None,
        "due_date": None,
        "metadata": metadata or {},
        "parent": (
            {"type": "subscription_details", "subscription_details": {"subscription": subscription, "metadata": {}}}
            if subscription else None
        ),
        "status_transitions": {"finalized_at": None if status == "draft" else created, "paid_at": paid_at},
    }


def subscription(
    subscription_id: str = "sub_1",
    *,
    status: str = "active",
    customer: str = "cus_1",
    period_start: int = T0,
    period_end: int = T0 + 31 * DAY,
    cancel_at_period_end: bool = False,
) -> dict[str, Any]:
    return {
        "id": subscription_id,
        "object": "subscription",
        "customer": customer,
        "status": status,
        "cancel_at_period_end": cancel_at_period_end,
        "items": {
            "object": "list",
            "data": [{
                "id": "si_1",
                "object": "subscription_item",
                "current_period_start": period_start,
                "current_period_end": period_end,
                "price": {"id": "price_tier1", "object": "price", "product": "prod_tier1", "metadata": {}},
            }],
        },
    }


def event(
    event_type: str,
    obj: dict[str, Any],
    *,
    created: int = T0,
    event_id: str | None = None,
    previous_attributes: dict[str, Any] | None = None,
) -> dict[str, Any]:
    data: dict[str, Any] = {"object": obj}
    if previous_attributes is not None:
        data["previous_attributes"] = previous_attributes
    return {
        "id": event_id or f"evt_{next(_ids):06d}",
        "object": "event",
        "api_version": "2026-10-28.endive",
        "created": created,
        "livemode": False,
        "pending_webhooks": 0,
        "request": {"id": None, "idempotency_key": None},
        "type": event_type,
        "data": data,
    }

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


_DROP = object()  # odd_events: leave the key out


def odd_events() -> list[tuple[str, Any]]:
    """Signed-but-odd events: each one is not an event the warehouse can take, and must be refused with
    a reason naming what is wrong (the text given here) — never a 500, never half-applied. The class:
    the envelope (id, type, created, data), an invoice or subscription object of the wrong shape, a
    value the warehouse cannot hold (NUL, too wide, too large), a time no Stripe object carries."""
    def inv(**changes: Any) -> dict[str, Any]:
        return event("invoice.paid", invoice(status="paid") | changes)

    def sub(previous: dict[str, Any] | None = None, **changes: Any) -> dict[str, Any]:
        return event("customer.subscription.updated", subscription() | changes, previous_attributes=previous)

    def envelope(**changes: Any) -> dict[str, Any]:
        base = event("invoice.paid", invoice(status="paid"))
        return {k: v for k, v in (base | changes).items() if v is not _DROP}

    item = subscription()["items"]["data"][0]
    return [
        ("event.created", envelope(created=None)),
        ("event.created", envelope(created=_DROP)),
        ("event.created", envelope(created=str(T0))),
        ("event.created", envelope(created=float(T0))),
        ("event.created", envelope(created=True)),
        ("event.created", envelope(created=-1)),
        ("event.created", envelope(created=0)),
        ("event.created", envelope(created=253_402_300_799)),  # 9999-12-31: would pin its invoice forever
        ("event.created", envelope(created=10**20)),  # past what a datetime can hold
        ("event.id", envelope(id=_DROP)),
        ("event.id", envelope(id=5)),
        ("event.id", envelope(id="")),
        ("event.id", envelope(id="evt_" + "x" * 61)),
        ("event.id", envelope(id="evt_\x00")),
        ("event.type", envelope(type=_DROP)),
        ("event.type", envelope(type=["invoice.paid"])),
        ("event.type", envelope(type="x" * 65)),
        ("data is not an object", envelope(data=_DROP)),
        ("data is not an object", envelope(data=[invoice()])),
        ("data.object is missing", envelope(data={"previous_attributes": {}})),
        ("data.object is not an object", envelope(data={"object": "in_1"})),
        ("data.previous_attributes", envelope(data={"object": invoice(), "previous_attributes": ["status"]})),
        ("does not carry an invoice", event("invoice.paid", subscription())),
        ("data.object.id", inv(id=None)),
        ("data.object.id", inv(id={"id": "in_1"})),
        ("data.object.amount_due", inv(amount_due="29900")),
        ("data.object.amount_paid", inv(amount_paid=29_900.5)),
        ("data.object.total", inv(total=2**63)),
        ("data.object.attempt_count", inv(attempt_count=2**31)),
        ("data.object.currency", inv(currency="dollars")),
        ("data.object.status", inv(status={"paid": True})),
        ("data.object.number", inv(number="NR\x00-1")),
        ("data.object.billing_reason", inv(billing_reason="r" * 49)),
        ("data.object.hosted_invoice_url", inv(hosted_invoice_url=["https://invoice.example"])),
        ("data.object.customer", inv(customer={"id": 5})),
        ("data.object.parent", inv(parent=["sub_1"])),
        ("data.object.parent.subscription_details.subscription",
         inv(parent={"subscription_details": {"subscription": "s" * 65}})),
        ("data.object.status_transitions.paid_at", inv(status_transitions={"paid_at": 10**20})),
        ("data.object.period_end", inv(period_end="soon")),
        ("data.object.created", inv(created=-86_400)),
        ("data.object.metadata", inv(metadata=["aisyst_annotation_version"])),
        ("data.object.last_finalization_error", event("invoice.finalization_failed", invoice() | {
            "last_finalization_error": "tax location invalid"})),
        ("does not carry a subscription", event("customer.subscription.updated", invoice())),
        ("data.object.status", sub(status=None)),
        ("data.object.status", sub(status="s" * 33)),
        ("data.object.items", sub(items="si_1")),
        ("data.object.items.data", sub(items={"data": {"si_1": item}})),
        ("data.object.items.data[0]", sub(items={"data": ["si_1"]})),
        ("data.object.items.data[0].current_period_end", sub(items={"data": [item | {"current_period_end": "soon"}]})),
        ("data.object.cancel_at_period_end", sub(cancel_at_period_end="false")),
        ("data.object.canceled_at", sub(canceled_at=T0 * 1000)),
        ("data.previous_attributes.status", sub(previous={"status": 5})),
    ]

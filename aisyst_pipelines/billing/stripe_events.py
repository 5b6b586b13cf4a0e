"""Stripe events, in the business's terms: which events matter, what they change, what ops must hear.

Plain Python (no Dagster, Stripe SDK or SQL): an event arrives as the JSON-shaped mapping Stripe sends
— from `GET /v1/events` (the sensor) or a webhook body (the receiver) — and this module turns it into
the invoice row to store, the subscription status to record and the ops alerts to raise. The same
functions serve both delivery paths, so the sensor and the webhook can never disagree.

Stripe times are Unix seconds; everything returned here carries aware UTC datetimes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

from .formatting import format_money
from .periods import from_unix

# The invoice and subscription events we keep the warehouse current with. `GET /v1/events` takes at
# most 20 names in `types[]` (STRIPE.md §5); these are 19, so one filtered listing covers them all
# (the `invoice.*` wildcard would only cover one of the two families).
INVOICE_EVENT_TYPES: tuple[str, ...] = (
    "invoice.created",
    "invoice.updated",
    "invoice.finalized",
    "invoice.finalization_failed",
    "invoice.paid",
    "invoice.payment_succeeded",
    "invoice.payment_failed",
    "invoice.payment_action_required",
    "invoice.marked_uncollectible",
    "invoice.voided",
    "invoice.deleted",
    "invoice.overdue",
)
SUBSCRIPTION_EVENT_TYPES: tuple[str, ...] = (
    "customer.subscription.created",
    "customer.subscription.updated",
    "customer.subscription.deleted",
    "customer.subscription.paused",
    "customer.subscription.resumed",
    "customer.subscription.pending_update_applied",
    "customer.subscription.pending_update_expired",
)
WATCHED_EVENT_TYPES: tuple[str, ...] = INVOICE_EVENT_TYPES + SUBSCRIPTION_EVENT_TYPES
MAX_TYPES_PER_LISTING = 20  # Stripe's limit on `types[]`
assert len(WATCHED_EVENT_TYPES) <= MAX_TYPES_PER_LISTING

# An invoice only moves forward: draft → open → (uncollectible →) paid | void. A deleted draft is gone.
# Events can reach us late (a webhook retried by Stripe, the sensor catching up after the webhook
# delivered a newer one), so a stored invoice is only replaced by an event at least as new: the
# event's `created` decides, and within one second (finalized and paid often share one) this rank.
INVOICE_STATUS_RANK: dict[str, int] = {
    "draft": 0,
    "open": 1,
    "uncollectible": 2,
    "paid": 3,
    "void": 3,
    "deleted": 3,
}

# Subscription states that ops must hear about when a subscription enters them.
DELINQUENT_SUBSCRIPTION_STATUSES = frozenset({"past_due", "unpaid"})

RENEWAL_BILLING_REASON = "subscription_cycle"


class EventPayloadError(ValueError):
    """The payload is not a Stripe event we can read (missing id, type, created or data.object)."""


@dataclass(frozen=True)
class StripeEvent:
    """The parts of a Stripe event we use: the object as it was when the event happened."""

    id: str
    type: str
    created: datetime
    object: Mapping[str, Any]
    previous_attributes: Mapping[str, Any] = field(default_factory=dict)
    livemode: bool = False

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> "StripeEvent":
        """Read an event as Stripe sends it (`GET /v1/events` item or webhook body)."""
        if payload.get("object") not in (None, "event"):
            raise EventPayloadError(f"expected an event object, got {payload.get('object')!r}")
        try:
            data = payload["data"]
            event_id, event_type, created, obj = payload["id"], payload["type"], payload["created"], data["object"]
        except (KeyError, TypeError) as error:
            raise EventPayloadError(f"event payload lacks {error}") from None
        if not isinstance(obj, Mapping) or not isinstance(event_id, str) or not isinstance(event_type, str):
            raise EventPayloadError("event payload has a malformed id, type or data.object")
        created_at = from_unix(created)
        assert created_at is not None
        return cls(
            id=event_id,
            type=event_type,
            created=created_at,
            object=obj,
            previous_attributes=data.get("previous_attributes") or {},
            livemode=bool(payload.get("livemode", False)),
        )

    @property
    def is_watched(self) -> bool:
        return self.type in WATCHED_EVENT_TYPES

    @property
    def is_invoice_event(self) -> bool:
        return self.type in INVOICE_EVENT_TYPES

    @property
    def is_subscription_event(self) -> bool:
        return self.type in SUBSCRIPTION_EVENT_TYPES


def _id_of(value: Any) -> str | None:
    """An expandable reference: either an id string or the expanded object."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, Mapping):
        return value.get("id")
    return None


def invoice_subscription_id(invoice: Mapping[str, Any]) -> str | None:
    """The subscription of an invoice: `parent.subscription_details.subscription` since basil."""
    parent = invoice.get("parent") or {}
    details = parent.get("subscription_details") or {}
    return _id_of(details.get("subscription"))


# --- invoices --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class InvoiceRow:
    """One `stripe_invoices` row as an event shows the invoice. Amounts are integer minor units."""

    invoice_id: str
    customer_id: str
    subscription_id: str | None
    status: str
    billing_reason: str | None
    number: str | None
    amount_due: int
    amount_paid: int
    amount_remaining: int
    total: int
    currency: str
    period_start: datetime | None
    period_end: datetime | None
    hosted_invoice_url: str | None
    invoice_pdf: str | None
    attempt_count: int
    next_payment_attempt: datetime | None
    due_date: datetime | None
    finalized_at: datetime | None
    paid_at: datetime | None
    created: datetime
    last_event_id: str
    last_event_type: str
    last_event_created: datetime


def invoice_row(event: StripeEvent) -> InvoiceRow:
    """The invoice row an `invoice.*` event implies. `invoice.deleted` (a deleted draft) → status `deleted`."""
    invoice = event.object
    if invoice.get("object") != "invoice":
        raise EventPayloadError(f"{event.type} {event.id} does not carry an invoice")
    transitions = invoice.get("status_transitions") or {}
    created = from_unix(invoice.get("created")) or event.created
    status = "deleted" if event.type == "invoice.deleted" else str(invoice.get("status") or "draft")
    return InvoiceRow(
        invoice_id=invoice["id"],
        customer_id=_id_of(invoice.get("customer")) or "",
        subscription_id=invoice_subscription_id(invoice),
        status=status,
        billing_reason=invoice.get("billing_reason"),
        number=invoice.get("number"),
        amount_due=int(invoice.get("amount_due") or 0),
        amount_paid=int(invoice.get("amount_paid") or 0),
        amount_remaining=int(invoice.get("amount_remaining") or 0),
        total=int(invoice.get("total") or 0),
        currency=str(invoice.get("currency") or ""),
        # Invoice periods are Unix seconds already in our half-open convention: period_end is the
        # first second after the period (only line item periods are inclusive, STRIPE.md §3.2).
        period_start=from_unix(invoice.get("period_start")),
        period_end=from_unix(invoice.get("period_end")),
        hosted_invoice_url=invoice.get("hosted_invoice_url"),
        invoice_pdf=invoice.get("invoice_pdf"),
        attempt_count=int(invoice.get("attempt_count") or 0),
        next_payment_attempt=from_unix(invoice.get("next_payment_attempt")),
        due_date=from_unix(invoice.get("due_date")),
        finalized_at=from_unix(transitions.get("finalized_at")),
        paid_at=from_unix(transitions.get("paid_at")),
        created=created,
        last_event_id=event.id,
        last_event_type=event.type,
        last_event_created=event.created,
    )


# --- subscriptions ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class SubscriptionStatus:
    """The state of a subscription as a `customer.subscription.*` event shows it."""

    subscription_id: str
    customer_id: str
    status: str
    previous_status: str | None  # from `previous_attributes` when the event changed the status
    cancel_at_period_end: bool
    canceled_at: datetime | None
    ended_at: datetime | None
    current_period_start: datetime | None
    current_period_end: datetime | None
    event_id: str
    event_created: datetime


def subscription_status(event: StripeEvent) -> SubscriptionStatus:
    """Status and period of a subscription event. Since basil the period lives on the items."""
    subscription = event.object
    if subscription.get("object") != "subscription":
        raise EventPayloadError(f"{event.type} {event.id} does not carry a subscription")
    items = ((subscription.get("items") or {}).get("data")) or []
    # With flexible billing the items may differ; the plan's own item is the licensed one, and the
    # earliest-ending period is the one the next invoice closes.
    starts = [item["current_period_start"] for item in items if item.get("current_period_start") is not None]
    ends = [item["current_period_end"] for item in items if item.get("current_period_end") is not None]
    return SubscriptionStatus(
        subscription_id=subscription["id"],
        customer_id=_id_of(subscription.get("customer")) or "",
        status=str(subscription.get("status")),
        previous_status=event.previous_attributes.get("status"),
        cancel_at_period_end=bool(subscription.get("cancel_at_period_end")),
        canceled_at=from_unix(subscription.get("canceled_at")),
        ended_at=from_unix(subscription.get("ended_at")),
        current_period_start=from_unix(max(starts)) if starts else None,
        current_period_end=from_unix(min(ends)) if ends else None,
        event_id=event.id,
        event_created=event.created,
    )


# --- ops alerts ------------------------------------------------------------------------------------


class OpsAlertKind(StrEnum):
    PAYMENT_FAILED = "payment_failed"
    FINALIZATION_FAILED = "finalization_failed"
    SUBSCRIPTION_PAST_DUE = "subscription_past_due"
    SUBSCRIPTION_UNPAID = "subscription_unpaid"
    RENEWAL_NOT_ANNOTATED = "renewal_not_annotated"
    EVENTS_RETENTION_GAP = "events_retention_gap"


@dataclass(frozen=True)
class OpsAlert:
    """Something ops must hear about, tied to the event that revealed it (one alert per event and kind)."""

    kind: OpsAlertKind
    event_id: str
    subject: str
    detail: str
    customer_id: str | None = None
    subscription_id: str | None = None
    invoice_id: str | None = None


def invoice_alerts(event: StripeEvent, row: InvoiceRow, *, annotated: bool) -> list[OpsAlert]:
    """Alerts an invoice event raises. `annotated`: our usage annotation is on record for the invoice
    (invoice_annotations or the invoice's metadata) — only asked about for a finalized renewal."""
    refs = dict(customer_id=row.customer_id, subscription_id=row.subscription_id, invoice_id=row.invoice_id)
    if event.type == "invoice.payment_failed":
        retry = f"; next attempt {row.next_payment_attempt:%Y-%m-%d %H:%M} UTC" if row.next_payment_attempt else ""
        amount = format_money(row.amount_due, row.currency, iso_code=True) if row.currency else str(row.amount_due)
        return [OpsAlert(
            OpsAlertKind.PAYMENT_FAILED, event.id,
            subject=f"Payment failed: invoice {row.number or row.invoice_id} of {row.customer_id}",
            detail=f"Invoice {row.invoice_id} ({amount}) could not be charged, attempt {row.attempt_count}{retry}.",
            **refs,
        )]
    if event.type == "invoice.finalization_failed":
        error = (event.object.get("last_finalization_error") or {}).get("message") or "no reason given"
        return [OpsAlert(
            OpsAlertKind.FINALIZATION_FAILED, event.id,
            subject=f"Invoice finalization failed: {row.invoice_id} of {row.customer_id}",
            detail=f"Stripe could not finalize invoice {row.invoice_id}: {error}",
            **refs,
        )]
    if event.type == "invoice.finalized" and row.billing_reason == RENEWAL_BILLING_REASON and not annotated:
        return [OpsAlert(
            OpsAlertKind.RENEWAL_NOT_ANNOTATED, event.id,
            subject=f"Renewal invoice finalized without usage lines: {row.invoice_id}",
            detail=(f"Renewal invoice {row.invoice_id} of {row.customer_id} (period "
                    f"{_day(row.period_start)} – {_day(row.period_end)}) was finalized before the usage "
                    "annotation reached it; the customer sees no minutes on it."),
            **refs,
        )]
    return []


def _day(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d}" if moment else "?"


def subscription_alerts(event: StripeEvent, change: SubscriptionStatus, *, stored_status: str | None) -> list[OpsAlert]:
    """Alerts when a subscription turns past_due or unpaid.

    "Turning" is read from the event itself when it says so (`previous_attributes.status` on an
    update); otherwise from the status we had stored, so that a subscription already past due does
    not alert again on every later update.
    """
    if change.status not in DELINQUENT_SUBSCRIPTION_STATUSES:
        return []
    if event.type == "customer.subscription.updated" and "status" in event.previous_attributes:
        before = change.previous_status
    elif event.type == "customer.subscription.updated":
        return []  # this update did not touch the status
    else:
        before = stored_status
    if before == change.status:
        return []
    kind = OpsAlertKind.SUBSCRIPTION_PAST_DUE if change.status == "past_due" else OpsAlertKind.SUBSCRIPTION_UNPAID
    return [OpsAlert(
        kind, event.id,
        subject=f"Subscription {change.status.replace('_', ' ')}: {change.subscription_id} of {change.customer_id}",
        detail=(f"Subscription {change.subscription_id} of {change.customer_id} went from "
                f"{before or 'unknown'} to {change.status}: the renewal payment did not go through."),
        customer_id=change.customer_id,
        subscription_id=change.subscription_id,
    )]


def retention_gap_alert(*, cursor_event_id: str, cursor_created: datetime | None, now: datetime) -> OpsAlert:
    """The sensor's cursor points at an event Stripe no longer lists: events in between may be lost."""
    age = f" from {cursor_created:%Y-%m-%d %H:%M} UTC" if cursor_created else ""
    return OpsAlert(
        OpsAlertKind.EVENTS_RETENTION_GAP,
        event_id=f"gap:{cursor_event_id}",
        subject="Stripe events: the sensor fell behind Stripe's 30-day event retention",
        detail=(f"The last applied event {cursor_event_id}{age} is no longer listed by Stripe (checked "
                f"{now:%Y-%m-%d %H:%M} UTC). Every event still listed is applied; anything older is gone — "
                "run the Stripe sync to refresh subscriptions and invoices."),
    )


# --- the sensor's place in Stripe's event list -----------------------------------------------------


@dataclass(frozen=True)
class EventsCursor:
    """Where the events sensor stands, kept as the Dagster sensor cursor (JSON).

    Stripe lists events newest first. Two modes:
    - following (`scanning` false): `last_event_id` is the newest event applied; the next events are
      listed with `ending_before=last_event_id` — the page of events just newer than it, so a tick
      applies the oldest unapplied events first and can stop at any count without skipping any;
    - scanning: there is no usable cursor (first run, or the cursor's event fell out of Stripe's
      30-day retention), so the sensor walks the list down (`starting_after=scan_after`, optionally
      `created ≥ scan_floor`) to the oldest event still listed, then applies upwards from there.
    The cursor only ever names events already applied (or, while scanning, events merely listed).
    """

    last_event_id: str | None = None
    last_created: int | None = None  # Unix seconds of last_event_id
    scanning: bool = True
    scan_after: str | None = None
    scan_floor: int | None = None

    def applied(self, event_id: str, created: int) -> "EventsCursor":
        """Follow on from an event just applied."""
        return EventsCursor(last_event_id=event_id, last_created=created, scanning=False)

    def scanned_down_to(self, event_id: str) -> "EventsCursor":
        return EventsCursor(self.last_event_id, self.last_created, True, event_id, self.scan_floor)

    def rescan(self, *, floor: int | None) -> "EventsCursor":
        """Start (again) from the oldest listed event, keeping the last applied event for reference."""
        return EventsCursor(self.last_event_id, self.last_created, True, None, floor)

    def to_json(self) -> str:
        return json.dumps({k: v for k, v in asdict(self).items() if v is not None}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | None) -> "EventsCursor":
        if not text:
            return cls()
        raw = json.loads(text)
        return cls(
            last_event_id=raw.get("last_event_id"),
            last_created=raw.get("last_created"),
            scanning=bool(raw.get("scanning", raw.get("last_event_id") is None)),
            scan_after=raw.get("scan_after"),
            scan_floor=raw.get("scan_floor"),
        )


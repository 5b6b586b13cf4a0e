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
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cached_property
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

# Subscription states that ops must hear about when a subscription enters them (and leaves them: recovered).
DELINQUENT_SUBSCRIPTION_STATUSES = frozenset({"past_due", "unpaid"})
SERVING_SUBSCRIPTION_STATUSES = frozenset({"active", "trialing"})
# `cancellation_details.reason` of a subscription Stripe canceled because its retries ran out.
PAYMENT_FAILED_CANCELLATION = "payment_failed"

RENEWAL_BILLING_REASON = "subscription_cycle"


class EventPayloadError(ValueError):
    """The payload is not a Stripe event we can read: the reason names the field and what is wrong."""


# What the warehouse keeps of an event (warehouse/schema.py, checked by tests/stripe_events/test_event_rules):
# ids and event types in 64 characters, an invoice status in 16, a billing reason in 48, a subscription
# status in 32, a currency in 3, amounts in 64 bits and counts in 32. A value that does not fit is
# refused when the event is read — not by PostgreSQL half-way through applying it (a 500 that Stripe
# retries for days, or a sensor tick failing on every attempt), nor stored by SQLite unchecked.
ID_WIDTH = 64
EVENT_TYPE_WIDTH = 64
INVOICE_STATUS_WIDTH = 16
BILLING_REASON_WIDTH = 48
SUBSCRIPTION_STATUS_WIDTH = 32
CURRENCY_WIDTH = 3
COLLECTION_METHOD_WIDTH = 32
AMOUNT_BITS = 64
COUNT_BITS = 32

# Stripe times are Unix seconds between Stripe's founding and 2100: nothing it sends predates 2010, and
# not even a test clock (it advances at most two years at a time) reaches 2100. A time outside is not
# one Stripe sent — and an event dated 9999 would pin its invoice forever (newer events lose to it).
EARLIEST_STRIPE_TIME = 1_262_304_000  # 2010-01-01 00:00:00 UTC
LATEST_STRIPE_TIME = 4_102_444_800  # 2100-01-01 00:00:00 UTC


def _shown(value: Any) -> str:
    """A short, printable picture of an odd value for a refusal (never the whole payload)."""
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


class _Fields:
    """Typed reads of one JSON object of an event. Whatever is odd — a missing or mistyped field, a NUL
    character, a value wider than its column, a time outside Stripe's — raises EventPayloadError that
    names the field (`data.object.amount_due`)."""

    def __init__(self, raw: Any, path: str) -> None:
        if not isinstance(raw, dict) and not isinstance(raw, Mapping):  # dict first: the ABC check is slow
            raise EventPayloadError(f"{path} is not an object: {_shown(raw)}")
        self.raw, self.path = raw, path

    def _refuse(self, key: str, problem: str) -> EventPayloadError:
        return EventPayloadError(f"{self.path}.{key} {problem}")

    def text(self, key: str, *, width: int | None = None, required: bool = False) -> str | None:
        value = self.raw.get(key)
        if value is None or (required and value == ""):
            if required:
                raise self._refuse(key, "is missing")
            return None
        if not isinstance(value, str):
            raise self._refuse(key, f"is not a string: {_shown(value)}")
        if "\x00" in value:
            raise self._refuse(key, "contains a NUL character")
        if width is not None and len(value) > width:
            raise self._refuse(key, f"is longer than {width} characters: {_shown(value)}")
        return value

    def required_text(self, key: str, *, width: int) -> str:
        value = self.text(key, width=width, required=True)
        assert value is not None
        return value

    def reference(self, key: str) -> str | None:
        """An expandable reference: the id, or the expanded object carrying it."""
        if isinstance(self.raw.get(key), Mapping):
            return self.object(key).text("id", width=ID_WIDTH)
        return self.text(key, width=ID_WIDTH)

    def integer(self, key: str, *, bits: int = AMOUNT_BITS) -> int:
        """A whole number (missing: 0) that fits a signed integer column of `bits`."""
        value = self.raw.get(key)
        if value is None:
            return 0
        if type(value) is not int:  # noqa: E721 - exactly int: True is no amount
            raise self._refuse(key, f"is not an integer: {_shown(value)}")
        if not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
            raise self._refuse(key, f"does not fit {bits} bits: {_shown(value)}")
        return value

    def time(self, key: str, *, required: bool = False) -> datetime | None:
        value = self.raw.get(key)
        if value is None:
            if required:
                raise self._refuse(key, "is missing")
            return None
        if type(value) is not int:  # noqa: E721 - exactly int: True is no time
            raise self._refuse(key, f"is not Unix seconds: {_shown(value)}")
        if not EARLIEST_STRIPE_TIME <= value < LATEST_STRIPE_TIME:
            raise self._refuse(key, f"is not a time Stripe sends (2010 to 2100): {_shown(value)}")
        return from_unix(value)

    def required_time(self, key: str) -> datetime:
        value = self.time(key, required=True)
        assert value is not None
        return value

    def flag(self, key: str) -> bool:
        value = self.raw.get(key)
        if value is not None and not isinstance(value, bool):
            raise self._refuse(key, f"is not true or false: {_shown(value)}")
        return bool(value)

    def object(self, key: str) -> "_Fields":
        """A nested object (missing or null: an empty one)."""
        value = self.raw.get(key)
        return _Fields({} if value is None else value, f"{self.path}.{key}")

    def objects(self, key: str) -> list["_Fields"]:
        """A list of objects (missing or null: none)."""
        value = self.raw.get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self._refuse(key, f"is not a list: {_shown(value)}")
        return [_Fields(item, f"{self.path}.{key}[{n}]") for n, item in enumerate(value)]


def event_reference(payload: Any) -> str:
    """The event's id for logs and alerts, whatever the payload looks like (printable, ≤ 64 characters)."""
    raw = payload.get("id") if isinstance(payload, Mapping) else None
    text = raw if isinstance(raw, str) and raw.isprintable() else _shown(raw)
    return text[:ID_WIDTH]


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
    def from_payload(cls, payload: Any) -> "StripeEvent":
        """Read an event as Stripe sends it (`GET /v1/events` item or webhook body).

        Everything that applying the event will read is read here, so that an odd event — a null or
        absurd `created`, a `data.object` that is not the invoice or subscription its type promises, a
        value the warehouse cannot hold — is refused with its reason before anything is stored."""
        envelope = _Fields(payload, "event")
        if payload.get("object") not in (None, "event"):
            raise EventPayloadError(f"expected an event object, got {_shown(payload.get('object'))}")
        data = _Fields(payload.get("data"), "data")
        if data.raw.get("object") is None:
            raise EventPayloadError("data.object is missing")
        event = cls(
            id=envelope.required_text("id", width=ID_WIDTH),
            type=envelope.required_text("type", width=EVENT_TYPE_WIDTH),
            created=envelope.required_time("created"),
            object=_Fields(data.raw["object"], "data.object").raw,
            previous_attributes=data.object("previous_attributes").raw,
            livemode=bool(payload.get("livemode", False)),
        )
        # A sensor page is one transaction: an odd event found while applying would roll back them all.
        if event.is_invoice_event:
            event.invoice_row  # noqa: B018 - read (and kept for stripe_events_store) for its checks
            finalization_error(event)
            _Fields(event.object, "data.object").object("metadata")  # where our annotation marker is looked for
        elif event.is_subscription_event:
            event.subscription_status  # noqa: B018
        return event

    @classmethod
    def from_json(cls, body: str) -> "StripeEvent":
        """Read a webhook body: anything that is not a readable event is EventPayloadError."""
        try:
            payload = json.loads(body)
        except (ValueError, RecursionError) as error:  # not JSON, a number of 5,000 digits, deep nesting
            raise EventPayloadError(f"the body is not JSON ({type(error).__name__})") from None
        return cls.from_payload(payload)

    @property
    def object_id(self) -> str | None:
        """The id of the event's object when it is one the ledger can hold (any type of event)."""
        value = self.object.get("id")
        ok = isinstance(value, str) and len(value) <= ID_WIDTH and "\x00" not in value
        return value if ok else None

    @cached_property
    def invoice_row(self) -> "InvoiceRow":
        """`invoice_row(self)`, read once (by `from_payload`, for an invoice event)."""
        return invoice_row(self)

    @cached_property
    def subscription_status(self) -> "SubscriptionStatus":
        """`subscription_status(self)`, read once (by `from_payload`, for a subscription event)."""
        return subscription_status(self)

    @property
    def is_watched(self) -> bool:
        return self.type in WATCHED_EVENT_TYPES

    @property
    def is_invoice_event(self) -> bool:
        return self.type in INVOICE_EVENT_TYPES

    @property
    def is_subscription_event(self) -> bool:
        return self.type in SUBSCRIPTION_EVENT_TYPES


def invoice_subscription_id(invoice: Mapping[str, Any]) -> str | None:
    """The subscription of an invoice: `parent.subscription_details.subscription` since basil."""
    return _Fields(invoice, "data.object").object("parent").object("subscription_details").reference("subscription")


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
    subtotal: int
    tax: int  # every amount of total_taxes (inclusive and exclusive), as the invoice states them
    collection_method: str | None  # charge_automatically, or send_invoice (the customer pays by invoice: Net 30)
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
    invoice = _Fields(event.object, "data.object")
    if invoice.raw.get("object") != "invoice":
        raise EventPayloadError(f"{event.type} {event.id} does not carry an invoice")
    transitions = invoice.object("status_transitions")
    stated_status = invoice.text("status", width=INVOICE_STATUS_WIDTH) or "draft"
    return InvoiceRow(
        invoice_id=invoice.required_text("id", width=ID_WIDTH),
        customer_id=invoice.reference("customer") or "",
        subscription_id=invoice_subscription_id(event.object),
        status="deleted" if event.type == "invoice.deleted" else stated_status,
        billing_reason=invoice.text("billing_reason", width=BILLING_REASON_WIDTH),
        number=invoice.text("number", width=ID_WIDTH),
        amount_due=invoice.integer("amount_due"),
        amount_paid=invoice.integer("amount_paid"),
        amount_remaining=invoice.integer("amount_remaining"),
        total=invoice.integer("total"),
        subtotal=invoice.integer("subtotal"),
        tax=sum(tax.integer("amount") for tax in invoice.objects("total_taxes")),
        collection_method=invoice.text("collection_method", width=COLLECTION_METHOD_WIDTH),
        currency=invoice.text("currency", width=CURRENCY_WIDTH) or "",
        # Invoice periods are Unix seconds already in our half-open convention: period_end is the
        # first second after the period (only line item periods are inclusive, STRIPE.md §3.2).
        period_start=invoice.time("period_start"),
        period_end=invoice.time("period_end"),
        hosted_invoice_url=invoice.text("hosted_invoice_url"),
        invoice_pdf=invoice.text("invoice_pdf"),
        attempt_count=invoice.integer("attempt_count", bits=COUNT_BITS),
        next_payment_attempt=invoice.time("next_payment_attempt"),
        due_date=invoice.time("due_date"),
        finalized_at=transitions.time("finalized_at"),
        paid_at=transitions.time("paid_at"),
        created=invoice.time("created") or event.created,
        last_event_id=event.id,
        last_event_type=event.type,
        last_event_created=event.created,
    )


def finalization_error(event: StripeEvent) -> str:
    """Why Stripe could not finalize the invoice (`last_finalization_error.message`)."""
    error = _Fields(event.object, "data.object").object("last_finalization_error")
    return error.text("message") or "no reason given"


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
    cancellation_reason: str | None = None  # cancellation_details.reason: payment_failed, cancellation_requested, …


def subscription_status(event: StripeEvent) -> SubscriptionStatus:
    """Status and period of a subscription event. Since basil the period lives on the items."""
    subscription = _Fields(event.object, "data.object")
    if subscription.raw.get("object") != "subscription":
        raise EventPayloadError(f"{event.type} {event.id} does not carry a subscription")
    items = subscription.object("items").objects("data")
    # With flexible billing the items may differ; the plan's own item is the licensed one, and the
    # earliest-ending period is the one the next invoice closes.
    starts = [start for item in items if (start := item.time("current_period_start")) is not None]
    ends = [end for item in items if (end := item.time("current_period_end")) is not None]
    previous = _Fields(event.previous_attributes, "data.previous_attributes")
    return SubscriptionStatus(
        subscription_id=subscription.required_text("id", width=ID_WIDTH),
        customer_id=subscription.reference("customer") or "",
        status=subscription.required_text("status", width=SUBSCRIPTION_STATUS_WIDTH),
        previous_status=previous.text("status", width=SUBSCRIPTION_STATUS_WIDTH),
        cancel_at_period_end=subscription.flag("cancel_at_period_end"),
        canceled_at=subscription.time("canceled_at"),
        ended_at=subscription.time("ended_at"),
        current_period_start=max(starts) if starts else None,
        current_period_end=min(ends) if ends else None,
        event_id=event.id,
        event_created=event.created,
        cancellation_reason=subscription.object("cancellation_details").text("reason", width=SUBSCRIPTION_STATUS_WIDTH),
    )


# --- ops alerts ------------------------------------------------------------------------------------


class OpsAlertKind(StrEnum):
    PAYMENT_FAILED = "payment_failed"
    FINALIZATION_FAILED = "finalization_failed"
    SUBSCRIPTION_PAST_DUE = "subscription_past_due"
    SUBSCRIPTION_UNPAID = "subscription_unpaid"
    SUBSCRIPTION_RECOVERED = "subscription_recovered"
    SUBSCRIPTION_CANCELED = "subscription_canceled"
    RENEWAL_NOT_ANNOTATED = "renewal_not_annotated"
    EVENTS_RETENTION_GAP = "events_retention_gap"
    EVENT_UNREADABLE = "event_unreadable"
    INVOICE_OVERDUE = "invoice_overdue"


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
        retry = (
            f"; Stripe retries on {row.next_payment_attempt:%Y-%m-%d %H:%M} UTC" if row.next_payment_attempt
            else "; no further attempt is scheduled (Stripe's retries are over)"
        )
        amount = format_money(row.amount_due, row.currency, iso_code=True) if row.currency else str(row.amount_due)
        return [OpsAlert(
            OpsAlertKind.PAYMENT_FAILED, event.id,
            subject=f"Payment failed: invoice {row.number or row.invoice_id} of {row.customer_id}",
            detail=f"Invoice {row.invoice_id} ({amount}) could not be charged, attempt {row.attempt_count}{retry}.",
            **refs,
        )]
    if event.type == "invoice.finalization_failed":
        error = finalization_error(event)
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


@dataclass(frozen=True)
class OverdueInvoice:
    """An open invoice whose due date has passed (one the customer pays by invoice, e.g. Net 30)."""

    invoice_id: str
    customer_id: str
    subscription_id: str | None
    number: str | None
    amount_remaining: int
    currency: str
    due_date: datetime


def overdue_alert(invoice: OverdueInvoice) -> OpsAlert:
    """The one alert when an invoice becomes overdue. No Stripe event raises it (the pipeline sees the
    due date pass), so its key is the invoice: `overdue-<invoice id>`, never raised twice."""
    amount = format_money(invoice.amount_remaining, invoice.currency, iso_code=True)
    return OpsAlert(
        OpsAlertKind.INVOICE_OVERDUE, f"overdue-{invoice.invoice_id}",
        subject=f"Invoice overdue: {invoice.number or invoice.invoice_id} of {invoice.customer_id}",
        detail=f"Invoice {invoice.invoice_id} ({amount} unpaid) was due on {_day(invoice.due_date)} and is still open.",
        customer_id=invoice.customer_id, subscription_id=invoice.subscription_id, invoice_id=invoice.invoice_id,
    )


def days_overdue(due_date: datetime, now: datetime) -> int:
    """Whole days since the due date (0 on the day it passed)."""
    return max(0, (now - due_date) // timedelta(days=1))


def _day(moment: datetime | None) -> str:
    return f"{moment:%Y-%m-%d}" if moment else "?"


def subscription_alerts(event: StripeEvent, change: SubscriptionStatus, *, stored_status: str | None) -> list[OpsAlert]:
    """Alerts of a subscription's way through a failed payment: it turns past_due or unpaid, it recovers
    (back to active once a retry or a new card paid), or Stripe cancels it for non-payment.

    A change is read from the event itself when it says so (`previous_attributes.status` on an
    update); otherwise from the status we had stored, so that a subscription already past due does
    not alert again on every later update.
    """
    if event.type == "customer.subscription.updated":
        if "status" not in event.previous_attributes:
            return []  # this update did not touch the status
        before = change.previous_status
    else:
        before = stored_status
    if before == change.status:
        return []
    refs = dict(customer_id=change.customer_id, subscription_id=change.subscription_id)
    who = f"{change.subscription_id} of {change.customer_id}"
    if change.status in DELINQUENT_SUBSCRIPTION_STATUSES:
        kind = OpsAlertKind.SUBSCRIPTION_PAST_DUE if change.status == "past_due" else OpsAlertKind.SUBSCRIPTION_UNPAID
        return [OpsAlert(
            kind, event.id,
            subject=f"Subscription {change.status.replace('_', ' ')}: {who}",
            detail=(f"Subscription {who} went from {before or 'unknown'} to {change.status}: "
                    "the renewal payment did not go through."),
            **refs,
        )]
    if change.status in SERVING_SUBSCRIPTION_STATUSES and before in DELINQUENT_SUBSCRIPTION_STATUSES:
        return [OpsAlert(
            OpsAlertKind.SUBSCRIPTION_RECOVERED, event.id,
            subject=f"Subscription recovered: {who}",
            detail=f"Subscription {who} is {change.status} again (it was {before}): the overdue invoice is paid.",
            **refs,
        )]
    if change.status == "canceled" and (
        change.cancellation_reason == PAYMENT_FAILED_CANCELLATION or before in DELINQUENT_SUBSCRIPTION_STATUSES
    ):
        return [OpsAlert(
            OpsAlertKind.SUBSCRIPTION_CANCELED, event.id,
            subject=f"Subscription canceled for non-payment: {who}",
            detail=(f"Subscription {who} was canceled (it was {before or 'unknown'}; Stripe's reason: "
                    f"{change.cancellation_reason or 'not given'}): the customer is no longer served."),
            **refs,
        )]
    return []


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


def unreadable_event_alert(*, event_reference: str, reason: str) -> OpsAlert:
    """An event Stripe listed that cannot be read: the sensor skipped it, so what it says is not applied."""
    return OpsAlert(
        OpsAlertKind.EVENT_UNREADABLE,
        event_id=event_reference,
        subject=f"Stripe event {event_reference} could not be read and was skipped",
        detail=(f"Stripe listed event {event_reference}, but it cannot be applied: {reason}. What it says about "
                "its invoice or subscription is not in the warehouse until the next event about that object — "
                "look the event up in the Stripe dashboard; the Stripe sync refreshes subscriptions."),
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
    The cursor only ever names events already applied or skipped as unreadable (or, while scanning,
    events merely listed).
    """

    last_event_id: str | None = None
    last_created: int | None = None  # Unix seconds of last_event_id
    scanning: bool = True
    scan_after: str | None = None
    scan_floor: int | None = None

    def applied(self, event_id: str, created: int | None) -> "EventsCursor":
        """Follow on from an event just applied (or skipped as unreadable)."""
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


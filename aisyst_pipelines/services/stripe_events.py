"""Stripe events into the warehouse (DESIGN.md §2.6): what the events sensor and the webhook receiver do.

Both paths hand each event to the same handler, `stripe_events_store.apply_events`, which applies it
exactly once (stripe_invoices, the subscriptions' status and period, ops alerts queued in the same
transaction). This module holds the rest of the work:
- `poll_events`: one bounded pass over the Events API from a cursor, oldest event first; an event
  that cannot be read is skipped with an ops alert;
- `apply_webhook_event`: one event pushed by Stripe;
- `deliver_event_alerts`: send the queued ops alerts through the notifier;
- `apply_new_events`: what one tick of the sensor does (a pass within its budget, the overdue watch —
  open invoices past their due date: `overdue_at`, `days_overdue`, one ops alert each — then the alerts).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from aisyst_pipelines.billing.stripe_events import (
    WATCHED_EVENT_TYPES,
    EventPayloadError,
    EventsCursor,
    OpsAlertKind,
    StripeEvent,
    event_reference,
    retention_gap_alert,
    unreadable_event_alert,
)
from aisyst_pipelines.mail import DeliveryError, Notifier
from aisyst_pipelines.templates import render
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.stripe_events_store import (
    EventOutcome,
    QueuedAlert,
    SubscriptionRowBuilder,
    apply_event,
    apply_events,
    claim_event_alerts,
    mark_event_alerts_failed,
    mark_event_alerts_sent,
    queue_event_alert,
    watch_overdue_invoices,
)
from resources.stripe.client import PAGE_SIZE, StripeRateLimited
from resources.stripe.events import EventCursorGone, EventGateway

# While looking for the oldest event (first run, or after a retention gap) the list is walked down at
# most this many pages per pass (≈ 12 s at Stripe's test-mode 25 requests/s); the tick's time budget
# applies as well. The walk resumes from the cursor on the next tick.
MAX_SCAN_PAGES_PER_TICK = 300

# A tick stops between two pages before a page that would end after TICK_TIME_BUDGET_SECONDS (judged
# by its slowest page so far), or after MAX_EVENTS_PER_TICK events: one page (100 events, one
# transaction) takes ~0.05 s on SQLite and ~0.2 s on PostgreSQL here (docs/performance.md). The time
# budget is what keeps a tick well under Dagster's 60 s and under the 30 s we promise ops: at 20 s it
# leaves 10 s for a page that stalls (a 100,000-draft burst had one tick of 37.1 s with a 25 s budget,
# every other tick of that burst ending by 25.5 s). The event cap is set above what a tick can apply
# in it: a tick that runs out of time is followed at once by the next (the sensor's 5 s interval).
MAX_EVENTS_PER_TICK = 20_000
TICK_TIME_BUDGET_SECONDS = 20.0


@dataclass(frozen=True)
class UnreadableEvent:
    """An event Stripe listed that could not be read (skipped, with an ops alert)."""

    reference: str  # its id, or a picture of whatever stood in its place
    reason: str


@dataclass
class PollResult:
    """One pass over the Events API: what was applied and where the cursor now stands."""

    cursor: EventsCursor
    outcomes: list[EventOutcome] = field(default_factory=list)
    pages: int = 0
    more_waiting: bool = False  # stopped at its event, page or time budget: the next tick continues
    rate_limited: bool = False  # stopped because Stripe answered 429 through the client's retries
    retention_gap: bool = False
    unreadable: list[UnreadableEvent] = field(default_factory=list)  # skipped, ops alerted

    @property
    def applied(self) -> list[EventOutcome]:
        return [o for o in self.outcomes if o.outcome == "applied"]

    def counts(self) -> dict[str, int]:
        return dict(Counter(o.outcome for o in self.outcomes))

    def by_type(self) -> dict[str, int]:
        return dict(Counter(o.event_type for o in self.outcomes if o.is_new))


def poll_events(
    events: EventGateway,
    warehouse: Warehouse,
    cursor: EventsCursor,
    *,
    max_events: int,
    now: datetime,
    mirror_row: SubscriptionRowBuilder | None = None,
    page_size: int = PAGE_SIZE,
    time_budget_seconds: float | None = None,
    max_scan_pages: int = MAX_SCAN_PAGES_PER_TICK,
) -> PollResult:
    """Apply, oldest first, at most `max_events` events newer than the cursor — stopping between pages
    once `time_budget_seconds` have passed — and return the new cursor.

    Never skips in silence: the cursor only moves over events this pass applied (or found already
    applied), and over events it cannot read, each reported (`unreadable`, an ops alert).
    Never double-applies: `apply_events` records each event in the ledger in the transaction that
    applies it (one transaction per page), so a crash between applying and saving the cursor only
    means that the next pass lists those events again and finds them in the ledger.
    """
    result = PollResult(cursor=cursor)
    remaining = max_events
    scan_pages = 0
    deadline = None if time_budget_seconds is None else time.monotonic() + time_budget_seconds
    slowest_page = page_started = 0.0  # page_started is set before each page, read only after one
    while remaining > 0:
        now_monotonic = time.monotonic()
        if result.pages:
            slowest_page = max(slowest_page, now_monotonic - page_started)
        # A page is started only if a page as slow as the slowest so far still ends within the budget:
        # on a loaded machine (a 100,000-draft burst) a page can take seconds, and a tick that started
        # one just before its deadline ended past the 30 s a tick should stay under.
        if deadline is not None and result.pages and now_monotonic + slowest_page > deadline:
            result.more_waiting = True  # out of time: the next tick continues from the cursor
            break
        page_started = now_monotonic
        current = result.cursor
        if not current.scanning:
            assert current.last_event_id is not None
            try:
                page = events.list_page(
                    WATCHED_EVENT_TYPES, ending_before=current.last_event_id, limit=min(page_size, remaining)
                )
            except EventCursorGone:
                # The last applied event fell out of Stripe's 30-day retention: events after it
                # may be gone too. Apply everything still listed (from the oldest) and tell ops.
                _report_gap(warehouse, result, now)
                result.cursor = current.rescan(floor=current.last_created)
                continue
            except StripeRateLimited:
                _pause_for_rate_limit(result)
                break
            result.pages += 1
            # `ending_before` answers the events just newer than the cursor, newest first.
            remaining -= _apply_oldest_first(page.events, warehouse, result, now=now, budget=remaining, mirror_row=mirror_row)
            if not page.has_more:
                break
            continue

        # Scanning: walk down to the oldest listed event, a bounded number of pages per pass.
        if scan_pages >= max_scan_pages:
            result.more_waiting = True
            break
        try:
            page = events.list_page(
                WATCHED_EVENT_TYPES, starting_after=current.scan_after, created_gte=current.scan_floor, limit=page_size
            )
        except EventCursorGone:  # the page boundary itself expired meanwhile: walk again from the top
            result.cursor = current.rescan(floor=current.scan_floor)
            scan_pages += 1
            continue
        except StripeRateLimited:
            _pause_for_rate_limit(result)
            break
        result.pages += 1
        scan_pages += 1
        if page.has_more and page.events:
            # Continue below the second-oldest event of this page, so that the next page starts with
            # this page's oldest one: the bottom page then holds at least that event.
            result.cursor = current.scanned_down_to(page.events[-2 if len(page.events) >= 2 else -1]["id"])
            continue
        if not page.events and current.scan_after is not None:
            # The events below the boundary expired meanwhile: walk again from the top.
            result.cursor = current.rescan(floor=current.scan_floor)
            continue
        # The bottom of the list: apply from its oldest event upwards, then follow from there.
        remaining -= _apply_oldest_first(page.events, warehouse, result, now=now, budget=remaining, mirror_row=mirror_row)
        if result.cursor.scanning:  # nothing listed at all (a new account): try again next tick
            break
    else:
        result.more_waiting = True
    return result


def _pause_for_rate_limit(result: PollResult) -> None:
    """End the pass where it is, keeping what it applied. A 429 that outlasts the client's retries means
    the account's requests are spent elsewhere (a month-start burst of invoice writes shares them), not
    that Stripe is down: the next tick goes on from the cursor, and failing this one would show ops a
    red tick (three in a row e-mail them) for a burst that is going well."""
    result.rate_limited = result.more_waiting = True


def _apply_oldest_first(
    listed: list[dict[str, Any]],
    warehouse: Warehouse,
    result: PollResult,
    *,
    now: datetime,
    budget: int,
    mirror_row: SubscriptionRowBuilder | None,
) -> int:
    """Apply a newest-first page from its oldest end, at most `budget` events, in one transaction;
    the cursor moves to the newest event taken. Returns how many were taken.

    An event that cannot be read (`EventPayloadError`: a null `created`, an invoice event without
    an invoice…) is skipped with an `event_unreadable` ops alert rather than failing the page: it
    would fail again on every tick, and the sensor would never get past it."""
    taken = list(reversed(listed))[:budget]
    if len(taken) < len(listed):
        result.more_waiting = True
    if not taken:
        return 0
    readable: list[StripeEvent] = []
    for payload in taken:
        try:
            readable.append(StripeEvent.from_payload(payload))
        except EventPayloadError as error:
            reference = event_reference(payload)
            queue_event_alert(warehouse, unreadable_event_alert(event_reference=reference, reason=str(error)), now=now)
            result.unreadable.append(UnreadableEvent(reference, str(error)))
    result.outcomes += apply_events(warehouse, readable, source="sensor", now=now, mirror_row=mirror_row)
    # On past the newest event taken, read or not (an item of Stripe's list always has its id: the
    # list's cursors are ids). `last_created`, the floor of a rescan, stays a time read from an event.
    last_created = int(readable[-1].created.timestamp()) if readable else result.cursor.last_created
    result.cursor = result.cursor.applied(taken[-1]["id"], last_created)
    return len(taken)


def _report_gap(warehouse: Warehouse, result: PollResult, now: datetime) -> None:
    cursor = result.cursor
    if cursor.last_event_id is None or result.retention_gap:
        return
    created = datetime.fromtimestamp(cursor.last_created, now.tzinfo) if cursor.last_created is not None else None
    queue_event_alert(
        warehouse, retention_gap_alert(cursor_event_id=cursor.last_event_id, cursor_created=created, now=now), now=now
    )
    result.retention_gap = True


def apply_webhook_event(
    warehouse: Warehouse, event: StripeEvent, *, now: datetime, mirror_row: SubscriptionRowBuilder | None = None
) -> EventOutcome:
    """One event pushed by Stripe (already verified and read): applied once, whichever path is first."""
    return apply_event(warehouse, event, source="webhook", now=now, mirror_row=mirror_row)


# --- ops alerts ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlertDelivery:
    sent: int  # alerts delivered (a digest counts each alert it carries)
    failed: int
    last_error: str | None = None


# Up to this many queued alerts go out one e-mail each; more make one digest e-mail, so that a month
# start with thousands of unannotated renewals is one message, not thousands.
SINGLE_ALERT_EMAILS_MAX = 3
DIGEST_MAX_ALERTS = 500

_KIND_LABELS = {
    OpsAlertKind.PAYMENT_FAILED: "payment failed",
    OpsAlertKind.FINALIZATION_FAILED: "invoice finalization failed",
    OpsAlertKind.SUBSCRIPTION_PAST_DUE: "subscription past due",
    OpsAlertKind.SUBSCRIPTION_UNPAID: "subscription unpaid",
    OpsAlertKind.SUBSCRIPTION_RECOVERED: "subscription recovered",
    OpsAlertKind.SUBSCRIPTION_CANCELED: "subscription canceled for non-payment",
    OpsAlertKind.RENEWAL_NOT_ANNOTATED: "renewal finalized without usage lines",
    OpsAlertKind.EVENTS_RETENTION_GAP: "events lost to Stripe's retention",
    OpsAlertKind.EVENT_UNREADABLE: "unreadable event skipped",
}


def deliver_event_alerts(warehouse: Warehouse, notifier: Notifier, *, now: datetime) -> AlertDelivery:
    """Send the queued ops alerts (oldest first): a few as one e-mail each, many as one digest.
    What fails stays queued and is retried next time; nothing is marked sent unless delivered."""
    pending = claim_event_alerts(warehouse, limit=DIGEST_MAX_ALERTS, now=now)
    messages = [[alert] for alert in pending] if len(pending) <= SINGLE_ALERT_EMAILS_MAX else [pending]
    sent = 0
    for alerts in messages:
        kinds = Counter(_KIND_LABELS.get(OpsAlertKind(a.kind), a.kind) for a in alerts)
        subject = alerts[0].subject if len(alerts) == 1 else (
            f"{len(alerts)} Stripe alerts: " + ", ".join(f"{n} {label}" for label, n in kinds.most_common()))
        text = render(
            "alerts/stripe_events_ops.txt.j2",
            alerts=[_with_label(a) for a in alerts],
            kinds=kinds.most_common(),
        )
        try:
            notifier.send_ops_alert(f"[Aisyst ops] {subject}", text)
        except DeliveryError as error:
            # the channel is down: everything not yet sent waits for the next attempt
            mark_event_alerts_failed(warehouse, [a for batch in messages[messages.index(alerts):] for a in batch], str(error))
            return AlertDelivery(sent, len(pending) - sent, str(error))
        mark_event_alerts_sent(warehouse, alerts, now=now)
        sent += len(alerts)
    return AlertDelivery(sent, 0)


def _with_label(alert: QueuedAlert) -> dict[str, Any]:
    return asdict(alert) | {"kind_label": _KIND_LABELS.get(OpsAlertKind(alert.kind), alert.kind)}


# --- one tick of the sensor --------------------------------------------------------------------------


@dataclass(frozen=True)
class EventsTick:
    poll: PollResult
    delivery: AlertDelivery
    newly_overdue: list[str] = field(default_factory=list)  # invoice ids whose due date passed since the last tick

    @property
    def new_events(self) -> list[EventOutcome]:
        """The events this tick applied, found stale or ignored (not the ones found already applied)."""
        return [o for o in self.poll.outcomes if o.is_new]

    def summary(self) -> str:
        poll = self.poll
        counted = sorted(poll.counts().items()) + ([("unreadable", len(poll.unreadable))] if poll.unreadable else [])
        counts = ", ".join(f"{n} {outcome}" for outcome, n in counted) or "no events"
        more = "; more waiting" if poll.more_waiting else ""
        if poll.rate_limited:
            more = "; paused by Stripe's rate limit (429 through every retry), the next tick continues"
        return f"{counts} ({poll.pages} page(s)){more}; ops alerts sent {self.delivery.sent}, failed {self.delivery.failed}"


def apply_new_events(
    events: EventGateway,
    warehouse: Warehouse,
    notifier: Notifier,
    cursor: EventsCursor,
    *,
    now: datetime,
    mirror_row: SubscriptionRowBuilder | None = None,
) -> EventsTick:
    """One tick of stripe_events_sensor: a pass within the tick's budget, the overdue watch over the
    mirrored invoices, then the ops alerts queued so far (by this pass, the watch, the webhook, or
    earlier ticks whose delivery failed)."""
    poll = poll_events(
        events, warehouse, cursor, max_events=MAX_EVENTS_PER_TICK, now=now, mirror_row=mirror_row,
        time_budget_seconds=TICK_TIME_BUDGET_SECONDS,
    )
    overdue = [invoice.invoice_id for invoice in watch_overdue_invoices(warehouse, now=now)]
    return EventsTick(poll, deliver_event_alerts(warehouse, notifier, now=now), overdue)

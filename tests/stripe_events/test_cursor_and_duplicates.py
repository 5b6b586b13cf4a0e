"""The sensor's cursor against the emulator, on SQLite and PostgreSQL: bounded ticks that resume, a
restart after a crash, a cursor Stripe no longer lists, and events delivered twice (sensor + webhook)."""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

import pytest
import stripe
from sqlalchemy import func, select
from starlette.testclient import TestClient

from aisyst_pipelines.services import stripe_events as stripe_events_service
from aisyst_pipelines.services.stripe_events import poll_events
from aisyst_pipelines.billing.stripe_events import WATCHED_EVENT_TYPES, EventsCursor, OpsAlertKind
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.schema import stripe_event_alerts, stripe_events_applied, stripe_invoices
from aisyst_pipelines.webhook import WEBHOOK_PATH, create_webhook_app
from jobs.stripe_events import readable_cursor
from resources.stripe import StripeResource

from stripe_world import RateLimitedAfterPages, StripeWorld

from .events_helpers import HOUR, events_world, ops_mail_subjects, sensor_tick, watched_event_ids

NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)


@pytest.fixture
def world(stripe_emulator, stripe_resource) -> StripeWorld:
    """Three customers, one of whose cards starts failing; two renewals: ~40 watched events."""
    world = events_world(stripe_emulator, stripe_resource)
    customers = [world.customer(code) for code in ("ACME", "BETA", "GAMMA")]
    subscriptions = [world.subscribe(customer, tier=n + 1).id for n, customer in enumerate(customers)]
    world.switch_card(customers[1], "pm_card_chargeCustomerFail")
    world.advance(world.period_end(subscriptions[0]) + 2 * HOUR)
    world.advance(world.period_end(subscriptions[0]) + 2 * HOUR)
    return world


def ledger(warehouse: Warehouse) -> list[tuple[str, str, str]]:
    c = stripe_events_applied.c
    with warehouse.connect() as connection:
        return [tuple(row) for row in connection.execute(select(c.event_id, c.outcome, c.source))]


def invoice_states(warehouse: Warehouse) -> dict[str, tuple[str, int]]:
    c = stripe_invoices.c
    with warehouse.connect() as connection:
        return {row.invoice_id: (row.status, row.amount_paid) for row in connection.execute(select(c.invoice_id, c.status, c.amount_paid))}


def stripe_invoice_states(world: StripeWorld) -> dict[str, tuple[str, int]]:
    listed = world.client.v1.invoices.list({"limit": 100})
    return {invoice.id: (invoice.status, invoice.amount_paid) for invoice in listed.data}


def alert_count(warehouse: Warehouse) -> int:
    with warehouse.connect() as connection:
        return connection.scalar(select(func.count()).select_from(stripe_event_alerts))


def test_ticks_are_bounded_and_resume_from_the_cursor(world: StripeWorld, warehouse: Warehouse) -> None:
    everything = watched_event_ids(world.stripe)
    assert len(everything) > 30
    cursor, rounds, applied_per_round = EventsCursor(), 0, []
    while True:
        result = poll_events(world.stripe.events, warehouse, cursor, max_events=7, now=NOW, page_size=4)
        rounds += 1
        applied_per_round.append(len(result.applied))
        assert len(result.outcomes) <= 7
        if result.cursor.last_event_id:
            assert result.cursor.last_event_id in everything
        cursor = result.cursor
        if not result.outcomes:
            break
    assert max(applied_per_round) == 7 and rounds >= len(everything) // 7
    ids = [event_id for event_id, _, _ in ledger(warehouse)]
    assert sorted(ids) == sorted(everything) and len(ids) == len(set(ids))
    assert cursor.last_event_id == everything[-1]
    assert invoice_states(warehouse) == stripe_invoice_states(world)


def test_a_tick_starts_no_page_that_would_end_past_its_time_budget(
    world: StripeWorld, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The tick's clock is made to pass 0.3 s per page (the pages themselves are real): with a 1.0 s
    budget it reads three pages and stops, rather than start a fourth that would end at 1.2 s."""
    clock = [0.0]
    monkeypatch.setattr(stripe_events_service, "time", SimpleNamespace(monotonic=lambda: clock[0]))
    events = world.stripe.events
    real_list_page = events.list_page

    def slow_list_page(*args, **kwargs):
        page = real_list_page(*args, **kwargs)
        clock[0] += 0.3
        return page

    monkeypatch.setattr(events, "list_page", slow_list_page)
    first = watched_event_ids(world.stripe)[0]
    cursor = EventsCursor(last_event_id=first, last_created=0, scanning=False)

    result = poll_events(events, warehouse, cursor, max_events=500, now=NOW, page_size=2, time_budget_seconds=1.0)

    assert result.pages == 3 and clock[0] <= 1.0 and result.more_waiting
    assert len(result.applied) == 6


def test_the_first_run_walks_down_to_the_oldest_event_over_several_ticks(world: StripeWorld, warehouse: Warehouse) -> None:
    everything = watched_event_ids(world.stripe)
    cursor, walking_ticks = EventsCursor(), 0
    while True:
        result = poll_events(world.stripe.events, warehouse, cursor, max_events=500, now=NOW, page_size=3, max_scan_pages=4)
        if result.cursor.scanning:  # still walking down: nothing applied yet, the walk's place is kept
            assert result.outcomes == [] and result.more_waiting
            assert result.cursor.scan_after != cursor.scan_after
            walking_ticks += 1
        cursor = result.cursor
        if not result.cursor.scanning:
            break
    assert walking_ticks >= 2
    assert [o.event_id for o in result.outcomes] == everything  # from the oldest, in Stripe's order
    assert cursor.last_event_id == everything[-1]


def test_restart_after_a_crash_applies_each_event_once(world: StripeWorld, warehouse: Warehouse, tmp_path: Path) -> None:
    outbox = tmp_path / "outbox"
    crashed = sensor_tick(warehouse, world.stripe, outbox, None)  # applied, then died before its cursor was stored
    applied_before = len(ledger(warehouse))
    assert applied_before == len(watched_event_ids(world.stripe)) and crashed.cursor
    mails_before = ops_mail_subjects(outbox)

    restarted = sensor_tick(warehouse, world.stripe, outbox, None)  # the daemon starts again from no cursor
    assert restarted.cursor == crashed.cursor
    assert restarted.skip_reason is not None  # every event listed again was found in the ledger
    assert len(ledger(warehouse)) == applied_before
    assert ops_mail_subjects(outbox) == mails_before  # no alert twice
    assert invoice_states(warehouse) == stripe_invoice_states(world)


def test_ticks_dying_midway_never_skip_nor_double_apply(stripe_emulator, world: StripeWorld, warehouse: Warehouse) -> None:
    everything = watched_event_ids(world.stripe)
    flaky = StripeResource(api_key=stripe_emulator.api_key, api_base=stripe_emulator.url, max_network_retries=1,
                           requests_per_second=200, burst=20)
    stripe_emulator.set_faults(error_rate=0.35)
    cursor, died_after_applying, attempts = EventsCursor(), 0, 0
    while attempts < 400:
        attempts += 1
        before = len(ledger(warehouse))
        try:
            result = poll_events(flaky.events, warehouse, cursor, max_events=12, now=NOW, page_size=3)
        except stripe.APIError:
            # Like a sensor tick that raises: Dagster keeps the previous cursor.
            died_after_applying += len(ledger(warehouse)) > before
            continue
        cursor = result.cursor
        if not result.outcomes and not cursor.scanning:
            break
    stripe_emulator.set_faults(error_rate=0.0)
    assert died_after_applying > 0, "no tick died after applying events: the test proved nothing"
    rows = ledger(warehouse)
    assert sorted(event_id for event_id, _, _ in rows) == sorted(everything)
    assert cursor.last_event_id == everything[-1]
    assert invoice_states(warehouse) == stripe_invoice_states(world)


def test_a_cursor_stripe_no_longer_lists_applies_what_exists_and_warns(world: StripeWorld, warehouse: Warehouse) -> None:
    lost = EventsCursor(last_event_id="evt_expired_long_ago", last_created=1_700_000_000, scanning=False)
    result = poll_events(world.stripe.events, warehouse, lost, max_events=500, now=NOW)
    assert result.retention_gap
    assert sorted(e for e, _, _ in ledger(warehouse)) == sorted(watched_event_ids(world.stripe))
    with warehouse.connect() as connection:
        kinds = Counter(connection.scalars(select(stripe_event_alerts.c.kind)))
    assert kinds[OpsAlertKind.EVENTS_RETENTION_GAP.value] == 1
    assert result.cursor.last_event_id == watched_event_ids(world.stripe)[-1] and not result.cursor.scanning


SECRET = "whsec_duplicate_delivery_test"


def post_signed(client: TestClient, payload: dict) -> str:
    body = json.dumps(payload, default=str)
    header = stripe.WebhookSignature.generate_signature_header(body, SECRET, timestamp=int(time.time()))
    response = client.post(WEBHOOK_PATH, content=body, headers={"Stripe-Signature": header})
    assert response.status_code == 200, response.text
    return response.json()["outcome"]


def stripe_events_oldest_first(world: StripeWorld) -> list[dict]:
    page = world.stripe.events.list_page(WATCHED_EVENT_TYPES, limit=100)
    assert not page.has_more
    return list(reversed(page.events))


def test_webhook_then_sensor_applies_once(world: StripeWorld, warehouse: Warehouse, tmp_path: Path) -> None:
    events = stripe_events_oldest_first(world)
    with TestClient(create_webhook_app(warehouse, SECRET)) as client:
        # Stripe delivers webhooks in no guaranteed order: newest first here, each twice.
        outcomes = [post_signed(client, payload) for payload in reversed(events) for _ in range(2)]
    assert Counter(outcomes)["duplicate"] == len(events)
    alerts_after_webhook = alert_count(warehouse)
    assert alerts_after_webhook >= 2  # payment failed, past due (at least)

    polled = sensor_tick(warehouse, world.stripe, tmp_path / "outbox", None)
    assert polled.skip_reason is None  # the queued alerts went out in this tick
    rows = ledger(warehouse)
    assert len(rows) == len(events) and {source for _, _, source in rows} == {"webhook"}
    assert alert_count(warehouse) == alerts_after_webhook
    # Delivered newest first, the invoices still end in Stripe's current state (older events: stale).
    assert invoice_states(warehouse) == stripe_invoice_states(world)
    assert Counter(outcome for _, outcome, _ in rows)["stale"] > 0


def test_sensor_then_webhook_applies_once(world: StripeWorld, warehouse: Warehouse, tmp_path: Path) -> None:
    sensor_tick(warehouse, world.stripe, tmp_path / "outbox", None)
    with TestClient(create_webhook_app(warehouse, SECRET)) as client:
        outcomes = {post_signed(client, payload) for payload in stripe_events_oldest_first(world)}
    assert outcomes == {"duplicate"}
    assert {source for _, _, source in ledger(warehouse)} == {"sensor"}


def spoil_event(stripe_emulator, event_id: str, change: Callable[[dict], None]) -> None:
    """Make an event the emulator lists odd, as a bug or an API change on Stripe's side might: `change`
    gets the event as listed and changes it in place."""
    store = stripe_emulator.server.store
    with store.lock:
        stored = store.tables["event"][event_id]
        event = store.render(stored)
        change(event)
        stored["created"] = event["created"]
        stored["_data"] = json.dumps(event["data"])


def test_events_that_cannot_be_read_are_skipped_with_an_alert_not_retried_forever(
    stripe_emulator, world: StripeWorld, warehouse: Warehouse, tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    listed = stripe_events_oldest_first(world)
    invoice_event = next(e["id"] for e in listed[5:] if e["type"].startswith("invoice."))
    subscription_event = next(e["id"] for e in listed[5:] if e["type"].startswith("customer.subscription."))
    newest = listed[-1]["id"]
    spoil_event(stripe_emulator, invoice_event, lambda e: e["data"].update(object=dict(e["data"]["object"], amount_due="lots")))
    spoil_event(stripe_emulator, subscription_event, lambda e: e["data"].update(object="sub_gone"))
    spoil_event(stripe_emulator, newest, lambda e: e.update(created=10**20))  # still listed newest
    spoiled = {invoice_event, subscription_event, newest}
    outbox = tmp_path / "outbox"

    first = sensor_tick(warehouse, world.stripe, outbox, None)
    tick_log = capfd.readouterr().err
    assert sorted(e for e, _, _ in ledger(warehouse)) == sorted(e["id"] for e in listed if e["id"] not in spoiled)
    assert EventsCursor.from_json(first.cursor).last_event_id == newest  # past them, not stuck before them
    [materialization] = first.asset_events
    assert materialization.metadata["events_unreadable"].value == 3
    c = stripe_event_alerts.c
    with warehouse.connect() as connection:
        skipped = {row.event_id: row for row in connection.execute(
            select(c.event_id, c.detail, c.status).where(c.kind == OpsAlertKind.EVENT_UNREADABLE.value))}
    assert set(skipped) == spoiled and {row.status for row in skipped.values()} == {"sent"}  # mailed to ops
    assert "data.object.amount_due" in skipped[invoice_event].detail and "event.created" in skipped[newest].detail
    assert all(f"Stripe event {event_id} cannot be read, skipped" in tick_log for event_id in spoiled)
    mails, alerts = ops_mail_subjects(outbox), alert_count(warehouse)

    again = sensor_tick(warehouse, world.stripe, outbox, first.cursor)
    assert again.skip_reason is not None and again.cursor == first.cursor
    crashed_before_its_cursor = sensor_tick(warehouse, world.stripe, outbox, None)  # lists them all again
    assert crashed_before_its_cursor.cursor == first.cursor
    assert (ops_mail_subjects(outbox), alert_count(warehouse)) == (mails, alerts)  # no alert twice


def test_a_rate_limited_pass_keeps_what_it_applied_and_the_next_tick_goes_on(
    stripe_emulator, stripe_resource: StripeResource, world: StripeWorld, warehouse: Warehouse, tmp_path: Path
) -> None:
    everything = watched_event_ids(stripe_resource)
    # Following from the oldest event: the first page applies, the second is answered 429 through every retry.
    start = poll_events(stripe_resource.events, warehouse, EventsCursor(), max_events=1, now=NOW)
    limited = RateLimitedAfterPages(stripe_emulator, stripe_resource.events, pages=1)
    paused = poll_events(limited, warehouse, start.cursor, max_events=500, now=NOW, page_size=5)  # type: ignore[arg-type]
    assert paused.rate_limited and paused.more_waiting and paused.pages == 1
    assert paused.cursor.last_event_id == everything[5] and len(ledger(warehouse)) == 6

    # The daemon's tick while Stripe still answers 429: a reason, not an error; the cursor stays.
    outbox = tmp_path / "outbox"
    cursor = readable_cursor(paused.cursor)
    still = sensor_tick(warehouse, stripe_resource, outbox, cursor)
    assert still.skip_reason is not None and "rate limit" in (still.skip_reason.skip_message or "") and still.cursor == cursor

    stripe_emulator.set_faults(rate_limit_error_rate=0.0)
    sensor_tick(warehouse, stripe_resource, outbox, cursor)
    assert sorted(event_id for event_id, _, _ in ledger(warehouse)) == sorted(everything)

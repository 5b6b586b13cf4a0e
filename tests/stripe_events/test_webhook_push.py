"""The push path end to end, on SQLite and PostgreSQL: the emulator's webhook endpoint delivers signed
events to `aisyst webhook` (a real server process), which applies them to the warehouse — what
`stripe listen --forward-to` gives in development. Deliveries sent while the receiver is down come
again with Stripe's retries."""

from __future__ import annotations

import time
from pathlib import Path

from sqlalchemy import select

from aisyst_pipelines.billing.stripe_events import WATCHED_EVENT_TYPES
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.schema import (
    stripe_event_alerts,
    stripe_events_applied,
    stripe_invoices,
    stripe_subscriptions,
)
from aisyst_pipelines.webhook import WEBHOOK_PATH

from .events_helpers import HOUR, events_world, watched_event_ids
from .test_webhook_command import free_port, webhook_server


def applied_ids(warehouse: Warehouse) -> dict[str, str]:
    with warehouse.connect() as connection:
        rows = connection.execute(select(stripe_events_applied.c.event_id, stripe_events_applied.c.source)).all()
    return dict(rows)


def wait_for(condition, seconds: float = 90) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_emulator_pushes_events_through_aisyst_webhook_into_the_warehouse(
    stripe_emulator, stripe_resource, warehouse: Warehouse, tmp_path: Path
) -> None:
    stripe_emulator.server.webhooks.retry_scale = 0.003  # retries after 5.4 s, 10.8 s, 21.6 s
    world = events_world(stripe_emulator, stripe_resource)
    port = free_port()
    endpoint = world.client.v1.webhook_endpoints.create(
        {"url": f"http://127.0.0.1:{port}{WEBHOOK_PATH}", "enabled_events": list(WATCHED_EVENT_TYPES)}
    )
    # The receiver is not up yet: these subscriptions' events fail their first delivery.
    good = world.customer("ACME")
    declined = world.customer("BETA")
    sub_good = world.subscribe(good, tier=1).id
    sub_bad = world.subscribe(declined, tier=2).id
    early = set(watched_event_ids(world.stripe))
    wait_for(lambda: len(stripe_emulator.server.webhooks.attempts) >= len(early))

    with webhook_server(warehouse.url, tmp_path / "home", secret=endpoint.secret, port=port, stripe_api_base=stripe_emulator.url):
        wait_for(lambda: set(applied_ids(warehouse)) >= early)  # the retries came through
        world.switch_card(declined, "pm_card_chargeCustomerFail")
        world.advance(world.period_end(sub_good) + 2 * HOUR)  # renewals: drafts, finalized, paid / declined
        watched = set(watched_event_ids(world.stripe))
        wait_for(lambda: set(applied_ids(warehouse)) == watched and stripe_emulator.server.webhooks.idle())

    ledger = applied_ids(warehouse)
    assert set(ledger.values()) == {"webhook"}
    attempts = stripe_emulator.server.webhooks.attempts
    retried = {a.event_id for a in attempts if a.attempt > 1 and a.delivered}
    assert early <= retried  # each early event came again and was taken
    assert all(e.pending_webhooks == 0 for e in world.client.v1.events.list({"limit": 100}).auto_paging_iter() if e.id in watched)

    truth = {
        invoice.id: (invoice.status, invoice.amount_paid)
        for customer in (good, declined)
        for invoice in world.client.v1.invoices.list({"customer": customer}).data
    }
    with warehouse.connect() as connection:
        mirrored = {row.invoice_id: (row.status, row.amount_paid) for row in connection.execute(select(stripe_invoices)).all()}
        statuses = dict(connection.execute(select(stripe_subscriptions.c.subscription_id, stripe_subscriptions.c.status)).all())
        alerts = set(connection.execute(
            select(stripe_event_alerts.c.kind, stripe_event_alerts.c.subscription_id, stripe_event_alerts.c.status)).all())
    assert mirrored == truth
    assert statuses == {sub_good: "active", sub_bad: "past_due"}
    # the receiver queued them with the events and sent them (outbox) after answering
    assert {("payment_failed", sub_bad, "sent"), ("subscription_past_due", sub_bad, "sent")} <= alerts

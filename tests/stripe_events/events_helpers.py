"""The events tests' helpers around the shared StripeWorld (tests/stripe_world.py): a world whose
clock starts at T0, the events Stripe holds, one sensor tick as the daemon runs it, the ops mails."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
from stripe_world import StripeWorld

from aisyst_pipelines.billing.stripe_events import WATCHED_EVENT_TYPES
from aisyst_pipelines.warehouse import Warehouse
from jobs.stripe_events import stripe_events_sensor
from resources import CatalogResource, WarehouseResource
from resources.notifier import NotifierResource
from resources.stripe import StripeResource

T0 = datetime(2026, 3, 1, tzinfo=timezone.utc)  # the test clock's start
HOUR = timedelta(hours=1)


def events_world(emulator: Any, stripe: StripeResource) -> StripeWorld:
    return StripeWorld.build(emulator, stripe, T0)


def watched_event_ids(stripe: StripeResource) -> list[str]:
    """Every watched event the emulator holds, oldest first (the truth to compare with)."""
    ids: list[str] = []
    after = None
    while True:
        page = stripe.events.list_page(WATCHED_EVENT_TYPES, starting_after=after)
        ids += [event["id"] for event in page.events]
        if not page.has_more:
            return list(reversed(ids))
        after = page.events[-1]["id"]


def notifier_for(outbox: Path) -> NotifierResource:
    return NotifierResource(outbox_dir=str(outbox), sender="Aisyst <billing@aisyst.example>", ops_recipients=["ops@aisyst.example"])


def sensor_tick(
    warehouse: Warehouse, stripe: StripeResource, outbox: Path, cursor: str | None
) -> dg.SensorResult:
    """One evaluation of stripe_events_sensor, as the daemon runs it."""
    context = dg.build_sensor_context(
        cursor=cursor,
        resources={
            "stripe": stripe, "warehouse": WarehouseResource(url=warehouse.url), "notifier": notifier_for(outbox),
            "catalog": CatalogResource(),
        },
    )
    return stripe_events_sensor(context)


def ops_mail_subjects(outbox: Path) -> list[str]:
    import email
    import email.policy

    return [
        str(email.message_from_bytes(path.read_bytes(), policy=email.policy.default)["Subject"]).strip()
        for path in sorted(outbox.glob("*.eml"))
    ]

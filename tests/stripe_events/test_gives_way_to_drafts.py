"""stripe_events_sensor leaves Stripe's rate limit to a burst of renewal drafts awaiting their annotation
(services/stripe_events.py, `gives_way_to_drafts`): a real sensor tick against the emulator through the
SDK, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg

from aisyst_pipelines.billing.invoice_lines import ANNOTATION_VERSION
from aisyst_pipelines.billing.stripe_events import EventsCursor
from aisyst_pipelines.services.stripe_events import MAX_GIVE_WAY, RENEWAL_BURST_DRAFTS, gives_way_to_drafts
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.invoice_annotation_store import (
    AnnotationOutcome,
    AnnotationStatus,
    DraftsAwaiting,
    RenewalInvoice,
    mark_pending,
    queue_invoices,
    record_outcome,
)

from .events_helpers import events_world, sensor_tick

NOW = datetime(2026, 12, 7, 4, 0, tzinfo=timezone.utc)


def _queue_renewals(warehouse: Warehouse, count: int, queued_at: datetime) -> list[str]:
    ids = [f"in_burst_{n:04d}" for n in range(count)]
    period_end = queued_at - timedelta(minutes=1)
    queue_invoices(warehouse, [RenewalInvoice(invoice_id, f"cus_{n}", f"sub_{n}", period_end, period_end - timedelta(days=31), period_end)
                               for n, invoice_id in enumerate(ids)], ANNOTATION_VERSION, queued_at)
    return ids


def _events_requests(stripe_emulator: Any) -> int:
    return sum(1 for entry in stripe_emulator.server.requests() if entry["path"] == "/v1/events")


def test_a_burst_is_500_drafts_queued_or_being_written_for_less_than_30_minutes() -> None:
    assert (RENEWAL_BURST_DRAFTS, MAX_GIVE_WAY) == (500, timedelta(minutes=30))
    assert gives_way_to_drafts(DraftsAwaiting(500, NOW - timedelta(minutes=29, seconds=59)), NOW)
    assert not gives_way_to_drafts(DraftsAwaiting(499, NOW), NOW)  # seconds of writing: no reason to wait
    assert not gives_way_to_drafts(DraftsAwaiting(100_000, NOW - MAX_GIVE_WAY), NOW)  # stuck: read beside it
    assert not gives_way_to_drafts(DraftsAwaiting(0, None), NOW)


def test_the_sensor_reads_no_events_while_a_burst_of_drafts_awaits_and_all_of_them_after(
    stripe_emulator: Any, stripe_resource: Any, warehouse: Warehouse, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    world = events_world(stripe_emulator, stripe_resource)
    subscription = world.subscribe(world.customer("ACME"), tier=1).id
    following = sensor_tick(warehouse, stripe_resource, outbox, None)
    assert not EventsCursor.from_json(following.cursor).scanning

    now = datetime.now(timezone.utc)
    burst = _queue_renewals(warehouse, RENEWAL_BURST_DRAFTS, queued_at=now - timedelta(minutes=1))
    mark_pending(warehouse, burst[:100], "annotation-run", now)  # being written: still awaiting
    world.client.v1.subscriptions.cancel(subscription)  # an event waits meanwhile
    before = _events_requests(stripe_emulator)

    waiting = sensor_tick(warehouse, stripe_resource, outbox, following.cursor)

    assert _events_requests(stripe_emulator) == before
    assert waiting.cursor == following.cursor and not waiting.asset_events
    assert waiting.skip_reason is not None and waiting.skip_reason.skip_message == (
        "no events read: 500 renewal drafts await their annotation, which has Stripe's rate limit first "
        "(events are read again below 500 drafts, or 30 min after the oldest was queued)")

    record_outcome(warehouse, burst[0], AnnotationOutcome(AnnotationStatus.ANNOTATED), "annotation-run", now)
    caught_up = sensor_tick(warehouse, stripe_resource, outbox, waiting.cursor)

    assert _events_requests(stripe_emulator) > before
    [materialization] = caught_up.asset_events
    assert materialization.metadata["events_by_type"].value == {"customer.subscription.deleted": 1}


def test_a_burst_that_has_waited_30_minutes_is_stuck_and_the_sensor_reads_beside_it(
    stripe_emulator: Any, stripe_resource: Any, warehouse: Warehouse, tmp_path: Path
) -> None:
    outbox = tmp_path / "outbox"
    world = events_world(stripe_emulator, stripe_resource)
    subscription = world.subscribe(world.customer("ACME"), tier=1).id
    following = sensor_tick(warehouse, stripe_resource, outbox, None)
    _queue_renewals(warehouse, 2 * RENEWAL_BURST_DRAFTS, queued_at=datetime.now(timezone.utc) - MAX_GIVE_WAY)
    world.client.v1.subscriptions.cancel(subscription)

    stuck = sensor_tick(warehouse, stripe_resource, outbox, following.cursor)

    assert isinstance(stuck, dg.SensorResult) and stuck.skip_reason is None
    assert stuck.asset_events[0].metadata["events_by_type"].value == {"customer.subscription.deleted": 1}

"""Readable sensor cursors: the service's state plus a `readable` view, and stored cursors from before."""

from __future__ import annotations

import json

from aisyst_pipelines.billing.stripe_events import EventsCursor
from aisyst_pipelines.services.ingestion import LandingCursor
from aisyst_pipelines.services.invoice_annotation_planning import ScanCursor
from jobs import ingestion, invoice_annotation, stripe_events
from jobs.cursors import state_of


def test_each_sensor_cursor_says_what_it_means_and_reads_back_as_its_state() -> None:
    landing = LandingCursor(watermark_ns=1_790_000_000_123_456_789, recent={"/landing/a.csv": (10, 5)}, refused={"x": "pipe"})
    scan = ScanCursor(hwm=1_790_000_000, hwm_at=1_790_000_100.5, relisted_at=1_790_000_100.5, scanning=True, scan_after="in_123")
    events = EventsCursor(last_event_id="evt_9", last_created=1_790_000_000, scanning=False)

    shown = json.loads(ingestion.readable_cursor(landing))
    assert next(iter(shown)) == "readable"  # first, so the UI shows it first
    assert shown["readable"] == {"newest_file_change_seen": "2026-09-21T14:13:20+00:00", "files_kept_for_the_overlap": 1,
                                 "entries_refused": 1, "ops_alerts_not_yet_sent": 0}
    assert LandingCursor.loads(state_of(ingestion.readable_cursor(landing))) == landing
    assert json.loads(invoice_annotation.readable_cursor(scan))["readable"] == {
        "newest_invoice_created_seen": "2026-09-21T14:13:20+00:00", "scan": "continues next tick",
        "overlap_last_relisted": "2026-09-21T14:15:00+00:00"}
    assert ScanCursor.parse(state_of(invoice_annotation.readable_cursor(scan))) == scan
    assert json.loads(stripe_events.readable_cursor(events))["readable"] == {
        "last_applied_event": "evt_9", "its_created_time": "2026-09-21T14:13:20+00:00", "mode": "following new events"}
    assert EventsCursor.from_json(state_of(stripe_events.readable_cursor(events))) == events


def test_cursors_stored_before_keep_their_meaning() -> None:
    for stored in (LandingCursor(watermark_ns=5).dumps(), ScanCursor(hwm=7).dump(), EventsCursor(last_event_id="evt_1").to_json()):
        assert state_of(stored) == stored
    assert state_of(None) is None and state_of("not json") == "not json"

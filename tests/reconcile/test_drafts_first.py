"""The nightly reconciliation gives Stripe's rate limit to renewal drafts awaiting their annotation
(`DraftsFirst`): real warehouse (SQLite and PostgreSQL), the emulator through the SDK."""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from aisyst_pipelines.billing.invoice_lines import ANNOTATION_VERSION
from aisyst_pipelines.billing.reconciliation import ReconciliationPolicy
from aisyst_pipelines.services.reconciliation import DraftsFirst, ReconciliationOutcome, reconcile
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.invoice_annotation_store import (
    AnnotationOutcome,
    AnnotationStatus,
    RenewalInvoice,
    drafts_awaiting_annotation,
    mark_pending,
    queue_invoices,
    record_outcome,
)

from .conftest import ReconWorld

UTC = timezone.utc
AS_OF = datetime(2026, 3, 14, 2, 0, tzinfo=UTC)
NOW = datetime(2026, 4, 4, 14, 30, tzinfo=UTC)


def _queue_a_renewal(warehouse: Warehouse, invoice_id: str) -> None:
    queue_invoices(warehouse, [RenewalInvoice(invoice_id, "cus_x", "sub_x", NOW, NOW - timedelta(days=31), NOW)], ANNOTATION_VERSION, NOW)


def _summaries_sent(stripe_emulator: Any) -> int:
    return sum(1 for entry in stripe_emulator.server.requests() if entry["path"].endswith("/event_summaries"))


def _reconcile_in_background(world: ReconWorld, drafts_first: DraftsFirst) -> tuple[threading.Thread, list[ReconciliationOutcome]]:
    outcomes: list[ReconciliationOutcome] = []

    def run() -> None:
        outcomes.append(reconcile(world.warehouse, world.stripe.meters, ReconciliationPolicy(), repair=False,
                                  run_id="drafts-first", as_of=AS_OF, concurrency=4, drafts_first=drafts_first))

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread, outcomes


def test_drafts_awaiting_annotation_are_the_queued_and_pending_rows(warehouse: Warehouse) -> None:
    for invoice_id in ["in_queued", "in_pending", "in_annotated", "in_failed"]:
        _queue_a_renewal(warehouse, invoice_id)
    mark_pending(warehouse, ["in_pending"], "run-1", NOW)
    record_outcome(warehouse, "in_annotated", AnnotationOutcome(AnnotationStatus.ANNOTATED), "run-1", NOW)
    record_outcome(warehouse, "in_failed", AnnotationOutcome(AnnotationStatus.FAILED, detail="Stripe 500"), "run-1", NOW)

    assert drafts_awaiting_annotation(warehouse) == 2


def test_the_reconciliation_sends_no_summaries_request_until_the_drafts_are_annotated(
    recon_world: ReconWorld, stripe_emulator: Any, caplog: pytest.LogCaptureFixture
) -> None:
    world = recon_world
    world.sign_up_all(["acct_a", "acct_b"])
    world.load_calls(days=10)
    world.plan_voice_server()
    world.send(AS_OF)
    expected = {(r.period.customer_id, r.comparison.delta) for r in world.run(AS_OF).results}
    _queue_a_renewal(world.warehouse, "in_waiting")
    before = _summaries_sent(stripe_emulator)

    caplog.set_level(logging.INFO)
    drafts_first = DraftsFirst(lambda: drafts_awaiting_annotation(world.warehouse), poll_seconds=0.05)
    thread, outcomes = _reconcile_in_background(world, drafts_first)
    time.sleep(1.0)
    assert thread.is_alive() and _summaries_sent(stripe_emulator) == before
    mark_pending(world.warehouse, ["in_waiting"], "annotation-run", NOW)  # being written: still first
    time.sleep(0.5)
    assert thread.is_alive() and _summaries_sent(stripe_emulator) == before

    record_outcome(world.warehouse, "in_waiting", AnnotationOutcome(AnnotationStatus.ANNOTATED), "annotation-run", NOW)
    thread.join(30)

    assert not thread.is_alive()
    (outcome,) = outcomes
    assert {(r.period.customer_id, r.comparison.delta) for r in outcome.results} == expected
    assert _summaries_sent(stripe_emulator) - before == outcome.summary_requests > 0
    assert outcome.summary().seconds_given_way_to_drafts >= 1
    said = [record.getMessage() for record in caplog.records if "gives way" in record.getMessage() or "resumes" in record.getMessage()]
    assert said[0].startswith("reconciliation gives way: 1 renewal drafts await their annotation")
    assert said[-1].endswith("no renewal draft awaits its annotation any more") and len(said) == 2


def test_a_queue_that_does_not_empty_holds_the_reconciliation_up_for_max_wait_only(
    recon_world: ReconWorld, caplog: pytest.LogCaptureFixture
) -> None:
    world = recon_world
    world.sign_up_all(["acct_a"])
    world.load_calls(days=3)
    world.plan_voice_server()
    world.send(AS_OF)
    _queue_a_renewal(world.warehouse, "in_stuck")  # its sensor stopped: nobody will write it tonight

    caplog.set_level(logging.INFO)
    drafts_first = DraftsFirst(lambda: drafts_awaiting_annotation(world.warehouse), poll_seconds=0.05,
                               max_wait=timedelta(seconds=0.5))
    thread, outcomes = _reconcile_in_background(world, drafts_first)
    thread.join(30)

    assert not thread.is_alive()
    (outcome,) = outcomes
    assert outcome.summary_requests > 0 and len(outcome.results) == 1
    assert 0.5 <= drafts_first.seconds_given_way < 5
    assert any("gave way for 0:00:00.500000, its most" in record.getMessage() and "1 drafts still awaiting" in record.getMessage()
               for record in caplog.records)

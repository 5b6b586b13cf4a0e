"""Repair is idempotent across a crash between the ledger write and the send (and after the send,
before the ledger heard of it): the pending row is re-sent under its identifier, never doubled."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from aisyst_pipelines.billing.reconciliation import ReconciliationPolicy, plan_corrections
from aisyst_pipelines.services.reconciliation import Reconciler, RunClock
from aisyst_pipelines.simulation import VoiceServerFaults
from aisyst_pipelines.warehouse import reconciliation_store

from .conftest import ReconWorld, expected_drift_in_windows, reported_drift

UTC = timezone.utc
AS_OF = datetime(2026, 3, 14, 2, 0, tzinfo=UTC)


def crashed_repair(world: ReconWorld, as_of: datetime, *, sent: bool) -> list:
    """What the repair step does up to the crash: plan, record pending — and, if `sent`, the send
    reaching Stripe — but never the mark. Production code all the way; only the process 'dies'."""
    policy = ReconciliationPolicy()
    reconciler = Reconciler(world.warehouse, world.stripe.meters, policy, RunClock(as_of), "crashed-run")
    outcome = reconciler.run(repair=False)
    plan = plan_corrections([r for r in outcome.results if r.findings], [], as_of, policy)
    assert plan.new
    recorded = reconciliation_store.record_pending(world.warehouse, plan.new, as_of, "crashed-run")
    assert recorded == [c.identifier for c in plan.new]
    if sent:
        for correction in plan.new:
            result = world.stripe.meters.send_correction(correction.customer_id, correction.value,
                                                        correction.event_timestamp, correction.identifier)
            assert result.counted
    return list(plan.new)


def setup_drops(world: ReconWorld) -> dict:
    world.sign_up_all(["acct_a", "acct_b"])
    world.load_calls(days=10, seed=11)
    calls = world.metered_calls()
    plan = world.plan_voice_server(VoiceServerFaults(drop=frozenset(sorted(c.call_id for c in calls)[1::5])))
    world.send(AS_OF)
    return plan


@pytest.mark.parametrize("reached_stripe", [False, True], ids=["crash-before-send", "crash-after-send"])
def test_rerun_resends_the_pending_correction_under_the_same_identifier(recon_world: ReconWorld, reached_stripe: bool) -> None:
    world = recon_world
    setup_drops(world)
    planned = crashed_repair(world, AS_OF, sent=reached_stripe)
    assert {e.status.value for e in world.ledger()} == {"pending"}

    # The rerun (ten minutes later, well inside Stripe's identifier window).
    rerun_at = AS_OF + timedelta(minutes=10)
    world.advance(rerun_at)
    rerun = world.run(rerun_at, repair=True)
    ledger = world.ledger()
    assert sorted(e.identifier for e in ledger) == sorted(c.identifier for c in planned)  # nothing new
    assert {e.status.value for e in ledger} == {"sent"}
    rows = world.rows(rerun)
    if reached_stripe:
        # Stripe counted them before the crash: nothing drifts, the re-send was answered as known.
        assert {r["status"] for r in rows} == {"match"}
    else:
        # Sent by this rerun: the drift is covered by corrections in flight.
        assert sum(r["repaired_minutes"] for r in rows) == sum(c.value for c in planned)
        assert all(r["unrepaired_drift_minutes"] == 0 for r in rows)

    # Next night: Stripe's summary equals the CDR minutes exactly — corrected once, not twice.
    next_night = AS_OF + timedelta(days=1)
    world.send(next_night)
    final = world.rows(world.run(next_night, repair=True))
    assert {r["status"] for r in final} == {"match"}
    assert all(r["cdr_minutes"] == r["stripe_minutes"] for r in final)
    assert len(world.ledger()) == len(planned)


@pytest.mark.parametrize("reached_stripe", [False, True], ids=["never-sent", "sent"])
def test_pending_row_past_the_identifier_window_is_expired_and_the_summary_decides(recon_world: ReconWorld,
                                                                                  reached_stripe: bool) -> None:
    world = recon_world
    plan = setup_drops(world)
    planned = crashed_repair(world, AS_OF, sent=reached_stripe)
    # The operator comes back 30 h later: re-sending now could double count (Stripe has forgotten
    # the identifier), so the row expires and the settled summary says what is still missing.
    later = AS_OF + timedelta(hours=30)
    world.send(later)
    rerun = world.run(later, repair=True)
    ledger = {e.identifier: e for e in world.ledger()}
    assert {ledger[c.identifier].status.value for c in planned} == {"expired"}
    fresh = [e for e in ledger.values() if e.identifier not in {c.identifier for c in planned}]
    if reached_stripe:
        assert fresh == []  # Stripe had them: nothing is missing
        assert {r["status"] for r in world.rows(rerun)} == {"match"}
    else:
        rows = world.rows(rerun)
        expected = expected_drift_in_windows(plan, rows, later)
        assert reported_drift(rows) == expected
        assert sorted((e.customer_id, e.usage_date, e.value) for e in fresh) == sorted((c, d, v) for (c, d), v in expected.items())
        assert all(e.identifier.endswith("-2") and e.status.value == "sent" for e in fresh)
    next_night = later + timedelta(days=1)
    world.send(next_night)
    assert {r["status"] for r in world.rows(world.run(next_night, repair=True))} == {"match"}

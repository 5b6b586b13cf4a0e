"""The voice server's meter events: one per answered call at its end, with injected faults whose
drift is known exactly."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from aisyst_pipelines.simulation import (
    MeteredCall,
    SendKind,
    VoiceServerFaults,
    plan_meter_events,
    replay,
)

UTC = timezone.utc
T = lambda *a: datetime(*a, tzinfo=UTC)  # noqa: E731

CALLS = [
    MeteredCall("c1", "cus_1", T(2026, 3, 1, 10), 3),
    MeteredCall("c2", "cus_1", T(2026, 3, 1, 23, 59), 2),
    MeteredCall("c3", "cus_2", T(2026, 3, 2, 8), 5),
    MeteredCall("c4", "cus_2", T(2026, 3, 2, 9), 0),  # unanswered: no event
]


def test_without_faults_one_event_per_answered_call_at_its_end() -> None:
    plan = plan_meter_events(CALLS)
    assert [(s.identifier, s.value, s.timestamp, s.send_at, s.kind) for s in plan.sends] == [
        ("c1", 3, T(2026, 3, 1, 10), T(2026, 3, 1, 10), SendKind.ON_TIME),
        ("c2", 2, T(2026, 3, 1, 23, 59), T(2026, 3, 1, 23, 59), SendKind.ON_TIME),
        ("c3", 5, T(2026, 3, 2, 8), T(2026, 3, 2, 8), SendKind.ON_TIME),
    ]
    assert plan.expected_drift() == {}


def test_injected_faults_and_their_exact_drift() -> None:
    faults = VoiceServerFaults(drop=frozenset({"c1"}), duplicate=frozenset({"c3"}), delayed=frozenset({"c2"}),
                               delay=timedelta(hours=2), duplicate_after=timedelta(hours=30))
    plan = plan_meter_events(CALLS, faults)
    assert plan.dropped == {"c1"} and plan.duplicated == {"c3"} and plan.delayed == {"c2"}
    kinds = {(s.identifier, s.kind): s for s in plan.sends}
    assert kinds[("c2", SendKind.DELAYED)].send_at == T(2026, 3, 2, 1, 59)
    assert kinds[("c2", SendKind.DELAYED)].timestamp == T(2026, 3, 1, 23, 59)  # still stamped at call end
    duplicate = kinds[("c3", SendKind.LATE_DUPLICATE)]
    assert duplicate.send_at - kinds[("c3", SendKind.ON_TIME)].send_at == timedelta(hours=30)
    assert duplicate.timestamp == T(2026, 3, 2, 8)
    # Before the delayed send and the duplicate: c1 and c2 missing on the 1st.
    assert plan.expected_drift(T(2026, 3, 2, 0, 30)) == {("cus_1", date(2026, 3, 1)): 5}
    # Everything sent: the drop stays, the duplicate shows as over-metering.
    assert plan.expected_drift() == {("cus_1", date(2026, 3, 1)): 3, ("cus_2", date(2026, 3, 2)): -5}


def test_rates_are_reproducible_and_independent() -> None:
    calls = [MeteredCall(f"c{i}", "cus_1", T(2026, 3, 1) + timedelta(minutes=7 * i), 1 + i % 4) for i in range(500)]
    a = plan_meter_events(calls, VoiceServerFaults(drop_rate=0.05, late_duplicate_rate=0.03, seed=7))
    b = plan_meter_events(calls, VoiceServerFaults(drop_rate=0.05, late_duplicate_rate=0.03, seed=7))
    assert a == b and 5 < len(a.dropped) < 50 and 2 < len(a.duplicated) < 40
    assert not a.dropped & a.duplicated
    more_dups = plan_meter_events(calls, VoiceServerFaults(drop_rate=0.05, late_duplicate_rate=0.2, seed=7))
    assert more_dups.dropped == a.dropped  # one rate does not move another's choices
    total = sum(a.expected_drift().values())
    assert total == sum(c.billable_minutes for c in calls if c.call_id in a.dropped) - sum(
        c.billable_minutes for c in calls if c.call_id in a.duplicated)


def test_a_duplicate_inside_stripes_identifier_window_is_not_a_fault_we_can_inject() -> None:
    with pytest.raises(ValueError):
        VoiceServerFaults(duplicate_after=timedelta(hours=23))
    with pytest.raises(ValueError):
        VoiceServerFaults(drop_rate=1.5)


def test_replay_advances_the_clock_before_each_batch_and_never_sends_from_the_future() -> None:
    plan = plan_meter_events(CALLS, VoiceServerFaults(duplicate=frozenset({"c1"})))
    clock: list[datetime] = []
    sent: list[tuple[str, datetime]] = []
    count = replay(plan.sends, lambda s: sent.append((s.identifier, clock[-1])), clock.append)
    assert count == 4
    assert clock == sorted(clock) and len(set(clock)) == len(clock)
    for (identifier, at), send in zip(sent, sorted(plan.sends)):
        assert identifier == send.identifier and send.timestamp <= at < send.send_at + timedelta(hours=1)
    first_c1, dup_c1 = [at for identifier, at in sent if identifier == "c1"]
    assert dup_c1 - first_c1 > timedelta(hours=24)
    keys = [s.delivery_key for s in plan.sends]
    assert len(set(keys)) == len(keys)  # each delivery attempt its own request

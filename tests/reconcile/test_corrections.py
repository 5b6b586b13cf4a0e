"""Repair planning: one correction per under-metered customer-day, deterministic identifiers, and a
ledger that makes reruns, crashes and retries unable to correct twice."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pandas as pd

from aisyst_pipelines.billing.periods import Period
from aisyst_pipelines.billing.reconciliation import (
    Cause,
    CorrectionStatus,
    CustomerPeriod,
    LedgerEntry,
    PeriodResult,
    ReconciliationPolicy,
    StripeMinutes,
    compare,
    correction_identifier,
    find_causes,
    plan_corrections,
    reconciliation_window,
    with_repairs,
)

from .cdr_oracle import cdr_minutes_in_memory

UTC = timezone.utc
T = lambda *a: datetime(*a, tzinfo=UTC)  # noqa: E731
POLICY = ReconciliationPolicy()
PERIOD = CustomerPeriod("cus_1", Period(T(2026, 3, 4, 14, 23, 17), T(2026, 4, 4, 14, 23, 17)), "sub_1", "ACME")
NOW = T(2026, 3, 12, 2)


def result_with(stripe_by_day: dict[date, float], calls: list[tuple[str, datetime, int]], now=NOW, period=PERIOD,
                in_flight=None, same_caller=False):
    window = reconciliation_window(period, now)
    frame = pd.DataFrame({
        "call_id": [c[0] for c in calls], "customer_id": period.customer_id, "account_code": "ACME",
        "started_at": [c[1] - timedelta(minutes=c[2]) for c in calls], "ended_at": [c[1] for c in calls],
        "billable_seconds": [c[2] * 60 for c in calls], "billable_minutes": [c[2] for c in calls],
        "caller_hash": ["h" if same_caller else c[0] for c in calls], "callee_hash": "x", "ingested_at": [c[1] for c in calls]})
    cdr = cdr_minutes_in_memory(frame, [window])[period.key]
    stripe = StripeMinutes()
    request = window.requests()[0]
    stripe.add(request, [(datetime.combine(d, datetime.min.time(), UTC), None, v) for d, v in stripe_by_day.items()])
    comparison = compare(window, cdr, stripe)
    return PeriodResult(comparison, find_causes(comparison, frame, in_flight))


CALLS = [("a", T(2026, 3, 6, 10), 5), ("b", T(2026, 3, 6, 11), 3), ("c", T(2026, 3, 9, 12), 7), ("d", T(2026, 3, 10, 1), 2)]
# Stripe lost call b (3 min on the 6th) and counted call d twice (the 10th).
STRIPE = {date(2026, 3, 6): 5, date(2026, 3, 9): 7, date(2026, 3, 10): 4}


def test_one_correction_per_under_metered_day_over_metering_left_to_a_person() -> None:
    result = result_with(STRIPE, CALLS)
    plan = plan_corrections([result], [], NOW, POLICY)
    assert [(c.usage_date, c.value) for c in plan.new] == [(date(2026, 3, 6), 3)]
    correction = plan.new[0]
    assert correction.identifier == correction_identifier("cus_1", date(2026, 3, 6), 1) == "aisyst-correction-cus_1-20260306-1"
    assert correction.event_timestamp == T(2026, 3, 6, 23, 59, 59)
    assert correction.period_start == PERIOD.period_start
    assert plan.resend == () and plan.expire == ()
    # The same inputs plan the same correction: deterministic.
    assert plan_corrections([result], [], NOW, POLICY) == plan


def entry(correction, status, created, sent=None):
    return LedgerEntry(correction.identifier, correction.customer_id, correction.usage_date, correction.period_start,
                       correction.value, correction.event_timestamp, status, created, sent)


def test_crash_between_ledger_write_and_send_resends_the_same_identifier_only() -> None:
    result = result_with(STRIPE, CALLS)
    first = plan_corrections([result], [], NOW, POLICY).new[0]
    pending = entry(first, CorrectionStatus.PENDING, NOW)
    # Rerun ten minutes later: Stripe still shows the gap; the pending row is re-sent, nothing new.
    later = NOW + timedelta(minutes=10)
    rerun = plan_corrections([result], [pending], later, POLICY)
    assert rerun.new == () and rerun.resend == (pending,)
    # Had the send reached Stripe before the crash, Stripe dedupes the identifier; either way the
    # repaired minutes cover the drift while it is in flight.
    repaired = with_repairs(result, [pending], later, POLICY)
    assert repaired.repaired_minutes == 3 and repaired.unrepaired_drift == 2  # the over-metered 2 stay


def test_sent_correction_still_settling_is_not_sent_again() -> None:
    result = result_with(STRIPE, CALLS)
    first = plan_corrections([result], [], NOW, POLICY).new[0]
    sent = entry(first, CorrectionStatus.SENT, NOW, NOW)
    soon = NOW + timedelta(minutes=30)
    rerun_result = result_with(STRIPE, CALLS, now=soon, in_flight={date(2026, 3, 6): 3})
    assert rerun_result.findings[0].cause == Cause.STRIPE_PROCESSING
    assert plan_corrections([rerun_result], [sent], soon, POLICY).new == ()
    # Once settled, Stripe's summary includes it: the day matches and nothing is planned.
    next_night = NOW + timedelta(days=1)
    settled = result_with(STRIPE | {date(2026, 3, 6): 8}, CALLS, now=next_night)
    assert all(f.day != date(2026, 3, 6) for f in settled.findings)
    assert plan_corrections([settled], [sent], next_night, POLICY).new == ()


def test_partial_in_flight_only_the_remainder_with_the_next_sequence() -> None:
    result = result_with({date(2026, 3, 6): 0, date(2026, 3, 9): 7, date(2026, 3, 10): 2}, CALLS)
    first = plan_corrections([result], [], NOW, POLICY).new[0]
    assert first.value == 8
    small = LedgerEntry(first.identifier, "cus_1", date(2026, 3, 6), PERIOD.period_start, 5, first.event_timestamp,
                        CorrectionStatus.SENT, NOW, NOW)
    plan = plan_corrections([result], [small], NOW + timedelta(minutes=5), POLICY)
    assert [(c.identifier, c.value) for c in plan.new] == [("aisyst-correction-cus_1-20260306-2", 3)]


def test_pending_row_past_the_identifier_window_is_expired_and_the_summary_decides() -> None:
    result = result_with(STRIPE, CALLS)
    first = plan_corrections([result], [], NOW, POLICY).new[0]
    old = entry(first, CorrectionStatus.PENDING, NOW - timedelta(hours=23, minutes=30))
    plan = plan_corrections([result], [old], NOW, POLICY)
    assert plan.expire == (old,) and plan.resend == ()
    assert [(c.identifier, c.value) for c in plan.new] == [("aisyst-correction-cus_1-20260306-2", 3)]


def test_failed_rows_do_not_count_as_repairs() -> None:
    result = result_with(STRIPE, CALLS)
    first = plan_corrections([result], [], NOW, POLICY).new[0]
    failed = entry(first, CorrectionStatus.FAILED, NOW - timedelta(minutes=1))
    plan = plan_corrections([result], [failed], NOW, POLICY)
    assert [c.value for c in plan.new] == [3] and plan.new[0].identifier.endswith("-2")


def test_days_beyond_stripes_35_days_and_unrepairable_causes_are_skipped() -> None:
    long_period = CustomerPeriod("cus_1", Period(T(2026, 1, 4, 14, 23, 17), T(2026, 2, 4, 14, 23, 17)), "sub_1", "ACME")
    now = T(2026, 3, 1, 2)
    calls = [("a", T(2026, 1, 20, 10), 5), ("b", T(2026, 2, 2, 10), 4)]
    result = result_with({}, calls, now=now, period=long_period)
    plan = plan_corrections([result], [], now, POLICY)
    assert [(c.usage_date, c.value) for c in plan.new] == [(date(2026, 2, 2), 4)]
    assert plan.skipped == (("cus_1", long_period.period_start, date(2026, 1, 20), "outside Stripe's 35-day timestamp window"),)
    assert plan.new[0].event_timestamp == T(2026, 2, 2, 23, 59, 59)
    # A call loaded twice under two call ids looks like under-metering: correcting it would bill
    # the call twice, so it is skipped and left for a person.
    twin_calls = [("a", T(2026, 3, 6, 10), 5), ("a-copy", T(2026, 3, 6, 10), 5)]
    twins = result_with({date(2026, 3, 6): 5}, twin_calls, same_caller=True)
    assert [f.cause for f in twins.findings] == [Cause.DUPLICATE_CDR]
    plan = plan_corrections([twins], [], NOW, POLICY)
    assert plan.new == () and plan.skipped == (("cus_1", PERIOD.period_start, date(2026, 3, 6), "cause duplicate_cdr: for a person to judge"),)

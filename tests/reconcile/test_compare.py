"""The comparison finds exactly the injected drift per day, against a reference Stripe that sums
meter events by timestamp and the CDR side read from the warehouse as production reads it
(property-based, on SQLite and PostgreSQL), and names causes from warehouse evidence."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import delete, insert

from aisyst_pipelines.billing.periods import BillingCycle, Period, ceil_day, floor_minute
from aisyst_pipelines.billing.reconciliation import (
    Cause,
    CdrMinutes,
    CustomerPeriod,
    DayEvidence,
    MissingSplit,
    Status,
    StripeMinutes,
    SummaryRequest,
    compare,
    day_evidence,
    find_causes,
    name_cause,
    reconciliation_window,
    splits_needed,
    summary_minutes,
)
from aisyst_pipelines.warehouse import Warehouse, reconciliation_store
from aisyst_pipelines.warehouse.schema import call_records

from .cdr_oracle import cdr_minutes_in_memory

UTC = timezone.utc


def reference_summaries(events: list[tuple[datetime, int]], request: SummaryRequest) -> list[tuple[datetime, datetime, float]]:
    """What Stripe answers: events summed by timestamp, per UTC day or over the whole span."""
    inside = [(t, v) for t, v in events if request.span.contains(t)]
    if not request.by_day:
        return [(request.span.start, request.span.end, float(sum(v for _, v in inside)))] if inside else []
    buckets: dict[date, int] = {}
    for t, v in inside:
        buckets[t.date()] = buckets.get(t.date(), 0) + v
    return [(datetime.combine(d, datetime.min.time(), UTC), datetime.combine(d, datetime.min.time(), UTC) + timedelta(days=1), float(v))
            for d, v in sorted(buckets.items(), reverse=True)]  # newest first, like Stripe's example


@st.composite
def scenarios(draw: st.DrawFn):
    anchor = datetime(2026, draw(st.integers(1, 12)), draw(st.integers(1, 28)), tzinfo=UTC) + timedelta(seconds=draw(st.integers(0, 86399)))
    cycle = BillingCycle.from_anchor(anchor)
    periods = [CustomerPeriod("cus_1", Period(cycle.boundary(k), cycle.boundary(k + 1))) for k in range(3)]
    now = periods[1].period_start + timedelta(seconds=draw(st.integers(0, 40 * 86400)))
    n = draw(st.integers(0, 60))
    span = (periods[2].period_end - periods[0].period_start).total_seconds()
    # The edges of the windows and of their days, where an off-by-one in [start, end) would show.
    edges = [edge for p in periods for edge in (p.period_start, floor_minute(p.period_start), ceil_day(p.period_start))]
    calls = []
    for i in range(n):
        if draw(st.booleans()):
            ended = periods[0].period_start + timedelta(seconds=draw(st.integers(0, int(span))))
        else:
            ended = draw(st.sampled_from(edges))
        ended = min(ended, now - timedelta(seconds=1))
        fate = draw(st.sampled_from(["ok", "ok", "ok", "drop", "duplicate"]))
        calls.append((f"call_{i}", ended, draw(st.integers(1, 30)), fate))
    return periods, now, calls


def load_calls(warehouse: Warehouse, calls: list[tuple[str, datetime, int, str]]) -> None:
    """The scenario's calls as the only rows of call_records."""
    with warehouse.begin() as connection:
        connection.execute(delete(call_records))
        if calls:
            connection.execute(insert(call_records), [dict(
                call_id=call_id, account_code="ACME", customer_id="cus_1", direction="inbound", disposition="completed",
                started_at=ended - timedelta(minutes=minutes), answered_at=ended - timedelta(minutes=minutes),
                ended_at=ended, billable_seconds=minutes * 60, billable_minutes=minutes, content_hash=call_id,
                source_file="calls.csv", source_sha256="0" * 64, source_line=1, ingested_at=ended,
            ) for call_id, ended, minutes, _fate in calls])


@pytest.mark.slow
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(scenario=scenarios(), lag=st.sampled_from([timedelta(hours=1), timedelta(minutes=5)]))
def test_comparison_finds_exactly_the_injected_drift(warehouse: Warehouse, scenario, lag: timedelta) -> None:
    periods, now, calls = scenario
    events = []
    for _call_id, ended, minutes, fate in calls:
        if fate != "drop":
            events.append((ended, minutes))
        if fate == "duplicate":
            events.append((ended, minutes))
    windows = [w for p in periods if (w := reconciliation_window(p, now, lag)) is not None]
    load_calls(warehouse, calls)
    cdr = reconciliation_store.cdr_minutes_by_window(warehouse, windows)
    frame = pd.DataFrame({"customer_id": ["cus_1"] * len(calls), "ended_at": [c[1] for c in calls],
                          "billable_minutes": [c[2] for c in calls]})
    assert cdr == cdr_minutes_in_memory(frame, windows)

    def drift_in(span: Period) -> int:
        return sum(m if fate == "drop" else -m for _i, ended, m, fate in calls if fate != "ok" and span.contains(ended))

    for window in windows:
        stripe = StripeMinutes()
        requests = window.requests()
        for request in requests:
            stripe.add(request, reference_summaries(events, request))
        mine = cdr[window.period.key]
        with pytest.raises(MissingSplit) if splits_needed(window, mine, stripe) else _nothing():
            compare(window, mine, stripe)
        splits = splits_needed(window, mine, stripe)
        for request in splits:
            stripe.add(request, reference_summaries(events, request))
        assert splits_needed(window, mine, stripe) == []
        comparison = compare(window, mine, stripe)
        assert len(splits) <= sum(1 for d in window.days() if d.partial and d.grouped)
        for day in comparison.days:
            if day.inferred:
                assert drift_in(day.slice.full) == 0  # inferred only when the whole day matched
            else:
                assert day.delta == drift_in(day.slice.span)
        assert comparison.cdr_minutes == sum(m for _i, ended, m, _f in calls if window.span.contains(ended))
        expected = sum(drift_in(d.slice.span) for d in comparison.days if not d.inferred)
        assert comparison.delta == expected
        assert comparison.status == (Status.MATCH if expected == 0 else Status.UNDER_METERED if expected > 0 else Status.OVER_METERED)


class _nothing:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def test_fractional_summary_values_are_refused() -> None:
    assert summary_minutes(12.0) == 12
    with pytest.raises(ValueError):
        summary_minutes(12.5)


T = lambda *a: datetime(*a, tzinfo=UTC)  # noqa: E731
PERIOD = CustomerPeriod("cus_1", Period(T(2026, 3, 4, 14, 23, 17), T(2026, 4, 4, 14, 23, 17)), "sub_1", "ACME")


def call(call_id, ended, minutes, *, customer="cus_1", started=None, account="ACME", ingested=None, caller="h1"):
    return dict(call_id=call_id, customer_id=customer, account_code=account,
                started_at=started or ended - timedelta(minutes=minutes), ended_at=ended,
                billable_seconds=minutes * 60, billable_minutes=minutes, caller_hash=caller, callee_hash="h2",
                ingested_at=ingested or ended + timedelta(minutes=5))


def evidence(rows, span, in_flight=0):
    return day_evidence(PERIOD, span, pd.DataFrame(rows), in_flight)


DAY10 = Period(T(2026, 3, 10), T(2026, 3, 11))


def test_duplicate_cdr_under_another_call_id_is_named() -> None:
    rows = [call("a", T(2026, 3, 10, 9), 4), call("a-copy", T(2026, 3, 10, 9), 4), call("b", T(2026, 3, 10, 11), 2)]
    ev = evidence(rows, DAY10)
    assert ev.duplicate_cdr_minutes == 4
    assert name_cause(4, ev) == Cause.DUPLICATE_CDR
    assert name_cause(3, ev) is None  # evidence must account for exactly the delta


def test_unmapped_calls_of_the_customers_account_explain_over_metering() -> None:
    rows = [call("a", T(2026, 3, 10, 9), 4, customer=None), call("b", T(2026, 3, 10, 9), 7, customer=None, account="OTHER")]
    ev = evidence(rows, DAY10)
    assert ev.unmapped_minutes == 4
    assert name_cause(-4, ev) == Cause.UNMAPPED_ACCOUNT


def test_late_cdr_after_the_period_closed() -> None:
    rows = [call("a", T(2026, 3, 10, 9), 6, ingested=T(2026, 4, 6)), call("b", T(2026, 3, 10, 9, 30), 1)]
    ev = evidence(rows, DAY10)
    assert ev.late_cdr_minutes == 6
    assert name_cause(6, ev) == Cause.LATE_CDR


def test_calls_straddling_the_period_edges() -> None:
    head = Period(T(2026, 3, 4, 14, 23), T(2026, 3, 5))
    rows = [call("a", T(2026, 3, 4, 14, 30), 10, started=T(2026, 3, 4, 14, 20)), call("b", T(2026, 3, 4, 20), 3)]
    ev = evidence(rows, head)
    assert ev.edge_in_minutes == 10 and name_cause(10, ev) == Cause.PERIOD_EDGE
    tail = Period(T(2026, 4, 4), T(2026, 4, 4, 14, 23))
    rows = [call("c", T(2026, 4, 4, 14, 40), 20, started=T(2026, 4, 4, 14, 20))]
    ev = evidence(rows, tail)
    assert ev.edge_out_minutes == 20 and name_cause(-20, ev) == Cause.PERIOD_EDGE


def test_corrections_in_flight_mean_stripe_is_still_processing() -> None:
    assert name_cause(5, DayEvidence(in_flight_correction_minutes=5)) == Cause.STRIPE_PROCESSING
    assert name_cause(6, DayEvidence(in_flight_correction_minutes=5)) is None
    assert name_cause(-5, DayEvidence()) is None


def test_findings_and_detail_of_a_drifting_period() -> None:
    window = reconciliation_window(PERIOD, T(2026, 3, 12, 2))
    assert window is not None
    rows = [call("a", T(2026, 3, 10, 9), 4), call("a-copy", T(2026, 3, 10, 9), 4), call("x", T(2026, 3, 11, 8), 9)]
    frame = pd.DataFrame(rows)
    cdr = cdr_minutes_in_memory(frame, [window])[PERIOD.key]
    stripe = StripeMinutes()
    stripe.add(window.requests()[0], [(T(2026, 3, 10), T(2026, 3, 11), 4.0), (T(2026, 3, 11), T(2026, 3, 12), 12.0)])
    comparison = compare(window, cdr, stripe)
    assert [(d.slice.day, d.delta) for d in comparison.drifting] == [(date(2026, 3, 10), 4), (date(2026, 3, 11), -3)]
    assert comparison.drift_minutes == 7 and comparison.delta == 1 and comparison.status == Status.UNDER_METERED
    findings = find_causes(comparison, frame)
    assert [f.cause for f in findings] == [Cause.DUPLICATE_CDR, None]
    from aisyst_pipelines.billing.reconciliation import PeriodResult

    result = PeriodResult(comparison, findings)
    detail = result.detail(T(2026, 3, 12, 2))
    assert detail["days_compared"] == 8
    assert [d["day"] for d in detail["drifting_days"]] == ["2026-03-10", "2026-03-11"]
    assert detail["drifting_days"][1]["cancel_window"] == "open"  # received < 24 h ago
    assert result.cause == Cause.DUPLICATE_CDR and result.unrepaired_drift == 7
    assert result.beyond_tolerance(6) and not result.beyond_tolerance(7)
    assert isinstance(CdrMinutes({}, {}).total, int)

"""Window alignment: any period boundary (anniversaries, month ends, leap days) gives Stripe-valid,
exactly tiling windows and at most two base requests (property-based)."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from aisyst_pipelines.billing.periods import DAY, BillingCycle, Period, ceil_day, floor_day, floor_minute
from aisyst_pipelines.billing.reconciliation import (
    CustomerPeriod,
    SummaryRequest,
    correction_timestamp,
    in_scope,
    reconciliation_window,
)

UTC = timezone.utc

# Anchors biased towards the awkward days: month ends, the 29th-31st, leap days.
anchor_days = st.one_of(st.integers(1, 31), st.sampled_from([28, 29, 30, 31]))


@st.composite
def anchors(draw: st.DrawFn) -> datetime:
    year = draw(st.integers(2023, 2029))
    month = draw(st.integers(1, 12))
    day = draw(anchor_days)
    if draw(st.booleans()):  # leap day anchors
        year, month, day = draw(st.sampled_from([2024, 2028])), 2, 29
    import calendar

    day = min(day, calendar.monthrange(year, month)[1])
    seconds = draw(st.one_of(st.just(0), st.integers(0, 86399)))  # midnight anchors too
    return datetime(year, month, day, tzinfo=UTC) + timedelta(seconds=seconds)  # Stripe: whole seconds


def periods_from(anchor: datetime, count: int, interval: str = "month") -> list[CustomerPeriod]:
    cycle = BillingCycle.from_anchor(anchor, interval)
    return [CustomerPeriod("cus_1", Period(cycle.boundary(k), cycle.boundary(k + 1))) for k in range(count)]


lags = st.sampled_from([timedelta(0), timedelta(minutes=1), timedelta(hours=1), timedelta(hours=6), timedelta(hours=30)])


@settings(max_examples=400, deadline=None)
@given(anchor=anchors(), offset=st.integers(0, 100 * 86400), lag=lags, interval=st.sampled_from(["month", "week", "year"]))
def test_windows_are_aligned_settled_and_tile_the_timeline(anchor: datetime, offset: int, lag: timedelta, interval: str) -> None:
    now = anchor + timedelta(seconds=offset)
    periods = periods_from(anchor, 6 if interval != "year" else 2, interval)
    windows = [reconciliation_window(p, now, lag) for p in periods]
    settled = now - lag
    previous_end = None
    for period, window in zip(periods, windows):
        if window is None:
            # Nothing settled: the period has not reached a settled minute/midnight yet.
            assert floor_day(floor_minute(settled)) <= floor_minute(period.period_start) or period.period_start > settled
            continue
        span = window.span
        # Stripe: both ends on minute boundaries, never past the settle lag.
        assert floor_minute(span.start) == span.start and floor_minute(span.end) == span.end
        assert span.end <= settled
        # The window is the period floored to the minute, cut at the settled end.
        assert span.start == floor_minute(period.period_start)
        assert span.end <= floor_minute(period.period_end)
        assert window.closed == (span.end == floor_minute(period.period_end))
        if not window.closed:
            assert floor_day(span.end) == span.end  # a running period ends at a settled midnight
        # Consecutive windows tile: no gap, no overlap.
        if previous_end is not None:
            assert span.start == previous_end
        previous_end = span.end if window.closed else None
        # Requests: valid for Stripe (SummaryRequest checks alignment), at most two, the grouped
        # one day-aligned and fully settled.
        requests = window.requests()
        assert 1 <= len(requests) <= 2
        assert sum(r.by_day for r in requests) <= 1
        for request in requests:
            assert request.span.end <= settled
            if request.by_day:
                assert floor_day(request.span.start) == request.span.start and request.span.end == ceil_day(request.span.end)
        if len(requests) == 2:
            assert window.closed and window.tail is not None
        # The days partition the window and each day is read by exactly one base request.
        days = window.days()
        assert days[0].span.start == span.start and days[-1].span.end == span.end
        for before, after in zip(days, days[1:]):
            assert before.span.end == after.span.start
            assert after.day - before.day == timedelta(days=1)
        for day in days:
            assert day.full.covers(day.span)
            readers = [r for r in requests if (r.by_day and r.span.covers(day.full)) or (not r.by_day and r.span == day.span)]
            assert len(readers) == 1
            assert day.grouped == readers[0].by_day
            # A correction for this day lands inside the day, the window and the true period.
            stamp = correction_timestamp(day.span)
            assert day.span.contains(stamp) and span.contains(stamp)
            assert period.period_start <= stamp < period.period_end
            # A drifting edge day is split with a request Stripe accepts.
            if day.partial and day.grouped:
                SummaryRequest(day.span, by_day=False)


@settings(max_examples=200, deadline=None)
@given(anchor=anchors(), offset=st.integers(0, 120 * 86400))
def test_scope_is_the_current_period_and_those_closed_within_35_days(anchor: datetime, offset: int) -> None:
    now = anchor + timedelta(seconds=offset)
    periods = periods_from(anchor, 8)
    chosen = [p for p in periods if in_scope(p, now)]
    current = [p for p in periods if p.period_start <= now < p.period_end]
    assert current and current[0] in chosen
    for p in periods:
        closed_recently = p.period_end <= now and now - p.period_end < timedelta(days=35)
        assert (p in chosen) == (p in current or closed_recently)


def test_nightly_run_reads_one_day_grouped_request_up_to_midnight() -> None:
    period = CustomerPeriod("cus_1", Period(datetime(2026, 1, 31, 9, 15, 42, tzinfo=UTC), datetime(2026, 2, 28, 9, 15, 42, tzinfo=UTC)))
    window = reconciliation_window(period, datetime(2026, 2, 10, 2, 0, tzinfo=UTC))
    assert window is not None
    assert window.span == Period(datetime(2026, 1, 31, 9, 15, tzinfo=UTC), datetime(2026, 2, 10, tzinfo=UTC))
    assert window.requests() == [SummaryRequest(Period(datetime(2026, 1, 31, tzinfo=UTC), datetime(2026, 2, 10, tzinfo=UTC)), by_day=True)]
    assert [d.partial for d in window.days()] == [True] + [False] * 9


def test_period_closed_yesterday_evening_reads_its_last_partial_day_ungrouped() -> None:
    period = CustomerPeriod("cus_1", Period(datetime(2026, 1, 31, 9, 15, 42, tzinfo=UTC), datetime(2026, 2, 28, 19, 0, 5, tzinfo=UTC)))
    window = reconciliation_window(period, datetime(2026, 2, 28, 21, 0, tzinfo=UTC))
    assert window is not None and window.closed
    assert window.tail == Period(datetime(2026, 2, 28, tzinfo=UTC), datetime(2026, 2, 28, 19, 0, tzinfo=UTC))
    assert window.grouped == Period(datetime(2026, 1, 31, tzinfo=UTC), datetime(2026, 2, 28, tzinfo=UTC))
    # The next night the whole last day has settled: back to one request.
    later = reconciliation_window(period, datetime(2026, 3, 1, 2, 0, tzinfo=UTC))
    assert later is not None and later.tail is None and len(later.requests()) == 1
    assert later.grouped == Period(datetime(2026, 1, 31, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))


def test_nothing_to_compare_before_the_first_settled_midnight() -> None:
    period = CustomerPeriod("cus_1", Period(datetime(2026, 3, 5, 10, 0, tzinfo=UTC), datetime(2026, 4, 5, 10, 0, tzinfo=UTC)))
    assert reconciliation_window(period, datetime(2026, 3, 5, 23, 0, tzinfo=UTC)) is None
    assert reconciliation_window(period, datetime(2026, 3, 6, 0, 30, tzinfo=UTC)) is None  # midnight not yet settled
    assert reconciliation_window(period, datetime(2026, 3, 6, 1, 0, tzinfo=UTC)) is not None


def test_naive_times_and_misaligned_requests_are_refused() -> None:
    with pytest.raises(ValueError):
        CustomerPeriod("cus_1", Period(datetime(2026, 3, 5), datetime(2026, 4, 5)))
    with pytest.raises(ValueError):
        CustomerPeriod("cus_1", Period(datetime(2026, 3, 5, 0, 0, 0, 500, tzinfo=UTC), datetime(2026, 4, 5, tzinfo=UTC)))
    with pytest.raises(ValueError):
        SummaryRequest(Period(datetime(2026, 3, 5, 10, 0, 30, tzinfo=UTC), datetime(2026, 3, 6, tzinfo=UTC)), by_day=False)
    with pytest.raises(ValueError):
        SummaryRequest(Period(datetime(2026, 3, 5, 10, tzinfo=UTC), datetime(2026, 3, 6, tzinfo=UTC)), by_day=True)
    assert DAY == timedelta(days=1)


@settings(max_examples=200, deadline=None)
@given(anchor=anchors(), offset=st.integers(0, 200 * 86400), stale=st.integers(0, 2), ended=st.booleans())
def test_subscription_periods_from_the_mirror_tile_and_cover_the_scope(anchor: datetime, offset: int, stale: int, ended: bool) -> None:
    from aisyst_pipelines.billing.reconciliation import SubscriptionCycle, customer_periods, subscription_periods

    now = anchor + timedelta(seconds=offset)
    cycle = BillingCycle.from_anchor(anchor)
    truth = [CustomerPeriod("cus_1", Period(cycle.boundary(k), cycle.boundary(k + 1)), "sub_1") for k in range(0, 12)]
    running = next(p for p in truth if p.period_start <= now < p.period_end)
    # The mirror may be a renewal or two behind (the sync runs less often than Stripe renews).
    mirrored = truth[max(0, truth.index(running) - stale)]
    ended_at = (running.period_start + (now - running.period_start) / 2).replace(microsecond=0) if ended else None
    subscription = SubscriptionCycle("sub_1", "cus_1", mirrored.period_start, mirrored.period_end,
                                     billing_cycle_anchor=anchor, interval="month", interval_count=1,
                                     started_at=anchor, ended_at=ended_at)
    periods = subscription_periods(subscription, now)
    expected = [p for p in truth if in_scope(p, now) and (ended_at is None or p.period_start < ended_at)]
    if ended_at is not None:
        expected = [CustomerPeriod("cus_1", Period(p.period_start, min(p.period_end, ended_at)), "sub_1") for p in expected]
        expected = [p for p in expected if in_scope(p, now)]
    assert periods == expected
    for before, after in zip(periods, periods[1:]):
        assert before.period_end == after.period_start
    assert customer_periods([subscription], now) == periods

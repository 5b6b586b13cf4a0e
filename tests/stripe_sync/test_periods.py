"""Anniversary billing periods (billing/periods.py): month ends, leap days, half-open edges."""

from datetime import datetime, timedelta, timezone

import pytest

from aisyst_pipelines.billing.periods import BillingCycle, Period, add_months, from_unix, recent_periods


def utc(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=timezone.utc)


def test_jan_31_anchor_clamps_to_month_ends_and_comes_back_to_31() -> None:
    cycle = BillingCycle.from_anchor(utc(2027, 1, 31, 9, 30))
    assert [cycle.boundary(k) for k in range(5)] == [
        utc(2027, 1, 31, 9, 30), utc(2027, 2, 28, 9, 30), utc(2027, 3, 31, 9, 30),
        utc(2027, 4, 30, 9, 30), utc(2027, 5, 31, 9, 30),
    ]


def test_jan_31_anchor_in_a_leap_year_renews_on_feb_29() -> None:
    cycle = BillingCycle.from_anchor(utc(2028, 1, 31))
    assert cycle.boundary(1) == utc(2028, 2, 29)
    assert cycle.period_containing(utc(2028, 3, 15)) == Period(utc(2028, 2, 29), utc(2028, 3, 31))


def test_feb_29_anchor_is_feb_28_in_other_years_and_the_29th_of_other_months() -> None:
    monthly = BillingCycle.from_anchor(utc(2028, 2, 29, 12))
    assert monthly.boundary(1) == utc(2028, 3, 29, 12)
    assert monthly.boundary(12) == utc(2029, 2, 28, 12)
    yearly = BillingCycle.from_anchor(utc(2028, 2, 29, 12), interval="year")
    assert [yearly.boundary(k) for k in (1, 4)] == [utc(2029, 2, 28, 12), utc(2032, 2, 29, 12)]


def test_previous_period_of_a_clamped_period_uses_the_anchor_day_not_the_start_day() -> None:
    # The period that starts on the clamped Feb 28 came after a period that started on Jan 31.
    cycle = BillingCycle.from_anchor(utc(2026, 10, 31, 8))
    current = Period(utc(2027, 2, 28, 8), utc(2027, 3, 31, 8))
    assert cycle.previous_period(current) == Period(utc(2027, 1, 31, 8), utc(2027, 2, 28, 8))
    assert cycle.next_period(current) == Period(utc(2027, 3, 31, 8), utc(2027, 4, 30, 8))


@pytest.mark.parametrize(
    ("start", "end", "previous_start"),
    [
        (utc(2027, 2, 28), utc(2027, 3, 31), utc(2027, 1, 31)),  # anchor 31, Feb clamped
        (utc(2027, 1, 31), utc(2027, 2, 28), utc(2026, 12, 31)),  # anchor 31, end clamped
        (utc(2027, 4, 30), utc(2027, 5, 30), utc(2027, 3, 30)),  # anchor 30
        (utc(2028, 2, 29), utc(2028, 3, 29), utc(2028, 1, 29)),  # anchor 29 in a leap year
        (utc(2027, 3, 15, 17, 45), utc(2027, 4, 15, 17, 45), utc(2027, 2, 15, 17, 45)),
    ],
)
def test_without_the_anchor_the_cycle_is_recovered_from_the_current_period(start, end, previous_start) -> None:
    current = Period(start, end)
    cycle = BillingCycle.from_current_period(current)
    assert cycle.previous_period(current) == Period(previous_start, start)
    assert cycle.period_containing(start) == current
    assert cycle.period_containing(end - timedelta(seconds=1)) == current


def test_period_is_half_open() -> None:
    period = Period(utc(2027, 1, 31), utc(2027, 2, 28))
    assert period.contains(utc(2027, 1, 31))
    assert period.contains(utc(2027, 2, 27, 23, 59, 59))
    assert not period.contains(utc(2027, 2, 28))
    cycle = BillingCycle.from_anchor(utc(2027, 1, 31))
    assert cycle.period_containing(utc(2027, 2, 28)).start == utc(2027, 2, 28)


def test_period_containing_far_from_the_reference_in_both_directions() -> None:
    cycle = BillingCycle.from_anchor(utc(2027, 1, 31, 23, 59, 59))
    for moment in (utc(2019, 7, 1), utc(2027, 1, 31, 23, 59, 58), utc(2031, 12, 31, 23, 59, 59), utc(2040, 2, 29, 12)):
        period = cycle.period_containing(moment)
        assert period.contains(moment)
        assert cycle.next_period(cycle.previous_period(period)) == period


def test_weekly_and_daily_intervals_are_fixed_lengths() -> None:
    weekly = BillingCycle.from_anchor(utc(2027, 3, 1, 6), interval="week", interval_count=2)
    assert weekly.period_containing(utc(2027, 3, 20)) == Period(utc(2027, 3, 15, 6), utc(2027, 3, 29, 6))
    daily = BillingCycle.from_anchor(utc(2027, 3, 1, 6), interval="day")
    assert daily.previous_period(Period(utc(2027, 3, 1, 6), utc(2027, 3, 2, 6))).start == utc(2027, 2, 28, 6)


def test_quarterly_cycle() -> None:
    cycle = BillingCycle.from_anchor(utc(2026, 11, 30), interval_count=3)
    assert [cycle.boundary(k) for k in range(1, 4)] == [utc(2027, 2, 28), utc(2027, 5, 30), utc(2027, 8, 30)]


def test_recent_periods_leaves_out_periods_before_the_subscription_started() -> None:
    cycle = BillingCycle.from_anchor(utc(2027, 1, 31))
    current = Period(utc(2027, 3, 31), utc(2027, 4, 30))
    assert recent_periods(current, cycle) == [Period(utc(2027, 2, 28), utc(2027, 3, 31)), current]
    assert recent_periods(current, cycle, not_before=utc(2027, 3, 31)) == [current]
    assert len(recent_periods(current, cycle, count=3, not_before=utc(2027, 2, 28))) == 2
    assert len(recent_periods(current, cycle, count=3, not_before=utc(2027, 2, 27))) == 3


def test_an_off_cycle_start_gets_a_previous_period_from_the_last_boundary() -> None:
    cycle = BillingCycle.from_anchor(utc(2027, 1, 10))
    current = Period(utc(2027, 3, 20), utc(2027, 4, 10))  # trial ended on Mar 20
    assert cycle.previous_period(current) == Period(utc(2027, 3, 10), utc(2027, 3, 20))


def test_naive_datetimes_and_empty_periods_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        Period(datetime(2027, 1, 1), utc(2027, 2, 1))
    with pytest.raises(ValueError, match="not after"):
        Period(utc(2027, 2, 1), utc(2027, 2, 1))
    with pytest.raises(ValueError, match="interval"):
        BillingCycle.from_anchor(utc(2027, 1, 1), interval="fortnight")


def test_add_months_and_from_unix() -> None:
    assert add_months(utc(2027, 1, 31), 1, 31) == utc(2027, 2, 28)
    assert add_months(utc(2027, 2, 28), -1, 31) == utc(2027, 1, 31)
    assert add_months(utc(2027, 12, 31), 2, 31) == utc(2028, 2, 29)
    assert Period(from_unix(1798761600), from_unix(1801440000)) == Period(utc(2027, 1, 1), utc(2027, 2, 1))
    assert from_unix(None) is None

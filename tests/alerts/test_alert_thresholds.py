"""The pure alert decisions: reached thresholds, the highest-only rule, re-arming, silence."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from aisyst_pipelines.billing.thresholds import (
    AlertPlan,
    AlertStatus,
    RecordedAlert,
    SilencePolicy,
    StatusChange,
    days_left_in_period,
    find_silent_customers,
    parse_thresholds,
    plan_alerts,
    reached_thresholds,
    usage_percentage,
)

START = datetime(2026, 3, 1, tzinfo=timezone.utc)
END = datetime(2026, 4, 1, tzinfo=timezone.utc)
T = (80, 100)


def decide(minutes: int, recorded: list[RecordedAlert], included: int | None = 500, thresholds=T) -> AlertPlan:
    return plan_alerts(minutes, included, recorded, thresholds)


def applied(plan: AlertPlan, recorded: list[RecordedAlert], included: int) -> list[RecordedAlert]:
    """The rows after the plan was stored (and its notification delivered)."""
    rows = {(r.threshold_pct, r.included_minutes): r.status for r in recorded}
    for change in plan.status_changes:
        rows[(change.threshold_pct, change.included_minutes)] = change.status
    for threshold, status in plan.new_alerts:
        rows[(threshold, included)] = status
    if plan.notify is not None:
        rows[(plan.notify, included)] = AlertStatus.NOTIFIED
    return [RecordedAlert(t, i, s) for (t, i), s in sorted(rows.items())]


@pytest.mark.parametrize(
    ("minutes", "included", "expected"),
    [
        (399, 500, ()),  # 79.8 %: just under
        (400, 500, (80,)),  # exactly 80 %
        (499, 500, (80,)),
        (500, 500, (80, 100)),  # exactly 100 %
        (525, 500, (80, 100)),
        (799, 1000, ()),
        (800, 1000, (80,)),
        (10**9, None, ()),  # unlimited never alerts
        (10, 0, ()),  # no allowance, nothing to warn about
        (0, 500, ()),
    ],
)
def test_reached_thresholds_compare_in_integers(minutes: int, included: int | None, expected: tuple[int, ...]) -> None:
    assert reached_thresholds(minutes, included, T) == expected


def test_usage_percentage() -> None:
    assert usage_percentage(399, 500) == 79.8
    assert usage_percentage(400, 500) == 80.0
    assert usage_percentage(5, None) is None
    assert usage_percentage(5, 0) is None


def test_parse_thresholds() -> None:
    assert parse_thresholds("100, 80,80") == (80, 100)
    assert parse_thresholds([90]) == (90,)
    for bad in ("", "eighty", "0", "1001", "80,x"):
        with pytest.raises(ValueError):
            parse_thresholds(bad)


def test_exactly_80_percent_alerts_once_and_just_under_does_not() -> None:
    assert decide(399, []).is_empty
    plan = decide(400, [])
    assert plan == AlertPlan(new_alerts=((80, AlertStatus.PENDING),), notify=80)
    assert decide(420, applied(plan, [], 500)).is_empty  # a rerun sends nothing


def test_jump_from_70_to_105_percent_sends_only_100_and_supersedes_80() -> None:
    assert decide(350, []).is_empty
    plan = decide(525, [])
    assert plan.new_alerts == ((80, AlertStatus.SUPERSEDED), (100, AlertStatus.PENDING))
    assert plan.notify == 100
    assert decide(600, applied(plan, [], 500)).is_empty


def test_80_then_100_on_later_days_sends_both() -> None:
    first = decide(410, [])
    rows = applied(first, [], 500)
    second = decide(500, rows)
    assert second == AlertPlan(new_alerts=((100, AlertStatus.PENDING),), notify=100)


def test_failed_delivery_is_retried_while_true() -> None:
    recorded = [RecordedAlert(80, 500, AlertStatus.PENDING)]
    assert decide(430, recorded) == AlertPlan(notify=80)


def test_failed_80_overtaken_by_100_is_superseded_not_sent() -> None:
    recorded = [RecordedAlert(80, 500, AlertStatus.PENDING)]
    plan = decide(510, recorded)
    assert plan.status_changes == (StatusChange(80, 500, AlertStatus.SUPERSEDED),)
    assert plan.new_alerts == ((100, AlertStatus.PENDING),) and plan.notify == 100


def test_pending_alert_that_is_no_longer_true_is_withdrawn() -> None:
    recorded = [RecordedAlert(80, 500, AlertStatus.PENDING)]  # usage corrected downwards since
    assert decide(300, recorded) == AlertPlan(
        status_changes=(StatusChange(80, 500, AlertStatus.WITHDRAWN),)
    )


def test_tier_change_re_arms_the_thresholds() -> None:
    # 450 of 500 minutes (90 %): the 80 % alert went out; then an upgrade to 1000 minutes.
    rows = applied(decide(450, []), [], 500)
    assert rows == [RecordedAlert(80, 500, AlertStatus.NOTIFIED)]
    assert decide(450, rows, 1000).is_empty  # 45 % of the new allowance
    plan = decide(800, rows, 1000)
    assert plan == AlertPlan(new_alerts=((80, AlertStatus.PENDING),), notify=80)


def test_tier_change_withdraws_pending_alerts_of_the_old_tier() -> None:
    recorded = [RecordedAlert(80, 500, AlertStatus.PENDING)]
    plan = decide(450, recorded, 1000)
    assert plan == AlertPlan(status_changes=(StatusChange(80, 500, AlertStatus.WITHDRAWN),))
    plan = decide(450, recorded, None)  # upgraded to unlimited
    assert plan == AlertPlan(status_changes=(StatusChange(80, 500, AlertStatus.WITHDRAWN),))


def test_unlimited_never_alerts() -> None:
    assert decide(100_000, [], None).is_empty


def test_configurable_thresholds() -> None:
    plan = decide(480, [], thresholds=(50, 90, 100))
    assert plan.new_alerts == ((50, AlertStatus.SUPERSEDED), (90, AlertStatus.PENDING)) and plan.notify == 90


def test_days_left_in_period() -> None:
    assert days_left_in_period(END, END - timedelta(days=10)) == 10
    assert days_left_in_period(END, END - timedelta(days=9, hours=18)) == 10  # a started day counts
    assert days_left_in_period(END, END - timedelta(minutes=1)) == 1
    assert days_left_in_period(END, END) == 0
    assert days_left_in_period(END, END + timedelta(days=2)) == 0


TODAY = date(2026, 3, 20)


def days_back(*offsets: int, minutes: int = 30) -> dict[date, int]:
    return {TODAY - timedelta(days=n): minutes for n in offsets}


def test_silence_detection() -> None:
    daily = {
        "cus_silent": days_back(*range(3, 15)),  # 12 active days, none in the last 2
        "cus_quiet_one_day": days_back(*range(2, 15)),  # used the day before yesterday
        "cus_occasional": days_back(3, 5, 9),  # never "mostly active"
        "cus_active": days_back(*range(1, 15)),
        "cus_exactly_8": days_back(*range(3, 11)),
        "cus_7": days_back(*range(3, 10)),
        "cus_today_only": {TODAY: 10} | days_back(*range(3, 15)),  # today's partial day is not looked at
        "cus_old": days_back(*range(15, 40)),  # active long ago, outside the window
    }
    found = {s.customer_id: s for s in find_silent_customers(daily, TODAY)}
    assert sorted(found) == ["cus_exactly_8", "cus_silent", "cus_today_only"]
    silent = found["cus_silent"]
    assert silent.active_days == 12
    assert silent.last_usage_date == TODAY - timedelta(days=3)
    assert silent.silent_since == TODAY - timedelta(days=2)
    assert silent.days_silent(TODAY) == 2


def test_silence_zero_minute_days_are_not_usage() -> None:
    daily = {"cus": days_back(*range(3, 15)) | days_back(1, 2, minutes=0)}
    assert [s.customer_id for s in find_silent_customers(daily, TODAY)] == ["cus"]


def test_silence_policy_validation() -> None:
    with pytest.raises(ValueError):
        SilencePolicy(window_days=14, quiet_days=14)
    with pytest.raises(ValueError):
        SilencePolicy(window_days=14, quiet_days=2, min_active_days=13)
    assert SilencePolicy().window(TODAY) == (date(2026, 3, 6), date(2026, 3, 19))

"""usage_alerts / usage_silence on SQLite and PostgreSQL: idempotent recording, delivery state, reports."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

from aisyst_pipelines.billing.thresholds import AlertStatus, RecordedAlert, SilentCustomer, plan_alerts
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse import usage_alerts_store as store
from aisyst_pipelines.warehouse.schema import usage_daily

START = datetime(2026, 3, 1, tzinfo=timezone.utc)
END = datetime(2026, 4, 1, tzinfo=timezone.utc)
NOW = datetime(2026, 3, 20, 6, 0, tzinfo=timezone.utc)
T = (80, 100)


def facts(minutes: int, included: int = 500, customer: str = "cus_A") -> store.AlertFacts:
    return store.AlertFacts(customer, "sub_" + customer, START, END, "Tier 1", included, minutes, minutes * 100 / included)


def run_plan(warehouse: Warehouse, minutes: int, included: int = 500, customer: str = "cus_A"):  # noqa: ANN201
    recorded = store.recorded_alerts(warehouse, [(customer, START)])[(customer, START)]
    plan = plan_alerts(minutes, included, recorded, T)
    store.record_plan(warehouse, facts(minutes, included, customer), plan, NOW)
    return plan


def test_jump_records_superseded_and_pending_and_rerun_is_a_no_op(warehouse: Warehouse) -> None:
    plan = run_plan(warehouse, 525)
    assert plan.notify == 100
    assert run_plan(warehouse, 525).notify == 100  # not delivered yet: still to notify, no new rows
    rows = store.recorded_alerts(warehouse, [("cus_A", START)])[("cus_A", START)]
    assert sorted(rows, key=lambda r: r.threshold_pct) == [
        RecordedAlert(80, 500, AlertStatus.SUPERSEDED), RecordedAlert(100, 500, AlertStatus.PENDING)
    ]
    key = store.AlertKey("cus_A", START, 500, 100)
    assert store.pending_alert(warehouse, key) is not None
    store.record_delivery(warehouse, key, NOW, None)
    assert store.pending_alert(warehouse, key) is None
    assert run_plan(warehouse, 530).is_empty
    assert store.status_counts(warehouse) == {"notified": 1, "superseded": 1}


def test_failed_delivery_stays_pending_and_is_never_marked_sent(warehouse: Warehouse) -> None:
    run_plan(warehouse, 410)
    key = store.AlertKey("cus_A", START, 500, 80)
    store.record_delivery(warehouse, key, NOW, "SMTP server 127.0.0.1:25 did not accept the message: 550 no")
    store.record_delivery(warehouse, key, NOW + timedelta(hours=1), "cannot connect to SMTP server 127.0.0.1:25")
    row = store.pending_alert(warehouse, key)
    assert row is not None and row.status is AlertStatus.PENDING and row.notified_at is None
    assert row.attempts == 2 and row.last_error == "cannot connect to SMTP server 127.0.0.1:25"
    assert [r.key for r in store.undelivered_alerts(warehouse)] == [key]
    assert run_plan(warehouse, 420).notify == 80  # the next run retries
    store.record_delivery(warehouse, key, NOW + timedelta(days=1), None)
    [row] = store.alerts_in_periods(warehouse, [("cus_A", START)])
    assert row.status is AlertStatus.NOTIFIED and row.attempts == 3 and row.last_error is None
    assert row.notified_at == NOW + timedelta(days=1) and row.crossed_at == NOW
    assert store.undelivered_alerts(warehouse) == []


def test_tier_change_keys_rows_by_included_minutes(warehouse: Warehouse) -> None:
    run_plan(warehouse, 450)
    store.record_delivery(warehouse, store.AlertKey("cus_A", START, 500, 80), NOW, None)
    assert run_plan(warehouse, 850, included=1000).notify == 80
    rows = store.alerts_in_periods(warehouse, [("cus_A", START)])
    assert [(r.included_minutes, r.threshold_pct, r.status) for r in rows] == [
        (500, 80, AlertStatus.NOTIFIED), (1000, 80, AlertStatus.PENDING)
    ]


def test_expire_pending_alerts_of_periods_that_are_no_longer_current(warehouse: Warehouse) -> None:
    run_plan(warehouse, 410)
    run_plan(warehouse, 410, customer="cus_B")
    assert store.expire_pending(warehouse, [("cus_A", START), ("cus_B", START)]) == 0
    assert store.expire_pending(warehouse, [("cus_A", END)]) == 2  # A renewed, B's subscription ended
    assert store.status_counts(warehouse) == {"expired": 2}


def test_ops_report_once_per_status(warehouse: Warehouse) -> None:
    run_plan(warehouse, 525)
    key = store.AlertKey("cus_A", START, 500, 100)
    store.record_delivery(warehouse, key, NOW, "550 refused")
    report = store.alerts_to_report(warehouse)
    assert [(r.threshold_pct, r.status) for r in report] == [(80, AlertStatus.SUPERSEDED), (100, AlertStatus.PENDING)]
    store.mark_reported(warehouse, report, [], NOW)
    assert store.alerts_to_report(warehouse) == []
    store.record_delivery(warehouse, key, NOW, "550 refused again")
    assert store.alerts_to_report(warehouse) == []  # a repeated failure is not news
    store.record_delivery(warehouse, key, NOW, None)
    [row] = store.alerts_to_report(warehouse)  # the eventual delivery is
    assert row.status is AlertStatus.NOTIFIED


def test_silence_episodes_are_recorded_and_reported_once(warehouse: Warehouse) -> None:
    today = date(2026, 3, 20)
    with warehouse.begin() as connection:
        connection.execute(
            usage_daily.insert(),
            [
                dict(account_code=account, customer_id="cus_S", usage_date=today - timedelta(days=n), calls=3,
                     answered_calls=3, billable_seconds=600, billable_minutes=10, updated_at=NOW)
                for n in range(3, 15) for account in ("acct_1", "acct_2")
            ] + [dict(account_code="acct_x", customer_id=None, usage_date=today - timedelta(days=1), calls=1,
                      answered_calls=1, billable_seconds=60, billable_minutes=1, updated_at=NOW)],
        )
    minutes = store.daily_minutes(warehouse, ["cus_S", "cus_none"], today - timedelta(days=14), today - timedelta(days=1))
    assert minutes["cus_none"] == {}
    assert minutes["cus_S"][today - timedelta(days=3)] == 20 and len(minutes["cus_S"]) == 12
    episode = SilentCustomer("cus_S", 12, today - timedelta(days=3), today - timedelta(days=2))
    store.record_silence(warehouse, [episode], 14, NOW)
    store.record_silence(warehouse, [episode], 14, NOW + timedelta(hours=2))  # rerun: same episode
    [row] = store.silence_to_report(warehouse, [episode])
    assert row.detected_at == NOW and row.active_days == 12
    store.mark_reported(warehouse, [], [row], NOW)
    assert store.silence_to_report(warehouse, [episode]) == []


def test_a_claimed_alert_is_not_delivered_by_a_second_run_at_the_same_time(warehouse: Warehouse) -> None:
    run_plan(warehouse, 410)
    key = store.AlertKey("cus_A", START, 500, 80)
    assert store.claim_delivery(warehouse, key, NOW)
    assert not store.claim_delivery(warehouse, key, NOW + timedelta(minutes=1))  # another run, meanwhile
    store.record_delivery(warehouse, key, NOW + timedelta(minutes=1), "421 try later")
    assert store.claim_delivery(warehouse, key, NOW + timedelta(minutes=2))  # a failure releases the claim
    assert store.claim_delivery(warehouse, key, NOW + timedelta(hours=1))  # a claim of a run that died expires
    store.record_delivery(warehouse, key, NOW + timedelta(hours=1), None)
    assert not store.claim_delivery(warehouse, key, NOW + timedelta(hours=2))  # notified: nothing to claim

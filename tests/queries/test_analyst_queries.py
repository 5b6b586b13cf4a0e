"""The analyst queries of sql/queries/ run on a small, realistic warehouse and give the numbers an
analyst would work out by hand; every view of sql/views/ selects. Both backends (SQLite, PostgreSQL).

The dataset (three billing periods of four customers, one unmapped account code):

- cus_a  Starter (500 min)  Dec 450 min / 25,000 s (90 %, 80 % alert notified); Jan so far 200 min
         after 10 of 31 days → projected 620 → trending 120 minutes over
- cus_b  Pro (2,000 min)    Dec 1,100 min / 60,000 s; Jan 320 min after 10 days → projected 992
- cus_c  Unlimited          Dec 60 min / 3,000 s; Jan 25 min / 1,200 s (never trending: no allowance)
- cus_d  Starter (500 min)  Dec 520 min / 29,000 s (104 %: 80 % superseded, 100 % notified);
         subscription canceled at the renewal
- account code X has calls but no Stripe customer (unmapped).
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, text

from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.schema import (
    call_records,
    meter_corrections,
    meter_reconciliation,
    stripe_customers,
    stripe_subscriptions,
    usage_alerts,
    usage_by_period,
    usage_daily,
)

ROOT = Path(__file__).resolve().parents[2]
QUERIES = ROOT / "sql" / "queries"
VIEWS = ROOT / "sql" / "views"
DIALECTS = ("sqlite", "postgresql")


def utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=timezone.utc)


DEC, JAN, FEB = utc(2025, 12, 5), utc(2026, 1, 5), utc(2026, 2, 5)
SYNCED = utc(2026, 1, 15)


def _customers() -> list[dict[str, Any]]:
    return [
        {"customer_id": f"cus_{k}", "account_code": code, "name": name, "email": f"{k}@example.com",
         "preferred_locale": "en", "test_clock": None, "deleted": 0, "synced_at": SYNCED}
        for k, code, name in (("a", "A-100", "Alpha GmbH"), ("b", "B-200", "Beta AG"),
                              ("c", "C-300", "Gamma SE"), ("d", "D-400", "Delta KG"))
    ]


def _subscription(key: str, status: str, tier: str, included: int | None, start: datetime, end: datetime) -> dict[str, Any]:
    return {
        "subscription_id": f"sub_{key}", "customer_id": f"cus_{key}", "status": status,
        "subscription_item_id": f"si_{key}", "price_id": f"price_{tier.lower()}", "price_lookup_key": tier.lower(),
        "product_id": f"prod_{tier.lower()}", "tier_name": tier, "included_minutes": included,
        "tier_source": "price_metadata", "overage_unit_amount": None if included is None else 4, "currency": "eur",
        "current_period_start": start, "current_period_end": end, "billing_cycle_anchor": DEC,
        "billing_interval": "month", "billing_interval_count": 1, "started_at": DEC, "cancel_at_period_end": 0,
        "canceled_at": JAN if status == "canceled" else None, "ended_at": JAN if status == "canceled" else None,
        "test_clock": None, "synced_at": SYNCED,
    }


def _usage(key: str, tier: str, included: int | None, start: datetime, end: datetime,
           calls: int, seconds: int, minutes: int, computed_at: datetime) -> dict[str, Any]:
    limited = included is not None
    return {
        "subscription_id": f"sub_{key}", "period_start": start, "period_end": end, "customer_id": f"cus_{key}",
        "tier_name": tier, "included_minutes": included, "calls": calls, "billable_seconds": seconds,
        "minutes_used": minutes,
        "minutes_unused": max(included - minutes, 0) if limited else None,
        "overage_minutes": max(minutes - included, 0) if limited else 0,
        "usage_pct": round(minutes * 100 / included, 2) if limited else None,
        "computed_at": computed_at,
    }


def _alert(key: str, threshold: int, status: str, minutes: int) -> dict[str, Any]:
    return {
        "customer_id": f"cus_{key}", "period_start": DEC, "threshold_pct": threshold, "included_minutes": 500,
        "subscription_id": f"sub_{key}", "period_end": JAN, "tier_name": "Starter", "minutes_used": minutes,
        "usage_pct": minutes / 5, "crossed_at": utc(2025, 12, 28), "status": status, "attempts": 1 if status == "notified" else 0,
        "last_attempt_at": None, "claimed_at": None,
        "notified_at": utc(2025, 12, 28, 1) if status == "notified" else None,
        "ops_notified_at": utc(2025, 12, 28, 1), "last_error": None,
    }


def _reconciliation(run: str, key: str, at: datetime, cdr: int, stripe: int, repaired: int) -> dict[str, Any]:
    delta = cdr - stripe
    return {
        "run_id": run, "customer_id": f"cus_{key}", "period_start": JAN, "period_end": FEB,
        "subscription_id": f"sub_{key}", "window_start": JAN, "window_end": at.replace(hour=0), "window_closed": 0,
        "cdr_minutes": cdr, "stripe_minutes": stripe, "delta_minutes": delta, "drift_minutes": abs(delta),
        "drifting_days": 1 if delta else 0,
        "status": "match" if delta == 0 else ("under_metered" if delta > 0 else "over_metered"),
        "cause": None, "detail": None, "repaired_minutes": repaired, "unrepaired_drift_minutes": abs(delta) - repaired,
        "reconciled_at": at,
    }


def _daily(account: str, customer: str | None, day: date, calls: int, seconds: int, minutes: int) -> dict[str, Any]:
    return {"account_code": account, "usage_date": day, "customer_id": customer, "calls": calls,
            "answered_calls": calls, "billable_seconds": seconds, "billable_minutes": minutes, "updated_at": SYNCED}


def _call(call_id: str, account: str, customer: str | None, ended: datetime, seconds: int) -> dict[str, Any]:
    return {
        "call_id": call_id, "account_code": account, "customer_id": customer, "direction": "inbound",
        "disposition": "completed", "started_at": ended.replace(minute=0), "answered_at": ended.replace(minute=0),
        "ended_at": ended, "billable_seconds": seconds, "billable_minutes": (seconds + 59) // 60,
        "caller_hash": None, "callee_hash": None, "content_hash": call_id * 2, "source_file": "f.csv",
        "source_sha256": "0" * 64, "source_line": int(call_id[-1]), "ingested_at": SYNCED,
    }


def load_dataset(warehouse: Warehouse) -> None:
    with warehouse.begin() as connection:
        connection.execute(insert(stripe_customers), _customers())
        connection.execute(insert(stripe_subscriptions), [
            _subscription("a", "active", "Starter", 500, JAN, FEB),
            _subscription("b", "active", "Pro", 2000, JAN, FEB),
            _subscription("c", "active", "Unlimited", None, JAN, FEB),
            _subscription("d", "canceled", "Starter", 500, DEC, JAN),
        ])
        closed, now = utc(2026, 1, 5, 2), SYNCED  # Jan: 10 of 31 days elapsed when counted
        connection.execute(insert(usage_by_period), [
            _usage("a", "Starter", 500, DEC, JAN, 100, 25_000, 450, closed),
            _usage("a", "Starter", 500, JAN, FEB, 40, 10_000, 200, now),
            _usage("b", "Pro", 2000, DEC, JAN, 200, 60_000, 1_100, closed),
            _usage("b", "Pro", 2000, JAN, FEB, 50, 18_000, 320, now),
            _usage("c", "Unlimited", None, DEC, JAN, 30, 3_000, 60, closed),
            _usage("c", "Unlimited", None, JAN, FEB, 10, 1_200, 25, now),
            _usage("d", "Starter", 500, DEC, JAN, 90, 29_000, 520, closed),
        ])
        connection.execute(insert(usage_alerts), [
            _alert("a", 80, "notified", 402),
            _alert("d", 80, "superseded", 505),
            _alert("d", 100, "notified", 505),
        ])
        connection.execute(insert(meter_reconciliation), [
            _reconciliation("run-1", "a", utc(2026, 1, 13, 3), cdr=150, stripe=140, repaired=10),
            _reconciliation("run-2", "a", utc(2026, 1, 14, 3), cdr=180, stripe=180, repaired=0),
            _reconciliation("run-1", "b", utc(2026, 1, 13, 3), cdr=240, stripe=240, repaired=0),
        ])
        connection.execute(insert(meter_corrections), [{
            "identifier": "cus_a-2026-01-12-1", "customer_id": "cus_a", "usage_date": date(2026, 1, 12),
            "period_start": JAN, "value": 10, "event_timestamp": utc(2026, 1, 12, 12), "reason": "under_metered",
            "run_id": "run-1", "created_at": utc(2026, 1, 13, 3), "sent_at": utc(2026, 1, 13, 3), "status": "sent",
            "attempts": 1, "last_error": None,
        }])
        connection.execute(insert(usage_daily), [
            _daily("X-999", None, date(2025, 12, 20), 2, 120, 2),
            _daily("X-999", None, date(2026, 1, 3), 5, 900, 17),
            _daily("X-999", None, date(2026, 1, 10), 3, 400, 8),
            _daily("A-100", "cus_a", date(2026, 1, 10), 4, 700, 13),
        ])
        connection.execute(insert(call_records), [
            _call("call-1", "X-999", None, utc(2026, 1, 10, 9), 61),
            _call("call-2", "A-100", "cus_a", utc(2026, 1, 10, 10), 59),
        ])


def query_files(dialect: str) -> list[Path]:
    """The .sql files that run on `dialect`: portable ones, and <name>.<dialect>.sql variants."""
    others = [d for d in DIALECTS if d != dialect]
    return sorted(p for p in QUERIES.glob("*.sql") if not any(p.name.endswith(f".{o}.sql") for o in others))


def run_query(warehouse: Warehouse, name: str) -> list[dict[str, Any]]:
    path = QUERIES / f"{name}.sql"
    if not path.exists():
        path = QUERIES / f"{name}.{warehouse.dialect}.sql"
    with warehouse.connect() as connection:
        return [dict(row) for row in connection.execute(text(path.read_text(encoding="utf-8"))).mappings()]


def num(value: Any) -> float:
    return float(value) if isinstance(value, (Decimal, int, float)) else value


@pytest.fixture
def analyst_warehouse(warehouse: Warehouse) -> Warehouse:
    load_dataset(warehouse)
    return warehouse


def test_every_query_file_has_a_header_and_runs(analyst_warehouse: Warehouse) -> None:
    files = query_files(analyst_warehouse.dialect)
    assert len(files) >= 7
    for path in files:
        sql = path.read_text(encoding="utf-8")
        assert sql.startswith("--") and "Question" in sql and "Parameters" in sql and "Caveats" in sql, path.name
        with analyst_warehouse.connect() as connection:
            rows = connection.execute(text(sql)).all()
        assert rows, f"{path.name} returned no rows on the test dataset"


def test_every_dialect_specific_query_has_both_versions() -> None:
    for path in QUERIES.glob("*.sql"):
        for dialect in DIALECTS:
            if path.name.endswith(f".{dialect}.sql"):
                stem = path.name[: -len(f".{dialect}.sql")]
                assert all((QUERIES / f"{stem}.{d}.sql").exists() for d in DIALECTS), path.name
                assert not (QUERIES / f"{stem}.sql").exists()


def test_every_view_selects(analyst_warehouse: Warehouse) -> None:
    views = sorted(p.stem for p in VIEWS.glob("*.sql"))
    assert {"v_current_usage", "v_customer_dashboard", "v_reconciliation_latest", "v_unmapped_usage"} <= set(views)
    with analyst_warehouse.connect() as connection:
        counts = {view: len(connection.execute(text(f"SELECT * FROM {view}")).all()) for view in views}
    assert counts["v_current_usage"] == 3  # the canceled subscription is left out
    assert counts["v_customer_dashboard"] == 4
    assert counts["v_reconciliation_latest"] == 2  # newest run of cus_a's and cus_b's January
    assert counts["v_unmapped_usage"] == 1


def test_monthly_minutes_per_tier(analyst_warehouse: Warehouse) -> None:
    rows = {(r["billing_month"], r["tier_name"]): r for r in run_query(analyst_warehouse, "monthly_minutes_per_tier")}
    assert sorted(rows) == [
        ("2025-12", "Pro"), ("2025-12", "Starter"), ("2025-12", "Unlimited"),
        ("2026-01", "Pro"), ("2026-01", "Starter"), ("2026-01", "Unlimited"),
    ]
    december_starter = rows[("2025-12", "Starter")]
    assert (december_starter["subscriptions"], december_starter["calls"]) == (2, 190)
    assert (num(december_starter["minutes_used"]), num(december_starter["overage_minutes"])) == (970, 20)
    assert december_starter["subscriptions_in_overage"] == 1
    assert num(rows[("2025-12", "Pro")]["minutes_used"]) == 1_100
    assert num(rows[("2026-01", "Starter")]["minutes_used"]) == 200
    assert num(rows[("2026-01", "Unlimited")]["minutes_used"]) == 25
    assert num(rows[("2026-01", "Unlimited")]["overage_minutes"]) == 0


def test_rounding_uplift_per_tier(analyst_warehouse: Warehouse) -> None:
    rows = {r["tier_name"]: r for r in run_query(analyst_warehouse, "rounding_uplift_per_tier")}
    starter = rows["Starter"]  # 64,000 s = 1,066.67 raw minutes, 1,170 billed
    assert num(starter["billable_seconds"]) == 64_000 and num(starter["billable_minutes"]) == 1_170
    assert num(starter["raw_minutes"]) == pytest.approx(1066.67)
    assert num(starter["uplift_minutes"]) == pytest.approx(103.33)
    assert num(starter["uplift_pct"]) == pytest.approx(9.69)
    assert starter["customers"] == 2
    pro = rows["Pro"]  # 78,000 s = 1,300 raw minutes, 1,420 billed: +120 = 9.23 %
    assert num(pro["raw_minutes"]) == pytest.approx(1300) and num(pro["uplift_minutes"]) == pytest.approx(120)
    assert num(pro["uplift_pct"]) == pytest.approx(9.23)
    unlimited = rows["Unlimited"]  # 4,200 s = 70 raw minutes, 85 billed: +15 = 21.43 %
    assert num(unlimited["uplift_minutes"]) == pytest.approx(15) and num(unlimited["uplift_pct"]) == pytest.approx(21.43)


def test_rounding_uplift_per_customer(analyst_warehouse: Warehouse) -> None:
    rows = run_query(analyst_warehouse, "rounding_uplift_per_customer")
    assert [r["customer_id"] for r in rows] == ["cus_b", "cus_a", "cus_d", "cus_c"]  # most uplift first
    cus_a = rows[1]  # 35,000 s = 583.33 raw, 650 billed over 140 calls
    assert cus_a["account_code"] == "A-100" and cus_a["periods"] == 2
    assert num(cus_a["uplift_minutes"]) == pytest.approx(66.67)
    assert num(cus_a["uplift_pct"]) == pytest.approx(11.43)
    assert num(cus_a["uplift_per_call_seconds"]) == pytest.approx(28.6)  # 4,000 s over 140 calls


def test_customers_trending_to_overage(analyst_warehouse: Warehouse) -> None:
    rows = run_query(analyst_warehouse, "customers_trending_to_overage")
    # Only cus_a: 200 minutes in 10 of 31 days → 620 by the end of the period, 120 over its 500.
    # cus_b projects 992 of 2,000; cus_c is unlimited; cus_d's subscription is canceled.
    assert [r["customer_id"] for r in rows] == ["cus_a"]
    (row,) = rows
    assert (row["tier_name"], row["included_minutes"], num(row["minutes_used"])) == ("Starter", 500, 200)
    assert num(row["projected_minutes"]) == 620
    assert num(row["projected_overage_minutes"]) == 120
    assert num(row["projected_usage_pct"]) == pytest.approx(124.0)


def test_trending_needs_a_day_of_pace(analyst_warehouse: Warehouse) -> None:
    with analyst_warehouse.begin() as connection:  # counted 12 hours into the period: too early to project
        connection.execute(
            usage_by_period.update().where(usage_by_period.c.subscription_id == "sub_a", usage_by_period.c.period_start == JAN)
            .values(computed_at=utc(2026, 1, 5, 12))
        )
    assert run_query(analyst_warehouse, "customers_trending_to_overage") == []


def test_reconciliation_history(analyst_warehouse: Warehouse) -> None:
    rows = run_query(analyst_warehouse, "reconciliation_history")
    assert [(r["customer_id"], r["run_id"]) for r in rows] == [("cus_a", "run-1"), ("cus_a", "run-2"), ("cus_b", "run-1")]
    first, second, other = rows
    assert (num(first["delta_minutes"]), first["previous_delta_minutes"], first["status"]) == (10, None, "under_metered")
    assert (first["corrections_planned"], num(first["corrections_sent_minutes"])) == (1, 10)
    assert num(first["unrepaired_drift_minutes"]) == 0
    assert (num(second["delta_minutes"]), num(second["previous_delta_minutes"]), second["status"]) == (0, 10, "match")
    assert (second["corrections_planned"], num(second["corrections_sent_minutes"])) == (0, 0)
    assert other["account_code"] == "B-200" and other["previous_delta_minutes"] is None


def test_unmapped_usage_by_month(analyst_warehouse: Warehouse) -> None:
    rows = run_query(analyst_warehouse, "unmapped_usage_by_month")
    assert [(r["account_code"], r["usage_month"], r["days_with_calls"], num(r["billable_minutes"])) for r in rows] == [
        ("X-999", "2025-12", 1, 2),
        ("X-999", "2026-01", 2, 25),
    ]


def test_alerts_per_period(analyst_warehouse: Warehouse) -> None:
    rows = run_query(analyst_warehouse, "alerts_per_period")
    summary = [(r["billing_month"], r["threshold_pct"], r["reached"], num(r["notified"]), num(r["superseded"])) for r in rows]
    assert summary == [("2025-12", 80, 2, 1, 1), ("2025-12", 100, 1, 1, 0)]
    assert all(num(r["ops_listed"]) == r["reached"] for r in rows)

"""Tier resolution (billing/tiers.py) and per-period usage figures (billing/usage.py, stripe_sync_store)."""

import json
from datetime import datetime, timedelta, timezone
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import insert

from aisyst_pipelines.billing.periods import Period
from aisyst_pipelines.billing.tiers import (
    DEFAULT_TIERS_FILE,
    PriceFacts,
    TierSource,
    load_tier_catalog,
    parse_included_minutes,
    parse_legacy_price_ids,
    parse_tier_catalog,
    resolve_tier,
)
from aisyst_pipelines.billing.usage import CallTotals, PeriodUsage
from aisyst_pipelines.warehouse import Warehouse, stripe_sync_store
from aisyst_pipelines.warehouse.schema import call_records

CATALOG = load_tier_catalog()


def test_the_packaged_tiers_file_is_the_design_table() -> None:
    rows = [(t.name, t.included_minutes, t.unit_amount, t.currency, t.interval) for t in CATALOG.tiers]
    assert rows == [
        ("Tier 1", 500, 29900, "usd", "month"),
        ("Tier 2", 1000, 49900, "usd", "month"),
        ("Tier 3", None, 89900, "usd", "month"),
    ]
    gst = CATALOG.tax_rate("au_gst")
    assert (gst.display_name, gst.percentage, gst.inclusive) == ("GST", Decimal("10"), False)
    assert all(t.overage_unit_amount is None for t in CATALOG.tiers)
    assert CATALOG.tiers[2].included_minutes_text() == "unlimited"


@pytest.mark.parametrize(("raw", "expected"), [(500, 500), ("1000", 1000), (" unlimited ", None), ("UNLIMITED", None), (0, 0)])
def test_parse_included_minutes(raw, expected) -> None:
    assert parse_included_minutes(raw) == expected


@pytest.mark.parametrize("raw", ["", "5OO", "-1", -5, 1.5, None, True, "unlimted"])
def test_parse_included_minutes_refuses_anything_else(raw) -> None:
    with pytest.raises(ValueError):
        parse_included_minutes(raw)


def test_price_metadata_wins_over_product_metadata_and_the_file() -> None:
    facts = PriceFacts(
        price_id="price_x", lookup_key="aisyst_tier_1_monthly",
        price_metadata={"aisyst_included_minutes": "750"},
        product_name="Tier 1", product_metadata={"aisyst_included_minutes": "500"},
    )
    resolved = resolve_tier(facts, CATALOG, {})
    assert (resolved.tier_name, resolved.included_minutes, resolved.source) == ("Tier 1", 750, TierSource.PRICE_METADATA)


def test_product_metadata_unlimited_is_none() -> None:
    facts = PriceFacts(price_id="price_y", product_name="Premium", product_metadata={"aisyst_included_minutes": "unlimited"})
    resolved = resolve_tier(facts, CATALOG, {})
    assert (resolved.tier_name, resolved.included_minutes, resolved.source) == ("Premium", None, TierSource.PRODUCT_METADATA)
    assert resolved.is_known


def test_tiers_file_by_lookup_key_then_legacy_price_ids() -> None:
    by_lookup = resolve_tier(PriceFacts(price_id="price_a", lookup_key="aisyst_tier_2_monthly"), CATALOG, {})
    assert (by_lookup.tier_name, by_lookup.included_minutes, by_lookup.source) == ("Tier 2", 1000, TierSource.TIERS_FILE)
    legacy = resolve_tier(PriceFacts(price_id="price_old3", product_name="Old plan"), CATALOG, {"price_old3": 3})
    assert (legacy.tier_name, legacy.included_minutes, legacy.source) == ("Tier 3", None, TierSource.LEGACY_PRICE_ID)


def test_an_unknown_price_is_reported_as_unknown_not_unlimited_by_accident() -> None:
    resolved = resolve_tier(PriceFacts(price_id="price_z", nickname="Something"), CATALOG, {"price_other": 1})
    assert resolved.source is TierSource.UNKNOWN and not resolved.is_known
    assert resolved.tier_name == "Something"


def test_a_typo_in_metadata_is_an_error_naming_the_price() -> None:
    with pytest.raises(ValueError, match="price_typo"):
        resolve_tier(PriceFacts(price_id="price_typo", price_metadata={"aisyst_included_minutes": "5OO"}), CATALOG, {})


def test_overage_rate_from_metadata_or_the_file(tmp_path: Path) -> None:
    document = json.loads(DEFAULT_TIERS_FILE.read_text())
    document["tiers"][0]["overage_unit_amount"] = 12
    del document["tax_rates"]
    catalog = parse_tier_catalog(document)
    assert catalog.tax_rates == ()
    from_file = resolve_tier(PriceFacts(price_id="p", lookup_key="aisyst_tier_1_monthly"), catalog, {})
    assert from_file.overage_unit_amount == 12
    from_metadata = resolve_tier(
        PriceFacts(price_id="p", lookup_key="aisyst_tier_1_monthly", price_metadata={"aisyst_overage_unit_amount": "9"}),
        catalog, {},
    )
    assert from_metadata.overage_unit_amount == 9


def test_legacy_variables_of_the_integration_guide() -> None:
    environ = {"STRIPE_TIER1_PRICE_ID": "price_1", "STRIPE_TIER3_PRICE_ID": " price_3 ", "STRIPE_TIER2_PRICE_ID": ""}
    assert parse_legacy_price_ids(environ) == {"price_1": 1, "price_3": 3}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda d: d["tiers"][0].pop("lookup_key"), "tier 1 lacks the field 'lookup_key'"),
        (lambda d: d["tiers"][1].update(included_minutes="lots"), "tier 2"),
        (lambda d: d["tiers"][1].update(lookup_key=d["tiers"][0]["lookup_key"]), "same lookup_key"),
        (lambda d: d["tiers"][0].update(unit_amount=299.0), "unit_amount"),
        (lambda d: d.update(tiers=[]), "non-empty"),
        (lambda d: d["tax_rates"][0].update(percentage="ten"), "not a number"),
        (lambda d: d["tax_rates"][0].pop("key"), "lacks the field 'key'"),
        (lambda d: d["tax_rates"].append(dict(d["tax_rates"][0])), "same key"),
        (lambda d: d.update(interval="fortnight"), "interval"),
    ],
)
def test_a_broken_tiers_file_is_a_clear_error(tmp_path: Path, change, message) -> None:
    document = json.loads(DEFAULT_TIERS_FILE.read_text())
    change(document)
    path = tmp_path / "tiers.json"
    path.write_text(json.dumps(document))
    with pytest.raises(ValueError, match=message):
        load_tier_catalog(path)


T0 = datetime(2027, 1, 31, tzinfo=timezone.utc)
PERIOD = Period(T0, datetime(2027, 2, 28, tzinfo=timezone.utc))


def test_calls_count_in_the_period_of_their_end(warehouse: Warehouse) -> None:
    def call(call_id: str, ended: datetime, seconds: int, minutes: int) -> dict:
        return dict(call_id=call_id, account_code="acct", customer_id="cus_1", direction="inbound", disposition="completed",
                    started_at=ended - timedelta(seconds=seconds), answered_at=ended - timedelta(seconds=seconds),
                    ended_at=ended, billable_seconds=seconds, billable_minutes=minutes, content_hash=call_id,
                    source_file="calls.csv", source_sha256="0" * 64, source_line=1, ingested_at=T0)

    with warehouse.begin() as connection:
        connection.execute(insert(call_records), [
            call("previous", T0 - timedelta(seconds=1), 30, 1),  # previous period
            call("at-start", T0, 61, 2),  # exactly at the start: in
            call("last", PERIOD.end - timedelta(microseconds=1), 120, 2),
            call("at-end", PERIOD.end, 600, 10),  # exactly at the end: next period
        ])
    window = ("cus_1", PERIOD.start, PERIOD.end)
    totals = stripe_sync_store.call_totals_in_windows(warehouse, [window])
    assert totals[window] == CallTotals(calls=2, billable_seconds=181, billable_minutes=4)


@pytest.mark.parametrize(
    ("included", "used", "unused", "overage", "pct"),
    [(500, 395, 105, 0, 79.0), (500, 500, 0, 0, 100.0), (500, 612, 0, 112, 122.4), (None, 1234, None, 0, None), (0, 7, 0, 7, None)],
)
def test_period_usage_figures(included, used, unused, overage, pct) -> None:
    usage = PeriodUsage(PERIOD, included, CallTotals(calls=10, billable_seconds=used * 55, billable_minutes=used))
    assert (usage.minutes_used, usage.minutes_unused, usage.overage_minutes, usage.usage_pct) == (used, unused, overage, pct)


def test_an_older_tiers_file_with_one_tax_rate_still_reads() -> None:
    """Tiers files from before issue 15 carry one `tax_rate` object: it keeps working, as key "default"."""
    document = json.loads(DEFAULT_TIERS_FILE.read_text())
    [rate] = document.pop("tax_rates")
    del rate["key"]
    document["tax_rate"] = rate
    catalog = parse_tier_catalog(document)
    assert [(r.key, r.display_name) for r in catalog.tax_rates] == [("default", "GST")]
    with pytest.raises(ValueError, match="no tax rate 'au_gst'"):
        catalog.tax_rate("au_gst")

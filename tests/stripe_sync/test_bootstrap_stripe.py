"""`aisyst bootstrap-stripe` against the emulator: the catalog once, idempotently, with the env lines."""

import json
from pathlib import Path

import pytest

from aisyst_pipelines.billing.tiers import DEFAULT_TIERS_FILE
from aisyst_pipelines.cli import main


@pytest.fixture
def local_mode(stripe_emulator, monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """No STRIPE_SECRET_KEY: the emulator is meant, found at STRIPE_API_BASE."""
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    monkeypatch.delenv("AISYST_TIERS_FILE", raising=False)
    monkeypatch.setenv("STRIPE_API_BASE", stripe_emulator.url)
    monkeypatch.setenv("AISYST_HOME", str(tmp_path / "home"))
    return stripe_emulator


def env_lines(output: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in output.splitlines() if line.startswith("STRIPE_"))


def objects(emulator, kind: str) -> list[dict]:
    return emulator.dump()["objects"].get(kind, [])


def test_bootstrap_creates_the_catalog_once(local_mode, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["bootstrap-stripe"]) == 0
    first = capsys.readouterr().out
    assert "8 created, 0 found." in first
    lines = env_lines(first)
    assert set(lines) == {"STRIPE_TIER1_PRICE_ID", "STRIPE_TIER2_PRICE_ID", "STRIPE_TIER3_PRICE_ID",
                          "STRIPE_VOICE_METER_ID", "STRIPE_TAX_RATE_ID"}

    prices = {price["id"]: price for price in objects(local_mode, "price")}
    included = [prices[lines[f"STRIPE_TIER{n}_PRICE_ID"]]["metadata"]["aisyst_included_minutes"] for n in (1, 2, 3)]
    assert included == ["500", "1000", "unlimited"]
    tier1 = prices[lines["STRIPE_TIER1_PRICE_ID"]]
    assert (tier1["lookup_key"], tier1["unit_amount"], tier1["currency"], tier1["recurring"]["interval"]) == (
        "aisyst_tier_1_monthly", 29900, "usd", "month")
    [meter] = objects(local_mode, "billing.meter")
    assert meter["id"] == lines["STRIPE_VOICE_METER_ID"]
    assert (meter["event_name"], meter["default_aggregation"]["formula"]) == ("voice_call_minutes", "sum")
    assert meter["customer_mapping"] == {"type": "by_id", "event_payload_key": "stripe_customer_id"}
    assert meter["value_settings"] == {"event_payload_key": "value"}
    [tax_rate] = objects(local_mode, "tax_rate")
    assert (tax_rate["display_name"], float(tax_rate["percentage"]), tax_rate["inclusive"]) == ("GST", 10.0, False)

    writes_before = len(local_mode.requests(method="POST"))
    assert main(["bootstrap-stripe"]) == 0
    second = capsys.readouterr().out
    assert "0 created, 8 found." in second
    assert env_lines(second) == lines
    assert len(local_mode.requests(method="POST")) == writes_before  # the second run wrote nothing
    assert [len(objects(local_mode, kind)) for kind in ("product", "price", "billing.meter", "tax_rate")] == [3, 3, 1, 1]


def test_a_changed_amount_moves_the_lookup_key_to_a_new_price(local_mode, tmp_path: Path, capsys) -> None:
    assert main(["bootstrap-stripe"]) == 0
    old = env_lines(capsys.readouterr().out)["STRIPE_TIER1_PRICE_ID"]
    document = json.loads(DEFAULT_TIERS_FILE.read_text())
    document["tiers"][0]["unit_amount"] = 31900
    del document["tax_rates"]
    tiers = tmp_path / "tiers.json"
    tiers.write_text(json.dumps(document))
    assert main(["bootstrap-stripe", "--tiers", str(tiers)]) == 0
    output = capsys.readouterr().out
    new = env_lines(output)["STRIPE_TIER1_PRICE_ID"]
    assert new != old and "1 created" in output and "STRIPE_TAX_RATE_ID" not in output
    prices = {price["id"]: price for price in objects(local_mode, "price")}
    assert (prices[new]["lookup_key"], prices[new]["unit_amount"]) == ("aisyst_tier_1_monthly", 31900)
    assert prices[old]["lookup_key"] is None


def test_an_unreachable_emulator_gets_a_clear_hint(unused_port: int, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    monkeypatch.setenv("STRIPE_API_BASE", f"http://127.0.0.1:{unused_port}")
    monkeypatch.setenv("AISYST_HOME", str(tmp_path / "home"))
    assert main(["bootstrap-stripe"]) == 2
    error = capsys.readouterr().err
    assert f"not reachable at http://127.0.0.1:{unused_port}" in error and "aisyst emulator" in error


def test_a_live_key_is_refused_without_the_opt_in(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys) -> None:
    monkeypatch.setenv("STRIPE_SECRET_KEY", "sk_" + "live_" + "x" * 10)
    monkeypatch.delenv("AISYST_ALLOW_LIVE_MODE", raising=False)
    monkeypatch.setenv("AISYST_HOME", str(tmp_path / "home"))
    assert main(["bootstrap-stripe"]) == 2
    error = capsys.readouterr().err
    assert "AISYST_ALLOW_LIVE_MODE=true" in error and "x" * 10 not in error

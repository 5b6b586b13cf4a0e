"""`aisyst reconcile`: the reconciliation service now, exit 1 while drift is left unrepaired."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from aisyst_pipelines.simulation import VoiceServerFaults
from aisyst_pipelines.cli import main

from .conftest import ReconWorld

AS_OF = datetime(2026, 3, 14, 2, 0, tzinfo=timezone.utc)


def test_reconcile_command_reports_and_repairs(recon_world: ReconWorld, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    world = recon_world
    world.sign_up_all(["acct_a"])
    world.load_calls(days=10, seed=4)
    inside = sorted(c.call_id for c in world.metered_calls()
                    if c.billable_minutes and datetime(2026, 3, 6, tzinfo=timezone.utc) <= c.ended_at < AS_OF)
    world.plan_voice_server(VoiceServerFaults(drop=frozenset(inside[:1])))
    world.send(AS_OF)
    monkeypatch.setenv("AISYST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AISYST_WAREHOUSE_URL", world.warehouse.url)
    monkeypatch.setenv("STRIPE_API_BASE", world.emulator.url)
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    monkeypatch.delenv("DAGSTER_HOME", raising=False)

    assert main(["reconcile", "--as-of", AS_OF.isoformat()]) == 1
    out = capsys.readouterr().out
    assert "under metered 1" in out and "FAILED" in out
    assert main(["reconcile", "--as-of", AS_OF.isoformat(), "--repair"]) == 0
    assert "corrections sent 1" in capsys.readouterr().out
    assert len(world.ledger()) == 1


def test_a_failed_run_exits_1_with_its_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                              capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AISYST_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("AISYST_WAREHOUSE_URL", raising=False)
    monkeypatch.delenv("STRIPE_SECRET_KEY", raising=False)
    # An instant without its UTC offset is refused before anything is compared or sent.
    assert main(["reconcile", "--as-of", "2026-03-14T02:00:00"]) == 1
    assert "needs a UTC offset" in capsys.readouterr().err

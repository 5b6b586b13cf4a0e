"""Named causes end to end: a CDR loaded twice under another call id, and calls of an account code
that two customers carry (so the CDRs stay unmapped while the voice server metered them)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone

import pandas as pd

from aisyst_pipelines.simulation import MeteredCall, simulate_calls

from .conftest import T0, ReconWorld

UTC = timezone.utc
AS_OF = datetime(2026, 3, 14, 2, 0, tzinfo=UTC)


def test_duplicate_cdr_is_named_and_never_corrected(recon_world: ReconWorld) -> None:
    world = recon_world
    world.sign_up_all(["acct_a"])
    calls = world.load_calls(days=10, seed=9)
    answered = calls[(calls["disposition"] == "completed") & (calls["ended_at"] > pd.Timestamp(T0 + timedelta(days=2)))]
    twin = answered.iloc[[0]].copy()
    original_id = twin["call_id"].iloc[0]
    twin["call_id"] = original_id + "-reexport"
    world.load_frame(twin, "reexport.csv")  # the same call again, under another id
    metered = [c for c in world.metered_calls() if c.call_id != original_id + "-reexport"]
    world.plan_voice_server(calls=metered)  # the voice server metered the call once
    world.send(AS_OF)
    result = world.run(AS_OF, repair=True)
    (row,) = world.rows(result)
    minutes = next(c.billable_minutes for c in metered if c.call_id == original_id)
    assert (row["status"], row["delta_minutes"], row["cause"]) == ("under_metered", minutes, "duplicate_cdr")
    (day,) = json.loads(row["detail"])["drifting_days"]
    assert day["evidence"]["duplicate_cdr_minutes"] == minutes
    assert day["repair"]["skipped"] == "cause duplicate_cdr: for a person to judge"
    assert world.ledger() == []  # correcting would bill the call twice
    assert not result.verdict().passed


def test_unmapped_account_code_explains_over_metering(recon_world: ReconWorld) -> None:
    world = recon_world
    world.sign_up_all(["shared", "other"])
    # A second customer carries the same account code: the code is ambiguous, its calls stay unmapped.
    client = world.client
    twin = client.v1.customers.create({"name": "Twin", "metadata": {"aisyst_account_code": "shared"},
                                       "test_clock": world.clock_id})
    world.sync()
    shared_customer = world.customers["shared"]
    world.load_calls(days=10, seed=12)
    frame = simulate_calls(["shared", "other"], days=10, seed=12, start=T0.date(), mean_calls_per_day=5.0)
    shared_calls = frame[(frame["account_code"] == "shared") & (frame["disposition"] == "completed")]
    # The voice server knows its customer and meters the shared account's calls to it.
    metered = world.metered_calls() + [
        MeteredCall(r.call_id, shared_customer, r.ended_at.to_pydatetime(), -(-int(r.billable_seconds) // 60))
        for r in shared_calls.itertuples()
    ]
    world.plan_voice_server(calls=metered)
    world.send(AS_OF)
    result = world.run(AS_OF)
    rows = {r["customer_id"]: r for r in world.rows(result)}
    shared = rows[shared_customer]
    assert shared["status"] == "over_metered" and shared["cdr_minutes"] == 0
    assert shared["cause"] == "unmapped_account_code"
    assert rows[world.customers["other"]]["status"] == "match"
    assert twin.id not in rows  # no subscription, no period to reconcile
    assert result.summary().unmapped_minutes >= -shared["delta_minutes"]

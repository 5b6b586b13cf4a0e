"""The reconciliation tests' world: the shared StripeWorld (tests/stripe_world.py) on a real warehouse.

Customers on one test clock sign up at T0 (2026-03-04 14:23:17 UTC: an anniversary that is
neither minute- nor day-aligned) to Tier 1; the Stripe sync's own services mirror them; calls
from the project's simulator are written as a canonical CSV and loaded by the real CDR loader; the
voice server's meter events (with injected faults) are sent through StripeResource while the test
clock advances; the reconciliation runs through the service (`run`) or the asset with its check
(`reconcile`, through `dg.materialize`).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pytest
from sqlalchemy import select
from stripe_world import StripeWorld

from aisyst_pipelines.assets.reconciliation import ASSET_KEY, meter_reconciliation, partition_for_as_of
from aisyst_pipelines.billing.periods import Period
from aisyst_pipelines.billing.reconciliation import ReconciliationPolicy
from aisyst_pipelines.cdr.privacy import pii_key_fingerprint
from aisyst_pipelines.cdr.reader import ReadOptions, read_cdr_file
from aisyst_pipelines.services.reconciliation import ReconciliationOutcome, reconcile
from aisyst_pipelines.simulation import (
    MeteredCall,
    VoiceServerFaults,
    VoiceServerPlan,
    plan_meter_events,
    replay,
    simulate_calls,
    write_calls,
)
from aisyst_pipelines.warehouse import Warehouse, reconciliation_store
from aisyst_pipelines.warehouse.cdr_store import CdrFileIdentity, load_cdr_file
from aisyst_pipelines.warehouse.schema import call_records
from resources import WarehouseResource
from resources.reconciliation import ReconciliationConfig
from resources.stripe import StripeResource

UTC = timezone.utc
RECONCILIATION_TESTS_KEY = b"reconciliation-tests-key"
T0 = datetime(2026, 3, 4, 14, 23, 17, tzinfo=UTC)
OP = ASSET_KEY.to_python_identifier()


@dataclass(kw_only=True)
class ReconWorld(StripeWorld):
    warehouse: Warehouse
    clock: datetime
    tmp: Path
    customers: dict[str, str] = field(default_factory=dict)  # account code -> customer id
    plan: VoiceServerPlan | None = None
    sent_until: datetime | None = None

    def sign_up_all(self, account_codes: list[str]) -> None:
        """Each account signs up to Tier 1; the warehouse mirrors them."""
        for code in account_codes:
            self.customers[code] = self.sign_up(code).customer_id
        self.sync()

    def load_calls(self, days: int, seed: int = 1, mean_calls_per_day: float = 5.0, extra: pd.DataFrame | None = None,
                   name: str = "calls.csv") -> pd.DataFrame:
        """Simulated calls of every account from T0's day on, loaded by the real CDR loader."""
        calls = simulate_calls(list(self.customers), days=days, seed=seed, start=T0.date(), mean_calls_per_day=mean_calls_per_day)
        if extra is not None:
            calls = pd.concat([calls, extra], ignore_index=True)
        self.load_frame(calls, name)
        return calls

    def load_frame(self, calls: pd.DataFrame, name: str) -> None:
        path = write_calls(calls, self.tmp / "landing" / name, "canonical_csv").path
        import hashlib

        sha = hashlib.sha256(path.read_bytes()).hexdigest()
        options = ReadOptions(pii_key=RECONCILIATION_TESTS_KEY)
        # Loaded "now" on the test clock, so that ingested_at and the periods share one timeline.
        load_cdr_file(self.warehouse, CdrFileIdentity(path=str(path), sha256=sha, format="canonical_csv",
                                                      size_bytes=path.stat().st_size), read_cdr_file(path, options),
                      pii_key_fingerprint=pii_key_fingerprint(RECONCILIATION_TESTS_KEY), now=self.clock)

    def metered_calls(self) -> list[MeteredCall]:
        c = call_records.c
        with self.warehouse.connect() as connection:
            rows = connection.execute(select(c.call_id, c.customer_id, c.ended_at, c.billable_minutes).where(c.customer_id.is_not(None)))
            return [MeteredCall(r.call_id, r.customer_id, r.ended_at, int(r.billable_minutes)) for r in rows]

    def plan_voice_server(self, faults: VoiceServerFaults | None = None, calls: list[MeteredCall] | None = None) -> VoiceServerPlan:
        self.plan = plan_meter_events(calls if calls is not None else self.metered_calls(), faults)
        return self.plan

    def send(self, until: datetime) -> int:
        """The voice server's sends due by `until`, as the clock moves; then the clock stands at `until`."""
        assert self.plan is not None
        since = self.sent_until
        due = [s for s in self.plan.sends if s.send_at <= until and (since is None or s.send_at > since)]

        def deliver(item: Any) -> None:
            self.stripe.meters.create_event(item.customer_id, item.value, item.timestamp, item.identifier,
                                           idempotency_key=item.delivery_key)

        count = replay(due, deliver, self.advance, step=timedelta(hours=2))
        self.advance(until)
        self.sent_until = until
        return count

    def reconcile(self, as_of: datetime, instance: dg.DagsterInstance | None = None, *, repair: bool = False,
                  tolerance_minutes: int = 0) -> dg.ExecuteInProcessResult:
        """The asset and its check in a Dagster run, under the partition `as_of` covers."""
        config = ReconciliationConfig(repair=repair, tolerance_minutes=tolerance_minutes)
        return dg.materialize(
            [meter_reconciliation],
            resources={"stripe": self.stripe, "warehouse": WarehouseResource(url=self.warehouse.url), "reconciliation": config},
            run_config={"ops": {OP: {"config": {"as_of": as_of.isoformat(), "concurrency": 8}}}},
            partition_key=partition_for_as_of(as_of, config.policy().settle_lag),
            instance=instance,
        )

    def run(self, as_of: datetime, *, repair: bool = False) -> ReconciliationOutcome:
        """The service alone, as the asset and `aisyst reconcile` call it (default policy)."""
        return reconcile(self.warehouse, self.stripe.meters, ReconciliationPolicy(), repair=repair,
                         run_id=f"test-{uuid.uuid4()}", as_of=as_of, concurrency=8)

    def rows(self, result: dg.ExecuteInProcessResult | ReconciliationOutcome) -> list[dict[str, Any]]:
        return reconciliation_store.run_results(self.warehouse, result.run_id)

    def ledger(self) -> list[Any]:
        return reconciliation_store.ledger(self.warehouse, list(self.customers.values()), date(2000, 1, 1))


def reported_drift(rows: list[dict[str, Any]]) -> dict[tuple[str, date], int]:
    """(customer, day) -> delta from the rows' detail JSON."""
    import json

    found: dict[tuple[str, date], int] = {}
    for row in rows:
        for day in json.loads(row["detail"])["drifting_days"]:
            key = (row["customer_id"], date.fromisoformat(day["day"]))
            found[key] = found.get(key, 0) + day["delta"]
    return found


def expected_drift_in_windows(plan: VoiceServerPlan, rows: list[dict[str, Any]], as_of: datetime) -> dict[tuple[str, date], int]:
    """The injected drift of the calls that ended inside the compared windows."""
    windows = {(r["customer_id"], r["period_start"]): Period(r["window_start"], r["window_end"]) for r in rows}
    inside = [c for c in plan.calls if any(k[0] == c.customer_id and w.contains(c.ended_at) for k, w in windows.items())]
    sub_plan = VoiceServerPlan(plan.sends, tuple(inside))
    return sub_plan.expected_drift(as_of)


@pytest.fixture
def recon_world(stripe_emulator: Any, stripe_resource: StripeResource, warehouse: Warehouse, tmp_path: Path) -> Iterator[ReconWorld]:
    yield ReconWorld.build(stripe_emulator, stripe_resource, T0, warehouse=warehouse, tmp=tmp_path)


"""The reconciliation's knobs as a Dagster resource, visible (and overridable per run) in the launchpad.

definitions.py builds it from `Settings` (AISYST_RECONCILIATION_*) once, when the code location
loads; the `meter_reconciliation` asset and `aisyst reconcile` read their policy from it.
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
from pydantic import Field

from aisyst_pipelines.billing.reconciliation import STRIPE_TIMESTAMP_WINDOW, ReconciliationPolicy
from aisyst_pipelines.settings import Settings


class ReconciliationConfig(dg.ConfigurableResource):
    """Repair, settle lag and tolerance of the meter reconciliation (docs/reconciliation.md)."""

    repair: bool = Field(
        default=False,
        description="Send a corrective meter event for every under-metered customer-day (AISYST_RECONCILIATION_REPAIR); "
        "off = report only.",
    )
    settle_lag_minutes: int = Field(
        default=60,
        description="Compare only up to now minus this many minutes: Stripe aggregates meter events asynchronously "
        "(AISYST_RECONCILIATION_SETTLE_LAG_MINUTES).",
    )
    tolerance_minutes: int = Field(
        default=0,
        description="Unrepaired drift per customer-period that the check meter_drift_within_tolerance accepts "
        "(AISYST_RECONCILIATION_TOLERANCE_MINUTES).",
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> "ReconciliationConfig":
        return cls(
            repair=settings.reconciliation_repair,
            settle_lag_minutes=settings.reconciliation_settle_lag_minutes,
            tolerance_minutes=settings.reconciliation_tolerance_minutes,
        )

    def policy(self, lookback: timedelta = STRIPE_TIMESTAMP_WINDOW) -> ReconciliationPolicy:
        """The run's policy; `lookback` = how long ago a closed period may have ended to be reconciled."""
        return ReconciliationPolicy(
            settle_lag=timedelta(minutes=self.settle_lag_minutes),
            tolerance_minutes=self.tolerance_minutes,
            lookback=lookback,
        )

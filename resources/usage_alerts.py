"""The usage alerts' own knobs as a Dagster resource (resource key "usage_alerts_config"), visible in
the launchpad: which percentages alert, and what counts as a silent customer.

definitions.py builds it from `Settings` once (AISYST_ALERT_THRESHOLDS). The schedule's time zone
(AISYST_ALERTS_TIMEZONE) is not here: it is part of the schedule's definition (its execution time
zone, shown on the schedule's page) and cannot change for one run.
"""

from __future__ import annotations

import dagster as dg
from pydantic import Field

from aisyst_pipelines.billing.thresholds import DEFAULT_THRESHOLDS, SilencePolicy, parse_thresholds
from aisyst_pipelines.settings import Settings

_SILENCE = SilencePolicy()  # the defaults


class UsageAlertsConfig(dg.ConfigurableResource):
    """Thresholds and the silence policy of the daily usage alerts."""

    thresholds: list[int] = Field(
        default_factory=lambda: list(DEFAULT_THRESHOLDS),
        description="Percentages of the included minutes that alert (AISYST_ALERT_THRESHOLDS), e.g. [80, 100].",
    )
    silence_window_days: int = Field(default=_SILENCE.window_days, description="Days looked back for silence detection.")
    silence_quiet_days: int = Field(default=_SILENCE.quiet_days, description="Days without usage that make a customer silent.")
    silence_min_active_days: int = Field(
        default=_SILENCE.min_active_days, description="Days with usage the window needs ('most of')."
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> "UsageAlertsConfig":
        return cls(thresholds=list(settings.alert_thresholds))

    def threshold_percentages(self) -> tuple[int, ...]:
        """The thresholds, validated and in ascending order."""
        return parse_thresholds(self.thresholds)

    def silence_policy(self) -> SilencePolicy:
        return SilencePolicy(self.silence_window_days, self.silence_quiet_days, self.silence_min_active_days)

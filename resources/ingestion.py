"""CDR ingestion's configuration as a Dagster resource: the landing directory and the limits files are
loaded under, visible (and overridable per run) in the launchpad.

definitions.py builds it from `Settings` (AISYST_LANDING_DIR, AISYST_ASTERISK_TIMEZONE, AISYST_CDR_*) once,
when the code location loads; the landing sensor, the load asset and the reject-share check read it.
An unset variable leaves the field at its default, which is the reader's own (cdr/records.py).
"""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
from pydantic import Field

from aisyst_pipelines.cdr.records import DEFAULT_EARLIEST_CALL, DEFAULT_FUTURE_TOLERANCE, DEFAULT_MAX_RECORD_BYTES
from aisyst_pipelines.services.ingestion import DEFAULT_MAX_REJECT_SHARE
from aisyst_pipelines.settings import Settings


class IngestionConfig(dg.ConfigurableResource):
    """Where CDR files land and the limits they are loaded under (docs/ingestion.md)."""

    landing_dir: str = Field(
        description="The folder cdr_files_sensor watches, sub-folders included (AISYST_LANDING_DIR); a sub-folder "
        "named canonical, twilio or asterisk forces the format of the files under it."
    )
    asterisk_timezone: str = Field(default="UTC", description="Time zone of the local times in Asterisk Master.csv files (AISYST_ASTERISK_TIMEZONE).")
    max_reject_share: float = Field(
        default=DEFAULT_MAX_REJECT_SHARE,
        description="Largest acceptable share of rejected rows in one file, for the check cdr_reject_share "
        "(AISYST_CDR_MAX_REJECT_SHARE; 0.01 = 1 %).",
    )
    future_tolerance_hours: float = Field(
        default=DEFAULT_FUTURE_TOLERANCE / timedelta(hours=1),
        description="Calls that end more than this many hours after the load are rejected, call_in_future "
        "(AISYST_CDR_FUTURE_TOLERANCE_HOURS).",
    )
    earliest_call: str = Field(
        default=DEFAULT_EARLIEST_CALL.isoformat(),
        description="ISO 8601 time with offset: calls that end before it are rejected, call_too_old (AISYST_CDR_EARLIEST_CALL).",
    )
    max_record_bytes: int = Field(
        default=DEFAULT_MAX_RECORD_BYTES,
        description="A line longer than this many bytes is rejected, record_too_long, without being held in memory "
        "(AISYST_CDR_MAX_RECORD_BYTES).",
    )

    @classmethod
    def from_settings(cls, settings: Settings) -> "IngestionConfig":
        configured = {
            "max_reject_share": settings.cdr_max_reject_share,
            "future_tolerance_hours": settings.cdr_future_tolerance_hours,
            "earliest_call": settings.cdr_earliest_call.isoformat() if settings.cdr_earliest_call else None,
            "max_record_bytes": settings.cdr_max_record_bytes,
        }
        return cls(
            landing_dir=str(settings.landing_dir),
            asterisk_timezone=settings.asterisk_timezone,
            **{name: value for name, value in configured.items() if value is not None},
        )

"""What reading a CDR file takes and gives: `ReadOptions` (how to read one file) and `CdrChunk` (the
validated records and the rejected rows of one chunk).

Their own module because both the reader (`reader.py`) and the format adapters (`normalise.py`, which
the reader imports) use them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pandas as pd

from .rating import RatingPolicy
from .records import DEFAULT_EARLIEST_CALL, DEFAULT_FUTURE_TOLERANCE, DEFAULT_MAX_RECORD_BYTES, FORCED_FOLDERS, FORMATS

@dataclass(frozen=True, kw_only=True)
class ReadOptions:
    """How to read one file. `pii_key` is the HMAC key for phone numbers (never printed).

    Calls that end more than `future_tolerance` after `loaded_at` (`call_in_future`) or before
    `earliest_call` (`call_too_old`) are rejected; so is a line longer than `max_record_bytes`
    (`record_too_long`). `loaded_at` defaults to the moment the options are made.
    """

    pii_key: bytes = field(repr=False)
    forced_format: str | None = None
    asterisk_timezone: str = "UTC"
    policy: RatingPolicy = RatingPolicy()
    chunk_rows: int = 200_000
    loaded_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    future_tolerance: timedelta = DEFAULT_FUTURE_TOLERANCE
    earliest_call: datetime = DEFAULT_EARLIEST_CALL
    max_record_bytes: int = DEFAULT_MAX_RECORD_BYTES

    def __post_init__(self) -> None:
        if not self.pii_key:
            raise ValueError("ReadOptions.pii_key is required: phone numbers are stored only as keyed hashes")
        if isinstance(self.pii_key, str):
            object.__setattr__(self, "pii_key", self.pii_key.encode("utf-8"))
        if self.chunk_rows < 1:
            raise ValueError("chunk_rows must be at least 1")
        for name in ("loaded_at", "earliest_call"):
            if getattr(self, name).utcoffset() is None:
                raise ValueError(f"{name} must carry a time zone (UTC)")
        if self.future_tolerance < timedelta(0):
            raise ValueError("future_tolerance must not be negative")
        if self.max_record_bytes < 1:
            raise ValueError("max_record_bytes must be at least 1")
        if self.forced_format is not None and self.forced_format not in (*FORCED_FOLDERS, *FORMATS):
            raise ValueError(f"unknown forced format {self.forced_format!r}: use one of {tuple(dict.fromkeys((*FORCED_FOLDERS, *FORMATS)))}")
        try:
            ZoneInfo(self.asterisk_timezone)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {self.asterisk_timezone!r} for Asterisk local times") from error


@dataclass
class CdrChunk:
    """One chunk of a file: its good rows (`records`), its rejected rows, and how many rows it had.

    records columns (RECORD_COLUMNS): call_id, account_code, direction, disposition, started_at,
    answered_at, ended_at (datetime64[us, UTC]; answered_at NaT when not answered),
    billable_seconds, billable_minutes (int64), caller_hash, callee_hash (str or None),
    content_hash (hex sha256 of the normalised call), source_line (int64, 1-based).
    rejects columns (REJECT_COLUMNS): source_line (int64), call_id (str or None), reason_code,
    reason, raw_record (the row's text, phone numbers masked).
    rows_total: data rows in the chunk = len(records) + len(rejects) (blank lines and the CSV
    header are not rows).
    """

    records: pd.DataFrame
    rejects: pd.DataFrame
    rows_total: int


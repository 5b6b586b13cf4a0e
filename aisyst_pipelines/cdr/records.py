"""The vocabulary of call-detail records: formats, canonical columns, dispositions, reject reasons.

Everything that reads, writes or loads CDRs takes these names from here, so that the reader, the
simulator and the warehouse loader cannot disagree on a spelling.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Final

FORMATS: Final = ("canonical_csv", "canonical_jsonl", "twilio", "asterisk")

# Landing sub-folders that force a format. "canonical" still tells CSV from JSONL by content.
FORCED_FOLDERS: Final = ("canonical", "twilio", "asterisk")

# The canonical input record (DESIGN.md §2.1): the header of a canonical CSV, the keys of a canonical JSONL.
CANONICAL_COLUMNS: Final = (
    "call_id",
    "account_code",
    "direction",
    "disposition",
    "started_at",
    "answered_at",
    "ended_at",
    "billable_seconds",
    "caller",
    "callee",
)
REQUIRED_CANONICAL_COLUMNS: Final = ("call_id", "account_code", "direction", "disposition", "started_at", "ended_at")

# What `read_cdr_file` yields for the good rows, in this order.
RECORD_COLUMNS: Final = (
    "call_id",
    "account_code",
    "direction",
    "disposition",
    "started_at",
    "answered_at",
    "ended_at",
    "billable_seconds",
    "billable_minutes",
    "caller_hash",
    "callee_hash",
    "content_hash",
    "source_line",
)
REJECT_COLUMNS: Final = ("source_line", "call_id", "reason_code", "reason", "raw_record")

DIRECTIONS: Final = ("inbound", "outbound")
DISPOSITIONS: Final = ("completed", "no_answer", "busy", "failed", "canceled")
ANSWERED_DISPOSITION: Final = "completed"

# Reject reason codes (call_records_rejected.reason_code). `conflicting_duplicate` is decided by the
# warehouse loader, which is the only place that knows what was loaded before.
MISSING_FIELD: Final = "missing_field"
UNPARSEABLE_TIME: Final = "unparseable_time"
ENDED_BEFORE_STARTED: Final = "ended_before_started"
NEGATIVE_DURATION: Final = "negative_duration"
ABSURD_DURATION: Final = "absurd_duration"
UNKNOWN_DISPOSITION: Final = "unknown_disposition"
INVALID_UTF8: Final = "invalid_utf8"
MALFORMED_ROW: Final = "malformed_row"
UNKNOWN_DIRECTION: Final = "unknown_direction"
CALL_NOT_FINISHED: Final = "call_not_finished"
CONFLICTING_DUPLICATE: Final = "conflicting_duplicate"
BILLABLE_EXCEEDS_CALL: Final = "billable_exceeds_call"
DURATION_MISMATCH: Final = "duration_mismatch"
CALL_IN_FUTURE: Final = "call_in_future"
CALL_TOO_OLD: Final = "call_too_old"
NUL_BYTE: Final = "nul_byte"
RECORD_TOO_LONG: Final = "record_too_long"
REASON_CODES: Final = (
    MISSING_FIELD,
    UNPARSEABLE_TIME,
    ENDED_BEFORE_STARTED,
    NEGATIVE_DURATION,
    ABSURD_DURATION,
    UNKNOWN_DISPOSITION,
    INVALID_UTF8,
    MALFORMED_ROW,
    UNKNOWN_DIRECTION,
    CALL_NOT_FINISHED,
    CONFLICTING_DUPLICATE,
    BILLABLE_EXCEEDS_CALL,
    DURATION_MISMATCH,
    CALL_IN_FUTURE,
    CALL_TOO_OLD,
    NUL_BYTE,
    RECORD_TOO_LONG,
)

# A call longer than a day is a broken record, not a long call (issue 2 item 5).
MAX_CALL_SECONDS: Final = 24 * 60 * 60

# Sources write whole seconds and truncate each time on its own, so the seconds a record bills may
# exceed the difference of its written times by up to 1 s (issue 12 item 1); more is not a call.
TRUNCATION_TOLERANCE_SECONDS: Final = 1

# Calls that end more than this after the load, or before EARLIEST_CALL, are not billed (issue 12 item 2).
DEFAULT_FUTURE_TOLERANCE: Final = timedelta(days=1)
DEFAULT_EARLIEST_CALL: Final = datetime(2020, 1, 1, tzinfo=timezone.utc)

# A record (a line of the file) longer than this is rejected unread: memory stays bounded whatever
# the input (issue 12 item 5). A rejected row keeps at most MAX_RAW_RECORD_CHARS of its text.
DEFAULT_MAX_RECORD_BYTES: Final = 64 * 1024
MAX_RAW_RECORD_CHARS: Final = 2048

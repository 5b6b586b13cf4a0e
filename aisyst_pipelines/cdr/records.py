"""The vocabulary of call-detail records: formats, canonical columns, dispositions, reject reasons.

Everything that reads, writes or loads CDRs takes these names from here, so that the reader, the
simulator and the warehouse loader cannot disagree on a spelling.
"""

from __future__ import annotations

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
)

# A call longer than a day is a broken record, not a long call (issue 2 item 5).
MAX_CALL_SECONDS: Final = 24 * 60 * 60

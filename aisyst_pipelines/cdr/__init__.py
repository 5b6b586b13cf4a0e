"""Call-detail records: formats, detection, validation, rating and privacy (DESIGN.md §2.1).

Plain Python on pandas: no Dagster, Stripe or SQL here. The warehouse loader streams a file with
`read_cdr_file` and stores each `CdrChunk`'s records and rejects in one transaction.
"""

from .formats import CdrFileError, detect_format, forced_format_for
from .privacy import hash_phone_number, normalise_phone_number
from .rating import RatingPolicy, rate_calls
from .reader import read_cdr_file
from .reading import CdrChunk, ReadOptions
from .records import (
    CANONICAL_COLUMNS,
    DIRECTIONS,
    DISPOSITIONS,
    FORMATS,
    MAX_CALL_SECONDS,
    REASON_CODES,
    RECORD_COLUMNS,
    REJECT_COLUMNS,
)

__all__ = [
    "CANONICAL_COLUMNS",
    "DIRECTIONS",
    "DISPOSITIONS",
    "FORMATS",
    "MAX_CALL_SECONDS",
    "REASON_CODES",
    "RECORD_COLUMNS",
    "REJECT_COLUMNS",
    "CdrChunk",
    "CdrFileError",
    "RatingPolicy",
    "ReadOptions",
    "detect_format",
    "forced_format_for",
    "hash_phone_number",
    "normalise_phone_number",
    "rate_calls",
    "read_cdr_file",
]

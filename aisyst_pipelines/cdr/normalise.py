"""From the split fields of one chunk to canonical, validated, rated calls — column-wise.

Each format has an adapter that maps its fields onto the canonical call (`CallFields`); one
validator then decides per row, in a fixed order, the first reason to reject it; the good rows
are rated, their phone numbers hashed and their content hashed.

Format rules worth knowing (DESIGN.md §2.1):
- canonical: times are ISO 8601 and must carry an offset or Z (a time without one is ambiguous and
  rejected as `unparseable_time`); empty `billable_seconds` is derived from answered_at..ended_at.
- Twilio: `status` gives the disposition (queued/initiated/ringing/in-progress are calls that have
  not ended: `call_not_finished`); `duration` is the billable seconds; Twilio has no answer time, so
  answered_at = end_time − duration for completed calls (never before start_time; start_time when
  there is no duration, so that such a call bills start..end); times are
  RFC 2822 with an offset ("Tue, 10 Aug 2026 14:03:05 +0000"), other RFC 2822 spellings ("GMT") and
  ISO 8601 with an offset are accepted too.
- Asterisk: times are local wall-clock times in `asterisk_timezone`. A time that falls in the hour
  a DST change repeats is resolved with the row's own `duration`/`billsec` (end − start must equal
  duration, end − answer must equal billsec, ±1 s for Asterisk's truncation); when they cannot
  tell, the earlier instant is taken. A time inside the hour skipped by a DST change cannot have
  been written by a correctly configured server: the row is rejected (`unparseable_time`).
  Direction: outbound when the destination context names an outbound route — a word of `dcontext`
  starting with "out" (out, outbound, outgoing, outrt-…), "dialout", or a context starting with
  "from-internal" (calls placed by the PBX's own phones); inbound otherwise.
- All formats: billable seconds of a call that was not answered are 0; a call_id or account code
  longer than 128 characters is a `malformed_row` (the warehouse keys hold 128). A call never bills
  more than it lasted: billable seconds above the seconds from answered_at (as written in the
  record; Twilio has none) or else started_at to ended_at, rounded up, plus 1 s of truncation, are
  `billable_exceeds_call`; so is an Asterisk `billsec` above its `duration` + 1 s, and a `duration`
  more than 1 s off end − start is `duration_mismatch`. A call that ends more than
  `future_tolerance` after `loaded_at` is `call_in_future`, one that ends before `earliest_call`
  is `call_too_old`.
"""

from __future__ import annotations

import email.utils
import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import cast
from datetime import datetime, timedelta, timezone

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from .privacy import hash_phone_number, redact_record_text
from .reading import CdrChunk, ReadOptions
from .records import (
    ABSURD_DURATION,
    ANSWERED_DISPOSITION,
    BILLABLE_EXCEEDS_CALL,
    CALL_IN_FUTURE,
    CALL_NOT_FINISHED,
    CALL_TOO_OLD,
    CANONICAL_COLUMNS,
    DURATION_MISMATCH,
    ENDED_BEFORE_STARTED,
    MALFORMED_ROW,
    MAX_CALL_SECONDS,
    MAX_RAW_RECORD_CHARS,
    MISSING_FIELD,
    NEGATIVE_DURATION,
    RECORD_COLUMNS,
    REJECT_COLUMNS,
    TRUNCATION_TOLERANCE_SECONDS,
    UNKNOWN_DIRECTION,
    UNKNOWN_DISPOSITION,
    UNPARSEABLE_TIME,
)

MAX_KEY_CHARS = 128
PHONE_CACHE_LIMIT = 1_000_000
HASH_BATCH_ROWS = 20_000
UTF8_END = 2**31 - 1  # "to the end" for utf8_slice_codeunits  # distinct numbers remembered per file (bounds memory)
QUOTE_CHARS = 60  # at most this much of a bad value is quoted in a reason
CUT_MARKER = "…[cut]"  # ends a raw_record that holds only the start of its row
UTC = "UTC"
TIME_UNIT = "us"

CANONICAL_DIRECTIONS = {"inbound": "inbound", "outbound": "outbound"}
CANONICAL_DISPOSITIONS = {
    "completed": "completed",
    "no_answer": "no_answer",
    "busy": "busy",
    "failed": "failed",
    "canceled": "canceled",
    "cancelled": "canceled",
}
TWILIO_DIRECTIONS = {"inbound": "inbound", "outbound-api": "outbound", "outbound-dial": "outbound"}
TWILIO_DISPOSITIONS = {
    "completed": "completed",
    "busy": "busy",
    "no-answer": "no_answer",
    "failed": "failed",
    "canceled": "canceled",
}
TWILIO_UNFINISHED = ("queued", "initiated", "ringing", "in-progress")
TWILIO_TIME_FORMAT = "%a, %d %b %Y %H:%M:%S %z"
ASTERISK_DISPOSITIONS = {
    "ANSWERED": "completed",
    "NO ANSWER": "no_answer",
    "BUSY": "busy",
    "FAILED": "failed",
    "CONGESTION": "failed",
}
ASTERISK_TIME_FORMAT = "%Y-%m-%d %H:%M:%S"
ASTERISK_OUTBOUND_CONTEXT = r"(?i)(?:^|[-_. ])(?:out|dialout)|^from-internal"
ISO_OFFSET = r"(?:[zZ]|[+-]\d{2}(?::?\d{2})?)$"
CONTENT_SEPARATOR = "\x1f"
# The JSON keys / Asterisk columns each format's adapter reads (the reader picks exactly these).
TWILIO_KEYS = (
    "sid",
    "account_sid",
    "from",
    "to",
    "status",
    "start_time",
    "end_time",
    "duration",
    "direction",
    "from_formatted",
    "to_formatted",
    "caller_name",
    "forwarded_from",
)
TWILIO_REDACTION_ONLY = ("from_formatted", "to_formatted", "caller_name", "forwarded_from")
ASTERISK_REDACTION_ONLY = ("clid", "channel", "dstchannel", "lastdata")
ASTERISK_UNUSED = ("lastapp", "amaflags")  # not read at all
ASTERISK_COLUMNS = (
    "accountcode",
    "src",
    "dst",
    "dcontext",
    "clid",
    "channel",
    "dstchannel",
    "lastapp",
    "lastdata",
    "start",
    "answer",
    "end",
    "duration",
    "billsec",
    "disposition",
    "amaflags",
    "uniqueid",
)


# --- rejects -----------------------------------------------------------------------------------


@dataclass
class RejectList:
    """Rejected rows collected while a chunk is read (before the row could be split into fields)."""

    source_line: list[int] = field(default_factory=list)
    reason_code: list[str] = field(default_factory=list)
    reason: list[str] = field(default_factory=list)
    raw_record: list[str] = field(default_factory=list)
    call_id: list[str | None] = field(default_factory=list)

    def add(self, line: int, code: str, reason: str, raw: str, call_id: str | None = None, *, cut: bool = False) -> None:
        """One rejected row; `cut`: `raw` is only the start of the row."""
        self.source_line.append(line)
        self.reason_code.append(code)
        self.reason.append(reason)
        self.raw_record.append(rejected_text(raw, cut=cut))
        self.call_id.append(call_id)

    def extend(self, other: "RejectList") -> None:
        self.source_line += other.source_line
        self.reason_code += other.reason_code
        self.reason += other.reason
        self.raw_record += other.raw_record
        self.call_id += other.call_id

    def __len__(self) -> int:
        return len(self.source_line)

    def first_line(self) -> int:
        return min(self.source_line)

    def first_reason(self) -> str:
        return self.reason[self.source_line.index(self.first_line())]

    def frame(self) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "source_line": pd.Series(self.source_line, dtype="int64"),
                "call_id": pd.Series(self.call_id, dtype=object),
                "reason_code": pd.Series(self.reason_code, dtype=object),
                "reason": pd.Series(self.reason, dtype=object),
                "raw_record": pd.Series(self.raw_record, dtype=object),
            },
            columns=list(REJECT_COLUMNS),
        )


def rejected_text(raw: str, personal: Iterable[str | None] = (), *, cut: bool = False) -> str:
    """What a reject keeps of its row's text (`raw_record`): phone numbers and names masked, NUL
    escaped as \\x00 (PostgreSQL text cannot hold it), at most MAX_RAW_RECORD_CHARS characters —
    and CUT_MARKER at the end when that is not the whole row."""
    text = redact_record_text(raw, personal).replace("\x00", "\\x00")
    if cut or len(text) > MAX_RAW_RECORD_CHARS:
        text = text[:MAX_RAW_RECORD_CHARS] + CUT_MARKER
    return text


def empty_rejects() -> pd.DataFrame:
    return RejectList().frame()


def empty_records() -> pd.DataFrame:
    no_time = pd.Series([], dtype=f"datetime64[{TIME_UNIT}, UTC]")
    return pd.DataFrame(
        {
            "call_id": pd.Series([], dtype="str"),
            "account_code": pd.Series([], dtype="str"),
            "direction": pd.Series([], dtype="str"),
            "disposition": pd.Series([], dtype="str"),
            "started_at": no_time,
            "answered_at": no_time.copy(),
            "ended_at": no_time.copy(),
            "billable_seconds": pd.Series([], dtype="int64"),
            "billable_minutes": pd.Series([], dtype="int64"),
            "caller_hash": pd.Series([], dtype=object),
            "callee_hash": pd.Series([], dtype=object),
            "content_hash": pd.Series([], dtype="str"),
            "source_line": pd.Series([], dtype="int64"),
        },
        columns=list(RECORD_COLUMNS),
    )


# --- the canonical view of a chunk -------------------------------------------------------------
#
# Everything below works column-wise on pyarrow arrays (text), numpy datetime64[us] arrays (times,
# UTC, NaT when empty or unreadable) and numpy float64 arrays (seconds, NaN when empty); pandas
# only builds the output frame. Python loops run only over rejected rows and distinct numbers.


@dataclass
class ParsedRows:
    """The rows of a chunk that split into fields, with their file line numbers and raw text."""

    fields: dict[str, pa.Array]  # string arrays named by the format (null = absent)
    n_rows: int
    line_numbers: np.ndarray  # int64, one per row
    raw_text: Callable[[np.ndarray], list[str]]  # raw lines of the rows at these positions


@dataclass
class CallFields:
    """One chunk mapped onto the canonical call; *_raw keep the text to tell empty from unreadable."""

    call_id: pa.Array
    account_code: pa.Array
    direction_raw: pa.Array
    direction: pa.Array  # inbound/outbound, null when unknown
    disposition_raw: pa.Array
    disposition: pa.Array  # canonical, null when unknown
    times_raw: dict[str, pa.Array]  # started_at, answered_at, ended_at
    times: dict[str, np.ndarray]  # datetime64[us] (UTC), NaT when empty or unreadable
    seconds_raw: pa.Array
    caller: pa.Array
    callee: pa.Array
    personal: list[pa.Array]  # every field that may hold a number or a name (for reject redaction)
    seconds_name: str = "billable_seconds"
    time_errors: dict[str, np.ndarray | None] = field(default_factory=dict)  # specific messages (object, None = fine)
    unfinished: np.ndarray | None = None  # Twilio: the call has not ended yet
    total_seconds_raw: pa.Array | None = None  # Asterisk: `duration` (end − start), checked too


def build_chunk(file_format: str, parsed: ParsedRows, pre_rejects: RejectList, options: ReadOptions, phone_hashes: dict[str, str | None] | None = None) -> CdrChunk:
    """Validate, rate and hash one chunk. `phone_hashes` caches number → hash across a file's chunks."""
    calls = ADAPTERS[file_format](parsed.fields, parsed.n_rows, options)
    parsed.fields = {}  # the adapter's columns replace them: let the memory go
    verdict = _Verdict(parsed.n_rows)
    seconds = _validate(calls, verdict, options)
    good = np.flatnonzero(verdict.open)
    bad = np.flatnonzero(~verdict.open)
    records = _records(calls, seconds, good, parsed.line_numbers, options, {} if phone_hashes is None else phone_hashes)
    rows_total = parsed.n_rows + len(pre_rejects)
    rejects = pre_rejects
    if len(bad):
        rejects.extend(_validation_rejects(calls, verdict, bad, parsed))
    reject_frame = rejects.frame().sort_values("source_line", kind="stable").reset_index(drop=True)
    return CdrChunk(records=records, rejects=reject_frame, rows_total=rows_total)


# --- column helpers ----------------------------------------------------------------------------


def _text(values: pa.Array | None, n: int) -> pa.Array:
    """Trimmed text, "" for absent values."""
    if values is None:
        return pa.array([""] * n, type=pa.string())
    if values.type != pa.string():
        values = pc.cast(values, pa.string())
    values = values.fill_null("")
    # trimming copies the column: only when some value starts or ends with whitespace
    first = pc.utf8_slice_codeunits(values, 0, 1)
    last = pc.utf8_slice_codeunits(values, -1, UTF8_END)
    if pc.any(pc.or_(pc.utf8_is_space(first), pc.utf8_is_space(last))).as_py():
        return pc.utf8_trim_whitespace(values)
    return values


def _raw(values: pa.Array | None, n: int) -> pa.Array:
    return pa.array([""] * n, type=pa.string()) if values is None else values.fill_null("")


def _mask(values: pa.Array) -> np.ndarray:
    """A boolean arrow array as numpy, null counting as False."""
    return np.asarray(values.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


def _is_empty(text: pa.Array) -> np.ndarray:
    return _mask(pc.equal(text, pa.scalar("")))


def _lookup(text: pa.Array, mapping: Mapping[str, str]) -> pa.Array:
    """mapping[text] per value, null where the value is not a key."""
    keys = pa.array(list(mapping), type=pa.string())
    values = pa.array(list(mapping.values()), type=pa.string())
    return pc.take(values, pc.index_in(text, value_set=keys))


def _nullify_empty(text: pa.Array) -> pa.Array:
    return pc.if_else(pc.equal(text, pa.scalar("")), pa.scalar(None, pa.string()), text)


def _numbers(text: pa.Array) -> np.ndarray:
    """Text as float64 (NaN when empty or not a number)."""
    present = _nullify_empty(text)
    try:
        numbers = pc.cast(present, pa.float64())
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        return pd.to_numeric(pd.Series(present.to_pylist(), dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    return numbers.to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def _naive_utc(values: pa.Array) -> np.ndarray:
    """A timestamp array as numpy datetime64[us] in UTC (NaT for null)."""
    if values.type.tz is not None:
        values = pc.cast(values, pa.timestamp("us", tz="UTC")).cast(pa.timestamp("us"))
    return values.to_numpy(zero_copy_only=False).astype("datetime64[us]")


def _quote(value: object) -> str:
    text = str(value)
    return repr(text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "…")


def _values(values: pa.Array, where: np.ndarray) -> list[str]:
    return [_quote(value) for value in values.take(where).to_pylist()]


# --- adapters ----------------------------------------------------------------------------------


def canonical_fields(fields: dict[str, pa.Array], n: int, options: ReadOptions) -> CallFields:
    col = {name: _text(fields.get(name), n) for name in CANONICAL_COLUMNS}
    direction_raw = col["direction"]
    disposition_raw = col["disposition"]
    times_raw = {name: col[name] for name in ("started_at", "answered_at", "ended_at")}
    times: dict[str, np.ndarray] = {}
    errors: dict[str, np.ndarray | None] = {}
    for name, raw in times_raw.items():
        times[name], errors[name] = _parse_iso(raw)
    return CallFields(
        call_id=col["call_id"],
        account_code=col["account_code"],
        direction_raw=direction_raw,
        direction=_lookup(pc.utf8_lower(direction_raw), CANONICAL_DIRECTIONS),
        disposition_raw=disposition_raw,
        disposition=_lookup(pc.utf8_lower(disposition_raw), CANONICAL_DISPOSITIONS),
        times_raw=times_raw,
        times=times,
        time_errors=errors,
        seconds_raw=col["billable_seconds"],
        caller=col["caller"],
        callee=col["callee"],
        personal=[col["caller"], col["callee"]],
    )


def twilio_fields(fields: dict[str, pa.Array], n: int, options: ReadOptions) -> CallFields:
    col = {name: _text(fields.get(name), n) for name in TWILIO_KEYS if name not in TWILIO_REDACTION_ONLY}
    # read only to mask them in rejected rows: no need to trim
    col |= {name: _raw(fields.get(name), n) for name in TWILIO_REDACTION_ONLY}
    status = pc.utf8_lower(col["status"])
    times_raw = {"started_at": col["start_time"], "ended_at": col["end_time"]}
    times = {name: _parse_rfc2822(raw) for name, raw in times_raw.items()}
    disposition = _lookup(status, TWILIO_DISPOSITIONS)
    completed = _mask(pc.equal(disposition, pa.scalar(ANSWERED_DISPOSITION)))
    seconds = _numbers(col["duration"])
    # Twilio has no answer time: a completed call was answered `duration` seconds before it ended.
    with np.errstate(invalid="ignore"):
        # a negative or absurd duration is rejected below; here it must only not overflow
        usable = np.isfinite(seconds) & (seconds > 0)
        talk = np.where(usable, np.minimum(seconds, MAX_CALL_SECONDS + 1), 0).astype(np.int64).astype("timedelta64[s]")
    answered = times["ended_at"] - talk
    answered = np.where(answered >= times["started_at"], answered, times["started_at"])
    # without a duration the whole call counts (answered when it started): derived from start..end
    answered = np.where(np.isnan(seconds), times["started_at"], answered)
    times["answered_at"] = np.where(completed, answered, np.datetime64("NaT", "us")).astype("datetime64[us]")
    times_raw["answered_at"] = pa.array([""] * n, type=pa.string())
    return CallFields(
        call_id=col["sid"],
        account_code=col["account_sid"],
        direction_raw=col["direction"],
        direction=_lookup(pc.utf8_lower(col["direction"]), TWILIO_DIRECTIONS),
        disposition_raw=col["status"],
        disposition=disposition,
        times_raw=times_raw,
        times=times,
        seconds_raw=col["duration"],
        seconds_name="duration",
        caller=col["from"],
        callee=col["to"],
        personal=[col[name] for name in ("from", "to", "from_formatted", "to_formatted", "caller_name", "forwarded_from")],
        unfinished=_mask(pc.is_in(status, value_set=pa.array(TWILIO_UNFINISHED))),
    )


def asterisk_fields(fields: dict[str, pa.Array], n: int, options: ReadOptions) -> CallFields:
    used = [name for name in ASTERISK_COLUMNS if name not in ASTERISK_REDACTION_ONLY + ASTERISK_UNUSED]
    col = {name: _text(fields.get(name), n) for name in used}
    # read only to mask them in rejected rows: no need to trim
    col |= {name: _raw(fields.get(name), n) for name in ASTERISK_REDACTION_ONLY}
    tz = options.asterisk_timezone
    candidates = {name: _localise(col[raw_name], tz) for name, raw_name in (("started_at", "start"), ("answered_at", "answer"), ("ended_at", "end"))}
    times = _resolve_repeated_hour(candidates, _numbers(col["duration"]), _numbers(col["billsec"]))
    outbound = _mask(pc.match_substring_regex(col["dcontext"], ASTERISK_OUTBOUND_CONTEXT))
    # Asterisk has no direction field: it is always known (see the module doc for the rule)
    direction = pa.array(np.where(outbound, "outbound", "inbound"), type=pa.string())
    return CallFields(
        call_id=col["uniqueid"],
        account_code=col["accountcode"],
        direction_raw=direction,
        direction=direction,
        disposition_raw=col["disposition"],
        disposition=_lookup(pc.utf8_upper(col["disposition"]), ASTERISK_DISPOSITIONS),
        times_raw={"started_at": col["start"], "answered_at": col["answer"], "ended_at": col["end"]},
        times=times,
        time_errors={name: candidates[name].errors for name in candidates},
        seconds_raw=col["billsec"],
        seconds_name="billsec",
        caller=col["src"],
        callee=col["dst"],
        personal=[col[name] for name in ("src", "dst", "clid", "channel", "dstchannel", "lastdata")],
        total_seconds_raw=col["duration"],
    )


ADAPTERS: dict[str, Callable[[dict[str, pa.Array], int, ReadOptions], CallFields]] = {
    "canonical_csv": canonical_fields,
    "canonical_jsonl": canonical_fields,
    "twilio": twilio_fields,
    "asterisk": asterisk_fields,
}


# --- time parsing ------------------------------------------------------------------------------


def _parse_iso(raw: pa.Array) -> tuple[np.ndarray, np.ndarray | None]:
    """ISO 8601 times that carry an offset; a time without one gets a specific error."""
    try:
        # Arrow's own ISO 8601 parser: fast, and it refuses a time without an offset
        return _naive_utc(pc.cast(_nullify_empty(raw), pa.timestamp("us", tz="UTC"))), None
    except pa.ArrowInvalid:
        pass  # some value is unreadable or has no offset: sort them out value by value below
    has_offset = _mask(pc.match_substring_regex(raw, ISO_OFFSET))
    present = ~_is_empty(raw)
    text = pd.Series(raw.to_pylist(), dtype=object).where(has_offset, None)
    parsed = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    naive = present & ~has_offset
    errors = None
    if naive.any():
        errors = np.full(len(raw), None, dtype=object)
        errors[naive] = [f"time {v} has no UTC offset (add Z or ±hh:mm)" for v in _values(raw, np.flatnonzero(naive))]
    return parsed.dt.tz_localize(None).to_numpy(dtype="datetime64[us]"), errors


def _parse_rfc2822(raw: pa.Array) -> np.ndarray:
    parsed = _naive_utc(pc.strptime(raw, format=TWILIO_TIME_FORMAT, unit="us", error_is_null=True))
    retry = np.isnat(parsed) & ~_is_empty(raw)
    if retry.any():
        # other spellings of RFC 2822 ("GMT", no weekday), or ISO 8601 with an offset
        where = np.flatnonzero(retry)
        for i, value in zip(where.tolist(), raw.take(where).to_pylist()):
            moment = _parse_time_leniently(value)
            if moment is not None:
                parsed[i] = np.datetime64(moment.astimezone(timezone.utc).replace(tzinfo=None), "us")
    return parsed


def _parse_time_leniently(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        parsed = None
    if parsed is None:
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        if parsed.tzinfo is None:
            return None  # an ISO time without an offset is ambiguous
    elif parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=timezone.utc)  # RFC 2822 "-0000": UTC, local offset unknown
    return parsed


@dataclass
class _LocalTime:
    earliest: np.ndarray  # UTC, the earlier of two readings of a repeated wall-clock time
    latest: np.ndarray  # UTC, the later reading (= earliest unless the time is in a repeated hour)
    errors: np.ndarray | None


def _localise(raw: pa.Array, tz: str) -> _LocalTime:
    naive = _naive_utc(pc.strptime(raw, format=ASTERISK_TIME_FORMAT, unit="us", error_is_null=True))
    if tz.upper() == UTC:
        return _LocalTime(naive, naive, None)
    n = len(naive)
    local = pd.Series(naive, dtype="datetime64[us]")

    def reading(dst: bool) -> np.ndarray:
        aware = local.dt.tz_localize(tz, ambiguous=np.full(n, dst), nonexistent="NaT")
        return aware.dt.tz_convert(UTC).dt.tz_localize(None).to_numpy(dtype="datetime64[us]")

    first, second = reading(True), reading(False)
    earliest, latest = np.minimum(first, second), np.maximum(first, second)
    skipped = ~np.isnat(naive) & np.isnat(first)
    errors = None
    if skipped.any():
        errors = np.full(n, None, dtype=object)
        errors[skipped] = [f"local time {v} does not exist in {tz} (skipped by a DST change)" for v in _values(raw, np.flatnonzero(skipped))]
    return _LocalTime(earliest, latest, errors)


def _resolve_repeated_hour(times: dict[str, _LocalTime], duration: np.ndarray, billsec: np.ndarray) -> dict[str, np.ndarray]:
    """Pick the reading of each repeated wall-clock time that agrees with duration and billsec."""
    start, answer, end = times["started_at"], times["answered_at"], times["ended_at"]
    started, answered, ended = start.earliest.copy(), answer.earliest.copy(), end.earliest.copy()
    repeated = (start.earliest != start.latest) | (answer.earliest != answer.latest) | (end.earliest != end.latest)
    if not repeated.any():
        return {"started_at": started, "answered_at": answered, "ended_at": ended}

    def agrees(later: np.ndarray, earlier: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        with np.errstate(invalid="ignore"):
            return np.abs((later - earlier) / np.timedelta64(1, "s") - seconds) <= 1

    settled = agrees(end.earliest, start.earliest, duration)
    for start_reading, end_reading in ((start.earliest, end.latest), (start.latest, end.latest), (start.latest, end.earliest)):
        fits = ~settled & agrees(end_reading, start_reading, duration)
        started = np.where(fits, start_reading, started)
        ended = np.where(fits, end_reading, ended)
        settled |= fits
    later_answer = ~agrees(ended, answer.earliest, billsec) & agrees(ended, answer.latest, billsec)
    answered = np.where(later_answer, answer.latest, answered)
    return {"started_at": started, "answered_at": answered, "ended_at": ended}


# --- validation --------------------------------------------------------------------------------


class _Verdict:
    """The first reason each row fails, in the order the checks are applied."""

    def __init__(self, n: int) -> None:
        self.open = np.ones(n, dtype=bool)
        self.code = np.full(n, None, dtype=object)
        self.reason = np.full(n, None, dtype=object)

    def flag(self, mask: np.ndarray, code: str, reason: str | Callable[[np.ndarray], Sequence[str]]) -> None:
        hit = mask & self.open
        if not hit.any():
            return
        where = np.flatnonzero(hit)
        self.code[where] = code
        self.reason[where] = reason if isinstance(reason, str) else list(reason(where))
        self.open[where] = False


def _validate(calls: CallFields, verdict: _Verdict, options: ReadOptions) -> np.ndarray:
    """Flag every row that fails a check; returns the billable seconds as given (NaN when empty)."""
    if calls.unfinished is not None:
        status = calls.disposition_raw
        verdict.flag(calls.unfinished, CALL_NOT_FINISHED, lambda w: [f"the call has not ended yet (status {v})" for v in _values(status, w)])

    required = {
        "call_id": calls.call_id,
        "account_code": calls.account_code,
        "direction": calls.direction_raw,
        "disposition": calls.disposition_raw,
        "started_at": calls.times_raw["started_at"],
        "ended_at": calls.times_raw["ended_at"],
    }
    for name, raw in required.items():
        verdict.flag(_is_empty(raw), MISSING_FIELD, f"required field {name} is empty")
    for name, raw in (("call_id", calls.call_id), ("account_code", calls.account_code)):
        too_long = _mask(pc.greater(pc.utf8_length(cast(pa.StringArray, raw)), pa.scalar(MAX_KEY_CHARS)))
        verdict.flag(too_long, MALFORMED_ROW, f"{name} is longer than {MAX_KEY_CHARS} characters")

    verdict.flag(_mask(pc.is_null(calls.direction)), UNKNOWN_DIRECTION, lambda w: [f"unknown direction {v}" for v in _values(calls.direction_raw, w)])
    verdict.flag(
        _mask(pc.is_null(calls.disposition)),
        UNKNOWN_DISPOSITION,
        lambda w: [f"unknown disposition {v}" for v in _values(calls.disposition_raw, w)],
    )

    for name in ("started_at", "answered_at", "ended_at"):
        raw, parsed = calls.times_raw[name], calls.times[name]
        specific = calls.time_errors.get(name)
        if specific is not None:
            verdict.flag(specific.astype(bool), UNPARSEABLE_TIME, lambda w, s=specific, n=name: [f"{n}: {m}" for m in s[w]])
        unreadable = ~_is_empty(raw) & np.isnat(parsed)
        verdict.flag(unreadable, UNPARSEABLE_TIME, lambda w, r=raw, n=name: [f"cannot read {n} {v} as a time" for v in _values(r, w)])
    _check_billing_window(calls.times["ended_at"], verdict, options)

    seconds = _numbers(calls.seconds_raw)
    checked = [(calls.seconds_name, calls.seconds_raw, seconds)]
    duration = None
    if calls.total_seconds_raw is not None:
        duration = _numbers(calls.total_seconds_raw)
        checked.append(("duration", calls.total_seconds_raw, duration))
    with np.errstate(invalid="ignore"):
        for name, raw, number in checked:
            not_whole = ~_is_empty(raw) & ~(np.isfinite(number) & (number == np.floor(number)))
            verdict.flag(not_whole, MALFORMED_ROW, lambda w, r=raw, n=name: [f"{n} {v} is not a whole number of seconds" for v in _values(r, w)])

        started, answered, ended = calls.times["started_at"], calls.times["answered_at"], calls.times["ended_at"]
        verdict.flag(ended < started, ENDED_BEFORE_STARTED, "ended_at is before started_at")
        verdict.flag(answered < started, ENDED_BEFORE_STARTED, "answered_at is before started_at")
        verdict.flag(answered > ended, ENDED_BEFORE_STARTED, "ended_at is before answered_at")

        for name, _, number in checked:
            verdict.flag(number < 0, NEGATIVE_DURATION, lambda w, s=number, n=name: [f"{n} is negative ({int(v)} s)" for v in s[w]])

        length = (ended - started) / np.timedelta64(1, "s")
        verdict.flag(length > MAX_CALL_SECONDS, ABSURD_DURATION, lambda w: [f"the call lasted {int(v)} s, more than 24 h" for v in length[w]])
        for name, _, number in checked:
            verdict.flag(number > MAX_CALL_SECONDS, ABSURD_DURATION, lambda w, s=number, n=name: [f"{n} is {int(v)} s, more than 24 h" for v in s[w]])
        _check_call_length(calls, verdict, seconds, duration)

    completed = _mask(pc.equal(calls.disposition, pa.scalar(ANSWERED_DISPOSITION)))
    verdict.flag(completed & np.isnan(seconds) & np.isnat(answered), MISSING_FIELD, f"a completed call needs {calls.seconds_name} or answered_at")
    return seconds


def _check_billing_window(ended: np.ndarray, verdict: _Verdict, options: ReadOptions) -> None:
    """A call billed in a period that has not begun, or long closed, is a broken record (issue 12 item 2)."""
    loaded_at = _utc_instant(options.loaded_at)
    latest = loaded_at + np.timedelta64(options.future_tolerance // timedelta(microseconds=1), "us")
    tolerance = f"{options.future_tolerance / timedelta(hours=1):g} h"
    verdict.flag(
        ended > latest,
        CALL_IN_FUTURE,
        lambda w: [f"the call ended {_utc_text(t)}, more than {tolerance} after this load ({_utc_text(loaded_at)})" for t in ended[w]],
    )
    earliest = _utc_instant(options.earliest_call)
    verdict.flag(
        ended < earliest,
        CALL_TOO_OLD,
        lambda w: [f"the call ended {_utc_text(t)}, before the earliest call accepted ({_utc_text(earliest)})" for t in ended[w]],
    )


def _check_call_length(calls: CallFields, verdict: _Verdict, seconds: np.ndarray, duration: np.ndarray | None) -> None:
    """A call is never billed for more than it lasted (issue 12 item 1).

    It lasted from answered_at (when the record states it: Twilio's is derived from the very
    duration checked here) or else started_at to ended_at, rounded up to a whole second. Sources
    write whole seconds and truncate each time on its own, so 1 s more is allowed
    (TRUNCATION_TOLERANCE_SECONDS). Asterisk's own `duration` is checked too: billsec at most
    duration (+1 s: `initiatedseconds` rounds billsec up), and duration within 1 s of end − start.
    """
    started, answered, ended = calls.times["started_at"], calls.times["answered_at"], calls.times["ended_at"]
    tolerance = TRUNCATION_TOLERANCE_SECONDS
    stated_answer = ~_is_empty(calls.times_raw["answered_at"]) & ~np.isnat(answered)
    lasted = np.ceil((ended - np.where(stated_answer, answered, started)) / np.timedelta64(1, "s"))
    name = calls.seconds_name
    verdict.flag(
        seconds > lasted + tolerance,
        BILLABLE_EXCEEDS_CALL,
        lambda w: [
            f"{name} is {int(s)} s but the call lasted {int(t)} s ({'answered_at' if a else 'started_at'} to ended_at)"
            for s, t, a in zip(seconds[w], lasted[w], stated_answer[w])
        ],
    )
    if duration is None:
        return
    verdict.flag(
        seconds > duration + tolerance,
        BILLABLE_EXCEEDS_CALL,
        lambda w: [f"{name} is {int(s)} s but the call's duration is {int(d)} s" for s, d in zip(seconds[w], duration[w])],
    )
    total = (ended - started) / np.timedelta64(1, "s")
    verdict.flag(
        np.abs(duration - total) > tolerance,
        DURATION_MISMATCH,
        lambda w: [f"duration is {int(d)} s but the call lasted {t:g} s (started_at to ended_at)" for d, t in zip(duration[w], total[w])],
    )


def _utc_instant(moment: datetime) -> np.datetime64:
    return np.datetime64(moment.astimezone(timezone.utc).replace(tzinfo=None), "us")


def _utc_text(moment: np.datetime64) -> str:
    return f"{np.datetime_as_string(moment, unit='s')}Z"


# --- output ------------------------------------------------------------------------------------


def _records(
    calls: CallFields,
    seconds: np.ndarray,
    good: np.ndarray,
    line_numbers: np.ndarray,
    options: ReadOptions,
    phone_hashes: dict[str, str | None],
) -> pd.DataFrame:
    if not len(good):
        return empty_records()
    disposition = calls.disposition.take(good)
    started, answered, ended = (calls.times[name][good] for name in ("started_at", "answered_at", "ended_at"))
    given = seconds[good]
    with np.errstate(invalid="ignore"):
        derived = np.ceil((ended - answered) / np.timedelta64(1, "s"))
    completed = _mask(pc.equal(disposition, pa.scalar(ANSWERED_DISPOSITION)))
    billable = np.where(np.isnan(given), derived, given)
    billable = np.where(completed & ~np.isnan(billable), billable, 0).astype(np.int64)
    minutes = options.policy.billable_minutes(billable)  # unanswered calls have 0 billable seconds, so 0 minutes
    table = pa.table(
        {
            "call_id": calls.call_id.take(good),
            "account_code": calls.account_code.take(good),
            "direction": calls.direction.take(good),
            "disposition": disposition,
            "started_at": _utc_timestamps(started),
            "answered_at": _utc_timestamps(answered),
            "ended_at": _utc_timestamps(ended),
            "billable_seconds": pa.array(billable),
            "billable_minutes": pa.array(minutes),
            "caller_hash": _hash_numbers(calls.caller.take(good), options.pii_key, phone_hashes),
            "callee_hash": _hash_numbers(calls.callee.take(good), options.pii_key, phone_hashes),
        }
    )
    table = table.append_column("content_hash", _content_hashes(table))
    table = table.append_column("source_line", pa.array(line_numbers[good], type=pa.int64()))
    records = table.to_pandas()
    for name in ("caller_hash", "callee_hash"):
        records[name] = pd.Series(table.column(name).to_pylist(), dtype=object)
    return records[list(RECORD_COLUMNS)]


def _utc_timestamps(values: np.ndarray) -> pa.Array:
    return pa.array(values, type=pa.timestamp("us")).cast(pa.timestamp("us", tz="UTC"))


def _hash_numbers(numbers: pa.Array, key: bytes, cache: dict[str, str | None]) -> pa.Array:
    """Keyed hashes of a column of numbers, each distinct number hashed once per file."""
    encoded = cast(pa.DictionaryArray, pc.dictionary_encode(numbers))  # pyarrow-stubs: an Array in gives a DictionaryArray out
    distinct = cast(list[str], encoded.dictionary.to_pylist())  # no nulls: numbers are text, "" when absent (_text)
    missing = [value for value in distinct if value not in cache]
    if missing:
        if len(cache) + len(missing) > PHONE_CACHE_LIMIT:
            cache.clear()
        cache.update(zip(missing, (hash_phone_number(value, key) for value in missing)))
    hashed = pa.array([cache[value] for value in distinct], type=pa.string())
    return pc.take(hashed, encoded.indices)


def _content_hashes(table: pa.Table) -> pa.Array:
    """sha256 (hex) of each call's normalised fields; equal for identical re-deliveries of a call.

    Covers everything stored about the call except where it came from (file, line): call_id,
    account_code, direction, disposition, the three times (UTC microseconds), billable_seconds and
    the phone-number hashes. Minutes are left out on purpose: they follow from the policy.
    """
    parts = [table.column(name) for name in ("call_id", "account_code", "direction", "disposition")]
    parts += [pc.cast(pc.cast(table.column(name), pa.int64()), pa.string()) for name in ("started_at", "answered_at", "ended_at")]
    parts += [pc.cast(table.column("billable_seconds"), pa.string()), table.column("caller_hash"), table.column("callee_hash")]
    sha256 = hashlib.sha256
    hashed = []
    for start in range(0, table.num_rows, HASH_BATCH_ROWS):  # batches bound the joined text alive at once
        batch = [part.slice(start, HASH_BATCH_ROWS) for part in parts]
        # pyarrow-stubs want every argument of one type; Arrow takes arrays with a scalar separator
        joined = pc.binary_join_element_wise(*batch, CONTENT_SEPARATOR, null_handling="replace", null_replacement="")  # pyright: ignore[reportCallIssue, reportArgumentType]
        hashed.append(pa.array([sha256(text.encode()).hexdigest() for text in joined.to_pylist()], type=pa.string()))
    return pa.concat_arrays(hashed) if hashed else pa.array([], type=pa.string())


def _validation_rejects(calls: CallFields, verdict: _Verdict, bad: np.ndarray, parsed: ParsedRows) -> RejectList:
    rejects = RejectList()
    raw_lines = parsed.raw_text(bad)
    call_ids = calls.call_id.take(bad).to_pylist()
    personal = [values.take(bad).to_pylist() for values in calls.personal]
    for k, row in enumerate(bad.tolist()):
        rejects.source_line.append(int(parsed.line_numbers[row]))
        rejects.reason_code.append(str(verdict.code[row]))
        rejects.reason.append(str(verdict.reason[row]))
        rejects.raw_record.append(rejected_text(raw_lines[k], [values[k] for values in personal]))
        call_id = call_ids[k]
        rejects.call_id.append(call_id[:MAX_KEY_CHARS] if call_id else None)
    return rejects

"""From the split fields of one chunk to canonical, validated, rated calls — column-wise.

Each format has an adapter that maps its fields onto the canonical call (`CallFields`); one
validator then decides per row, in a fixed order, the first reason to reject it; the good rows
are rated, their phone numbers hashed and their content hashed.

Format rules worth knowing (DESIGN.md §2.1):
- canonical: times are ISO 8601 and must carry an offset or Z (a time without one is ambiguous and
  rejected as `unparseable_time`); empty `billable_seconds` is derived from answered_at..ended_at.
- Twilio: `status` gives the disposition (queued/initiated/ringing/in-progress are calls that have
  not ended: `call_not_finished`); `duration` is the billable seconds; Twilio has no answer time, so
  answered_at = end_time − duration for completed calls (never before start_time); times are
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
  longer than 128 characters is a `malformed_row` (the warehouse keys hold 128).
"""

from __future__ import annotations

import email.utils
import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from .privacy import hash_phone_numbers, redact_record_text
from .rating import rate_calls
from .records import (
    ABSURD_DURATION,
    ANSWERED_DISPOSITION,
    CALL_NOT_FINISHED,
    ENDED_BEFORE_STARTED,
    MALFORMED_ROW,
    MAX_CALL_SECONDS,
    MISSING_FIELD,
    NEGATIVE_DURATION,
    RECORD_COLUMNS,
    REJECT_COLUMNS,
    UNKNOWN_DIRECTION,
    UNKNOWN_DISPOSITION,
    UNPARSEABLE_TIME,
)

if TYPE_CHECKING:
    from .reader import CdrChunk, ReadOptions

MAX_KEY_CHARS = 128
QUOTE_CHARS = 60  # at most this much of a bad value is quoted in a reason
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


# --- rejects -----------------------------------------------------------------------------------


@dataclass
class RejectList:
    """Rejected rows collected while a chunk is read (before the row could be split into fields)."""

    source_line: list[int] = field(default_factory=list)
    reason_code: list[str] = field(default_factory=list)
    reason: list[str] = field(default_factory=list)
    raw_record: list[str] = field(default_factory=list)
    call_id: list[str | None] = field(default_factory=list)

    def add(self, line: int, code: str, reason: str, raw: str, call_id: str | None = None) -> None:
        self.source_line.append(line)
        self.reason_code.append(code)
        self.reason.append(reason)
        self.raw_record.append(redact_record_text(raw))
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


@dataclass
class ParsedRows:
    """The rows of a chunk that split into fields, with their file line numbers and raw text."""

    fields: pd.DataFrame  # string columns named by the format
    line_numbers: np.ndarray  # int64, one per row
    raw_text: Callable[[np.ndarray], list[str]]  # raw lines of the rows at these positions


@dataclass
class CallFields:
    """One chunk mapped onto the canonical call; *_raw keep the text to tell empty from unreadable."""

    call_id: pd.Series
    account_code: pd.Series
    direction_raw: pd.Series
    direction: pd.Series  # inbound/outbound, NaN when raw is empty or unknown
    disposition_raw: pd.Series
    disposition: pd.Series  # canonical, NaN when raw is empty or unknown
    times_raw: dict[str, pd.Series]  # started_at, answered_at, ended_at
    times: dict[str, pd.Series]  # datetime64[us, UTC], NaT when empty or unreadable
    seconds_raw: pd.Series
    caller: pd.Series
    callee: pd.Series
    personal: list[pd.Series]  # every field that may hold a number or a name (for reject redaction)
    seconds_name: str = "billable_seconds"
    time_errors: dict[str, pd.Series] = field(default_factory=dict)  # specific messages, None = generic
    unfinished: pd.Series | None = None  # Twilio: the call has not ended yet
    total_seconds_raw: pd.Series | None = None  # Asterisk: `duration` (end − start), checked too


def build_chunk(file_format: str, parsed: ParsedRows, pre_rejects: RejectList, options: "ReadOptions") -> "CdrChunk":
    from .reader import CdrChunk

    adapter = ADAPTERS[file_format]
    calls = adapter(parsed.fields, options)
    verdict = _Verdict(len(parsed.fields))
    _validate(calls, verdict)
    good = np.flatnonzero(verdict.open)
    bad = np.flatnonzero(~verdict.open)
    records = _records(calls, good, parsed.line_numbers, options)
    rows_total = len(parsed.fields) + len(pre_rejects)
    rejects = pre_rejects
    if len(bad):
        rejects.extend(_validation_rejects(calls, verdict, bad, parsed))
    reject_frame = rejects.frame().sort_values("source_line", kind="stable").reset_index(drop=True)
    return CdrChunk(records=records, rejects=reject_frame, rows_total=rows_total)


# --- adapters ----------------------------------------------------------------------------------


def _strip(series: pd.Series) -> pd.Series:
    return series.astype("str").str.strip()


def canonical_fields(fields: pd.DataFrame, options: "ReadOptions") -> CallFields:
    col = {name: _strip(fields[name]) for name in fields.columns}
    direction_raw = col["direction"]
    disposition_raw = col["disposition"]
    times_raw = {name: col[name] for name in ("started_at", "answered_at", "ended_at")}
    times: dict[str, pd.Series] = {}
    errors: dict[str, pd.Series] = {}
    for name, raw in times_raw.items():
        times[name], errors[name] = _parse_iso(raw)
    return CallFields(
        call_id=col["call_id"],
        account_code=col["account_code"],
        direction_raw=direction_raw,
        direction=direction_raw.str.lower().map(CANONICAL_DIRECTIONS),
        disposition_raw=disposition_raw,
        disposition=disposition_raw.str.lower().str.replace(r"[\s-]+", "_", regex=True).map(CANONICAL_DISPOSITIONS),
        times_raw=times_raw,
        times=times,
        time_errors=errors,
        seconds_raw=col["billable_seconds"],
        caller=col["caller"],
        callee=col["callee"],
        personal=[col["caller"], col["callee"]],
    )


def twilio_fields(fields: pd.DataFrame, options: "ReadOptions") -> CallFields:
    col = {name: _strip(fields[name]) for name in fields.columns}
    status = col["status"].str.lower()
    direction_raw = col["direction"]
    times_raw = {"started_at": col["start_time"], "ended_at": col["end_time"]}
    times = {name: _parse_rfc2822(raw) for name, raw in times_raw.items()}
    disposition = status.map(TWILIO_DISPOSITIONS)
    seconds = pd.to_numeric(col["duration"].where(col["duration"] != "", None), errors="coerce")
    # Twilio has no answer time: a completed call was answered `duration` seconds before it ended.
    answered = times["ended_at"] - pd.to_timedelta(seconds, unit="s")
    answered = answered.where(answered >= times["started_at"], times["started_at"])
    answered = answered.where(disposition == ANSWERED_DISPOSITION)
    times["answered_at"] = answered.dt.as_unit(TIME_UNIT)
    times_raw["answered_at"] = pd.Series([""] * len(fields), dtype="str")
    return CallFields(
        call_id=col["sid"],
        account_code=col["account_sid"],
        direction_raw=direction_raw,
        direction=direction_raw.str.lower().map(TWILIO_DIRECTIONS),
        disposition_raw=col["status"],
        disposition=disposition,
        times_raw=times_raw,
        times=times,
        seconds_raw=col["duration"],
        seconds_name="duration",
        caller=col["from"],
        callee=col["to"],
        personal=[col[name] for name in ("from", "to", "from_formatted", "to_formatted", "caller_name", "forwarded_from")],
        unfinished=status.isin(TWILIO_UNFINISHED),
    )


def asterisk_fields(fields: pd.DataFrame, options: "ReadOptions") -> CallFields:
    col = {name: _strip(fields[name]) for name in fields.columns}
    tz = options.asterisk_timezone
    seconds = _numbers(col["billsec"])
    duration = _numbers(col["duration"])
    candidates = {name: _localise(col[raw_name], tz) for name, raw_name in (("started_at", "start"), ("answered_at", "answer"), ("ended_at", "end"))}
    times = _resolve_repeated_hour(candidates, duration, seconds)
    errors = {name: candidates[name].errors for name in candidates}
    direction = pd.Series(
        np.where(col["dcontext"].str.contains(ASTERISK_OUTBOUND_CONTEXT, regex=True).to_numpy(dtype=bool), "outbound", "inbound"),
        dtype="str",
    )
    return CallFields(
        call_id=col["uniqueid"],
        account_code=col["accountcode"],
        # Asterisk has no direction field: it is always known (see the module doc for the rule)
        direction_raw=direction,
        direction=direction,
        disposition_raw=col["disposition"],
        disposition=col["disposition"].str.upper().map(ASTERISK_DISPOSITIONS),
        times_raw={"started_at": col["start"], "answered_at": col["answer"], "ended_at": col["end"]},
        times=times,
        time_errors=errors,
        seconds_raw=col["billsec"],
        seconds_name="billsec",
        caller=col["src"],
        callee=col["dst"],
        personal=[col[name] for name in ("src", "dst", "clid", "channel", "dstchannel", "lastdata")],
        total_seconds_raw=col["duration"],
    )


ADAPTERS: dict[str, Callable[[pd.DataFrame, "ReadOptions"], CallFields]] = {
    "canonical_csv": canonical_fields,
    "canonical_jsonl": canonical_fields,
    "twilio": twilio_fields,
    "asterisk": asterisk_fields,
}


# --- time parsing ------------------------------------------------------------------------------


def _no_errors(n: int) -> pd.Series:
    return pd.Series([None] * n, dtype=object)


def _parse_iso(raw: pd.Series) -> tuple[pd.Series, pd.Series]:
    """ISO 8601 times that carry an offset; a time without one gets a specific error."""
    has_offset = raw.str.contains(ISO_OFFSET, regex=True).to_numpy(dtype=bool)
    present = (raw != "").to_numpy(dtype=bool)
    parsed = pd.to_datetime(raw.where(has_offset, ""), utc=True, format="ISO8601", errors="coerce")
    errors = _no_errors(len(raw))
    naive = present & ~has_offset
    if naive.any():
        errors[naive] = [f"time {_quote(v)} has no UTC offset (add Z or ±hh:mm)" for v in raw[naive]]
    return parsed.dt.as_unit(TIME_UNIT), errors


def _parse_rfc2822(raw: pd.Series) -> pd.Series:
    parsed = pd.to_datetime(raw, format=TWILIO_TIME_FORMAT, utc=True, errors="coerce")
    retry = (parsed.isna() & (raw != "")).to_numpy(dtype=bool)
    if retry.any():
        # other spellings of RFC 2822 ("GMT", no weekday), or ISO 8601 with an offset
        parsed = parsed.astype(object)
        parsed[retry] = [_parse_time_leniently(value) for value in raw[retry]]
        parsed = pd.to_datetime(parsed, utc=True)
    return parsed.dt.as_unit(TIME_UNIT)


def _parse_time_leniently(value: str) -> datetime | None:
    try:
        parsed = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
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
    earliest: pd.Series  # UTC, the earlier of two readings of a repeated wall-clock time
    latest: pd.Series  # UTC, the later reading (= earliest unless the time is in a repeated hour)
    errors: pd.Series


def _localise(raw: pd.Series, tz: str) -> _LocalTime:
    naive = pd.to_datetime(raw, format=ASTERISK_TIME_FORMAT, errors="coerce")
    errors = _no_errors(len(raw))
    if tz.upper() == UTC:
        utc = naive.dt.tz_localize(UTC).dt.as_unit(TIME_UNIT)
        return _LocalTime(utc, utc, errors)
    n = len(raw)
    first = naive.dt.tz_localize(tz, ambiguous=np.ones(n, dtype=bool), nonexistent="NaT").dt.tz_convert(UTC)
    second = naive.dt.tz_localize(tz, ambiguous=np.zeros(n, dtype=bool), nonexistent="NaT").dt.tz_convert(UTC)
    earliest = first.where(first <= second, second).where(first.notna())
    latest = first.where(first >= second, second).where(first.notna())
    skipped = (naive.notna() & first.isna()).to_numpy(dtype=bool)
    if skipped.any():
        errors[skipped] = [f"local time {_quote(v)} does not exist in {tz} (skipped by a DST change)" for v in raw[skipped]]
    return _LocalTime(earliest.dt.as_unit(TIME_UNIT), latest.dt.as_unit(TIME_UNIT), errors)


def _resolve_repeated_hour(times: dict[str, _LocalTime], duration: pd.Series, billsec: pd.Series) -> dict[str, pd.Series]:
    """Pick the reading of each repeated wall-clock time that agrees with duration and billsec."""
    start, answer, end = times["started_at"], times["answered_at"], times["ended_at"]
    started, answered, ended = start.earliest.copy(), answer.earliest.copy(), end.earliest.copy()
    repeated = (start.earliest != start.latest) | (answer.earliest != answer.latest) | (end.earliest != end.latest)
    if not repeated.any():
        return {"started_at": started, "answered_at": answered, "ended_at": ended}

    def agrees(later: pd.Series, earlier: pd.Series, seconds: pd.Series) -> pd.Series:
        return ((later - earlier).dt.total_seconds() - seconds).abs() <= 1

    settled = agrees(end.earliest, start.earliest, duration)
    for start_reading, end_reading in ((start.earliest, end.latest), (start.latest, end.latest), (start.latest, end.earliest)):
        fits = ~settled & agrees(end_reading, start_reading, duration)
        started = started.where(~fits, start_reading)
        ended = ended.where(~fits, end_reading)
        settled |= fits
    later_answer = ~agrees(ended, answer.earliest, billsec) & agrees(ended, answer.latest, billsec)
    answered = answered.where(~later_answer, answer.latest)
    return {"started_at": started, "answered_at": answered, "ended_at": ended}


def _numbers(raw: pd.Series) -> pd.Series:
    return pd.to_numeric(raw.where(raw != "", None), errors="coerce").astype("float64")


def _quote(value: object) -> str:
    text = str(value)
    return repr(text if len(text) <= QUOTE_CHARS else text[:QUOTE_CHARS] + "…")


# --- validation --------------------------------------------------------------------------------


class _Verdict:
    """The first reason each row fails, in the order the checks are applied."""

    def __init__(self, n: int) -> None:
        self.open = np.ones(n, dtype=bool)
        self.code = np.full(n, None, dtype=object)
        self.reason = np.full(n, None, dtype=object)

    def flag(self, mask: pd.Series | np.ndarray, code: str, reason: str | Callable[[np.ndarray], Sequence[str]]) -> None:
        hit = np.asarray(mask, dtype=bool) & self.open
        if not hit.any():
            return
        where = np.flatnonzero(hit)
        self.code[where] = code
        self.reason[where] = reason if isinstance(reason, str) else list(reason(where))
        self.open[where] = False


def _values(series: pd.Series, where: np.ndarray) -> list[str]:
    return [_quote(value) for value in series.iloc[where]]


def _validate(calls: CallFields, verdict: _Verdict) -> None:
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
        verdict.flag(raw == "", MISSING_FIELD, f"required field {name} is empty")
    for name, raw in (("call_id", calls.call_id), ("account_code", calls.account_code)):
        verdict.flag(raw.str.len() > MAX_KEY_CHARS, MALFORMED_ROW, f"{name} is longer than {MAX_KEY_CHARS} characters")

    verdict.flag(calls.direction.isna(), UNKNOWN_DIRECTION, lambda w: [f"unknown direction {v}" for v in _values(calls.direction_raw, w)])
    verdict.flag(
        calls.disposition.isna(), UNKNOWN_DISPOSITION, lambda w: [f"unknown disposition {v}" for v in _values(calls.disposition_raw, w)]
    )

    for name in ("started_at", "answered_at", "ended_at"):
        raw, parsed = calls.times_raw[name], calls.times[name]
        specific = calls.time_errors.get(name)
        if specific is not None:
            has_specific = specific.notna().to_numpy(dtype=bool)
            verdict.flag(has_specific, UNPARSEABLE_TIME, lambda w, s=specific, n=name: [f"{n}: {m}" for m in s.iloc[w]])
        unreadable = (raw != "") & parsed.isna()
        verdict.flag(unreadable, UNPARSEABLE_TIME, lambda w, r=raw, n=name: [f"cannot read {n} {v} as a time" for v in _values(r, w)])

    seconds = _numbers(calls.seconds_raw)
    checked = [(calls.seconds_name, calls.seconds_raw, seconds)]
    if calls.total_seconds_raw is not None:
        checked.append(("duration", calls.total_seconds_raw, _numbers(calls.total_seconds_raw)))
    for name, raw, number in checked:
        not_whole = ((raw != "") & (number.isna() | (number != np.floor(number)))).to_numpy(dtype=bool)
        verdict.flag(not_whole, MALFORMED_ROW, lambda w, r=raw, n=name: [f"{n} {v} is not a whole number of seconds" for v in _values(r, w)])

    started, answered, ended = calls.times["started_at"], calls.times["answered_at"], calls.times["ended_at"]
    verdict.flag(ended < started, ENDED_BEFORE_STARTED, "ended_at is before started_at")
    verdict.flag(answered < started, ENDED_BEFORE_STARTED, "answered_at is before started_at")
    verdict.flag(answered > ended, ENDED_BEFORE_STARTED, "ended_at is before answered_at")

    for name, _, number in checked:
        verdict.flag(number < 0, NEGATIVE_DURATION, lambda w, s=number, n=name: [f"{n} is negative ({int(v)} s)" for v in s.iloc[w]])

    length = (ended - started).dt.total_seconds()
    verdict.flag(length > MAX_CALL_SECONDS, ABSURD_DURATION, lambda w: [f"the call lasted {int(v)} s, more than 24 h" for v in length.iloc[w]])
    for name, _, number in checked:
        verdict.flag(number > MAX_CALL_SECONDS, ABSURD_DURATION, lambda w, s=number, n=name: [f"{n} is {int(v)} s, more than 24 h" for v in s.iloc[w]])

    answered_call = (calls.disposition == ANSWERED_DISPOSITION).fillna(False)
    verdict.flag(
        answered_call & seconds.isna() & answered.isna(),
        MISSING_FIELD,
        f"a completed call needs {calls.seconds_name} or answered_at",
    )


# --- output ------------------------------------------------------------------------------------


def _records(calls: CallFields, good: np.ndarray, line_numbers: np.ndarray, options: "ReadOptions") -> pd.DataFrame:
    if not len(good):
        return empty_records()

    def take(series: pd.Series) -> pd.Series:
        return series.iloc[good].reset_index(drop=True)

    disposition = take(calls.disposition).astype("str")
    started = take(calls.times["started_at"])
    answered = take(calls.times["answered_at"])
    ended = take(calls.times["ended_at"])
    seconds = take(_numbers(calls.seconds_raw))
    derived = np.ceil((ended - answered).dt.total_seconds())
    seconds = seconds.fillna(derived).fillna(0)
    answered_call = (disposition == ANSWERED_DISPOSITION).to_numpy(dtype=bool)
    billable_seconds = pd.Series(np.where(answered_call, seconds.to_numpy(), 0).astype(np.int64), name="billable_seconds")
    records = pd.DataFrame(
        {
            "call_id": take(calls.call_id),
            "account_code": take(calls.account_code),
            "direction": take(calls.direction).astype("str"),
            "disposition": disposition,
            "started_at": started,
            "answered_at": answered,
            "ended_at": ended,
            "billable_seconds": billable_seconds,
            "billable_minutes": rate_calls(disposition, billable_seconds, options.policy),
            "caller_hash": pd.Series(hash_phone_numbers(take(calls.caller), options.pii_key), dtype=object),
            "callee_hash": pd.Series(hash_phone_numbers(take(calls.callee), options.pii_key), dtype=object),
        }
    )
    records["content_hash"] = content_hashes(records)
    records["source_line"] = pd.Series(line_numbers[good], dtype="int64")
    return records[list(RECORD_COLUMNS)]


def content_hashes(records: pd.DataFrame) -> pd.Series:
    """sha256 (hex) of each call's normalised fields; equal for identical re-deliveries of a call.

    Covers everything stored about the call except where it came from (file, line): call_id,
    account_code, direction, disposition, the three times (UTC microseconds), billable_seconds and
    the phone-number hashes. Minutes are left out on purpose: they follow from the policy.
    """
    sep = CONTENT_SEPARATOR

    def micros(column: str) -> pd.Series:
        values = records[column]
        text = values.dt.as_unit(TIME_UNIT).astype("int64").astype("str")
        return text.where(values.notna(), "")

    joined = (
        records["call_id"].astype("str")
        + sep
        + records["account_code"].astype("str")
        + sep
        + records["direction"].astype("str")
        + sep
        + records["disposition"].astype("str")
        + sep
        + micros("started_at")
        + sep
        + micros("answered_at")
        + sep
        + micros("ended_at")
        + sep
        + records["billable_seconds"].astype("str")
        + sep
        + records["caller_hash"].fillna("").astype("str")
        + sep
        + records["callee_hash"].fillna("").astype("str")
    )
    sha256 = hashlib.sha256
    return pd.Series([sha256(text.encode()).hexdigest() for text in joined.tolist()], index=records.index, dtype="str")


def _validation_rejects(calls: CallFields, verdict: _Verdict, bad: np.ndarray, parsed: ParsedRows) -> RejectList:
    rejects = RejectList()
    raw_lines = parsed.raw_text(bad)
    call_ids = calls.call_id.iloc[bad].tolist()
    personal = [series.iloc[bad].tolist() for series in calls.personal]
    for k, row in enumerate(bad.tolist()):
        rejects.source_line.append(int(parsed.line_numbers[row]))
        rejects.reason_code.append(verdict.code[row])
        rejects.reason.append(verdict.reason[row])
        rejects.raw_record.append(redact_record_text(raw_lines[k], [values[k] for values in personal]))
        call_id = call_ids[k]
        rejects.call_id.append(call_id[:MAX_KEY_CHARS] if call_id else None)
    return rejects

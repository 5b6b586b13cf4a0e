"""Realistic sample calls, deterministic for a seed, and writers for every CDR format.

`simulate_calls` returns canonical calls (a DataFrame with CANONICAL_COLUMNS) for a set of
accounts over some days; `iter_simulated_calls` yields the same calls one day at a time, for files
too big to hold in memory. Every account-day draws from its own random stream (seed, account,
day), so a day's calls do not depend on how many days or accounts are asked for around it.

What makes the calls realistic enough for demos, tests and benchmarks:
- volume: each account has its own mean calls per weekday (log-normal across accounts); weekends
  are quieter; the count per day is Poisson;
- time of day: a business-hours curve (morning and afternoon peaks), shifted per account as if the
  account sat in a time zone between UTC-8 and UTC+1;
- outcome: 15–25 % of an account's calls are not answered (no answer, busy, failed, canceled);
- length: talk time is log-normal (median ~1.5 min, long tail, capped at 4 h), ring time a few s;
- parties: each account has a few numbers of its own and a pool of correspondents, some of whom
  call often (Zipf).

An account can instead be given exact billable minutes for the whole span (`target_minutes`): its
answered calls then add up to exactly that many minutes under the per-call ceiling (the default
rating policy), spread over the days like the volume would be. The demo and the reconciliation use
this to put customers at chosen shares of their plan.
"""

from __future__ import annotations

import os
import tempfile
import zlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd

from aisyst_pipelines.cdr.records import CANONICAL_COLUMNS, FORMATS

DEFAULT_START = date(2026, 10, 1)
SECONDS_PER_DAY = 86_400
MAX_TALK_SECONDS = 4 * 3600
WEEKDAY_WEIGHT = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 0.35, 0.25])  # Monday … Sunday
# Calls per hour of the (account's local) day: quiet nights, peaks late morning and mid afternoon.
HOUR_WEIGHT = np.array(
    [0.2, 0.1, 0.1, 0.1, 0.1, 0.2, 0.5, 1.5, 4.0, 7.0, 8.0, 7.5, 6.0, 6.5, 7.5, 7.0, 6.0, 4.5, 2.5, 1.5, 1.0, 0.7, 0.5, 0.3]
)
UNANSWERED_OUTCOMES = ("no_answer", "busy", "failed", "canceled")
UNANSWERED_SHARES = np.array([0.6, 0.2, 0.1, 0.1])
# Ring time in seconds (low, high) before the call was answered or given up, per outcome.
RING_SECONDS = {"completed": (2, 25), "no_answer": (20, 45), "busy": (1, 5), "failed": (0, 3), "canceled": (3, 20)}
TALK_MEDIAN_SECONDS = 95.0
TALK_SIGMA = 1.1
UTC_OFFSETS = np.array([-8, -7, -6, -5, -5, -5, -4, 0, 1])  # where the simulated accounts sit


@dataclass(frozen=True)
class AccountProfile:
    """How one simulated account calls."""

    account_code: str
    calls_per_day: float  # mean answered + unanswered calls on a weekday
    answer_rate: float  # share of calls answered (0.75–0.85)
    inbound_share: float
    utc_offset_hours: int
    own_numbers: tuple[str, ...]
    correspondents: int  # size of the pool of other parties
    target_minutes: int | None = None  # exact billable minutes over the whole span


def account_codes(customers: int | Sequence[str]) -> list[str]:
    """The account codes of `customers` accounts ("acct_0001", …) or the codes given."""
    if isinstance(customers, int):
        if customers < 1:
            raise ValueError("at least one customer is needed")
        return [f"acct_{i:04d}" for i in range(1, customers + 1)]
    codes = list(customers)
    if len(set(codes)) != len(codes) or not codes:
        raise ValueError("account codes must be given, and each once")
    return codes


def account_profiles(
    customers: int | Sequence[str],
    seed: int,
    *,
    mean_calls_per_day: float = 40.0,
    calls_per_day: Mapping[str, float] | None = None,
    target_minutes: Mapping[str, int] | None = None,
) -> list[AccountProfile]:
    """One profile per account, drawn from the seed (volumes log-normal around the mean)."""
    codes = account_codes(customers)
    unknown = sorted((set(calls_per_day or {}) | set(target_minutes or {})) - set(codes))
    if unknown:
        raise ValueError(f"volumes or targets given for accounts that are not simulated: {', '.join(unknown)}")
    profiles = []
    for index, code in enumerate(codes):
        rng = np.random.default_rng([seed, 1, index])
        volume = float(mean_calls_per_day * rng.lognormal(-0.32, 0.8))  # mean of the factor ~1
        if calls_per_day and code in calls_per_day:
            volume = float(calls_per_day[code])
        target = None
        if target_minutes and code in target_minutes:
            target = int(target_minutes[code])
            if target < 0:
                raise ValueError(f"target minutes of {code} must not be negative")
        areas = rng.integers(201, 990, size=3)
        owned = int(rng.integers(1, 4))
        numbers = tuple(f"+1{area}555{int(rng.integers(100, 200)):04d}" for area in areas[:owned])
        profiles.append(
            AccountProfile(
                account_code=code,
                calls_per_day=max(volume, 0.0),
                answer_rate=float(rng.uniform(0.75, 0.85)),
                inbound_share=float(rng.uniform(0.4, 0.8)),
                utc_offset_hours=int(rng.choice(UTC_OFFSETS)),
                own_numbers=numbers,
                correspondents=int(rng.integers(30, 400)),
                target_minutes=target,
            )
        )
    return profiles


def simulate_calls(
    customers: int | Sequence[str] = 10,
    days: int = 30,
    seed: int = 0,
    start: date | datetime = DEFAULT_START,
    *,
    mean_calls_per_day: float = 40.0,
    calls_per_day: Mapping[str, float] | None = None,
    target_minutes: Mapping[str, int] | None = None,
) -> pd.DataFrame:
    """Canonical calls (CANONICAL_COLUMNS; times datetime64[us, UTC]) of the accounts over `days` days.

    `customers`: a count (codes acct_0001…) or the account codes. `calls_per_day` overrides the
    weekday volume of some accounts; `target_minutes` fixes the billable minutes of some accounts
    over the span (per-call ceiling). Sorted by started_at, then call_id.
    """
    frames = list(
        iter_simulated_calls(
            customers,
            days,
            seed,
            start,
            mean_calls_per_day=mean_calls_per_day,
            calls_per_day=calls_per_day,
            target_minutes=target_minutes,
        )
    )
    return pd.concat(frames, ignore_index=True) if frames else _empty_calls()


def iter_simulated_calls(
    customers: int | Sequence[str] = 10,
    days: int = 30,
    seed: int = 0,
    start: date | datetime = DEFAULT_START,
    *,
    mean_calls_per_day: float = 40.0,
    calls_per_day: Mapping[str, float] | None = None,
    target_minutes: Mapping[str, int] | None = None,
) -> Iterator[pd.DataFrame]:
    """The calls of `simulate_calls`, one UTC day (by started_at's day of generation) at a time."""
    if days < 1:
        raise ValueError("at least one day is needed")
    profiles = account_profiles(
        customers, seed, mean_calls_per_day=mean_calls_per_day, calls_per_day=calls_per_day, target_minutes=target_minutes
    )
    first_day = _midnight_utc(start)
    weekday_weights = np.array([WEEKDAY_WEIGHT[(first_day + timedelta(days=d)).weekday()] for d in range(days)])
    budgets = {
        index: np.random.default_rng([seed, 2, index]).multinomial(profile.target_minutes, weekday_weights / weekday_weights.sum())
        for index, profile in enumerate(profiles)
        if profile.target_minutes is not None
    }
    for day in range(days):
        midnight = first_day + timedelta(days=day)
        parts = []
        for index, profile in enumerate(profiles):
            rng = np.random.default_rng([seed, 3, index, day])
            budget = int(budgets[index][day]) if index in budgets else None
            part = _account_day(profile, rng, weekday_weights[day], budget)
            if part is not None:
                parts.append(part)
        if parts:
            yield _day_frame(parts, midnight)


def _midnight_utc(start: date | datetime) -> datetime:
    if isinstance(start, datetime):
        if start.tzinfo is None:
            raise ValueError("start must be timezone-aware (UTC) or a date")
        start = start.astimezone(timezone.utc).date()
    return datetime.combine(start, time(0), tzinfo=timezone.utc)


@dataclass
class _AccountDay:
    """One account's calls of one day as plain arrays (joined into one DataFrame per day)."""

    account_code: str
    ids: np.ndarray  # (n, 2) uint64: the random bits of the call ids
    disposition: np.ndarray  # object: canonical dispositions
    offset: np.ndarray  # seconds after midnight UTC the call started
    ring: np.ndarray  # seconds until answered or given up
    seconds: np.ndarray  # billable (talk) seconds, 0 when not answered
    inbound: np.ndarray  # bool
    own: np.ndarray  # object: the account's number on the call
    other: np.ndarray  # object: the other party's number


def _account_day(profile: AccountProfile, rng: np.random.Generator, weekday_weight: float, budget: int | None) -> _AccountDay | None:
    if budget is None:
        n = int(rng.poisson(profile.calls_per_day * weekday_weight))
        answered = rng.random(n) < profile.answer_rate
        talk = _talk_seconds(rng, int(answered.sum()))
    else:
        talk = _talk_seconds_for_minutes(rng, budget)
        n_answered = len(talk)
        # as many unanswered calls as the account's answer rate implies around them
        n_unanswered = int(rng.binomial(n_answered, (1.0 - profile.answer_rate) / profile.answer_rate))
        n = n_answered + n_unanswered
        answered = np.zeros(n, dtype=bool)
        answered[rng.permutation(n)[:n_answered]] = True
    if n == 0:
        return None

    disposition = np.full(n, "completed", dtype=object)
    unanswered_index = np.flatnonzero(~answered)
    disposition[unanswered_index] = rng.choice(UNANSWERED_OUTCOMES, size=len(unanswered_index), p=UNANSWERED_SHARES)
    ring = np.zeros(n, dtype=np.int64)
    for outcome, (low, high) in RING_SECONDS.items():
        where = np.flatnonzero(disposition == outcome)
        ring[where] = rng.integers(low, high + 1, size=len(where))
    seconds = np.zeros(n, dtype=np.int64)
    seconds[answered] = talk

    local_hour = rng.choice(24, size=n, p=HOUR_WEIGHT / HOUR_WEIGHT.sum())
    offset = ((local_hour - profile.utc_offset_hours) % 24) * 3600 + rng.integers(0, 3600, size=n)
    inbound = rng.random(n) < profile.inbound_share
    own = np.asarray(profile.own_numbers, dtype=object)[rng.integers(0, len(profile.own_numbers), size=n)]
    contact = np.minimum(rng.zipf(1.4, size=n), profile.correspondents) - 1
    # a correspondent keeps one number: derived from the account and the correspondent's rank
    area = 201 + (contact * 7919 + zlib.crc32(profile.account_code.encode()) % 1000) % 789
    line = (contact * 37 + 1000) % 10000
    other = np.array([f"+1{a}555{b:04d}" for a, b in zip(area.tolist(), line.tolist())], dtype=object)
    ids = rng.integers(0, np.iinfo(np.uint64).max, size=(n, 2), dtype=np.uint64, endpoint=True)
    return _AccountDay(profile.account_code, ids, disposition, offset.astype(np.int64), ring, seconds, inbound, own, other)


def _day_frame(parts: list[_AccountDay], midnight: datetime) -> pd.DataFrame:
    def joined(name: str) -> np.ndarray:
        return np.concatenate([getattr(part, name) for part in parts])

    ids = joined("ids")
    disposition = joined("disposition")
    answered = disposition == "completed"
    inbound = joined("inbound")
    own, other = joined("own"), joined("other")
    base = np.datetime64(midnight.replace(tzinfo=None), "us")
    started = base + joined("offset").astype("timedelta64[s]")
    rang = started + joined("ring").astype("timedelta64[s]")
    seconds = joined("seconds")
    ended = rang + seconds.astype("timedelta64[s]")
    utc = "datetime64[us, UTC]"
    frame = pd.DataFrame(
        {
            "call_id": pd.Series([f"CA{a:016x}{b:016x}" for a, b in ids.tolist()], dtype="str"),
            "account_code": pd.Series(np.concatenate([[part.account_code] * len(part.offset) for part in parts]), dtype="str"),
            "direction": pd.Series(np.where(inbound, "inbound", "outbound"), dtype="str"),
            "disposition": pd.Series(disposition, dtype="str"),
            "started_at": pd.Series(started, dtype="datetime64[us]").dt.tz_localize("UTC").astype(utc),
            "answered_at": pd.Series(np.where(answered, rang, np.datetime64("NaT", "us")), dtype="datetime64[us]").dt.tz_localize("UTC").astype(utc),
            # an unanswered call ends when the ringing stops
            "ended_at": pd.Series(np.where(answered, ended, rang), dtype="datetime64[us]").dt.tz_localize("UTC").astype(utc),
            "billable_seconds": pd.Series(seconds, dtype="int64"),
            "caller": pd.Series(np.where(inbound, other, own), dtype="str"),
            "callee": pd.Series(np.where(inbound, own, other), dtype="str"),
        },
        columns=list(CANONICAL_COLUMNS),
    )
    return frame.sort_values(["started_at", "call_id"], kind="stable").reset_index(drop=True)


def _talk_seconds(rng: np.random.Generator, n: int) -> np.ndarray:
    talk = rng.lognormal(np.log(TALK_MEDIAN_SECONDS), TALK_SIGMA, size=n)
    return np.clip(np.rint(talk), 1, MAX_TALK_SECONDS).astype(np.int64)


def _talk_seconds_for_minutes(rng: np.random.Generator, minutes: int) -> np.ndarray:
    """Talk times whose per-call ceiling minutes add up to exactly `minutes`."""
    if minutes <= 0:
        return np.zeros(0, dtype=np.int64)
    drawn: list[np.ndarray] = []
    total = 0
    while total < minutes:
        batch = _talk_seconds(rng, max(8, int(minutes / 2.5)))
        drawn.append(batch)
        total += int(((batch + 59) // 60).sum())
    talk = np.concatenate(drawn)
    used = np.cumsum((talk + 59) // 60)
    last = int(np.searchsorted(used, minutes))  # first call that reaches the budget
    talk = talk[: last + 1].copy()
    remaining = minutes - (int(used[last - 1]) if last else 0)
    talk[last] = (remaining - 1) * 60 + int(rng.integers(1, 61))
    return talk


def _empty_calls() -> pd.DataFrame:
    no_time = pd.Series([], dtype="datetime64[us, UTC]")
    frame = pd.DataFrame({name: pd.Series([], dtype="str") for name in CANONICAL_COLUMNS})
    for name in ("started_at", "answered_at", "ended_at"):
        frame[name] = no_time
    frame["billable_seconds"] = pd.Series([], dtype="int64")
    return frame


# --- writers -----------------------------------------------------------------------------------

# Deliberately broken rows (`malformed_rate`) and the reject reason the reader gives each.
CORRUPTIONS = {
    "truncated_row": "malformed_row",
    "invalid_utf8": "invalid_utf8",
    "bad_time": "unparseable_time",
    "unknown_disposition": "unknown_disposition",
    "negative_duration": "negative_duration",
    "ended_before_started": "ended_before_started",
}
ASTERISK_DISPOSITION = {
    "completed": "ANSWERED",
    "no_answer": "NO ANSWER",
    "busy": "BUSY",
    "failed": "FAILED",
    # Asterisk has no "canceled": a caller who hangs up while it rings is NO ANSWER
    "canceled": "NO ANSWER",
}
TWILIO_STATUS = {"completed": "completed", "no_answer": "no-answer", "busy": "busy", "failed": "failed", "canceled": "canceled"}
TWILIO_DIRECTION = {"inbound": "inbound", "outbound": "outbound-api"}
TWILIO_PRICE_PER_MINUTE = 0.014
WEEKDAY_NAMES = np.array(["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"], dtype=object)
MONTH_NAMES = np.array(["", "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"], dtype=object)


@dataclass
class WrittenFile:
    """What a writer wrote: where, how many rows, and which lines were broken on purpose."""

    path: Path
    file_format: str
    rows: int
    malformed: dict[int, str]  # 1-based line → the reject reason code the reader should give it


class CdrFileWriter:
    """Writes calls into one CDR file of a format, chunk by chunk, and renames it into place on close.

    The file appears under its final name only when complete (written as a hidden ".partial" file
    in the same folder first), so a landing-folder sensor never picks up half a file. A name
    ending in ".gz" is gzip-compressed. `malformed_rate` breaks that share of rows in one of the
    CORRUPTIONS ways, deterministically for the seed.
    """

    def __init__(
        self,
        path: Path,
        file_format: str,
        *,
        asterisk_timezone: str = "UTC",
        malformed_rate: float = 0.0,
        seed: int = 0,
    ) -> None:
        if file_format not in FORMATS:
            raise ValueError(f"unknown CDR format {file_format!r}: use one of {FORMATS}")
        if not 0.0 <= malformed_rate <= 1.0:
            raise ValueError("malformed_rate must be between 0 and 1")
        self.path = Path(path)
        self.format = file_format
        self.asterisk_timezone = asterisk_timezone
        self.malformed_rate = malformed_rate
        self.rng = np.random.default_rng([seed, 4])
        self.rows = 0
        self.lines = 0
        self.malformed: dict[int, str] = {}
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".partial", dir=self.path.parent)
        self._temp = Path(temp)
        raw = os.fdopen(fd, "wb")
        self._raw = raw
        self._out: BinaryIO = gzip_writer(raw) if self.path.name.endswith(".gz") else raw
        if file_format == "canonical_csv":
            self._out.write((",".join(CANONICAL_COLUMNS) + "\n").encode())
            self.lines = 1

    def write(self, calls: pd.DataFrame) -> None:
        n = len(calls)
        if n == 0:
            return
        calls = calls.reset_index(drop=True)  # the formatters align columns by position
        broken = np.flatnonzero(self.rng.random(n) < self.malformed_rate) if self.malformed_rate else np.zeros(0, dtype=np.int64)
        kinds = self.rng.choice(list(CORRUPTIONS), size=len(broken)) if len(broken) else np.zeros(0, dtype=object)
        if len(broken):
            calls = calls.copy()
            late = broken[kinds == "ended_before_started"]
            if len(late):
                calls.loc[late, "ended_at"] = calls.loc[late, "started_at"] - pd.Timedelta(hours=1)
                calls.loc[late, "answered_at"] = pd.NaT
        columns = FORMATTERS[self.format](calls, self.asterisk_timezone)
        for kind, field_name in (("bad_time", "started_at"), ("unknown_disposition", "disposition"), ("negative_duration", "seconds")):
            rows = broken[kinds == kind]
            if len(rows):
                values = columns[field_name].copy()
                values.iloc[rows] = BROKEN_VALUES[self.format][field_name]
                columns[field_name] = values
        lines = _join(self.format, columns).tolist()
        corrupted: dict[int, bytes] = {}
        for row, kind in zip(broken.tolist(), kinds.tolist()):
            if kind == "truncated_row":
                corrupted[row] = lines[row][: max(1, len(lines[row]) // 2)].encode()
            elif kind == "invalid_utf8":
                text = lines[row].encode()
                middle = len(text) // 2
                corrupted[row] = text[:middle] + b"\xff\xfe" + text[middle:]
            self.malformed[self.lines + row + 1] = CORRUPTIONS[kind]
        self._out.write(_encode_lines(lines, corrupted))
        self.rows += n
        self.lines += n

    def close(self) -> WrittenFile:
        self._out.close()
        if self._out is not self._raw:
            self._raw.close()
        os.replace(self._temp, self.path)  # keeps mkstemp's owner-only mode: CDRs carry phone numbers
        return WrittenFile(self.path, self.format, self.rows, dict(self.malformed))

    def abort(self) -> None:
        self._out.close()
        if self._out is not self._raw:
            self._raw.close()
        self._temp.unlink(missing_ok=True)

    def __enter__(self) -> "CdrFileWriter":
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


def write_calls(
    calls: pd.DataFrame,
    path: Path,
    file_format: str,
    *,
    asterisk_timezone: str = "UTC",
    malformed_rate: float = 0.0,
    seed: int = 0,
) -> WrittenFile:
    """Write canonical calls (as `simulate_calls` returns them) as one file of `file_format`."""
    writer = CdrFileWriter(path, file_format, asterisk_timezone=asterisk_timezone, malformed_rate=malformed_rate, seed=seed)
    try:
        writer.write(calls)
    except BaseException:
        writer.abort()
        raise
    return writer.close()


def gzip_writer(raw: BinaryIO) -> BinaryIO:
    import gzip

    return gzip.GzipFile(fileobj=raw, mode="wb", mtime=0)  # type: ignore[return-value]


def _encode_lines(lines: list[str], corrupted: dict[int, bytes]) -> bytes:
    if not corrupted:
        return ("\n".join(lines) + "\n").encode()
    out: list[bytes] = []
    start = 0
    for row in sorted(corrupted):
        if row > start:
            out.append(("\n".join(lines[start:row]) + "\n").encode())
        out.append(corrupted[row] + b"\n")
        start = row + 1
    if start < len(lines):
        out.append(("\n".join(lines[start:]) + "\n").encode())
    return b"".join(out)


# Each formatter returns the fields of every row as text, already quoted or escaped for its format,
# under these names (the writer breaks some of them on purpose) plus format-specific others.
def _utc_naive(values: pd.Series) -> np.ndarray:
    return values.dt.tz_convert("UTC").dt.tz_localize(None).to_numpy(dtype="datetime64[us]")


def _time_text(naive: np.ndarray, separator: str, suffix: str) -> pd.Series:
    naive = naive.astype("datetime64[us]")
    whole_seconds = not (naive[~np.isnat(naive)].astype(np.int64) % 1_000_000).any()
    text = np.datetime_as_string(naive, unit="s" if whole_seconds else "us")
    series = pd.Series(text, dtype="str")
    if separator != "T":
        series = series.str.replace("T", separator, regex=False)
    return (series + suffix).where(~np.isnat(naive), "")


def _iso_times(values: pd.Series) -> pd.Series:
    return _time_text(_utc_naive(values), "T", "Z")


def _rfc2822_times(values: pd.Series) -> pd.Series:
    naive = _utc_naive(values)
    stamps = pd.Series(naive, dtype="datetime64[us]")
    text = pd.Series(np.datetime_as_string(naive, unit="s"), dtype="str")
    weekday = WEEKDAY_NAMES[stamps.dt.day_of_week.fillna(0).astype(int).to_numpy()]
    month = MONTH_NAMES[stamps.dt.month.fillna(1).astype(int).to_numpy()]
    out = (
        pd.Series(weekday, dtype="str")
        + ", "
        + text.str.slice(8, 10)
        + " "
        + pd.Series(month, dtype="str")
        + " "
        + text.str.slice(0, 4)
        + " "
        + text.str.slice(11, 19)
        + " +0000"
    )
    return out.where(~np.isnat(naive), "")


def _csv_text(values: pd.Series) -> pd.Series:
    text = values.astype("str")
    needs_quotes = text.str.contains('[",\r\n]', regex=True)
    if needs_quotes.any():
        text = text.where(~needs_quotes, '"' + text.str.replace('"', '""', regex=False) + '"')
    return text


def _quoted(values: pd.Series) -> pd.Series:
    """Asterisk's way: every text field in double quotes, quotes doubled."""
    return '"' + values.astype("str").str.replace('"', '""', regex=False) + '"'


def _json_text(values: pd.Series, null_when_empty: bool = True) -> pd.Series:
    text = values.astype("str")
    needs_escape = text.str.contains(r'["\\\x00-\x1f]', regex=True)
    if needs_escape.any():
        import json

        out = '"' + text + '"'
        out[needs_escape] = text[needs_escape].map(json.dumps)
    else:
        out = '"' + text + '"'
    return out.where(text != "", "null") if null_when_empty else out


def _canonical_csv_fields(calls: pd.DataFrame, tz: str) -> dict[str, pd.Series]:
    return {
        "call_id": _csv_text(calls["call_id"]),
        "account_code": _csv_text(calls["account_code"]),
        "direction": calls["direction"].astype("str"),
        "disposition": calls["disposition"].astype("str"),
        "started_at": _iso_times(calls["started_at"]),
        "answered_at": _iso_times(calls["answered_at"]),
        "ended_at": _iso_times(calls["ended_at"]),
        "seconds": calls["billable_seconds"].astype("int64").astype("str"),
        "caller": _csv_text(calls["caller"].fillna("")),
        "callee": _csv_text(calls["callee"].fillna("")),
    }


def _canonical_jsonl_fields(calls: pd.DataFrame, tz: str) -> dict[str, pd.Series]:
    return {
        "call_id": _json_text(calls["call_id"]),
        "account_code": _json_text(calls["account_code"]),
        "direction": _json_text(calls["direction"]),
        "disposition": _json_text(calls["disposition"]),
        "started_at": _json_text(_iso_times(calls["started_at"])),
        "answered_at": _json_text(_iso_times(calls["answered_at"])),
        "ended_at": _json_text(_iso_times(calls["ended_at"])),
        "seconds": calls["billable_seconds"].astype("int64").astype("str"),
        "caller": _json_text(calls["caller"].fillna("")),
        "callee": _json_text(calls["callee"].fillna("")),
    }


def _nanp_formatted(numbers: pd.Series) -> pd.Series:
    text = numbers.fillna("").astype("str")
    nanp = text.str.fullmatch(r"\+1\d{10}")
    pretty = "(" + text.str.slice(2, 5) + ") " + text.str.slice(5, 8) + "-" + text.str.slice(8, 12)
    return pretty.where(nanp, text)


def _twilio_fields(calls: pd.DataFrame, tz: str) -> dict[str, pd.Series]:
    completed = (calls["disposition"] == "completed").to_numpy(dtype=bool)
    minutes = (calls["billable_seconds"].to_numpy(dtype=np.int64) + 59) // 60
    price = pd.Series([f'"-{m * TWILIO_PRICE_PER_MINUTE:.5f}"' for m in minutes.tolist()], dtype="str").where(completed, "null")
    sid = calls["call_id"].astype("str")
    account = calls["account_code"].astype("str")
    return {
        "call_id": _json_text(sid),
        "date_created": _json_text(_rfc2822_times(calls["started_at"])),
        "date_updated": _json_text(_rfc2822_times(calls["ended_at"])),
        "account_code": _json_text(account),
        "callee": _json_text(calls["callee"].fillna("")),
        "to_formatted": _json_text(_nanp_formatted(calls["callee"])),
        "caller": _json_text(calls["caller"].fillna("")),
        "from_formatted": _json_text(_nanp_formatted(calls["caller"])),
        "disposition": _json_text(calls["disposition"].map(TWILIO_STATUS)),
        "started_at": _json_text(_rfc2822_times(calls["started_at"])),
        "ended_at": _json_text(_rfc2822_times(calls["ended_at"])),
        "seconds": _json_text(calls["billable_seconds"].astype("int64").astype("str")),
        "price": price,
        "direction": _json_text(calls["direction"].map(TWILIO_DIRECTION)),
        "uri": _json_text("/2010-04-01/Accounts/" + account + "/Calls/" + sid + ".json"),
    }


def _asterisk_fields(calls: pd.DataFrame, tz: str) -> dict[str, pd.Series]:
    def local(values: pd.Series) -> pd.Series:
        naive = values.dt.tz_convert(tz).dt.tz_localize(None).to_numpy(dtype="datetime64[us]")
        return _quoted(_time_text(naive.astype("datetime64[s]"), " ", ""))

    inbound = (calls["direction"] == "inbound").to_numpy(dtype=bool)
    caller = calls["caller"].fillna("").astype("str")
    callee = calls["callee"].fillna("").astype("str")
    tag = calls["call_id"].astype("str").str.slice(2, 10)
    trunk = "PJSIP/trunk-" + tag
    phone = "PJSIP/2001-" + tag
    started_s = calls["started_at"].dt.floor("s")
    duration = ((calls["ended_at"].dt.floor("s") - started_s).dt.total_seconds()).astype("int64")
    return {
        "account_code": _quoted(calls["account_code"]),
        "caller": _quoted(caller),
        "callee": _quoted(callee),
        "dcontext": _quoted(pd.Series(np.where(inbound, "from-pstn", "from-internal"), dtype="str")),
        "clid": _quoted('"' + caller + '" <' + caller + ">"),
        "channel": _quoted(pd.Series(np.where(inbound, trunk, phone), dtype="str")),
        "dstchannel": _quoted(pd.Series(np.where(inbound, phone, trunk), dtype="str")),
        "lastapp": _quoted(pd.Series(["Dial"] * len(calls), dtype="str")),
        "lastdata": _quoted(pd.Series(np.where(inbound, "PJSIP/2001,30,tT", "PJSIP/" + callee + "@trunk,60"), dtype="str")),
        "started_at": local(calls["started_at"]),
        "answered_at": local(calls["answered_at"]),
        "ended_at": local(calls["ended_at"]),
        "duration": duration.astype("str"),
        "seconds": calls["billable_seconds"].astype("int64").astype("str"),
        "disposition": _quoted(calls["disposition"].map(ASTERISK_DISPOSITION).astype("str")),
        "amaflags": _quoted(pd.Series(["DOCUMENTATION"] * len(calls), dtype="str")),
        "call_id": _quoted(calls["call_id"]),
        "userfield": _quoted(pd.Series([""] * len(calls), dtype="str")),
    }


FORMATTERS = {
    "canonical_csv": _canonical_csv_fields,
    "canonical_jsonl": _canonical_jsonl_fields,
    "twilio": _twilio_fields,
    "asterisk": _asterisk_fields,
}
# What a deliberately broken field holds, per format.
BROKEN_VALUES = {
    "canonical_csv": {"started_at": "2026-13-45T99:00:00Z", "disposition": "exploded", "seconds": "-5"},
    "canonical_jsonl": {"started_at": '"2026-13-45T99:00:00Z"', "disposition": '"exploded"', "seconds": "-5"},
    "twilio": {"started_at": '"Fri, 45 Foo 2026 99:00:00 +0000"', "disposition": '"exploded"', "seconds": '"-5"'},
    "asterisk": {"started_at": '"2026-13-45 99:00:00"', "disposition": '"EXPLODED"', "seconds": "-5"},
}
# JSON keys of the written objects, in order (canonical keys, or Twilio's Call resource fields).
JSON_KEYS = {
    "canonical_jsonl": {
        "call_id": "call_id",
        "account_code": "account_code",
        "direction": "direction",
        "disposition": "disposition",
        "started_at": "started_at",
        "answered_at": "answered_at",
        "ended_at": "ended_at",
        "seconds": "billable_seconds",
        "caller": "caller",
        "callee": "callee",
    },
    "twilio": {
        "call_id": "sid",
        "date_created": "date_created",
        "date_updated": "date_updated",
        "account_code": "account_sid",
        "callee": "to",
        "to_formatted": "to_formatted",
        "caller": "from",
        "from_formatted": "from_formatted",
        "disposition": "status",
        "started_at": "start_time",
        "ended_at": "end_time",
        "seconds": "duration",
        "price": "price",
        "direction": "direction",
        "uri": "uri",
    },
}
TWILIO_CONSTANTS = '"parent_call_sid": null, "price_unit": "USD", "answered_by": null, "api_version": "2010-04-01", "caller_name": null, "queue_time": "0"'


def _join(file_format: str, columns: dict[str, pd.Series]) -> pd.Series:
    if file_format in ("canonical_csv", "asterisk"):
        names = list(columns)
        line = columns[names[0]]
        for name in names[1:]:
            line = line + "," + columns[name]
        return line
    keys = JSON_KEYS[file_format]
    parts = [f'"{keys[name]}": ' + columns[name] for name in keys]
    line = "{" + parts[0]
    for part in parts[1:]:
        line = line + ", " + part
    if file_format == "twilio":
        line = line + ", " + TWILIO_CONSTANTS
    return line + "}"


# --- sample landing files ----------------------------------------------------------------------

FORMAT_FOLDERS = {"canonical_csv": "canonical", "canonical_jsonl": "canonical", "twilio": "twilio", "asterisk": "asterisk"}
DEFAULT_FILE_FORMATS = ("canonical_csv", "twilio", "asterisk")


def sample_file_name(file_format: str, start: date, days: int, seed: int) -> str:
    stem = f"{start:%Y%m%d}-{days}d-seed{seed}"
    if file_format == "asterisk":
        return f"Master-{stem}.csv"
    return f"calls-{stem}.csv" if file_format == "canonical_csv" else f"calls-{stem}.jsonl"


def write_sample_files(
    out_dir: Path,
    customers: int | Sequence[str],
    days: int,
    seed: int,
    *,
    formats: Sequence[str] = DEFAULT_FILE_FORMATS,
    start: date = DEFAULT_START,
    malformed_rate: float = 0.0,
    asterisk_timezone: str = "UTC",
    mean_calls_per_day: float = 40.0,
    target_minutes: Mapping[str, int] | None = None,
) -> list[WrittenFile]:
    """Simulated calls written as landing files: `out_dir/<canonical|twilio|asterisk>/<name>`.

    Each account sits on one voice platform, so its calls appear in exactly one file: the accounts
    are dealt round-robin over `formats`. Files are written a day at a time (memory stays flat
    however many calls) and appear under their final names only when complete.
    """
    unknown = [name for name in formats if name not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown CDR formats {unknown}: use some of {FORMATS}")
    formats = list(dict.fromkeys(formats))
    codes = account_codes(customers)
    platform = {code: formats[i % len(formats)] for i, code in enumerate(codes)}
    writers: dict[str, CdrFileWriter] = {}
    for index, file_format in enumerate(formats):
        if file_format in platform.values():
            path = Path(out_dir) / FORMAT_FOLDERS[file_format] / sample_file_name(file_format, start, days, seed)
            writers[file_format] = CdrFileWriter(
                path, file_format, asterisk_timezone=asterisk_timezone, malformed_rate=malformed_rate, seed=seed * 31 + index
            )
    try:
        for calls in iter_simulated_calls(codes, days, seed, start, mean_calls_per_day=mean_calls_per_day, target_minutes=target_minutes):
            on = calls["account_code"].map(platform)
            for file_format, writer in writers.items():
                writer.write(calls[(on == file_format).to_numpy(dtype=bool)])
    except BaseException:
        for writer in writers.values():
            writer.abort()
        raise
    return [writer.close() for writer in writers.values()]

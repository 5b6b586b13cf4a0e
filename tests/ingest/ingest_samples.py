"""Builders for loader tests: parsed chunks in exactly the shape `aisyst_pipelines.cdr.read_cdr_file` yields."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
from sqlalchemy import select

from aisyst_pipelines.cdr.privacy import pii_key_fingerprint
from aisyst_pipelines.simulation import WrittenFile, simulate_calls, write_calls
from aisyst_pipelines.warehouse import Warehouse, cdr_store
from aisyst_pipelines.warehouse.cdr_store import RECORD_COLUMNS, REJECT_COLUMNS, CdrFileIdentity, CdrLoadResult
from aisyst_pipelines.warehouse.schema import call_records, call_records_rejected, cdr_files, usage_daily

UTC = timezone.utc
PII_KEY = "test-pii-key-not-a-secret"
PII_KEY_FINGERPRINT = pii_key_fingerprint(PII_KEY.encode())


@dataclass
class Chunk:
    records: pd.DataFrame
    rejects: pd.DataFrame
    rows_total: int


def call(
    call_id: str,
    account_code: str,
    ended_at: datetime,
    seconds: int,
    *,
    line: int,
    disposition: str = "completed",
    variant: str = "",
) -> dict:
    """One parsed call; `variant` changes the content (and so the content hash) without changing the id."""
    answered = disposition == "completed"
    billable = seconds if answered else 0
    started_at = ended_at - timedelta(seconds=seconds + 5)
    content = f"{call_id}|{account_code}|{ended_at.isoformat()}|{seconds}|{disposition}|{variant}"
    return {
        "call_id": call_id,
        "account_code": account_code,
        "direction": "inbound",
        "disposition": disposition,
        "started_at": started_at,
        "answered_at": started_at + timedelta(seconds=5) if answered else None,
        "ended_at": ended_at,
        "billable_seconds": billable,
        "billable_minutes": math.ceil(billable / 60),
        "caller_hash": hashlib.sha256(f"caller-{call_id}".encode()).hexdigest(),
        "callee_hash": None,
        "content_hash": hashlib.sha256(content.encode()).hexdigest(),
        "source_line": line,
    }


def reject(line: int, reason_code: str, raw: str, call_id: str | None = None) -> dict:
    return {"source_line": line, "call_id": call_id, "reason_code": reason_code, "reason": f"{reason_code} at line {line}",
            "raw_record": raw}


def chunk(calls: Iterable[dict], rejects: Iterable[dict] = ()) -> Chunk:
    records = pd.DataFrame(list(calls), columns=list(RECORD_COLUMNS))
    for column in ("started_at", "answered_at", "ended_at"):
        records[column] = pd.to_datetime(records[column], utc=True).astype("datetime64[us, UTC]")
    for column in ("billable_seconds", "billable_minutes", "source_line"):
        records[column] = records[column].astype("int64")
    reject_frame = pd.DataFrame(list(rejects), columns=list(REJECT_COLUMNS), dtype=object)  # raw text may hold anything
    reject_frame["source_line"] = reject_frame["source_line"].astype("int64")
    return Chunk(records=records, rejects=reject_frame, rows_total=len(records) + len(reject_frame))


def source(name: str, *, fmt: str = "canonical_csv") -> CdrFileIdentity:
    """A file identity whose sha256 is derived from its name (the loader trusts what it is given)."""
    return CdrFileIdentity(path=f"/landing/{name}", sha256=hashlib.sha256(name.encode()).hexdigest(), format=fmt, size_bytes=1000)


def load_cdr_file(
    warehouse: Warehouse, source: CdrFileIdentity, chunks: Iterable[Chunk], *, now: datetime | None = None,
    pii_key_fingerprint: str = PII_KEY_FINGERPRINT,
) -> CdrLoadResult:
    """cdr_store.load_cdr_file, its chunks' numbers hashed with the tests' PII_KEY unless told otherwise."""
    return cdr_store.load_cdr_file(warehouse, source, chunks, pii_key_fingerprint=pii_key_fingerprint, now=now)


def crashing(chunks: Iterable[Chunk], after: int) -> Iterator[Chunk]:
    """Yield `after` chunks, then fail as a reader or the process would mid-file."""
    for index, item in enumerate(chunks):
        if index == after:
            raise RuntimeError("simulated crash in the middle of the file")
        yield item


def snapshot(warehouse: Warehouse) -> dict[str, list[tuple]]:
    """Every row of the CDR tables, ordered, for before/after comparisons."""
    with warehouse.connect() as connection:
        return {
            table.name: sorted(tuple(row) for row in connection.execute(select(table)))
            for table in (cdr_files, call_records, call_records_rejected, usage_daily)
        }


def usage(warehouse: Warehouse) -> dict[tuple[str, str], tuple[int, int, int, str | None]]:
    """usage_daily as {(account, 'YYYY-MM-DD'): (calls, billable_seconds, billable_minutes, customer_id)}."""
    with warehouse.connect() as connection:
        return {
            (row.account_code, row.usage_date.isoformat()): (row.calls, row.billable_seconds, row.billable_minutes, row.customer_id)
            for row in connection.execute(select(usage_daily))
        }


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).astimezone(UTC)


def write_sample(path: Path, fmt: str, *, accounts: Sequence[str] = ("acct_a", "acct_b"), days: int = 2, seed: int = 1,
                 malformed_rate: float = 0.0, calls_per_day: float = 15.0) -> tuple[WrittenFile, pd.DataFrame]:
    """A simulated CDR file (aisyst_pipelines.simulation) and the canonical calls written into it."""
    calls = simulate_calls(list(accounts), days, seed, mean_calls_per_day=calls_per_day)
    return write_calls(calls, path, fmt, malformed_rate=malformed_rate, seed=seed), calls


def expected_usage(calls: pd.DataFrame) -> dict[tuple[str, str], tuple[int, int]]:
    """{(account, UTC day of ended_at): (calls, billable minutes)} under the default per-call ceiling."""
    frame = pd.DataFrame({
        "account": calls["account_code"],
        "day": calls["ended_at"].dt.floor("s").dt.strftime("%Y-%m-%d"),
        "minutes": [math.ceil(s / 60) if d == "completed" else 0 for s, d in zip(calls["billable_seconds"], calls["disposition"])],
    })
    grouped = frame.groupby(["account", "day"]).agg(calls=("minutes", "size"), minutes=("minutes", "sum"))
    return {key: (int(row.calls), int(row.minutes)) for key, row in grouped.iterrows()}


def usage_calls_minutes(warehouse: Warehouse) -> dict[tuple[str, str], tuple[int, int]]:
    return {key: (value[0], value[2]) for key, value in usage(warehouse).items()}


def count_rows(warehouse: Warehouse) -> dict[str, int]:
    return {name: len(rows) for name, rows in snapshot(warehouse).items()}

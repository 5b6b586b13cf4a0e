"""All SQL of CDR ingestion: loading a parsed file into call_records, its rejects, cdr_files and usage_daily.

Loading one file is ONE transaction (`load_cdr_file`):

1. serialise CDR loads (PostgreSQL advisory lock; SQLite has a single writer anyway), make sure the
   phone numbers were hashed with the warehouse's key (properties.py) and claim the file: a
   `cdr_files` row keyed by sha256, inserted with ON CONFLICT DO UPDATE of a `failed` row only. A
   file already loaded is skipped without touching anything else; a content that failed before
   (`record_failed_file`) becomes `loaded` when it now loads;
2. per chunk of parsed records: the calls (the first occurrence of each call_id in the chunk) are
   bulk-copied straight into call_records in call_id order (PostgreSQL COPY, SQLite executemany —
   the one dialect-specific step of the data path), with the customer resolved from
   stripe_customers, inside a savepoint. Only when the primary key refuses one is the copy rolled
   back, the stored versions of the chunk's call_ids looked up and just the new calls copied. A
   re-delivery with identical content is counted as a duplicate, one with different content
   becomes a `conflicting_duplicate` reject (the first version stays). Loads are serialised, so
   nothing slips in between the lookup and the copy. Merging chunk by chunk keeps memory bounded by
   the chunk size, and makes "first version wins" hold across chunks of one file too: an earlier
   chunk's rows are already in call_records when a later chunk is copied;
3. parser rejects go straight into call_records_rejected;
4. usage_daily is brought up to date for exactly the (account_code, UTC day of ended_at) pairs
   that the newly inserted rows touch: rebuilt from call_records (not incremented) where the day
   had calls before, the new calls' totals where they are its first (`_recompute_usage_daily`);
5. the cdr_files row gets its counts. Any exception rolls all of it back.

A file that cannot be taken keeps a `cdr_files` row with status `failed` and the reason
(`record_failed_file`, in a transaction of its own after the load's rollback). Only `loaded` rows
count as loaded: the same content delivered again is requested and loaded.
"""

from __future__ import annotations

import io
import json
import queue
import sqlite3
import threading
from collections import Counter
from collections.abc import Hashable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import Any, Protocol, TypeVar

import pandas as pd
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv
from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Connection,
    Date,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Table,
    and_,
    any_,
    bindparam,
    case,
    column,
    delete,
    exists,
    func,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql

from aisyst_pipelines.cdr.records import CONFLICTING_DUPLICATE, RECORD_COLUMNS, REJECT_COLUMNS

from .database import Warehouse
from .properties import require_pii_key_fingerprint
from .schema import call_records, call_records_rejected, cdr_files, stripe_customers, usage_daily
from .types import UtcDateTime
from .upsert import conflict_insert


T = TypeVar("T")

# SQLAlchemy only keeps an INSERT's rowcount when asked to.
_COUNT_ROWS = {"preserve_rowcount": True}

_SQLITE_LOAD_CACHE_KIB = 128 * 1024

_CSV_BATCH_ROWS = 8192  # rows rendered per write into a COPY (~2 MiB of call_records CSV)
_SQLITE_BATCH_ROWS = 8192  # rows turned into Python tuples at a time for executemany

# What the drivers raise when an insert meets an existing primary key (COPY and executemany go
# through the driver connection, past SQLAlchemy's exception wrapping).
_UNIQUE_VIOLATIONS = (psycopg.errors.UniqueViolation, sqlite3.IntegrityError)

# A constant key for pg_advisory_xact_lock: one CDR load at a time per warehouse (see _serialize_loads).
_CDR_LOAD_LOCK_KEY = 0x41_49_53_43_44_52  # "AISCDR"


class ParsedChunk(Protocol):
    """What the loader needs of aisyst_pipelines.cdr.CdrChunk (kept structural: no import of cdr here)."""

    records: pd.DataFrame
    rejects: pd.DataFrame
    rows_total: int


@dataclass(frozen=True)
class CdrFileIdentity:
    """The landing file being loaded: its path for people, its sha256 for identity."""

    path: str
    sha256: str
    format: str
    size_bytes: int


@dataclass
class CdrLoadResult:
    file_path: str
    sha256: str
    format: str
    skipped: bool  # True: this sha256 was already in cdr_files, nothing was written
    rows_total: int = 0
    rows_loaded: int = 0
    rows_duplicate: int = 0
    rows_rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    usage_days_recomputed: int = 0
    unmapped_accounts: list[str] = field(default_factory=list)  # loaded calls whose account has no Stripe customer

    @property
    def reject_share(self) -> float:
        return self.rows_rejected / self.rows_total if self.rows_total else 0.0


# --- temporary tables of one load -------------------------------------------------------------------
# Created inside the load's transaction: PostgreSQL and SQLite both roll the DDL back with the rest.

_temp_metadata = MetaData()

# The (account_code, UTC day) pairs the load's new calls touch, with the new calls' own totals.
cdr_touched_days = Table(
    "cdr_touched_days",
    _temp_metadata,
    Column("account_code", String(128), primary_key=True),
    Column("usage_date", Date, primary_key=True),
    Column("day_start", UtcDateTime, nullable=False),
    Column("day_end", UtcDateTime, nullable=False),
    Column("calls", BigInteger, nullable=False),
    Column("answered_calls", BigInteger, nullable=False),
    Column("billable_seconds", BigInteger, nullable=False),
    Column("billable_minutes", BigInteger, nullable=False),
    Column("had_calls", Boolean, nullable=True),  # the day had calls before this load (set at its end)
    prefixes=["TEMPORARY"],
)
_NEW_CALL_TOTALS = ("calls", "answered_calls", "billable_seconds", "billable_minutes")


def account_customers():  # type: ignore[no-untyped-def]
    """account_code → Stripe customer, only where exactly one live customer carries the account code.

    An ambiguous mapping (two customers with the same code) resolves to nothing: such calls stay
    unmapped and get reported rather than billed to a customer picked at random.
    """
    sc = stripe_customers
    return (
        select(sc.c.account_code, func.min(sc.c.customer_id).label("customer_id"))
        .where(sc.c.account_code.is_not(None), sc.c.deleted == 0)
        .group_by(sc.c.account_code)
        .having(func.count() == 1)
        .subquery("account_customers")
    )


# --- public API ------------------------------------------------------------------------------------


FILE_LOADED = "loaded"
FILE_FAILED = "failed"
UNKNOWN_FORMAT = "unknown"  # cdr_files.format of a failed file whose format was never detected


def loaded_sha256s(warehouse: Warehouse, sha256s: Iterable[str]) -> set[str]:
    """Which of these file hashes are loaded (a `failed` row does not count)."""
    wanted = sorted(set(sha256s))
    found: set[str] = set()
    with warehouse.connect() as connection:
        for start in range(0, len(wanted), 500):
            batch = wanted[start : start + 500]
            found.update(
                connection.scalars(
                    select(cdr_files.c.sha256).where(cdr_files.c.sha256.in_(batch), cdr_files.c.status == FILE_LOADED)
                )
            )
    return found


def record_failed_file(warehouse: Warehouse, source: CdrFileIdentity, reason: str, *, now: datetime | None = None) -> bool:
    """Record that this content could not be taken, and why: a `failed` cdr_files row.

    A `loaded` row is never touched (the content is in the warehouse whatever happened to this
    copy). A `failed` row gets the latest path and reason. True when something was written.
    """
    failed_at = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    values = {
        "file_path": source.path, "format": source.format, "size_bytes": source.size_bytes,
        "ingested_at": failed_at, "status": FILE_FAILED, "failure_reason": reason,
    }
    with warehouse.begin() as connection:
        written = connection.execute(
            conflict_insert(connection.dialect.name, cdr_files)
            .values(sha256=source.sha256, rows_total=0, rows_loaded=0, rows_duplicate=0, rows_rejected=0, **values)
            .on_conflict_do_update(index_elements=[cdr_files.c.sha256], set_=values, where=cdr_files.c.status == FILE_FAILED),
            execution_options=_COUNT_ROWS,
        )
        return written.rowcount == 1


def load_cdr_file(
    warehouse: Warehouse,
    source: CdrFileIdentity,
    chunks: Iterable[ParsedChunk],
    *,
    pii_key_fingerprint: str,
    now: datetime | None = None,
) -> CdrLoadResult:
    """Load one parsed file in one transaction; see the module docstring for the steps.

    `chunks` is consumed lazily inside the transaction, so an exception raised while reading the
    file (a truncated file, a crash) rolls back everything written for it. `pii_key_fingerprint`
    names the key the chunks' phone numbers were hashed with (PiiKeyMismatch when it is not the
    warehouse's).
    """
    ingested_at = (now or datetime.now(timezone.utc)).astimezone(timezone.utc)
    result = CdrLoadResult(file_path=source.path, sha256=source.sha256, format=source.format, skipped=False)
    with warehouse.begin() as connection, _bulk_cache(connection):
        _serialize_loads(connection)
        require_pii_key_fingerprint(connection, pii_key_fingerprint, ingested_at)
        if not _claim_file(connection, source, ingested_at):
            result.skipped = True
            return result
        reasons: Counter[str] = Counter()
        customers = _account_customer_map(connection)
        cdr_touched_days.create(connection)
        # Each chunk is parsed and made ready for call_records in the read-ahead thread, so that this
        # thread only feeds the database and the database never waits on pandas between two copies.
        prepared = (_prepare_calls(chunk, source, ingested_at, customers) for chunk in chunks)
        for chunk in read_ahead(prepared):
            result.rows_total += chunk.rows_total
            if len(chunk.rejects):
                reasons.update(chunk.rejects["reason_code"].astype(str).tolist())
                _insert_rejects(connection, source, chunk.rejects, ingested_at)
            if len(chunk.first):
                merged = _merge_records(connection, source, chunk, ingested_at, customers)
                result.rows_loaded += merged.loaded
                result.rows_duplicate += merged.duplicates
                if merged.conflicts:
                    reasons[CONFLICTING_DUPLICATE] += merged.conflicts
        result.rejected_by_reason = dict(sorted(reasons.items()))
        result.rows_rejected = sum(reasons.values())
        result.usage_days_recomputed = _recompute_usage_daily(connection, ingested_at)
        result.unmapped_accounts = _unmapped_touched_accounts(connection)
        cdr_touched_days.drop(connection)
        connection.execute(
            update(cdr_files)
            .where(cdr_files.c.sha256 == source.sha256)
            .values(
                rows_total=result.rows_total,
                rows_loaded=result.rows_loaded,
                rows_duplicate=result.rows_duplicate,
                rows_rejected=result.rows_rejected,
            )
        )
    return result


def read_ahead(items: Iterable[T]) -> Iterator[T]:
    """Iterate `items` in a background thread, one item ahead of the consumer.

    The next chunk is parsed while the database works on the current one (PostgreSQL works in its
    own process, sqlite3 releases the GIL), so a load costs about max(parse, database) instead of
    their sum. The producer starts on item n+1 only once the consumer has taken item n, so at most
    two chunks are alive at a time. An exception of the producer (a truncated file) is raised in the
    consumer; a consumer that stops early (an error in the transaction) stops the producer.
    """
    handoff: queue.Queue[tuple[str, Any]] = queue.Queue(maxsize=1)
    taken = threading.Semaphore(0)
    stopped = threading.Event()

    def hand_over(kind: str, value: Any) -> bool:
        handoff.put((kind, value))  # never blocks: the previous item has been taken
        while not taken.acquire(timeout=0.1):
            if stopped.is_set():
                return False
        return True

    def produce() -> None:
        try:
            for item in items:
                if not hand_over("item", item):
                    return
            hand_over("done", None)
        except BaseException as error:  # noqa: BLE001 - handed to the consumer, which raises it
            hand_over("error", error)

    producer = threading.Thread(target=produce, name="cdr-read-ahead", daemon=True)
    producer.start()
    try:
        while True:
            kind, value = handoff.get()
            taken.release()
            if kind == "done":
                return
            if kind == "error":
                raise value
            yield value
            del value  # the chunk is not kept alive while the generator waits for the next one
    finally:
        stopped.set()
        producer.join()


@dataclass(frozen=True)
class CdrFileRow:
    sha256: str
    file_path: str
    format: str
    rows_total: int
    rows_loaded: int
    rows_duplicate: int
    rows_rejected: int
    ingested_at: datetime
    status: str  # loaded | failed
    failure_reason: str | None


def cdr_file(warehouse: Warehouse, sha256: str) -> CdrFileRow | None:
    with warehouse.connect() as connection:
        row = connection.execute(
            select(
                cdr_files.c.sha256, cdr_files.c.file_path, cdr_files.c.format, cdr_files.c.rows_total,
                cdr_files.c.rows_loaded, cdr_files.c.rows_duplicate, cdr_files.c.rows_rejected,
                cdr_files.c.ingested_at, cdr_files.c.status, cdr_files.c.failure_reason,
            ).where(cdr_files.c.sha256 == sha256)
        ).one_or_none()
    return CdrFileRow(*row) if row else None


@dataclass(frozen=True)
class AccountMinutes:
    account_code: str
    customer_id: str | None
    calls: int
    billable_minutes: int
    first_day: date
    last_day: date


def last_ingested_at(warehouse: Warehouse) -> datetime | None:
    """When the newest CDR file was loaded (None before the first one): the freshness of ingestion.
    Failed files do not count: a feed that only delivers broken files is not fresh."""
    with warehouse.connect() as connection:
        return connection.scalar(select(func.max(cdr_files.c.ingested_at)).where(cdr_files.c.status == FILE_LOADED))


def minutes_per_account(warehouse: Warehouse) -> list[AccountMinutes]:
    """Billable minutes per account code over all of usage_daily (the demo's summary)."""
    u = usage_daily
    query = (
        select(
            u.c.account_code, func.max(u.c.customer_id), func.sum(u.c.calls), func.sum(u.c.billable_minutes),
            func.min(u.c.usage_date), func.max(u.c.usage_date),
        )
        .group_by(u.c.account_code)
        .order_by(u.c.account_code)
    )
    with warehouse.connect() as connection:
        return [
            AccountMinutes(code, customer, int(calls), int(minutes), first, last)
            for code, customer, calls, minutes, first, last in connection.execute(query)
        ]


# --- the steps of a load ---------------------------------------------------------------------------


def _serialize_loads(connection: Connection) -> None:
    """One CDR load at a time: concurrent loads of overlapping calls would each recompute a shared
    usage_daily day without seeing the other's uncommitted rows. SQLite serialises writers by
    itself (the first write below takes its lock, so a second loader waits on the busy timeout)."""
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CDR_LOAD_LOCK_KEY})
        connection.execute(text("SET LOCAL TIME ZONE 'UTC'"))  # date(timestamptz) below means the UTC day


@contextmanager
def _bulk_cache(connection: Connection) -> Iterator[None]:
    """SQLite's page cache is 2 MiB per connection by default: far too small for the indexes of a big
    load, which then thrash through the OS. Give the load 128 MiB and hand the pooled connection
    back as it was. (PostgreSQL's shared buffers are the server's business.)"""
    if connection.dialect.name != "sqlite":
        yield
        return
    previous = connection.exec_driver_sql("PRAGMA cache_size").scalar_one()
    connection.exec_driver_sql(f"PRAGMA cache_size = {-_SQLITE_LOAD_CACHE_KIB}")
    try:
        yield
    finally:
        connection.exec_driver_sql(f"PRAGMA cache_size = {int(previous)}")


def _account_customer_map(connection: Connection) -> dict[str, str]:
    """account_code → Stripe customer as `account_customers` resolves it, read once per load (the
    customer sync fills in calls of accounts mapped later)."""
    mapping = account_customers()
    return dict(connection.execute(select(mapping.c.account_code, mapping.c.customer_id)).all())  # type: ignore[arg-type]


def _claim_file(connection: Connection, source: CdrFileIdentity, ingested_at: datetime) -> bool:
    """Insert the file's cdr_files row (counts filled in at the end), or take over a `failed` row of
    the same content (its reason cleared). False = already loaded."""
    values = {
        "file_path": source.path, "format": source.format, "size_bytes": source.size_bytes, "rows_total": 0,
        "rows_loaded": 0, "rows_duplicate": 0, "rows_rejected": 0, "ingested_at": ingested_at,
        "status": FILE_LOADED, "failure_reason": None,
    }
    claimed = connection.execute(
        conflict_insert(connection.dialect.name, cdr_files)
        .values(sha256=source.sha256, **values)
        .on_conflict_do_update(index_elements=[cdr_files.c.sha256], set_=values, where=cdr_files.c.status == FILE_FAILED),
        execution_options=_COUNT_ROWS,
    )
    return claimed.rowcount == 1


@dataclass(frozen=True)
class _PreparedCalls:
    """One parsed chunk, its calls made ready for call_records (`_prepare_calls`)."""

    rows_total: int
    rejects: pd.DataFrame
    first: pd.DataFrame  # the first occurrence of each call_id in the chunk (RECORD_COLUMNS), in call_id order
    repeated: pd.DataFrame  # the chunk's later occurrences of a call_id (RECORD_COLUMNS); usually none
    rows: pa.Table  # `first` as call_records rows: customer, source file and ingestion time added
    touched_days: list[dict[str, Any]]  # the cdr_touched_days rows of `first`


@dataclass(frozen=True)
class _Merged:
    loaded: int
    duplicates: int
    conflicts: int


def _prepare_calls(
    chunk: ParsedChunk, source: CdrFileIdentity, ingested_at: datetime, customers: dict[str, str]
) -> _PreparedCalls:
    """Everything about a chunk's calls that needs no database: runs in the read-ahead thread.

    Calls go in call_id order: the primary key's B-tree is then filled in one sweep instead of at
    random places, which keeps its pages in cache (the secondary indexes start with the account or
    the customer, whose calls arrive in time order anyway).
    """
    frame = chunk.records.loc[:, list(RECORD_COLUMNS)].reset_index(drop=True)
    again = frame["call_id"].duplicated(keep="first")
    first = frame[~again].sort_values("call_id")
    return _PreparedCalls(
        rows_total=int(chunk.rows_total),
        rejects=chunk.rejects,
        first=first,
        repeated=frame[again],
        rows=_call_rows(first, source, ingested_at, customers),
        touched_days=_touched_days(first),
    )


def _call_rows(calls: pd.DataFrame, source: CdrFileIdentity, ingested_at: datetime, customers: dict[str, str]) -> pa.Table:
    """The calls as call_records rows: the customer resolved, the source file and ingestion time added."""
    rows = calls.assign(
        customer_id=calls["account_code"].map(customers),
        source_file=source.path,
        source_sha256=source.sha256,
        ingested_at=pd.Timestamp(ingested_at),
    )
    return arrow_for(call_records, rows.loc[:, _columns_of(call_records, rows)])


def _merge_records(
    connection: Connection, source: CdrFileIdentity, chunk: _PreparedCalls, ingested_at: datetime, customers: dict[str, str]
) -> _Merged:
    """Insert the chunk's calls that are new; count identical re-deliveries; reject conflicting ones.

    A call is new when its call_id is neither in call_records nor earlier in the chunk (the first
    version wins, whatever order the database would insert rows in). The calls go straight into
    call_records in the database's bulk path, without a staging copy, optimistically: usually none
    of them was loaded before, and the primary key says so while they are copied. Only when it
    refuses one is the copy rolled back (to a savepoint) and the stored versions looked up, to
    insert the new calls and judge the others — safe, because loads are serialised.
    """
    first = chunk.first
    if _insert_unless_a_key_exists(connection, chunk.rows):
        new, repeated, stored, touched_days = first, chunk.repeated, _NOTHING_STORED, chunk.touched_days
    else:
        stored = _stored_versions(connection, first["call_id"].tolist())
        is_new = ~first["call_id"].isin(stored.index).to_numpy()
        new = first[is_new]
        if len(new):
            _insert_arrow(connection, call_records.name, _call_rows(new, source, ingested_at, customers))
        repeated = pd.concat([first[~is_new], chunk.repeated]).sort_index()  # in file order
        touched_days = _touched_days(new)
    if touched_days:
        _add_touched_days(connection, touched_days)
    conflicts = _reject_conflicting_duplicates(connection, source, repeated, new, stored, ingested_at)
    return _Merged(loaded=len(new), duplicates=len(repeated) - conflicts, conflicts=conflicts)


_NOTHING_STORED = pd.DataFrame(
    {"content_hash": pd.Series(dtype=str), "kept_file": pd.Series(dtype=str), "kept_line": pd.Series(dtype="int64")},
    index=pd.Index([], name="call_id", dtype=str),
)


def _insert_unless_a_key_exists(connection: Connection, rows: pa.Table) -> bool:
    """Bulk-insert the rows into call_records in a savepoint; False (and nothing inserted) when one
    of their call_ids is there already."""
    try:
        with connection.begin_nested():
            _insert_arrow(connection, call_records.name, rows)
    except _UNIQUE_VIOLATIONS:
        return False
    return True


def _stored_versions(connection: Connection, call_ids: list[str]) -> pd.DataFrame:
    """content_hash, kept_file and kept_line of those `call_ids` that are in call_records, by call_id.

    The ids go as ONE parameter (a PostgreSQL array, a JSON array for SQLite's json_each), not as
    100,000 bound values; each is one probe of the primary key."""
    c = call_records.c
    if connection.dialect.name == "postgresql":
        wanted = c.call_id == any_(bindparam("ids", type_=postgresql.ARRAY(String)))
        ids: Any = call_ids
    else:
        wanted = c.call_id.in_(select(column("value")).select_from(func.json_each(bindparam("ids"))))
        ids = json.dumps(call_ids)
    rows = connection.execute(
        select(c.call_id, c.content_hash, c.source_file.label("kept_file"), c.source_line.label("kept_line")).where(wanted),
        {"ids": ids},
    ).all()
    return pd.DataFrame(rows, columns=["call_id", "content_hash", "kept_file", "kept_line"]).set_index("call_id")


def _reject_conflicting_duplicates(
    connection: Connection,
    source: CdrFileIdentity,
    repeated: pd.DataFrame,
    new: pd.DataFrame,
    stored: pd.DataFrame,
    ingested_at: datetime,
) -> int:
    """`repeated`: the chunk's calls that were not inserted, each a call_id already in call_records
    (from an earlier file or chunk) or earlier in this chunk. Identical content is a harmless
    re-delivery; different content is rejected and the kept version stays."""
    if not len(repeated):
        return 0
    inserted_now = pd.DataFrame(
        {"content_hash": new["content_hash"].to_numpy(), "kept_file": source.path, "kept_line": new["source_line"].to_numpy()},
        index=pd.Index(new["call_id"], name="call_id"),
    )
    kept = pd.concat([stored, inserted_now])
    rows = repeated.merge(kept, left_on="call_id", right_index=True, how="left", suffixes=("", "_kept"))
    rows = rows[rows["content_hash"] != rows["content_hash_kept"]]
    if not len(rows):
        return 0
    rejects = pd.DataFrame(
        {
            "source_line": rows["source_line"],
            "call_id": rows["call_id"],
            "reason_code": CONFLICTING_DUPLICATE,
            "reason": [
                f"call_id {call_id} was already loaded with different content "
                f"(from {kept_file}, line {kept_line}); the first version stays"
                for call_id, kept_file, kept_line in zip(rows["call_id"], rows["kept_file"], rows["kept_line"])
            ],
            # The parsed record as it would have been stored (phone numbers only as hashes).
            "raw_record": [_record_json(record) for record in rows.loc[:, list(RECORD_COLUMNS)].to_dict("records")],
        }
    )
    _insert_rejects(connection, source, rejects, ingested_at)
    return len(rejects)


def _record_json(record: dict[Hashable, Any]) -> str:
    def plain(value: Any) -> Any:
        if value is None or (not isinstance(value, str) and pd.isna(value)):
            return None
        if isinstance(value, pd.Timestamp | datetime):
            return pd.Timestamp(value).tz_convert("UTC").isoformat().replace("+00:00", "Z")
        item = getattr(value, "item", None)  # a numpy scalar as the Python value
        return item() if callable(item) else value

    return json.dumps({key: plain(value) for key, value in record.items() if key != "source_line"}, sort_keys=True)


def _insert_rejects(connection: Connection, source: CdrFileIdentity, rejects: pd.DataFrame, ingested_at: datetime) -> None:
    frame = rejects.loc[:, list(REJECT_COLUMNS)].copy()
    frame["reason"] = frame["reason"].map(_storable_text)
    frame["raw_record"] = frame["raw_record"].map(_storable_text)
    frame["call_id"] = frame["call_id"].map(lambda v: None if v is None or pd.isna(v) else _storable_text(v)[:128])
    frame.insert(0, "source_sha256", source.sha256)
    frame["source_file"] = source.path
    frame["ingested_at"] = pd.Timestamp(ingested_at)
    bulk_insert(connection, call_records_rejected, frame)


def _storable_text(value: Any) -> str:
    """Text both databases accept: no NUL byte (PostgreSQL refuses it), no lone surrogates (the
    remains of undecodable bytes), so that a reject row never fails its whole file."""
    if value is None or (not isinstance(value, str | bytes) and pd.isna(value)):
        return ""
    if isinstance(value, bytes):
        value = value.decode("utf-8", errors="backslashreplace")
    value = str(value)
    if "\x00" in value:
        value = value.replace("\x00", "\\x00")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        value = value.encode("utf-8", errors="surrogateescape").decode("utf-8", errors="backslashreplace")
    return value


def _touched_days(calls: pd.DataFrame) -> list[dict[str, Any]]:
    """The cdr_touched_days rows of these calls: each (account_code, UTC day of ended_at) once, with
    the calls' totals as usage_daily counts them."""
    days = (
        pd.DataFrame({
            "account_code": calls["account_code"].to_numpy(),
            "day_start": _utc(calls["ended_at"]).dt.floor("D").dt.tz_localize(None).to_numpy(),  # naive UTC
            "calls": 1,
            "answered_calls": (calls["disposition"] == "completed").astype("int64").to_numpy(),
            "billable_seconds": calls["billable_seconds"].astype("int64").to_numpy(),
            "billable_minutes": calls["billable_minutes"].astype("int64").to_numpy(),
        })
        .groupby(["account_code", "day_start"], sort=False)
        .sum()
    )
    rows = []
    for (account, start), *totals in zip(days.index, *(days[name].tolist() for name in _NEW_CALL_TOTALS)):
        start = pd.Timestamp(start, tz="UTC")
        rows.append({
            "account_code": account, "usage_date": start.date(), "day_start": start.to_pydatetime(),
            "day_end": (start + timedelta(days=1)).to_pydatetime(), **dict(zip(_NEW_CALL_TOTALS, totals)),
        })
    return rows


def _add_touched_days(connection: Connection, rows: list[dict[str, Any]]) -> None:
    """Record touched days, adding to the totals of a day an earlier chunk touched."""
    t = cdr_touched_days
    insert = conflict_insert(connection.dialect.name, t)
    connection.execute(
        insert.on_conflict_do_update(
            index_elements=[t.c.account_code, t.c.usage_date],
            set_={name: t.c[name] + insert.excluded[name] for name in _NEW_CALL_TOTALS},
        ),
        rows,
    )


def _in_touched_day(c: Table, t: Table):  # type: ignore[no-untyped-def]
    """call_records row `c` ended on touched day `t`.

    The half-open range on ended_at is the exact condition and lets both databases use the
    (account_code, ended_at) index. The redundant equality on date(ended_at) gives the planner an
    equi-join key: with stale statistics (a big first load) PostgreSQL otherwise hash-joins on the
    account alone and filters every call against every touched day of its account. date() is UTC
    on both: SQLite stores naive UTC text, and a load pins the PostgreSQL session to UTC.
    """
    return and_(
        c.c.account_code == t.c.account_code,
        func.date(c.c.ended_at) == t.c.usage_date,
        c.c.ended_at >= t.c.day_start,
        c.c.ended_at < t.c.day_end,
    )


def _recompute_usage_daily(connection: Connection, updated_at: datetime) -> int:
    """Bring the touched usage_daily rows up to date; returns how many were written.

    A day that had calls before this load (it has a usage_daily row: every load keeps one for each
    account and day with calls) is rebuilt from call_records, its late CDRs included. A day this
    load's calls are the first of takes the new calls' totals summed while they were copied: they
    are all of its calls, and a big load need not read back every call it has just written.
    """
    t, c, u = cdr_touched_days, call_records, usage_daily
    customers = account_customers()
    # Correlated to whichever table the statement works on: a touched day that has a usage_daily row.
    same_day = exists().where(u.c.account_code == t.c.account_code, u.c.usage_date == t.c.usage_date)
    connection.execute(update(t).values(had_calls=same_day))
    connection.execute(delete(u).where(same_day))
    rebuilt = (
        select(
            t.c.account_code,
            t.c.usage_date,
            func.max(customers.c.customer_id).label("customer_id"),
            func.count().label("calls"),
            func.sum(case((c.c.disposition == "completed", 1), else_=0)).label("answered_calls"),
            func.sum(c.c.billable_seconds).label("billable_seconds"),
            func.sum(c.c.billable_minutes).label("billable_minutes"),
            literal(updated_at, UtcDateTime).label("updated_at"),
        )
        .select_from(
            t.join(c, _in_touched_day(c, t))
            .outerjoin(customers, customers.c.account_code == t.c.account_code)
        )
        .where(t.c.had_calls)
        .group_by(t.c.account_code, t.c.usage_date)
    )
    first_calls = (
        select(
            t.c.account_code,
            t.c.usage_date,
            customers.c.customer_id,
            *(t.c[name] for name in _NEW_CALL_TOTALS),
            literal(updated_at, UtcDateTime).label("updated_at"),
        )
        .select_from(t.outerjoin(customers, customers.c.account_code == t.c.account_code))
        .where(~t.c.had_calls)
    )
    if connection.dialect.name == "postgresql":
        # Group by hashing, never by sorting every call of the rebuilt days: after a big load the
        # statistics are stale, and PostgreSQL, expecting a few hundred calls, sorts a million on
        # disk (0.6 s of 1.4 s for 1 M calls). The days are few and a hash of them is small.
        connection.execute(text("SET LOCAL enable_sort = off"))
    written = 0
    for totals in (rebuilt, first_calls):
        inserted = connection.execute(
            u.insert().from_select([col.name for col in totals.selected_columns], totals), execution_options=_COUNT_ROWS
        )
        written += inserted.rowcount
    if connection.dialect.name == "postgresql":
        connection.execute(text("RESET enable_sort"))
    return written


def _unmapped_touched_accounts(connection: Connection) -> list[str]:
    t = cdr_touched_days
    customers = account_customers()
    return list(
        connection.scalars(
            select(t.c.account_code)
            .select_from(t.outerjoin(customers, customers.c.account_code == t.c.account_code))
            .where(customers.c.customer_id.is_(None))
            .distinct()
            .order_by(t.c.account_code)
        )
    )


# --- the dialect-specific bulk copy ----------------------------------------------------------------


def bulk_insert(connection: Connection, table: Table, frame: pd.DataFrame) -> None:
    """Append a DataFrame to `table` inside the connection's transaction, as fast as the database allows.

    PostgreSQL: COPY … FROM STDIN (CSV rendered by Arrow) over psycopg 3's copy protocol.
    SQLite: executemany of plain tuples (times as the text SQLAlchemy stores for UtcDateTime).
    """
    _insert_arrow(connection, table.name, arrow_for(table, frame.loc[:, _columns_of(table, frame)]))


def _insert_arrow(connection: Connection, table_name: str, arrow: pa.Table) -> None:
    """Append an Arrow table (typed by `arrow_for`) to the table of that name, columns by name."""
    if connection.dialect.name == "postgresql":
        copy_postgres(connection, table_name, arrow.column_names, arrow)
    else:
        executemany_sqlite(connection, table_name, arrow.column_names, sqlite_rows(arrow))


def _columns_of(table: Table, frame: pd.DataFrame) -> list[str]:
    """The table's columns that the frame has, in the table's order."""
    return [column.name for column in table.columns if column.name in frame.columns]


def executemany_sqlite(connection: Connection, table_name: str, columns: Sequence[str], rows: Iterable[tuple[Any, ...]]) -> None:
    """sqlite3's executemany on the SQLAlchemy connection's own sqlite3 connection (same transaction)."""
    sql = f"INSERT INTO {table_name} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
    connection.connection.driver_connection.executemany(sql, rows)  # type: ignore[union-attr]


def copy_postgres(connection: Connection, table_name: str, columns: Sequence[str], rows: bytes | pa.Table) -> None:
    """COPY rows into a table through the SQLAlchemy connection's own psycopg connection (same transaction).

    `rows` is CSV already rendered, or an Arrow table that is rendered batch by batch straight into
    the COPY: no buffer of the whole chunk, and the server parses one batch while the next is rendered.
    """
    driver_connection = connection.connection.driver_connection
    statement = f"COPY {table_name} ({', '.join(columns)}) FROM STDIN (FORMAT csv)"
    with driver_connection.cursor() as cursor:  # type: ignore[union-attr]
        with cursor.copy(statement) as copy:
            if isinstance(rows, bytes):
                copy.write(rows)
            else:
                write_postgres_csv(rows, _CopyStream(copy))


class _CopyStream(io.RawIOBase):
    """A psycopg COPY as the writable file Arrow's CSV writer expects."""

    def __init__(self, copy: Any) -> None:
        super().__init__()
        self._copy = copy

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        self._copy.write(data)
        return len(data)


def postgres_csv(arrow: pa.Table) -> bytes:
    """The table rendered as CSV for COPY, in memory."""
    buffer = io.BytesIO()
    write_postgres_csv(arrow, buffer)
    return buffer.getvalue()


def write_postgres_csv(arrow: pa.Table, sink: Any) -> None:
    """Write CSV for COPY to a file-like sink. Times are written as "YYYY-MM-DD HH:MM:SS.ffffff+00" up
    front: Arrow's own CSV rendering of zoned timestamps goes through strftime and costs more than
    the COPY itself."""
    columns = [
        # pyarrow-stubs want every argument of one type; Arrow joins an array with scalar strings
        pc.binary_join_element_wise(_utc_text(column), "+00", "") if pa.types.is_timestamp(column.type) else column  # pyright: ignore[reportCallIssue, reportArgumentType]
        for column in arrow.columns
    ]
    # all_valid quotes every non-null value: an empty string stays '' and only a missing value is NULL.
    pa_csv.write_csv(
        pa.Table.from_arrays(columns, names=arrow.column_names), sink,
        pa_csv.WriteOptions(include_header=False, quoting_style="all_valid", batch_size=_CSV_BATCH_ROWS),
    )


def sqlite_rows(arrow: pa.Table) -> Iterable[tuple[Any, ...]]:
    """Plain tuples for sqlite3's executemany; times as the naive UTC text SQLAlchemy's SQLite DATETIME
    stores ("YYYY-MM-DD HH:MM:SS.ffffff"), which UtcDateTime reads back as UTC."""
    # Batch by batch, so that only one batch of rows is ever held as Python objects.
    for batch in arrow.to_batches(max_chunksize=_SQLITE_BATCH_ROWS):
        columns = []
        for array in batch.columns:
            if pa.types.is_timestamp(array.type):
                array = _utc_text(array)
            elif pa.types.is_date(array.type):
                array = pc.cast(array, pa.string())
            columns.append(array.to_pylist())
        yield from zip(*columns)


def _utc_text(column: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    # A cast of the naive UTC value to text: ~30x faster than pc.strftime, always 6 decimals.
    return pc.cast(pc.cast(column, pa.timestamp("us")), pa.string())


def arrow_for(table: Table, frame: pd.DataFrame) -> pa.Table:
    """The frame's columns as Arrow arrays typed after `table`'s columns (times in UTC microseconds)."""
    arrays = []
    for name in frame.columns:
        column_type = table.c[name].type
        values = frame[name]
        if isinstance(column_type, UtcDateTime):
            array = pc.cast(pa.array(_utc(values)), pa.timestamp("us", tz="UTC"), safe=False)
        elif isinstance(column_type, Integer | SmallInteger):
            array = pa.array(values, type=pa.int64(), from_pandas=True)
        else:
            array = pa.array(values, type=pa.string(), from_pandas=True)
        arrays.append(array)
    return pa.Table.from_arrays(arrays, names=list(frame.columns))


def _utc(values: pd.Series) -> pd.Series:
    return pd.to_datetime(values, utc=True)

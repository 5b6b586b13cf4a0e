"""The lifecycle the warehouse's work queues share: enqueue once, select or claim what is due, count
attempts.

Four tables are queues of work delivered at least once: `usage_alerts` (customer e-mails),
`stripe_event_alerts` (ops e-mails), `meter_corrections` (corrective meter events) and
`invoice_annotations` (usage lines on renewal invoices). Each names its lifecycle columns alike —
`status`, `attempts`, and where the queue has them `last_error` and `claimed_at` — so a `WorkQueue`
only says which table and which key; the stores keep their own statuses and what a row means.

Every function takes the caller's connection: a step joins the store's transaction, and a claim
is one UPDATE … RETURNING, so two workers never both win a row (PostgreSQL re-checks the WHERE on a
row it had to wait for; SQLite runs one writer at a time).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import cached_property
from typing import Any

from sqlalchemy import Column, ColumnElement, Connection, Row, Table, and_, bindparam, or_, select, tuple_, update

from .upsert import conflict_insert

# Keys per statement: far below SQLite's (32,766) and PostgreSQL's (65,535) bound-parameter limits,
# even for a four-column key.
_CHUNK = 500

Key = tuple[Any, ...]


@dataclass(frozen=True)
class WorkQueue:
    """A queue table and the names of its key columns (in the order callers give key values)."""

    table: Table
    key: tuple[str, ...]

    def __post_init__(self) -> None:
        missing = [name for name in (*self.key, "status", "attempts") if name not in self.table.c]
        if missing:
            raise ValueError(f"{self.table.name} is no work queue: it has no column {', '.join(missing)}")

    @cached_property
    def key_columns(self) -> tuple[Column[Any], ...]:
        return tuple(self.table.c[name] for name in self.key)

    @property
    def leased(self) -> bool:
        """Rows are claimed with a lease (`claimed_at`) while a worker delivers them."""
        return "claimed_at" in self.table.c

    @property
    def keeps_errors(self) -> bool:
        return "last_error" in self.table.c


def key_clause(queue: WorkQueue, keys: Sequence[Key]) -> ColumnElement[bool]:
    """The rows of `keys`: plain equalities for one key (what the primary-key index is best at),
    an IN list for several."""
    columns = queue.key_columns
    if len(keys) == 1:
        return and_(*(column == value for column, value in zip(columns, keys[0], strict=True)))
    if len(columns) == 1:
        return columns[0].in_([key[0] for key in keys])
    return tuple_(*columns).in_(keys)


def _key_of(queue: WorkQueue, row: Mapping[str, Any]) -> Key:
    return tuple(row[name] for name in queue.key)


def _chunks(keys: Sequence[Key]) -> Iterable[Sequence[Key]]:
    for offset in range(0, len(keys), _CHUNK):
        yield keys[offset : offset + _CHUNK]


# --- enqueue ----------------------------------------------------------------------------------------


def enqueue(connection: Connection, queue: WorkQueue, rows: Sequence[Mapping[str, Any]]) -> list[Key]:
    """Insert the rows whose key is not queued yet; returns the keys this call inserted, in input order.

    A key already in the table (another run queued it first) is left as it is and not returned; a key
    given twice is queued once, with its first row. RETURNING says what was inserted (rowcount is
    not reliable for ON CONFLICT DO NOTHING across drivers), so two runs never both own a row."""
    first: dict[Key, Mapping[str, Any]] = {}
    for row in rows:
        first.setdefault(_key_of(queue, row), row)
    # One statement with the rows as executemany parameters (SQLAlchemy batches them into multi-row
    # VALUES): compiled once and cached, where `.values(rows)` was compiled anew for every call — most
    # of the CPU of queueing a page of renewals.
    statement = (
        conflict_insert(connection.dialect.name, queue.table)
        .on_conflict_do_nothing(index_elements=list(queue.key))
        .returning(*queue.key_columns)
    )
    inserted: set[Key] = set()
    for chunk in _chunks(list(first)):
        inserted.update(tuple(row) for row in connection.execute(statement, [dict(first[key]) for key in chunk]))
    return [key for key in first if key in inserted]


# --- what is due ------------------------------------------------------------------------------------


def due_rows(
    connection: Connection,
    queue: WorkQueue,
    columns: Sequence[ColumnElement[Any]],
    *,
    due: ColumnElement[bool],
    order_by: Sequence[ColumnElement[Any]],
    limit: int | None = None,
    max_attempts: int | None = None,
) -> list[Row[Any]]:
    """`columns` of the rows matching `due` (the queue's own rule), oldest first by `order_by`, and
    — with `max_attempts` — only while attempts remain."""
    where = [due]
    if max_attempts is not None:
        where.append(queue.table.c.attempts < max_attempts)
    statement = select(*columns).where(*where).order_by(*order_by).limit(limit)
    return list(connection.execute(statement))


def lease_free(queue: WorkQueue, now: datetime, lease: timedelta) -> ColumnElement[bool]:
    """Nobody holds the row: never claimed, released, or claimed `lease` ago or longer (the worker
    that claimed it is taken to have died: at-least-once, never silently dropped)."""
    claimed_at = queue.table.c.claimed_at
    return or_(claimed_at.is_(None), claimed_at <= now - lease)


def claim(
    connection: Connection,
    queue: WorkQueue,
    *,
    due: ColumnElement[bool],
    now: datetime,
    lease: timedelta,
    order_by: Sequence[ColumnElement[Any]] = (),
    limit: int | None = None,
    returning: Sequence[ColumnElement[Any]] = (),
    **values: Any,
) -> list[Row[Any]]:
    """Claim the rows matching `due` whose lease is free — with `limit`, the oldest `limit` of them by
    `order_by` — setting `claimed_at = now` and `values`; returns the claimed rows' `returning`
    columns (default: the key).

    One UPDATE … WHERE due AND lease free … RETURNING: a row another worker claimed meanwhile fails
    the re-checked WHERE and is not returned, so a row is never claimed by two workers at once."""
    claimable = and_(due, lease_free(queue, now, lease))
    where = claimable
    if limit is not None:
        oldest = select(*queue.key_columns).where(claimable).order_by(*order_by).limit(limit)
        key = queue.key_columns[0] if len(queue.key) == 1 else tuple_(*queue.key_columns)
        where = and_(key.in_(oldest), claimable)
    statement = (
        update(queue.table).where(where).values(claimed_at=now, **values).returning(*(returning or queue.key_columns))
    )
    return list(connection.execute(statement))


# --- after an attempt -------------------------------------------------------------------------------


def update_rows(
    connection: Connection, queue: WorkQueue, keys: Sequence[Key], *, where: ColumnElement[bool] | None = None, **values: Any
) -> int:
    """Set `values` on the rows of `keys` (that also match `where`); returns how many rows changed."""
    changed = 0
    for chunk in _chunks(keys):
        changed += connection.execute(update(queue.table).where(*_conditions(queue, chunk, where)).values(**values)).rowcount
    return changed


def update_each(connection: Connection, queue: WorkQueue, rows: Sequence[Mapping[str, Any]]) -> None:
    """One UPDATE per row, each with its own values, sent as one executemany (psycopg pipelines it).
    A row names its key as `key_<column>`; its other entries are the values set, the same columns in
    every row."""
    if not rows:
        return
    where = and_(*(column == bindparam(f"key_{column.name}") for column in queue.key_columns))
    connection.execute(update(queue.table).where(where), [dict(row) for row in rows])


def _conditions(queue: WorkQueue, keys: Sequence[Key], where: ColumnElement[bool] | None) -> list[ColumnElement[bool]]:
    return [key_clause(queue, keys)] if where is None else [key_clause(queue, keys), where]


def count_attempt(
    connection: Connection, queue: WorkQueue, keys: Sequence[Key], *, where: ColumnElement[bool] | None = None, **values: Any
) -> int:
    """One more attempt on each row of `keys`, with the step's own `values` (status, times, run);
    returns how many rows changed."""
    return len(count_attempt_returning(connection, queue, keys, where=where, **values))


def count_attempt_returning(
    connection: Connection, queue: WorkQueue, keys: Sequence[Key], *, where: ColumnElement[bool] | None = None, **values: Any
) -> list[Key]:
    """As `count_attempt`, returning the keys of the rows that changed (UPDATE … RETURNING): which of
    many rows still matched `where`."""
    changed: list[Key] = []
    for chunk in _chunks(keys):
        statement = (
            update(queue.table)
            .where(*_conditions(queue, chunk, where))
            .values(attempts=queue.table.c.attempts + 1, **values)
            .returning(*queue.key_columns)
        )
        changed += [tuple(row) for row in connection.execute(statement)]
    return changed


def record_attempt(
    connection: Connection,
    queue: WorkQueue,
    keys: Sequence[Key],
    *,
    error: str | None,
    where: ColumnElement[bool] | None = None,
    **values: Any,
) -> int:
    """An attempt that ended: counted, its error kept (None: it succeeded, and an earlier error is
    cleared) and, on a leased queue, the claim released so that the next worker may retry at once."""
    if not queue.keeps_errors:
        raise ValueError(f"{queue.table.name} keeps no last_error: count the attempt with count_attempt")
    released = {"claimed_at": None} if queue.leased else {}
    return count_attempt(connection, queue, keys, where=where, last_error=error, **released, **values)


__all__ = [
    "Key",
    "WorkQueue",
    "claim",
    "count_attempt",
    "due_rows",
    "enqueue",
    "key_clause",
    "lease_free",
    "record_attempt",
    "update_rows",
]

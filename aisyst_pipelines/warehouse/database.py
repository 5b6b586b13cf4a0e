"""The one way into the warehouse: engine creation, transactions and schema migrations."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from functools import cached_property
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, Engine, create_engine, event, make_url, text

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

# The PostgreSQL advisory lock `upgrade` holds for its transaction: any constant shared by every copy
# of the code would do ("aisyst" in ASCII).
UPGRADE_LOCK_KEY = 0x616973797374


class WarehouseNotUpgraded(RuntimeError):
    """The warehouse's schema revision is not the one the code needs: ops run `aisyst db upgrade`."""


def normalize_url(url: str) -> str:
    """Pin the PostgreSQL driver to psycopg 3 (SQLAlchemy 2.1's default, and installed).

    `postgres://` (Heroku style) and `postgresql://` both become `postgresql+psycopg://`; an explicit
    driver is left alone. See reference/DAGSTER.md §1.6 for why the driver must be explicit.
    """
    parsed = make_url(url)
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    return parsed.render_as_string(hide_password=False)


def _configure_sqlite(engine: Engine) -> None:
    # WAL lets readers (the UI, analysts) work while a load writes; the busy timeout makes a second
    # writer wait instead of failing with "database is locked".
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection, _record) -> None:  # type: ignore[no-untyped-def]
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()


class Warehouse:
    """A warehouse at a SQLAlchemy URL (SQLite file or PostgreSQL).

    Use `begin()` for a unit of work that commits or rolls back as a whole, `connect()` for reads.
    """

    def __init__(self, url: str) -> None:
        self.url = normalize_url(url)

    def __repr__(self) -> str:
        return f"Warehouse({self.shown_url!r})"

    @property
    def shown_url(self) -> str:
        """The URL with its password masked, for messages and logs."""
        return make_url(self.url).render_as_string(hide_password=True)

    @property
    def dialect(self) -> str:
        return make_url(self.url).get_backend_name()

    @cached_property
    def engine(self) -> Engine:
        parsed = make_url(self.url)
        if parsed.get_backend_name() == "sqlite":
            if parsed.database and parsed.database != ":memory:":
                # Owner-only, whatever the umask: the file holds every call. SQLite gives its -wal and
                # -shm files the database file's mode.
                database = Path(parsed.database)
                database.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
                if not database.exists():
                    database.touch(mode=0o600)
            engine = create_engine(parsed, connect_args={"timeout": 30})
            _configure_sqlite(engine)
            return engine
        # Every session in UTC, so that analysts' date_trunc/::date agree with our UTC days.
        return create_engine(parsed, pool_pre_ping=True, connect_args={"options": "-c timezone=UTC"} | _options(parsed))

    @contextmanager
    def begin(self) -> Iterator[Connection]:
        with self.engine.begin() as connection:
            yield connection

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with self.engine.connect() as connection:
            yield connection

    def dispose(self) -> None:
        if "engine" in self.__dict__:
            self.engine.dispose()
            del self.__dict__["engine"]

    # --- migrations -----------------------------------------------------------------------------

    def _alembic_config(self, connection: Connection) -> Config:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        config.attributes["connection"] = connection
        return config

    def upgrade(self, revision: str = "head") -> None:
        """Apply the migrations up to `revision` in one transaction; rows already in the tables are kept.

        Two upgrades at once (two deploys, two hosts) take turns: the second waits for the first's
        commit, then reads the revision it left and has nothing or less to do.
        """
        with self.begin() as connection:
            self._lock_for_upgrade(connection)
            command.upgrade(self._alembic_config(connection), revision)

    @staticmethod
    def _lock_for_upgrade(connection: Connection) -> None:
        if connection.dialect.name == "postgresql":
            # Released by the commit or rollback of this transaction, never held past it.
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": UPGRADE_LOCK_KEY})
        else:
            # SQLite's write lock from the first statement on (the driver would begin only at the
            # first write, after alembic read the revision); a second upgrade waits on busy_timeout.
            connection.exec_driver_sql("BEGIN IMMEDIATE")

    def require_current(self, *, upgrade: bool = False) -> "Warehouse":
        """Refuse a warehouse whose schema is not at the code's revision (empty, older or newer).

        Code never migrates on first use: several runs starting at once on one PostgreSQL would race
        on the DDL. `aisyst db upgrade` is the one step that changes the schema; `upgrade=True` is
        only for the embedded SQLite warehouse of a home (the demo, a fresh clone), one file on one host.
        """
        if upgrade and not self.is_current():
            self.upgrade()
        current, head = self.current_revision(), self.head_revision()
        if current != head:
            raise WarehouseNotUpgraded(
                f"the warehouse at {self.shown_url} is at revision {current or '(empty: no tables)'}, "
                f"the code needs {head}: run `aisyst db upgrade`"
            )
        return self

    def current_revision(self) -> str | None:
        with self.connect() as connection:
            return MigrationContext.configure(connection).get_current_revision()

    @staticmethod
    def head_revision() -> str:
        config = Config()
        config.set_main_option("script_location", str(MIGRATIONS_DIR))
        head = ScriptDirectory.from_config(config).get_current_head()
        assert head is not None
        return head

    def is_current(self) -> bool:
        return self.current_revision() == self.head_revision()


def _options(parsed) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Merge an `options=` given in the URL (tests use it for search_path) with the UTC setting."""
    extra = parsed.query.get("options")
    return {"options": f"-c timezone=UTC {extra}"} if extra else {}

"""Shared fixtures. Every warehouse test runs twice: on SQLite and on PostgreSQL.

PostgreSQL is found at AISYST_TEST_POSTGRES_URL (default: the local server on 127.0.0.1:5432,
database `test`). Each test gets a schema of its own, dropped afterwards, so tests never see each
other's rows. When the server is unreachable the PostgreSQL variants are skipped — unless
AISYST_REQUIRE_POSTGRES=1 (set by .ci/run), which turns that skip into a failure.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest
from sqlalchemy import create_engine, make_url, text

from aisyst_pipelines.warehouse import Warehouse

if TYPE_CHECKING:
    from aisyst_pipelines.emulator.testing import RunningEmulator
    from resources.stripe import StripeResource

POSTGRES_URL = os.environ.get("AISYST_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
REQUIRE_POSTGRES = os.environ.get("AISYST_REQUIRE_POSTGRES") == "1"


def _postgres_unavailable_reason() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as connection:
            connection.execute(text("select 1"))
        engine.dispose()
        return None
    except Exception as error:  # noqa: BLE001 - any failure means "not reachable"
        return f"PostgreSQL not reachable at {POSTGRES_URL}: {type(error).__name__}"


_POSTGRES_REASON: str | None | bool = False  # False = not probed yet


def postgres_or_skip() -> None:
    global _POSTGRES_REASON
    if _POSTGRES_REASON is False:
        _POSTGRES_REASON = _postgres_unavailable_reason()
    if _POSTGRES_REASON:
        if REQUIRE_POSTGRES:
            pytest.fail(f"{_POSTGRES_REASON} and AISYST_REQUIRE_POSTGRES=1")
        pytest.skip(_POSTGRES_REASON)


@pytest.fixture(autouse=True)
def _no_dagster_instance_left_from_an_earlier_test() -> Iterator[None]:
    """Dagster keeps the entered instance's definitions-state storage in a context variable; an
    instance that exits out of order leaves it pointing at a closed, collected instance, and the next
    test that loads Definitions fails with "undefined DagsterInstance weakref". Each test starts clean."""
    from dagster._core.storage.defs_state.base import _current_storage

    _current_storage.set(None)
    yield
    _current_storage.set(None)


@pytest.fixture
def postgres_database() -> Iterator[str]:
    """The URL of a fresh, empty PostgreSQL database, dropped afterwards — for a Dagster instance."""
    postgres_or_skip()
    name = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def warehouse_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty warehouse URL (no tables yet) on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'warehouse.db'}"
        return
    postgres_or_skip()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(POSTGRES_URL)
    with admin.begin() as connection:
        connection.execute(text(f'CREATE SCHEMA "{schema}"'))
    try:
        separator = "&" if "?" in POSTGRES_URL else "?"
        yield f"{POSTGRES_URL}{separator}options=-csearch_path%3D{schema}"
    finally:
        with admin.begin() as connection:
            connection.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture
def warehouse(warehouse_url: str) -> Iterator[Warehouse]:
    """A migrated, empty warehouse on each backend."""
    wh = Warehouse(warehouse_url)
    wh.upgrade()
    yield wh
    wh.dispose()


@pytest.fixture
def stripe_emulator() -> Iterator["RunningEmulator"]:
    """A fresh local Stripe emulator per test (starts in milliseconds); seeded, no faults."""
    from aisyst_pipelines.emulator import EmulatorServer
    from aisyst_pipelines.emulator.testing import RunningEmulator

    with EmulatorServer(seed=1234) as server:
        yield RunningEmulator(server)


@pytest.fixture
def stripe_resource(stripe_emulator: "RunningEmulator") -> "StripeResource":
    """The project's StripeResource pointed at `stripe_emulator` (its test key; a roomier rate limit
    than the 25 requests/s default, so that tests stay quick)."""
    from resources.stripe import StripeResource

    return StripeResource(api_key=stripe_emulator.api_key, api_base=stripe_emulator.url, requests_per_second=100, burst=10)

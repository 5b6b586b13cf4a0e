"""The project's own files are its owner's alone: files 0600, folders 0700, whatever the umask of the
shell that started it (the warehouse holds every call, the outbox customers' e-mail, Dagster's
instance files run logs)."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from email.message import EmailMessage
from pathlib import Path

import pytest
from sqlalchemy import insert

from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse
from aisyst_pipelines.warehouse.schema import warehouse_properties
from resources import NotifierResource

AISYST = Path(sys.executable).parent / "aisyst"
SHELL_UMASK = 0o022  # a usual login shell's: files 0644, folders 0755 unless the code says otherwise


@contextmanager
def shell_umask() -> Iterator[None]:
    previous = os.umask(SHELL_UMASK)
    try:
        yield
    finally:
        os.umask(previous)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def modes_not_private(root: Path) -> dict[str, str]:
    return {str(path.relative_to(root)): oct(mode(path)) for path in [root, *root.rglob("*")]
            if mode(path) != (0o700 if path.is_dir() else 0o600)}


@pytest.mark.slow
def test_a_home_made_through_the_cli_is_owner_only(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {name: value for name, value in os.environ.items() if not name.startswith(("AISYST_", "STRIPE_", "DAGSTER_"))}
    env["AISYST_HOME"] = str(home)

    def aisyst(*args: str) -> None:
        done = subprocess.run([str(AISYST), *args], env=env, capture_output=True, text=True, timeout=300,
                              preexec_fn=lambda: os.umask(SHELL_UMASK))
        assert done.returncode == 0, done.stderr[-2000:]

    aisyst("db", "upgrade")
    aisyst("simulate-calls", "--customers", "2", "--days", "1", "--out", str(home / "landing"))
    aisyst("ingest")  # the Dagster instance, a run's logs, the generated phone-number key

    assert {"warehouse.db", "pii.key", "landing", "dagster"} <= {path.name for path in home.iterdir()}
    assert (home / "dagster" / "dagster.yaml").exists() and list((home / "dagster" / "storage").iterdir())
    assert modes_not_private(home) == {}


def test_the_sqlite_warehouse_and_its_wal_files_are_owner_only(tmp_path: Path) -> None:
    with shell_umask():
        warehouse = Warehouse(f"sqlite:///{tmp_path / 'new' / 'warehouse.db'}")
        warehouse.upgrade()
        with warehouse.begin() as connection:  # a write, so that -wal and -shm exist while it is open
            connection.execute(insert(warehouse_properties).values(name="x", value="y", recorded_at=datetime.now(timezone.utc)))
        names = {path.name for path in (tmp_path / "new").iterdir()}
        modes = modes_not_private(tmp_path / "new")
        warehouse.dispose()

    assert {"warehouse.db", "warehouse.db-wal", "warehouse.db-shm"} <= names
    assert modes == {}


def test_the_home_folders_and_outbox_messages_are_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AISYST_HOME", str(tmp_path / "home"))
    for name in ("AISYST_LANDING_DIR", "AISYST_OUTBOX_DIR", "DAGSTER_HOME"):
        monkeypatch.delenv(name, raising=False)
    notifier = NotifierResource(outbox_dir=str(tmp_path / "mail" / "outbox"), sender="billing@aisyst.example",
                                ops_recipients=["ops@aisyst.example"])
    message = EmailMessage()
    message["To"] = "customer@example.com"
    message["Subject"] = "you have used 80 % of your included minutes"
    message.set_content("…")

    with shell_umask():
        Settings.from_env().ensure_dirs()
        delivery = notifier.send(message)

    assert modes_not_private(tmp_path / "home") == {}
    assert mode(tmp_path / "mail" / "outbox") == 0o700
    assert mode(Path(delivery.destination)) == 0o600


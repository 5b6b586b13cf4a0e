"""`aisyst demo` wipes its home, so it runs only in a home it made itself and refuses, before touching
anything, a shell set up for real data. These tests never get as far as the demo itself (fast)."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from aisyst_pipelines.cli import main
from aisyst_pipelines.demo import DEMO_MARKER, claim_demo_home, demo_refusal

CONFIGURED = ("AISYST_WAREHOUSE_URL", "AISYST_LANDING_DIR", "AISYST_OUTBOX_DIR", "STRIPE_SECRET_KEY", "AISYST_HOME")


@pytest.fixture(autouse=True)
def plain_shell(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in CONFIGURED:
        monkeypatch.delenv(name, raising=False)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def production_home(home: Path) -> Path:
    """The layout deploy/env.example describes, with a CDR not loaded yet and an e-mail not sent yet."""
    (home / "landing" / "asterisk").mkdir(parents=True)
    (home / "landing" / "real.csv").write_text("call_id,account_code\nreal-1,acct_real\n")
    (home / "landing" / "asterisk" / "Master.csv").write_text('"acct_real","+14155550100"\n')
    (home / "outbox").mkdir()
    (home / "outbox" / "unsent.eml").write_bytes(b"To: customer@example.com\r\nSubject: usage\r\n\r\n80 %\r\n")
    (home / "warehouse.db").write_bytes(b"SQLite format 3\x00 real rows")
    return home


def test_a_home_it_did_not_make_survives_byte_for_byte(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    home = production_home(tmp_path / "aisyst")
    before = snapshot(home)

    assert main(["demo", "--home", str(home)]) != 0

    assert snapshot(home) == before
    assert not (home / DEMO_MARKER).exists() and not (home / "dagster").exists()
    message = capsys.readouterr().err
    assert f"{home} is not a demo home" in message and DEMO_MARKER in message
    assert "nothing was touched" in message
    assert "Run it safely with:  aisyst demo --home " in message


def test_the_default_home_of_an_earlier_demo_without_marker_is_refused_with_the_way_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    old = tmp_path / ".aisyst"
    (old / "landing" / "canonical_csv").mkdir(parents=True)
    (old / "warehouse.db").write_bytes(b"demo")
    (old / "pii.key").write_text("0" * 64)
    before = snapshot(old)

    assert main(["demo"]) != 0

    assert snapshot(old) == before
    message = capsys.readouterr().err
    assert f"{old} is not a demo home" in message and "delete it" in message and "--home" in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("AISYST_WAREHOUSE_URL", "postgresql+psycopg://aisyst:secret@db.internal:5432/aisyst"),
        ("AISYST_WAREHOUSE_URL", "sqlite:////var/lib/aisyst/warehouse.db"),
        ("AISYST_LANDING_DIR", "/var/lib/aisyst/landing"),
        ("AISYST_OUTBOX_DIR", "/var/lib/aisyst/outbox"),
        ("STRIPE_SECRET_KEY", "sk_live_123"),
        ("STRIPE_SECRET_KEY", "rk_live_123"),
        ("STRIPE_SECRET_KEY", "not-a-stripe-key"),
    ],
)
def test_a_shell_set_up_for_real_data_is_refused_before_the_home_is_made(
    name: str, value: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(name, value)
    home = tmp_path / "new-home"

    assert main(["demo", "--home", str(home)]) != 0

    assert not home.exists()
    message = capsys.readouterr().err
    assert f"{name} is " in message
    assert f"Run it safely with:  env -u {name} aisyst demo" in message
    assert "secret" not in message and value not in message  # a URL may carry a password, a key is a key


def test_every_reason_is_named_and_one_command_fixes_them_all(tmp_path: Path) -> None:
    home = production_home(tmp_path / "aisyst")
    environ = {"AISYST_WAREHOUSE_URL": "postgresql://db/aisyst", "STRIPE_SECRET_KEY": "rk_live_x"}

    message = demo_refusal(home, environ)

    assert message is not None
    assert "AISYST_WAREHOUSE_URL is set" in message and "STRIPE_SECRET_KEY is not a test key" in message
    assert "is not a demo home" in message
    assert "env -u AISYST_WAREHOUSE_URL -u STRIPE_SECRET_KEY aisyst demo --home " in message


def test_what_the_demo_accepts(tmp_path: Path) -> None:
    home = tmp_path / "demo"
    own = {
        "AISYST_WAREHOUSE_URL": f"sqlite:///{home / 'warehouse.db'}",  # its own paths, spelled out, are fine
        "AISYST_LANDING_DIR": str(home / "landing"),
        "AISYST_OUTBOX_DIR": str(home / "outbox"),
        "STRIPE_SECRET_KEY": "sk_test_from_my_shell",  # unused: the demo talks to its own emulator
        "AISYST_SMTP_URL": "smtp://mail.internal:587",  # ignored: the demo mails to its outbox
    }
    assert demo_refusal(home, own) is None  # does not exist yet
    claim_demo_home(home)
    assert stat.S_IMODE(home.stat().st_mode) == 0o700
    assert (home / DEMO_MARKER).read_text().startswith("This folder was made by `aisyst demo`")
    production_home(home)  # files of an earlier demo run
    assert demo_refusal(home, {}) is None

    empty = tmp_path / "empty"
    empty.mkdir()
    assert demo_refusal(empty, {}) is None

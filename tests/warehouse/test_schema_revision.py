"""The code refuses a warehouse that is not at its schema revision; `aisyst db upgrade` is the one step
that migrates, and two of them at once take turns."""

import os
import subprocess
import sys

import dagster as dg
import pytest
from sqlalchemy import inspect, text

from aisyst_pipelines import cli
from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse
from resources import WarehouseResource


def refusal(url: str) -> str:
    with pytest.raises(dg.Failure) as failure:
        WarehouseResource(url=url).get()
    return failure.value.description or ""


def test_an_empty_warehouse_is_refused_not_migrated(warehouse_url: str) -> None:
    message = refusal(warehouse_url)
    shown = Warehouse(warehouse_url).shown_url
    assert message == (f"the warehouse at {shown} is at revision (empty: no tables), "
                       f"the code needs {Warehouse.head_revision()}: run `aisyst db upgrade`")
    wh = Warehouse(warehouse_url)
    assert wh.current_revision() is None and inspect(wh.engine).get_table_names() == []
    wh.dispose()


def test_an_older_revision_is_refused_until_upgraded(warehouse_url: str) -> None:
    wh = Warehouse(warehouse_url)
    wh.upgrade("0006")
    assert f"is at revision 0006, the code needs {Warehouse.head_revision()}: run `aisyst db upgrade`" in refusal(warehouse_url)
    assert wh.current_revision() == "0006"
    wh.upgrade()
    assert WarehouseResource(url=warehouse_url).get().is_current()
    wh.dispose()


def test_the_refusal_masks_the_password() -> None:
    wh = Warehouse("postgresql://aisyst:s3cret@127.0.0.1:1/aisyst")
    assert "s3cret" not in wh.shown_url and "aisyst:***@127.0.0.1:1/aisyst" in wh.shown_url


def test_the_embedded_warehouse_of_a_home_upgrades_itself(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AISYST_WAREHOUSE_URL", raising=False)
    monkeypatch.setenv("AISYST_HOME", str(tmp_path / "home"))
    resource = WarehouseResource.from_settings(Settings.from_env())
    assert resource.upgrade_on_first_use
    assert resource.get().is_current()


def test_a_configured_warehouse_is_refused_by_the_commands(warehouse_url: str, tmp_path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AISYST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AISYST_WAREHOUSE_URL", warehouse_url)
    monkeypatch.setenv("STRIPE_WEBHOOK_SECRET", "whsec_test")
    assert cli.main(["webhook"]) == 2
    assert "aisyst webhook: the warehouse at" in capsys.readouterr().err
    assert not WarehouseResource.from_settings(Settings.from_env()).upgrade_on_first_use
    assert cli.main(["db", "upgrade"]) == 0
    assert Warehouse(warehouse_url).is_current()


@pytest.mark.slow
def test_two_upgrades_at_once_take_turns(warehouse_url: str, tmp_path) -> None:
    # Two `aisyst db upgrade` processes on one fresh database (two deploy pipelines at once).
    env = os.environ | {"AISYST_HOME": str(tmp_path / "home"), "AISYST_WAREHOUSE_URL": warehouse_url}
    upgrades = [subprocess.Popen([sys.executable, "-m", "aisyst_pipelines.cli", "db", "upgrade"], env=env,
                                 stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) for _ in range(2)]
    outputs = [upgrade.communicate(timeout=120)[0] for upgrade in upgrades]
    assert [upgrade.returncode for upgrade in upgrades] == [0, 0], outputs
    wh = Warehouse(warehouse_url)
    with wh.connect() as connection:
        assert connection.execute(text("SELECT version_num FROM alembic_version")).scalars().all() == [Warehouse.head_revision()]
    wh.dispose()

"""Fixtures for the ingestion tests: settings pointing at a temporary landing folder and the test warehouse."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from ingest_samples import PII_KEY

from aisyst_pipelines.settings import Settings
from aisyst_pipelines.warehouse import Warehouse



@pytest.fixture
def ingest_settings(tmp_path: Path, warehouse: Warehouse, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings (via the environment, as in production) for a temporary AISYST_HOME and the test warehouse."""
    monkeypatch.setenv("AISYST_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AISYST_LANDING_DIR", str(tmp_path / "landing"))
    monkeypatch.setenv("AISYST_WAREHOUSE_URL", warehouse.url)
    monkeypatch.setenv("AISYST_PII_KEY", PII_KEY)
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "dagster"))
    monkeypatch.delenv("AISYST_CDR_MAX_REJECT_SHARE", raising=False)
    monkeypatch.delenv("AISYST_ASTERISK_TIMEZONE", raising=False)
    settings = Settings.from_env()
    settings.ensure_dirs()
    return settings


@pytest.fixture
def instance(ingest_settings: Settings) -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as test_instance:
        yield test_instance


@pytest.fixture
def definitions(ingest_settings: Settings) -> dg.Definitions:
    from aisyst_pipelines.definitions import defs

    return defs()

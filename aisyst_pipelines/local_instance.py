"""The persistent Dagster instance of the command line and the demo: the one under `settings.dagster_home`,
which `dagster dev` shows with the same DAGSTER_HOME.

Opened from its folder, not through the DAGSTER_HOME variable: a command does not change the process's
environment to find its instance.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg

from aisyst_pipelines.settings import Settings

LOCAL_INSTANCE_CONFIG = """\
# Local Dagster instance of aisyst (written by `aisyst ingest`/`aisyst demo` when missing): SQLite
# storage in this folder. Production uses deploy/dagster.yaml (PostgreSQL) instead.
telemetry:
  enabled: false
# Dagster's run retries for the jobs tagged dagster/max_retries (as deploy/dagster.yaml)
run_retries:
  enabled: true
  max_retries: 0
"""


@contextmanager
def local_instance(settings: Settings) -> Iterator[dg.DagsterInstance]:
    """The instance under settings.dagster_home; a folder without dagster.yaml gets the local one above."""
    settings.ensure_dirs()
    config = settings.dagster_home / "dagster.yaml"
    if not config.exists():
        config.touch(mode=0o600)
        config.write_text(LOCAL_INSTANCE_CONFIG)
    with dg.DagsterInstance.from_config(str(settings.dagster_home)) as instance:
        yield instance

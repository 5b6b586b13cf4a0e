"""The reconciliation service is plain Python: importing it loads no Dagster and none of the Dagster
layer (assets, jobs, resources), so the CLI, the benches and tests can run it without them."""

from __future__ import annotations

import subprocess
import sys


def test_the_service_imports_no_dagster_layer() -> None:
    probe = (
        "import sys, aisyst_pipelines.services.reconciliation\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'dagster', 'resources', 'jobs'}"
        " | {m for m in sys.modules if m.startswith('aisyst_pipelines.assets')}))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.strip()
    assert loaded == "[]"

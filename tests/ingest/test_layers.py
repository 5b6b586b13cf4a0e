"""CDR ingestion's layers: the service is plain Python, and the Dagster modules are adapters that read no
environment and import no definitions (no `definitions.py ↔ jobs` cycle, not even inside a function)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
DAGSTER_MODULES = ["aisyst_pipelines/assets/ingestion.py", "jobs/ingestion.py", "jobs/sensor_once.py", "resources/ingestion.py"]


def test_the_service_imports_no_dagster_layer() -> None:
    probe = (
        "import sys, aisyst_pipelines.services.ingestion\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'dagster', 'resources', 'jobs'}"
        " | {m for m in sys.modules if m.startswith('aisyst_pipelines.assets')}))"
    )
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, cwd=ROOT).stdout.strip()
    assert loaded == "[]"


def imported_modules(tree: ast.AST) -> set[str]:
    """Every module an import statement names, wherever it stands (function-level imports included)."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            names |= {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
    return names


@pytest.mark.parametrize("module", DAGSTER_MODULES)
def test_an_adapter_reads_no_environment_and_imports_no_definitions(module: str) -> None:
    source = (ROOT / module).read_text()
    tree = ast.parse(source)
    assert not {name for name in imported_modules(tree) if name.startswith("aisyst_pipelines.definitions")}
    attributes = {f"{node.value.id}.{node.attr}" for node in ast.walk(tree) if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)}
    assert not attributes & {"Settings.from_env", "os.environ", "os.getenv"}

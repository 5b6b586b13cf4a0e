"""The Stripe sync and Stripe events as layers (DESIGN.md §1): the work in services/, Dagster in
assets/ and jobs/ as thin adapters configured through resources.

Read from the modules' source: what each imports, and where configuration comes from.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SERVICES = ["aisyst_pipelines/services/stripe_sync.py", "aisyst_pipelines/services/stripe_events.py"]
# They call the services, never the Dagster layer.
CALLERS_OF_SERVICES = ["aisyst_pipelines/webhook.py", "bench/stripe_events_burst.py"]
ADAPTERS = ["aisyst_pipelines/assets/stripe_sync.py", "aisyst_pipelines/assets/stripe_events.py", "jobs/stripe_events.py"]


def imported_modules(path: str) -> set[str]:
    """Every module the file imports, at its top or inside a function."""
    tree = ast.parse((REPO / path).read_text(encoding="utf-8"))
    modules: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module:
            modules.add(node.module)
    return modules


def within(module: str, package: str) -> bool:
    return module == package or module.startswith(package + ".")


@pytest.mark.parametrize("path", SERVICES)
def test_a_service_imports_no_dagster_and_no_dagster_layer(path: str) -> None:
    dagster_layer = ("dagster", "aisyst_pipelines.assets", "jobs", "resources.notifier", "resources.stripe.resource")
    offending = sorted(m for m in imported_modules(path) if any(within(m, p) for p in dagster_layer) or m in ("resources", "resources.stripe"))
    assert offending == [], f"{path} imports {offending}"


@pytest.mark.parametrize("path", CALLERS_OF_SERVICES)
def test_the_webhook_and_the_bench_call_services_not_assets_or_jobs(path: str) -> None:
    offending = sorted(m for m in imported_modules(path) if within(m, "aisyst_pipelines.assets") or within(m, "jobs"))
    assert offending == [], f"{path} imports {offending}"


def test_no_feature_imports_another_features_assets() -> None:
    """assets/stripe_events once imported assets/stripe_sync for the subscription mapping: that mapping
    is the sync's service now."""
    assert "aisyst_pipelines.assets.stripe_sync" not in imported_modules("aisyst_pipelines/assets/stripe_events.py")
    assert "aisyst_pipelines.assets.stripe_sync" not in imported_modules("jobs/stripe_events.py")


@pytest.mark.parametrize("path", ADAPTERS)
def test_adapters_take_configuration_from_resources_not_the_environment(path: str) -> None:
    source = (REPO / path).read_text(encoding="utf-8")
    assert "aisyst_pipelines.settings" not in imported_modules(path)
    assert "Settings.from_env" not in source and "os.environ" not in source and "getenv" not in source

"""The layers of docs/architecture.md, read from the source: what each module imports.

Each rule below is one sentence of that page. A test fails when a change imports across a layer the
page says it may not (a service importing Dagster, a bench reaching into assets, a cycle between
two modules), so the page stays true.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from functools import cache
from pathlib import Path

from tests.python_source import parse_module


REPO = Path(__file__).resolve().parents[1]
PRODUCT = ("aisyst_pipelines", "jobs", "resources")


def python_files(*folders: str) -> list[Path]:
    return sorted(path for folder in folders for path in (REPO / folder).rglob("*.py"))


def module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@cache
def imports_of(path: Path) -> frozenset[str]:
    """Every module the file imports (absolute names), at its top or inside a function; imports
    under `if TYPE_CHECKING:` are left out (they never run)."""
    tree = parse_module(path)
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: set[str] = set()
    for node in _runtime_nodes(tree):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            # `from package import module` imports the module too
            found |= {f"{base}.{alias.name}" for alias in node.names}
    return frozenset(found)


def _runtime_nodes(tree: ast.AST) -> Iterator[ast.AST]:
    for node in ast.iter_child_nodes(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            continue
        yield node
        yield from _runtime_nodes(node)


def within(module: str, *packages: str) -> bool:
    return any(module == package or module.startswith(package + ".") for package in packages)


def offending(paths: list[Path], *forbidden: str) -> dict[str, list[str]]:
    found = {str(path.relative_to(REPO)): sorted(m for m in imports_of(path) if within(m, *forbidden)) for path in paths}
    return {path: modules for path, modules in found.items() if modules}


def test_domain_logic_imports_neither_dagster_nor_stripe_nor_sql() -> None:
    """cdr/ and billing/ take and return plain values: no framework, no I/O layer, no layer above."""
    paths = python_files("aisyst_pipelines/cdr", "aisyst_pipelines/billing")
    assert offending(
        paths, "dagster", "stripe", "sqlalchemy", "psycopg", "alembic", "requests",
        "aisyst_pipelines.warehouse", "aisyst_pipelines.services", "aisyst_pipelines.assets",
        "aisyst_pipelines.emulator", "aisyst_pipelines.simulation", "jobs", "resources",
    ) == {}


def test_the_warehouse_imports_no_dagster_no_stripe_and_nothing_above_it() -> None:
    paths = python_files("aisyst_pipelines/warehouse")
    assert offending(paths, "dagster", "stripe", "aisyst_pipelines.services", "aisyst_pipelines.assets", "jobs", "resources") == {}


def test_services_are_plain_python() -> None:
    """Services take a warehouse, Stripe gateways and plain values. They may use the gateways and
    records of resources/stripe/, which need no Dagster, but not the Dagster resources themselves."""
    paths = python_files("aisyst_pipelines/services")
    dagster_resources = [
        "resources.catalog", "resources.notifier", "resources.pii", "resources.warehouse", "resources.reconciliation",
        "resources.usage_alerts", "resources.ingestion", "resources.stripe.resource",
    ]
    assert offending(paths, "dagster", "aisyst_pipelines.assets", "jobs", *dagster_resources) == {}
    importing_the_resources_package = [str(p) for p in paths if {"resources", "resources.stripe.StripeResource"} & imports_of(p)]
    assert importing_the_resources_package == []


def test_the_service_modules_load_without_dagster() -> None:
    """Importing every service (and, through it, the gateways) must not load Dagster at all."""
    import subprocess
    import sys

    names = [module_name(path) for path in python_files("aisyst_pipelines/services")]
    code = "import sys\n" + "".join(f"import {name}\n" for name in names) + "print('dagster' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO)
    assert loaded.stdout.strip() == "False"


def test_the_webhook_the_simulators_and_the_benches_call_services_not_the_dagster_layer() -> None:
    paths = [REPO / "aisyst_pipelines/webhook.py", *python_files("aisyst_pipelines/simulation", "bench")]
    assert offending(paths, "aisyst_pipelines.assets", "jobs") == {}


def test_no_feature_imports_another_features_assets() -> None:
    """`assets/common.py` is no feature: what they all share (table metadata, runbook links, partitions)."""
    found = {}
    for path in python_files("aisyst_pipelines/assets"):
        others = sorted(m for m in imports_of(path) if within(m, "aisyst_pipelines.assets") and m != module_name(path)
                        and m != "aisyst_pipelines.assets" and not within(m, "aisyst_pipelines.assets.common"))
        if others:
            found[path.name] = others
    assert found == {}


def test_assets_and_jobs_read_no_environment() -> None:
    """Configuration reaches the Dagster layer through resources (visible in the launchpad)."""
    found = []
    for path in python_files("aisyst_pipelines/assets", "jobs"):
        source = path.read_text(encoding="utf-8")
        if "Settings.from_env(" in source or "os.environ" in source or "os.getenv" in source:
            found.append(str(path.relative_to(REPO)))
    assert found == []


def _project_graph() -> dict[str, set[str]]:
    paths = python_files(*PRODUCT)
    names = {module_name(path): path for path in paths}
    graph: dict[str, set[str]] = {}
    for name, path in names.items():
        # a module imported as `package.module` counts; a name imported from a package counts for the package
        graph[name] = {m for m in imports_of(path) if m in names and m != name}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for neighbour in sorted(graph[node]):
            if neighbour not in index:
                visit(neighbour)
                low[node] = min(low[node], low[neighbour])
            elif neighbour in on_stack:
                low[node] = min(low[node], index[neighbour])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_no_import_cycles_between_project_modules() -> None:
    """A package's __init__ re-exporting its own modules is not a cycle of the design: those edges
    (package → its own submodule) are left out."""
    graph = {
        name: {m for m in targets if not (m.startswith(name + ".") or name.startswith(m + "."))}
        for name, targets in _project_graph().items()
    }
    assert _cycles(graph) == []


def test_product_code_runs_jobs_only_through_dagsters_runtime() -> None:
    """No private Dagster API and no in-process execution in product code: runs go through the
    deployment's run queue or the daemon's sensor ticks (aisyst_pipelines/deployment.py)."""
    private = {str(p.relative_to(REPO)) for p in python_files(*PRODUCT) if any(m.startswith("dagster._") for m in imports_of(p))}
    in_process = {str(p.relative_to(REPO)) for p in python_files(*PRODUCT) if "execute_in_process" in p.read_text()}
    assert private == set() and in_process == set(), (private, in_process)


def test_the_resources_package_exports_what_it_imports_lazily() -> None:
    import resources

    assert sorted(resources.__all__) == sorted(resources._MODULE_OF)  # noqa: SLF001 - the package's own table

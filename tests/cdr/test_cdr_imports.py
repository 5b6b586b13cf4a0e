"""The cdr package imports at the top of its modules only: no import inside a function or under
TYPE_CHECKING, which is how a cycle between two of its modules hides (reader ↔ normalise had one)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import aisyst_pipelines.cdr
from tests.python_source import parse_module

MODULES = sorted(Path(aisyst_pipelines.cdr.__file__).parent.glob("*.py"))


@pytest.mark.parametrize("module", MODULES, ids=lambda path: path.name)
def test_every_import_is_at_the_top_of_the_module(module: Path) -> None:
    tree = parse_module(module)
    top = {id(node) for node in tree.body}
    hidden = [
        node.lineno for node in ast.walk(tree) if isinstance(node, ast.Import | ast.ImportFrom) and id(node) not in top
    ]
    assert hidden == [], f"{module.name}: imports below the top level at lines {hidden}"

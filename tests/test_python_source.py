"""`parse_module` survives what failed CI once: garbage whose finalizer parses Python, collected in
the middle of a parse (Python 3.11)."""

from __future__ import annotations

import ast
import gc
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from tests.python_source import parse_module

LARGE_MODULE = Path(__file__).resolve().parents[1] / "jobs" / "ops.py"


class _ParsesWhenCollected:
    """Garbage in a reference cycle whose finalizer parses Python, as a logged traceback does."""

    def __init__(self) -> None:
        self.cycle = self

    def __del__(self) -> None:
        ast.parse("total = (1 + 2)")


@pytest.fixture
def frequent_collections() -> Iterator[None]:
    threshold = gc.get_threshold()
    gc.set_threshold(50)
    yield
    gc.set_threshold(*threshold)


def _parse_among_garbage(parse: Callable[[Path], object]) -> None:
    for _ in range(50):
        for _ in range(100):
            _ParsesWhenCollected()
        parse(LARGE_MODULE)


@pytest.mark.usefixtures("frequent_collections")
def test_parse_module_is_not_entered_by_a_finalizer() -> None:
    _parse_among_garbage(parse_module)
    gc.collect()


@pytest.mark.usefixtures("frequent_collections")
def test_a_plain_parse_among_such_garbage_fails_on_this_python() -> None:
    """The fault parse_module works around: if this starts passing, the Python in use is fixed."""
    with pytest.raises(SystemError, match="recursion depth mismatch"):
        _parse_among_garbage(lambda path: ast.parse(path.read_text(encoding="utf-8")))
    gc.collect()

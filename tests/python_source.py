"""Parse the project's own Python files for the tests that read its imports."""

from __future__ import annotations

import ast
import gc
from pathlib import Path


def parse_module(path: Path) -> ast.Module:
    """`ast.parse` of one file, with the cyclic garbage collector held off while it runs.

    Python 3.11's AST constructor keeps its recursion depth in interpreter-wide state, and a parse
    that starts inside another parse resets it: the outer one then fails with "SystemError: AST
    constructor recursion depth mismatch" (CPython gh-106905; pytest-dev/pytest#10763). A collection
    in the middle of a parse can start one: earlier tests leave garbage whose finalizer logs an
    exception (SQLAlchemy's pool, on a leaked SQLite connection), and 3.11's traceback parses the
    source line to place its carets. CI failed once that way; with the collector off, no finalizer
    runs during the parse.
    """
    source = path.read_text(encoding="utf-8")
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        return ast.parse(source, filename=str(path))
    finally:
        if was_enabled:
            gc.enable()

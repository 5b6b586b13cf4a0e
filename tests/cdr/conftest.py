"""Helpers for the CDR tests: read a whole file into one frame of records and one of rejects."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import pytest

from aisyst_pipelines.cdr import CdrChunk, ReadOptions, read_cdr_file

PII_KEY = b"test-pii-key-not-a-secret"
# The load time the tests read files at, so that no test depends on today's date (the sample calls
# are of 2026; calls ending more than a day after this are rejected as call_in_future).
LOADED_AT = datetime(2026, 12, 1, tzinfo=timezone.utc)


@dataclass
class ReadResult:
    records: pd.DataFrame
    rejects: pd.DataFrame
    rows_total: int
    chunks: list[CdrChunk]


def read_all(path: Path, **options: object) -> ReadResult:
    options.setdefault("pii_key", PII_KEY)
    options.setdefault("loaded_at", LOADED_AT)
    chunks = list(read_cdr_file(path, ReadOptions(**options)))  # type: ignore[arg-type]
    records = pd.concat([chunk.records for chunk in chunks], ignore_index=True)
    rejects = pd.concat([chunk.rejects for chunk in chunks], ignore_index=True)
    return ReadResult(records, rejects, sum(chunk.rows_total for chunk in chunks), chunks)


@pytest.fixture
def write(tmp_path: Path) -> Callable[..., Path]:
    """Write text (str lines or raw bytes) to a file under tmp_path and return its path."""

    def writer(name: str, content: str | bytes | list[str]) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, list):
            content = "".join(line + "\n" for line in content)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return path

    return writer

"""Which CDR format a landing file is in: sniffed from its content, or forced by its sub-folder.

Detection looks at the first non-blank lines only (at most 64 KiB, after a first line longer than that):
- a JSON object with `call_id` → canonical JSONL; with `sid` and `account_sid` (or `status`) → Twilio;
- a CSV header naming the canonical columns → canonical CSV;
- a CSV row of 17–21 fields whose 10th field is a "YYYY-MM-DD HH:MM:SS" time → Asterisk Master.csv
  (no header; 16 standard fields + uniqueid, then optional userfield and peeraccount/linkedid/sequence).
A landing sub-folder named `canonical`, `twilio` or `asterisk` forces the format ("canonical" still
tells CSV from JSONL by the first character). Files may be gzip-compressed (sniffed by magic bytes).
"""

from __future__ import annotations

import csv
import gzip
import json
import re
import zlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from .records import CANONICAL_COLUMNS, FORCED_FOLDERS, FORMATS, REQUIRED_CANONICAL_COLUMNS

SNIFF_BYTES = 64 * 1024
SNIFF_LINES = 20
GZIP_MAGIC = b"\x1f\x8b"
UTF8_BOM = b"\xef\xbb\xbf"
ASTERISK_WIDTHS = (17, 18, 20, 21)
ASTERISK_TIME = re.compile(r"\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2}")


class CdrFileError(Exception):
    """The whole file cannot be loaded (unreadable, truncated, undetectable). The message says why.

    Messages name the file and the cause but never quote its content: CDRs carry phone numbers.
    """


def forced_format_for(path: Path, landing_dir: Path) -> str | None:
    """The format forced by the nearest landing sub-folder named canonical, twilio or asterisk.

    Returns "canonical" (CSV or JSONL, decided by content), "twilio", "asterisk", or None when no
    folder between `landing_dir` and the file has such a name.
    """
    try:
        relative = Path(path).resolve().relative_to(Path(landing_dir).resolve())
    except ValueError:
        return None
    for folder in reversed(relative.parts[:-1]):
        if folder.lower() in FORCED_FOLDERS:
            return folder.lower()
    return None


def detect_format(path: Path, forced: str | None = None) -> str:
    """One of FORMATS for the file. A forced format wins over the content (only "canonical" is refined)."""
    if forced is not None and forced not in FORCED_FOLDERS and forced not in FORMATS:
        raise ValueError(f"unknown forced format {forced!r}: use one of {FORCED_FOLDERS + FORMATS}")
    if forced is not None and forced != "canonical":
        return forced
    lines = _first_lines(path)
    if forced == "canonical":
        if not lines:
            return "canonical_csv"
        return "canonical_jsonl" if lines[0].lstrip().startswith("{") else "canonical_csv"
    if not lines:
        raise CdrFileError(f"{path}: the file is empty, so its CDR format cannot be detected")
    for line in lines:
        detected = _sniff_line(line)
        if detected is not None:
            return detected
    raise CdrFileError(
        f"{path}: cannot detect the CDR format: the first lines are neither a canonical CSV header, "
        "canonical or Twilio JSON objects, nor Asterisk Master.csv rows"
    )


def _sniff_line(line: str) -> str | None:
    stripped = line.strip()
    if stripped.startswith("{"):
        try:
            value = json.loads(stripped)
        except ValueError:
            return None
        if not isinstance(value, dict):
            return None
        if "call_id" in value:
            return "canonical_jsonl"
        if "sid" in value and ("account_sid" in value or "status" in value):
            return "twilio"
        return None
    try:
        fields = next(csv.reader([stripped]))
    except (csv.Error, StopIteration):
        return None
    names = {field.strip().lower() for field in fields}
    if set(REQUIRED_CANONICAL_COLUMNS) <= names:
        return "canonical_csv"
    if len(fields) in ASTERISK_WIDTHS and ASTERISK_TIME.fullmatch(fields[9].strip()):
        return "asterisk"
    return None


def canonical_header(line: str, path: Path) -> list[str]:
    """The column names of a canonical CSV header line (normalised), or CdrFileError if it is not one."""
    try:
        names = [field.strip().lower() for field in next(csv.reader([line]))]
    except (csv.Error, StopIteration):
        names = []
    missing = [name for name in REQUIRED_CANONICAL_COLUMNS if name not in names]
    if missing:
        raise CdrFileError(f"{path}: the first line is not a canonical CSV header (missing columns: {', '.join(missing)})")
    duplicated = sorted({name for name in names if names.count(name) > 1 and name in CANONICAL_COLUMNS})
    if duplicated:
        raise CdrFileError(f"{path}: the canonical CSV header repeats columns: {', '.join(duplicated)}")
    return names


def _first_lines(path: Path) -> list[str]:
    with open_cdr_stream(path) as stream:
        head = _read_head(stream, path)
        # a first line longer than the sniffed bytes tells nothing (the reader rejects it as
        # record_too_long): sniff the lines after it, reading past it without holding it
        while len(head) >= SNIFF_BYTES and b"\n" not in head:
            head = _read_head(stream, path)
            cut = head.find(b"\n")
            if cut >= 0:
                head = head[cut + 1 :] + _read_head(stream, path)
                break
    if head.startswith(UTF8_BOM):
        head = head[len(UTF8_BOM) :]
    text = head.decode("utf-8", errors="replace")
    lines = text.split("\n")
    if len(head) >= SNIFF_BYTES and len(lines) > 1:
        lines = lines[:-1]  # the last one may be cut
    return [line for line in lines if line.strip()][:SNIFF_LINES]


def _read_head(stream: BinaryIO, path: Path) -> bytes:
    try:
        return stream.read(SNIFF_BYTES)
    except EOFError:
        # a gzip file shorter than its first lines: sniff what there is, reading will report it
        return b""
    except (OSError, zlib.error) as error:
        raise CdrFileError(f"{path}: cannot read the file: {_describe(error)}") from error


@contextmanager
def open_cdr_stream(path: Path) -> Iterator[BinaryIO]:
    """The file's bytes, transparently gunzipped; IO failures become CdrFileError."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed below
    except OSError as error:
        raise CdrFileError(f"{path}: cannot open the file: {_describe(error)}") from error
    try:
        try:
            magic = raw.read(2)
            raw.seek(0)
        except OSError as error:
            raise CdrFileError(f"{path}: cannot read the file: {_describe(error)}") from error
        if magic == GZIP_MAGIC:
            with gzip.GzipFile(fileobj=raw, mode="rb") as unzipped:
                yield unzipped  # type: ignore[misc]
        else:
            yield raw
    finally:
        raw.close()


def is_gzip(path: Path) -> bool:
    try:
        with open(path, "rb") as raw:
            return raw.read(2) == GZIP_MAGIC
    except OSError as error:
        raise CdrFileError(f"{path}: cannot open the file: {_describe(error)}") from error


def _describe(error: BaseException) -> str:
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return f"{type(error).__name__}: {error}"

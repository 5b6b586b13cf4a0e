"""Streaming a CDR file into chunks of validated, rated call records and rejected rows.

The file is read as bytes in blocks of whole lines (at most `chunk_rows` lines each), so memory is
bounded by the chunk size whatever the file size. Per block:

1. The lines are screened for the whole block at once: UTF-8 (Arrow), line lengths (numpy), NUL
   (a regular-expression scan); only a block with a hit is taken apart line by line. A line longer than
   `max_record_bytes` is a `record_too_long` reject (one still being read is skipped to its newline,
   never held: memory stays bounded whatever the input); a line with bad bytes is `invalid_utf8`;
   a line holding a NUL (a byte, or `\u0000` in JSON: PostgreSQL text cannot store it) is
   `nul_byte`. Blank lines are skipped (not counted).
2. The lines are split into fields by a vectorised parser (pyarrow's CSV reader for CSV; one
   `json.loads` over the whole block for JSON lines). Rows of the wrong width or broken JSON fall
   back to a per-line parser and, if still broken, become `malformed_row` rejects.
3. The format adapter (`normalise.py`) maps the fields to the canonical call, validates and rates
   them column-wise.

Line numbers (`source_line`) are 1-based physical lines of the (decompressed) file.
"""

from __future__ import annotations

import csv
import io
import json
import re
import zlib
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.json as pajson

from .formats import (
    ASTERISK_WIDTHS,
    CdrFileError,
    UTF8_BOM,
    canonical_header,
    detect_format,
    is_gzip,
    open_cdr_stream,
)
from .normalise import ASTERISK_COLUMNS, ASTERISK_UNUSED, TWILIO_KEYS, ParsedRows, RejectList, build_chunk, empty_records, empty_rejects
from .reading import CdrChunk, ReadOptions
from .records import (
    CANONICAL_COLUMNS,
    INVALID_UTF8,
    MALFORMED_ROW,
    NUL_BYTE,
    RECORD_TOO_LONG,
)

READ_SIZE = 4 * 1024 * 1024
MAX_BLOCK_BYTES = 16 * 1024 * 1024  # a chunk holds at most chunk_rows lines and about this many bytes
FIRST_BLOCK_ROWS = 4_096  # the first chunk comes quickly, the next ones grow (see _iter_blocks)
PYARROW_BLOCK_BYTES = 8 * 1024 * 1024
JSON_BATCH_ROWS = 10_000
JSON_NUMBER_KEYS = ("billable_seconds", "duration")  # may be JSON numbers rather than strings
MAX_FIELD_CHARS_IN_REASON = 60
JSON_FORMATS = ("canonical_jsonl", "twilio")
NUL = re.compile(b"\x00")
JSON_NUL_ESCAPE = re.compile(rb"\\u0000")
JSON_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")  # half of a character: valid only in a pair


def read_cdr_file(path: Path, options: ReadOptions) -> Iterator[CdrChunk]:
    """Stream the file's chunks. Raises CdrFileError for an unreadable, truncated or undetectable file.

    A chunk holds at most `chunk_rows` lines and about MAX_BLOCK_BYTES of input, whichever comes
    first, so memory stays bounded whatever the width of the rows.

    A plain file whose last byte is not a newline is refused before the first chunk (a file still
    being written); a gzip file's truncation shows only when its end is reached.
    """
    path = Path(path)
    file_format = detect_format(path, options.forced_format)
    if not is_gzip(path):
        _check_complete(path)
    reader = _FileReader(path, file_format, options)
    yield from reader.chunks()


def _check_complete(path: Path) -> None:
    try:
        with open(path, "rb") as raw:
            raw.seek(0, io.SEEK_END)
            if raw.tell() == 0:
                return
            raw.seek(-1, io.SEEK_END)
            last = raw.read(1)
    except OSError as error:
        raise CdrFileError(f"{path}: cannot read the file: {error.strerror or error}") from error
    if last != b"\n":
        raise CdrFileError(f"{path}: truncated: the last line does not end with a newline (is the file still being written?)")


# --- blocks of whole lines ---------------------------------------------------------------------


@dataclass
class _LongLine:
    """A line longer than max_record_bytes that was skipped while reading: only its head is kept."""

    line: int  # 1-based line number
    length: int  # bytes, without the newline
    head: bytes  # its first max_record_bytes bytes


@dataclass
class _Block:
    data: pa.Buffer  # whole lines, each ending with b"\n" (a zero-copy slice of what was read)
    first_line: int  # 1-based line number of its first line
    n_lines: int
    ends: np.ndarray  # offsets of its newlines
    skipped: list[_LongLine]  # long lines of this block, each standing in data as an empty line


def _iter_blocks(stream: BinaryIO, path: Path, chunk_rows: int, max_record_bytes: int) -> Iterator[_Block]:
    """Blocks of at most `chunk_rows` whole lines; a last line without its newline means truncated.

    The first block holds at most FIRST_BLOCK_ROWS lines and each next one up to twice as many:
    a consumer that works on one chunk while the next is read (the loader) waits only for a small
    first one before it starts, and is then busy while each bigger one is read.
    """
    block_rows = min(chunk_rows, FIRST_BLOCK_ROWS)
    pieces: list[bytes] = []
    skipped: list[_LongLine] = []
    n_lines = 0
    n_bytes = 0
    next_line = 1
    for complete, n_new, long_lines, at_end in _whole_lines(stream, path, max_record_bytes):
        if complete:
            pieces.append(complete)
            n_lines += n_new
            n_bytes += len(complete)
        skipped += long_lines
        # wide rows (Twilio's ~700 bytes) reach the byte cap before chunk_rows: memory stays bounded
        if n_lines and (n_lines >= block_rows or n_bytes >= MAX_BLOCK_BYTES or at_end):
            data = pa.py_buffer(b"".join(pieces))
            ends = _line_ends(data)
            start = 0
            taken = 0
            while n_lines > taken:
                remaining = n_lines - taken
                fit = int(np.searchsorted(ends, start + MAX_BLOCK_BYTES - 1, side="right")) - taken
                count = min(block_rows, remaining, max(1, fit))
                if count == remaining and count < block_rows and not at_end:
                    break  # a short block: wait for more lines
                end = int(ends[taken + count - 1]) + 1
                mine = [long for long in skipped if long.line < next_line + count]
                skipped = skipped[len(mine) :]
                yield _Block(data.slice(start, end - start), next_line, count, ends[taken : taken + count] - start, mine)
                next_line += count
                taken += count
                start = end
                block_rows = min(chunk_rows, block_rows * 2)
            pieces = [data.slice(start).to_pybytes()] if start < data.size else []
            n_lines -= taken
            n_bytes = data.size - start


def _whole_lines(stream: BinaryIO, path: Path, max_record_bytes: int) -> Iterator[tuple[bytes, int, list[_LongLine], bool]]:
    """The stream as pieces of whole lines, per read: (lines, their count, long lines skipped, at end).

    The unfinished line at the end of a read waits for the next one, but never beyond
    `max_record_bytes`: a longer line keeps its head only, the rest is read and dropped up to its
    newline, and an empty line takes its place in the pieces so that line numbers stay right.
    (A long line that arrives whole within one read is left to `_screen`.)
    """
    pending = b""  # the start of the unfinished line, at most max_record_bytes
    skipping: _LongLine | None = None  # the long line being dropped
    lines_before = 0  # lines yielded so far: the unfinished line is number lines_before + 1
    first = True
    while True:
        piece = _read(stream, path)
        if first and piece.startswith(UTF8_BOM):
            piece = piece[len(UTF8_BOM) :]
        first = False
        if not piece:
            if pending or skipping is not None:
                raise CdrFileError(f"{path}: truncated: the last line does not end with a newline (is the file still being written?)")
            yield b"", 0, [], True
            return
        found: list[_LongLine] = []
        placeholder = b""
        if skipping is not None:
            cut = piece.find(b"\n")
            if cut < 0:
                skipping.length += len(piece)
                continue
            skipping.length += cut
            found.append(skipping)
            skipping = None
            placeholder = b"\n"
            piece = piece[cut + 1 :]
        cut = piece.rfind(b"\n")
        if cut < 0:
            complete, rest = b"", pending + piece
        else:
            complete, rest = pending + piece[: cut + 1], piece[cut + 1 :]
        count = complete.count(b"\n") + len(placeholder)
        lines_before += count
        pending = rest
        if len(rest) > max_record_bytes:
            skipping = _LongLine(lines_before + 1, len(rest), rest[:max_record_bytes])
            pending = b""
        if count:
            yield placeholder + complete, count, found, False


def _read(stream: BinaryIO, path: Path) -> bytes:
    try:
        return stream.read(READ_SIZE)
    except EOFError as error:
        raise CdrFileError(f"{path}: truncated: the compressed stream ends before its end marker") from error
    except (OSError, zlib.error) as error:
        cause = error.strerror if isinstance(error, OSError) and error.strerror else f"{type(error).__name__}: {error}"
        raise CdrFileError(f"{path}: cannot read the file: {cause}") from error


def _line_ends(data: pa.Buffer | bytes) -> np.ndarray:
    """Offsets of the newlines in `data`."""
    # pa.Buffer implements the buffer protocol; pyarrow-stubs does not declare it (no __buffer__)
    return np.flatnonzero(np.frombuffer(data, dtype=np.uint8) == 10)  # pyright: ignore[reportCallIssue, reportArgumentType]


def _is_utf8(data: pa.Buffer) -> bool:
    """UTF-8 validity of a whole buffer, checked by Arrow without building a Python string."""
    offsets = pa.py_buffer(np.array([0, data.size], dtype=np.int32).tobytes())
    try:
        pa.StringArray.from_buffers(1, offsets, data).validate(full=True)
    except pa.ArrowInvalid:
        return False
    return True


@dataclass
class Lines:
    """Valid UTF-8 text lines of a block (blank ones dropped), with their file line numbers."""

    data: pa.Buffer  # the lines, each ending with b"\n"
    line_numbers: np.ndarray  # int64, one per line
    ends: np.ndarray  # offsets of the newlines in data

    def __len__(self) -> int:
        return len(self.line_numbers)

    def texts(self, index: np.ndarray) -> list[str]:
        """The text of the lines at these positions (without the line end)."""
        view = memoryview(self.data)
        ends = self.ends
        out = []
        for i in index.tolist():
            start = int(ends[i - 1]) + 1 if i > 0 else 0
            out.append(str(view[start : int(ends[i])], "utf-8").rstrip("\r"))
        return out

    def batch_text(self, start: int, stop: int) -> str:
        """The text of lines [start, stop), line ends included."""
        begin = int(self.ends[start - 1]) + 1 if start > 0 else 0
        return str(memoryview(self.data)[begin : int(self.ends[stop - 1]) + 1], "utf-8")

    def drop_first(self) -> tuple[str, "Lines"]:
        """Split off the first line (a CSV header)."""
        cut = int(self.ends[0]) + 1
        (header,) = self.texts(np.zeros(1, dtype=np.int64))
        return header, Lines(self.data.slice(cut), self.line_numbers[1:], self.ends[1:] - cut)


def _screen(block: _Block, max_record_bytes: int, json_lines: bool) -> tuple[Lines, RejectList]:
    """The block's readable lines (blank ones dropped) and a reject for each line that is not.

    A line is rejected for the first of: longer than `max_record_bytes` (`record_too_long`), not
    UTF-8 (`invalid_utf8`; in JSON lines also a `\\ud800`-style escape of half a character without
    its other half, text no database can store), holding a NUL — a byte 0, or in JSON lines a
    `\\u0000` escape (`nul_byte`). A clean block costs a few scans in C and no copy.
    """
    data, ends = block.data, block.ends
    numbers = np.arange(block.first_line, block.first_line + block.n_lines, dtype=np.int64)
    starts = np.concatenate([[0], ends[:-1] + 1])
    bytes_ = np.frombuffer(data, dtype=np.uint8)  # pyright: ignore[reportCallIssue, reportArgumentType]  (as in _line_ends)
    lengths = ends - starts
    blank = (lengths == 0) | ((lengths == 1) & (bytes_[np.minimum(starts, max(data.size - 1, 0))] == 13))
    too_long = lengths > max_record_bytes
    nul = _first_hits(NUL, data, ends)
    surrogates: dict[int, int] = {}
    if json_lines:
        nul = _first_hits(JSON_NUL_ESCAPE, data, ends, escapable=True) | nul
        surrogates = _first_hits(JSON_SURROGATE_ESCAPE, data, ends, escapable=True)
    utf8 = _is_utf8(data)
    if utf8 and not nul and not surrogates and not blank.any() and not too_long.any():
        return Lines(data, numbers, ends), RejectList()
    rejects = RejectList()
    for long in block.skipped:
        rejects.add(long.line, RECORD_TOO_LONG, _too_long_reason(long.length, max_record_bytes), _line_text(long.head), cut=True)
    view = memoryview(data)
    keep = ~(blank | too_long)
    for i in np.flatnonzero(too_long).tolist():
        start = int(starts[i])
        head = bytes(view[start : start + max_record_bytes])
        reason = _too_long_reason(int(lengths[i]), max_record_bytes)
        rejects.add(int(numbers[i]), RECORD_TOO_LONG, reason, _line_text(head), cut=True)
    if not utf8:
        for i in np.flatnonzero(keep).tolist():
            line = bytes(view[int(starts[i]) : int(ends[i])])
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as error:
                keep[i] = False
                rejects.add(int(numbers[i]), INVALID_UTF8, f"invalid UTF-8 at byte {error.start + 1} of the line", _line_text(line))
    for i in sorted(surrogates):
        line = bytes(view[int(starts[i]) : int(ends[i])])
        if keep[i] and _holds_lone_surrogate(line):
            keep[i] = False
            rejects.add(int(numbers[i]), INVALID_UTF8, "a \\u escape of half a character (a lone surrogate): not text", _line_text(line))
    for i, at in sorted(nul.items()):
        if keep[i]:
            keep[i] = False
            line = bytes(view[int(starts[i]) : int(ends[i])])
            reason = f"a NUL character at byte {at - int(starts[i]) + 1} of the line (PostgreSQL text cannot hold it)"
            rejects.add(int(numbers[i]), NUL_BYTE, reason, _line_text(line))
    kept = pa.py_buffer(bytes_[np.repeat(keep, lengths + 1)])  # each kept line with its newline
    return Lines(kept, numbers[keep], _line_ends(kept)), rejects


def _first_hits(pattern: re.Pattern[bytes], data: pa.Buffer, ends: np.ndarray, escapable: bool = False) -> dict[int, int]:
    """The lines holding `pattern`: line index → offset of its first hit in `data`.

    One scan in C; Python works only per line hit. `escapable`: a hit preceded by an odd number
    of backslashes is text, not a hit (JSON's "\\\\u0000" is a backslash and "u0000").
    """
    hits: dict[int, int] = {}
    view = memoryview(data)
    position = 0
    while (match := pattern.search(view, position)) is not None:
        at = match.start()
        line = int(np.searchsorted(ends, at))
        if escapable and _backslashes_before(view, at) % 2:
            position = at + 1
            continue
        hits[line] = at
        position = int(ends[line]) + 1
    return hits


def _holds_lone_surrogate(line: bytes) -> bool:
    """Whether a JSON line's strings hold half a character (a line that is not JSON is left to the parser)."""
    try:
        value = json.loads(line)
    except ValueError:
        return False
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _backslashes_before(view: memoryview, at: int) -> int:
    count = 0
    while at - count > 0 and view[at - count - 1] == 0x5C:
        count += 1
    return count


def _too_long_reason(length: int, max_record_bytes: int) -> str:
    return f"the record is {length} bytes long, more than the limit of {max_record_bytes} bytes"


def _line_text(line: bytes) -> str:
    """A line's text for a reject: undecodable bytes escaped, the line end dropped."""
    return line.decode("utf-8", errors="backslashreplace").rstrip("\r")


# --- field splitting ---------------------------------------------------------------------------


Fields = dict[str, pa.Array]


def parse_csv_lines(
    lines: Lines,
    names: Sequence[str],
    wanted: Sequence[str],
    accept_width: Callable[[int], bool],
) -> tuple[Fields, np.ndarray, RejectList]:
    """Split CSV lines into the `wanted` string columns.

    Returns the fields of the rows that split, their positions in `lines`, and malformed rejects.
    pyarrow does the work; rows of another width are re-read one by one and kept when
    `accept_width` allows that width (Asterisk files may carry optional trailing columns).
    """
    n = len(lines)
    if n == 0:
        return {name: pa.array([], type=pa.string()) for name in wanted}, np.zeros(0, dtype=np.int64), RejectList()
    invalid: list[int | None] = []

    def on_invalid_row(row: pacsv.InvalidRow) -> Literal["skip"]:
        invalid.append(row.number)
        return "skip"

    table = None
    try:
        table = pacsv.read_csv(
            pa.BufferReader(lines.data),  # pyright: ignore[reportArgumentType]  pyarrow-stubs: read_csv takes a NativeFile too
            read_options=pacsv.ReadOptions(column_names=list(names), use_threads=False, block_size=PYARROW_BLOCK_BYTES),
            parse_options=pacsv.ParseOptions(
                invalid_row_handler=on_invalid_row, newlines_in_values=False, ignore_empty_lines=False
            ),
            convert_options=pacsv.ConvertOptions(
                column_types={name: pa.string() for name in wanted},
                include_columns=list(wanted),
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except pa.ArrowException:
        table = None
    aligned = table is not None and table.num_rows + len(invalid) == n and all(number is not None for number in invalid)
    if not aligned:
        # a quoted newline or an unbalanced quote merged lines: split each line on its own
        return _parse_csv_per_line(lines, np.arange(n, dtype=np.int64), names, wanted, accept_width)
    assert table is not None
    fast = {name: table.column(name).combine_chunks() for name in wanted}
    if not invalid:
        return fast, np.arange(n, dtype=np.int64), RejectList()
    bad = np.asarray(invalid, dtype=np.int64) - 1
    keep = np.setdiff1d(np.arange(n, dtype=np.int64), bad, assume_unique=True)
    slow, slow_index, rejects = _parse_csv_per_line(lines, bad, names, wanted, accept_width)
    index = np.concatenate([keep, slow_index])
    order = np.argsort(index, kind="stable")
    fields = {name: pa.concat_arrays([fast[name], slow[name]]).take(order) for name in wanted}
    return fields, np.sort(index, kind="stable"), rejects


def _parse_csv_per_line(
    lines: Lines,
    index: np.ndarray,
    names: Sequence[str],
    wanted: Sequence[str],
    accept_width: Callable[[int], bool],
) -> tuple[Fields, np.ndarray, RejectList]:
    positions = {name: names.index(name) for name in wanted}
    columns: dict[str, list[str]] = {name: [] for name in wanted}
    kept: list[int] = []
    rejects = RejectList()
    for i, text in zip(index.tolist(), lines.texts(index)):
        try:
            row = next(csv.reader([text], strict=True))
        except (csv.Error, StopIteration) as error:
            rejects.add(int(lines.line_numbers[i]), MALFORMED_ROW, f"not a valid CSV row: {error}", text)
            continue
        if not accept_width(len(row)):
            rejects.add(
                int(lines.line_numbers[i]),
                MALFORMED_ROW,
                f"the row has {len(row)} columns, expected {len(names)}",
                text,
            )
            continue
        kept.append(i)
        for name, position in positions.items():
            columns[name].append(row[position] if position < len(row) else "")
    fields: Fields = {name: pa.array(values, type=pa.string()) for name, values in columns.items()}
    return fields, np.asarray(kept, dtype=np.int64), rejects


def parse_json_lines(lines: Lines, keys: Sequence[str]) -> tuple[Fields, np.ndarray, RejectList]:
    """Pick `keys` out of one JSON object per line, as strings (null for null or absent).

    Arrow's JSON reader does a clean block in one pass; a block it refuses (a broken line, a line
    that is not an object, a field that is a number in one line and text in another) is parsed
    again in Python, a batch of lines at a time so that few dicts are alive at once.
    """
    n = len(lines)
    if n == 0:
        return {key: pa.array([], type=pa.string()) for key in keys}, np.zeros(0, dtype=np.int64), RejectList()
    fields = _parse_json_with_arrow(lines, keys)
    if fields is not None:
        return fields, np.arange(n, dtype=np.int64), RejectList()
    columns: dict[str, list[str | None]] = {key: [] for key in keys}
    index: list[int] = []
    rejects = RejectList()
    for start in range(0, n, JSON_BATCH_ROWS):
        rows = lines.batch_text(start, min(n, start + JSON_BATCH_ROWS)).split("\n")
        rows.pop()  # after the last newline
        for offset, value in enumerate(_json_objects(rows)):
            i = start + offset
            if isinstance(value, dict):
                index.append(i)
                for key in keys:
                    columns[key].append(_json_text(value.get(key)))
            else:
                rejects.add(int(lines.line_numbers[i]), MALFORMED_ROW, value, rows[offset].rstrip("\r"))
    return {key: pa.array(values, type=pa.string()) for key, values in columns.items()}, np.asarray(index, dtype=np.int64), rejects


def _parse_json_with_arrow(lines: Lines, keys: Sequence[str]) -> Fields | None:
    for numbers_as_numbers in (False, True):  # "duration": "61" (Twilio) or "billable_seconds": 61
        schema = pa.schema(
            [(key, pa.float64() if numbers_as_numbers and key in JSON_NUMBER_KEYS else pa.string()) for key in keys]
        )
        try:
            table = pajson.read_json(
                pa.BufferReader(lines.data),  # pyright: ignore[reportArgumentType]  pyarrow-stubs: read_json takes a NativeFile too
                read_options=pajson.ReadOptions(use_threads=False, block_size=PYARROW_BLOCK_BYTES),
                parse_options=pajson.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore"),
            )
        except pa.ArrowException:
            continue
        if table.num_rows != len(lines):
            return None
        return {key: pc.cast(table.column(key).combine_chunks(), pa.string()) for key in keys}
    return None


def _json_objects(rows: list[str]) -> list[dict | str]:
    """Each row's object, or why it is not one (one json.loads for the batch when all are fine)."""
    if all(row.startswith("{") and row.rstrip("\r").endswith("}") for row in rows):
        try:
            parsed = json.loads("[" + ",".join(rows) + "]")
        except ValueError:
            parsed = None
        # as many objects as lines, all of them objects: each line held exactly one
        if parsed is not None and len(parsed) == len(rows) and all(type(value) is dict for value in parsed):
            return parsed
    out: list[dict | str] = []
    for row in rows:
        try:
            value = json.loads(row)
        except ValueError as error:
            out.append(f"invalid JSON: {error.msg} at column {error.colno}" if isinstance(error, json.JSONDecodeError) else "invalid JSON")
            continue
        out.append(value if isinstance(value, dict) else f"not a JSON object but a {type(value).__name__}")
    return out


def _json_text(value: object) -> str | None:
    if type(value) is str or value is None:
        return value  # type: ignore[return-value]
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value)


# --- the file reader ---------------------------------------------------------------------------


class _FileReader:
    def __init__(self, path: Path, file_format: str, options: ReadOptions) -> None:
        self.path = path
        self.format = file_format
        self.options = options
        self.csv_names: list[str] | None = None  # canonical CSV: from the header
        self.phone_hashes: dict[str, str | None] = {}  # number → keyed hash, across the file's chunks

    def chunks(self) -> Iterator[CdrChunk]:
        produced = False
        with open_cdr_stream(self.path) as stream:
            for block in _iter_blocks(stream, self.path, self.options.chunk_rows, self.options.max_record_bytes):
                lines, rejects = _screen(block, self.options.max_record_bytes, self.format in JSON_FORMATS)
                if self.format == "canonical_csv" and self.csv_names is None:
                    # the header is the first readable line: a rejected line before it was the header
                    if len(rejects) and (len(lines) == 0 or rejects.first_line() < int(lines.line_numbers[0])):
                        raise CdrFileError(f"{self.path}: the canonical CSV header cannot be read: {rejects.first_reason()}")
                    if len(lines) == 0:
                        continue  # only blank lines so far
                    header, lines = lines.drop_first()
                    self.csv_names = canonical_header(header, self.path)
                chunk = self._chunk(lines, rejects)
                if chunk.rows_total:
                    produced = True
                    yield chunk
        if self.format == "canonical_csv" and self.csv_names is None:
            raise CdrFileError(f"{self.path}: the file has no canonical CSV header")
        if not produced:
            # an empty file (or a header alone) still yields one chunk, so that callers see 0 rows
            yield CdrChunk(empty_records(), empty_rejects(), 0)

    def _chunk(self, lines: Lines, rejects: RejectList) -> CdrChunk:
        fields, positions, malformed = self._split(lines)
        rejects.extend(malformed)
        parsed = ParsedRows(
            fields=fields,
            n_rows=len(positions),
            line_numbers=lines.line_numbers[positions],
            raw_text=lambda rows: lines.texts(positions[rows]),
        )
        return build_chunk(self.format, parsed, rejects, self.options, self.phone_hashes)

    def _split(self, lines: Lines) -> tuple[Fields, np.ndarray, RejectList]:
        if self.format == "canonical_csv":
            assert self.csv_names is not None
            names = [name if name in CANONICAL_COLUMNS else f"_extra_{i}" for i, name in enumerate(self.csv_names)]
            wanted = [name for name in CANONICAL_COLUMNS if name in names]
            width = len(names)
            return parse_csv_lines(lines, names, wanted, lambda w: w == width)
        if self.format == "asterisk":
            names = [*ASTERISK_COLUMNS, *(f"_extra_{i}" for i in range(max(ASTERISK_WIDTHS) - len(ASTERISK_COLUMNS)))]
            width = self._asterisk_width(lines)
            wanted = [name for name in ASTERISK_COLUMNS if name not in ASTERISK_UNUSED]
            return parse_csv_lines(lines, names[:width], wanted, lambda w: w in ASTERISK_WIDTHS)
        if self.format == "canonical_jsonl":
            return parse_json_lines(lines, CANONICAL_COLUMNS)
        if self.format == "twilio":
            return parse_json_lines(lines, TWILIO_KEYS)
        raise ValueError(f"unknown CDR format {self.format!r}")

    @staticmethod
    def _asterisk_width(lines: Lines) -> int:
        """The width of the block's first row: the pyarrow pass expects it, other widths go the slow way."""
        if len(lines) == 0:
            return 18
        (first,) = lines.texts(np.zeros(1, dtype=np.int64))
        try:
            width = len(next(csv.reader([first])))
        except (csv.Error, StopIteration):
            return 18
        return width if width in ASTERISK_WIDTHS else 18

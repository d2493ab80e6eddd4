r"""Bulk import and export: ``COPY``, ``raftkv import`` and ``raftkv export``.

Files are read and written by the process that runs the client (psql's ``\copy``), never by
the nodes. Two formats, both UTF-8 and line based (docs/query-language.md, "COPY", is the user's
description):

* **csv**: RFC 4180, two columns ``key,value`` (a ``HEADER`` line may name them, in either
  order). A value is written as the shell's csv output writes it (:func:`raftkv.values.csv_field`):
  text as it is, except that text starting with a backslash gets one more; binary (bytes that
  are not UTF-8) as PostgreSQL's hex form ``\x00ff``. Reading undoes exactly that
  (:func:`raftkv.values.parse_value`).
* **jsonl**: one object ``{"key": ..., "value": ...}`` per line, as the shell's json output
  writes it: keys as strings (64-bit integers do not survive JSON readers as numbers), a value
  that is a compact JSON document embedded as JSON, any other value a JSON string under the same
  backslash rule as csv. Unlike the shell's output, a document is embedded only if reading it
  back gives its stored bytes (no whitespace between tokens, no character that the line writes
  as ``\uXXXX``); others are JSON strings, so every value comes back byte for byte.

Keys are decimal integers, or with ``KEY_FORMAT timestamp`` RFC 3339 text with nanoseconds
(nanoseconds since the Unix epoch, as the query language's ``TIMESTAMP``).

An import streams: it reads a line at a time (a line may not exceed :data:`MAX_LINE_BYTES`) and
writes batches of at most ``batch_rows`` rows and ``batch_bytes`` bytes through ``put_many``, one
while it reads the next, so its memory is bounded whatever the file's size. A bad row stops it
with the line number; every row before that line has then been written, and none after. Every
failure, and Ctrl-C, says how many rows were written. An export streams the query's pages into
the file.

A path is always a file: ``-`` means standard input or output only to ``raftkv import`` and
``raftkv export`` (raftkv/bulk_cli.py), which pass the stream to :func:`import_stream` and
:func:`export_rows`. Nothing here touches a terminal; the progress line is shell/progress.py's.
"""

from __future__ import annotations

import codecs
import csv
import json
import os
import re
import secrets
import stat
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, BinaryIO, Protocol, TextIO

from . import values
from .errors import QueryError, RaftKVError
from .keys import MAX_KEY, MAX_VALUE_BYTES
from .query import ast
from .query.literals import parse_timestamp
from .values import parse_value as parse_value  # an import reads values back as the shell writes them
from .values import shown

FORMATS = ast.COPY_FORMATS
KEY_FORMATS = ast.COPY_KEY_FORMATS
BATCH_ROWS = 5000  # rows per put_many: the client's own per-shard batch holds as many
BATCH_BYTES = 2 << 20  # and about as many bytes (values plus 16 per row)
ROW_OVERHEAD = 16  # bytes a row counts for beyond its value: its key and framing
# A line holds one row; the longest row is a 1 MiB value written as JSON escapes (\u0000: six
# characters a byte) or as quoted csv (doubled quotes), so 8 MiB is ample and still bounds memory.
MAX_LINE_BYTES = 8 << 20
# 1 MiB of binary is 2 MiB of hex plus its \x: the longest field a row can hold (see _csv_rows)
_CSV_FIELD_LIMIT = 2 * MAX_VALUE_BYTES + 64
# How long Ctrl-C waits for the batch that put_many is writing, so that it can say whether those
# rows were written (the client's own calls time out well within this).
CANCEL_WAIT = 15.0
_JSONL_SUFFIXES = (".jsonl", ".ndjson", ".json")

Progress = Callable[[int, float | None], None]
"""Called with the rows done so far and, when known, the share of the input read (0..1)."""


class CopyError(RaftKVError):
    """An import or export failed; the message says where and how many rows were written first.

    ``rows`` is the number of rows written (to the cluster, or to the file) before the failure;
    ``line`` the input line of a bad row, if that was the cause.
    """

    def __init__(self, message: str, rows: int = 0, line: int | None = None) -> None:
        super().__init__(message, rows=rows, line=line)
        self.rows = rows
        self.line = line


class BadRow(ValueError):
    """A row of an input file that cannot be imported: ``line`` (1-based) and ``reason``."""

    def __init__(self, line: int, reason: str) -> None:
        super().__init__(f"line {line}: {reason}")
        self.line = line
        self.reason = reason


@dataclass(frozen=True)
class CopyOptions:
    """How a file is laid out: ``format`` (csv or jsonl), ``header`` (csv: a first line naming
    the columns) and ``key_format`` (int or timestamp)."""

    format: str = "csv"
    header: bool = False
    key_format: str = "int"

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise CopyError(f"unknown format {self.format!r}: choose csv or jsonl")
        if self.key_format not in KEY_FORMATS:
            raise CopyError(f"unknown key format {self.key_format!r}: choose int or timestamp")
        if self.header and self.format != "csv":
            raise CopyError("HEADER is for the csv format: a jsonl line names its members itself")

    @classmethod
    def for_path(cls, path: str, format: str | None = None, header: bool = False,
                 key_format: str = "int") -> CopyOptions:
        """Options for ``path``: without ``format``, jsonl for a name ending in ``.jsonl``,
        ``.ndjson`` or ``.json`` (any case), else csv."""
        return cls(format or guess_format(path), header, key_format)


def guess_format(path: str) -> str:
    """The format a file name suggests: ``jsonl`` for ``.jsonl``/``.ndjson``/``.json``, else ``csv``."""
    return "jsonl" if path.lower().endswith(_JSONL_SUFFIXES) else "csv"


# --- reading --------------------------------------------------------------------------------------


def parse_key(text: str, key_format: str = "int") -> int:
    """A key as a file holds it: decimal digits, or RFC 3339 text with ``key_format`` timestamp.

    Raises ValueError with a sentence saying what is wrong.
    """
    t = text.strip()
    if key_format == "timestamp":
        try:
            ns = parse_timestamp(t)
        except QueryError as exc:
            raise ValueError(exc.message) from None
        if ns < 0:
            raise ValueError(f"the key {shown(t)} is before 1970-01-01T00:00:00Z, outside the key space")
        if ns > MAX_KEY:
            raise ValueError(f"the key {shown(t)} is after 2554-07-21T23:34:33.709551615Z, outside the key space")
        return ns
    if not (t.isascii() and t.isdigit()):
        if not t:
            raise ValueError("the key is empty")
        hint = "; for RFC 3339 keys use KEY_FORMAT timestamp" if re.match(r"\d{4}-\d\d-\d\d", t) else ""
        raise ValueError(f"the key {shown(t)} is not a whole number from 0 to 2**64-1{hint}")
    digits = t.lstrip("0") or "0"
    key = int(digits) if len(digits) <= 20 else MAX_KEY + 1  # 2**64-1 has 20 digits; int() of thousands would refuse
    if key > MAX_KEY:
        raise ValueError(f"the key {shown(t)} is larger than 2**64-1")
    return key


class RowReader:
    """The rows ``(line, key, value)`` of a csv or jsonl byte stream, read a line at a time.

    ``line`` is where the row starts (a quoted csv value may span lines). :attr:`bytes_read`
    says how far the stream has been read. A row that cannot be imported raises
    :class:`BadRow`; so does a line longer than ``max_line`` bytes or one that is not UTF-8.
    """

    def __init__(self, stream: BinaryIO, options: CopyOptions, max_line: int = MAX_LINE_BYTES) -> None:
        self.stream = stream
        self.options = options
        self.max_line = max_line
        self.bytes_read = 0
        self._line = 0

    def __iter__(self) -> Iterator[tuple[int, int, bytes]]:
        return self._csv_rows() if self.options.format == "csv" else self._jsonl_rows()

    def _lines(self) -> Iterator[str]:
        while True:
            # a bounded readline: a file without newlines must not be read into memory whole
            raw = self.stream.readline(self.max_line + 1)
            if not raw:
                return
            self._line += 1
            self.bytes_read += len(raw)
            if len(raw) > self.max_line:
                raise BadRow(self._line, f"the line is longer than {self.max_line:,} bytes; a row holds "
                                         "one key and a value of at most 1 MiB")
            if self._line == 1 and raw.startswith(codecs.BOM_UTF8):
                raw = raw[len(codecs.BOM_UTF8):]  # spreadsheets write one
            try:
                yield raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise BadRow(self._line, f"the line is not UTF-8 text (byte {exc.start + 1} of the line); "
                                         "write binary values as \\x and hex digits") from None

    def _csv_rows(self) -> Iterator[tuple[int, int, bytes]]:
        # The csv module has one field limit for the whole process and no per-reader one, and a
        # reader checks it on every field, so it cannot be restored while rows are still read.
        # It is only ever raised, to the longest field a row can hold: another csv reader in
        # this process then accepts fields up to 2 MiB instead of 128 KiB, which costs nothing.
        if csv.field_size_limit() < _CSV_FIELD_LIMIT:
            csv.field_size_limit(_CSV_FIELD_LIMIT)
        reader = csv.reader(self._lines(), strict=True)
        order = (0, 1)  # where key and value are
        header = self.options.header
        while True:
            start = self._line + 1
            try:
                fields = next(reader)
            except StopIteration:
                return
            except csv.Error as exc:
                raise BadRow(start, _csv_problem(str(exc))) from None
            if not fields:
                continue  # a blank line
            if header:
                header = False
                order = _header_order(start, fields)
                continue
            if len(fields) != 2:
                raise BadRow(start, f"expected 2 fields, key and value, but found {len(fields)}; a value "
                                    "holding a comma, a quote or a line break must be in double quotes")
            yield self._row(start, fields[order[0]], fields[order[1]])

    def _jsonl_rows(self) -> Iterator[tuple[int, int, bytes]]:
        for text in self._lines():
            if not text.strip():
                continue
            line = self._line
            fast = _exported_line(text, self.options.key_format)
            if fast is not None:
                yield self._row(line, *fast[:2], embedded=fast[2])
                continue
            try:
                members = _json_members(text)
            except RecursionError:
                raise BadRow(line, "the line's JSON is nested too deeply") from None
            except ValueError as exc:
                raise BadRow(line, str(exc)) from None
            found: dict[str, tuple[Any, str]] = {}
            for name, member, raw in members:
                if name not in ("key", "value"):
                    raise BadRow(line, f'unexpected member {json.dumps(name)}: a line holds "key" and "value"')
                if name in found:
                    raise BadRow(line, f'the member "{name}" appears twice')
                found[name] = member, raw
            for name in ("key", "value"):
                if name not in found:
                    raise BadRow(line, f'the member "{name}" is missing')
            (key, key_raw), (value, value_raw) = found["key"], found["value"]
            if self.options.key_format == "int" and isinstance(key, int | float) and not isinstance(key, bool):
                key = key_raw  # a number is fine as long as it is whole (JSON readers may round it)
            if not isinstance(key, str):
                example = '"2026-11-21T10:00:00Z"' if self.options.key_format == "timestamp" else '"42"'
                raise BadRow(line, f"the key is {_json_kind(key, key_raw)}; write it as a JSON string such as "
                                   f"{example}")
            if isinstance(value, str):
                yield self._row(line, key, value)
            else:
                # the text as written, whitespace aside: numbers keep their digits and strings their escapes
                yield self._row(line, key, values.compact_json(value_raw), embedded=True)

    def _row(self, line: int, key_text: str, value_text: str, embedded: bool = False) -> tuple[int, int, bytes]:
        try:
            key = parse_key(key_text, self.options.key_format)
        except ValueError as exc:
            raise BadRow(line, str(exc)) from None
        try:
            if embedded:  # a JSON document: its text, whatever backslashes it holds
                value = value_text.encode("utf-8")
                if len(value) > MAX_VALUE_BYTES:
                    raise ValueError(f"the value is {len(value):,} bytes; at most {MAX_VALUE_BYTES:,} (1 MiB) "
                                     "are allowed")
            else:
                value = parse_value(value_text)
        except (ValueError, UnicodeEncodeError) as exc:
            raise BadRow(line, str(exc)) from None
        return line, key, value


# csv.Error carries only a message, so its kind is told by words CPython's messages have used
# since Python 3.0; a message these do not match is shown as it is.
_CSV_PROBLEMS = (
    ("end of data", "a quoted value is not closed: its closing double quote is missing"),
    ("expected after", 'a quoted value goes on after its closing quote; write a double quote inside one as ""'),
    ("field limit", "a value is longer than any value can be (1 MiB, 2 MiB of hex)"),
)


def _csv_problem(message: str) -> str:
    lowered = message.lower()
    for words, problem in _CSV_PROBLEMS:
        if words in lowered:
            return problem
    return f"malformed csv: {message}"


def _header_order(line: int, fields: Sequence[str]) -> tuple[int, int]:
    names = [f.strip().lower() for f in fields]
    if sorted(names) != ["key", "value"]:
        raise BadRow(line, f"the header must name the columns key and value, not {', '.join(map(repr, fields))}")
    return names.index("key"), names.index("value")


def _not_json(name: str) -> Any:
    raise ValueError(f"the line is not JSON: {name} is not JSON")


_DECODER = json.JSONDecoder(parse_constant=_not_json)
_BLANK = re.compile(r"[ \t\n\r]*")


def _json_members(text: str) -> list[tuple[str, Any, str]]:
    """The members of the JSON object on a line, in order, duplicates kept: ``(name, value, raw)``,
    ``raw`` being the value's text as written. Raises ValueError saying what is wrong."""
    n = len(text)
    i = _BLANK.match(text).end()
    if i == n or text[i] != "{":
        raise ValueError('expected a JSON object {"key": ..., "value": ...}')
    i = _BLANK.match(text, i + 1).end()
    members: list[tuple[str, Any, str]] = []
    if text[i:i + 1] == "}":
        i += 1
    else:
        while True:
            if text[i:i + 1] != '"':
                raise _json_problem(text, i, "expected a member name in double quotes")
            name, i = _decode(text, i)
            i = _BLANK.match(text, i).end()
            if text[i:i + 1] != ":":
                raise _json_problem(text, i, "expected ':'")
            start = _BLANK.match(text, i + 1).end()
            value, i = _decode(text, start)
            members.append((name, value, text[start:i]))
            i = _BLANK.match(text, i).end()
            if text[i:i + 1] == ",":
                i = _BLANK.match(text, i + 1).end()
            elif text[i:i + 1] == "}":
                i += 1
                break
            else:
                raise _json_problem(text, i, "expected ',' or '}'")
    i = _BLANK.match(text, i).end()
    if i != n:
        raise _json_problem(text, i, "unexpected text after the object")
    return members


# The line an export writes, key first (a string or digits), value last; anything else, or a
# line this does not prove valid, takes the general path, which also words the errors.
_EXPORTED = re.compile(r'\{"key": ?("[^"\\]*"|\d+), ?"value": ?(.*)\}[ \t\r\n]*', re.DOTALL)
_WHITESPACE = frozenset(" \t\r\n")


def _exported_line(text: str, key_format: str) -> tuple[str, str, bool] | None:
    """``(key text, value text, embedded)`` of a line shaped as exports write it, else None.

    If the key token and the value text each parse, the line is exactly that two-member object.
    """
    m = _EXPORTED.fullmatch(text)
    if m is None:
        return None
    key, raw = m.group(1), m.group(2)
    if key[0] != '"' and key_format == "timestamp":
        return None  # a number where a timestamp belongs: the general path says so
    try:
        value = _DECODER.decode(raw)
    except (ValueError, RecursionError):
        return None  # not one JSON value (a third member, say): the general path says what is wrong
    if key[0] == '"':
        key = key[1:-1]
    if isinstance(value, str):
        return key, value, False
    if _WHITESPACE.isdisjoint(raw):
        return key, raw, True  # already compact: as written
    return key, values.compact_json(raw), True  # it decoded above


def _decode(text: str, at: int) -> tuple[Any, int]:
    try:
        return _DECODER.raw_decode(text, at)
    except json.JSONDecodeError as exc:
        raise _json_problem(text, exc.pos, exc.msg) from None


def _json_problem(text: str, at: int, message: str) -> ValueError:
    what = "the line ends" if at >= len(text.rstrip("\r\n")) else f"column {at + 1}"
    return ValueError(f"the line is not JSON: {message} ({what})")


def _json_kind(value: Any, raw: str) -> str:
    if isinstance(value, bool) or value is None:
        return raw
    if isinstance(value, int | float):
        return f"the number {raw}"
    return "an object" if isinstance(value, dict) else "an array"


# --- importing ------------------------------------------------------------------------------------


class Writer(Protocol):
    """What an import needs of a client: :meth:`raftkv.Client.put_many`."""

    def put_many(self, pairs: Any) -> int: ...


@dataclass
class _Batch:
    """Rows on their way to ``put_many``: one value per key, the last row's (whatever the client's
    own batching then does), and the input lines they came from."""

    pairs: dict[int, bytes]
    rows: int = 0
    size: int = 0
    first: int = 0
    last: int = 0
    read: float | None = None  # the share of the input read when it was sent

    def add(self, line: int, key: int, value: bytes) -> None:
        old = self.pairs.pop(key, None)
        if old is not None:
            self.size -= len(old) + ROW_OVERHEAD
        self.pairs[key] = value
        self.size += len(value) + ROW_OVERHEAD
        self.rows += 1
        self.first = self.first or line
        self.last = line


class CopyInterrupted(KeyboardInterrupt):
    """Ctrl-C stopped an import after ``rows`` were written; the rows of input lines ``first`` to
    ``last`` (None if none) were on their way and may have been partly written.

    It is a KeyboardInterrupt, so whatever handles Ctrl-C still does; :attr:`message` says how far
    the import got.
    """

    def __init__(self, rows: int, first: int | None = None, last: int | None = None) -> None:
        super().__init__(rows, first, last)
        self.rows = rows
        self.first = first
        self.last = last

    @property
    def message(self) -> str:
        """``10,000 rows written; lines 10,001-15,000 may have been partly written``."""
        done = f"{self.rows:,} row{'' if self.rows == 1 else 's'} written"
        if self.first is None or self.last is None:
            return done
        return f"{done}; {_span(self.first, self.last)} may have been partly written"

    def __str__(self) -> str:
        return self.message


def import_rows(client: Writer, rows: Iterable[tuple[int, int, bytes]], *, batch_rows: int = BATCH_ROWS,
                batch_bytes: int = BATCH_BYTES, progress: Progress | None = None,
                fraction: Callable[[], float | None] | None = None, cancel_wait: float | None = None) -> int:
    """Write ``rows`` (``(line, key, value)``, as :class:`RowReader` yields them) in batches through
    ``client.put_many``; returns the number of rows written.

    A batch holds at most ``batch_rows`` rows and at most ``batch_bytes`` bytes (values plus
    :data:`ROW_OVERHEAD` per row; a single larger row goes alone). One batch is written while the
    next is read, and a batch is sent only once the one before it succeeded, so at most two are
    in memory and a key repeated in the input ends with the value of its last row. A
    :class:`BadRow`, or an OSError reading the input, first writes the rows before it, then raises
    :class:`CopyError` saying so. A failed ``put_many`` (whatever it raised) raises
    :class:`CopyError` naming the lines of its batch, whose outcome is then unknown; nothing after
    it is sent. Ctrl-C (KeyboardInterrupt, which reaches this thread, not the writer's) waits up to
    ``cancel_wait`` seconds (None: :data:`CANCEL_WAIT`) for the batch being written, then raises
    :class:`CopyInterrupted`. Every
    error says how many rows were written. ``progress`` is called after every batch with the
    rows written and what ``fraction()`` said when that batch was sent.
    """
    if batch_rows < 1 or batch_bytes < 1:
        raise CopyError("batches need room for at least one row and one byte")
    written = 0
    # one writer thread: reading and parsing the next batch overlaps the cluster's work on this one
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="raftkv-import")
    sending: _Batch | None = None  # handed to the writer thread and not settled yet
    future: Future[int] | None = None  # its put_many

    def settle() -> None:
        nonlocal sending, future, written
        if sending is None or future is None:
            return
        sent = sending
        try:
            future.result()
        except Exception as exc:  # a RaftKVError, an OSError or a bug: the batch's outcome is unknown
            sending = future = None
            raise CopyError(f"writing the rows of {_span(sent.first, sent.last)} failed: {_describe(exc)}; "
                            f"{_written_before(written, 'them')}, and these {sent.rows:,} may or may not have "
                            "been", rows=written) from exc
        # one statement without a call in it, so that Ctrl-C cannot land between forgetting the
        # batch and counting it
        sending, future, written = None, None, written + sent.rows
        if progress is not None:
            progress(written, sent.read)

    def send(batch: _Batch) -> None:
        nonlocal sending, future
        settle()
        if batch.rows:
            batch.read = fraction() if fraction is not None else None
            sending = batch  # before the submit: from here on Ctrl-C counts it as maybe written
            future = pool.submit(client.put_many, list(batch.pairs.items()))

    last_line = 0  # the input line of the last row read
    try:
        batch = _Batch({})
        it = iter(rows)
        while True:
            try:
                line, key, value = next(it)
            except StopIteration:
                break
            except BadRow as bad:
                send(batch)  # everything before the bad row is written, nothing after it
                settle()
                raise CopyError(f"line {bad.line}: {bad.reason}; {_written_before(written, 'it')}, nothing "
                                "after it", rows=written, line=bad.line) from None
            except OSError as exc:  # the input failed (EIO, a network file gone): as for a bad row
                send(batch)
                settle()
                where = f"after line {last_line:,}" if last_line else "before its first row"
                raise CopyError(f"reading failed {where}: {exc.strerror or exc}; "
                                f"{_written_before(written, 'it')}, nothing after it", rows=written) from exc
            last_line = line
            if batch.rows and (batch.rows >= batch_rows or batch.size + len(value) + ROW_OVERHEAD > batch_bytes):
                send(batch)
                batch = _Batch({})
            batch.add(line, key, value)
        send(batch)
        settle()
    except KeyboardInterrupt:
        raise _cancelled(future, sending, written, CANCEL_WAIT if cancel_wait is None else cancel_wait) from None
    finally:
        # after an error nothing is running; after Ctrl-C a batch that outlived the wait goes on
        # in the background, and its lines are reported as maybe written
        pool.shutdown(wait=False, cancel_futures=True)
    return written


def _cancelled(future: Future[int] | None, sent: _Batch | None, written: int, wait: float) -> CopyInterrupted:
    """What Ctrl-C left: the rows written, once the batch on its way had up to ``wait`` seconds."""
    if sent is None:
        return CopyInterrupted(written)
    if future is not None:
        if future.cancel():
            return CopyInterrupted(written)  # still queued: none of it was sent
        try:
            future.result(timeout=wait)
        except (Exception, KeyboardInterrupt):  # still running, failed, or a second Ctrl-C: unknown
            pass
        else:
            return CopyInterrupted(written + sent.rows)
    return CopyInterrupted(written, sent.first, sent.last)


def _span(first: int, last: int) -> str:
    return f"line {first:,}" if first == last else f"lines {first:,}-{last:,}"


def _written_before(rows: int, what: str) -> str:
    if rows == 0:
        return f"no row before {what} was written"
    if rows == 1:
        return f"the 1 row before {what} was written"
    return f"the {rows:,} rows before {what} were written"


def import_file(client: Writer, path: str, options: CopyOptions, *, progress: Progress | None = None,
                batch_rows: int = BATCH_ROWS, batch_bytes: int = BATCH_BYTES) -> int:
    """Import the rows of the file at ``path`` (a file even if it is called ``-``); returns how many
    were written.

    Errors (an unreadable file, a bad row, a failed write) raise :class:`CopyError`, whose
    message starts with ``path`` and says how many rows were written before.
    """
    try:
        stream = open(os.path.expanduser(path), "rb")
    except OSError as exc:
        raise CopyError(f"cannot read {path}: {exc.strerror or exc}; no row was written") from None
    with stream:
        return import_stream(client, stream, path, options, progress=progress, batch_rows=batch_rows,
                             batch_bytes=batch_bytes)


def import_stream(client: Writer, stream: BinaryIO, name: str, options: CopyOptions, *,
                  progress: Progress | None = None, batch_rows: int = BATCH_ROWS,
                  batch_bytes: int = BATCH_BYTES) -> int:
    """Import the rows of the open byte ``stream`` (standard input, say), called ``name`` in
    messages; returns how many were written. Errors are as for :func:`import_file`."""
    reader = RowReader(stream, options)
    size = _regular_size(stream)

    def fraction() -> float | None:
        return None if not size else min(1.0, reader.bytes_read / size)

    try:
        return import_rows(client, reader, batch_rows=batch_rows, batch_bytes=batch_bytes, progress=progress,
                           fraction=fraction)
    except CopyError as exc:
        raise CopyError(f"{name}: {exc.message}", rows=exc.rows, line=exc.line) from exc.__cause__


def _regular_size(stream: Any) -> int | None:
    try:
        st = os.fstat(stream.fileno())
    except (OSError, AttributeError, ValueError):
        return None
    return st.st_size if stat.S_ISREG(st.st_mode) else None


# --- exporting ------------------------------------------------------------------------------------


class Reader(Protocol):
    """What an export needs of a client: :meth:`raftkv.Client.query`."""

    def query(self, statement: Any) -> Any: ...


def select_statement(query: str | ast.Statement) -> ast.Select | ast.ConstantSelect:
    """``query`` parsed (if text) and checked to be a SELECT, the only statement an export runs."""
    from .query import parse

    statement = parse(query) if isinstance(query, str) else query
    if not isinstance(statement, ast.Select | ast.ConstantSelect):
        raise CopyError(f"an export runs a SELECT, not {type(statement).__name__.upper()}")
    return statement


def export_rows(client: Reader, query: str | ast.Statement, stream: TextIO, options: CopyOptions, *,
                progress: Progress | None = None) -> int:
    """Run the SELECT ``query`` and write its rows to ``stream`` page by page; returns the row count.

    The columns are the query's: ``SELECT *`` gives ``key,value``, which an import reads back.
    Key columns (``key``, ``time_bucket(...)``, ``min(key)``...) are written as JSON strings in
    jsonl and, with ``key_format`` timestamp, as RFC 3339 text in both formats. A failure raises
    :class:`CopyError` saying how many rows were written.
    """
    statement = select_statement(query)
    result = client.query(statement)
    rows = 0

    def write(text: str) -> None:
        try:
            stream.write(text)
        except OSError as exc:
            raise CopyError(f"writing failed after {rows:,} rows: {exc.strerror or exc}", rows=rows) from exc

    try:
        columns = tuple(result.columns)
        render = _renderer(options, columns, values.key_columns(statement, columns))
        if options.format == "csv":
            head = render.end()  # the header line; pages then carry rows only
            if options.header:
                write(head)
        for page in result.pages():
            write(render.page(page))
            rows += len(page)
            if progress is not None:
                progress(rows, None)
    except CopyError:
        raise
    except Exception as exc:  # a RaftKVError, or anything else the client raised: say how far it got
        raise CopyError(f"the query failed after {rows:,} rows: {_describe(exc)}", rows=rows) from exc
    finally:
        result.close()
    return rows


def _renderer(options: CopyOptions, columns: Sequence[str], keys: frozenset[int]) -> values.Renderer:
    # exact: a JSON document is embedded only if an import reads back its stored bytes
    render: values.Renderer = (values.JsonRenderer(columns, keys, "string", exact=True) if options.format == "jsonl"
                               else values.CsvRenderer(columns))
    return values.KeysAsTimestamps(render, keys) if options.key_format == "timestamp" and keys else render


def export_file(client: Reader, query: str | ast.Statement, path: str, options: CopyOptions, *,
                progress: Progress | None = None) -> int:
    """Write the rows of ``query`` to the file at ``path`` (a file even if it is called ``-``);
    returns the count.

    A regular file is written under a new temporary name in its directory and renamed at the end
    (a symlink's target is replaced, keeping its mode), so a failed export leaves an existing file
    as it was and no partial one.
    """
    statement = select_statement(query)  # a wrong statement must not create the file
    rows = 0
    try:
        with _output(path) as stream:
            rows = export_rows(client, statement, stream, options, progress=progress)
    except CopyError as exc:
        raise CopyError(f"{path}: {exc.message}", rows=exc.rows) from exc.__cause__
    except OSError as exc:  # opening the file, or completing it
        after = f" after {rows:,} rows" if rows else ""
        raise CopyError(f"cannot write {path}{after}: {exc.strerror or exc}; no row was written to it",
                        rows=0) from None
    return rows


@contextmanager
def _output(path: str) -> Iterator[TextIO]:
    # a symlink's target is what gets replaced, not the link, and the temporary file goes beside it
    target = os.path.realpath(os.path.expanduser(path))
    try:
        st: os.stat_result | None = os.stat(target)
    except FileNotFoundError:
        st = None
    if st is not None and not stat.S_ISREG(st.st_mode):
        with open(target, "w", encoding="utf-8", newline="") as f:  # a device or a pipe: no rename
            yield f
        return
    directory, name = os.path.split(target)
    # an unpredictable name, created with O_EXCL (nobody can plant a link there) and mode 0666, from
    # which the kernel takes the umask away, as for any new file
    temp = os.path.join(directory, f".{name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with open(fd, "w", encoding="utf-8", newline="") as f:
            if st is not None:  # replacing a file: it keeps its mode
                os.fchmod(f.fileno(), stat.S_IMODE(st.st_mode))
            yield f
        os.replace(temp, target)
    finally:
        if os.path.lexists(temp):
            os.unlink(temp)


# --- COPY -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CopyReport:
    """What a COPY did: ``direction`` (``from`` or ``to``), ``path`` and ``rows`` written.

    It is shaped like a statement result without rows (``columns``, ``status``, ``pages``,
    ``close``), so the shell prints it as one: ``COPY 42``.
    """

    direction: str
    path: str
    rows: int
    columns: tuple[str, ...] = ()

    @property
    def status(self) -> str:
        """``COPY n``, as psql says."""
        return f"COPY {self.rows}"

    def pages(self) -> list[list[tuple[Any, ...]]]:
        """No rows."""
        return []

    def close(self) -> None:
        """Nothing to release."""


_LEADING_COPY = re.compile(r"(?:\s+|--[^\n]*(?:\n|$))*copy\b", re.IGNORECASE)


def is_copy(statement: Any) -> bool:
    """Whether ``statement`` (text or parsed) is a COPY, which the client runs itself."""
    if isinstance(statement, str):
        return _LEADING_COPY.match(statement) is not None
    return isinstance(statement, ast.Copy)


def run_copy(client: Any, statement: str | ast.Copy, *, progress: Progress | None = None,
             batch_rows: int = BATCH_ROWS, batch_bytes: int = BATCH_BYTES) -> CopyReport:
    """Run a COPY statement with ``client`` (a :class:`raftkv.Client`); the file is this process's.

    Raises :class:`~raftkv.errors.QueryError` if the text does not parse, and
    :class:`CopyError` if the copy fails.
    """
    from .query import parse

    copy = parse(statement) if isinstance(statement, str) else statement
    if not isinstance(copy, ast.Copy):
        raise CopyError(f"not a COPY statement: {type(copy).__name__.upper()}")
    options = CopyOptions.for_path(copy.path, copy.format, copy.header, copy.key_format)
    if copy.direction == "from":
        rows = import_file(client, copy.path, options, progress=progress, batch_rows=batch_rows,
                           batch_bytes=batch_bytes)
    else:
        assert copy.query is not None
        rows = export_file(client, copy.query, copy.path, options, progress=progress)
    return CopyReport(copy.direction, copy.path, rows)


def _describe(exc: BaseException) -> str:
    if not isinstance(exc, RaftKVError):
        return f"{type(exc).__name__}: {exc}"  # not the client's own error: its kind says most
    return exc.message if exc.code == "error" else f"{exc.code}: {exc.message}"

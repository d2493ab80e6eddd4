r"""Result formatting: pure functions and small stateful renderers, no terminal or I/O.

A renderer turns pages of rows into text one page at a time, so a result of any size streams:
the shell writes each page's text as soon as the page arrives. Every format shows every value
unambiguously (docs/query-language.md, "Output formats", is the user's description):

* **binary** (bytes that are not UTF-8) is PostgreSQL's bytea hex form, ``\x`` and two lower-case
  hex digits per byte (``\x00ff``), in every format (a JSON string in ``json``);
* **text** (UTF-8 bytes, or a ``str``) that starts with a backslash gets one more backslash in
  front, so no text reads as binary; nothing else about it changes in ``json`` and in ``csv``
  written to a file or pipe (programs want the exact text);
* what a terminal shows -- ``table``, ``vertical``, and ``csv`` on a terminal -- is escaped text:
  every backslash doubled, ``\n`` ``\r`` ``\t``, and ``\uXXXX`` for the other control and
  bidirectional-override characters, so that data can neither drive the terminal (an escape
  sequence that retitles the window, a carriage return that overwrites a line) nor be mistaken
  for other data; ``json`` writes those characters as ``\uXXXX`` escapes everywhere, which is
  the same JSON;
* in ``json``, a stored value that is a JSON document (UTF-8, strict JSON, not a bare string) is
  embedded as JSON, its whitespace outside strings removed; keys -- the integers of key columns
  -- are JSON strings by default (JavaScript and jq round integers above 2**53), or numbers;
* NULL is ``NULL`` on display, ``null`` in JSON and an empty unquoted field in CSV (an empty
  value is ``""``);
* a timestamp (a :class:`~raftkv.query.timestamps.Timestamp` from ``to_timestamp()``, or a key
  when keys are shown as timestamps) is RFC 3339 text with nanoseconds in every format, in the
  session's time zone: ``2026-11-21T10:00:00.000000000Z``.
"""

from __future__ import annotations

import unicodedata
from collections.abc import Collection, Sequence
from datetime import tzinfo
from typing import Any

from raftkv.query.timestamps import Timestamp, format_timestamp

# The value conventions (binary, plain text, escaping, JSON and CSV) live in raftkv.values, which
# bulk import and export share; their names stay importable from here.
from raftkv.values import JSON_KEYS as JSON_KEYS
from raftkv.values import KEY_STYLES as KEY_STYLES
from raftkv.values import CsvRenderer as CsvRenderer
from raftkv.values import JsonRenderer as JsonRenderer
from raftkv.values import KeysAsTimestamps as KeysAsTimestamps
from raftkv.values import Renderer as Renderer
from raftkv.values import Row as Row
from raftkv.values import binary as binary
from raftkv.values import csv_field as csv_field
from raftkv.values import escape as escape
from raftkv.values import is_bytes, text_of
from raftkv.values import json_document as json_document
from raftkv.values import json_text as json_text
from raftkv.values import plain_text as plain_text

FORMATS = ("table", "vertical", "json", "csv")
DISPLAY_FORMATS = frozenset({"table", "vertical"})
DEFAULT_MAX_CELL = 200  # table cells longer than this (in columns) are cut, ending in "…"
MIN_MAX_CELL = 4  # a cut cell keeps at least a few characters before its "…"
HEADER_LINES = 2  # a table header: the names and the rule under them






def display_value(value: Any, tz: tzinfo | None = None) -> str:
    """How a terminal shows one value (``table``, ``vertical``, ``csv`` on a terminal); ``tz`` is
    the time zone of timestamps (None: UTC)."""
    if value is None:
        return "NULL"
    if isinstance(value, Timestamp):  # before int: a Timestamp is one
        return format_timestamp(value, tz)
    if isinstance(value, bool):
        return "true" if value else "false"
    if is_bytes(value):
        text = text_of(value)
        return binary(bytes(value)) if text is None else escape(text)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return escape(str(value))




def text_width(text: str) -> int:
    """Terminal columns ``text`` takes: wide East Asian characters take 2, combining marks 0."""
    if text.isascii():
        return len(text)
    width = 0
    for ch in text:
        if unicodedata.combining(ch):
            continue
        width += 2 if unicodedata.east_asian_width(ch) in ("W", "F") else 1
    return width


def truncate(text: str, max_width: int) -> str:
    """``text`` cut to ``max_width`` columns, ending in "…" when something was cut."""
    if len(text) <= max_width and text_width(text) <= max_width:
        return text
    out, width = [], 0
    for ch in text:
        w = text_width(ch)
        if width + w > max_width - 1:
            break
        out.append(ch)
        width += w
    return "".join(out) + "…"


def _pad(text: str, width: int, right: bool) -> str:
    fill = " " * max(0, width - text_width(text))
    return fill + text if right else text + fill


def _is_number(value: Any) -> bool:
    # a timestamp is shown as text, so it is aligned as text
    return isinstance(value, (int, float)) and not isinstance(value, (bool, Timestamp))




class TableRenderer:
    """An aligned table, psql style, printed a page at a time.

    Column widths are the widest cell seen so far. When a later page needs wider columns, the
    header is printed again with the new widths, so a streamed table stays readable without
    holding all rows. A text or binary cell wider than ``max_cell`` columns is cut and ends in "…";
    :attr:`truncated` counts such cells (numbers and timestamps are never cut). With ``screen_lines`` (the height of a screen, or 0) the
    header is also printed again at the top of every screenful of lines, so that a table paged
    or scrolled past one screen still shows its column names.
    """

    def __init__(self, columns: Sequence[str], max_cell: int = DEFAULT_MAX_CELL, tz: tzinfo | None = None,
                 screen_lines: int = 0) -> None:
        self.columns = [escape(c) for c in columns]
        self.max_cell = max_cell
        self.tz = tz
        self.widths = [text_width(c) for c in self.columns]
        self._printed_header = False
        self.truncated = 0
        # a screen must hold the header and at least one row, else repeating it shows no row at all
        self.screen_lines = screen_lines if screen_lines > HEADER_LINES else 0
        self._since_header = 0  # lines printed since the top of the last header

    def _header(self) -> list[str]:
        names = []
        for name, width in zip(self.columns, self.widths, strict=True):
            left = (width - text_width(name)) // 2
            names.append(" " * left + _pad(name, width - left, False))
        return [self._line(names), "-+-".join("-" * w for w in self.widths).join("--")]

    @staticmethod
    def _line(cells: Sequence[str]) -> str:
        return (" " + " | ".join(cells)).rstrip()

    def page(self, rows: Sequence[Row]) -> str:
        """The page's rows, preceded by the header if it is new or the widths grew."""
        if not rows:
            return ""
        cells = [[self._cell(v) for v in row] for row in rows]
        grown = False
        for row in cells:
            for i, cell in enumerate(row):
                w = text_width(cell)
                if w > self.widths[i]:
                    self.widths[i] = w
                    grown = True
        lines: list[str] = []
        if not self._printed_header or grown:
            if self._printed_header:
                lines.append("")
            lines += self._header()
            self._printed_header = True
            self._since_header = HEADER_LINES
        for raw, row in zip(rows, cells, strict=True):
            if self.screen_lines and self._since_header >= self.screen_lines:
                lines += self._header()
                self._since_header = HEADER_LINES
            lines.append(self._line([_pad(c, w, _is_number(v))
                                     for c, w, v in zip(row, self.widths, raw, strict=True)]))
            self._since_header += 1
        return "\n".join(lines) + "\n"

    def _cell(self, value: Any) -> str:
        text = display_value(value, self.tz)
        if not isinstance(value, (str, bytes, bytearray, memoryview)):
            return text  # a number or timestamp cut short would read as another one
        cut = truncate(text, self.max_cell)
        if cut != text:
            self.truncated += 1
        return cut

    def end(self) -> str:
        """The header alone if no row was printed."""
        return "" if self._printed_header else "\n".join(self._header()) + "\n"


class VerticalRenderer:
    """Expanded display: one ``-[ RECORD n ]-`` block per row, one ``column | value`` line per field."""

    def __init__(self, columns: Sequence[str], tz: tzinfo | None = None) -> None:
        self.columns = [escape(c) for c in columns]
        self._label = max((text_width(c) for c in self.columns), default=0)
        self._count = 0
        self.tz = tz

    def page(self, rows: Sequence[Row]) -> str:
        """Every row of the page as a record block."""
        lines: list[str] = []
        for row in rows:
            self._count += 1
            values = [display_value(v, self.tz) for v in row]
            head = f"-[ RECORD {self._count} ]"
            rule = self._label + 3 + min(max((text_width(v) for v in values), default=0), 60)
            lines.append(head + "-" * max(1, rule - len(head)))
            lines += [f"{_pad(c, self._label, False)} | {v}".rstrip()
                      for c, v in zip(self.columns, values, strict=True)]
        return "\n".join(lines) + "\n" if lines else ""

    def end(self) -> str:
        """Nothing: an empty result shows only its footer."""
        return ""




def renderer(fmt: str, columns: Sequence[str], max_cell: int = DEFAULT_MAX_CELL, *, tty: bool = False,
             key_columns: Collection[int] = (), json_keys: str = "string", keys: str = "int",
             tz: tzinfo | None = None, screen_lines: int = 0) -> Renderer:
    """A renderer of format ``fmt`` (one of :data:`FORMATS`) for a result with these columns.

    ``tty``: the output goes to a terminal (only ``csv`` differs: it escapes text there);
    ``key_columns`` and ``json_keys``: see :class:`JsonRenderer`; ``keys`` (one of
    :data:`KEY_STYLES`): ``"timestamp"`` shows the key columns as timestamps in every format;
    ``tz``: the time zone of timestamps (None: UTC); ``screen_lines``: the table header is repeated
    every screenful of this many lines (0: printed once, see :class:`TableRenderer`).
    """
    if keys not in KEY_STYLES:
        raise ValueError(f"unknown key style {keys!r}; choose one of {', '.join(KEY_STYLES)}")
    r: Renderer
    if fmt == "table":
        r = TableRenderer(columns, max_cell, tz, screen_lines)
    elif fmt == "vertical":
        r = VerticalRenderer(columns, tz)
    elif fmt == "json":
        r = JsonRenderer(columns, key_columns, json_keys, tz)
    elif fmt == "csv":
        r = CsvRenderer(columns, tty, tz)
    else:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")
    return KeysAsTimestamps(r, key_columns) if keys == "timestamp" and key_columns else r


def render_all(fmt: str, columns: Sequence[str], pages: Sequence[Sequence[Row]],
               max_cell: int = DEFAULT_MAX_CELL, **options: Any) -> str:
    """A whole result as one string (what the shell prints page by page); ``options`` as for
    :func:`renderer`."""
    r = renderer(fmt, columns, max_cell, **options)
    return "".join(r.page(p) for p in pages) + r.end()


def cut_note(cells: int, max_cell: int) -> str:
    """The line saying that a table cut ``cells`` values to ``max_cell`` columns."""
    values = "value was" if cells == 1 else "values were"
    return (f"note: {cells:,} {values} cut to {max_cell} columns (ending in …); "
            "\\colwidth N to change, or \\x for whole values")


def format_elapsed(seconds: float) -> str:
    """``0.4 ms``, ``12.3 ms``, ``1.25 s`` or ``2 min 3.4 s``."""
    if seconds < 1:
        return f"{seconds * 1000:.1f} ms"
    if seconds < 60:
        return f"{seconds:.2f} s"
    minutes, rest = divmod(seconds, 60)
    return f"{int(minutes)} min {rest:.1f} s"


def footer(status: str, rows: int | None, elapsed: float | None) -> str:
    """What follows a statement's output.

    ``(3 rows, 2.1 ms)`` for a statement with a result, else its status: ``INSERT 3 (2.1 ms)``.
    ``rows`` None means the statement returns no rows; ``elapsed`` None leaves the time out.
    """
    time = None if elapsed is None else format_elapsed(elapsed)
    if rows is not None:
        count = f"{rows} row" + ("" if rows == 1 else "s")
        return f"({count}, {time})" if time else f"({count})"
    return f"{status} ({time})" if time else status

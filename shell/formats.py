"""Result formatting: pure functions and small stateful renderers, no terminal or I/O.

A renderer turns pages of rows into text one page at a time, so a result of any size streams:
the shell writes each page's text as soon as the page arrives. Two kinds of format exist:

* display formats (``table``, ``vertical``) are for people: bytes that are valid UTF-8 show as
  text with control characters escaped (``\\n``, ``\\x1b``), other bytes as ``x'hex'``, and
  NULL as ``NULL``;
* data formats (``json`` lines, ``csv``) are for programs: text is carried exactly (JSON escapes
  what it must, CSV quotes), non-UTF-8 bytes become the string ``x'hex'``, NULL is ``null`` in
  JSON and an empty unquoted field in CSV (an empty value is ``""``).
"""

from __future__ import annotations

import json
import math
import unicodedata
from collections.abc import Sequence
from typing import Any, Protocol

FORMATS = ("table", "vertical", "json", "csv")
DISPLAY_FORMATS = frozenset({"table", "vertical"})
DEFAULT_MAX_CELL = 200  # table cells longer than this (in columns) are cut, ending in "…"

Row = Sequence[Any]

# Characters that would move the cursor, recolour the terminal or reorder text if printed raw.
_ESCAPES: dict[int, str] = {c: f"\\x{c:02x}" for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t"})
_ESCAPES.update({c: f"\\u{c:04x}" for c in [*range(0x202A, 0x202F), *range(0x2066, 0x206A)]})


def escape(text: str) -> str:
    """``text`` with control and bidirectional-override characters written as escapes."""
    return text.translate(_ESCAPES)


def hex_bytes(data: bytes) -> str:
    """Bytes as the query language writes them: ``x'00ff'``."""
    return f"x'{data.hex()}'"


def _bytes_text(data: bytes) -> str | None:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def display_value(value: Any) -> str:
    """How the display formats show one value."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        text = _bytes_text(data)
        return hex_bytes(data) if text is None else escape(text)
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, int):
        return str(value)
    return escape(str(value))


def json_value(value: Any) -> Any:
    """One value as a JSON-ready object (bytes as text or ``x'hex'``, non-finite floats as null)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        text = _bytes_text(data)
        return hex_bytes(data) if text is None else text
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return str(value)


def csv_field(value: Any) -> str:
    """One value as a CSV field (RFC 4180 quoting; NULL is an empty unquoted field)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, (bytes, bytearray, memoryview)):
        data = bytes(value)
        decoded = _bytes_text(data)
        text = hex_bytes(data) if decoded is None else decoded
    elif isinstance(value, float):
        text = repr(value)
    else:
        text = str(value)
    # quote an empty string too, so that it differs from NULL
    if text == "" or any(c in text for c in ',"\r\n') or text != text.strip(" "):
        return '"' + text.replace('"', '""') + '"'
    return text


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
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class Renderer(Protocol):
    """Turns a result into text page by page."""

    def page(self, rows: Sequence[Row]) -> str:
        """Text for the next page of rows (may be empty)."""
        ...

    def end(self) -> str:
        """Text after the last page (e.g. a table header when there were no rows)."""
        ...


class TableRenderer:
    """An aligned table, psql style, printed a page at a time.

    Column widths are the widest cell seen so far. When a later page needs wider columns, the
    header is printed again with the new widths, so a streamed table stays readable without
    holding all rows.
    """

    def __init__(self, columns: Sequence[str], max_cell: int = DEFAULT_MAX_CELL) -> None:
        self.columns = [escape(c) for c in columns]
        self.max_cell = max_cell
        self.widths = [text_width(c) for c in self.columns]
        self._printed_header = False

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
        cells = [[truncate(display_value(v), self.max_cell) for v in row] for row in rows]
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
        for raw, row in zip(rows, cells, strict=True):
            lines.append(self._line([_pad(c, w, _is_number(v))
                                     for c, w, v in zip(row, self.widths, raw, strict=True)]))
        return "\n".join(lines) + "\n"

    def end(self) -> str:
        """The header alone if no row was printed."""
        return "" if self._printed_header else "\n".join(self._header()) + "\n"


class VerticalRenderer:
    """Expanded display: one ``-[ RECORD n ]-`` block per row, one ``column | value`` line per field."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.columns = [escape(c) for c in columns]
        self._label = max((text_width(c) for c in self.columns), default=0)
        self._count = 0

    def page(self, rows: Sequence[Row]) -> str:
        """Every row of the page as a record block."""
        lines: list[str] = []
        for row in rows:
            self._count += 1
            values = [display_value(v) for v in row]
            head = f"-[ RECORD {self._count} ]"
            rule = self._label + 3 + min(max((text_width(v) for v in values), default=0), 60)
            lines.append(head + "-" * max(1, rule - len(head)))
            lines += [f"{_pad(c, self._label, False)} | {v}".rstrip()
                      for c, v in zip(self.columns, values, strict=True)]
        return "\n".join(lines) + "\n" if lines else ""

    def end(self) -> str:
        """Nothing: an empty result shows only its footer."""
        return ""


class JsonRenderer:
    """JSON lines: one object per row, keyed by column name (a repeated name gets ``_2``, ...)."""

    def __init__(self, columns: Sequence[str]) -> None:
        self.keys = _unique(columns)

    def page(self, rows: Sequence[Row]) -> str:
        """One line per row."""
        return "".join(json.dumps(dict(zip(self.keys, map(json_value, row), strict=True)),
                                  ensure_ascii=False) + "\n" for row in rows)

    def end(self) -> str:
        """Nothing."""
        return ""


class CsvRenderer:
    """CSV with a header line; lines end in ``\\n``."""

    def __init__(self, columns: Sequence[str]) -> None:
        self._header = ",".join(csv_field(c) for c in columns) + "\n"
        self._printed = False

    def _head(self) -> str:
        if self._printed:
            return ""
        self._printed = True
        return self._header

    def page(self, rows: Sequence[Row]) -> str:
        """The header (first time) and one line per row."""
        return self._head() + "".join(",".join(map(csv_field, row)) + "\n" for row in rows)

    def end(self) -> str:
        """The header alone if there were no rows."""
        return self._head()


def _unique(names: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for name in names:
        seen[name] = seen.get(name, 0) + 1
        out.append(name if seen[name] == 1 else f"{name}_{seen[name]}")
    return out


def renderer(fmt: str, columns: Sequence[str], max_cell: int = DEFAULT_MAX_CELL) -> Renderer:
    """A renderer of format ``fmt`` (one of :data:`FORMATS`) for a result with these columns."""
    if fmt == "table":
        return TableRenderer(columns, max_cell)
    if fmt == "vertical":
        return VerticalRenderer(columns)
    if fmt == "json":
        return JsonRenderer(columns)
    if fmt == "csv":
        return CsvRenderer(columns)
    raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}")


def render_all(fmt: str, columns: Sequence[str], pages: Sequence[Sequence[Row]],
               max_cell: int = DEFAULT_MAX_CELL) -> str:
    """A whole result as one string (what the shell prints page by page)."""
    r = renderer(fmt, columns, max_cell)
    return "".join(r.page(p) for p in pages) + r.end()


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

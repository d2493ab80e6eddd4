r"""How a stored value is written as text, and read back: the conventions shared by the shell's
output (shell/formats.py) and by bulk import and export (raftkv/bulk.py).

* **binary** (bytes that are not UTF-8) is PostgreSQL's bytea hex form, ``\x`` and two lower-case
  hex digits per byte (``\x00ff``), in every format (a JSON string in json);
* **text** (UTF-8 bytes, or a ``str``) that starts with a backslash gets one more backslash in
  front, so no text reads as binary (:func:`plain_text`); :func:`parse_value` undoes both;
* :func:`escape` is the reversible escaping of text for a terminal;
* in json, a stored value that is a JSON document is embedded as JSON (:func:`json_document`);
  keys -- the integers of key columns (:func:`key_columns`) -- are JSON strings or numbers;
* the csv and json lines renderers write rows in these conventions, a page at a time.

docs/query-language.md ("Output formats" and "COPY") is the user's description. Nothing here
touches a terminal or a file.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Sequence
from datetime import tzinfo
from typing import Any, Protocol

from .keys import MAX_VALUE_BYTES
from .query.literals import shorten
from .query.timestamps import MAX_NS, MIN_NS, Timestamp, format_timestamp

JSON_KEYS = ("string", "number")  # how the json format writes keys
KEY_STYLES = ("int", "timestamp")  # how every format shows keys: integers, or RFC 3339 timestamps
KEY_COLUMN_NAMES = frozenset({"key", "first_key", "last_key"})  # SHOW SHARDS, SPLIT SHARD

Row = Sequence[Any]

# Characters that would move the cursor, recolour or retitle the terminal (C0, DEL, C1: a UTF-8
# terminal may take U+009B as CSI) or reorder the text around them (bidirectional controls).
_UNSAFE = [*range(0x20), 0x7F, *range(0x80, 0xA0), *range(0x202A, 0x202F), *range(0x2066, 0x206A)]
_ESCAPES: dict[int, str] = {c: f"\\u{c:04x}" for c in _UNSAFE}
_ESCAPES.update({ord("\n"): "\\n", ord("\r"): "\\r", ord("\t"): "\\t", ord("\\"): "\\\\"})
# json.dumps already escapes C0; these it leaves raw. Valid JSON holds them only inside strings,
# where \uXXXX means the same character, so a whole line can be translated.
_JSON_ESCAPES: dict[int, str] = {c: f"\\u{c:04x}" for c in _UNSAFE if c >= 0x20}
# a JSON string (unrolled, so a 1 MiB value does not recurse), or whitespace between tokens
_JSON_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[ \t\n\r]+')
# the characters a json line translates to \uXXXX: a document holding one is not its own text
_JSON_TRANSLATED = re.compile("[" + "".join(map(chr, _JSON_ESCAPES)) + "]")
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")


def escape(text: str) -> str:
    r"""``text`` as a terminal may show it: backslashes doubled, ``\n`` ``\r`` ``\t``, and
    ``\uXXXX`` for other control and bidirectional-override characters (a reversible escape)."""
    return text.translate(_ESCAPES)


def binary(data: bytes) -> str:
    r"""Bytes in PostgreSQL's bytea hex form: ``\x00ff`` (the query language's ``x'00ff'``)."""
    return "\\x" + data.hex()


def plain_text(text: str) -> str:
    r"""Text as the data formats carry it: unchanged, except that a leading backslash is doubled,
    so that text never reads as :func:`binary` (``\x41`` the text is ``\\x41``)."""
    return "\\" + text if text.startswith("\\") else text


def text_of(value: Any) -> str | None:
    """The text of a ``str``, or of bytes that are UTF-8; None for binary."""
    if isinstance(value, str):
        return value
    try:
        return bytes(value).decode("utf-8")
    except UnicodeDecodeError:
        return None


def is_bytes(value: Any) -> bool:
    """Whether ``value`` is a stored value's bytes (``bytes``, ``bytearray`` or ``memoryview``)."""
    return isinstance(value, (bytes, bytearray, memoryview))


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def json_document(text: str) -> str | None:
    """``text`` without its insignificant whitespace if it is a JSON document to embed, else None.

    A document is strict JSON (no ``NaN`` or ``Infinity``, as the query language's JSON fields)
    and not a bare string: a stored ``"hi"`` is embedded as the text ``"hi"``, because a JSON
    string in the output already means stored text. Numbers keep their digits as written.
    """
    stripped = text.lstrip(" \t\n\r")
    if not stripped or stripped[0] == '"':
        return None
    try:
        json.loads(text, parse_constant=_reject_constant)
    except (ValueError, RecursionError):
        return None
    return compact_json(text)


def compact_json(text: str) -> str:
    """The JSON ``text`` (already known to parse) without its insignificant whitespace."""
    return _JSON_TOKEN.sub(lambda m: m.group() if m.group()[0] == '"' else "", text)


def json_text(value: Any, *, key: bool = False, json_keys: str = "string", tz: tzinfo | None = None,
              exact: bool = False) -> str:
    """One value as JSON text.

    ``key`` says the value is a key: an int is then a JSON string when ``json_keys`` is
    ``"string"``. Bytes are embedded JSON (:func:`json_document`), a JSON string of their text
    (:func:`plain_text`), or of :func:`binary` when they are not UTF-8. Non-finite floats are null.
    A timestamp is a JSON string of its RFC 3339 text in ``tz`` (None: UTC).
    Control characters outside C0 are left for the line's final translation (:class:`JsonRenderer`).
    With ``exact`` (bulk export) a document is embedded only if it is its own :func:`json_document`
    and holds no character that translation changes, so that an import reads back the stored
    bytes; any other document is a JSON string of its text.
    """
    if value is None:
        return "null"
    if isinstance(value, Timestamp):
        return json.dumps(format_timestamp(value, tz))
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return f'"{value}"' if key and json_keys == "string" else str(value)
    if isinstance(value, float):
        return json.dumps(value) if math.isfinite(value) else "null"
    if is_bytes(value):
        text = text_of(value)
        if text is None:
            return json.dumps(binary(bytes(value)))
        document = json_document(text)
        if document is not None and (not exact or (document == text and not _JSON_TRANSLATED.search(text))):
            return document
        return json.dumps(plain_text(text), ensure_ascii=False)
    return json.dumps(plain_text(str(value)), ensure_ascii=False)


def csv_field(value: Any, tty: bool = False, tz: tzinfo | None = None) -> str:
    """One value as a CSV field (RFC 4180 quoting; NULL is an empty unquoted field).

    On a terminal (``tty``) text is escaped as :func:`display_value` does; otherwise it is the
    exact text (:func:`plain_text`), which a file or a program wants. A timestamp is its RFC 3339
    text in ``tz`` (None: UTC).
    """
    if value is None:
        return ""
    if isinstance(value, Timestamp):
        text = format_timestamp(value, tz)
    elif isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, float):
        text = repr(value)
    elif isinstance(value, int):
        text = str(value)
    else:
        decoded = text_of(value) if is_bytes(value) else str(value)
        if decoded is None:
            text = binary(bytes(value))
        else:
            text = escape(decoded) if tty else plain_text(decoded)
    # quote an empty string too, so that it differs from NULL
    if text == "" or any(c in text for c in ',"\r\n') or text != text.strip(" "):
        return '"' + text.replace('"', '""') + '"'
    return text


class Renderer(Protocol):
    """Turns a result into text page by page."""

    def page(self, rows: Sequence[Row]) -> str:
        """Text for the next page of rows (may be empty)."""
        ...

    def end(self) -> str:
        """Text after the last page (e.g. a table header when there were no rows)."""
        ...


class JsonRenderer:
    """JSON lines: one object per row, keyed by column name (a repeated name gets ``_2``, ...).

    ``key_columns`` are the indexes of the columns that hold keys; ``json_keys`` (one of
    :data:`JSON_KEYS`) says whether their integers are written as strings or numbers; ``tz`` is
    the time zone of timestamps; ``exact``: embed only documents that read back byte for byte
    (:func:`json_text`), as a bulk export must.
    """

    def __init__(self, columns: Sequence[str], key_columns: Collection[int] = (),
                 json_keys: str = "string", tz: tzinfo | None = None, exact: bool = False) -> None:
        if json_keys not in JSON_KEYS:
            raise ValueError(f"unknown json key style {json_keys!r}; choose one of {', '.join(JSON_KEYS)}")
        self.names = [json.dumps(name, ensure_ascii=False) + ": " for name in _unique(columns)]
        self.is_key = [i in key_columns for i in range(len(columns))]
        self.json_keys = json_keys
        self.tz = tz
        self.exact = exact

    def line(self, row: Row) -> str:
        """One row as a JSON object on one line."""
        fields = [name + json_text(v, key=k, json_keys=self.json_keys, tz=self.tz, exact=self.exact)
                  for name, k, v in zip(self.names, self.is_key, row, strict=True)]
        return ("{" + ", ".join(fields) + "}").translate(_JSON_ESCAPES)

    def page(self, rows: Sequence[Row]) -> str:
        """One line per row."""
        return "".join(self.line(row) + "\n" for row in rows)

    def end(self) -> str:
        """Nothing."""
        return ""


class CsvRenderer:
    """CSV with a header line; lines end in ``\\n``. ``tty``: the text is for a terminal (escaped)."""

    def __init__(self, columns: Sequence[str], tty: bool = False, tz: tzinfo | None = None) -> None:
        self.tty = tty
        self.tz = tz
        self._header = ",".join(csv_field(c, tty) for c in columns) + "\n"
        self._printed = False

    def _head(self) -> str:
        if self._printed:
            return ""
        self._printed = True
        return self._header

    def page(self, rows: Sequence[Row]) -> str:
        """The header (first time) and one line per row."""
        return self._head() + "".join(",".join(csv_field(v, self.tty, self.tz) for v in row) + "\n" for row in rows)

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


class KeysAsTimestamps:
    """Wraps a renderer so that the integers of ``key_columns`` reach it as timestamps."""

    def __init__(self, inner: Renderer, key_columns: Collection[int]) -> None:
        self.inner = inner
        self.key_columns = frozenset(key_columns)

    def _convert(self, row: Row) -> Row:
        # only ints in range: NULL (min(key) of no rows) and anything unexpected stay as they are
        return tuple(Timestamp(v) if i in self.key_columns and type(v) is int and MIN_NS <= v <= MAX_NS else v
                     for i, v in enumerate(row))

    def page(self, rows: Sequence[Row]) -> str:
        """The inner renderer's page, keys converted."""
        return self.inner.page([self._convert(row) for row in rows])

    def end(self) -> str:
        """The inner renderer's end."""
        return self.inner.end()

    @property
    def truncated(self) -> int:
        """Cells the inner renderer cut (0 if it cuts none)."""
        return int(getattr(self.inner, "truncated", 0))


def parse_value(text: str) -> bytes:
    r"""The bytes of a value as the data formats write it (the inverse of :func:`binary` and
    :func:`plain_text`): ``\x`` and hex digits is binary, a leading ``\\`` stands for one
    backslash, anything else is the text itself. Raises ValueError with a sentence saying what is
    wrong."""
    if text.startswith("\\x"):
        digits = text[2:]
        if not _HEX.fullmatch(digits):
            raise ValueError(f"the value {shown(text)} starts with \\x, which marks binary as hex digits, but "
                             "the rest is not an even number of hex digits; a text value that starts with a "
                             "backslash is written with one more (\\\\x...)")
        data = bytes.fromhex(digits)
    else:
        try:
            data = (text[1:] if text.startswith("\\\\") else text).encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("the value holds a lone surrogate (\\ud800-\\udfff), which no UTF-8 text can") from None
    if len(data) > MAX_VALUE_BYTES:
        raise ValueError(f"the value is {len(data):,} bytes; at most {MAX_VALUE_BYTES:,} (1 MiB) are allowed")
    return data


def shown(text: str, limit: int = 40) -> str:
    """``text`` quoted and shortened for an error message."""
    return repr(shorten(text, limit))


def key_columns(statement: Any, columns: Sequence[str]) -> frozenset[int]:
    """Indexes of the columns of ``statement``'s result that hold keys (written as keys are).

    In a SELECT they are ``key`` (also from ``*``) under any alias, ``time_bucket(w, key)`` and
    ``min(key)``/``max(key)``; in GET the first column; elsewhere (SHOW SHARDS, SPLIT SHARD) the
    columns named ``key``, ``first_key`` or ``last_key``, which is also the guess when the
    statement cannot be read.
    """
    from .query import ast as q  # the parser loads lark, which a node process never needs
    from .query import parse

    by_name = frozenset(i for i, name in enumerate(columns) if name in KEY_COLUMN_NAMES)
    try:
        st = parse(statement) if isinstance(statement, str) else statement
    except Exception:  # best effort: naming the key columns must not fail a statement that ran
        return by_name
    if isinstance(st, q.Get):
        return frozenset({0}) if columns else frozenset()
    if isinstance(st, q.ConstantSelect):
        return frozenset()  # constants: SELECT 5 AS key is no key
    if not isinstance(st, q.Select):
        return by_name
    key = q.Column("key")
    flags: list[bool] = []
    for item in st.items:
        e = item.expr
        if isinstance(e, q.Star):
            flags += [True, False]  # key, value
        elif isinstance(e, q.Call):
            flags.append(e.name == "time_bucket" or (e.name in ("min", "max") and e.args == (key,)))
        else:
            flags.append(e == key)
    if len(flags) != len(columns):
        return by_name  # not the statement this result came from
    return frozenset(i for i, flag in enumerate(flags) if flag)

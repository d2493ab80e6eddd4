"""JSON field names seen in recent results, for completing ``value->'...'``.

The shell shows every page of rows to :meth:`RecentFields.observe`, which reads the JSON objects
in the ``value`` column of the first few rows of the page and remembers their field names, nested
ones under their path (``value->'loc'->'lat'``). Memory and work are bounded: a few rows per
page, small values only, a few levels deep, and at most :data:`MAX_NAMES` names, the least
recently seen forgotten first.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

MAX_NAMES = 500
ROWS_PER_PAGE = 32  # rows read per page: a 200k-row result costs a few thousand parses at most
MAX_VALUE_BYTES = 16 * 1024  # a bigger document is skipped rather than parsed for completion
MAX_DEPTH = 3
MAX_NAME_CHARS = 64
VALUE_COLUMN = "value"

Path = tuple[str, ...]


class RecentFields:
    """Field names of the JSON objects in recent rows, by path from ``value``."""

    def __init__(self, max_names: int = MAX_NAMES) -> None:
        self.max_names = max_names
        self._seen: OrderedDict[tuple[Path, str], None] = OrderedDict()  # oldest first

    def __len__(self) -> int:
        return len(self._seen)

    def observe(self, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
        """Remember the field names of JSON objects in the ``value`` column of ``rows``."""
        try:
            at = list(columns).index(VALUE_COLUMN)
        except ValueError:
            return  # a projection names fields itself; only whole values show their structure
        for row in rows[:ROWS_PER_PAGE]:
            document = _json_object(row[at] if at < len(row) else None)
            if document is not None:
                self._walk(document, ())

    def names(self, path: Path = ()) -> list[str]:
        """Field names seen under ``path`` (``()``: top level), sorted."""
        return sorted(name for (p, name) in self._seen if p == path)

    def _walk(self, document: dict[Any, Any], path: Path) -> None:
        for name, inner in document.items():
            if not isinstance(name, str) or len(name) > MAX_NAME_CHARS or not name.isprintable():
                continue
            entry = (path, name)
            self._seen[entry] = None
            self._seen.move_to_end(entry)
            if len(self._seen) > self.max_names:
                self._seen.popitem(last=False)
            if isinstance(inner, dict) and len(path) + 1 < MAX_DEPTH:
                self._walk(inner, (*path, name))


def _json_object(value: Any) -> dict[Any, Any] | None:
    """``value`` parsed, if it is a small JSON object (stored as bytes or text)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        if len(value) > MAX_VALUE_BYTES:
            return None
        raw = bytes(value)
        if not raw.lstrip()[:1] == b"{":
            return None
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            return None
    elif isinstance(value, str):
        if len(value) > MAX_VALUE_BYTES or value.lstrip()[:1] != "{":
            return None
        text = value
    else:
        return None
    try:
        document = json.loads(text)
    except (ValueError, RecursionError):
        return None
    return document if isinstance(document, dict) else None

"""SQL LIKE matching without regex backtracking.

``%`` matches any run (including none), ``_`` exactly one character (one byte when matching
bytes) and a backslash makes the next character literal. The pattern is cut at each ``%`` into
fixed-length segments; the first must match at the start, the last at the end, and the others
are found left to right, each at its leftmost place. Because every segment has a fixed length
the leftmost choice is always safe, so a match costs at most one pass of ``find`` per segment
(segments containing ``_`` use a regex of literals and ``.`` only, which cannot blow up).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from ..errors import QueryError

Text = str | bytes


def compile_like(pattern: Text) -> Callable[[Text], bool]:
    """A predicate telling whether a str (or bytes, for a bytes pattern) matches ``pattern``."""
    segments = [_segment(parts, pattern[:0]) for parts in _split(pattern)]
    if len(segments) == 1:
        only = segments[0]
        return lambda text: len(text) == only.length and only.match_at(text, 0)
    head, middle, tail = segments[0], [s for s in segments[1:-1] if s.length], segments[-1]
    fixed = head.length + tail.length

    def like(text: Text) -> bool:
        end = len(text) - tail.length
        if len(text) < fixed or not head.match_at(text, 0) or not tail.match_at(text, end):
            return False
        pos = head.length
        for seg in middle:
            pos = seg.find(text, pos, end)
            if pos < 0:
                return False
            pos += seg.length
        return True

    return like


def _split(pattern: Text) -> list[list[Text | None]]:
    """Segments between unescaped ``%``; each a list of one-character strings, None for ``_``."""
    percent, under, escape = ("%", "_", "\\") if isinstance(pattern, str) else (b"%", b"_", b"\\")
    segments: list[list[Text | None]] = [[]]
    i = 0
    while i < len(pattern):
        c = pattern[i:i + 1]
        if c == escape:
            i += 1
            if i == len(pattern):
                raise QueryError("LIKE pattern ends with a lone backslash; write \\\\ for a backslash")
            segments[-1].append(pattern[i:i + 1])
        elif c == percent:
            segments.append([])
        else:
            segments[-1].append(None if c == under else c)
        i += 1
    return segments


class _Segment(NamedTuple):
    """A fixed-length piece of a pattern, with its two ways of matching."""

    length: int
    match_at: Callable[[Text, int], bool]  # does it match at this offset?
    find: Callable[[Text, int, int], int]  # leftmost offset of a match inside [start, end), or -1


def _segment(parts: list[Text | None], empty: Text) -> _Segment:
    if None not in parts:
        literal = empty.join(parts)
        return _Segment(len(parts), lambda text, at: text.startswith(literal, at),
                        lambda text, start, end: text.find(literal, start, end))
    dot = "." if isinstance(empty, str) else b"."
    regex = re.compile(empty.join(dot if p is None else re.escape(p) for p in parts), re.DOTALL)
    return _Segment(len(parts), lambda text, at: regex.match(text, at) is not None,
                    lambda text, start, end: m.start() if (m := regex.search(text, start, end)) else -1)

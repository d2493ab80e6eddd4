"""SQL LIKE matching without regex backtracking, with bounded compile and match cost.

``%`` matches any run (including none), ``_`` exactly one character (one byte when matching
bytes) and a backslash makes the next character literal. The pattern is cut at each ``%`` into
fixed-length segments; the first must match at the start, the last at the end, and the others
are found left to right, each at its leftmost place. Because every segment has a fixed length
the leftmost choice is always safe, and each search starts where the previous match ended, so
a whole match tries about ``len(text)`` start positions in total. Segments without ``_`` use
``str.find`` (linear); segments with ``_`` use a regex of literals and ``.`` only, which never
backtracks but may cost up to the segment's length per start position -- hence the bound on
such segments below.

Patterns arrive from untrusted clients (they are compiled again on every replica of a range
delete), so their size is bounded before any work is done:

* :data:`MAX_PATTERN_BYTES` -- the whole pattern, in UTF-8 bytes (also applied to STARTS WITH
  and CONTAINS);
* :data:`MAX_PERCENT` -- the number of ``%`` wildcards, which bounds the segments to compile;
* :data:`MAX_UNDERSCORE_SEGMENT` -- the length of a segment containing ``_``, which bounds the
  per-character cost of matching it (a regex segment may be tried at every text position).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import NamedTuple

from ..errors import QueryError

Text = str | bytes

MAX_PATTERN_BYTES = 4096
MAX_PERCENT = 256
MAX_UNDERSCORE_SEGMENT = 64  # ~40-80 ms to fail on a 1 MiB value at worst


def check_pattern_size(pattern: Text) -> None:
    """Refuse a LIKE / STARTS WITH / CONTAINS pattern longer than :data:`MAX_PATTERN_BYTES`.

    Cheap whatever the input: the length test comes before any encoding.
    """
    too_long = len(pattern) > MAX_PATTERN_BYTES
    if not too_long and isinstance(pattern, str):
        too_long = len(pattern.encode("utf-8", "surrogatepass")) > MAX_PATTERN_BYTES
    if too_long:
        raise QueryError(f"pattern is too long: at most {MAX_PATTERN_BYTES} bytes (UTF-8) are allowed")


def compile_like(pattern: Text) -> Callable[[Text], bool]:
    """A predicate telling whether a str (or bytes, for a bytes pattern) matches ``pattern``.

    Raises :class:`QueryError` for a malformed or over-large pattern (see the module docstring).
    """
    check_pattern_size(pattern)
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
            if len(segments) > MAX_PERCENT:
                raise QueryError(f"LIKE pattern has too many % wildcards: at most {MAX_PERCENT} are allowed")
            segments.append([])
        else:
            segments[-1].append(None if c == under else c)
        i += 1
    for parts in segments:
        if len(parts) > MAX_UNDERSCORE_SEGMENT and None in parts:
            raise QueryError(f"LIKE pattern has a run of more than {MAX_UNDERSCORE_SEGMENT} characters "
                             "between % wildcards that contains _; split it with % or shorten it")
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

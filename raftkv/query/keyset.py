"""Sets of keys as sorted tuples of disjoint, non-adjacent, inclusive ``(lo, hi)`` ranges.

The planner turns WHERE clauses into these; every function returns the normal form, so two
equal sets always compare equal.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..keys import MAX_KEY, MIN_KEY

Range = tuple[int, int]
KeySet = tuple[Range, ...]

FULL: KeySet = ((MIN_KEY, MAX_KEY),)
EMPTY: KeySet = ()


def normalize(ranges: Iterable[Range]) -> KeySet:
    """Sort, drop empty ranges (``lo > hi``) and merge overlapping or adjacent ones."""
    out: list[Range] = []
    for lo, hi in sorted(r for r in ranges if r[0] <= r[1]):
        if out and lo <= out[-1][1] + 1:
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return tuple(out)


def union(a: KeySet, b: KeySet) -> KeySet:
    """Keys in ``a`` or ``b``."""
    return normalize((*a, *b))


def intersect(a: KeySet, b: KeySet) -> KeySet:
    """Keys in both ``a`` and ``b`` (a linear merge of the two sorted lists)."""
    out: list[Range] = []
    i = j = 0
    while i < len(a) and j < len(b):
        lo, hi = max(a[i][0], b[j][0]), min(a[i][1], b[j][1])
        if lo <= hi:
            out.append((lo, hi))
        # Advance whichever range ends first; the other may still overlap the next one.
        if a[i][1] < b[j][1]:
            i += 1
        else:
            j += 1
    return tuple(out)


def complement(a: KeySet) -> KeySet:
    """Keys in ``[0, 2**64-1]`` that are not in ``a``."""
    out: list[Range] = []
    start = MIN_KEY
    for lo, hi in a:
        if lo > start:
            out.append((start, lo - 1))
        start = hi + 1
    if start <= MAX_KEY:
        out.append((start, MAX_KEY))
    return tuple(out)


def size(a: KeySet) -> int:
    """How many keys ``a`` holds."""
    return sum(hi - lo + 1 for lo, hi in a)

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


def union_all(sets: Iterable[KeySet]) -> KeySet:
    """Keys in any of ``sets``: one sort of all their ranges, so n log n for n ranges in total."""
    return normalize(r for s in sets for r in s)


def intersect_all(sets: Iterable[KeySet]) -> KeySet:
    """Keys in every one of ``sets`` (FULL for none), in n log n for n ranges in total.

    A sweep over the range ends: a key is in the intersection when every set covers it. Folding
    :func:`intersect` pairwise instead is quadratic when the running result keeps growing, as it
    does for a long chain of ``key != c`` conditions.
    """
    sets = list(sets)
    if not sets:
        return FULL
    if len(sets) == 1:
        return sets[0]
    if any(not s for s in sets):
        return EMPTY
    events: list[tuple[int, int]] = []  # +1 where a set's range starts, -1 just past its end
    for s in sets:
        for lo, hi in s:
            events.append((lo, 1))
            events.append((hi + 1, -1))
    events.sort()
    out: list[Range] = []
    everyone, count, start, i = len(sets), 0, None, 0
    while i < len(events):
        point = events[i][0]
        while i < len(events) and events[i][0] == point:  # settle every event at this key first
            count += events[i][1]
            i += 1
        if count == everyone and start is None:
            start = point
        elif count < everyone and start is not None:
            out.append((start, point - 1))
            start = None
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

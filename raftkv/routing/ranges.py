"""The one range rule of raftkv.

A shard owns the half-open interval ``[start, end)`` of the key space, with
``0 <= start < end <= 2**64``.  Users speak in *inclusive* ranges
``[lo, hi]`` (``range_query(lo, hi)``); :func:`inclusive_to_half_open` is the
single place where the two meet.
"""

from __future__ import annotations

from ..keys import KEY_SPACE_END


def end_to_wire(end: int) -> int | None:
    """A half-open range's end for msgpack, which stops at 2**64 - 1: the key space's end is None."""
    return None if end >= KEY_SPACE_END else end


def end_from_wire(end: int | None) -> int:
    """Inverse of :func:`end_to_wire`."""
    return KEY_SPACE_END if end is None else end


def inclusive_to_half_open(lo: int, hi: int) -> tuple[int, int] | None:
    """``[lo, hi]`` as ``[lo, hi + 1)``, or None when empty (``lo > hi``)."""
    if lo > hi:
        return None
    return lo, hi + 1


def intersect(a_start: int, a_end: int, b_start: int, b_end: int) -> tuple[int, int] | None:
    """Intersection of two half-open ranges, or None when they do not overlap."""
    start, end = max(a_start, b_start), min(a_end, b_end)
    return (start, end) if start < end else None


def contains(start: int, end: int, key: int) -> bool:
    """Whether ``key`` lies in ``[start, end)``."""
    return start <= key < end


def even_split_points(count: int) -> list[int]:
    """``count - 1`` boundaries cutting the whole key space into ``count`` equal ranges."""
    if count < 1:
        raise ValueError("shard count must be >= 1")
    step = KEY_SPACE_END // count
    return [step * i for i in range(1, count)]


def ranges_from_split_points(points: list[int]) -> list[tuple[int, int]]:
    """Cut ``[0, 2**64)`` at sorted, distinct ``points`` into contiguous ranges."""
    bounds = [0, *sorted(set(points)), KEY_SPACE_END]
    if bounds[1] == 0 or bounds[-2] >= KEY_SPACE_END:
        raise ValueError("split points must lie strictly inside (0, 2**64)")
    return list(zip(bounds[:-1], bounds[1:], strict=True))

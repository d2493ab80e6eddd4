"""Aggregates pushed down to shards: per-shard partial results, their merge, the final values.

Wire form of the specs (one per output column, ``x`` a numeric operand of predicate.py)::

    ["count"]  ["min", x]  ["max", x]  ["sum", x]  ["avg", x]
    ["bucket"]   -- grouped queries only: the group's first key (its time_bucket value)

Partials are msgpack-safe at every step, so a shard can send them as they are:

* ungrouped: a list with one entry per spec -- count: int; min, max, sum: number or None;
  avg: ``[sum, count]``; bucket: None;
* grouped (``bucket_ns`` given): a list of ``[bucket_start, <ungrouped partial list>]`` pairs in
  ascending bucket order (msgpack refuses int map keys by default, hence pairs, not a dict).

Integers that do not fit in 64 bits (a sum of many timestamps) travel as decimal strings.
NULLs are ignored; ``sum`` and ``avg`` of no values are NULL (None), ``count(*)`` of nothing is 0.
"""

from __future__ import annotations

import bisect
import operator
import re
from typing import Any

from ..errors import QueryError
from ..keys import MAX_KEY
from .predicate import compile_exprs

MAX_SPECS = 64
_KINDS = ("count", "min", "max", "sum", "avg", "bucket")
_WITH_ARG = ("min", "max", "sum", "avg")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_BIG_INT = re.compile(r"-?\d+")
_bucket_of = operator.itemgetter(0)


class Aggregates:
    """Compiled aggregate specs (wire form); validates them as untrusted input."""

    def __init__(self, specs: object, bucket_ns: int | None = None) -> None:
        """``bucket_ns`` groups rows by ``key - key % bucket_ns`` (GROUP BY time_bucket)."""
        if not isinstance(specs, (list, tuple)) or not 0 < len(specs) <= MAX_SPECS:
            raise _bad(f"expected a list of 1 to {MAX_SPECS} aggregate specs")
        if bucket_ns is not None and (type(bucket_ns) is not int or not 0 < bucket_ns <= _INT_MAX):
            raise _bad("bucket width must be a positive 64-bit integer")
        kinds, args = [], []
        for spec in specs:
            if not isinstance(spec, (list, tuple)) or not spec or spec[0] not in _KINDS:
                raise _bad(f"unknown aggregate {spec!r:.40}")
            kind = spec[0]
            if len(spec) != (2 if kind in _WITH_ARG else 1):
                raise _bad(f"'{kind}' takes {'one operand' if kind in _WITH_ARG else 'no operand'}")
            if kind == "bucket" and bucket_ns is None:
                raise _bad("'bucket' needs a grouped query")
            kinds.append(kind)
            if kind in _WITH_ARG:
                args.append(spec[1])
        self.kinds: tuple[str, ...] = tuple(kinds)
        self.bucket_ns = bucket_ns
        self._eval = compile_exprs(args) if args else None

    # --- on the shard ---

    def new(self) -> list:
        """Empty partials: what a shard returns when no row matched."""
        return [] if self.bucket_ns else self._new_group()

    def _new_group(self) -> list:
        return [0 if k == "count" else [0, 0] if k == "avg" else None for k in self.kinds]

    def update(self, partials: list, key: int, value: bytes) -> None:
        """Fold one row into ``partials`` (in place)."""
        if self.bucket_ns:
            partials = self._group(partials, key - key % self.bucket_ns)
        values = self._eval(key, value) if self._eval else ()
        j = 0  # index into values, which hold only the specs that take an operand
        for i, kind in enumerate(self.kinds):
            if kind == "count":
                partials[i] += 1
            elif kind != "bucket":
                x = values[j]
                j += 1
                if x is not None:
                    partials[i] = _fold(kind, partials[i], x)

    def _group(self, partials: list, bucket: int) -> list:
        # Shards scan aggregates in ascending key order, so the bucket is nearly always the last one.
        if partials and partials[-1][0] == bucket:
            return partials[-1][1]
        i = bisect.bisect_left(partials, bucket, key=_bucket_of)
        if i == len(partials) or partials[i][0] != bucket:
            partials.insert(i, [bucket, self._new_group()])
        return partials[i][1]

    # --- on the client ---

    def merge(self, a: list, b: list) -> list:
        """Combine the partials of two disjoint sets of rows (e.g. two shards)."""
        if not self.bucket_ns:
            return self._merge_group(self._checked(a), self._checked(b))
        groups: dict[int, list] = {}
        for bucket, part in (*self._checked_groups(a), *self._checked_groups(b)):
            groups[bucket] = self._merge_group(groups[bucket], part) if bucket in groups else part
        return [[bucket, groups[bucket]] for bucket in sorted(groups)]

    def _merge_group(self, a: list, b: list) -> list:
        return [_combine(k, x, y) for k, x, y in zip(self.kinds, a, b, strict=True)]

    def finalize(self, partials: list, descending: bool = False) -> list[list]:
        """Output rows: one row ungrouped; one per group (by bucket, ascending unless ``descending``)."""
        if not self.bucket_ns:
            return [[_final(k, x) for k, x in zip(self.kinds, self._checked(partials), strict=True)]]
        rows = [[bucket if k == "bucket" else _final(k, x) for k, x in zip(self.kinds, part, strict=True)]
                for bucket, part in self._checked_groups(partials)]
        return rows[::-1] if descending else rows

    def _checked(self, partials: object) -> list:
        """``partials`` (from the network) if it has the right shape, else QueryError."""
        if not isinstance(partials, (list, tuple)) or len(partials) != len(self.kinds):
            raise _bad("partial results do not match the aggregate specs")
        for kind, x in zip(self.kinds, partials, strict=True):
            if not _valid_partial(kind, x):
                raise _bad(f"malformed partial result for {kind}: {x!r:.40}")
        return list(partials)

    def _checked_groups(self, partials: object) -> list:
        if not isinstance(partials, (list, tuple)):
            raise _bad("grouped partial results must be a list of [bucket, partials] pairs")
        out = []
        for pair in partials:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and type(pair[0]) is int
                    and 0 <= pair[0] <= MAX_KEY):
                raise _bad(f"malformed group {pair!r:.40}")
            out.append((pair[0], self._checked(pair[1])))
        return out


def _bad(message: str) -> QueryError:
    return QueryError(f"bad aggregate: {message}")


def _valid_partial(kind: str, x: object) -> bool:
    if kind == "count":
        return type(x) is int and x >= 0
    if kind == "bucket":
        return x is None
    if kind == "avg":
        return (isinstance(x, (list, tuple)) and len(x) == 2 and _is_number(x[0])
                and type(x[1]) is int and x[1] >= 0)
    return x is None or _is_number(x)


def _is_number(x: object) -> bool:
    return type(x) is int or type(x) is float or (type(x) is str and _BIG_INT.fullmatch(x) is not None)


def _encode(n: int | float) -> int | float | str:
    return str(n) if type(n) is int and not _INT_MIN <= n <= _INT_MAX else n


def _decode(x: Any) -> Any:
    return int(x) if type(x) is str else x


def _fold(kind: str, current: Any, x: int | float) -> Any:
    """``current`` partial of ``kind`` after seeing one more non-NULL value ``x``."""
    if kind == "avg":
        return [_encode(_decode(current[0]) + x), current[1] + 1]
    if current is None:
        return _encode(x)
    cur = _decode(current)
    if kind == "sum":
        return _encode(cur + x)
    if kind == "min":
        return _encode(x) if x < cur else current
    return _encode(x) if x > cur else current


def _combine(kind: str, a: Any, b: Any) -> Any:
    if kind == "count":
        return a + b
    if kind == "bucket":
        return None
    if kind == "avg":
        return [_encode(_decode(a[0]) + _decode(b[0])), a[1] + b[1]]
    if a is None or b is None:
        return b if a is None else a
    return _fold(kind, a, _decode(b))


def _final(kind: str, x: Any) -> Any:
    if kind == "avg":
        total, n = x
        return _decode(total) / n if n else None
    return _decode(x)

"""Aggregates pushed down to shards: per-shard partial results, their merge, the final values.

Wire form of the specs (one per output column, ``x`` a numeric operand of predicate.py)::

    ["count"]  ["count", x]  ["min", x]  ["max", x]  ["sum", x]  ["avg", x]
    ["bucket"]   -- grouped queries only: the group's first key (its time_bucket value)

Partials are msgpack-safe at every step, so a shard can send them as they are:

* ungrouped: a list with one entry per spec -- count: int; min, max, sum: number or None;
  avg: ``[sum, count]``; bucket: None;
* grouped (``bucket_ns`` given): a list of ``[bucket_start, <ungrouped partial list>]`` pairs in
  ascending bucket order (msgpack refuses int map keys by default, hence pairs, not a dict);
* grouped by fields (a ``["group", x]`` spec, ``x`` a ``json`` or ``jsontext`` operand, with or
  without ``bucket_ns``): pairs ``[[bucket_start?, field value, ...], <partial list>]`` in group
  order; a field value is a JSON string, number, boolean or null (None), an object or array as
  its JSON text. The ``group`` entry of a partial list is None, like ``bucket``'s.

Integers that do not fit in 64 bits (a sum of many timestamps) travel as decimal strings.
NULLs are ignored; ``sum`` and ``avg`` of no values are NULL (None), ``count(*)`` of nothing is 0.
``["count", x]`` counts the rows where the operand ``x`` (any operand, not only a number) is not NULL.
"""

from __future__ import annotations

import bisect
import math
import operator
import re
from typing import Any

from ..errors import QueryError
from ..keys import MAX_KEY
from .predicate import compile_exprs

MAX_SPECS = 64
# Groups one partial may hold when grouping by JSON fields: the node refuses more than this many
# time buckets in one step itself, but knows nothing of field groups, so the limit lives here.
MAX_FIELD_GROUPS = 100_000
_KINDS = ("count", "min", "max", "sum", "avg", "bucket", "group")
_WITH_ARG = ("min", "max", "sum", "avg", "group")
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1
_BIG_INT = re.compile(r"-?\d+")
_bucket_of = operator.itemgetter(0)
# Sort rank of a group value's kind: booleans, numbers, strings, then NULL (last, as PostgreSQL
# sorts NULLs in ascending order). Ranking by kind also keeps JSON true apart from 1.
_RANK = {bool: 0, int: 1, float: 1, str: 2, type(None): 3}


class Aggregates:
    """Compiled aggregate specs (wire form); validates them as untrusted input."""

    def __init__(self, specs: object, bucket_ns: int | None = None) -> None:
        """``bucket_ns`` groups rows by ``key - key % bucket_ns`` (GROUP BY time_bucket).

        A ``["group", x]`` spec (``x`` a ``json`` or ``jsontext`` operand) groups rows by that
        field as well; its column is the field's value (see the module docstring).
        """
        if not isinstance(specs, (list, tuple)) or not 0 < len(specs) <= MAX_SPECS:
            raise _bad(f"expected a list of 1 to {MAX_SPECS} aggregate specs")
        if bucket_ns is not None and (type(bucket_ns) is not int or not 0 < bucket_ns <= _INT_MAX):
            raise _bad("bucket width must be a positive 64-bit integer")
        kinds, args, values, has_arg = [], [], [], []
        for spec in specs:
            if not isinstance(spec, (list, tuple)) or not spec or spec[0] not in _KINDS:
                raise _bad(f"unknown aggregate {spec!r:.40}")
            kind = spec[0]
            counted = kind == "count" and len(spec) == 2  # count(x): any operand, counted when not NULL
            if not counted and len(spec) != (2 if kind in _WITH_ARG else 1):
                raise _bad(f"'{kind}' takes {'one operand' if kind in _WITH_ARG else 'no operand'}")
            if kind == "bucket" and bucket_ns is None:
                raise _bad("'bucket' needs a grouped query")
            if kind == "group" and not (isinstance(spec[1], (list, tuple)) and spec[1]
                                        and spec[1][0] in ("json", "jsontext")):
                raise _bad("'group' takes a json or jsontext operand")
            kinds.append(kind)
            has_arg.append(len(spec) == 2)
            if len(spec) == 2:
                if counted or kind == "group":
                    values.append(len(args))
                args.append(spec[1])
        self.kinds: tuple[str, ...] = tuple(kinds)
        self.bucket_ns = bucket_ns
        # Grouped by fields: partials are [group_key, partials] pairs where group_key is a list,
        # [bucket?, field values...]; grouped by the bucket alone they keep the older int key.
        self.fields = tuple(i for i, k in enumerate(kinds) if k == "group")
        self._has_arg = tuple(has_arg)
        self._eval = compile_exprs(args, frozenset(values)) if args else None

    @property
    def grouped(self) -> bool:
        """Whether the rows are grouped (by time bucket, by JSON fields, or both)."""
        return bool(self.bucket_ns or self.fields)

    # --- on the shard ---

    def new(self) -> list:
        """Empty partials: what a shard returns when no row matched."""
        return [] if self.grouped else self._new_group()

    def _new_group(self) -> list:
        return [0 if k == "count" else [0, 0] if k == "avg" else None for k in self.kinds]

    def update(self, partials: list, key: int, value: bytes) -> None:
        """Fold one row into ``partials`` (in place)."""
        values = self._eval(key, value) if self._eval else ()
        if self.fields:
            partials = self._field_group(partials, key, values)
        elif self.bucket_ns:
            partials = self._group(partials, key - key % self.bucket_ns)
        j = 0  # index into values, which hold only the specs that take an operand
        for i, kind in enumerate(self.kinds):
            x = None
            if self._has_arg[i]:
                x = values[j]
                j += 1
            if kind == "count":
                if x is not None or not self._has_arg[i]:
                    partials[i] += 1
            elif kind not in ("bucket", "group") and x is not None:
                partials[i] = _fold(kind, partials[i], x)

    def _group(self, partials: list, bucket: int) -> list:
        # Shards scan aggregates in ascending key order, so the bucket is nearly always the last one.
        if partials and partials[-1][0] == bucket:
            return partials[-1][1]
        i = bisect.bisect_left(partials, bucket, key=_bucket_of)
        if i == len(partials) or partials[i][0] != bucket:
            partials.insert(i, [bucket, self._new_group()])
        return partials[i][1]

    def _group_key(self, key: int, values: list) -> list:
        """The group of a row: its bucket (if any) and its field values, made msgpack-safe."""
        j, parts = 0, [key - key % self.bucket_ns] if self.bucket_ns else []
        for i, has_arg in enumerate(self._has_arg):
            if has_arg:
                if self.kinds[i] == "group":
                    parts.append(_group_value(values[j]))
                j += 1
        return parts

    def _field_group(self, partials: list, key: int, values: list) -> list:
        gkey = self._group_key(key, values)
        order = _order(gkey)
        if partials and _order(partials[-1][0]) == order:
            return partials[-1][1]
        i = bisect.bisect_left(partials, order, key=lambda pair: _order(pair[0]))
        if i == len(partials) or _order(partials[i][0]) != order:
            if len(partials) >= MAX_FIELD_GROUPS:
                raise QueryError(f"more than {MAX_FIELD_GROUPS} groups in one step: group by fewer "
                                 "or coarser fields, or a wider time bucket")
            partials.insert(i, [gkey, self._new_group()])
        return partials[i][1]

    # --- on the client ---

    def merge(self, a: list, b: list) -> list:
        """Combine the partials of two disjoint sets of rows (e.g. two shards)."""
        if not self.grouped:
            return self._merge_group(self._checked(a), self._checked(b))
        groups: dict = {}
        for gkey, part in (*self._checked_groups(a), *self._checked_groups(b)):
            order = _order(gkey) if self.fields else gkey
            if order in groups:
                groups[order][1] = self._merge_group(groups[order][1], part)
            else:
                groups[order] = [gkey, part]
        return [groups[order] for order in sorted(groups)]

    def _merge_group(self, a: list, b: list) -> list:
        return [_combine(k, x, y) for k, x, y in zip(self.kinds, a, b, strict=True)]

    def finalize(self, partials: list, descending: bool = False) -> list[list]:
        """Output rows: one row ungrouped; one per group (in group order, reversed if ``descending``).

        Groups are ordered by bucket, then by the field values in spec order: booleans, numbers,
        strings, then NULL.
        """
        if not self.grouped:
            return [[_final(k, x) for k, x in zip(self.kinds, self._checked(partials), strict=True)]]
        rows = []
        for gkey, part in self._checked_groups(partials):
            parts = gkey if self.fields else [gkey]
            fields = iter(parts[1:] if self.bucket_ns else parts)
            rows.append([parts[0] if k == "bucket" else next(fields) if k == "group" else _final(k, x)
                         for k, x in zip(self.kinds, part, strict=True)])
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
            raise _bad("grouped partial results must be a list of [group, partials] pairs")
        out = []
        for pair in partials:
            if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and self._valid_group_key(pair[0])):
                raise _bad(f"malformed group {pair!r:.40}")
            out.append((list(pair[0]) if self.fields else pair[0], self._checked(pair[1])))
        return out

    def _valid_group_key(self, gkey: object) -> bool:
        if not self.fields:
            return type(gkey) is int and 0 <= gkey <= MAX_KEY
        if not (isinstance(gkey, (list, tuple)) and len(gkey) == len(self.fields) + bool(self.bucket_ns)):
            return False
        if self.bucket_ns and not (type(gkey[0]) is int and 0 <= gkey[0] <= MAX_KEY):
            return False
        return all(type(x) in _RANK and (type(x) is not float or math.isfinite(x))
                   for x in gkey[1 if self.bucket_ns else 0:])


def sort_key(x: Any) -> tuple:
    """The client-side sort key of one output value, as groups are ordered: booleans, numbers,
    strings, then NULL (so NULL comes first when the order is reversed for DESC, as in PostgreSQL);
    any other kind (bytes: ``value``) after NULL. Values of different kinds are never compared with
    each other. A float NaN (from arithmetic on infinities) sorts after every other number, as in
    PostgreSQL, instead of breaking the sort."""
    rank = _RANK.get(type(x), 4)
    if rank == 1 and x != x:  # NaN
        return (1, True, 0)
    return (rank, False, x)


def sort_rows(rows: list[list], column: int, descending: bool = False) -> list[list]:
    """``rows`` sorted by entry ``column`` with :func:`sort_key` (reversed when ``descending``).
    Stable, so ties keep the group order."""
    return sorted(rows, key=lambda row: sort_key(row[column]), reverse=descending)


def _group_value(x: Any) -> Any:
    """A field value as a group key: objects and arrays by their text (compile_exprs did that), and
    integers beyond 64 bits as floats so that msgpack can carry them."""
    if type(x) is int and not _INT_MIN <= x <= _INT_MAX:
        return float(x)
    return x


def _order(gkey: list) -> tuple:
    """A sort key for a group key that never compares values of different kinds (:func:`sort_key`
    of each part)."""
    return tuple(map(sort_key, gkey))


def _bad(message: str) -> QueryError:
    return QueryError(f"bad aggregate: {message}")


def _valid_partial(kind: str, x: object) -> bool:
    if kind == "count":
        return type(x) is int and x >= 0
    if kind in ("bucket", "group"):
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
    if kind in ("bucket", "group"):
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

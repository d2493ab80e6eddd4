"""Statement → plan: the key ranges to visit, the shards owning them, and what runs on the shards.

Pure: no network, no disk, no clock except the injectable ``now_ns``. Plans are frozen
dataclasses; filters and aggregate specs inside them are already in wire form (predicate.py,
aggregate.py) so the executor can put them straight into shard requests.

How WHERE becomes ranges: every condition maps to a key set (keyset.py) that contains every key
it can be true for, plus a flag saying whether the set is *exact* (the condition is true for
precisely those keys, whatever the value). Key comparisons, BETWEEN and IN are exact; value
predicates give the full key space, inexact. AND intersects, OR unions, and NOT complements --
but only an exact set, since the complement of an over-approximation is not one. Top-level
conjuncts that are exact are fully enforced by the ranges and are dropped from the residual
filter; everything else stays in it and is evaluated on the shards per row.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, fields, replace

from ..errors import InvalidArgument, QueryError
from ..keys import MAX_KEY, MIN_KEY, check_key, check_value
from ..routing.shardmap import ShardMap
from . import ast, keyset
from .aggregate import Aggregates
from .ast import AGGREGATES, Column, Expr, Literal, is_constant, render, timestamp_arg
from .check import natural_order, top_n
from .keyset import EMPTY, FULL, KeySet
from .literals import shorten
from .predicate import compile_filter, expr_to_wire, to_wire
from .timestamps import to_timestamp_value

_KEY = Column("key")
_FLIP = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_MAX_INT_BITS = 512  # constant arithmetic beyond this is an error ("too large"), not a bignum
_EXPLAIN_LIST_MAX = 8  # ranges / shards listed one per line before "... and N more"


@dataclass(frozen=True)
class ShardScan:
    """One shard to contact and the inclusive key ranges to scan there, in visiting order."""

    shard_id: str
    replicas: tuple[str, ...]
    ranges: tuple[tuple[int, int], ...]
    stripe: tuple[int, int] | None = None  # (i, K): stripe i of a striped segment's K


@dataclass(frozen=True)
class SelectPlan:
    """A SELECT.

    Plain rows: visit ``scans`` in order, each scanning its ranges in order (descending keys when
    ``reverse_scan``), keeping rows passing ``filter``, at most ``shard_limit`` per shard; the
    concatenation is already in output order -- stop after ``limit`` rows and project ``fields``
    (``"key"``/``"value"`` per output column).

    Aggregates (``aggregates`` is not None): each shard folds its matching rows into
    ``Aggregates(aggregates, bucket_ns)`` partials; merge them and ``finalize(partials,
    descending)`` gives the output rows (with no scans, finalize ``new()``), then skip ``offset``
    and apply ``limit``. Specs beyond ``columns`` group by JSON fields that are not selected: drop
    their entries from the output rows.

    A field is ``["expr", x]`` for any other item, such as ``value->'temp' * 1.8 + 32`` or
    ``to_timestamp(x)``: the operand ``x`` (wire form) is computed on the client from each row
    (:func:`~raftkv.query.predicate.compile_value`); the shards only filter. ``timestamps``
    are the indexes of the output columns that ``to_timestamp()`` turns into
    :class:`~raftkv.query.timestamps.Timestamp` values (NULL when not a number in range),
    whichever path computed them.

    Top-N (``sort_field`` is not None: plain rows ordered by something other than key, which
    check.py allows only with LIMIT + OFFSET at most ``MAX_TOP_N``): the scans run forward with no
    ``shard_limit``, since any row may be among the first; the client computes ``sort_field`` (a
    field as in ``fields``) for every row, keeps the first ``limit + offset`` rows in the order of
    :func:`~raftkv.query.aggregate.sort_key` (reversed when ``descending``; ties by key
    ascending), then skips ``offset`` and projects ``fields``.
    """

    columns: tuple[str, ...]
    fields: tuple[str, ...]
    ranges: KeySet
    scans: tuple[ShardScan, ...]
    total_shards: int
    filter: list | None
    filter_text: str | None
    dropped: tuple[str, ...]
    reverse_scan: bool
    descending: bool
    limit: int | None
    shard_limit: int | None
    aggregates: list | None
    bucket_ns: int | None
    timestamps: tuple[int, ...] = ()
    offset: int | None = None  # OFFSET: output rows the client skips before LIMIT counts
    sort_column: int | None = None  # grouped: sort the finalized rows by this entry on the client
    sort_text: str | None = None  # the ORDER BY expression of sort_column or sort_field, for EXPLAIN
    sort_field: str | list | None = None  # plain rows: the top-N sort value, computed per row on the client


@dataclass(frozen=True)
class ConstantPlan:
    """A SELECT without FROM: its one row, computed here; no shard is contacted."""

    columns: tuple[str, ...]
    row: tuple


@dataclass(frozen=True)
class DeletePlan:
    """A DELETE: on each shard, delete the keys in its ranges whose rows pass ``filter``."""

    ranges: KeySet
    scans: tuple[ShardScan, ...]
    total_shards: int
    filter: list | None
    filter_text: str | None
    dropped: tuple[str, ...]


@dataclass(frozen=True)
class ShardWrite:
    """The rows of an INSERT that one shard owns, in statement order."""

    shard_id: str
    replicas: tuple[str, ...]
    rows: tuple[tuple[int, bytes], ...]


@dataclass(frozen=True)
class InsertPlan:
    """An INSERT or PUT: every row validated, grouped by owning shard."""

    rows: tuple[tuple[int, bytes], ...]
    writes: tuple[ShardWrite, ...]


@dataclass(frozen=True)
class GetPlan:
    """A GET of one key from the shard owning it."""

    key: int
    shard_id: str
    replicas: tuple[str, ...]


@dataclass(frozen=True)
class ShowPlan:
    """SHOW SHARDS / NODES / STATUS: answered by the executor from cluster state."""

    what: str


@dataclass(frozen=True)
class SplitPlan:
    """SPLIT SHARD: split ``shard_id`` at key ``at`` (None: its leader picks one near the median).

    Whether the shard exists and ``at`` lies inside it is left to the client and the shard's
    leader: the map a plan is made from may be older than theirs.
    """

    shard_id: str
    at: int | None


@dataclass(frozen=True)
class ExplainPlan:
    """EXPLAIN: describe ``plan`` with :func:`explain` instead of running it."""

    plan: SelectPlan | ConstantPlan | DeletePlan


Plan = SelectPlan | ConstantPlan | DeletePlan | InsertPlan | GetPlan | ShowPlan | SplitPlan | ExplainPlan


def plan(statement: ast.Statement, shard_map: ShardMap, now_ns: int | None = None) -> Plan:
    """Plan a statement from :func:`raftkv.query.parser.parse`.

    ``now()`` is read once per statement: ``now_ns`` if given, else the system clock.
    """
    now = time.time_ns() if now_ns is None else now_ns
    try:
        return _plan(statement, shard_map, now)
    except RecursionError:  # the tree walks are recursive, like the parser's
        raise QueryError("the query is nested too deeply") from None


def _plan(statement: ast.Statement, shard_map: ShardMap, now: int) -> Plan:
    match statement:
        case ast.Select():
            return _plan_select(statement, shard_map, now)
        case ast.ConstantSelect(items=items):
            columns = tuple(name for item in items for name in _column_names(item))
            return ConstantPlan(columns, tuple(_constant_item(item.expr, now) for item in items))
        case ast.Delete(where=where):
            ranges, filter_wire, filter_text, dropped = _plan_where(where, now)
            return DeletePlan(ranges, _scans(shard_map, ranges, False), len(shard_map.shards), filter_wire,
                              filter_text, dropped)
        case ast.Insert(rows=rows):
            return _plan_insert(rows, shard_map, now)
        case ast.Get(key=key):
            k = _key_constant(key, now, "the key for GET")
            shard = shard_map.shard_for_key(k)
            return GetPlan(k, shard.id, shard.replicas)
        case ast.Explain(statement=inner):
            return ExplainPlan(_plan(inner, shard_map, now))
        case ast.Show(what=what):
            return ShowPlan(what)
        case ast.Split(shard_id=shard_id, at=at):
            return SplitPlan(shard_id, None if at is None else _key_constant(at, now, "the split key"))
        case ast.Copy():
            # the file lives where the client runs, so the shell and the CLI run COPY themselves
            raise QueryError("COPY reads and writes files on the client: run it in the shell, with "
                             "`raftkv import` / `raftkv export`, or from Python with raftkv.bulk.run_copy")
    raise QueryError(f"cannot plan {statement!r:.80}")


def _plan_select(s: ast.Select, shard_map: ShardMap, now: int) -> SelectPlan:
    ranges, filter_wire, filter_text, dropped = _plan_where(s.where, now)
    columns = tuple(name for item in s.items for name in _column_names(item))
    # to_timestamp() only converts what its argument gives, on the client: plan the argument.
    exprs = [_unstamped(item.expr) for item in s.items]
    timestamps = tuple(i for i, e in enumerate(_flat_items(s.items))
                       if e is not None and timestamp_arg(e) is not None)
    groups = s.groups
    grouped = bool(groups)
    bucket = next((g for g in groups if isinstance(g, ast.Call)), None)
    is_aggregate = grouped or any(isinstance(e, ast.Call) and e.name in AGGREGATES for e in exprs)
    descending = s.order == "desc"
    specs = bucket_ns = sort_column = sort_text = sort_field = None
    if is_aggregate:
        specs = [["bucket"] if e == bucket else ["group", expr_to_wire(e)] if e in groups
                 else _aggregate_spec(e, now) for e in exprs]
        # Fields grouped by but not selected still split the groups: their specs come last, and
        # the client drops those columns (see SelectPlan).
        specs += [["group", expr_to_wire(g)] for g in groups if isinstance(g, ast.JsonField) and g not in exprs]
        bucket_ns = _bucket_width(bucket, now) if bucket is not None else None
        if not natural_order(s):
            # ORDER BY an aggregate or a later GROUP BY field: the client sorts the groups. The
            # sort value is a spec like any other (added, and dropped later, when not selected).
            inner = _unstamped(s.order_by)
            spec = (["bucket"] if inner == bucket else ["group", expr_to_wire(inner)] if inner in groups
                    else _aggregate_spec(inner, now))
            if spec not in specs:
                specs.append(spec)
            sort_column = specs.index(spec)
            sort_text = columns[sort_column] if sort_column < len(columns) else render(s.order_by)
        Aggregates(specs, bucket_ns)  # validate now, with the message the shards would give
        fields_ = ()
    else:
        fields_ = tuple(f for e in exprs for f in _field_names(e, now))
        if top_n(s) is not None:
            # ORDER BY a value of the row: the client sorts (SelectPlan); to_timestamp() keeps order
            sort_field = _field_names(_unstamped(s.order_by), now)[0]
            sort_text = next((name for name, e in zip(columns, _flat_items(s.items), strict=True)
                              if e is not None and e == s.order_by), render(s.order_by))
    # Aggregates scan forward even for DESC: shards then append groups in order (aggregate.py);
    # so does a top-N, whose order is not the key's.
    reverse_scan = descending and not is_aggregate and sort_field is None
    # LIMIT 0 needs no data; otherwise each shard can stop at LIMIT + OFFSET rows (not for
    # aggregates, whose LIMIT counts output rows, not scanned ones, nor for a top-N, where the
    # last row scanned may be the first in order): the client skips OFFSET.
    scans = () if s.limit == 0 else _scans(shard_map, ranges, reverse_scan)
    shard_limit = None
    if not is_aggregate and sort_field is None and s.limit is not None:
        shard_limit = s.limit + (s.offset or 0)
        shard_limit = shard_limit if shard_limit < 2**63 else None
    return SelectPlan(columns, fields_, ranges, scans, len(shard_map.shards), filter_wire, filter_text,
                      dropped, reverse_scan, descending, s.limit, shard_limit, specs, bucket_ns, timestamps,
                      s.offset or None, sort_column, sort_text, sort_field)


def _column_names(item: ast.SelectItem) -> tuple[str, ...]:
    if isinstance(item.expr, ast.Star):
        return ("key", "value")
    return (item.alias or render(item.expr),)


def _flat_items(items: tuple[ast.SelectItem, ...]) -> list[Expr | None]:
    """One entry per output column: the item's expression, or None for the columns of ``*``."""
    return [x for item in items for x in ((None, None) if isinstance(item.expr, ast.Star) else (item.expr,))]


def _unstamped(e: Expr) -> Expr:
    arg = timestamp_arg(e)
    return e if arg is None else arg


def _field_names(e: Expr, now: int) -> tuple[str | list, ...]:
    if isinstance(e, ast.Star):
        return ("key", "value")
    if isinstance(e, Column):
        return (e.name,)
    return (["expr", expr_to_wire(_fold(e, now))],)  # to_timestamp(x): x computed from the row


def _constant_item(e: Expr, now: int) -> object:
    """The value of a SELECT-without-FROM item: a constant, or a Timestamp for ``to_timestamp(c)``."""
    arg = timestamp_arg(e)
    if arg is None:
        return _evaluate(e, now)
    value = _evaluate(arg, now)
    stamp = to_timestamp_value(value)  # as on rows
    if stamp is None:
        raise QueryError(f"{e.at()}{_shown(e)}: {value} ns since the Unix epoch is outside the years 1 to 9999")
    return stamp


def _aggregate_spec(call: ast.Call, now: int) -> list:
    if call.name == "count":
        arg = call.args[0]
        # key, value and constants (NULL is refused by check.py) are never NULL: count rows
        if isinstance(arg, (ast.Star, Column)) or is_constant(arg):
            return ["count"]
        return ["count", expr_to_wire(_fold(arg, now))]
    return [call.name, expr_to_wire(_fold(call.args[0], now))]


def _bucket_width(group: ast.Call, now: int) -> int:
    width = _evaluate(group.args[0], now)
    if isinstance(width, float) and width.is_integer():
        width = int(width)
    if type(width) is not int or not 0 < width <= MAX_KEY:
        raise QueryError(f"{group.at()}the time_bucket width must be a positive whole number of "
                         f"nanoseconds, such as INTERVAL '1 minute'; got {render(group.args[0])}")
    return width


def _plan_insert(rows: tuple[tuple[Expr, Expr], ...], shard_map: ShardMap, now: int) -> InsertPlan:
    checked = []
    for key_expr, value_expr in rows:
        key = _key_constant(key_expr, now, "the key to insert")
        try:
            value = check_value(value_expr.value)
        except InvalidArgument as e:
            raise QueryError(f"{value_expr.at()}{e.message}") from None
        checked.append((key, value))
    by_shard: dict[str, tuple] = {}
    for key, value in checked:
        shard = shard_map.shard_for_key(key)
        by_shard.setdefault(shard.id, (shard, []))[1].append((key, value))
    writes = tuple(ShardWrite(shard.id, shard.replicas, tuple(rs)) for shard, rs in by_shard.values())
    return InsertPlan(tuple(checked), writes)


def _key_constant(expr: Expr, now: int, what: str) -> int:
    value = _evaluate(expr, now)
    if isinstance(value, float):
        if not value.is_integer():
            raise QueryError(f"{expr.at()}{what} must be a whole number, got {render(expr)}")
        value = int(value)
    try:
        return check_key(value, what)
    except InvalidArgument as e:
        raise QueryError(f"{expr.at()}{e.message}") from None


# --- WHERE → ranges + residual filter -------------------------------------------------------------


def _plan_where(where: Expr | None, now: int) -> tuple[KeySet, list | None, str | None, tuple[str, ...]]:
    """Key ranges, residual filter (wire and text) and the dropped key predicates."""
    if where is None:
        return FULL, None, None, ()
    ranges = _derive(where, now)[0]
    residual, dropped = _split(where, now)
    if residual is None:
        return ranges, None, None, tuple(dropped)
    folded = _fold(residual, now)
    wire = to_wire(folded)
    try:
        compile_filter(wire)  # refuse here what the shards would refuse
    except QueryError as e:  # a checked AST can only fail on size or depth
        raise QueryError("the WHERE clause is too large to send to the shards: "
                         + e.message.removeprefix("bad filter: ")) from None
    return ranges, wire, render(folded), tuple(dropped)


def _derive(e: Expr, now: int) -> tuple[KeySet, bool]:
    """The keys ``e`` can be true for, and whether ``e`` is true for exactly those keys."""
    match e:
        case Literal(value=bool() as b):
            return (FULL if b else EMPTY), True
        case ast.And(items=items) | ast.Or(items=items):
            # Combine all the parts at once (one sort): folding them pairwise is quadratic in
            # long chains such as 10,000 "key != c" terms.
            parts = [_derive(item, now) for item in items]
            combine = keyset.intersect_all if isinstance(e, ast.And) else keyset.union_all
            return combine(r for r, _ in parts), all(x for _, x in parts)
        case ast.Not(operand=x):
            r, exact = _derive(x, now)
            return (keyset.complement(r), True) if exact else (FULL, False)
        case ast.Compare(op=op, left=left, right=right):
            if left == _KEY and is_constant(right):
                return _key_compare(op, right, now), True
            if right == _KEY and is_constant(left):
                return _key_compare(_FLIP[op], left, now), True
        case ast.Between(operand=x, low=low, high=high, negated=negated) if (
                x == _KEY and is_constant(low) and is_constant(high)):
            r = keyset.intersect(_key_compare(">=", low, now), _key_compare("<=", high, now))
            return (keyset.complement(r) if negated else r), True
        case ast.InList(operand=x, items=items, negated=negated) if x == _KEY:
            r = keyset.normalize(rng for item in items for rng in _key_compare("=", item, now))
            return (keyset.complement(r) if negated else r), True
    if _operands_constant(e):
        # e.g. 1 = 1 or now() > 0: evaluate once with the shards' own semantics.
        return (FULL if compile_filter(to_wire(_fold(e, now)))(0, b"") else EMPTY), True
    return FULL, False


def _operands_constant(e: Expr) -> bool:
    match e:
        case ast.Compare(left=left, right=right):
            return is_constant(left) and is_constant(right)
        case ast.Between(operand=x, low=low, high=high):
            return is_constant(x) and is_constant(low) and is_constant(high)
        case ast.InList(operand=x):
            return is_constant(x)
    return False


def _key_compare(op: str, bound: Expr, now: int) -> KeySet:
    """Keys ``k`` with ``k op bound``; the bound must lie in the key range."""
    c = _evaluate(bound, now)
    if not MIN_KEY <= c <= MAX_KEY:  # also false for NaN
        shown = "" if render(bound) == str(c) else f"{render(bound)} = "
        raise QueryError(f"{bound.at()}key bound {shown}{c} is outside the key range [0, 2**64-1]")
    # Exact for float bounds too: math.floor/ceil of a finite float are exact ints.
    low, high = math.ceil(c), math.floor(c)
    ranges = {
        "=": [(low, high)],
        "!=": [(MIN_KEY, low - 1), (high + 1, MAX_KEY)] if low == high else [(MIN_KEY, MAX_KEY)],
        "<": [(MIN_KEY, low - 1)],
        "<=": [(MIN_KEY, high)],
        ">": [(high + 1, MAX_KEY)],
        ">=": [(low, MAX_KEY)],
    }[op]
    return keyset.normalize(ranges)


def _split(e: Expr, now: int) -> tuple[Expr | None, list[str]]:
    """The residual filter of ``e`` and the texts of conjuncts dropped because ranges enforce them."""
    if isinstance(e, ast.And):
        kept, dropped = [], []
        for item in e.items:
            residual, d = _split(item, now)
            dropped += d
            if residual is not None:
                kept.append(residual)
        if not kept:
            return None, dropped
        return (kept[0] if len(kept) == 1 else ast.And(tuple(kept), pos=e.pos)), dropped
    if _derive(e, now)[1]:
        return None, [render(e)]
    return e, []


# --- constants ------------------------------------------------------------------------------------


def _fold(e: Expr, now: int) -> Expr:
    """``e`` with every constant sub-expression (``now()``, arithmetic on literals) evaluated."""
    if is_constant(e):
        return e if isinstance(e, Literal) else Literal(_evaluate(e, now), pos=e.pos)
    changes = {}
    for f in fields(e):
        v = getattr(e, f.name)
        if isinstance(v, ast.Node):
            changes[f.name] = _fold(v, now)
        elif isinstance(v, tuple) and v and isinstance(v[0], ast.Node):
            changes[f.name] = tuple(_fold(x, now) for x in v)
    return replace(e, **changes)


def _shown(e: Expr) -> str:
    """``e`` rendered for an error message, shortened."""
    return shorten(render(e), 80)


def _evaluate(e: Expr, now: int) -> object:
    """The value of a constant expression: ints stay exact, ``/`` is true division."""
    match e:
        case Literal(value=v):
            return v
        case ast.Call(name="now"):
            return now
        case ast.Neg(operand=x):
            return -_evaluate(x, now)
        case ast.Arith(op=op, left=left, right=right):
            a, b = _evaluate(left, now), _evaluate(right, now)
            try:
                result = a + b if op == "+" else a - b if op == "-" else a * b if op == "*" else a / b
            except ZeroDivisionError:
                raise QueryError(f"{e.at()}division by zero in {_shown(e)}") from None
            except OverflowError:
                raise QueryError(f"{e.at()}{_shown(e)} is too large") from None
            # Exact ints could otherwise grow without bound along a chain of products (slow, and
            # beyond str()'s digit limit); a float overflows to inf without raising.
            if (type(result) is int and result.bit_length() > _MAX_INT_BITS) or (
                    type(result) is float and not math.isfinite(result)):
                raise QueryError(f"{e.at()}{_shown(e)} is too large")
            return result
    raise QueryError(f"{e.at()}{render(e)} is not a constant")


# --- shards ---------------------------------------------------------------------------------------


def _scans(shard_map: ShardMap, ranges: KeySet, reverse: bool) -> tuple[ShardScan, ...]:
    """The shards owning ``ranges`` with their clipped sub-ranges, in visiting order."""
    by_shard: dict[str, tuple] = {}
    for lo, hi in ranges:
        for shard, start, end in shard_map.shards_for_range(lo, hi + 1):  # half-open there
            by_shard.setdefault(shard.id, (shard, []))[1].append((start, end - 1))
    scans = [ShardScan(shard.id, shard.replicas, tuple(rs), shard.stripe) for shard, rs in by_shard.values()]
    if reverse:
        return tuple(replace(s, ranges=s.ranges[::-1]) for s in reversed(scans))
    return tuple(scans)


# --- EXPLAIN --------------------------------------------------------------------------------------


def explain(plan: Plan, leaders: dict[str, str] | None = None) -> list[str]:
    """Human-readable lines describing a SELECT or DELETE plan (``leaders``: shard id → node id)."""
    if isinstance(plan, ExplainPlan):
        plan = plan.plan
    if isinstance(plan, ConstantPlan):
        return [f"SELECT {', '.join(plan.columns)}",
                "  no FROM: the values are computed on the client; no shard is contacted"]
    if isinstance(plan, SelectPlan):
        head = f"SELECT {', '.join(plan.columns)}"
    elif isinstance(plan, DeletePlan):
        head = "DELETE"
    else:
        raise QueryError("EXPLAIN describes SELECT and DELETE only")
    lines = [head, *_explain_ranges(plan.ranges)]
    if plan.filter_text:
        lines.append(f"  filter on shards: {plan.filter_text}")
    if plan.dropped:
        lines.append(f"  dropped from filter (enforced by key ranges): {'; '.join(plan.dropped)}")
    if isinstance(plan, SelectPlan):
        lines += _explain_select(plan)
    lines += _explain_scans(plan.scans, plan.total_shards, leaders or {})
    return lines


def _explain_ranges(ranges: KeySet) -> list[str]:
    if not ranges:
        return ["  key ranges: none (the WHERE clause matches no key)"]
    n = len(ranges)
    lines = [f"  key ranges: {n} range{'s' if n > 1 else ''}, {keyset.size(ranges)} keys"]
    lines += [f"    [{lo} .. {hi}]" for lo, hi in ranges[:_EXPLAIN_LIST_MAX]]
    if n > _EXPLAIN_LIST_MAX:
        lines.append(f"    ... and {n - _EXPLAIN_LIST_MAX} more")
    return lines


def _explain_select(plan: SelectPlan) -> list[str]:
    by_fields = plan.bucket_ns is None and any(spec[0] == "group" for spec in plan.aggregates or ())
    direction = "descending" if plan.descending else "ascending"
    if plan.sort_column is not None:
        lines = [f"  order: {plan.sort_text} {direction}; groups sorted on the client"]
    elif plan.sort_field is not None:
        held = plan.limit + (plan.offset or 0)
        lines = [f"  order: {plan.sort_text} {direction}, ties by key ascending; top {held} rows kept on the "
                 "client while every matching row is read (no per-shard limit)"]
    else:
        lines = [f"  order: {'groups' if by_fields else 'key'} {direction}"
                 + ("; shards scan in reverse" if plan.reverse_scan else "")]
    if plan.timestamps:
        lines.append(f"  timestamps made on the client: {', '.join(plan.columns[i] for i in plan.timestamps)}")
    if plan.limit is not None:
        per_shard = f"{plan.shard_limit} rows per shard, " if plan.shard_limit is not None else ""
        lines.append(f"  limit: {per_shard}{plan.limit} in total")
    if plan.offset:
        lines.append(f"  offset: the first {plan.offset} rows are skipped on the client")
    computed = [name for i, (name, f) in enumerate(zip(plan.columns, plan.fields, strict=False))
                if isinstance(f, list) and i not in plan.timestamps]
    if computed:
        lines.append(f"  computed on the client per row: {', '.join(computed)}")
    if plan.aggregates is not None:
        how = {"count": "count", "min": "min", "max": "max", "sum": "sum", "avg": "sum and count",
               "bucket": "group key"}
        how["group"] = "group key"
        hidden = len(plan.aggregates) - len(plan.columns)
        names = [*plan.columns, *[f"{_group_text(spec)} (not selected)" for spec in plan.aggregates[-hidden:]]
                 ] if hidden else plan.columns
        parts = [f"{name}: {'count of non-NULL' if spec[0] == 'count' and len(spec) == 2 else how[spec[0]]}"
                 for name, spec in zip(names, plan.aggregates, strict=True)]
        lines.append(f"  partial aggregates on shards: {'; '.join(parts)}")
        if plan.bucket_ns is not None:
            lines.append(f"  grouped by time_bucket of {plan.bucket_ns} ns over key")
        fields_ = [_group_text(spec) for spec in plan.aggregates if spec[0] == "group"]
        if fields_:
            lines.append(f"  grouped by {', '.join(fields_)} on the shards; groups merged on the client")
    return lines


def _group_text(spec: list) -> str:
    """``value->'sensor'`` for the spec ``["group", ["json", ["sensor"]]]``."""
    kind, path = spec[1]
    return render(ast.JsonField(tuple(path), kind == "jsontext"))


def _explain_scans(scans: tuple[ShardScan, ...], total: int, leaders: dict[str, str]) -> list[str]:
    if not scans:
        return [f"  shards: none of {total} contacted"]
    lines = [f"  shards: {len(scans)} of {total} ({total - len(scans)} pruned)"]
    segments = {(s.ranges, s.stripe[1]) for s in scans if s.stripe}
    if segments:
        lines.append(f"  striped segments: {len(segments)}; the rows of a segment's stripes are merged in key order")
    for scan in scans[:_EXPLAIN_LIST_MAX]:
        shown = ", ".join(f"[{lo} .. {hi}]" for lo, hi in scan.ranges[:3])
        if len(scan.ranges) > 3:
            shown += f", ... ({len(scan.ranges)} ranges)"
        leader = f", leader {leaders[scan.shard_id]}" if scan.shard_id in leaders else ""
        part = f" stripe {scan.stripe[0]}/{scan.stripe[1]}" if scan.stripe else ""
        lines.append(f"    {scan.shard_id}{part} {shown} on {', '.join(scan.replicas)}{leader}")
    if len(scans) > _EXPLAIN_LIST_MAX:
        lines.append(f"    ... and {len(scans) - _EXPLAIN_LIST_MAX} more shards")
    return lines

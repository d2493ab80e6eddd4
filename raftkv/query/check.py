"""Semantic checks of a parsed statement: types, functions and aggregate use.

Errors are :class:`QueryError` with ``line``/``column`` details when the node has a position;
``parser.parse`` turns those into messages with a caret under the offending expression.
"""

from __future__ import annotations

import re
from dataclasses import fields, replace
from typing import NoReturn

from ..errors import QueryError
from . import ast
from .ast import AGGREGATES, Call, Column, Expr, Literal, Star, is_constant, render, timestamp_arg
from .like import check_pattern_size, compile_like
from .literals import parse_interval

FUNCTIONS = ("avg", "count", "length", "max", "min", "now", "sum", "time_bucket", "to_timestamp")

NUMBER, JSON, BYTES, STRING, BOOLEAN, NULL, CONDITION = (
    "a number", "a JSON field", "bytes", "a string", "a boolean", "NULL", "a condition")
TEXT = "text"  # value->>'f': a JSON field read as text
_ORDERING = ("<", "<=", ">", ">=")
# A string literal that reads as a number: compared with a JSON field by < or >, it is almost
# certainly a number written in quotes by mistake (see _compare).
_NUMERIC_TEXT = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")

_TO_TIMESTAMP_HINT = ("to_timestamp() can only be a whole item of the SELECT list, as in "
                      "SELECT to_timestamp(key) FROM kv; compare key with TIMESTAMP '...' in conditions")
_CONSTANT_HINT = "such as now(), 1 + 2 or to_timestamp(now())"

# Most rows an ORDER BY of plain rows by anything but key may hold on the client (LIMIT + OFFSET):
# the same bound as the groups a grouped query may hold (aggregate.MAX_FIELD_GROUPS). With
# readings of a few hundred bytes that is tens of MB, and the sort stays well under a second.
MAX_TOP_N = 100_000

_MATCH_KEYWORD = {"like": "LIKE", "starts": "STARTS WITH", "contains": "CONTAINS"}
_KEY, _VALUE = Column("key"), Column("value")


def check(statement: ast.Statement) -> None:
    """Raise :class:`QueryError` unless ``statement`` is meaningful."""
    match statement:
        case ast.Select():
            _check_select(statement)
        case ast.ConstantSelect():
            _check_constant_select(statement)
        case ast.Delete(where=where):
            if where is None:
                _fail(statement, "DELETE needs a WHERE clause; write WHERE TRUE to delete every key")
            _condition(where, "in WHERE")
        case ast.Insert(rows=rows):
            for key, value in rows:
                _key_constant(key, "to insert")
                if not (isinstance(value, Literal) and isinstance(value.value, (str, bytes))):
                    _fail(value, f"a value to insert must be a string '...' or a byte string x'...', not "
                                 f"{_describe(value, _type(value, 'in INSERT'))}; quote it to store it as text")
        case ast.Get(key=key):
            _key_constant(key, "for GET")
        case ast.Explain(statement=ast.Copy() as inner):
            # no shard plans a COPY (the client reads or writes the file), so there is no plan to show
            _fail(inner, "EXPLAIN does not take COPY: a COPY runs in the client, reading or writing the file "
                         "there, with no plan on the shards; EXPLAIN the SELECT of a COPY (...) TO instead")
        case ast.Explain(statement=inner):
            check(inner)
        case ast.Copy(query=query) if query is not None:
            check(query)


def resolve_select(s: ast.Select) -> ast.Select:
    """``s`` with SELECT aliases in GROUP BY and ORDER BY replaced by their expressions.

    Also reads a string width of ``time_bucket('1 minute', key)`` as an interval, so that the
    select item and the GROUP BY expression compare equal however each spells the width.
    Names left over (not aliases) are reported by :func:`check` as unknown columns.
    """
    items = tuple(replace(item, expr=_string_widths(item.expr)) for item in s.items)
    aliases: dict[str, Expr] = {}
    ambiguous = set()
    for item in items:
        if item.alias is not None:
            name = item.alias.lower()
            if name in aliases and aliases[name] != item.expr:
                ambiguous.add(name)
            aliases[name] = item.expr
    if s.where is not None and aliases:  # no walk (of a 100,000-item IN list) without aliases
        for node in _walk(s.where):
            if isinstance(node, ast.Name) and node.name.lower() in aliases:
                _fail(node, f"the alias {node.name} cannot be used in WHERE (as in PostgreSQL): WHERE is "
                            "checked before the SELECT list is computed; repeat the expression instead")

    def resolve(e: Expr | None, clause: str) -> Expr | None:
        if isinstance(e, ast.Name):
            name = e.name.lower()
            if name in ambiguous:
                _fail(e, f"{clause} {e.name} is ambiguous: several SELECT items are called {e.name}")
            if name in aliases:
                target = aliases[name]
                if clause == "GROUP BY":  # to_timestamp() only changes how a group is shown
                    target = timestamp_arg(target) or target
                return replace(target, pos=e.pos)  # errors point at the alias as written
        return None if e is None else _string_widths(e)

    return replace(s, items=items, group_by=resolve(s.group_by, "GROUP BY"),
                   more_groups=tuple(resolve(g, "GROUP BY") for g in s.more_groups),
                   order_by=resolve(s.order_by, "ORDER BY"))


def _walk(e: ast.Node):
    """``e`` and every node below it."""
    yield e
    for f in fields(e):
        v = getattr(e, f.name)
        if isinstance(v, ast.Node):
            yield from _walk(v)
        elif isinstance(v, tuple):
            for x in v:
                if isinstance(x, ast.Node):
                    yield from _walk(x)


def _string_widths(e: Expr) -> Expr:
    """``e`` with ``time_bucket('1 minute', x)`` rewritten as ``time_bucket(INTERVAL '1 minute', x)``."""
    if isinstance(e, Call):
        args = tuple(_string_widths(a) for a in e.args)
        if e.name == "time_bucket" and args and isinstance(args[0], Literal) and isinstance(args[0].value, str):
            width = args[0]
            try:
                ns = parse_interval(width.value)
            except QueryError as err:
                _fail(width, err.message)
            args = (Literal(ns, text=f"INTERVAL {render(width)}", pos=width.pos), *args[1:])
        return replace(e, args=args)
    if isinstance(e, (ast.Arith, ast.Neg)):
        changes = {f.name: _string_widths(getattr(e, f.name)) for f in fields(e) if f.name != "pos"
                   and isinstance(getattr(e, f.name), ast.Node)}
        return replace(e, **changes)
    return e


def _check_select(s: ast.Select) -> None:
    if s.where is not None:
        _condition(s.where, "in WHERE")
    groups = s.groups
    group = s.group_by
    for g in groups:
        _check_group(g)
    buckets = [g for g in groups if isinstance(g, Call)]
    if len(buckets) > 1:
        _fail(buckets[1], "GROUP BY can have only one time_bucket(...)")
    aggregates, plain = [], []
    for item in s.items:
        e = item.expr
        stamped = _timestamp_arg(e)
        if stamped is not None:
            e = stamped  # to_timestamp(x) is selectable wherever x is, and also for a numeric x of the row
        if e in groups:
            continue
        if isinstance(e, Call) and e.name in AGGREGATES:
            _type(e, None)
            aggregates.append(e)
        elif isinstance(e, Star) or e in (_KEY, _VALUE):
            if stamped is not None:
                _numeric(e, "to_timestamp()", None)
            plain.append(item.expr)
        elif stamped is not None:
            _numeric(e, "to_timestamp()", "inside to_timestamp() except as its whole argument")
            plain.append(item.expr)
        else:
            # Any value of the row: computed per row on the client (planner.py).
            t = _type(e, "inside an expression of the SELECT list (an aggregate must be a whole item)")
            if t == CONDITION:
                _fail(e, f"cannot select the condition {render(e)}: select values such as key, value, "
                         "value->'temp' or value->'temp' * 1.8 + 32, and filter in WHERE")
            if t == NULL:
                _fail(e, "cannot select NULL")
            plain.append(item.expr)
    if group is not None and plain:
        which = "the GROUP BY expression" if len(groups) == 1 else "one of the GROUP BY expressions"
        _fail(plain[0], f"{render(plain[0])} must be inside an aggregate or be {which}")
    if group is None and aggregates and plain:
        _fail(plain[0], f"cannot mix aggregates ({render(aggregates[0])}) and plain columns "
                        f"({render(plain[0])}) without GROUP BY")
    if group is None and aggregates and s.order is not None:
        _fail(s, "ORDER BY cannot be used with aggregates without GROUP BY: the result is a single row")
    if s.order_by is not None:
        _check_order(s, buckets[0] if buckets else None)


def sort_field(s: ast.Select) -> Expr | None:
    """The JSON field that groups sort by first when there is no time bucket (aggregate.py orders
    groups by bucket, then by the fields in SELECT-list order, then the unselected ones)."""
    fields_ = [g for g in s.groups if isinstance(g, ast.JsonField)]
    selected = [x for item in s.items if (x := timestamp_arg(item.expr) or item.expr) in fields_]
    return (selected or fields_ or [None])[0]


def natural_order(s: ast.Select) -> bool:
    """Whether the ORDER BY of ``s`` (if any) is the order its rows or groups come in anyway: by key,
    or by the first sort key of a grouped query (the time bucket, else :func:`sort_field`)."""
    if s.order_by is None:
        return True
    inner = timestamp_arg(s.order_by) or s.order_by
    if not s.groups:
        return inner == _KEY
    bucket = next((g for g in s.groups if isinstance(g, Call)), None)
    if bucket is not None:
        return inner in (_KEY, bucket)
    return inner == sort_field(s)


def _check_order(s: ast.Select, bucket: Expr | None) -> None:
    """Plain rows come in key order; the groups of a grouped query are all on the client anyway, so
    they can also be sorted by any GROUP BY expression or aggregate. Plain rows can be ordered by
    another value of the row only as a bounded top-N (:func:`_check_top_n`)."""
    if natural_order(s):
        return
    order = s.order_by
    inner = timestamp_arg(order) or order
    if s.groups and (inner in s.groups or (isinstance(inner, Call) and inner.name in AGGREGATES)):
        _type(inner, None)  # an aggregate that is not selected must still be valid
        return
    if not s.groups:
        _check_top_n(s, inner)
        return
    _type(order, "in ORDER BY")  # an unknown name or a bad expression gets its own message first
    also = "key, " if bucket is not None else ""
    _fail(order, f"cannot ORDER BY {render(order)}: a grouped query can be ordered by {also}its GROUP BY "
                 "expressions and aggregates")


def top_n(s: ast.Select) -> int | None:
    """How many rows the client must hold to order the plain rows of ``s`` by something other than
    key: LIMIT + OFFSET, or None when ``s`` needs no top-N (grouped, or in key order anyway).
    Only meaningful for a statement :func:`check` accepted."""
    if s.groups or natural_order(s) or s.limit is None:
        return None
    return s.limit + (s.offset or 0)


def _check_top_n(s: ast.Select, inner: Expr) -> None:
    """``ORDER BY e LIMIT n`` on plain rows: ``e`` any value a SELECT item could be, and LIMIT +
    OFFSET at most MAX_TOP_N, since the client keeps that many rows while it reads them all."""
    order = s.order_by
    # an unknown name or a bad expression gets its own message first
    t = _type(inner, "in ORDER BY without GROUP BY")
    if t == CONDITION:
        _fail(order, f"cannot ORDER BY the condition {render(order)}: order by a value such as "
                     "value->'temp', and filter in WHERE")
    if is_constant(inner):
        # PostgreSQL reads ORDER BY 1 as "the first column"; here it would silently order nothing
        _fail(order, f"cannot ORDER BY the constant {render(order)}: every row would tie; name the "
                     "expression or its SELECT alias (columns are not numbered)")
    if s.limit is None:
        _fail(order, f"ORDER BY {render(order)} needs a LIMIT: rows are stored in key order, so the client "
                     f"sorts them by anything else itself, reading every matching row and keeping the first "
                     f"LIMIT + OFFSET in memory; add LIMIT n (LIMIT + OFFSET at most {MAX_TOP_N:,}), "
                     "or ORDER BY key, which streams any number of rows")
    held = s.limit + (s.offset or 0)
    if held > MAX_TOP_N:
        _fail(order, f"ORDER BY {render(order)} with LIMIT + OFFSET = {held:,} would keep that many rows in "
                     f"the client's memory while it reads every matching row; the most is {MAX_TOP_N:,}: "
                     "use a smaller LIMIT or OFFSET, narrow the key range in WHERE and page by key, "
                     "or ORDER BY key, which streams")


def _check_constant_select(s: ast.ConstantSelect) -> None:
    for item in s.items:
        e = item.expr
        stamped = _timestamp_arg(e)
        inner = e if stamped is None else stamped
        if isinstance(inner, Star):
            _fail(inner, "SELECT * needs FROM kv")
        t = _type(inner, "in a SELECT without FROM")
        if not is_constant(inner):
            _fail(inner, f"a SELECT without FROM can only select constants ({_CONSTANT_HINT}); "
                         f"{render(inner)} needs FROM kv")
        if stamped is not None and t != NUMBER:
            _fail(inner, f"to_timestamp() needs nanoseconds since the Unix epoch, a number, "
                         f"not {_describe(inner, t)}")


def _timestamp_arg(e: Expr) -> Expr | None:
    """The argument of a well-formed ``to_timestamp(x)`` select item, or None for any other item."""
    if not (isinstance(e, Call) and e.name == "to_timestamp"):
        return None
    arg = timestamp_arg(e)
    if arg is None or isinstance(arg, Star):
        _fail(e, "to_timestamp() takes one number, nanoseconds since the Unix epoch, as in to_timestamp(key)")
    return arg


def _check_group(group: Expr) -> None:
    if isinstance(group, ast.JsonField):
        return
    if isinstance(group, ast.Name):
        _type(group, "in GROUP BY")  # unknown column
    ok = isinstance(group, Call) and group.name == "time_bucket" and len(group.args) == 2
    if ok:
        width, over = group.args
        ok = over == _KEY and is_constant(width) and _type(width, "in GROUP BY") == NUMBER
    if not ok:
        _fail(group, "GROUP BY supports time_bucket(INTERVAL '...', key) and JSON fields, "
                     "e.g. GROUP BY time_bucket(INTERVAL '1 minute', key), value->'sensor'")


def _key_constant(key: Expr, purpose: str) -> None:
    if not is_constant(key) or _type(key, f"in a key {purpose}") != NUMBER:
        _fail(key, f"the key {purpose} must be a constant number such as 42, 0x2a or now(), "
                   f"not {render(key)}")


# --- expression types -----------------------------------------------------------------------------


def _type(e: Expr, ctx: str | None) -> str:
    """The type of ``e``; ``ctx`` says where aggregates are refused (None: allowed at this node)."""
    match e:
        case Literal(value=v):
            if v is None:
                return NULL
            if isinstance(v, bool):
                return BOOLEAN
            return {str: STRING, bytes: BYTES}.get(type(v), NUMBER)
        case Column(name=name):
            return NUMBER if name == "key" else BYTES
        case ast.JsonField(text=text):
            return TEXT if text else JSON
        case ast.Name(name=name):
            hint = f"; a JSON field is written value->'{name}'" if name.isidentifier() else ""
            _fail(e, f"unknown column '{name}'; the columns are key and value{hint}")
        case Star():
            _fail(e, "* can only be used as SELECT * or count(*)")
        case Call():
            return _call_type(e, ctx)
        case ast.Arith(left=left, right=right):
            _numeric(left, "arithmetic", ctx)
            _numeric(right, "arithmetic", ctx)
            return NUMBER
        case ast.Neg(operand=x):
            _numeric(x, "unary minus", ctx)
            return NUMBER
        case ast.Compare(op=op, left=left, right=right):
            _compare(e, op, left, right, ctx)
        case ast.Between(operand=x, low=low, high=high):
            _compare(e, ">=", x, low, ctx)
            _compare(e, "<=", x, high, ctx)
        case ast.InList(operand=x, items=items):
            for item in items:
                if not is_constant(item):
                    _fail(item, f"IN (...) items must be constants, not {render(item)}")
                _compare(item, "=", x, item, ctx)
        case ast.Match(kind=kind, operand=x, pattern=pattern):
            _check_match(_MATCH_KEYWORD[kind], x, pattern, ctx)
        case ast.IsNull(operand=x):
            t = _value(x, ctx)
            if t not in (JSON, TEXT):
                _fail(e, f"IS NULL applies to JSON fields such as value->'temp', not {_describe(x, t)}; "
                         "key and value are never NULL")
        case ast.Not(operand=x):
            _condition(x, ctx)
        case ast.And(items=items) | ast.Or(items=items):
            for item in items:
                _condition(item, ctx)
        case _:
            raise QueryError(f"not an expression: {e!r}")
    return CONDITION  # every case that did not return above is a condition


def _call_type(e: Call, ctx: str | None) -> str:
    name, args = e.name, e.args
    if name not in FUNCTIONS:
        _fail(e, f"unknown function {name}(); the functions are {', '.join(FUNCTIONS)}")
    if name in AGGREGATES:
        if ctx is not None:
            _fail(e, f"aggregate {name}() is not allowed {ctx}")
        if name == "count":
            if args == (Star(),):
                return NUMBER
            if len(args) != 1 or isinstance(args[0], Star):
                _fail(e, "count() takes * or one expression, as in count(*) or count(value->'temp')")
            if _value(args[0], "inside another aggregate") == NULL:
                _fail(e, "count(NULL) counts nothing; use count(*) to count rows")
            return NUMBER
        if len(args) != 1 or isinstance(args[0], Star):
            _fail(e, f"{name}() takes one numeric expression, as in {name}(value->'temp')")
        _numeric(args[0], f"{name}()", "inside another aggregate")
        return NUMBER
    if name == "now":
        if args:
            _fail(e, "now() takes no arguments")
        return NUMBER
    if name == "length":
        if args != (_VALUE,):
            _fail(e, "length() takes value as its only argument: length(value)")
        return NUMBER
    if name == "to_timestamp":
        _fail(e, _TO_TIMESTAMP_HINT)
    _fail(e, "time_bucket() can only be used in GROUP BY and in the SELECT list of a grouped query")


def _compare(node: Expr, op: str, left: Expr, right: Expr, ctx: str | None) -> None:
    lt, rt = _value(left, ctx), _value(right, ctx)
    if NULL in (lt, rt):
        _fail(node, "a comparison with NULL is never true; use IS NULL or IS NOT NULL")
    pair = {lt, rt}
    if TEXT in pair and not pair <= {STRING, JSON, TEXT}:
        text_side, other = (left, right) if lt == TEXT else (right, left)
        _fail(node, f"cannot compare {_describe(text_side, TEXT)} with {_describe(other, _value(other, ctx))}: "
                    "->> reads the field as text; use -> to compare it as a number or boolean")
    if pair <= {NUMBER, JSON} or pair <= {STRING, JSON, TEXT}:
        if op in _ORDERING and pair == {STRING, JSON}:
            _numeric_string(node, left if lt == JSON else right, right if lt == JSON else left)
        return
    equality = op in ("=", "!=")
    if pair <= {BOOLEAN, JSON}:
        if not equality:
            _fail(node, "booleans can only be compared with = or !=")
        return
    if BYTES in pair and pair <= {BYTES, STRING}:
        if not equality:
            _fail(node, "value can only be compared with = or !=; use LIKE, STARTS WITH or CONTAINS for patterns")
        return
    _fail(node, f"cannot compare {_describe(left, lt)} with {_describe(right, rt)}")


def _numeric_string(node: Expr, field: Expr, string: Expr) -> None:
    """Refuse ``value->'temp' > '30'``: a JSON number is never ordered against a string, so such a
    condition is false for every numeric field, which is never what the writer meant."""
    if isinstance(string, Literal) and _NUMERIC_TEXT.fullmatch(string.value):
        as_text = f", or {render(replace(field, text=True))} to compare text" if isinstance(field, ast.JsonField) else ""
        _fail(node, f"{render(node)} compares the JSON field {render(field)} with the string {render(string)}, "
                    f"and a number is never ordered against a string, so no row would match: write "
                    f"{string.value.strip()} without quotes to compare numbers{as_text}")


def _check_match(keyword: str, operand: Expr, pattern: Expr, ctx: str | None) -> None:
    t = _value(operand, ctx)
    if not (operand == _VALUE or t in (JSON, TEXT)):
        _fail(operand, f"{keyword} applies to value or a JSON field such as value->'name', "
                       f"not {_describe(operand, t)}")
    allowed = (str, bytes) if operand == _VALUE else (str,)
    if not (isinstance(pattern, Literal) and isinstance(pattern.value, allowed)):
        _fail(pattern, f"{keyword} needs a string pattern such as 'abc%', not {render(pattern)}")
    try:
        check_pattern_size(pattern.value)
        if keyword == "LIKE":
            compile_like(pattern.value)
    except QueryError as e:
        _fail(pattern, f"{keyword} {e.message}" if e.message.startswith("pattern") else e.message)


def _numeric(e: Expr, what: str, ctx: str | None) -> None:
    t = _value(e, ctx)
    if t not in (NUMBER, JSON):
        hint = "; ->> reads a field as text: use -> for numbers" if t == TEXT else ""
        _fail(e, f"{what} needs numbers, but {_describe(e, t)} is not one{hint}")


def _value(e: Expr, ctx: str | None) -> str:
    t = _type(e, ctx)
    if t == CONDITION:
        _fail(e, f"expected a value, but {render(e)} is a condition")
    return t


def _condition(e: Expr, ctx: str | None) -> None:
    t = _type(e, ctx)
    if t not in (CONDITION, BOOLEAN):
        _fail(e, f"expected a condition such as key > 5, but {_describe(e, t)} is not one")


def _describe(e: Expr, t: str) -> str:
    return f"{render(e)} ({t})"


def _fail(node: ast.Node, message: str) -> NoReturn:
    """Raise a QueryError located at ``node`` (if it has a position)."""
    details = {"line": node.pos[0], "column": node.pos[1]} if node.pos else {}
    raise QueryError(message, **details)

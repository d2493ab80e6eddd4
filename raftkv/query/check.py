"""Semantic checks of a parsed statement: types, functions and aggregate use.

Errors are :class:`QueryError` with ``line``/``column`` details when the node has a position;
``parser.parse`` turns those into messages with a caret under the offending expression.
"""

from __future__ import annotations

from typing import NoReturn

from ..errors import QueryError
from . import ast
from .ast import AGGREGATES, Call, Column, Expr, Literal, Star, is_constant, render, timestamp_arg
from .like import check_pattern_size, compile_like

FUNCTIONS = ("avg", "count", "length", "max", "min", "now", "sum", "time_bucket", "to_timestamp")

NUMBER, JSON, BYTES, STRING, BOOLEAN, NULL, CONDITION = (
    "a number", "a JSON field", "bytes", "a string", "a boolean", "NULL", "a condition")

_TO_TIMESTAMP_HINT = ("to_timestamp() can only be a whole item of the SELECT list, as in "
                      "SELECT to_timestamp(key) FROM kv; compare key with TIMESTAMP '...' in conditions")
_CONSTANT_HINT = "such as now(), 1 + 2 or to_timestamp(now())"

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
        case ast.Explain(statement=inner):
            check(inner)


def _check_select(s: ast.Select) -> None:
    if s.where is not None:
        _condition(s.where, "in WHERE")
    group = s.group_by
    if group is not None:
        _check_group(group)
    aggregates, plain = [], []
    for item in s.items:
        e = item.expr
        stamped = _timestamp_arg(e)
        if stamped is not None:
            e = stamped  # to_timestamp(x) is selectable wherever x is, and also for a numeric x of the row
        if group is not None and e == group:
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
            _type(e, "in the SELECT list")
            _fail(e, f"cannot select {render(e)}: only key, value, *, aggregates "
                     f"({', '.join(sorted(AGGREGATES))}), to_timestamp(...) and the GROUP BY expression "
                     "can be selected")
    if group is not None and plain:
        _fail(plain[0], f"{render(plain[0])} must be inside an aggregate or be the GROUP BY expression")
    if group is None and aggregates and plain:
        _fail(plain[0], f"cannot mix aggregates ({render(aggregates[0])}) and plain columns "
                        f"({render(plain[0])}) without GROUP BY")
    if group is None and aggregates and s.order is not None:
        _fail(s, "ORDER BY cannot be used with aggregates without GROUP BY: the result is a single row")


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
    ok = isinstance(group, Call) and group.name == "time_bucket" and len(group.args) == 2
    if ok:
        width, over = group.args
        ok = over == _KEY and is_constant(width) and _type(width, "in GROUP BY") == NUMBER
    if not ok:
        _fail(group, "GROUP BY supports only time_bucket(INTERVAL '...', key), "
                     "e.g. GROUP BY time_bucket(INTERVAL '1 minute', key)")


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
        case ast.JsonField():
            return JSON
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
            if t != JSON:
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
            if args != (Star(),):
                _fail(e, "count supports only count(*)")
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
    if pair <= {NUMBER, JSON} or pair <= {STRING, JSON}:
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


def _check_match(keyword: str, operand: Expr, pattern: Expr, ctx: str | None) -> None:
    t = _value(operand, ctx)
    if not (operand == _VALUE or t == JSON):
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
        _fail(e, f"{what} needs numbers, but {_describe(e, t)} is not one")


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

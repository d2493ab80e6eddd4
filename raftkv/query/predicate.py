"""Row predicates and numeric expressions: a wire form, and compilation of it into fast closures.

A filter travels from the client to the shard servers inside msgpack requests, so the wire form
is nested lists of plain values (JSON- and msgpack-safe) and :func:`compile_filter` treats it as
untrusted input: bounded depth and size, known operators, right operand types.

Wire form (``x`` is an operand, ``c`` a constant)::

    filter   ["and", f, f, ...]  ["or", f, f, ...]  ["not", f]  ["bool", true|false]
             ["cmp", op, x, x]            op: "=" "!=" "<" "<=" ">" ">="
             ["in", x, [c, ...]]
             ["like", t, p]  ["starts", t, p]  ["contains", t, p]     t: ["value"] or a json operand
             ["isnull", ["json", path]]
    operand  ["key"]  ["value"]  ["len"]  ["json", [step, ...]]   step: member name or array index
             ["jsontext", [step, ...]]    the field as text (->>): a string as it is, else its JSON text
             ["+", x, x]  ["-", x, x]  ["*", x, x]  ["/", x, x]  ["neg", x]
             c: int (64-bit), finite float, str, bool, or ["bytes", "<hex>"]

Semantics (two-valued, decided for speed and predictability):

* A JSON operand is the value found by walking the path in ``json.loads(value)``; it is NULL when
  the value is not valid UTF-8 JSON (NaN/Infinity count as invalid), a step is missing, or a step
  meets the wrong container type. JSON ``null`` is NULL too.
* A comparison is true only when both sides are non-NULL and of the same kind: numbers with
  numbers (JSON true/false are not numbers), strings with strings (code point order), booleans
  with booleans (``=``/``!=`` only), bytes with bytes (``value``; a str constant is UTF-8 encoded).
  Anything else, including NULL, makes the comparison false -- ``!=`` as well.
* ``not`` is plain negation, so ``["not", ["cmp", ">", json, 30]]`` is true for rows lacking
  the field, whereas ``["cmp", "<=", json, 30]`` is not. ``isnull`` is true for NULL.
* LIKE / STARTS WITH / CONTAINS on ``value`` work on bytes (``_`` is one byte); on a JSON operand
  they are true only when it is a string.
* Arithmetic gives NULL when an operand is NULL or not a number, on division by zero and on
  overflow; ``/`` is true division.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable
from typing import Any, NamedTuple

from ..errors import QueryError
from . import ast
from .like import check_pattern_size, compile_like

MAX_DEPTH = 64
MAX_NODES = 10_000
# Total weight (filter_cost) a filter may have: about 1 MiB of patterns and string constants.
MAX_FILTER_COST = 1 << 20
# LIKE segments (% wildcards + 1 per pattern) one filter may compile: each costs a few
# microseconds, and many short patterns could otherwise add up to seconds within MAX_FILTER_COST.
MAX_FILTER_LIKE_SEGMENTS = 2048
_INT_MIN, _INT_MAX = -(2**63), 2**64 - 1  # what msgpack can carry

_CMP = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
        ">=": operator.ge}
_FLIP = {"=": "=", "!=": "!=", "<": ">", "<=": ">=", ">": "<", ">=": "<="}
_ARITH = {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}
_MATCH = ("like", "starts", "contains")
_NUMBER_TYPES = (int, float)
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})*")

# Operand kinds, as in the compatibility rules above.
NUM, STR, BOOL, BYTES, JSON = "number", "string", "boolean", "bytes", "json"

_UNPARSED = object()  # per-row JSON cache slot before the first JSON operand needs it
_INVALID = object()   # the value is not JSON: every path lookup gives NULL

RowFn = Callable[[int, bytes, Any], Any]  # internal: (key, value, per-row JSON cache) -> result


# --- AST → wire -----------------------------------------------------------------------------------


def to_wire(expr: ast.Expr) -> list:
    """The wire form of a condition; constants must already be folded (the planner does it)."""
    match expr:
        case ast.And(items=items):
            return ["and", *(to_wire(i) for i in items)]
        case ast.Or(items=items):
            return ["or", *(to_wire(i) for i in items)]
        case ast.Not(operand=x):
            return ["not", to_wire(x)]
        case ast.Literal(value=bool() as b):
            return ["bool", b]
        case ast.Compare(op=op, left=left, right=right):
            return ["cmp", op, expr_to_wire(left), expr_to_wire(right)]
        case ast.Between(operand=x, low=low, high=high, negated=negated):
            w = expr_to_wire(x)
            both = ["and", ["cmp", ">=", w, expr_to_wire(low)], ["cmp", "<=", w, expr_to_wire(high)]]
            return ["not", both] if negated else both
        case ast.InList(operand=x, items=items, negated=negated):
            w = ["in", expr_to_wire(x), [expr_to_wire(i) for i in items]]
            return ["not", w] if negated else w
        case ast.Match(kind=kind, operand=x, pattern=pattern, negated=negated):
            w = [kind, expr_to_wire(x), expr_to_wire(pattern)]
            return ["not", w] if negated else w
        case ast.IsNull(operand=x, negated=negated):
            w = ["isnull", expr_to_wire(x)]
            return ["not", w] if negated else w
    raise QueryError(f"{expr.at()}cannot send {ast.render(expr)} to the shards as a filter")


def expr_to_wire(expr: ast.Expr) -> list | int | float | str | bool:
    """The wire form of an operand (a numeric expression, column, JSON field or constant)."""
    match expr:
        case ast.Literal(value=v):
            if isinstance(v, bytes):
                return ["bytes", v.hex()]
            if type(v) is int and not _INT_MIN <= v <= _INT_MAX:
                raise QueryError(f"{expr.at()}the number {v} does not fit in 64 bits; "
                                 "write it as a float such as 1e23")
            if v is None:
                raise QueryError(f"{expr.at()}NULL cannot be used as an operand; use IS NULL")
            return v
        case ast.Column(name=name):
            return [name]
        case ast.JsonField(path=path, text=text):
            return ["jsontext" if text else "json", list(path)]
        case ast.Call(name="length"):
            return ["len"]
        case ast.Arith(op=op, left=left, right=right):
            return [op, expr_to_wire(left), expr_to_wire(right)]
        case ast.Neg(operand=x):
            return ["neg", expr_to_wire(x)]
    raise QueryError(f"{expr.at()}cannot send {ast.render(expr)} to the shards as an operand")


# --- wire → closures ------------------------------------------------------------------------------


def filter_cost(wire: object) -> int:
    """The weight of a wire filter or expression: 1 per list node or scalar, a string or bytes its length.

    Pure and iterative (safe on untrusted, deeply nested input); ``None`` (no filter) weighs 1.
    Work that scales with a filter -- compiling it, or evaluating it per row -- scales with this,
    which a plain node count misses for long patterns and string constants.
    """
    return _cost(wire, None)


def _cost(wire: object, stop_above: int | None) -> int:
    """:func:`filter_cost`, giving up (returning early) once the total exceeds ``stop_above``."""
    total, stack = 0, [wire]
    while stack:
        w = stack.pop()
        if isinstance(w, (list, tuple)):
            total += 1
            stack.extend(w)
        elif isinstance(w, (str, bytes, bytearray)):
            total += max(1, len(w))
        else:
            total += 1
        if stop_above is not None and total > stop_above:
            break
    return total


def _check_cost(wire: object) -> None:
    if _cost(wire, MAX_FILTER_COST) > MAX_FILTER_COST:
        raise _bad(f"weighs more than {MAX_FILTER_COST} (nodes plus the lengths of strings)")


def compile_filter(wire: object) -> Callable[[int, bytes], bool]:
    """Validate an untrusted filter and compile it; ``None`` means no filter (every row passes)."""
    if wire is None:
        return lambda key, value: True
    _check_cost(wire)
    c = _Compiler()
    fn = c.condition(wire, 1)
    return _with_row_cache(fn, c.uses_json)


def compile_expr(wire: object) -> Callable[[int, bytes], int | float | None]:
    """Validate and compile a numeric expression; the result is None (NULL) when undefined."""
    _check_cost(wire)
    c = _Compiler()
    fn = c.number(wire, 1)
    return _with_row_cache(fn, c.uses_json)


def compile_value(wire: object) -> Callable[[int, bytes], Any]:
    """Validate and compile any operand into the value a projection shows (see :func:`compile_exprs`)."""
    _check_cost(wire)
    c = _Compiler()
    fn = c.value(wire, 1)
    return _with_row_cache(fn, c.uses_json)


def compile_exprs(wires: list, values: object = ()) -> Callable[[int, bytes], list]:
    """Like :func:`compile_expr` for several expressions, parsing a row's JSON at most once.

    The expressions at the indexes in ``values`` may be any operand, not just a number: they
    give what a projection shows -- a JSON string, number or boolean as it is, an object or
    array as its compact JSON text, ``value`` as bytes, NULL as None.
    """
    c = _Compiler()
    if type(wires) is not list:
        raise QueryError("bad expression list: expected a list")
    _check_cost(wires)
    fns = [c.value(w, 1) if i in values else c.number(w, 1) for i, w in enumerate(wires)]
    return _with_row_cache(lambda k, v, d: [f(k, v, d) for f in fns], c.uses_json)


def _with_row_cache(fn: RowFn, uses_json: bool) -> Callable[[int, bytes], Any]:
    # A fresh one-slot cache per row lets every JSON operand share one lazy json.loads of the
    # value, without shared mutable state (the compiled callable may run on several threads).
    if uses_json:
        return lambda key, value: fn(key, value, [_UNPARSED])
    return lambda key, value: fn(key, value, None)


class _Operand(NamedTuple):
    kind: str
    fn: RowFn | None  # None for a constant
    const: Any = None


def _bad(message: str) -> QueryError:
    return QueryError(f"bad filter: {message}")


class _Compiler:
    """One compilation: counts nodes against the budget and notes whether JSON is needed."""

    def __init__(self) -> None:
        self.nodes = 0
        self.like_segments = 0
        self.uses_json = False

    def _count(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise _bad(f"nested deeper than {MAX_DEPTH} levels")
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _bad(f"more than {MAX_NODES} nodes")

    def _node(self, w: object, depth: int) -> list:
        """Count one node and check it is ``[operator_name, ...]``."""
        self._count(depth)
        if not isinstance(w, (list, tuple)) or not w or type(w[0]) is not str:
            raise _bad(f"expected a list starting with an operator name, got {w!r:.80}")
        return list(w)

    # conditions

    def condition(self, w: object, depth: int) -> RowFn:
        w = self._node(w, depth)
        op, args = w[0], w[1:]
        if op in ("and", "or"):
            if not args:
                raise _bad(f"'{op}' needs at least one operand")
            return _combine(op, [self.condition(a, depth + 1) for a in args])
        if op == "not":
            _arity(w, 1)
            inner = self.condition(args[0], depth + 1)
            return lambda k, v, d: not inner(k, v, d)
        if op == "bool":
            _arity(w, 1)
            if type(args[0]) is not bool:
                raise _bad("'bool' takes true or false")
            result = args[0]
            return lambda k, v, d: result
        if op == "cmp":
            _arity(w, 3)
            if type(args[0]) is not str or args[0] not in _CMP:
                raise _bad(f"unknown comparison {args[0]!r:.20}")
            return self._compare(args[0], self.operand(args[1], depth + 1), self.operand(args[2], depth + 1))
        if op == "in":
            _arity(w, 2)
            return self._in(self.operand(args[0], depth + 1), args[1], depth + 1)
        if op in _MATCH:
            _arity(w, 2)
            return self._match(op, self.operand(args[0], depth + 1), self.operand(args[1], depth + 1))
        if op == "isnull":
            _arity(w, 1)
            x = self.operand(args[0], depth + 1)
            if x.kind != JSON:
                raise _bad("'isnull' applies to a json operand")
            get = x.fn
            return lambda k, v, d: get(k, v, d) is None
        raise _bad(f"unknown operator {op!r:.20}")

    def _compare(self, op: str, a: _Operand, b: _Operand) -> RowFn:
        _check_comparable(op, a.kind, b.kind)
        a, b = _as_bytes_if(b.kind == BYTES, a), _as_bytes_if(a.kind == BYTES, b)
        if a.fn is None and b.fn is None:
            result = _same_kind_compare(_CMP[op], op, a.const, b.const)
            return lambda k, v, d: result
        if a.fn is None:  # keep the varying side on the left
            a, b, op = b, a, _FLIP[op]
        cmp, get = _CMP[op], a.fn
        if b.fn is not None:
            other = b.fn
            return lambda k, v, d: _same_kind_compare(cmp, op, get(k, v, d), other(k, v, d))
        c = b.const
        if a.kind == BYTES:
            return lambda k, v, d: cmp(get(k, v, d), c)
        if get is _key:  # the commonest residual: a key bound the ranges could not absorb
            return lambda k, v, d: cmp(k, c)
        if b.kind == NUM:
            def compare_number(k: int, v: bytes, d: Any) -> bool:
                x = get(k, v, d)
                return (type(x) is int or type(x) is float) and cmp(x, c)
            return compare_number
        want = str if b.kind == STR else bool
        return lambda k, v, d: type(t := get(k, v, d)) is want and cmp(t, c)

    def _in(self, x: _Operand, items: object, depth: int) -> RowFn:
        if not isinstance(items, (list, tuple)):
            raise _bad("'in' takes an operand and a list of constants")
        constants = [self.operand(item, depth + 1) for item in items]
        if any(c.fn is not None for c in constants):
            raise _bad("'in' list items must be constants")
        x = _as_bytes_if(any(c.kind == BYTES for c in constants), x)
        members: dict[type, set] = {}
        for c in constants:
            _check_comparable("=", x.kind, c.kind)
            value = _as_bytes_if(x.kind == BYTES, c).const
            members.setdefault(float if type(value) is int else type(value), set()).add(value)
        # Numbers share one set (1 == 1.0); booleans have their own so JSON true never equals 1.
        by_type = {t: frozenset(s) for t, s in members.items()}
        if float in by_type:
            by_type[int] = by_type[float]
        if x.fn is None:
            result = x.const in by_type.get(type(x.const), ())
            return lambda k, v, d: result
        get = x.fn
        if get is _key:
            numbers = by_type.get(int, frozenset())
            return lambda k, v, d: k in numbers
        return lambda k, v, d: (t := get(k, v, d)) in by_type.get(type(t), ())

    def _match(self, op: str, target: _Operand, pattern: _Operand) -> RowFn:
        if target.fn is None or target.kind not in (BYTES, JSON):
            raise _bad(f"'{op}' applies to [\"value\"] or a json operand")
        if pattern.fn is not None or pattern.kind not in (STR, BYTES):
            raise _bad(f"'{op}' needs a string or bytes pattern")
        p = pattern.const
        try:  # the size tests first: they are cheap, and these patterns come from untrusted clients
            check_pattern_size(p)
            if op == "like":
                self.like_segments += p.count("%" if isinstance(p, str) else b"%") + 1
                if self.like_segments > MAX_FILTER_LIKE_SEGMENTS:
                    raise _bad(f"more than {MAX_FILTER_LIKE_SEGMENTS} LIKE segments (% wildcards plus one "
                               "per pattern)")
            if target.kind == BYTES:
                p = _utf8(p) if isinstance(p, str) else p
            elif not isinstance(p, str):
                raise _bad(f"'{op}' on a json operand needs a string pattern")
            test = compile_like(p) if op == "like" else _starts_with(p) if op == "starts" else _contains(p)
        except QueryError as e:
            raise e if e.message.startswith("bad filter: ") else _bad(e.message) from None
        get = target.fn
        if target.kind == BYTES:
            return lambda k, v, d: test(get(k, v, d))
        return lambda k, v, d: type(s := get(k, v, d)) is str and test(s)

    # operands

    def operand(self, w: object, depth: int) -> _Operand:
        """Any operand: a constant, a column, a JSON field or a numeric expression."""
        constant = _constant(w)
        if constant is not None:
            self._count(depth)
            return constant
        head = w[0] if isinstance(w, (list, tuple)) and w else None
        if head == "value":
            _arity(self._node(w, depth), 0)
            return _Operand(BYTES, _value)
        if head == "json":
            return _Operand(JSON, self._json(w, depth))
        if head == "jsontext":
            # JSON kind: it compares with strings (or other fields) by the same run-time rules
            return _Operand(JSON, _as_text(self._json(w, depth)))
        return _Operand(NUM, self.number(w, depth))

    def value(self, w: object, depth: int) -> RowFn:
        """Any operand as a projection shows it: JSON objects and arrays become their JSON text."""
        x = self.operand(w, depth)
        if x.fn is None:
            c = x.const
            return lambda k, v, d: c
        if x.kind == JSON:
            get = x.fn
            return lambda k, v, d: _shown_json(get(k, v, d))
        return x.fn

    def number(self, w: object, depth: int) -> RowFn:
        """A numeric operand; JSON values that are not numbers become None."""
        constant = _constant(w)
        if constant is not None:
            self._count(depth)
            if constant.kind != NUM:
                raise _bad(f"expected a number, got {w!r:.40}")
            c = constant.const
            return lambda k, v, d: c
        w = self._node(w, depth)
        op = w[0]
        if op == "key":
            _arity(w, 0)
            return _key
        if op == "len":
            _arity(w, 0)
            return _length
        if op == "json":
            get = self._json(w, depth, counted=True)
            return lambda k, v, d: x if type(x := get(k, v, d)) is int or type(x) is float else None
        if op in _ARITH:
            _arity(w, 2)
            return _arith(_ARITH[op], self.number(w[1], depth + 1), self.number(w[2], depth + 1))
        if op == "neg":
            _arity(w, 1)
            inner = self.number(w[1], depth + 1)
            return lambda k, v, d: None if (x := inner(k, v, d)) is None else -x
        if op == "value":
            raise _bad("value is bytes, not a number")
        if op == "jsontext":
            raise _bad("a jsontext operand is text, not a number")
        raise _bad(f"unknown operand {op!r:.20}")

    def _json(self, w: object, depth: int, counted: bool = False) -> RowFn:
        """The getter of a ``["json", path]`` operand (its node already counted if ``counted``)."""
        w = w if counted else self._node(w, depth)
        _arity(w, 1)
        self.uses_json = True
        return _json_getter(self._path(w[1], depth + 1))

    def _path(self, path: object, depth: int) -> tuple[str | int, ...]:
        if not isinstance(path, (list, tuple)) or not path:
            raise _bad("a json path is a non-empty list of member names and array indexes")
        for step in path:
            self._count(depth)
            if not (type(step) is str or (type(step) is int and 0 <= step <= _INT_MAX)):
                raise _bad(f"bad json path step {step!r:.40}")
        return tuple(path)


def _arity(w: list, n: int) -> None:
    if len(w) != n + 1:
        raise _bad(f"'{w[0]}' takes {n} operand{'s' if n != 1 else ''}, got {len(w) - 1}")


def _constant(w: object) -> _Operand | None:
    """The operand for a wire constant, or None when ``w`` is not a constant."""
    t = type(w)
    if t is bool:
        return _Operand(BOOL, None, w)
    if t is int:
        if not _INT_MIN <= w <= _INT_MAX:
            raise _bad("integer constant outside the 64-bit range")
        return _Operand(NUM, None, w)
    if t is float:
        if not math.isfinite(w):
            raise _bad("numbers must be finite")
        return _Operand(NUM, None, w)
    if t is str:
        return _Operand(STR, None, w)
    if isinstance(w, (list, tuple)) and len(w) == 2 and w[0] == "bytes":
        if type(w[1]) is not str or not _HEX.fullmatch(w[1]):
            raise _bad("'bytes' takes a string of hex digit pairs")
        return _Operand(BYTES, None, bytes.fromhex(w[1]))
    if w is None:
        raise _bad("null is not an operand; use isnull")
    return None


def _as_bytes_if(condition: bool, x: _Operand) -> _Operand:
    """A str constant compared with bytes is compared as its UTF-8 encoding."""
    if condition and x.kind == STR:
        return _Operand(BYTES, None, _utf8(x.const))
    return x


def _utf8(s: str) -> bytes:
    try:
        return s.encode()
    except UnicodeEncodeError:  # a lone surrogate: no UTF-8 form, so no value can equal it
        raise _bad("a string constant is not valid Unicode (it holds a lone surrogate)") from None


def _check_comparable(op: str, a: str, b: str) -> None:
    pair = {a, b}
    if pair <= {NUM, JSON} or pair <= {STR, JSON}:
        return
    if (pair <= {BOOL, JSON} or (BYTES in pair and pair <= {BYTES, STR})) and op in ("=", "!="):
        return
    raise _bad(f"cannot compare {a} with {b} using {op}")


def _same_kind_compare(cmp: Callable[[Any, Any], bool], op: str, x: Any, y: Any) -> bool:
    """The comparison rule for two run-time values (see the module docstring)."""
    tx, ty = type(x), type(y)
    if tx in _NUMBER_TYPES and ty in _NUMBER_TYPES:
        return cmp(x, y)
    if tx is not ty or x is None:
        return False
    if tx is str or tx is bytes:
        return cmp(x, y)
    return tx is bool and op in ("=", "!=") and cmp(x, y)


def _combine(op: str, fns: list[RowFn]) -> RowFn:
    if len(fns) == 1:
        return fns[0]
    if len(fns) == 2:
        f, g = fns
        if op == "and":
            return lambda k, v, d: f(k, v, d) and g(k, v, d)
        return lambda k, v, d: f(k, v, d) or g(k, v, d)
    if op == "and":
        return lambda k, v, d: all(f(k, v, d) for f in fns)
    return lambda k, v, d: any(f(k, v, d) for f in fns)


def _starts_with(prefix: str | bytes) -> Callable[[Any], bool]:
    return lambda s: s.startswith(prefix)


def _contains(part: str | bytes) -> Callable[[Any], bool]:
    return lambda s: part in s


def _arith(fn: Callable[[Any, Any], Any], left: RowFn, right: RowFn) -> RowFn:
    def arith(k: int, v: bytes, d: Any) -> int | float | None:
        a = left(k, v, d)
        if a is None:
            return None
        b = right(k, v, d)
        if b is None:
            return None
        try:
            return fn(a, b)
        except (ZeroDivisionError, OverflowError):
            return None
    return arith


def _json_text(x: Any) -> str | None:
    """PostgreSQL's ``->>``: a JSON string as it is, any other value as its JSON text, null as NULL."""
    if x is None or type(x) is str:
        return x
    return json.dumps(x, ensure_ascii=False, separators=(", ", ": "))


def _as_text(get: RowFn) -> RowFn:
    return lambda k, v, d: _json_text(get(k, v, d))


def _shown_json(x: Any) -> Any:
    """A JSON value as a projection gives it: objects and arrays as their text (they are not scalars)."""
    return _json_text(x) if type(x) is dict or type(x) is list else x


def _key(k: int, v: bytes, d: Any) -> int:
    return k


def _value(k: int, v: bytes, d: Any) -> bytes:
    return v


def _length(k: int, v: bytes, d: Any) -> int:
    return len(v)


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not JSON")


# One decoder for all rows: json.loads with keyword arguments would build a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_reject_constant)


def _load(value: bytes) -> Any:
    try:
        return _DECODER.decode(value.decode("utf-8"))
    except (ValueError, RecursionError):  # not UTF-8, not JSON, or nested too deeply to parse
        return _INVALID


def _json_getter(path: tuple[str | int, ...]) -> RowFn:
    if len(path) == 1 and type(path[0]) is str:
        name = path[0]

        def get_member(k: int, v: bytes, d: list) -> Any:
            doc = d[0]
            if doc is _UNPARSED:
                doc = d[0] = _load(v)
            return doc.get(name) if type(doc) is dict else None
        return get_member

    def get_path(k: int, v: bytes, d: list) -> Any:
        doc = d[0]
        if doc is _UNPARSED:
            doc = d[0] = _load(v)
        for step in path:
            if type(step) is str:
                if type(doc) is not dict:
                    return None
                doc = doc.get(step)
            elif type(doc) is list and step < len(doc):
                doc = doc[step]
            else:
                return None
        return doc
    return get_path

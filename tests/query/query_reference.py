"""A deliberately naive reference model of the documented filter semantics, shared by the tests.

It interprets both the wire form (``ref``) and the AST (``holds``), independently of the compiler.
"""

import functools
import json
import operator
import re

from raftkv.query import ast

OPS = {"=": operator.eq, "!=": operator.ne, "<": operator.lt, "<=": operator.le, ">": operator.gt,
       ">=": operator.ge}


def no_nan(name: str):
    raise ValueError(name)  # NaN and Infinity are not JSON: the document counts as invalid


@functools.cache
def parse_json(value: bytes):
    """The parsed document, or an exception instance for invalid JSON (cached: rows repeat a lot)."""
    try:
        return json.loads(value.decode("utf-8"), parse_constant=no_nan)
    except ValueError as e:
        return e


def ref_json(value: bytes, path: list):
    doc = parse_json(value)
    if isinstance(doc, ValueError):
        return None
    for step in path:
        if isinstance(step, str) and isinstance(doc, dict):
            doc = doc.get(step)
        elif isinstance(step, int) and isinstance(doc, list) and step < len(doc):
            doc = doc[step]
        else:
            return None
    return doc


def ref_text(x):
    """``->>``: PostgreSQL's text of a JSON value (a string as it is; JSON null is NULL)."""
    if x is None or isinstance(x, str):
        return x
    return json.dumps(x, ensure_ascii=False)


def shown(x):
    """A JSON value as a projection shows it: objects and arrays as their JSON text."""
    return ref_text(x) if isinstance(x, (dict, list)) else x


def is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def ref_operand(w, k: int, v: bytes):
    if not isinstance(w, list):
        return w
    op = w[0]
    if op == "bytes":
        return bytes.fromhex(w[1])
    if op == "key":
        return k
    if op == "value":
        return v
    if op == "len":
        return len(v)
    if op == "json":
        return ref_json(v, w[1])
    if op == "jsontext":
        return ref_text(ref_json(v, w[1]))
    args = [ref_operand(a, k, v) for a in w[1:]]
    if not all(is_number(a) for a in args):
        return None
    if op == "neg":
        return -args[0]
    if op == "/" and args[1] == 0:
        return None
    return {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[op](*args)


def kind(x):
    if is_number(x):
        return "num"
    return {str: "str", bool: "bool", bytes: "bytes"}.get(type(x))


def ref_cmp(op: str, a, b) -> bool:
    if isinstance(a, bytes) and isinstance(b, str):
        b = b.encode()
    if isinstance(b, bytes) and isinstance(a, str):
        a = a.encode()
    if kind(a) is None or kind(a) != kind(b):
        return False
    if kind(a) == "bool" and op not in ("=", "!="):
        return False
    return OPS[op](a, b)


def ref_like(pattern, text) -> bool:
    regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c) for c in pattern)
    return re.fullmatch(regex, text, re.DOTALL) is not None


def ref(w, k: int, v: bytes) -> bool:
    op = w[0]
    if op == "and":
        return all(ref(x, k, v) for x in w[1:])
    if op == "or":
        return any(ref(x, k, v) for x in w[1:])
    if op == "not":
        return not ref(w[1], k, v)
    if op == "bool":
        return w[1]
    if op == "cmp":
        return ref_cmp(w[1], ref_operand(w[2], k, v), ref_operand(w[3], k, v))
    if op == "in":
        x = ref_operand(w[1], k, v)
        return any(ref_cmp("=", x, ref_operand(c, k, v)) for c in w[2])
    if op == "isnull":
        return ref_operand(w[1], k, v) is None
    return ref_match(op, ref_operand(w[1], k, v), ref_operand(w[2], k, v))


def ref_match(kind: str, target, pattern) -> bool:
    if isinstance(target, bytes):
        target = target.decode("latin-1")
        pattern = (pattern.encode() if isinstance(pattern, str) else pattern).decode("latin-1")
    elif not isinstance(target, str):
        return False
    if kind == "like":
        return ref_like(pattern, target)
    return target.startswith(pattern) if kind == "starts" else pattern in target


def value_of(e: ast.Expr, k: int, v: bytes, now: int):
    """The AST-level value of an operand."""
    match e:
        case ast.Literal(value=x):
            return x
        case ast.Column(name="key"):
            return k
        case ast.Column(name="value"):
            return v
        case ast.JsonField(path=path, text=text):
            x = ref_json(v, list(path))
            return ref_text(x) if text else x
        case ast.Call(name="now"):
            return now
        case ast.Call(name="length"):
            return len(v)
        case ast.Neg(operand=x):
            x = value_of(x, k, v, now)
            return -x if is_number(x) else None
        case ast.Arith(op=op, left=left, right=right):
            a, b = value_of(left, k, v, now), value_of(right, k, v, now)
            if not (is_number(a) and is_number(b)) or (op == "/" and b == 0):
                return None
            return {"+": operator.add, "-": operator.sub, "*": operator.mul, "/": operator.truediv}[op](a, b)
    raise AssertionError(e)


def holds(e: ast.Expr, k: int, v: bytes, now: int) -> bool:
    """The AST-level truth of a condition."""
    def val(x):
        return value_of(x, k, v, now)

    match e:
        case ast.Literal(value=b):
            return b
        case ast.And(items=items):
            return all(holds(i, k, v, now) for i in items)
        case ast.Or(items=items):
            return any(holds(i, k, v, now) for i in items)
        case ast.Not(operand=x):
            return not holds(x, k, v, now)
        case ast.Compare(op=op, left=left, right=right):
            return ref_cmp(op, val(left), val(right))
        case ast.Between(operand=x, low=lo, high=hi, negated=neg):
            return neg != (ref_cmp(">=", val(x), val(lo)) and ref_cmp("<=", val(x), val(hi)))
        case ast.InList(operand=x, items=items, negated=neg):
            return neg != any(ref_cmp("=", val(x), val(i)) for i in items)
        case ast.Match(kind=kind, operand=x, pattern=p, negated=neg):
            return neg != ref_match(kind, val(x), val(p))
        case ast.IsNull(operand=x, negated=neg):
            return neg != (val(x) is None)
    raise AssertionError(e)


def model_order(pairs: list[tuple[int, object]], descending: bool) -> list[int]:
    """Keys of ``(key, sort value)`` pairs in the documented order: kinds booleans, numbers,
    strings, NULL (DESC reverses values and kinds, so NULL first); ties by key ascending."""
    def kind(x: object) -> int:
        if isinstance(x, bool):
            return 0
        if isinstance(x, (int, float)):
            return 1
        return 2 if isinstance(x, str) else 3 if x is None else 4

    by_key = sorted(pairs, key=lambda p: p[0])
    # Python's sort is stable also with reverse=True: ties keep ascending key order.
    ordered = sorted(by_key, key=lambda p: (kind(p[1]), 0 if p[1] is None else p[1]), reverse=descending)
    return [k for k, _ in ordered]

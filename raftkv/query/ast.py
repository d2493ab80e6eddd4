"""The query AST: frozen dataclasses for statements and expressions, and their SQL rendering.

Every node may carry ``pos`` (1-based line, column in the source) for error messages; it is
keyword-only and ignored by ``==`` so tests can compare parsed trees with hand-built ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field

Pos = tuple[int, int]

# Aggregate function names; every other call is a scalar function (see check.py for the full list).
AGGREGATES = frozenset({"count", "min", "max", "sum", "avg"})


@dataclass(frozen=True)
class Node:
    """Base of every AST node."""

    pos: Pos | None = field(default=None, compare=False, repr=False, kw_only=True)

    def at(self) -> str:
        """``"line L, column C: "`` to prefix an error message, or "" when the position is unknown."""
        return f"line {self.pos[0]}, column {self.pos[1]}: " if self.pos else ""


# --- expressions ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Literal(Node):
    """A constant; ``text`` keeps the source spelling (e.g. ``INTERVAL '5 minutes'``) for rendering."""

    value: int | float | str | bytes | bool | None
    text: str | None = field(default=None, compare=False, repr=False, kw_only=True)


@dataclass(frozen=True)
class Column(Node):
    """``key`` or ``value``."""

    name: str


@dataclass(frozen=True)
class JsonField(Node):
    """``value->'a'->0``: object member names (str) and array indexes (int).

    ``text`` marks ``->>`` on the last step: the field as text (a string stays itself, any other
    JSON value becomes its JSON text), as in PostgreSQL.
    """

    path: tuple[str | int, ...]
    text: bool = False


@dataclass(frozen=True)
class Name(Node):
    """A bare name: a SELECT alias in GROUP BY / ORDER BY, or a mistake such as ``time`` (check.py)."""

    name: str


@dataclass(frozen=True)
class Star(Node):
    """``*`` in ``SELECT *`` and ``count(*)``."""


@dataclass(frozen=True)
class Call(Node):
    """A function call such as ``now()``, ``length(value)`` or the aggregate ``avg(value->'t')``."""

    name: str
    args: tuple[Expr, ...]


@dataclass(frozen=True)
class Arith(Node):
    """``left op right`` with op one of ``+ - * /``."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Neg(Node):
    """Unary minus."""

    operand: Expr


@dataclass(frozen=True)
class Compare(Node):
    """``left op right`` with op one of ``= != < <= > >=``."""

    op: str
    left: Expr
    right: Expr


@dataclass(frozen=True)
class Between(Node):
    """``operand [NOT] BETWEEN low AND high`` (inclusive)."""

    operand: Expr
    low: Expr
    high: Expr
    negated: bool = False


@dataclass(frozen=True)
class InList(Node):
    """``operand [NOT] IN (items...)``."""

    operand: Expr
    items: tuple[Expr, ...]
    negated: bool = False


@dataclass(frozen=True)
class Match(Node):
    """A text match; ``kind`` is ``like``, ``starts`` (STARTS WITH) or ``contains``."""

    kind: str
    operand: Expr
    pattern: Expr
    negated: bool = False


@dataclass(frozen=True)
class IsNull(Node):
    """``operand IS [NOT] NULL``."""

    operand: Expr
    negated: bool = False


@dataclass(frozen=True)
class Not(Node):
    """Boolean negation."""

    operand: Expr


@dataclass(frozen=True)
class And(Node):
    """Conjunction of two or more conditions."""

    items: tuple[Expr, ...]


@dataclass(frozen=True)
class Or(Node):
    """Disjunction of two or more conditions."""

    items: tuple[Expr, ...]


Expr = (Literal | Column | JsonField | Name | Star | Call | Arith | Neg | Compare | Between | InList | Match | IsNull
        | Not | And | Or)


# --- statements -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SelectItem(Node):
    """One output column: an expression (or ``Star``) and an optional alias."""

    expr: Expr
    alias: str | None = None


@dataclass(frozen=True)
class Select(Node):
    """``SELECT items FROM kv [WHERE] [GROUP BY] [ORDER BY e dir] [LIMIT n] [OFFSET m]``.

    ``order`` is None without ORDER BY, else ``"asc"`` or ``"desc"``; ``order_by`` is the ORDER BY
    expression with aliases replaced (check.py decides what can be ordered by: orders the storage
    gives, a grouped query's expressions, or a value of the row with a bounded LIMIT).
    Aliases in ``group_by`` are replaced too. ``group_by`` is the first GROUP BY expression and
    ``more_groups`` the others; :attr:`groups` gives them all.
    """

    items: tuple[SelectItem, ...]
    where: Expr | None = None
    group_by: Expr | None = None
    order: str | None = None
    limit: int | None = None
    offset: int | None = None
    order_by: Expr | None = field(default=None, compare=False, repr=False)
    more_groups: tuple[Expr, ...] = ()

    @property
    def groups(self) -> tuple[Expr, ...]:
        """Every GROUP BY expression, in the order written (empty without GROUP BY)."""
        return () if self.group_by is None else (self.group_by, *self.more_groups)


@dataclass(frozen=True)
class ConstantSelect(Node):
    """``SELECT items`` without FROM: constants only, such as ``now()`` or ``to_timestamp(now())``."""

    items: tuple[SelectItem, ...]


@dataclass(frozen=True)
class Delete(Node):
    """``DELETE FROM kv WHERE ...``."""

    where: Expr | None


@dataclass(frozen=True)
class Insert(Node):
    """``INSERT INTO kv VALUES (k, v), ...`` and its alias ``PUT k v``."""

    rows: tuple[tuple[Expr, Expr], ...]


@dataclass(frozen=True)
class Get(Node):
    """``GET k``."""

    key: Expr


@dataclass(frozen=True)
class Explain(Node):
    """``EXPLAIN`` of a SELECT or DELETE."""

    statement: Select | ConstantSelect | Delete


@dataclass(frozen=True)
class Show(Node):
    """``SHOW SHARDS | NODES | STATUS``; ``what`` is lower case."""

    what: str


@dataclass(frozen=True)
class Split(Node):
    """``SPLIT SHARD id [AT key]``: split a range shard in two; ``at`` None lets its leader pick."""

    shard_id: str
    at: Expr | None = None


COPY_FORMATS = ("csv", "jsonl")  # the file formats of COPY (and raftkv import/export)
COPY_KEY_FORMATS = ("int", "timestamp")  # how their keys are written


@dataclass(frozen=True)
class Copy(Node):
    """``COPY kv FROM 'path'``, ``COPY kv TO 'path'`` or ``COPY (SELECT ...) TO 'path'``, with options.

    The file is read or written by the client process (psql's ``\\copy``), so no shard plans
    it: :mod:`raftkv.bulk` runs it. ``direction`` is ``"from"`` or ``"to"``; ``query`` is the
    SELECT whose rows a ``TO`` writes (``SELECT * FROM kv`` for ``COPY kv TO``) and None for
    ``FROM``. ``format`` is None when the statement does not say (the file name decides),
    else ``"csv"`` or ``"jsonl"``; ``key_format`` is ``"int"`` or ``"timestamp"``.
    """

    direction: str
    path: str
    query: Select | ConstantSelect | None = None
    format: str | None = None
    header: bool = False
    key_format: str = "int"


Statement = Select | ConstantSelect | Delete | Insert | Get | Explain | Show | Split | Copy


# --- rendering ------------------------------------------------------------------------------------

# Binding strength, loosest first; a child binding looser than its parent gets parentheses.
_OR, _AND, _NOT, _PRED, _ADD, _MUL, _NEG, _ATOM = range(8)


def render(expr: Expr) -> str:
    """The expression as query-language text (parenthesised only where needed)."""
    return _render(expr)[0]


def _render(e: Expr) -> tuple[str, int]:
    match e:
        case Literal(value=v, text=text):
            text = text if text is not None else _literal(v)
            return text, (_NEG if text.startswith("-") else _ATOM)
        case Column(name=name):
            return name, _ATOM
        case JsonField(path=path, text=text):
            steps = [f"->{_literal(step)}" for step in path]
            if text:
                steps[-1] = f"->>{_literal(path[-1])}"
            return "value" + "".join(steps), _ATOM
        case Name(name=name):
            return name, _ATOM
        case Star():
            return "*", _ATOM
        case Call(name=name, args=args):
            return f"{name}({', '.join(render(a) for a in args)})", _ATOM
        case Arith(op=op, left=left, right=right):
            prec = _ADD if op in "+-" else _MUL
            # Left-associative: the right child needs parentheses already at equal strength.
            return f"{_wrap(left, prec)} {op} {_wrap(right, prec + 1, after_minus=True)}", prec
        case Neg(operand=x):
            return f"-{_wrap(x, _NEG, after_minus=True)}", _NEG
        case Compare(op=op, left=left, right=right):
            return f"{_wrap(left, _ADD)} {op} {_wrap(right, _ADD)}", _PRED
        case Between(operand=x, low=lo, high=hi, negated=neg):
            kw = "NOT BETWEEN" if neg else "BETWEEN"
            return f"{_wrap(x, _ADD)} {kw} {_wrap(lo, _ADD)} AND {_wrap(hi, _ADD)}", _PRED
        case InList(operand=x, items=items, negated=neg):
            kw = "NOT IN" if neg else "IN"
            return f"{_wrap(x, _ADD)} {kw} ({', '.join(render(i) for i in items)})", _PRED
        case Match(kind=kind, operand=x, pattern=p, negated=neg):
            kw = {"like": "LIKE", "starts": "STARTS WITH", "contains": "CONTAINS"}[kind]
            return f"{_wrap(x, _ADD)} {'NOT ' if neg else ''}{kw} {_wrap(p, _ADD)}", _PRED
        case IsNull(operand=x, negated=neg):
            return f"{_wrap(x, _ADD)} IS {'NOT ' if neg else ''}NULL", _PRED
        case Not(operand=x):
            return f"NOT {_wrap(x, _NOT)}", _NOT
        case And(items=items):
            return " AND ".join(_wrap(i, _AND + 1) for i in items), _AND
        case Or(items=items):
            return " OR ".join(_wrap(i, _OR + 1) for i in items), _OR
    raise TypeError(f"not an expression: {e!r}")


def _wrap(e: Expr, min_prec: int, after_minus: bool = False) -> str:
    text, prec = _render(e)
    # "a - -5" would start a "--" comment, so a leading minus after an operator is parenthesised.
    if prec < min_prec or (after_minus and text.startswith("-")):
        return f"({text})"
    return text


def _literal(v: object) -> str:
    if v is None:
        return "NULL"
    if isinstance(v, bool):
        return "TRUE" if v else "FALSE"
    if isinstance(v, str):
        return "'" + v.replace("'", "''") + "'"
    if isinstance(v, bytes):
        return f"x'{v.hex()}'"
    return repr(v)


def timestamp_arg(expr: Expr) -> Expr | None:
    """The argument of ``to_timestamp(arg)``, or None when ``expr`` is not such a call."""
    if isinstance(expr, Call) and expr.name == "to_timestamp" and len(expr.args) == 1:
        return expr.args[0]
    return None


def is_constant(expr: Expr) -> bool:
    """Whether ``expr`` depends on no row: literals, ``now()`` and arithmetic over them."""
    match expr:
        case Literal():
            return True
        case Call(name="now", args=()):
            return True
        case Neg(operand=x):
            return is_constant(x)
        case Arith(left=left, right=right):
            return is_constant(left) and is_constant(right)
    return False

"""Query text → checked AST, with error messages that point at the offending token.

This is the only module that imports lark. The grammar lives in ``grammar/query.lark`` at the
top of the repository.
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path

from lark import Lark, Token, Transformer, v_args
from lark.exceptions import UnexpectedCharacters, UnexpectedInput, UnexpectedToken, VisitError
from lark.lexer import PatternStr

from ..errors import QueryError
from . import ast
from .check import check, resolve_select
from .literals import parse_bytes, parse_interval, parse_number, parse_string, parse_timestamp


def _grammar_path() -> Path:
    """The repository's ``grammar/query.lark``; a non-editable install ships it under ``<prefix>/share/raftkv``."""
    in_repo = Path(__file__).resolve().parents[2] / "grammar" / "query.lark"
    return in_repo if in_repo.exists() else Path(sys.prefix) / "share" / "raftkv" / "query.lark"


GRAMMAR_PATH = _grammar_path()
TOO_DEEP = "the query is nested too deeply"
# Statement bounds: parsing and planning are linear (or n log n) in these, and the cost of a
# statement reaches every shard it touches, so a production store refuses more with a clear error.
# 4 Mi characters: room for one maximal (1 MiB) value written as a hex byte string x'...'.
MAX_QUERY_CHARS = 4 << 20
MAX_IN_ITEMS = 100_000
_INDEX_MAX = 2**64 - 1  # a JSON array index must travel in a filter as a 64-bit int

# Human names for the grammar's regex terminals; string terminals are named after their text.
_TERMINAL_NAMES = {
    "NUMBER": "a number",
    "STRING": "a string",
    "BYTES": "a byte string",
    "NAME": "a name",
    "COMP_OP": "a comparison operator",
    "$END": "end of input",
}
# Terminals that can start an expression; when most of them are expected we just say so.
_EXPRESSION_START = {"NUMBER", "STRING", "BYTES", "NAME", "KEY", "VALUE", "NOT", "LPAR", "MINUS", "TRUE",
                     "FALSE", "NULL", "TIMESTAMP", "INTERVAL"}
SPLIT_KEY_HINT = "a constant number such as 42, 0x2a or TIMESTAMP '2026-11-21'"


@functools.cache
def _lark() -> Lark:
    # LALR(1): the grammar has no conflicts, so we get a linear-time parser whose errors name the
    # exact tokens acceptable at the failure point; Earley's generality would buy nothing here.
    # The basic (not contextual) lexer keeps keywords reserved everywhere, so a misplaced keyword
    # is reported as itself ("unexpected FROM") instead of being quietly read as a name.
    return Lark(GRAMMAR_PATH.read_text(encoding="utf-8"), parser="lalr", lexer="basic",
                start=["one", "script"], maybe_placeholders=True, propagate_positions=True)


def parse(text: str) -> ast.Statement:
    """Parse and check one statement (an optional trailing ``;`` is allowed)."""
    return _parse(text, "one")


def parse_script(text: str) -> list[ast.Statement]:
    """Parse and check a ``;``-separated script; empty statements are skipped."""
    return _parse(text, "script")


def _parse(text: str, start: str):
    if not isinstance(text, str):
        raise QueryError(f"a query is text, not {type(text).__name__}")
    if len(text) > MAX_QUERY_CHARS:
        raise QueryError(f"the query is too long: {len(text)} characters; at most {MAX_QUERY_CHARS} are allowed")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:  # a lone surrogate: no constant or value could hold it
        line = text.count("\n", 0, e.start) + 1
        column = e.start - (text.rfind("\n", 0, e.start) + 1) + 1
        raise _located_error(text, line, column, "the query is not valid Unicode (a lone surrogate)") from None
    try:
        tree = _lark().parse(text, start=start)
        result = _Builder().transform(tree)
        for statement in result if start == "script" else [result]:
            check(statement)
    except UnexpectedInput as e:
        raise _syntax_error(text, e) from None
    except VisitError as e:
        if isinstance(e.orig_exc, QueryError):
            raise _locate(text, e.orig_exc) from None
        if isinstance(e.orig_exc, RecursionError):
            raise QueryError(TOO_DEEP) from None
        raise _internal_error(text, e) from None
    except QueryError as e:
        raise _locate(text, e) from None
    except RecursionError:  # the tree walks are recursive; a few hundred levels is plenty
        raise QueryError(TOO_DEEP) from None
    return result


# --- errors ---------------------------------------------------------------------------------------


def _snippet(text: str, line: int, column: int) -> str:
    """The source line and a caret under ``column``; tabs are copied so the caret lines up."""
    lines = text.splitlines() or [""]
    src = lines[min(line, len(lines)) - 1]
    pad = "".join(c if c == "\t" else " " for c in src[: column - 1])
    return f"  {src}\n  {pad}^"


def _located_error(text: str, line: int, column: int, message: str) -> QueryError:
    return QueryError(f"line {line}, column {column}: {message}\n{_snippet(text, line, column)}",
                      line=line, column=column)


def _locate(text: str, err: QueryError) -> QueryError:
    """Add the caret display to a semantic error raised with ``line``/``column`` details."""
    line, column = err.details.get("line"), err.details.get("column")
    if line is None or column is None:
        return err
    return _located_error(text, line, column, err.message)


def _end_position(text: str) -> tuple[int, int]:
    """Line and column just after the last non-blank character (where more input was needed)."""
    body = text.rstrip()
    line = body.count("\n") + 1
    return line, len(body) - (body.rfind("\n") + 1) + 1


def _terminal_name(name: str) -> str:
    """``FROM``, ``'('`` or ``a number``: how a terminal is called in messages."""
    if name in _TERMINAL_NAMES:
        return _TERMINAL_NAMES[name]
    term = next((t for t in _lark().terminals if t.name == name), None)
    if term is not None and isinstance(term.pattern, PatternStr):
        value = term.pattern.value
        return value.upper() if value.isalpha() else f"'{value}'"
    return name.lower()


def _expected(names: set[str]) -> str:
    names = set(names)
    if "FROM" in names:
        # After a SELECT list the statement may also end (SELECT now()), but a misspelt FROM is far
        # likelier than a wish to end there: "expected one of: ',', FROM" is the useful hint.
        names -= {"SEMICOLON", "$END"}
    friendly = set()
    if {"NUMBER", "STRING", "LPAR"} <= names:
        names -= _EXPRESSION_START
        friendly.add("an expression")
    friendly |= {_terminal_name(n) for n in names}
    ordered = sorted(friendly, key=lambda s: (not s[0].islower(), s))
    if not ordered:
        return ""
    return "; expected " + (ordered[0] if len(ordered) == 1 else "one of: " + ", ".join(ordered))


def _describe_token(token: Token) -> str:
    if token.type in ("NUMBER", "STRING", "BYTES", "COMP_OP"):
        return f"{_TERMINAL_NAMES[token.type].removeprefix('a ')} {token}"
    if token.type == "NAME":
        return f"name '{token}'"
    return _terminal_name(token.type)


def _syntax_error(text: str, e: UnexpectedInput) -> QueryError:
    if isinstance(e, UnexpectedCharacters):
        line, column, char = e.line, e.column, e.char
        if char == "'":
            if e.pos_in_stream and text[e.pos_in_stream - 1] in "xX":
                return _located_error(text, line, column - 1, "unterminated byte string: the closing ' is missing")
            return _located_error(text, line, column, "unterminated string: the closing ' is missing")
        if char == '"':
            return _located_error(text, line, column, "unexpected character '\"'; strings use single quotes")
        # The basic lexer does not know the parser state, so there is no useful "expected" list.
        return _located_error(text, line, column, f"unexpected character {char!r}")
    if isinstance(e, UnexpectedToken):
        expected = e.accepts or e.expected
        if e.token.type == "$END":
            line, column = _end_position(text)
            return _located_error(text, line, column, f"unexpected end of input{_expected(expected)}")
        return _located_error(text, e.line, e.column, f"unexpected {_describe_token(e.token)}{_expected(expected)}")
    return QueryError(str(e))  # other lark errors belong to parsers we do not use


def _internal_error(text: str, e: VisitError) -> QueryError:
    """A bug in building the AST still reaches the caller as a QueryError, located if possible."""
    message = f"internal error while reading the query: {type(e.orig_exc).__name__}: {str(e.orig_exc):.200}"
    where = e.obj if isinstance(e.obj, Token) else getattr(e.obj, "meta", None)
    line, column = getattr(where, "line", None), getattr(where, "column", None)
    if line is None or column is None:
        return QueryError(message)
    return _located_error(text, line, column, message)


def _error_at(where: Token | object, message: str) -> QueryError:
    """A QueryError carrying the position of a token or lark ``meta``; :func:`_locate` renders it."""
    return QueryError(message, line=where.line, column=where.column)


# --- tree → AST -----------------------------------------------------------------------------------


def _pos(meta) -> ast.Pos:
    return meta.line, meta.column


def _numeric_constant(e: ast.Expr) -> bool:
    """Whether ``e`` is a number known before anything is read: numeric literals, now(), arithmetic."""
    match e:
        case ast.Literal(value=v):
            return type(v) in (int, float)  # not bool: TRUE is no key
        case ast.Call(name="now", args=()):
            return True
        case ast.Neg(operand=x):
            return _numeric_constant(x)
        case ast.Arith(left=left, right=right):
            return _numeric_constant(left) and _numeric_constant(right)
    return False


def _row_count(meta, clause: str, expr: ast.Expr) -> int:
    """The value of a LIMIT or OFFSET: a whole-number literal from 0 to 2**63-1."""
    value = expr.value if isinstance(expr, ast.Literal) else None
    if isinstance(expr, ast.Neg) and isinstance(expr.operand, ast.Literal):
        raise _error_at(meta, f"{clause} must not be negative (got {ast.render(expr)})")
    if type(value) is not int or value >= 2**63:
        raise _error_at(meta, f"{clause} must be a whole number from 0 to 2**63-1, got {ast.render(expr)}")
    return value


def _literal_from(token: Token, decode, spelling: str | None = None) -> ast.Literal:
    try:
        value = decode(token)
    except QueryError as e:
        raise _error_at(token, e.message) from None
    return ast.Literal(value, text=spelling, pos=(token.line, token.column))


def _copy_path(token: Token) -> str:
    path = parse_string(token)
    if not path:
        raise _error_at(token, "the file name is empty; write one such as 'readings.csv'")
    if path == "-":
        # COPY runs in a shell whose standard input is the terminal or the script being run, and
        # whose output may be a terminal: neither can carry a file's rows
        raise _error_at(token, "COPY reads and writes files, not standard input or output; use "
                               "`raftkv import -` or `raftkv export -` for those, or './-' for a file named -")
    return path


def _copy_options(options: tuple[tuple[Token, Token | None], ...]) -> dict[str, object]:
    """The keyword arguments of :class:`ast.Copy` from ``WITH (...)``; each error points at its option."""
    seen: set[str] = set()
    out: dict[str, object] = {}
    for name_token, value in options:
        name = str(name_token).lower()
        if name in seen:
            raise _error_at(name_token, f"option {name.upper()} is given twice")
        seen.add(name)
        text = None if value is None else (parse_string(value) if value.type == "STRING" else str(value)).lower()
        where = value if value is not None else name_token
        if name == "format":
            if text not in ast.COPY_FORMATS:
                raise _error_at(where, f"FORMAT must be csv or jsonl, not {text or 'nothing'}")
            out["format"] = text
        elif name == "key_format":
            if text not in ast.COPY_KEY_FORMATS:
                raise _error_at(where, f"KEY_FORMAT must be int or timestamp, not {text or 'nothing'}")
            out["key_format"] = text
        elif name == "header":
            if text not in (None, "true", "false"):
                raise _error_at(where, f"HEADER takes no value, or TRUE or FALSE, not {text}")
            out["header"] = text != "false"
        else:
            raise _error_at(name_token, f"unknown COPY option {name_token}; the options are FORMAT csv|jsonl, "
                                        "HEADER and KEY_FORMAT int|timestamp")
    # HEADER with jsonl is refused by raftkv.bulk.CopyOptions, which also sees a format that
    # the file name implies
    return out


@v_args(meta=True, inline=True)
class _Builder(Transformer):
    """Builds AST nodes bottom-up; structural rules (table name, ORDER BY, LIMIT) are enforced here."""

    def one(self, meta, statement):
        return statement

    def script(self, meta, *statements):
        return [s for s in statements if s is not None]

    # statements

    def select(self, meta, items, _table, where, group_by, order, limit_offset):
        order_by, direction = order if order is not None else (None, None)
        limit, offset = limit_offset if limit_offset is not None else (None, None)
        groups = group_by or (None,)
        s = ast.Select(items, where, groups[0], direction, limit, offset, order_by, tuple(groups[1:]), pos=_pos(meta))
        return resolve_select(s)

    def constant_select(self, meta, items):
        return ast.ConstantSelect(items, pos=_pos(meta))

    def select_list(self, meta, *items):
        return items

    def star_item(self, meta):
        return ast.SelectItem(ast.Star(pos=_pos(meta)), pos=_pos(meta))

    def expr_item(self, meta, expr, alias):
        return ast.SelectItem(expr, str(alias) if alias is not None else None, pos=_pos(meta))

    def table(self, meta, name):
        if name.lower() != "kv":
            raise _error_at(name, f"unknown table '{name}': the only table is kv")
        return name

    def where(self, meta, expr):
        return expr

    def group_by(self, meta, *exprs):
        return exprs

    def order_by(self, meta, expr, direction):
        # What can be ordered by depends on the aliases and GROUP BY: check.py decides.
        return expr, direction.lower() if direction is not None else "asc"

    def limit_first(self, meta, limit, offset):
        return limit, offset

    def offset_first(self, meta, offset, limit):
        return limit, offset

    def limit(self, meta, expr):
        return _row_count(meta, "LIMIT", expr)

    def offset(self, meta, expr):
        return _row_count(meta, "OFFSET", expr)

    def delete(self, meta, _table, where):
        return ast.Delete(where, pos=_pos(meta))

    def insert(self, meta, _table, columns, *rows):
        if columns == ("value", "key"):
            rows = tuple((key, value) for value, key in rows)
        return ast.Insert(rows, pos=_pos(meta))

    def insert_columns(self, meta, first, second):
        names = []
        for token in (first, second):
            name = str(token).lower()
            if name not in ("key", "value"):
                raise _error_at(token, f"unknown column '{token}'; the columns are key and value")
            if name in names:
                raise _error_at(token, f"column {name} is listed twice; list key and value once each")
            names.append(name)
        return tuple(names)

    def row(self, meta, key, value):
        return key, value

    def put(self, meta, key, value):
        return ast.Insert(((key, value),), pos=_pos(meta))

    def get(self, meta, key):
        return ast.Get(key, pos=_pos(meta))

    def explain(self, meta, statement):
        return ast.Explain(statement, pos=_pos(meta))

    def show(self, meta, what):
        return ast.Show(what.lower(), pos=_pos(meta))

    def split(self, meta, shard_id, at):
        # checked here rather than in check.py so the caret lands on the key; its value (now(), range)
        # is the planner's business, as for GET
        if at is not None and not _numeric_constant(at):
            where = {"line": at.pos[0], "column": at.pos[1]} if at.pos else {}
            raise QueryError(f"the split key must be {SPLIT_KEY_HINT}, not {ast.render(at)}", **where)
        return ast.Split(shard_id, at, pos=_pos(meta))

    def copy_from(self, meta, _table, path, options):
        return ast.Copy("from", _copy_path(path), None, **_copy_options(options or ()), pos=_pos(meta))

    def copy_table_to(self, meta, table, path, options):
        star = ast.SelectItem(ast.Star(pos=_pos(meta)), pos=_pos(meta))
        query = ast.Select((star,), pos=_pos(meta))
        return ast.Copy("to", _copy_path(path), query, **_copy_options(options or ()), pos=_pos(meta))

    def copy_query_to(self, meta, query, path, options):
        return ast.Copy("to", _copy_path(path), query, **_copy_options(options or ()), pos=_pos(meta))

    def copy_with(self, meta, *options):
        return options

    def copy_option(self, meta, name, value):
        return name, value

    def option_value(self, meta, token):
        return token

    def option_timestamp(self, meta):
        return Token("NAME", "timestamp", line=meta.line, column=meta.column)

    def option_true(self, meta):
        return Token("NAME", "true", line=meta.line, column=meta.column)

    def option_false(self, meta):
        return Token("NAME", "false", line=meta.line, column=meta.column)

    def shard_ref(self, meta, token):
        name = parse_string(token) if token.type == "STRING" else str(token)
        if not name:
            raise _error_at(token, "a shard id cannot be empty; write one such as s0003")
        return name

    # conditions

    def or_expr(self, meta, *items):
        return ast.Or(items, pos=_pos(meta))

    def and_expr(self, meta, *items):
        return ast.And(items, pos=_pos(meta))

    def not_(self, meta, _not, operand):
        return ast.Not(operand, pos=_pos(meta))

    def compare(self, meta, left, op, right):
        return ast.Compare("!=" if op == "<>" else str(op), left, right, pos=_pos(meta))

    def between(self, meta, operand, negated, low, high):
        return ast.Between(operand, low, high, negated is not None, pos=_pos(meta))

    def in_list(self, meta, operand, negated, *items):
        if len(items) > MAX_IN_ITEMS:
            raise _error_at(meta, f"IN list has {len(items)} items; at most {MAX_IN_ITEMS} are allowed")
        return ast.InList(operand, items, negated is not None, pos=_pos(meta))

    def like(self, meta, operand, negated, pattern):
        return ast.Match("like", operand, pattern, negated is not None, pos=_pos(meta))

    def starts_with(self, meta, operand, pattern):
        return ast.Match("starts", operand, pattern, pos=_pos(meta))

    def contains(self, meta, operand, pattern):
        return ast.Match("contains", operand, pattern, pos=_pos(meta))

    def is_null(self, meta, operand, negated):
        return ast.IsNull(operand, negated is not None, pos=_pos(meta))

    # values

    def add(self, meta, left, right):
        return ast.Arith("+", left, right, pos=_pos(meta))

    def sub(self, meta, left, right):
        return ast.Arith("-", left, right, pos=_pos(meta))

    def mul(self, meta, left, right):
        return ast.Arith("*", left, right, pos=_pos(meta))

    def div(self, meta, left, right):
        return ast.Arith("/", left, right, pos=_pos(meta))

    def neg(self, meta, operand):
        return ast.Neg(operand, pos=_pos(meta))

    def column(self, meta, name):
        return ast.Column(name.lower(), pos=_pos(meta))

    def json_field(self, meta, _value, *steps):
        return ast.JsonField(steps, pos=_pos(meta))

    def json_text(self, meta, _value, *steps):
        return ast.JsonField(steps, True, pos=_pos(meta))

    def name(self, meta, token):
        return ast.Name(str(token), pos=_pos(meta))

    def path_step(self, meta, token):
        if token.type == "STRING":
            return parse_string(token)
        step = _literal_from(token, parse_number).value
        if type(step) is int and step > _INDEX_MAX:
            raise _error_at(token, f"JSON array index {token} is too large: at most 2**64-1")
        if type(step) is not int:
            raise _error_at(token, f"bad JSON path step {token}: use a member name like 'temp' "
                                   "or an array index like 0")
        return step

    def call(self, meta, name, args):
        return ast.Call(name.lower(), args or (), pos=_pos(meta))

    def star_args(self, meta):
        return (ast.Star(pos=_pos(meta)),)

    def expr_args(self, meta, *args):
        return args

    # literals

    def number(self, meta, token):
        return _literal_from(token, parse_number, spelling=str(token))

    def string(self, meta, token):
        return _literal_from(token, parse_string)

    def bytes_(self, meta, token):
        return _literal_from(token, parse_bytes)

    def true(self, meta):
        return ast.Literal(True, pos=_pos(meta))

    def false(self, meta):
        return ast.Literal(False, pos=_pos(meta))

    def null(self, meta):
        return ast.Literal(None, pos=_pos(meta))

    def timestamp(self, meta, token):
        return _literal_from(token, lambda t: parse_timestamp(parse_string(t)), spelling=f"TIMESTAMP {token}")

    def interval(self, meta, token):
        return _literal_from(token, lambda t: parse_interval(parse_string(t)), spelling=f"INTERVAL {token}")

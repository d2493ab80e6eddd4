"""Context-aware completion: what may come next at the cursor, judged from the tokens before it.

:func:`suggest` is pure (text in, candidates out) and holds all the logic; :class:`QueryCompleter`
adapts it to prompt_toolkit. The grammar is small enough that looking at the clause the cursor
is in and the last token or two is an accurate guide: no partial parse is needed.

After ``value->`` (or ``->>``), and inside the string that follows, the candidates are the JSON
field names of recent results (:class:`shell.fields.RecentFields`), nested ones under their path.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

from prompt_toolkit.completion import CompleteEvent, Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from .commands import COMMANDS
from .fields import RecentFields
from .tokens import ScriptSplitter, Token, tokenize

AGGREGATES = {"count": "count(*)", "min": "min(expr)", "max": "max(expr)", "sum": "sum(expr)",
              "avg": "avg(expr)"}
SCALARS = {"length": "length(value)", "now": "now()", "time_bucket": "time_bucket(width, key)",
           "to_timestamp": "to_timestamp(key)"}
FUNCTIONS = {**AGGREGATES, **SCALARS}
KEYWORDS = frozenset("""
    SELECT FROM WHERE GROUP BY ORDER LIMIT DELETE INSERT INTO VALUES PUT GET EXPLAIN SHOW AS AND OR
    NOT BETWEEN IN LIKE STARTS WITH CONTAINS IS NULL TRUE FALSE TIMESTAMP INTERVAL KEY VALUE ASC DESC
    SHARDS NODES STATUS SPLIT SHARD AT OFFSET
""".split())
COLUMNS = ("key", "value")
TABLE = "kv"

_STATEMENTS = ("SELECT", "INSERT INTO", "PUT", "GET", "DELETE FROM", "EXPLAIN", "SHOW", "SPLIT SHARD")
_COMPARISONS = {"=", "!=", "<>", "<", ">", "<=", ">="}
_ARITHMETIC = {"+", "-", "*", "/"}
# after these an operand (a column, a function call, a literal) must follow
_WANT_OPERAND = {"SELECT", "WHERE", "AND", "OR", "NOT", "BETWEEN", "IN", "LIKE", "CONTAINS", "WITH", "(", ",",
                 "GET", "PUT", "VALUES", "AT", *_COMPARISONS, *_ARITHMETIC}
_LITERAL_KINDS = ("number", "string", "bytes")


@dataclass(frozen=True)
class Candidate:
    """One completion: the text to insert, how the menu shows it, and a hint beside it."""

    text: str
    display: str = ""
    meta: str = ""
    kind: str = "keyword"  # keyword, function, name, operator or command


@dataclass(frozen=True)
class Suggestions:
    """What :func:`suggest` found: candidates replacing ``prefix`` (the word before the cursor),
    or, for ``\\i``, a file path to complete (``path`` is its text so far)."""

    prefix: str = ""
    candidates: tuple[Candidate, ...] = ()
    path: str | None = None


def _keywords(*words: str) -> list[Candidate]:
    return [Candidate(w) for w in words]


def _functions(names: Iterable[str]) -> list[Candidate]:
    return [Candidate(n, FUNCTIONS[n], "aggregate" if n in AGGREGATES else "function", "function")
            for n in names]


def _names(*names: str, meta: str = "") -> list[Candidate]:
    return [Candidate(n, n, meta, "name") for n in names]


def _json_operators() -> list[Candidate]:
    return [Candidate("->", "->", "JSON field", "operator"), Candidate("->>", "->>", "JSON field as text", "operator")]


def _constants() -> list[Candidate]:
    return _functions(["now"]) + _keywords("TIMESTAMP", "INTERVAL")


def _operands(clause: str) -> list[Candidate]:
    """What may start an operand in ``clause``."""
    if clause == "SELECT":
        return ([Candidate("*", "*", "key, value", "name")] + _names(*COLUMNS, meta="column")
                + _functions(FUNCTIONS) + _keywords("TIMESTAMP", "INTERVAL"))
    if clause == "WHERE":
        return (_names(*COLUMNS, meta="column") + _functions(["length", "now"])
                + _keywords("NOT", "TRUE", "FALSE", "NULL", "TIMESTAMP", "INTERVAL"))
    if clause == "GROUP":
        return _functions(["time_bucket"]) + _names("key", meta="column") + _keywords("INTERVAL")
    return _constants()  # VALUES, PUT, GET, AT: constant expressions


def _after_operand(clause: str, statement: str) -> list[Candidate]:
    """What may follow a complete operand in ``clause``."""
    if clause == "SELECT":
        return _keywords("AS", "FROM")
    if clause == "WHERE":
        out = _keywords("AND", "OR", "NOT", "BETWEEN", "IN", "LIKE", "STARTS WITH", "CONTAINS", "IS NULL",
                        "IS NOT NULL")
        if statement == "SELECT":
            out += _keywords("GROUP BY", "ORDER BY", "LIMIT", "OFFSET")
        return out
    if clause == "GROUP":
        return _keywords("ORDER BY", "LIMIT", "OFFSET")
    return []


def _clause_of(words: list[str], clauses: set[str]) -> str:
    """The last clause keyword outside parentheses."""
    depth = 0
    for w in reversed(words):
        if w == ")":
            depth += 1
        elif w == "(":
            depth -= 1
        elif depth <= 0 and w in clauses:
            return w
    return words[0]


def _expression(words: list[str], kinds: list[str], clause: str, statement: str) -> list[Candidate]:
    last = words[-1]
    prev = words[-2] if len(words) > 1 else ""
    if last in ("TIMESTAMP", "INTERVAL", "->", "->>", "AS", "LIMIT", "OFFSET"):
        return []  # a string, a path step, an alias or a number comes next: nothing to offer
    if last == "IS":
        return _keywords("NULL", "NOT NULL")
    if last == "STARTS":
        return _keywords("WITH")
    if last == "NOT" and prev not in _WANT_OPERAND and prev not in ("IS", ""):
        return _keywords("BETWEEN", "IN", "LIKE")  # key NOT BETWEEN ...
    if last == "*" and prev in ("SELECT", ","):
        return _after_operand(clause, statement)  # SELECT * is the star, not a product
    if last in _WANT_OPERAND:
        return _operands(clause)
    if kinds[-1] in _LITERAL_KINDS or last == ")" or kinds[-1] == "word":
        after = _after_operand(clause, statement)
        # a JSON value (the column, or a field stepped into with ->) may be stepped into further
        if clause in ("SELECT", "WHERE", "GROUP") and (last == "VALUE" or (kinds[-1] == "string" and prev == "->")):
            return _json_operators() + after
        return after
    return []


def _statement_context(words: list[str], kinds: list[str]) -> list[Candidate]:
    if not words:
        return _keywords(*_STATEMENTS)
    if words[0] == "EXPLAIN":
        if len(words) == 1:
            return _keywords("SELECT", "DELETE FROM")
        words, kinds = words[1:], kinds[1:]
    first, last = words[0], words[-1]
    prev = words[-2] if len(words) > 1 else ""
    if first == "SHOW":
        return _keywords("SHARDS", "NODES", "STATUS") if len(words) == 1 else []
    if first == "SPLIT":
        return _split_context(words, kinds)
    if first == "INSERT":
        if last == "INSERT":
            return _keywords("INTO")
        if last == "INTO":
            return _names(TABLE, meta="table")
        if prev == "INTO":
            return _keywords("VALUES")
        return _expression(words, kinds, "VALUES", first)
    if first == "DELETE":
        if last == "DELETE":
            return _keywords("FROM")
        if last == "FROM":
            return _names(TABLE, meta="table")
        if prev == "FROM":
            return _keywords("WHERE")
        return _expression(words, kinds, "WHERE", first)
    if first in ("PUT", "GET"):
        return _expression(words, kinds, first, first)
    if first != "SELECT":
        return []
    clause = _clause_of(words, {"SELECT", "FROM", "WHERE", "GROUP", "ORDER", "LIMIT", "OFFSET"})
    if clause == "FROM":
        if last == "FROM":
            return _names(TABLE, meta="table")
        return _keywords("WHERE", "GROUP BY", "ORDER BY", "LIMIT", "OFFSET") if prev == "FROM" else []
    if clause in ("GROUP", "ORDER") and last == clause:
        return _keywords("BY")
    if clause == "ORDER":
        if last == "BY":
            return _names("key", meta="column")
        if last == "KEY":
            return _keywords("ASC", "DESC", "LIMIT", "OFFSET")
        return _keywords("LIMIT", "OFFSET") if last in ("ASC", "DESC") else []
    if clause == "GROUP" and last == "BY":
        return _operands("GROUP")
    if clause in ("LIMIT", "OFFSET"):
        # LIMIT n OFFSET m, in either order, each once
        if last == clause or kinds[-1] != "number":
            return []
        other = "OFFSET" if clause == "LIMIT" else "LIMIT"
        return [] if other in words else _keywords(other)
    return _expression(words, kinds, clause, "SELECT")


def _split_context(words: list[str], kinds: list[str]) -> list[Candidate]:
    """``SPLIT SHARD id [AT key]``: the shard id is the person's to type (this module is pure and
    knows no cluster), the rest follows the grammar."""
    if len(words) == 1:
        return _keywords("SHARD")
    if len(words) == 2:
        return []  # the shard id comes next
    if len(words) == 3:
        return _keywords("AT") if words[1] == "SHARD" else []
    if words[3] == "AT":
        return _expression(words, kinds, "AT", "SPLIT")
    return []


def _command_suggestions(line: str) -> Suggestions:
    name, space, arg = line[1:].partition(" ")
    if not space:
        cands = [Candidate("\\" + n, "\\" + n, c.help, "command") for c in COMMANDS for n in c.names
                 if len(n) > 1 or n == "?" or n == c.names[0]]
        return Suggestions(line, tuple(cands))
    spec = next((c for c in COMMANDS if name in c.names), None)
    if spec is None or " " in arg.strip():
        return Suggestions()
    if spec.takes_path:
        return Suggestions(path=arg.lstrip())
    word = arg.lstrip()
    return Suggestions(word, tuple(Candidate(c, c, "", "name") for c in spec.choices))


def _json_path(tokens: list[Token]) -> tuple[str, ...] | None:
    """The field path of ``value->'a'->`` (``("a",)``) when ``tokens`` end in such a chain and
    ``->`` or ``->>``; None otherwise (array steps included: they are not remembered)."""
    if not tokens or tokens[-1].kind != "op" or tokens[-1].text not in ("->", "->>"):
        return None
    path: list[str] = []
    i = len(tokens) - 2
    while i >= 0:
        t = tokens[i]
        if t.kind == "word":
            return tuple(reversed(path)) if t.text.lower() == "value" else None
        if t.kind != "string" or not t.closed or i == 0 or tokens[i - 1].text != "->":
            return None
        path.append(t.text[1:-1].replace("''", "'"))
        i -= 2
    return None


def _field_suggestions(statement: str, fields: RecentFields | None) -> Suggestions:
    """Field names after ``value->`` (quoted) or inside the string begun there (closing it)."""
    if fields is None:
        return Suggestions()
    tokens = [t for t in tokenize(statement) if t.significant]
    typing = bool(tokens) and tokens[-1].kind == "string" and not tokens[-1].closed
    path = _json_path(tokens[:-1] if typing else tokens)
    if path is None:
        return Suggestions()
    quoted = [name.replace("'", "''") for name in fields.names(path)]
    if typing:
        return Suggestions(tokens[-1].text[1:], tuple(Candidate(q + "'", q, "JSON field", "name") for q in quoted))
    return Suggestions("", tuple(Candidate(f"'{q}'", q, "JSON field", "name") for q in quoted))


def _match_case(candidate: Candidate, prefix: str) -> str:
    # keywords follow the case the person types in: "sel" completes to "select"
    if candidate.kind == "keyword" and prefix and prefix.islower():
        return candidate.text.lower()
    return candidate.text


def suggest(text_before_cursor: str, fields: RecentFields | None = None) -> Suggestions:
    """Candidates for the word being typed at the end of ``text_before_cursor``.

    Nothing is offered inside a comment, or inside a string other than a JSON path step, where
    ``fields`` (if given) supplies the names. Candidates are filtered by the prefix,
    case-insensitively; keywords are offered in upper case unless the prefix is in lower case.
    """
    splitter = ScriptSplitter()
    splitter.feed(text_before_cursor)
    if splitter.in_comment:
        return Suggestions()
    if splitter.in_string:
        found = _field_suggestions(splitter.current, fields)
    elif splitter.in_command:
        found = _command_suggestions(splitter.current.lstrip())
    else:
        statement = splitter.current
        tokens = [t for t in tokenize(statement) if t.significant]
        prefix = ""
        if tokens and tokens[-1].end == len(statement):
            if tokens[-1].kind == "word":
                prefix = tokens.pop().text
            elif tokens[-1].kind in _LITERAL_KINDS:
                return Suggestions()  # in the middle of typing a number
        words = [t.text.upper() if t.kind == "word" else t.text for t in tokens]
        kinds = [t.kind for t in tokens]
        found = Suggestions(prefix, tuple(_statement_context(words, kinds)))
        if not prefix and _json_path(tokens) is not None:
            found = _field_suggestions(statement, fields)
    if found.path is not None:
        return found
    low = found.prefix.lower()
    chosen: list[Candidate] = []
    seen: set[str] = set()
    for c in found.candidates:
        text = _match_case(c, found.prefix)
        if text.lower().startswith(low) and text not in seen and text != found.prefix:
            seen.add(text)
            chosen.append(Candidate(text, c.display or c.text, c.meta, c.kind))
    return Suggestions(found.prefix, tuple(chosen))


class QueryCompleter(Completer):
    """prompt_toolkit completer over :func:`suggest` (and file names after ``\\i``); ``fields``
    supplies JSON field names (the shell's :attr:`~shell.runner.Shell.fields`)."""

    def __init__(self, fields: RecentFields | None = None) -> None:
        self._paths = PathCompleter(expanduser=True)
        self.fields = fields

    def get_completions(self, document: Document, complete_event: CompleteEvent) -> Iterator[Completion]:
        """Completions for the word before the cursor."""
        found = suggest(document.text_before_cursor, self.fields)
        if found.path is not None:
            yield from self._paths.get_completions(Document(found.path, len(found.path)), complete_event)
            return
        closed = document.text_after_cursor.startswith("'")  # the string's quote is already there
        for c in found.candidates:
            text = c.text[:-1] if closed and c.kind == "name" and c.text.endswith("'") else c.text
            yield Completion(text, start_position=-len(found.prefix), display=c.display, display_meta=c.meta)

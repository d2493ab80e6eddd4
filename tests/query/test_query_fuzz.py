"""Hypothesis fuzzing of the parser and planner against the reference model.

* Valid SELECTs, built by a grammar-aware strategy over random rows: parse -> plan -> simulated
  shards must return exactly the rows ``query_reference.holds`` picks (ranges, residual filter,
  order and limits together), and a count(*) must agree.
* Anything else -- random mutations of valid queries, token soup, raw text -- may fail, but only
  with the project's QueryError, never a lark exception, a ValueError from int(), a RecursionError
  or the like; whatever plans must give a filter the shards can compile and run.

Derandomized and without an example database, so CI runs the same examples every time.
"""

import json
import re

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from raftkv.errors import QueryError
from raftkv.keys import MAX_KEY
from raftkv.query import (
    Aggregates,
    DeletePlan,
    ExplainPlan,
    SelectPlan,
    compile_filter,
    parse,
    parse_script,
    plan,
)
from raftkv.query.keyset import normalize
from raftkv.routing.shardmap import initial_map

from .query_reference import holds

pytestmark = pytest.mark.timeout(300)

MAP = initial_map(["n1", "n2", "n3"], 8)
STEP = 2**64 // 8
NOW = 50
FUZZ = settings(derandomize=True, database=None, deadline=None, max_examples=300,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

# --- rows ---------------------------------------------------------------------------------------------

INTERESTING_KEYS = [0, 1, 2, 5, 16, 17, 30, 49, 50, 51, STEP - 1, STEP, STEP + 1, 5 * STEP + 3, MAX_KEY - 1, MAX_KEY]
FIELD = st.one_of(st.integers(-5, 60), st.floats(-1e6, 1e6, allow_nan=False), st.sampled_from(["30", "a7", "b2", "", "a%_"]),
                  st.booleans(), st.none(), st.lists(st.integers(0, 40), max_size=3))


@st.composite
def row_value(draw) -> bytes:
    if draw(st.integers(0, 4)) == 0:  # not JSON, or not an object
        return draw(st.one_of(st.binary(max_size=6), st.sampled_from([b"raw a7", b"[1, 2]", b"31", b'"a7"', b"\xff"])))
    doc = draw(st.dictionaries(st.sampled_from(["temp", "dev", "ok", "a"]), FIELD, max_size=4))
    return json.dumps(doc).encode()


ROWS = st.dictionaries(st.one_of(st.sampled_from(INTERESTING_KEYS), st.integers(0, 60), st.integers(0, MAX_KEY)),
                       row_value(), max_size=25)

# --- grammar-aware query text ---------------------------------------------------------------------------

KEY_CONSTANT = st.one_of(
    st.sampled_from(INTERESTING_KEYS).map(str),
    st.integers(0, 60).map(str),
    st.sampled_from(["2.5", "0x10", "now()", "now() - 10", "(3 + 4) * 2", "1e1", "17 / 2", "-(-5)", "5.0",
                     "TIMESTAMP '1970-01-01T00:00:00.000000030Z'", "INTERVAL '40 ns'"]),
)
CMP = st.sampled_from(["=", "!=", "<>", "<", "<=", ">", ">="])
JSON_FIELD = st.sampled_from(["value->'temp'", "value->'dev'", "value->'ok'", "value->'a'->0", "value->0",
                              "value->'missing'"])
NUMBER = st.one_of(st.integers(-5, 60).map(str), st.sampled_from(["29.5", "30.0", "1e2", "0x1e", "-2.5"]))
VALUE_CONSTANT = st.sampled_from(["x'ff'", "'31'", "''", "x''"])
STRING = st.sampled_from(["'30'", "'a7'", "'b2'", "''", "'a%_'", "'it''s'"])
# Fragments of LIKE patterns, as written in the query text (so '' is one quote).
PATTERN = st.lists(st.sampled_from(["a", "7", "b", "2", "%", "_", "\\%", "\\_", "\\\\", "''", '"', "{", ":", " "]),
                   max_size=6).map(lambda parts: "'" + "".join(parts) + "'")


@st.composite
def key_atom(draw) -> str:
    form = draw(st.integers(0, 4))
    if form == 0:
        return f"key {draw(CMP)} {draw(KEY_CONSTANT)}"
    if form == 1:
        return f"{draw(KEY_CONSTANT)} {draw(CMP)} key"
    if form == 2:
        low, high = draw(KEY_CONSTANT), draw(KEY_CONSTANT)
        return f"key {draw(st.sampled_from(['', 'NOT ']))}BETWEEN {low} AND {high}"
    items = ", ".join(draw(st.lists(KEY_CONSTANT, min_size=1, max_size=5)))
    return f"key {draw(st.sampled_from(['', 'NOT ']))}IN ({items})"


@st.composite
def value_atom(draw) -> str:
    form = draw(st.integers(0, 11))
    field = draw(JSON_FIELD)
    if form == 0:
        return f"{field} {draw(CMP)} {draw(NUMBER)}"
    if form == 1:
        op, string = draw(CMP), draw(STRING)
        if op in ("<", "<=", ">", ">=") and string == "'30'":
            # value->'f' > '30' is refused (a number in quotes); ->> compares the field as text
            i = field.rfind("->")
            field = f"{field[:i]}->>{field[i + 2:]}"
        return f"{field} {op} {string}"
    if form == 2:
        return f"{field} {draw(st.sampled_from(['=', '!=']))} {draw(st.sampled_from(['TRUE', 'FALSE']))}"
    if form == 3:
        return f"{field} IS {draw(st.sampled_from(['', 'NOT ']))}NULL"
    if form == 4:
        target = draw(st.sampled_from(["value", field]))
        return f"{target} {draw(st.sampled_from(['LIKE', 'NOT LIKE', 'STARTS WITH', 'CONTAINS']))} {draw(PATTERN)}"
    if form == 5:
        return f"value {draw(st.sampled_from(['=', '!=']))} {draw(VALUE_CONSTANT)}"
    if form == 6:
        return f"length(value) {draw(CMP)} {draw(st.integers(0, 30))}"
    if form == 7:
        return f"{field} * {draw(NUMBER)} + {draw(NUMBER)} {draw(CMP)} {draw(NUMBER)}"
    if form == 8:
        items = ", ".join(draw(st.lists(st.one_of(NUMBER, STRING, st.just("TRUE")), min_size=1, max_size=4)))
        return f"{field} {draw(st.sampled_from(['', 'NOT ']))}IN ({items})"
    if form == 9:
        return f"{field} {draw(st.sampled_from(['', 'NOT ']))}BETWEEN {draw(NUMBER)} AND {draw(NUMBER)}"
    if form == 10:
        return f"key {draw(CMP)} {field}"
    return draw(st.sampled_from(["TRUE", "FALSE", "1 = 1", "now() > 100", "key + 1 > 17", "-key < 0"]))


def conditions(depth: int = 3) -> st.SearchStrategy[str]:
    atom = st.one_of(key_atom(), key_atom(), value_atom())
    if depth == 0:
        return atom
    inner = conditions(depth - 1)
    return st.one_of(
        atom, atom,
        inner.map(lambda c: f"NOT ({c})"),
        st.tuples(st.sampled_from([" AND ", " OR "]), st.lists(inner, min_size=2, max_size=4)).map(
            lambda t: "(" + t[0].join(t[1]) + ")"),
    )


@st.composite
def select_text(draw) -> str:
    where = draw(conditions())
    order = draw(st.sampled_from(["", " ORDER BY key", " ORDER BY key ASC", " ORDER BY key DESC"]))
    limit = draw(st.sampled_from(["", "", " LIMIT 0", " LIMIT 1", " LIMIT 3", " LIMIT 1000"]))
    return f"SELECT * FROM kv WHERE {where}{order}{limit}"


# --- a model executor over the plan (what the client and the shards do) ----------------------------------


def shard_rows(rows: dict[int, bytes], ranges, reverse: bool):
    keys = sorted(rows, reverse=reverse)
    for lo, hi in ranges:
        yield from ((k, rows[k]) for k in keys if lo <= k <= hi)


def shard_filter(wire):
    """The filter as a shard compiles it, after the msgpack trip."""
    return compile_filter(msgpack.unpackb(msgpack.packb(wire), raw=False))


def run_select(p: SelectPlan, rows: dict[int, bytes]) -> list[tuple[int, bytes]]:
    f = shard_filter(p.filter)
    out: list = []
    for scan in p.scans:
        got = [(k, v) for k, v in shard_rows(rows, scan.ranges, p.reverse_scan) if f(k, v)]
        out += got[:p.shard_limit] if p.shard_limit is not None else got
    return out[:p.limit] if p.limit is not None else out


def run_count(p: SelectPlan, rows: dict[int, bytes]) -> int:
    aggs = Aggregates(p.aggregates, p.bucket_ns)
    f = shard_filter(p.filter)
    total = aggs.new()
    for scan in p.scans:
        part = aggs.new()
        for k, v in shard_rows(rows, scan.ranges, False):
            if f(k, v):
                aggs.update(part, k, v)
        total = aggs.merge(total, part)
    return aggs.finalize(total, False)[0][0]


# --- properties --------------------------------------------------------------------------------------


@FUZZ
@given(text=select_text(), rows=ROWS)
def test_valid_selects_return_exactly_the_reference_rows(text, rows):
    stmt = parse(text)
    try:
        p = plan(stmt, MAP, now_ns=NOW)
    except QueryError as e:  # a constant error only the planner sees, e.g. a key bound of -10
        assert "outside the key range" in e.message or "division by zero" in e.message, (text, e.message)
        return
    assert normalize(r for s in p.scans for r in s.ranges) == (p.ranges if p.limit != 0 else ())
    descending = stmt.order == "desc"
    expected = [(k, v) for k, v in sorted(rows.items(), reverse=descending) if holds(stmt.where, k, v, NOW)]
    if p.limit is not None:
        expected = expected[:p.limit]
    assert run_select(p, rows) == expected, text
    counted = plan(parse(text.replace("SELECT *", "SELECT count(*)", 1).split(" ORDER BY")[0].split(" LIMIT")[0]),
                   MAP, now_ns=NOW)
    assert run_count(counted, rows) == sum(holds(stmt.where, k, v, NOW) for k, v in rows.items()), text


def check_any_text(text: str) -> None:
    """Parse and plan ``text``: only QueryError may come out, and a plan must run on the shards."""
    try:
        p = plan(parse(text), MAP, now_ns=NOW)
    except QueryError as e:
        assert "internal error" not in e.message, (text[:200], e.message)  # the parser's last-resort wrapper
        return
    if isinstance(p, ExplainPlan):
        p = p.plan
    if isinstance(p, (SelectPlan, DeletePlan)):
        f = shard_filter(p.filter)
        for k, v in ((0, b""), (17, b'{"temp": 31, "dev": "a7"}'), (MAX_KEY, b"\xff")):
            assert isinstance(f(k, v), bool)
    if isinstance(p, SelectPlan) and p.aggregates is not None:
        Aggregates(p.aggregates, p.bucket_ns)


@st.composite
def mutated(draw) -> str:
    """A valid query with a few random edits: deletions, insertions, duplications, truncation."""
    text = draw(st.one_of(select_text(), conditions(2).map(lambda c: f"DELETE FROM kv WHERE {c}")))
    for _ in range(draw(st.integers(1, 4))):
        i = draw(st.integers(0, len(text)))
        j = draw(st.integers(i, min(len(text), i + 8)))
        edit = draw(st.integers(0, 5))
        literals = list(_LITERAL.finditer(text))
        if edit >= 4 and literals:  # keep the query well-formed but make one literal hostile
            m = literals[draw(st.integers(0, len(literals) - 1))]
            text = text[:m.start()] + draw(st.sampled_from(HOSTILE_LITERALS)) + text[m.end():]
        elif edit == 0:
            text = text[:i] + text[j:]
        elif edit == 1:
            text = text[:i] + draw(st.sampled_from(TOKENS + ["'", "(", ")", "\\", "\x00", "\ud800", "é"])) + text[i:]
        elif edit == 2:
            text = text[:j] + text[i:j] + text[j:]
        else:
            text = text[:i]
    return text


_LITERAL = re.compile(r"0x\w+|\d+(?:\.\d*)?(?:e\d+)?|'(?:[^']|'')*'")
HOSTILE_LITERALS = [
    "1" * 4400, "0" * 5000 + "1", "9" * 81, "0x" + "f" * 3600, "1e999", "1" + "0" * 400 + ".5", str(2**64), str(2**70), "-" + "9" * 60,
    "'" + "%_" * 3000 + "'", "'" + "a" * 5000 + "'", "'" + "a_" * 200 + "'", "'" + "%a" * 300 + "'", "'\\'",
    "INTERVAL '" + "9" * 5000 + " ns'", "INTERVAL '0." + "0" * 5000 + "1 s'", "INTERVAL '1e9 s'",
    "TIMESTAMP '99999-01-01'", "TIMESTAMP '2026-11-21T10:00:00.1234567891Z'", "x'" + "0" * 8001 + "'",
    "(" * 300 + "1" + ")" * 300, "- " * 400 + "1", "1" + " * 99999999999999999999" * 20, "'\ud800'",
]

TOKENS = [
    "SELECT", "*", "FROM", "kv", "WHERE", "key", "value", "AND", "OR", "NOT", "IN", "BETWEEN", "LIKE", "STARTS",
    "WITH", "CONTAINS", "IS", "NULL", "TRUE", "FALSE", "ORDER", "BY", "ASC", "DESC", "LIMIT", "GROUP", "AS",
    "INSERT", "INTO", "VALUES", "PUT", "GET", "DELETE", "EXPLAIN", "SHOW", "SHARDS", "NODES", "STATUS",
    "count(*)", "min(", "max(", "sum(", "avg(", "length(", "now()", "time_bucket(", "frob(",
    "(", ")", ",", ";", "->", "+", "-", "*", "/", "=", "!=", "<>", "<", "<=", ">", ">=", "--c\n",
    "0", "1", "17", "2.5", ".5", "1e9", "1e999", "-1", "0x", "0xzz", "0x" + "f" * 100, "9" * 100, "1" * 4400,
    str(2**64), str(2**64 - 1), "'a7'", "'%a_'", "'unterminated", "''", "x'00ff'", "x'0'", "x'zz'", "'\\'",
    "TIMESTAMP '2026-11-21'", "TIMESTAMP '2026-02-30'", "TIMESTAMP 'x'", "INTERVAL '5 minutes'",
    "INTERVAL '1.5 parsecs'", "INTERVAL '" + "9" * 5000 + " ns'", "INTERVAL '0.5 ns'", "value->'temp'", "value->0",
    "value->" + "9" * 30, "'" + "%_" * 3000 + "'", '"dq"', "`", "@", "é", "\t", "\n",
]


@FUZZ
@given(text=mutated())
def test_mutated_queries_fail_only_with_query_errors(text):
    check_any_text(text)


@FUZZ
@given(tokens=st.lists(st.sampled_from(TOKENS), max_size=25))
def test_token_soup_fails_only_with_query_errors(tokens):
    text = " ".join(tokens)
    check_any_text(text)
    try:
        parse_script(text)
    except QueryError as e:
        assert "internal error" not in e.message, (text[:200], e.message)


@FUZZ
@given(text=st.text(max_size=80))
def test_arbitrary_text_fails_only_with_query_errors(text):
    check_any_text(text)
    check_any_text("SELECT * FROM kv WHERE " + text)

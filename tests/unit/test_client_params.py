"""Placeholder binding, datetime keys and query results, without a cluster: bound text goes through the real parser."""

import asyncio
import pydoc
import re
from datetime import UTC, date, datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv import AsyncClient, Client
from raftkv.client.aio import AsyncQueryResult
from raftkv.client.params import bind, literal, placeholders
from raftkv.errors import InvalidArgument, InvalidKey
from raftkv.keys import MAX_KEY, coerce_key, coerce_range, datetime_to_ns
from raftkv.query import ast, parse
from raftkv.query.executor import QueryResult as ExecutorResult
from raftkv.query.literals import parse_timestamp

pytestmark = pytest.mark.timeout(60)

HOSTILE = "x' OR 1=1 --"
SETTINGS = settings(derandomize=True, max_examples=200, deadline=None, database=None)


def _constant(e: ast.Expr):
    """The value of a bound literal as the parser read it (a negative number is Neg(Literal))."""
    if isinstance(e, ast.Neg):
        return -_constant(e.operand)
    assert isinstance(e, ast.Literal), e
    return e.value


def _stored_value(sql: str):
    """The value of the one row of an INSERT/PUT statement."""
    stmt = parse(sql)
    assert isinstance(stmt, ast.Insert)
    [(_key, value)] = stmt.rows
    return _constant(value)


def _compared(sql: str):
    """The right-hand sides of the comparisons of a SELECT's WHERE, in order."""
    where = parse(sql).where
    items = where.items if isinstance(where, ast.And) else (where,)
    return [_constant(c.right) for c in items]


# --- where placeholders are -----------------------------------------------------------------------


@pytest.mark.parametrize("sql, count", [
    ("GET ?", 1),
    ("PUT ? ?", 2),
    ("SELECT * FROM kv WHERE value = '?' AND key = ?", 1),
    ("SELECT * FROM kv WHERE value = x'3f' AND key = ?", 1),
    ("SELECT * FROM kv WHERE value = 'it''s ?' AND key = ?", 1),
    ("SELECT * FROM kv WHERE key = ? -- a comment? yes\n AND key < ?", 2),
    ("SELECT * FROM kv WHERE key = ? --?", 1),
    ('SELECT * FROM kv WHERE value = "?"', 0),  # not a string in the language, but no placeholder either
    ("SELECT * FROM kv WHERE value = 'unterminated ?", 0),
    ("GET ??", 2),
])
def test_placeholders_outside_strings_and_comments(sql, count):
    assert len(placeholders(sql)) == count


def test_question_marks_in_strings_and_comments_survive_binding():
    sql = "SELECT * FROM kv WHERE value->'a?' = ? AND value->'b' = ? -- why?"
    assert bind(sql, ["?", "--?"]) == "SELECT * FROM kv WHERE value->'a?' = '?' AND value->'b' = '--?' -- why?"
    assert _compared(bind(sql, ["?", "--?"])) == ["?", "--?"]


# --- the literal per type -------------------------------------------------------------------------


@pytest.mark.parametrize("value, text", [
    (None, "NULL"),
    (True, "TRUE"),
    (False, "FALSE"),
    (0, "0"),
    (MAX_KEY, "18446744073709551615"),
    (-5, "(-5)"),
    (1.5, "1.5"),
    (-0.25, "(-0.25)"),
    (1e100, "1e+100"),
    ("it's", "'it''s'"),
    ("", "''"),
    (b"\x00\xff", "x'00ff'"),
    (bytearray(b"ab"), "x'6162'"),
    (memoryview(b""), "x''"),
    (datetime(1970, 1, 1, 0, 0, 1, 5, tzinfo=UTC), "1000005000"),
    (datetime(1970, 1, 1, 2, tzinfo=timezone(timedelta(hours=2))), "0"),
    (datetime(1969, 12, 31, 23, 59, 59, tzinfo=UTC), "(-1000000000)"),
    (timedelta(minutes=5), "300000000000"),
    (timedelta(microseconds=-1), "(-1000)"),
])
def test_literal_per_type(value, text):
    assert literal(value) == text


@pytest.mark.parametrize("value, words", [
    (float("nan"), "NaN"),
    (float("-inf"), "infinity"),
    (10**80, "81 digits"),
    (datetime(2026, 1, 1), "tzinfo"),
    (date(2026, 1, 1), "timezone-aware"),
    ("\ud800", "surrogate"),
    (object(), "type object"),
    ([1], "type list"),
])
def test_unbindable_values_are_refused_by_position(value, words):
    with pytest.raises(InvalidArgument, match=words) as info:
        bind("GET 1 + ? + ?", [1, value])
    assert "parameter 2" in str(info.value)


@pytest.mark.parametrize("params, words", [
    (None, r"1 \? placeholder but no params"),
    ([], r"1 \? placeholder but 0 were given"),
    ([1, 2], r"1 \? placeholder but 2 were given"),
    (5, "now_ns=... by keyword"),  # the old second positional argument
    ("5", "list or tuple"),
    (b"5", "list or tuple"),
    ({"a": 5}, "list or tuple"),
])
def test_wrong_params_are_refused(params, words):
    with pytest.raises(InvalidArgument, match=words):
        bind("GET ?", params)


def test_no_params_no_change():
    assert bind("SELECT * FROM kv WHERE value = '?'", None) == "SELECT * FROM kv WHERE value = '?'"
    assert bind("GET 1", ()) == "GET 1"
    with pytest.raises(InvalidArgument, match="query text"):
        bind(parse("GET 1"), [1])


def test_hostile_string_stays_one_string():
    sql = bind("SELECT * FROM kv WHERE value = ? AND key > ?", [HOSTILE, 5])
    assert _compared(sql) == [HOSTILE, 5]
    assert _stored_value(bind("PUT 1 ?", [HOSTILE])) == HOSTILE


def test_literals_never_fuse_with_their_neighbours():
    # x?+'ab' would otherwise make the byte string x'ab', ?.5+1 the float 1.5, 'a'?+'b' the string a'b
    assert bind("PUT 1 x?", ["ab"]) == "PUT 1 x 'ab'"
    with pytest.raises(InvalidArgument):  # "1 .5" is two numbers: the parser refuses it
        parse(bind("GET ?.5", [1]))
    assert bind("SELECT * FROM kv WHERE value = 'a'?", ["b"]) == "SELECT * FROM kv WHERE value = 'a' 'b'"
    assert bind("PUT ?? ", [1, -2]) == "PUT 1  (-2) "
    # a negative number stays one operand: of PUT's two atoms, and of a subtraction
    # (the planner refuses the key -5 later; the parser must still read it as one)
    assert [_constant(e) for e in parse(bind("PUT ? ?", [-5, b"v"])).rows[0]] == [-5, b"v"]
    assert _constant(parse(bind("GET 10 - ?", [-3])).key.right) == -3


# --- round trips through the real parser ----------------------------------------------------------


@SETTINGS
@given(st.text())
def test_strings_round_trip(s):
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        return  # refused, as tested above
    assert _stored_value(bind("PUT 1 ?", [s])) == s
    assert _compared(bind("SELECT * FROM kv WHERE value = ? AND value != ?", [s, s + "'"])) == [s, s + "'"]


@SETTINGS
@given(st.binary())
def test_bytes_round_trip(b):
    assert _stored_value(bind("INSERT INTO kv VALUES (?, ?)", [7, b])) == b


@SETTINGS
@given(st.integers(min_value=-(10**80 - 1), max_value=10**80 - 1))
def test_ints_round_trip(n):
    assert _compared(bind("SELECT * FROM kv WHERE value->'n' = ?", [n])) == [n]


@SETTINGS
@given(st.integers(min_value=0, max_value=MAX_KEY))
def test_keys_round_trip(k):
    assert _constant(parse(bind("GET ?", [k])).key) == k


@SETTINGS
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_round_trip(x):
    [got] = _compared(bind("SELECT * FROM kv WHERE value->'x' = ?", [x]))
    assert got == x and type(got) is float


@SETTINGS
@given(st.lists(st.one_of(st.text(alphabet="'?-x\n\"ab"), st.binary(max_size=4), st.integers(), st.booleans()),
                min_size=1, max_size=6))
def test_mixed_params_land_in_order(values):
    # bytes compare with value itself; the rest with a JSON field
    sql = "SELECT * FROM kv WHERE " + " AND ".join(
        "value = ?" if isinstance(v, bytes) else f"value->'f{i}' = ?" for i, v in enumerate(values))
    got = _compared(bind(sql, values))
    assert got == values and [type(g) for g in got] == [type(v) for v in values]


_OFFSETS = st.integers(min_value=-23 * 60 - 59, max_value=23 * 60 + 59).map(lambda m: timezone(timedelta(minutes=m)))


@SETTINGS
@given(st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=_OFFSETS))
def test_datetimes_agree_with_the_languages_timestamp(dt):
    # the same instant as TIMESTAMP '<isoformat>': exact to the nanosecond, whatever the offset
    ns = datetime_to_ns(dt)
    assert ns == parse_timestamp(dt.isoformat())
    assert _compared(bind("SELECT * FROM kv WHERE value->'t' = ?", [dt])) == [ns]


# --- datetime keys --------------------------------------------------------------------------------


def test_datetime_keys():
    assert coerce_key(datetime(1970, 1, 1, tzinfo=UTC)) == 0
    # exact where a float would round: 2**53 ns is only ~104 days
    late = datetime(2500, 6, 7, 8, 9, 10, 123457, tzinfo=timezone(timedelta(hours=-5)))
    assert coerce_key(late) == parse_timestamp("2500-06-07T08:09:10.123457-05:00")
    assert coerce_key(datetime(2554, 7, 21, 23, 34, 33, 709551, tzinfo=UTC)) == MAX_KEY - 615
    assert coerce_key(12) == 12
    assert coerce_range(datetime(1970, 1, 1, tzinfo=UTC), 5) == (0, 5)


@pytest.mark.parametrize("bad, words", [
    (datetime(2026, 1, 1), "naive.*attach one"),
    (datetime(1969, 12, 31, 23, 59, tzinfo=UTC), "outside"),
    (datetime(2554, 7, 21, 23, 34, 33, 709552, tzinfo=UTC), "outside"),
    (-1, "outside"),
    (2**64, "outside"),
    (True, "int .* or a timezone-aware datetime"),
    ("5", "int .* or a timezone-aware datetime"),
    (date(2026, 1, 1), "int .* or a timezone-aware datetime"),
])
def test_bad_keys_refused(bad, words):
    with pytest.raises(InvalidKey, match=words):
        coerce_key(bad)
    with pytest.raises(InvalidKey, match=words):
        coerce_range(0, bad)


# --- results --------------------------------------------------------------------------------------


def _result(pages):
    async def gen():
        for page in pages:
            yield page

    return AsyncQueryResult(ExecutorResult(("key", "value"), "SELECT", gen))


def test_async_result_counts_rows_and_is_read_once():
    async def main():
        res = _result([[(1, b"a"), (2, b"b")], [(3, b"c")]])
        assert res.rowcount is None
        assert repr(res) == "<AsyncQueryResult SELECT columns=('key', 'value') rows=0 unread>"
        assert [row async for row in res] == [(1, b"a"), (2, b"b"), (3, b"c")]
        assert res.rowcount == 3
        assert repr(res) == "<AsyncQueryResult SELECT columns=('key', 'value') rows=3 complete>"
        with pytest.raises(InvalidArgument, match="already read"):
            res.__aiter__()
        with pytest.raises(InvalidArgument, match="already read"):
            await res.rows()
        with pytest.raises(InvalidArgument, match="already read"):
            res.pages()
        await res.close()  # still fine, and changes nothing
        assert res.rowcount == 3

        partial = _result([[(1, b"a")], [(2, b"b")]])
        pages = partial.pages()
        assert await pages.__anext__() == [(1, b"a")]
        assert "rows=1 reading" in repr(partial) and partial.rowcount is None
        await partial.close()
        await pages.aclose()
        assert "rows=1 closed" in repr(partial) and partial.rowcount is None

        unread = _result([[(1, b"a")]])
        await unread.close()
        with pytest.raises(InvalidArgument, match="was closed"):
            await unread.rows()

        empty = AsyncQueryResult(ExecutorResult((), "INSERT 2"))
        assert await empty.rows() == [] and empty.rowcount == 0

    asyncio.run(main())


def test_query_binds_before_anything_is_sent():
    async def main():
        db = AsyncClient("127.0.0.1:9")  # nothing listens there, and nothing may be sent
        with pytest.raises(InvalidArgument, match="now_ns=... by keyword"):
            await db.query("SELECT * FROM kv WHERE key > now() - 5", 12345)
        with pytest.raises(InvalidArgument, match=r"2 \? placeholders but 1 was given"):
            await db.query("PUT ? ?", [1])
        with pytest.raises(InvalidArgument, match="now_ns must be an int"):
            await db.query("GET 1", now_ns=1.5)
        with pytest.raises(InvalidKey, match="naive"):
            await db.put(datetime(2026, 1, 1), b"v")
        assert db.node_addresses() == {}  # never connected
        await db.close()

    asyncio.run(main())


@pytest.mark.parametrize("cls", [Client, AsyncClient])
def test_help_documents_every_option(cls):
    text = pydoc.render_doc(cls, renderer=pydoc.plaintext)
    for option, default in [("timeout", "10.0"), ("attempt_timeout", "3.0"), ("consistency", "'linearizable'"),
                            ("page_keys", "4000"), ("page_bytes", "1048576")]:
        assert re.search(rf"\b{option}: '\w+' = {default}", text), option  # in the signature ...
        assert f"``{option}=" in text  # ... and explained in the docstring
    assert "**options" not in text


def test_a_timestamp_from_a_query_result_is_a_key_as_it_stands():
    """``to_timestamp`` columns come back as Timestamp, an int subclass: usable as a key again."""
    from raftkv.keys import coerce_key
    from raftkv.query import Timestamp

    ts = Timestamp("2026-11-21T10:00:00Z")
    assert coerce_key(ts) == 1_795_255_200_000_000_000 and type(coerce_key(ts)) is int
    with pytest.raises(InvalidKey):
        coerce_key(True)  # a bool is an int to Python, never a key

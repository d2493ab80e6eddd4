"""Grammar and semantic checks: every construct parses to the expected AST, every error explains itself."""

import pytest

from raftkv.errors import QueryError
from raftkv.query import ast, parse, parse_script
from raftkv.query.ast import (
    And,
    Arith,
    Between,
    Call,
    Column,
    Compare,
    Delete,
    Explain,
    Get,
    InList,
    Insert,
    IsNull,
    JsonField,
    Literal,
    Match,
    Neg,
    Not,
    Or,
    Select,
    SelectItem,
    Show,
    Split,
    Star,
)

pytestmark = pytest.mark.timeout(60)

KEY, VALUE = Column("key"), Column("value")
STAR = (SelectItem(Star()),)


def where(text: str) -> ast.Expr:
    return parse(f"SELECT * FROM kv WHERE {text}").where


def error(text: str) -> str:
    with pytest.raises(QueryError) as e:
        parse(text)
    return e.value.message


# --- statements ------------------------------------------------------------------------------------


def test_select_star():
    assert parse("SELECT * FROM kv") == Select(STAR)


def test_select_full():
    s = parse("SELECT key, value FROM kv WHERE key > 5 ORDER BY key DESC LIMIT 10")
    assert s == Select((SelectItem(KEY), SelectItem(VALUE)), Compare(">", KEY, Literal(5)), None, "desc", 10)


def test_keywords_are_case_insensitive_and_comments_ignored():
    a = parse("select KEY, Value from KV where KEY between 1 and 2 order by Key asc limit 3 -- trailing")
    b = parse("SELECT key, value\n-- a comment line\nFROM kv WHERE key BETWEEN 1 AND 2 ORDER BY key ASC LIMIT 3;")
    assert a == b
    assert a.order == "asc"


def test_order_by_default_direction_is_ascending():
    assert parse("SELECT * FROM kv ORDER BY key").order == "asc"
    assert parse("SELECT * FROM kv").order is None


def test_aggregates_and_aliases():
    s = parse("SELECT count(*) AS n, min(key), max(key), sum(value->'t'), avg(length(value)) AS a, "
              "min(value->'t' * 2), MAX(key - 1) FROM kv")
    assert s.items == (
        SelectItem(Call("count", (Star(),)), "n"),
        SelectItem(Call("min", (KEY,))),
        SelectItem(Call("max", (KEY,))),
        SelectItem(Call("sum", (JsonField(("t",)),))),
        SelectItem(Call("avg", (Call("length", (VALUE,)),)), "a"),
        SelectItem(Call("min", (Arith("*", JsonField(("t",)), Literal(2)),))),
        SelectItem(Call("max", (Arith("-", KEY, Literal(1)),))),
    )


def test_group_by_time_bucket():
    s = parse("SELECT time_bucket(INTERVAL '1 minute', key) AS m, count(*) FROM kv "
              "GROUP BY time_bucket(INTERVAL '1 minute', key) ORDER BY key DESC LIMIT 5")
    bucket = Call("time_bucket", (Literal(60 * 10**9), KEY))
    assert s.group_by == bucket
    assert s.items == (SelectItem(bucket, "m"), SelectItem(Call("count", (Star(),))))


def test_insert_put_get_delete():
    assert parse("INSERT INTO kv VALUES (1, 'a'), (0x2, x'00ff')") == Insert(
        ((Literal(1), Literal("a")), (Literal(2), Literal(b"\x00\xff"))))
    assert parse("PUT 7 'seven'") == Insert(((Literal(7), Literal("seven")),))
    assert parse("put now() 'x'") == Insert(((Call("now", ()), Literal("x")),))
    assert parse("PUT (now() - INTERVAL '1 s') 'x'").rows[0][0] == Arith("-", Call("now", ()), Literal(10**9))
    assert parse("GET 42") == Get(Literal(42))
    assert parse("DELETE FROM kv WHERE key = 1") == Delete(Compare("=", KEY, Literal(1)))
    assert parse("DELETE FROM kv WHERE TRUE") == Delete(Literal(True))


def test_explain_and_show():
    assert parse("EXPLAIN SELECT * FROM kv") == Explain(Select(STAR))
    assert parse("explain delete from kv where key < 3") == Explain(Delete(Compare("<", KEY, Literal(3))))
    assert [parse(f"SHOW {w}") for w in ("SHARDS", "nodes", "Status")] == [
        Show("shards"), Show("nodes"), Show("status")]


def test_split_shard():
    assert parse("SPLIT SHARD s0003") == Split("s0003")
    assert parse("split shard s0003 at 42;") == Split("s0003", Literal(42))
    assert parse("SPLIT SHARD 's0003' AT 0x2a") == Split("s0003", Literal(42))
    assert parse("SPLIT SHARD s0001 AT TIMESTAMP '2026-11-21' + INTERVAL '1 hour'") == Split(
        "s0001", Arith("+", Literal(1_795_219_200_000_000_000), Literal(3_600_000_000_000)))
    assert parse("SPLIT SHARD s0001 AT now() - 5") == Split("s0001", Arith("-", Call("now", ()), Literal(5)))
    assert parse("SPLIT SHARD s1 AT -(1)") == Split("s1", Neg(Literal(1)))  # parses; the planner refuses it
    assert parse("SPLIT SHARD s1 AT 1.5").at == Literal(1.5)  # ditto: a key must be whole
    assert parse_script("SPLIT SHARD s1; SPLIT SHARD s2 AT 7") == [Split("s1"), Split("s2", Literal(7))]
    assert parse("SPLIT SHARD s0003 AT 42").pos == (1, 1)
    assert parse("\n  SPLIT SHARD s0003 AT 42").at.pos == (2, 24)


@pytest.mark.parametrize(("text", "message", "column"), [
    ("SPLIT", "unexpected end of input; expected SHARD", 6),
    ("SPLIT s0003", "unexpected name 's0003'; expected SHARD", 7),
    ("SPLIT SHARDS s0003", "unexpected SHARDS; expected SHARD", 7),
    ("SPLIT SHARD", "unexpected end of input; expected one of: a name, a string", 12),
    ("SPLIT SHARD 3", "unexpected number 3; expected one of: a name, a string", 13),
    ("SPLIT SHARD s0003 AT", "unexpected end of input; expected an expression", 21),
    ("SPLIT SHARD s0003 42", "unexpected number 42", 19),
    ("SPLIT SHARD s0003 AT 1 2", "unexpected number 2", 24),
    ("SPLIT SHARD s0003 AT key > 5", "unexpected comparison operator >", 26),
    ("SPLIT SHARD s0003 AT 'abc'", "the split key must be a constant number such as 42, 0x2a or "
                                   "TIMESTAMP '2026-11-21', not 'abc'", 22),
    ("SPLIT SHARD s0003 AT key", "the split key must be a constant number", 22),
    ("SPLIT SHARD s0003 AT TRUE", "not TRUE", 22),
    ("SPLIT SHARD s0003 AT x'00'", "not x'00'", 22),
    ("SPLIT SHARD s0003 AT length(value)", "not length(value)", 22),
    ("SPLIT SHARD s0003 AT 1 + value->'a'", "not 1 + value->'a'", 22),
    ("SPLIT SHARD s0003 AT 0xzz", "bad hex literal 0xzz", 22),
    ("SPLIT SHARD s0003 AT TIMESTAMP '2026-02-30'", "bad timestamp '2026-02-30'", 32),
    ("SPLIT SHARD ''", "a shard id cannot be empty", 13),
    ("SPLIT SHARD s0003 AT", "expected an expression", 21),
])
def test_split_errors_show_where(text, message, column):
    msg = error(text)
    first, source, caret = msg.splitlines()
    assert first.startswith(f"line 1, column {column}: ") and message in first, msg
    assert source == f"  {text}"
    assert caret == " " * (column + 1) + "^"


def test_split_words_are_reserved():
    assert "unexpected AT" in error("SELECT key AS at FROM kv")
    assert "unexpected SHARD" in error("SELECT count(*) AS shard FROM kv")


def test_script():
    stmts = parse_script("SELECT * FROM kv; ; GET 1;\n-- comment\nPUT 2 'b'")
    assert stmts == [Select(STAR), Get(Literal(1)), Insert(((Literal(2), Literal("b")),))]
    assert parse_script("") == []
    assert parse_script(" ; ;; ") == []


def test_single_statement_parse_rejects_two():
    assert "unexpected GET" in error("SELECT * FROM kv; GET 1")


# --- conditions ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("op", "norm"), [("=", "="), ("!=", "!="), ("<>", "!="), ("<", "<"), ("<=", "<="),
                                          (">", ">"), (">=", ">=")])
def test_key_comparisons(op, norm):
    assert where(f"key {op} 5") == Compare(norm, KEY, Literal(5))


def test_between_in_and_negations():
    assert where("key BETWEEN 1 AND 5") == Between(KEY, Literal(1), Literal(5))
    assert where("key NOT BETWEEN 1 AND 5") == Between(KEY, Literal(1), Literal(5), negated=True)
    assert where("key IN (1, 2, 3)") == InList(KEY, (Literal(1), Literal(2), Literal(3)))
    assert where("key NOT IN (1)") == InList(KEY, (Literal(1),), negated=True)


def test_value_predicates():
    assert where("value = 'x'") == Compare("=", VALUE, Literal("x"))
    assert where("value != x'00'") == Compare("!=", VALUE, Literal(b"\x00"))
    assert where("value LIKE 'a%'") == Match("like", VALUE, Literal("a%"))
    assert where("value NOT LIKE 'a_'") == Match("like", VALUE, Literal("a_"), negated=True)
    assert where("value STARTS WITH 'ab'") == Match("starts", VALUE, Literal("ab"))
    assert where("value CONTAINS 'ab'") == Match("contains", VALUE, Literal("ab"))
    assert where("length(value) > 3") == Compare(">", Call("length", (VALUE,)), Literal(3))


def test_json_paths_and_comparisons():
    assert where("value->'temp' > 30") == Compare(">", JsonField(("temp",)), Literal(30))
    assert where("value->'a'->'b'->0 = 'x'") == Compare("=", JsonField(("a", "b", 0)), Literal("x"))
    assert where("value->0 = TRUE") == Compare("=", JsonField((0,)), Literal(True))
    assert where("value->'ok' != false") == Compare("!=", JsonField(("ok",)), Literal(False))
    assert where("value->'t' IS NULL") == IsNull(JsonField(("t",)))
    assert where("value->'t' IS NOT NULL") == IsNull(JsonField(("t",)), negated=True)
    assert where("value->'dev' LIKE 'a%'") == Match("like", JsonField(("dev",)), Literal("a%"))
    assert where("value->'dev' IN ('a', 'b')") == InList(JsonField(("dev",)), (Literal("a"), Literal("b")))


def test_boolean_structure_and_precedence():
    a, b, c = (Compare("=", KEY, Literal(i)) for i in (1, 2, 3))
    assert where("key = 1 OR key = 2 AND key = 3") == Or((a, And((b, c))))
    assert where("(key = 1 OR key = 2) AND key = 3") == And((Or((a, b)), c))
    assert where("NOT key = 1 AND key = 2") == And((Not(a), b))
    assert where("NOT NOT key = 1") == Not(Not(a))
    assert where("key = 1 AND key = 2 AND key = 3") == And((a, b, c))
    assert where("key BETWEEN 1 AND 2 AND key = 3") == And((Between(KEY, Literal(1), Literal(2)), c))


def test_arithmetic_precedence_and_parentheses():
    assert where("key > 1 + 2 * 3") == Compare(">", KEY, Arith("+", Literal(1), Arith("*", Literal(2), Literal(3))))
    assert where("(key + 1) * 2 > 3") == Compare(">", Arith("*", Arith("+", KEY, Literal(1)), Literal(2)), Literal(3))
    assert where("key > 10 - 2 - 3") == Compare(">", KEY, Arith("-", Arith("-", Literal(10), Literal(2)), Literal(3)))
    assert where("key > -5 / 1") == Compare(">", KEY, Arith("/", Neg(Literal(5)), Literal(1)))


def test_literals_in_queries():
    assert where("key = 0xff").right == Literal(255)
    assert where("key = 1.5").right == Literal(1.5)
    assert where("value = 'it''s'").right == Literal("it's")
    assert where("key > TIMESTAMP '1970-01-01T00:00:01Z'").right == Literal(10**9)
    assert where("key > now() - INTERVAL '5 minutes'").right == Arith("-", Call("now", ()), Literal(300 * 10**9))
    assert where("key > TIMESTAMP '1970-01-02' + INTERVAL '1 hour'").right == Arith(
        "+", Literal(86400 * 10**9), Literal(3600 * 10**9))
    assert where("TRUE") == Literal(True)
    assert where("FALSE") == Literal(False)


def test_positions_are_recorded():
    e = parse("SELECT *\nFROM kv\nWHERE  key > 5").where
    assert e.pos == (3, 8)
    assert e.right.pos == (3, 14)


def test_literal_text_is_kept_for_rendering():
    e = where("key >= now() - INTERVAL '5 minutes' AND key < 0x10")
    assert ast.render(e) == "key >= now() - INTERVAL '5 minutes' AND key < 0x10"


def test_render_round_trips():
    for text in ["key = 1 OR key = 2 AND NOT (key = 3 OR value LIKE 'a%')",
                 "(key + 1) * 2 > 3 AND value->'a'->0 IS NOT NULL",
                 "key NOT BETWEEN 1 AND 2 OR key NOT IN (1, 2) OR value NOT LIKE 'x' OR value STARTS WITH 'y'",
                 "key - (2 - 3) > -(-1) AND value CONTAINS x'00'"]:
        assert parse(f"SELECT * FROM kv WHERE {ast.render(where(text))}").where == where(text)
    assert ast.render(Arith("-", KEY, Literal(-5))) == "key - (-5)"
    assert ast.render(Neg(Neg(KEY))) == "-(-key)"


# --- syntax errors ---------------------------------------------------------------------------------


def test_unexpected_token_shows_line_column_caret_and_expected():
    msg = error("SELECT * FORM kv")
    assert msg == ("line 1, column 10: unexpected name 'FORM'; expected one of: ',', FROM\n"
                   "  SELECT * FORM kv\n"
                   "           ^")


def test_unexpected_end_of_input_points_after_the_text():
    msg = error("SELECT * FROM kv WHERE key >   ")
    assert msg.startswith("line 1, column 29: unexpected end of input; expected an expression")
    assert msg.splitlines()[2] == " " * 30 + "^"


def test_error_on_a_later_line():
    msg = error("SELECT *\nFROM kv\nWHERE key > 5 5")
    assert msg.startswith("line 3, column 15: unexpected number 5")
    assert msg.splitlines()[1:] == ["  WHERE key > 5 5", "                ^"]


def test_caret_follows_tabs():
    assert error("SELECT *\tFORM kv").splitlines()[2] == "  " + " " * 8 + "\t^"


@pytest.mark.parametrize(("text", "fragment"), [
    ("", "unexpected end of input; expected one of: COPY, DELETE, EXPLAIN, GET, INSERT, PUT, SELECT, SHOW, SPLIT"),
    ("SELEC * FROM kv", "unexpected name 'SELEC'"),
    ("SELECT * FROM", "unexpected end of input; expected a name"),
    ("SELECT FROM kv", "unexpected FROM; expected one of: an expression, '*'"),
    ("SELECT * FROM kv WHERE", "expected an expression"),
    ("SELECT * FROM kv WHERE key IN (1,", "unexpected end of input"),
    ("SELECT * FROM kv WHERE key IN ()", "unexpected ')'"),
    ("SELECT * FROM kv LIMIT", "expected an expression"),
    ("SELECT * FROM kv ORDER key", "unexpected KEY; expected BY"),
    ("SELECT * FROM kv WHERE key = = 1", "unexpected comparison operator ="),
    ("SELECT * FROM kv WHERE value-> = 1", "unexpected comparison operator =; expected one of: a number, a string"),
    ("INSERT INTO kv VALUES (1)", "unexpected ')'; expected ','"),
    ("INSERT INTO kv VALUES (1, 'a', 'b')", "unexpected ','"),
    ("PUT 1", "unexpected end of input"),
    ("EXPLAIN GET 1", "unexpected GET; expected one of: COPY, DELETE, SELECT"),  # COPY to say why it has no plan
    ("SHOW TABLES", "unexpected name 'TABLES'"),
    ("SELECT * FROM kv WHERE key > 5 5", "unexpected number 5"),
    ("SELECT * FROM kv WHERE value = 'a' 'b'", "unexpected string 'b'"),
    ("SELECT * FROM kv WHERE key = 1.2.3", "unexpected number .3"),
])
def test_syntax_errors(text, fragment):
    assert fragment in error(text)


def test_bad_characters():
    assert error("SELECT * FROM kv WHERE key > $").startswith("line 1, column 30: unexpected character '$'\n")
    assert "unexpected character '@'" in error("SELECT @ FROM kv")
    assert "strings use single quotes" in error('SELECT * FROM kv WHERE value = "x"')


def test_unterminated_strings():
    msg = error("SELECT * FROM kv WHERE value = 'abc")
    assert msg.startswith("line 1, column 32: unterminated string: the closing ' is missing")
    msg = error("SELECT * FROM kv WHERE value = x'00")
    assert msg.startswith("line 1, column 32: unterminated byte string")


def test_deep_nesting_is_a_query_error():
    assert "the query is nested too deeply" in error("SELECT * FROM kv WHERE " + "NOT " * 5000 + "key = 1")
    assert where("(" * 2000 + "key = 1" + ")" * 2000) == Compare("=", KEY, Literal(1))


def test_double_minus_starts_a_comment():
    assert "unexpected end of input" in error("SELECT * FROM kv WHERE key = --1")
    assert where("key = - -1") == Compare("=", KEY, Neg(Neg(Literal(1))))


def test_no_raw_terminal_names_leak():
    texts = ["SELECT * FROM kv WHERE value", "SELECT * FROM kv WHERE value->", "SELECT count(", "PUT 1 -",
             "SELECT * FROM kv WHERE key IS", "SELECT * FROM kv WHERE key NOT", "SELECT key AS", "DELETE FROM kv WHERE key >"]
    for text in texts:
        msg = error(text)
        assert "__" not in msg and "ANON" not in msg and "$END" not in msg, msg


# --- literal errors (located) ----------------------------------------------------------------------


@pytest.mark.parametrize(("text", "fragment", "column"), [
    ("SELECT * FROM kv WHERE key = 0xzz", "bad hex literal 0xzz", 30),
    ("SELECT * FROM kv WHERE value = x'0g'", "bad byte string x'0g'", 32),
    ("SELECT * FROM kv WHERE key > TIMESTAMP '2026-02-30'", "bad timestamp '2026-02-30'", 40),
    ("SELECT * FROM kv WHERE key > now() - INTERVAL '5 lightyears'", "unknown unit 'lightyears'", 47),
    ("SELECT * FROM kv WHERE key > 1e400", "too large", 30),
    ("SELECT * FROM kv WHERE value->1.5 = 1", "bad JSON path step 1.5", 31),
])
def test_literal_errors_are_located(text, fragment, column):
    msg = error(text)
    assert fragment in msg
    assert msg.startswith(f"line 1, column {column}: ")
    assert msg.splitlines()[2] == " " * (column + 1) + "^"


# --- semantic errors -------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "fragment"), [
    ("SELECT * FROM users", "unknown table 'users': the only table is kv"),
    ("SELECT key, count(*) FROM kv", "cannot mix aggregates (count(*)) and plain columns (key) without GROUP BY"),
    ("SELECT *, max(key) FROM kv", "cannot mix aggregates"),
    ("SELECT foo(key) FROM kv", "unknown function foo()"),
    ("SELECT * FROM kv WHERE bar() > 1", "unknown function bar()"),
    ("SELECT count(key, value) FROM kv", "count() takes * or one expression"),
    ("SELECT sum(*) FROM kv", "sum() takes one numeric expression"),
    ("SELECT avg(key, key) FROM kv", "avg() takes one numeric expression"),
    ("SELECT sum(value) FROM kv", "sum() needs numbers, but value (bytes) is not one"),
    ("SELECT max('a') FROM kv", "max() needs numbers"),
    ("SELECT sum(count(*)) FROM kv", "aggregate count() is not allowed inside another aggregate"),
    ("SELECT * FROM kv WHERE count(*) > 1", "aggregate count() is not allowed in WHERE"),
    ("SELECT count(*) FROM kv ORDER BY key", "ORDER BY cannot be used with aggregates without GROUP BY"),
    ("SELECT value->'t' = 1 FROM kv", "cannot select the condition value->'t' = 1"),
    ("SELECT length(value) > 1 FROM kv", "cannot select the condition length(value) > 1"),
    ("SELECT * FROM kv ORDER BY value", "ORDER BY value needs a LIMIT: rows are stored in key order"),
    ("SELECT * FROM kv LIMIT -1", "LIMIT must not be negative (got -1)"),
    ("SELECT * FROM kv LIMIT 1.5", "LIMIT must be a whole number"),
    ("SELECT * FROM kv LIMIT 9223372036854775808", "LIMIT must be a whole number from 0 to 2**63-1"),
    ("SELECT * FROM kv LIMIT now()", "LIMIT must be a whole number"),
    ("SELECT * FROM kv WHERE key = 'x'", "cannot compare key (a number) with 'x' (a string)"),
    ("SELECT * FROM kv WHERE key = TRUE", "cannot compare key (a number) with TRUE (a boolean)"),
    ("SELECT * FROM kv WHERE value > 'a'", "value can only be compared with = or !="),
    ("SELECT * FROM kv WHERE value = 5", "cannot compare value (bytes) with 5 (a number)"),
    ("SELECT * FROM kv WHERE value->'ok' < TRUE", "booleans can only be compared with = or !="),
    ("SELECT * FROM kv WHERE value->'t' = NULL", "use IS NULL or IS NOT NULL"),
    ("SELECT * FROM kv WHERE key IS NULL", "IS NULL applies to JSON fields"),
    ("SELECT * FROM kv WHERE value IS NOT NULL", "IS NULL applies to JSON fields"),
    ("SELECT * FROM kv WHERE key LIKE 'a%'", "LIKE applies to value or a JSON field"),
    ("SELECT * FROM kv WHERE value LIKE 5", "LIKE needs a string pattern"),
    ("SELECT * FROM kv WHERE value->'d' LIKE x'00'", "LIKE needs a string pattern"),
    ("SELECT * FROM kv WHERE value STARTS WITH value", "STARTS WITH needs a string pattern"),
    ("SELECT * FROM kv WHERE value CONTAINS key", "CONTAINS needs a string pattern"),
    ("SELECT * FROM kv WHERE key IN (1, key)", "IN (...) items must be constants"),
    ("SELECT * FROM kv WHERE key IN (1, 'a')", "cannot compare key (a number) with 'a' (a string)"),
    ("SELECT * FROM kv WHERE key BETWEEN 'a' AND 5", "cannot compare key"),
    ("SELECT * FROM kv WHERE value->'a'", "expected a condition such as key > 5"),
    ("SELECT * FROM kv WHERE key + 1", "expected a condition"),
    ("SELECT * FROM kv WHERE 5", "expected a condition"),
    ("SELECT * FROM kv WHERE key > 1 AND 'x'", "expected a condition"),
    ("SELECT * FROM kv WHERE NOT key", "expected a condition"),
    ("SELECT * FROM kv WHERE (key > 1) + 1 > 2", "expected a value, but key > 1 is a condition"),
    ("SELECT * FROM kv WHERE key + 'a' > 1", "arithmetic needs numbers, but 'a' (a string) is not one"),
    ("SELECT * FROM kv WHERE -value > 1", "unary minus needs numbers"),
    ("SELECT * FROM kv WHERE now(1) > 1", "now() takes no arguments"),
    ("SELECT * FROM kv WHERE length(key) > 1", "length() takes value as its only argument"),
    ("SELECT * FROM kv WHERE length(*) > 1", "length() takes value as its only argument"),
    ("SELECT * FROM kv WHERE time_bucket(1, key) > 1", "time_bucket() can only be used in GROUP BY"),
    ("SELECT count(*) FROM kv GROUP BY key", "GROUP BY supports time_bucket"),
    ("SELECT count(*) FROM kv GROUP BY time_bucket(value->'w', key)", "GROUP BY supports time_bucket"),
    ("SELECT count(*) FROM kv GROUP BY time_bucket(INTERVAL '1 s', value->'t')", "GROUP BY supports time_bucket"),
    ("SELECT key, count(*) FROM kv GROUP BY time_bucket(INTERVAL '1 s', key)", "key must be inside an aggregate"),
    ("SELECT time_bucket(INTERVAL '2 s', key), count(*) FROM kv GROUP BY time_bucket(INTERVAL '1 s', key)",
     "time_bucket() can only be used in GROUP BY"),
    ("DELETE FROM kv", "DELETE needs a WHERE clause; write WHERE TRUE to delete every key"),
    ("DELETE FROM kv WHERE count(*) > 0", "aggregate count() is not allowed in WHERE"),
    ("PUT 1 42", "a value to insert must be a string '...' or a byte string x'...', not 42 (a number)"),
    ("PUT 1 TRUE", "a value to insert must be a string"),
    ("INSERT INTO kv VALUES (1, 'a'), (2, key)", "a value to insert must be a string"),
    ("PUT 'a' 'b'", "the key to insert must be a constant number"),
    ("PUT key 'b'", "the key to insert must be a constant number"),
    ("GET value->'a'", "the key for GET must be a constant number"),
    ("GET count(*)", "the key for GET must be a constant number"),
    ("SELECT * FROM kv WHERE value LIKE 'abc\\'", "LIKE pattern ends with a lone backslash"),
    ("EXPLAIN SELECT key, count(*) FROM kv", "cannot mix aggregates"),
])
def test_semantic_errors(text, fragment):
    msg = error(text)
    assert fragment in msg
    assert msg.startswith("line "), msg
    assert "^" in msg


def test_semantic_error_points_at_the_offending_expression():
    msg = error("SELECT *\nFROM kv\nWHERE key > 5 AND value = 5")
    assert msg.splitlines() == [
        "line 3, column 19: cannot compare value (bytes) with 5 (a number)",
        "  WHERE key > 5 AND value = 5",
        "                    ^",
    ]


def test_errors_carry_position_details():
    with pytest.raises(QueryError) as e:
        parse("SELECT * FROM kv WHERE key = 'x'")
    assert (e.value.details["line"], e.value.details["column"]) == (1, 24)
    assert e.value.code == "query_error"

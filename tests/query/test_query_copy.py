"""COPY in the grammar: the statement forms, their options, and errors that point at the mistake."""

from __future__ import annotations

import pytest

from raftkv.errors import QueryError
from raftkv.query import ast, parse, parse_script, plan
from raftkv.query.ast import Column, Compare, Copy, Literal, Select, SelectItem, Star
from raftkv.routing.shardmap import initial_map

pytestmark = pytest.mark.timeout(60)


def test_copy_from_with_defaults() -> None:
    assert parse("COPY kv FROM 'readings.csv'") == Copy("from", "readings.csv")
    st = parse("copy KV from '/data/it''s.csv';")
    assert st == Copy("from", "/data/it's.csv") and st.format is None and st.key_format == "int"


def test_copy_from_with_every_option() -> None:
    st = parse("COPY kv FROM 'a.txt' WITH (FORMAT csv, HEADER, KEY_FORMAT timestamp)")
    assert st == Copy("from", "a.txt", None, "csv", True, "timestamp")
    assert parse("COPY kv FROM 'a' WITH (format 'JSONL', key_format int)") == Copy("from", "a", None, "jsonl")
    assert parse("COPY kv FROM 'a' WITH (HEADER TRUE)").header is True
    assert parse("COPY kv FROM 'a' WITH (HEADER FALSE)").header is False


def test_copy_query_to_keeps_the_checked_select() -> None:
    st = parse("COPY (SELECT key, value FROM kv WHERE key > 5 LIMIT 10) TO 'out.jsonl' WITH (FORMAT jsonl)")
    assert st.direction == "to" and st.path == "out.jsonl" and st.format == "jsonl"
    assert st.query == Select((SelectItem(Column("key")), SelectItem(Column("value"))),
                              Compare(">", Column("key"), Literal(5)), limit=10)


def test_copy_table_to_is_select_star() -> None:
    st = parse("COPY kv TO 'all.csv' WITH (HEADER)")
    assert st == Copy("to", "all.csv", Select((SelectItem(Star()),)), header=True)


def test_copy_of_a_select_without_from() -> None:
    st = parse("COPY (SELECT now() AS t) TO 'now.csv'")
    assert isinstance(st.query, ast.ConstantSelect)


def test_copy_in_a_script_and_option_names_stay_usable_as_aliases() -> None:
    script = parse_script("COPY kv FROM 'a.csv'; SELECT value->'format' AS format, 1 AS header FROM kv")
    assert isinstance(script[0], Copy) and isinstance(script[1], Select)


@pytest.mark.parametrize(("text", "line", "column", "message"), [
    ("COPY kv FROM 'a' WITH (FORMAT xml)", 1, 31, "FORMAT must be csv or jsonl, not xml"),
    ("COPY kv FROM 'a' WITH (KEY_FORMAT date)", 1, 35, "KEY_FORMAT must be int or timestamp, not date"),
    ("COPY kv FROM 'a' WITH (KEY_FORMAT)", 1, 24, "KEY_FORMAT must be int or timestamp, not nothing"),
    ("COPY kv FROM 'a' WITH (HEADER maybe)", 1, 31, "HEADER takes no value, or TRUE or FALSE, not maybe"),
    ("COPY kv FROM 'a' WITH (colour red)", 1, 24, "unknown COPY option colour"),
    ("COPY kv FROM 'a' WITH (FORMAT csv, FORMAT csv)", 1, 36, "option FORMAT is given twice"),
    ("COPY kv FROM '-'", 1, 14, "COPY reads and writes files, not standard input or output; use `raftkv import -`"),
    ("COPY (SELECT * FROM kv) TO '-' WITH (HEADER)", 1, 28, "or './-' for a file named -"),
    ("EXPLAIN COPY kv FROM 'a'", 1, 9, "EXPLAIN does not take COPY: a COPY runs in the client"),
    ("EXPLAIN\n COPY kv TO 'a'", 2, 2, "EXPLAIN the SELECT of a COPY (...) TO instead"),
    ("COPY kv FROM ''", 1, 14, "the file name is empty"),
    ("COPY kv FROM readings.csv", 1, 14, "unexpected name 'readings'; expected a string"),
    ("COPY t FROM 'a'", 1, 6, "unknown table 't'"),
    ("COPY kv INTO 'a'", 1, 9, "unexpected INTO; expected one of: FROM, TO"),
    ("COPY kv FROM 'a' WITH ()", 1, 24, "unexpected ')'; expected a name"),
    ("COPY kv FROM 'a' WITH FORMAT csv", 1, 23, "expected '('"),
    ("COPY (DELETE FROM kv WHERE TRUE) TO 'a'", 1, 7, "unexpected DELETE; expected SELECT"),
    ("COPY (SELECT time FROM kv) TO 'a'", 1, 14, "unknown column 'time'"),
    ("COPY (SELECT * FROM kv) FROM 'a'", 1, 25, "unexpected FROM; expected TO"),
    ("COPY kv\n  FROM 'a'\n  WITH (FORMAT tsv)", 3, 16, "FORMAT must be csv or jsonl, not tsv"),
])
def test_malformed_copy_is_refused_at_its_position(text: str, line: int, column: int, message: str) -> None:
    with pytest.raises(QueryError) as info:
        parse(text)
    err = info.value
    assert (err.details["line"], err.details["column"]) == (line, column), err.message
    assert err.message.startswith(f"line {line}, column {column}: ")
    assert message in err.message
    caret = err.message.splitlines()[-1]
    assert caret.index("^") == column + 1  # under the column, after the snippet's two-space indent


def test_explain_of_a_built_copy_is_refused_by_the_check_not_the_planner() -> None:
    from raftkv.query.check import check

    with pytest.raises(QueryError, match="EXPLAIN does not take COPY"):
        check(ast.Explain(Copy("from", "a.csv")))


def test_header_with_jsonl_is_refused_once_whether_the_format_is_given_or_implied() -> None:
    from raftkv import bulk

    for text in ("COPY kv FROM 'a' WITH (FORMAT jsonl, HEADER)", "COPY kv FROM 'a.jsonl' WITH (HEADER)"):
        st = parse(text)  # the grammar leaves it to the options, which see the file name too
        with pytest.raises(bulk.CopyError, match="HEADER is for the csv format"):
            bulk.CopyOptions.for_path(st.path, st.format, st.header, st.key_format)
    assert bulk.FORMATS is ast.COPY_FORMATS and bulk.KEY_FORMATS is ast.COPY_KEY_FORMATS  # one definition


def test_the_planner_refuses_copy_with_a_pointer_to_the_client() -> None:
    with pytest.raises(QueryError, match="COPY reads and writes files on the client"):
        plan(parse("COPY kv FROM 'a.csv'"), initial_map(["n1", "n2", "n3"], 2))

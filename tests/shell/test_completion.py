"""Context-aware completion, through the pure function and through prompt_toolkit's Completer API."""

from __future__ import annotations

from pathlib import Path

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from shell.completion import QueryCompleter, suggest

pytestmark = pytest.mark.timeout(120)


def texts(before_cursor: str) -> list[str]:
    return [c.text for c in suggest(before_cursor).candidates]


def completions(text: str, cursor: int | None = None) -> list[tuple[str, int]]:
    doc = Document(text, len(text) if cursor is None else cursor)
    return [(c.text, c.start_position)
            for c in QueryCompleter().get_completions(doc, CompleteEvent(completion_requested=True))]


@pytest.mark.parametrize(("before", "expected"), [
    ("", ["SELECT", "INSERT INTO", "PUT", "GET", "DELETE FROM", "EXPLAIN", "SHOW", "SPLIT SHARD"]),
    ("SHOW ", ["SHARDS", "NODES", "STATUS"]),
    ("EXPLAIN ", ["SELECT", "DELETE FROM"]),
    ("SELECT * ", ["AS", "FROM"]),
    ("SELECT * FROM ", ["kv"]),
    ("SELECT * FROM kv ", ["WHERE", "GROUP BY", "ORDER BY", "LIMIT", "OFFSET"]),
    ("SELECT * FROM kv ORDER BY ", ["key"]),
    ("SELECT * FROM kv ORDER BY key ", ["ASC", "DESC", "LIMIT", "OFFSET"]),
    ("SELECT count(*) FROM kv GROUP ", ["BY"]),
    ("INSERT ", ["INTO"]),
    ("INSERT INTO kv ", ["VALUES"]),
    ("DELETE ", ["FROM"]),
    ("DELETE FROM kv ", ["WHERE"]),
    ("SELECT * FROM kv WHERE value IS ", ["NULL", "NOT NULL"]),
    ("SELECT * FROM kv WHERE value STARTS ", ["WITH"]),
    ("SELECT * FROM kv WHERE key NOT ", ["BETWEEN", "IN", "LIKE"]),
    ("SELECT * FROM kv WHERE key > TIMESTAMP ", []),
    ("SELECT * FROM kv LIMIT ", []),
    ("SPLIT ", ["SHARD"]),
    ("SPLIT SHARD ", []),  # a shard id comes next: the person types it
    ("SPLIT SHARD s0003 ", ["AT"]),
    ("SPLIT SHARD 's0003' ", ["AT"]),
    ("SPLIT SHARD s0003 AT ", ["now", "TIMESTAMP", "INTERVAL"]),
    ("SPLIT SHARD s0003 AT TIMESTAMP ", []),
    ("SPLIT SHARD s0003 AT 42 ", []),
    ("SPLIT SHARD s0003 AT 42 + ", ["now", "TIMESTAMP", "INTERVAL"]),
    ("SPLIT SHARDS ", []),
])
def test_context(before: str, expected: list[str]) -> None:
    assert texts(before) == expected


def test_select_list_offers_columns_and_every_function() -> None:
    got = texts("SELECT ")
    assert got[:3] == ["*", "key", "value"]
    for name in ("count", "min", "max", "sum", "avg", "length", "now", "time_bucket"):
        assert name in got
    assert texts("SELECT key, ") == got


def test_where_offers_scalar_functions_not_aggregates() -> None:
    got = texts("SELECT * FROM kv WHERE ")
    assert {"key", "value", "length", "now", "NOT", "TIMESTAMP", "INTERVAL"} <= set(got)
    assert "count" not in got and "avg" not in got
    after = texts("SELECT * FROM kv WHERE key > now() - INTERVAL '5 minutes' ")
    assert {"AND", "OR", "BETWEEN", "ORDER BY", "LIMIT"} <= set(after)
    assert texts("DELETE FROM kv WHERE key > 5 ")[-1] == "IS NOT NULL"  # no ORDER BY in DELETE


def test_prefix_filtering_and_case() -> None:
    assert texts("SEL") == ["SELECT"]
    assert texts("sel") == ["select"]  # keywords follow the case typed
    assert texts("select * fr") == ["from"]
    assert texts("SELECT co") == ["count"]
    assert texts("SELECT Ti") == ["time_bucket", "TIMESTAMP"]
    assert texts("SELECT * FROM kv o") == ["order by", "offset"]
    assert texts("SELECT") == []  # the word is already whole


def test_nothing_inside_strings_comments_or_numbers() -> None:
    assert texts("SELECT * FROM kv WHERE value = 'sel") == []
    assert texts("SELECT * -- sel") == []
    assert texts("SELECT * FROM kv LIMIT 1") == []


def test_split_shard_prefixes_and_case() -> None:
    assert texts("S") == ["SELECT", "SHOW", "SPLIT SHARD"]
    assert texts("sp") == ["split shard"]
    assert texts("split shard s0003 a") == ["at"]
    assert texts("SPLIT SH") == ["SHARD"]
    assert completions("GET 1; spl") == [("split shard", -3)]


def test_only_the_current_statement_counts() -> None:
    assert texts("SELECT * FROM kv; SH") == ["SHOW"]
    assert texts("SELECT ';' FROM kv;\n") == texts("")


def test_backslash_commands_and_their_arguments() -> None:
    assert "\\format" in texts("\\")
    assert texts("\\fo") == ["\\format"]
    assert texts("\\format ") == ["table", "vertical", "json", "csv"]
    assert texts("\\timing o") == ["on", "off"]
    assert texts("\\consistency s") == ["serializable"]
    assert texts("GET 1; \\q") == ["\\quit"]
    assert texts("\\nosuch ") == []


def test_completer_replaces_the_typed_prefix() -> None:
    assert completions("sel") == [("select", -3)]
    assert completions("SELECT * FROM kv WHERE le") == [("length", -2)]
    # the cursor in the middle: only the text before it matters
    assert completions("SHOW  FROM", cursor=5) == [("SHARDS", 0), ("NODES", 0), ("STATUS", 0)]


def test_completer_completes_file_names_after_backslash_i(tmp_path: Path, monkeypatch) -> None:
    (tmp_path / "load.sql").write_text("GET 1;")
    (tmp_path / "other.txt").write_text("")
    monkeypatch.chdir(tmp_path)
    assert completions("\\i lo") == [("ad.sql", 0)]
    assert {t for t, _ in completions("\\i ")} == {"load.sql", "other.txt"}


SAMPLES = [
    "SELECT time_bucket(INTERVAL '1 minute', key) AS m, count(*), avg(value->'temp'->0) FROM kv "
    "WHERE key >= now() - INTERVAL '1 hour' AND NOT (value->'dev' LIKE 'test-%' OR value IS NULL) "
    "GROUP BY time_bucket(INTERVAL '1 minute', key) ORDER BY key DESC LIMIT 10; -- done",
    "INSERT INTO kv VALUES (TIMESTAMP '2026-11-21', '{\"t\": 1}'), (0x2a, x'00ff');\nPUT (now() - 1) 'x';",
    "EXPLAIN DELETE FROM kv WHERE key NOT BETWEEN 1 AND 2 AND value STARTS WITH 'a';\n\\i some file\nSHOW NODES",
    "GET 'unterminated",
    "SPLIT SHARD s0003 AT TIMESTAMP '2026-11-21' + INTERVAL '1 hour';\nsplit shard 's0004'",
]


@pytest.mark.parametrize("sample", SAMPLES)
def test_every_prefix_is_handled(sample: str) -> None:
    from shell.lexer import highlight

    for end in range(len(sample) + 1):
        suggest(sample[:end])
        assert "".join(t for line in highlight(sample[:end]) for _, t in line) == sample[:end].replace("\n", "")

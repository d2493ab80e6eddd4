"""JSON field names from recent results, and completing them (and ->, ->>, OFFSET) at the prompt."""

from __future__ import annotations

import json

import pytest
from prompt_toolkit.completion import CompleteEvent
from prompt_toolkit.document import Document

from shell.completion import QueryCompleter, suggest
from shell.fields import MAX_VALUE_BYTES, RecentFields

pytestmark = pytest.mark.timeout(60)

READING = b'{"temp": 21.5, "sensor": "s1", "loc": {"lat": 48.1, "site": {"name": "n"}}, "it\'s": 1}'


def seen(*values: bytes, columns: tuple[str, ...] = ("key", "value")) -> RecentFields:
    fields = RecentFields()
    fields.observe(columns, [(i, v) for i, v in enumerate(values)])
    return fields


def texts(before: str, fields: RecentFields | None) -> list[str]:
    return [c.text for c in suggest(before, fields).candidates]


def test_top_level_and_nested_names_by_path() -> None:
    fields = seen(READING, b'{"humidity": 40}', b"not json", b"\xff\xfe", b"[1, 2]", b'{"bad": ')
    assert fields.names() == ["humidity", "it's", "loc", "sensor", "temp"]
    assert fields.names(("loc",)) == ["lat", "site"]
    assert fields.names(("loc", "site")) == ["name"]
    assert fields.names(("temp",)) == []


def test_only_whole_values_are_read() -> None:
    # a projected field (value->'loc') is not at the top level: its names would mislead
    assert len(seen(READING, columns=("key", "value->'loc'"))) == 0
    assert seen(READING.decode(), columns=("k", "value")).names() == ["it's", "loc", "sensor", "temp"]  # text too


def test_memory_and_work_are_bounded() -> None:
    fields = RecentFields(max_names=10)
    for i in range(100):
        fields.observe(("value",), [(json.dumps({f"f{i}": 1}).encode(),)])
    assert len(fields) == 10
    assert fields.names() == sorted(f"f{i}" for i in range(90, 100))  # the oldest were forgotten
    big = json.dumps({"huge": "x" * MAX_VALUE_BYTES}).encode()
    assert len(seen(big)) == 0
    long_name = json.dumps({"n" * 100: 1, "ok": 2}).encode()
    assert seen(long_name).names() == ["ok"]
    many_rows = RecentFields()
    many_rows.observe(("value",), [(json.dumps({f"r{i}": 1}).encode(),) for i in range(1000)])
    assert len(many_rows) < 100  # a page is sampled, not read whole


@pytest.mark.parametrize(("before", "expected"), [
    ("SELECT * FROM kv WHERE value->'", ["it''s'", "loc'", "sensor'", "temp'"]),
    ("SELECT * FROM kv WHERE value->'te", ["temp'"]),
    ("SELECT value->>'s", ["sensor'"]),
    ("SELECT * FROM kv WHERE value->", ["'it''s'", "'loc'", "'sensor'", "'temp'"]),
    ("SELECT * FROM kv WHERE value->>", ["'it''s'", "'loc'", "'sensor'", "'temp'"]),
    ("SELECT value->'loc'->'", ["lat'", "site'"]),
    ("SELECT value->'loc'->'site'->>'", ["name'"]),
    ("SELECT count(*) FROM kv GROUP BY value->>'", ["it''s'", "loc'", "sensor'", "temp'"]),
    ("SELECT 'te", []),  # an ordinary string: nothing to offer
    ("SELECT * FROM kv WHERE key->'", []),
    ("SELECT value->'a'->0->'", []),  # array steps are not remembered
])
def test_field_names_after_arrows(before: str, expected: list[str]) -> None:
    assert texts(before, seen(READING)) == expected


def test_no_field_names_without_results() -> None:
    assert texts("SELECT value->'", None) == []
    assert texts("SELECT value->'", RecentFields()) == []


@pytest.mark.parametrize(("before", "expected"), [
    ("SELECT * FROM kv WHERE value ", ["->", "->>", "AND"]),
    ("SELECT value ", ["->", "->>", "AS", "FROM"]),
    ("SELECT value->'loc' ", ["->", "->>", "AS", "FROM"]),
    ("SELECT value->>'loc' ", ["AS", "FROM"]),  # text cannot be stepped into
    ("SELECT key ", ["AS", "FROM"]),
    ("SELECT * FROM kv LIMIT 5 ", ["OFFSET"]),
    ("SELECT * FROM kv OFFSET 5 ", ["LIMIT"]),
    ("SELECT * FROM kv LIMIT 5 OFFSET 2 ", []),
    ("SELECT * FROM kv OFFSET ", []),
    ("SELECT * FROM kv ORDER BY key DESC ", ["LIMIT", "OFFSET"]),
    ("SELECT * FROM kv WHERE key > 5 ", ["AND"]),
    ("SELECT * FROM kv WHERE key > 5 off", ["offset"]),
])
def test_operators_and_offset(before: str, expected: list[str]) -> None:
    got = texts(before, None)
    assert got[:len(expected)] == expected if expected else got == []
    if "OFFSET" in expected or "offset" in expected:
        assert got.count(expected[-1]) == 1


def complete(text: str, cursor: int, fields: RecentFields) -> list[tuple[str, int]]:
    doc = Document(text, cursor)
    return [(c.text, c.start_position)
            for c in QueryCompleter(fields).get_completions(doc, CompleteEvent(completion_requested=True))]


def test_completer_closes_the_string_unless_the_quote_is_there() -> None:
    fields = seen(READING)
    text = "SELECT value->'te"
    assert complete(text, len(text), fields) == [("temp'", -2)]
    text = "SELECT value->'te' FROM kv;"
    assert complete(text, len("SELECT value->'te"), fields) == [("temp", -2)]

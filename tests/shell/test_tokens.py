"""Statement splitting and tokenizing: ';' inside strings and comments, commands, positions."""

from __future__ import annotations

import pytest

from raftkv.errors import QueryError
from raftkv.query import parse
from shell.runner import relocate
from shell.tokens import Item, ScriptSplitter, is_complete, iter_script, split_script, tokenize

pytestmark = pytest.mark.timeout(120)


def texts(script: str) -> list[tuple[str, str]]:
    return [(i.kind, i.text.strip()) for i in split_script(script)]


def test_semicolons_inside_strings_and_comments_do_not_split() -> None:
    script = "PUT 1 'a;b'; -- not; here\nSELECT 'it''s;' FROM kv; PUT 2 x'3b'"
    assert texts(script) == [("statement", "PUT 1 'a;b'"),
                             ("statement", "SELECT 'it''s;' FROM kv"),
                             ("statement", "PUT 2 x'3b'")]


def test_empty_statements_and_comment_only_text_are_dropped() -> None:
    assert texts(";;  ; -- just a comment\n ;") == []
    assert texts("") == []


def test_backslash_commands_are_lines_at_statement_start() -> None:
    script = "\\timing off\nSELECT 1 FROM kv; \\format csv\n  \\q extra args;\nGET 1"
    assert texts(script) == [("command", "\\timing off"), ("statement", "SELECT 1 FROM kv"),
                             ("command", "\\format csv"), ("command", "\\q extra args;"),
                             ("statement", "GET 1")]
    # inside a statement a backslash is just a character (the parser reports it)
    assert texts("SELECT \\x;") == [("statement", "SELECT \\x")]


def test_items_start_at_their_first_significant_character() -> None:
    items = split_script("PUT 1 'a';\n\n  -- c\n  GET\n 1  \n;  \\q\n'x")
    assert items == [Item("statement", "PUT 1 'a'", 1, 1, True),
                     Item("statement", "GET\n 1", 4, 3, True),
                     Item("command", "\\q", 6, 4, True),
                     Item("statement", "'x", 7, 1, False)]


def test_error_positions_can_be_moved_into_the_script() -> None:
    script = "PUT 1 'a';\nSELECT * FROM kv;\n  SELECT * FORM kv;"
    bad = split_script(script)[2]
    with pytest.raises(QueryError) as info:
        parse(bad.text)
    assert info.value.details == {"line": 1, "column": 10}
    moved = relocate(info.value.message, info.value.details, bad.line, bad.column)
    assert moved.splitlines() == ["line 3, column 12: unexpected name 'FORM'; expected one of: ',', FROM",
                                  "  SELECT * FORM kv", "           ^"]
    second_line = split_script("GET 1; GET\n 'x'")[1]
    with pytest.raises(QueryError) as info:
        parse(second_line.text)
    assert relocate(info.value.message, info.value.details, 1, 8).startswith("line 2, column 2: ")
    assert relocate("no position", {}, 5, 5) == "no position"


def test_incremental_feeding_matches_whole_text() -> None:
    script = "PUT 1 'multi\nline;';\n\\x\nSELECT *\n  FROM kv -- c;\n;GET 2"
    lines = script.splitlines(keepends=True)
    assert list(iter_script(lines)) == split_script(script)
    # character by character too
    splitter = ScriptSplitter()
    items: list[Item] = []
    for ch in script:
        items += splitter.feed(ch)
    assert items + splitter.finish() == split_script(script)


def test_iter_script_yields_before_reading_on() -> None:
    seen: list[str] = []

    def lines():
        for line in ["GET 1;\n", "GET 2;\n"]:
            seen.append(line)
            yield line

    it = iter_script(lines())
    first = next(it)
    assert first.text == "GET 1" and seen == ["GET 1;\n"]


@pytest.mark.parametrize(("text", "complete"), [
    ("", True), ("   \n", True), ("SELECT 1", False), ("SELECT * FROM kv;", True),
    ("SELECT 1;  -- done", True), ("SELECT 1 -- not yet;", False), ("SELECT ';", False),
    ("SELECT ';';", True), ("SELECT 'it''s';", True), ("SELECT 'it'';", False),
    ("PUT 1 x'00;'", False), ("\\q", True), ("  \\format csv", True), ("GET 1;\nGET", False),
    ("GET 1;\n\\timing", True),
])
def test_is_complete(text: str, complete: bool) -> None:
    assert is_complete(text) is complete


def test_tokenize_covers_the_text_and_knows_kinds() -> None:
    text = "SELECT key, value->'t' FROM kv WHERE key >= 0x1F -- c\n AND value = x'00' 'open"
    tokens = tokenize(text)
    assert "".join(t.text for t in tokens) == text
    kinds = {t.text: t.kind for t in tokens}
    assert kinds["SELECT"] == "word" and kinds["->"] == "op" and kinds["'t'"] == "string"
    assert kinds["0x1F"] == "number" and kinds["-- c"] == "comment" and kinds["x'00'"] == "bytes"
    assert kinds[">="] == "op" and kinds[","] == "punct"
    last = tokens[-1]
    assert last.kind == "string" and not last.closed
    assert tokenize("\\format csv\nGET 1")[0].kind == "command"
    assert tokenize("GET 1; \\q")[-1].kind == "command"
    assert [t.kind for t in tokenize("a @ 1.5e3")] == ["word", "ws", "other", "ws", "number"]


def test_long_scripts_split_in_linear_time() -> None:
    script = "PUT 1 'v';\n" * 100_000
    items = list(iter_script(script.splitlines(keepends=True)))
    assert len(items) == 100_000 and {i.text for i in items} == {"PUT 1 'v'"}
    assert items[-1].line == 100_000

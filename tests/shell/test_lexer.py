"""Syntax highlighting."""

from __future__ import annotations

import pytest
from prompt_toolkit.document import Document

from shell.lexer import QueryLexer, highlight

pytestmark = pytest.mark.timeout(120)


def styled(text: str) -> list[tuple[str, str]]:
    return [(style, part) for line in highlight(text) for style, part in line if part.strip()]


def test_kinds_get_their_styles() -> None:
    got = styled("SELECT count(*), key FROM kv WHERE value->'t' > 1.5 -- note")
    assert got == [
        ("class:keyword", "SELECT"), ("class:function", "count"), ("", "("), ("class:operator", "*"),
        ("", ")"), ("", ","), ("class:column", "key"), ("class:keyword", "FROM"), ("", "kv"),
        ("class:keyword", "WHERE"), ("class:column", "value"), ("class:operator", "->"),
        ("class:string", "'t'"), ("class:operator", ">"), ("class:number", "1.5"),
        ("class:comment", "-- note"),
    ]


def test_keywords_are_case_insensitive_and_a_function_needs_its_parenthesis() -> None:
    assert styled("select now") == [("class:keyword", "select"), ("", "now")]
    assert styled("now ()")[0] == ("class:function", "now")


def test_unterminated_strings_and_unknown_characters_stand_out() -> None:
    assert styled("GET 'abc")[-1] == ("class:error", "'abc")
    assert styled("GET 1 @")[-1] == ("class:error", "@")
    assert styled("PUT 1 x'00'")[-1] == ("class:string", "x'00'")


def test_commands() -> None:
    assert styled("\\format csv") == [("class:command", "\\format csv")]


def test_lexer_splits_multiline_tokens_by_line() -> None:
    doc = Document("PUT 1 'two\nlines';\n-- c")
    get_line = QueryLexer().lex_document(doc)
    assert get_line(0)[-1] == ("class:string", "'two")
    assert get_line(1) == [("class:string", "lines'"), ("", ";")]
    assert get_line(2) == [("class:comment", "-- c")]
    assert get_line(9) == []
    assert "".join(t for _, t in get_line(0)) == "PUT 1 'two"


def test_split_shard_words_are_keywords_and_the_id_is_a_name() -> None:
    assert styled("split shard s0003 AT 0x2a") == [
        ("class:keyword", "split"), ("class:keyword", "shard"), ("", "s0003"), ("class:keyword", "AT"),
        ("class:number", "0x2a")]

"""Output formats: pure functions and page-at-a-time renderers."""

from __future__ import annotations

import json

import pytest

from shell import formats
from shell.formats import (
    csv_field,
    display_value,
    footer,
    format_elapsed,
    json_text,
    render_all,
    renderer,
    text_width,
    truncate,
)

pytestmark = pytest.mark.timeout(120)

ROWS = [(1, b"a"), (22, b"line1\nline2"), (333, b"\x00\xff")]


def test_display_values() -> None:
    assert display_value(None) == "NULL"
    assert display_value(b"caf\xc3\xa9") == "café"
    assert display_value(b"\x00\xff") == "\\x00ff"
    assert display_value(b"a\tb\r\n\x1b[31m") == "a\\tb\\r\\n\\u001b[31m"
    assert display_value("\u202eevil") == "\\u202eevil"  # a bidi override cannot reorder the screen
    assert display_value(b"C:\\dir") == "C:\\\\dir"  # backslashes doubled: the escapes are reversible
    assert display_value(31.5) == "31.5"
    assert display_value(2**64 - 1) == "18446744073709551615"
    assert display_value(True) == "true"
    assert display_value(b"") == ""


def test_json_and_csv_values_carry_text_exactly() -> None:
    assert json.loads(json_text(b"line1\nline2")) == "line1\nline2"
    assert json.loads(json_text(b"\x00\xff")) == "\\x00ff"
    assert json_text(float("nan")) == "null"
    assert json_text(None) == "null"
    assert csv_field(None) == ""
    assert csv_field(b"") == '""'  # an empty value differs from NULL
    assert csv_field(b'say "hi", ok') == '"say ""hi"", ok"'
    assert csv_field(b"two\nlines") == '"two\nlines"'
    assert csv_field(b" padded") == '" padded"'
    assert csv_field(b"\xff") == "\\xff"
    assert csv_field(7) == "7"


def test_table_layout() -> None:
    text = render_all("table", ("key", "value"), [ROWS])
    assert text.splitlines() == [
        " key |    value",
        "-----+--------------",
        "   1 | a",
        "  22 | line1\\nline2",
        " 333 | \\x00ff",
    ]


def test_table_without_rows_prints_the_header() -> None:
    assert render_all("table", ("count",), []).splitlines() == [" count", "-------"]


def test_table_streams_and_reprints_the_header_when_columns_grow() -> None:
    r = renderer("table", ("key", "value"))
    first = r.page([(1, b"a")])
    assert first.splitlines()[0].startswith(" key")
    assert r.page([(2, b"b")]).splitlines() == ["   2 | b"]  # same widths: rows only
    grown = r.page([(3, b"a much longer value")]).splitlines()
    assert grown[0] == ""  # a blank line, then the header with the new widths
    assert grown[1].split("|")[1].strip() == "value"
    assert grown[-1] == "   3 | a much longer value"
    assert r.end() == ""


def test_table_cuts_long_cells_and_counts_wide_characters() -> None:
    text = render_all("table", ("value",), [[(b"x" * 50,)]], max_cell=10)
    assert text.splitlines()[-1] == " xxxxxxxxx…"
    assert text_width("日本") == 4
    assert truncate("日本語です", 5) == "日本…"
    assert truncate("short", 10) == "short"
    table = render_all("table", ("k", "v"), [[(1, "日本"), (2, "abcd")]]).splitlines()
    assert table[2] == " 1 | 日本"
    assert len(table[1]) == len(" 1 | abcd") + 1


def test_vertical() -> None:
    text = render_all("vertical", ("key", "value"), [ROWS[:2]])
    lines = text.splitlines()
    assert lines[0].startswith("-[ RECORD 1 ]-")
    assert lines[1:3] == ["key   | 1", "value | a"]
    assert lines[3].startswith("-[ RECORD 2 ]-")
    assert lines[5] == "value | line1\\nline2"
    assert render_all("vertical", ("key",), []) == ""


def test_json_lines() -> None:
    lines = render_all("json", ("key", "value"), [ROWS]).splitlines()
    assert [json.loads(line) for line in lines] == [
        {"key": 1, "value": "a"}, {"key": 22, "value": "line1\nline2"}, {"key": 333, "value": "\\x00ff"}]
    dup = render_all("json", ("key", "key"), [[(1, 1)]])
    assert json.loads(dup) == {"key": 1, "key_2": 1}
    assert json.loads(render_all("json", ("avg",), [[(None,)]])) == {"avg": None}


def test_csv() -> None:
    assert render_all("csv", ("key", "value"), [ROWS[:1], ROWS[1:]]) == (
        'key,value\n1,a\n22,"line1\nline2"\n333,\\x00ff\n')
    assert render_all("csv", ("count",), []) == "count\n"
    assert render_all("csv", ("n",), [[(None,)]]) == "n\n\n"


def test_unknown_format() -> None:
    with pytest.raises(ValueError, match="unknown format"):
        renderer("xml", ("key",))
    assert set(formats.FORMATS) == {"table", "vertical", "json", "csv"}


def test_footer_and_elapsed() -> None:
    assert footer("SELECT", 3, 0.0021) == "(3 rows, 2.1 ms)"
    assert footer("GET", 1, None) == "(1 row)"
    assert footer("INSERT 3", None, 0.5) == "INSERT 3 (500.0 ms)"
    assert footer("DELETE 0", None, None) == "DELETE 0"
    assert format_elapsed(1.234) == "1.23 s"
    assert format_elapsed(125) == "2 min 5.0 s"

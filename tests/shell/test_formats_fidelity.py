"""Faithful output, format by format: every value can be told apart from every other, keys survive
JSON consumers, stored JSON is embedded, and no format puts raw control characters on a terminal.

Pure functions only (no cluster). Each format is checked by decoding what it printed back into the
stored bytes, with decoders written from the rules in docs/query-language.md ("Output formats").
"""

from __future__ import annotations

import csv
import io
import json
import random
import re
from typing import Any

import pytest

from shell.formats import FORMATS, csv_field, display_value, json_document, render_all

pytestmark = pytest.mark.timeout(60)

BIG_KEY = 1795957530750702678  # a double rounds it to ...600
TITLE = b"\x1b]0;title\x07"  # sets the terminal's title if printed raw

# Characters that must never reach a terminal raw: C0 (but the line ends a renderer writes), DEL,
# C1, and the bidirectional embedding, override and isolate controls.
_RAW_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")

TEXT = b"plain text"
JSON_VALUE = b'{"temp": 21.50,\n  "tags": ["a b", "c"], "n": 12345678901234567890}'
BINARY = b"\xff\xfe\x00A"
LOOKS_BINARY = b"\\xfffe0041"  # text that reads like the hex form of BINARY
LOOKS_BINARY_41 = b"\\x41"
CONTROLS = TITLE + b"\r\xc2\x9b2J\xe2\x80\xaeevil\ttab\nline"  # ESC, BEL, CR, C1 CSI, bidi override

CASES: dict[str, bytes] = {"text": TEXT, "json": JSON_VALUE, "binary": BINARY, "looks binary": LOOKS_BINARY,
                           "looks binary 41": LOOKS_BINARY_41, "controls": CONTROLS, "empty": b"",
                           "backslash text": b"C:\\dir\\new", "json string": b'"hi"', "json number": b"42"}


# --- decoders: what a reader of each format does ---------------------------------------------------

_DISPLAY_ESCAPE = re.compile(r"\\(\\|n|r|t|u[0-9a-f]{4})")


def decode_display(shown: str) -> bytes:
    """The stored bytes behind a table/vertical cell or a csv field on a terminal."""
    if shown.startswith("\\x"):
        return bytes.fromhex(shown[2:])

    def one(m: re.Match[str]) -> str:
        code = m.group(1)
        return {"\\": "\\", "n": "\n", "r": "\r", "t": "\t"}.get(code) or chr(int(code[1:], 16))

    assert "\\" not in _DISPLAY_ESCAPE.sub("", shown), f"a lone backslash in {shown!r}"
    return _DISPLAY_ESCAPE.sub(one, shown).encode()


def decode_plain(text: str) -> bytes:
    """The stored bytes behind a JSON string or a csv field written to a file."""
    if text.startswith("\\x"):
        return bytes.fromhex(text[2:])
    return (text[1:] if text.startswith("\\\\") else text).encode()


def decode_json(field: Any, stored: bytes) -> bytes:
    """Check a JSON value against ``stored``; returns the bytes it stands for."""
    if isinstance(field, str):
        return decode_plain(field)
    assert json.loads(stored) == field  # an embedded document: the same JSON
    return stored


def is_text(value: bytes) -> bool:
    try:
        value.decode()
    except UnicodeDecodeError:
        return False
    return True


def table_cell(text: str) -> str:
    """The value cell of the single data row of a two-column table."""
    row = text.splitlines()[2] + " "  # a line ends without the spaces of an empty last cell
    return row.split(" | ", 1)[1].rstrip(" ")


def render_one(fmt: str, value: bytes, tty: bool, key: int = 7, **options: Any) -> str:
    return render_all(fmt, ("key", "value"), [[(key, value)]], tty=tty, **options)


def read_back(fmt: str, value: bytes, tty: bool) -> bytes:
    """Render one row in ``fmt`` and decode its value the way a reader of that format would.

    Table and vertical lines end where their text ends: trailing spaces are not shown there.
    """
    out = render_one(fmt, value, tty, key_columns={0})
    if fmt == "table":
        return decode_display(table_cell(out))
    if fmt == "vertical":
        line = out.splitlines()[2]
        assert line.startswith("value |")
        return decode_display(line[len("value | "):])
    if fmt == "json":
        return decode_json(json.loads(out)["value"], value)
    rows = list(csv.reader(io.StringIO(out)))
    assert rows[0] == ["key", "value"] and len(rows) == 2
    return decode_display(rows[1][1]) if tty else decode_plain(rows[1][1])


# --- the matrix -----------------------------------------------------------------------------------

@pytest.mark.parametrize("tty", [True, False], ids=["tty", "pipe"])
@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("case", list(CASES))
def test_every_value_reads_back_exactly(fmt: str, tty: bool, case: str) -> None:
    assert read_back(fmt, CASES[case], tty) == CASES[case]


@pytest.mark.parametrize("fmt", FORMATS)
def test_a_terminal_never_gets_raw_control_characters(fmt: str) -> None:
    out = render_all(fmt, ("key", "value\x1b[2J"), [[(1, CONTROLS), (2, TITLE), (3, "\u2066x\x85")]], tty=True)
    assert not _RAW_CONTROL.search(out), repr(out)
    assert TITLE.decode() not in out


def test_csv_to_a_file_or_pipe_keeps_the_raw_text() -> None:
    out = render_one("csv", CONTROLS, tty=False)
    assert list(csv.reader(io.StringIO(out)))[1] == ["7", CONTROLS.decode()]  # still valid CSV
    assert render_one("csv", CONTROLS, tty=True) == (
        "key,value\n7,\\u001b]0;title\\u0007\\r\\u009b2J\\u202eevil\\ttab\\nline\n")


@pytest.mark.parametrize("fmt", ["table", "vertical", "json"])
def test_only_csv_depends_on_the_terminal(fmt: str) -> None:
    for value in CASES.values():
        assert render_one(fmt, value, tty=True) == render_one(fmt, value, tty=False)


def test_random_values_never_collide() -> None:
    # bytes drawn from the characters the encodings use, so that collisions would be likely
    rng = random.Random(11)
    alphabet = b"\\x0fa\"'{}[]1 \n\r\t\x1b\x00\x7f\xff\xc2\x9b"
    values = {bytes(rng.choice(alphabet) for _ in range(rng.randrange(0, 9))) for _ in range(1500)}
    for fmt in FORMATS:
        for tty in (True, False):
            shown: dict[str, bytes] = {}
            for value in values:
                if fmt in ("table", "vertical") and value.endswith(b" ") and is_text(value):
                    assert read_back(fmt, value, tty) == value.rstrip(b" ")  # spaces at line ends do not show
                    continue
                assert read_back(fmt, value, tty) == value
                out = render_one(fmt, value, tty)
                other = shown.setdefault(out, value)
                if other != value:  # only JSON documents that differ in whitespace alone may look alike
                    assert fmt == "json" and json_document(value.decode()) == json_document(other.decode()) \
                        is not None, f"{fmt}: {value!r} and {other!r} look alike"


# --- the exact encodings --------------------------------------------------------------------------

def test_binary_is_bytea_hex_everywhere_and_text_like_it_is_marked() -> None:
    assert display_value(BINARY) == "\\xfffe0041"
    assert display_value(LOOKS_BINARY) == "\\\\xfffe0041"
    assert display_value(LOOKS_BINARY_41) == "\\\\x41"
    assert csv_field(BINARY) == csv_field(BINARY, tty=True) == "\\xfffe0041"
    assert csv_field(LOOKS_BINARY_41) == "\\\\x41"
    assert csv_field(b"a\\x41") == "a\\x41"  # only a leading backslash is marked in data formats
    assert csv_field(b"a\\x41", tty=True) == "a\\\\x41"  # on a terminal every backslash is doubled
    lines = render_all("json", ("key", "value"), [[(1, BINARY), (2, LOOKS_BINARY_41)]]).splitlines()
    assert lines == ['{"key": 1, "value": "\\\\xfffe0041"}', '{"key": 2, "value": "\\\\\\\\x41"}']
    assert [json.loads(line)["value"] for line in lines] == ["\\xfffe0041", "\\\\x41"]


def test_json_keys_are_strings_or_numbers() -> None:
    row = [(BIG_KEY, TEXT)]
    assert render_all("json", ("key", "value"), [row], key_columns={0}) == (
        '{"key": "1795957530750702678", "value": "plain text"}\n')
    assert render_all("json", ("key", "value"), [row], key_columns={0}, json_keys="number") == (
        '{"key": 1795957530750702678, "value": "plain text"}\n')
    # other integers stay numbers: a count is a number to jq
    assert render_all("json", ("n",), [[(3,)]], key_columns={0} - {0}) == '{"n": 3}\n'
    with pytest.raises(ValueError, match="json key style"):
        render_all("json", ("key",), [], json_keys="hex")
    # the other formats print keys as digits, whatever json_keys says
    assert render_all("csv", ("key",), [[(BIG_KEY,)]], key_columns={0}) == f"key\n{BIG_KEY}\n"


def test_json_values_are_embedded_when_they_are_json_documents() -> None:
    line = render_one("json", JSON_VALUE, tty=False, key_columns={0})
    # whitespace outside strings goes (one object per line); numbers keep their digits as stored
    assert line == ('{"key": "7", "value": {"temp":21.50,"tags":["a b","c"],'
                    '"n":12345678901234567890}}\n')
    assert json.loads(line)["value"]["n"] == 12345678901234567890
    embedded = {b"42": "42", b" [1, 2] ": "[1,2]", b"null": "null", b"true": "true", b"-0.5e3": "-0.5e3"}
    for stored, text in embedded.items():
        assert json_document(stored.decode()) == text
    # not documents: not JSON, NaN (not JSON either), a bare string (a JSON string already means text)
    for stored in (b"{'a': 1}", b"NaN", b"[Infinity]", b'"hi"', b"", b"  ", b"{} {}", b"[" * 100_000):
        assert json_document(stored.decode()) is None
        assert json.loads(render_one("json", stored, tty=False))["value"] == stored.decode()


def test_json_escapes_what_a_terminal_would_act_on() -> None:
    line = render_one("json", b'{"t": "\xc2\x9b2J\xe2\x80\xae", "e": "\\u001b"}', tty=False)
    assert line == '{"key": 7, "value": {"t":"\\u009b2J\\u202e","e":"\\u001b"}}\n'
    assert json.loads(line)["value"] == {"t": "\x9b2J\u202e", "e": "\x1b"}
    assert render_one("json", CONTROLS, tty=False).count("\\u") >= 4


def test_table_and_vertical_show_the_encodings() -> None:
    table = render_all("table", ("key", "value"), [[(BIG_KEY, BINARY), (2, LOOKS_BINARY_41), (3, TITLE)]])
    assert table.splitlines()[2:] == [
        " 1795957530750702678 | \\xfffe0041",
        "                   2 | \\\\x41",
        "                   3 | \\u001b]0;title\\u0007",
    ]
    vertical = render_all("vertical", ("key", "value"), [[(1, BINARY)]]).splitlines()
    assert vertical[1:] == ["key   | 1", "value | \\xfffe0041"]

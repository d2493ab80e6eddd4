"""raftkv.bulk without a cluster: the file formats, the batching import loop and the export writer."""

from __future__ import annotations

import errno
import io
import json
import os
import stat
import threading
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest

from raftkv import bulk, bulk_cli, cli
from raftkv.bulk import BadRow, CopyError, CopyOptions, RowReader
from raftkv.errors import Unavailable
from raftkv.keys import MAX_KEY, MAX_VALUE_BYTES
from raftkv.query import parse

from ..helpers import ctrl_c_when_main_waits_for_a_future

pytestmark = pytest.mark.timeout(60)

TS = 1_795_255_200_123_456_789  # 2026-11-21T10:00:00.123456789Z
# values whose csv and jsonl forms need care: separators, quotes, line breaks, backslashes, binary, JSON
AWKWARD: dict[int, bytes] = {
    1: b"plain",
    2: b"a,b",
    3: b'say "hi"',
    4: b"two\nlines\r\nand CR",
    5: b"\xff\xfe\x00binary",
    6: b"\\x41 is text",
    7: b"\\\\two backslashes",
    8: b'{"temp": 21.50, "tags": ["a", "b"], "n": null}',
    9: b"",
    10: b"  spaces around  ",
    11: "h\u00e9llo \u202e bidi \x1b]0;t\x07".encode(),
    12: b"null",
    13: b'"a JSON string"',
    15: b'{"name":"caf\\u00e9","line":"a\\nb","n":1.50e0}',  # compact JSON keeps its escapes and digits
    16: b"42\n",  # JSON, but not its own compact form
    17: '{"c1":"\x7f\x85\u009b","bidi":"\u202e"}'.encode(),  # compact JSON with characters a line escapes
    18: b"[1, 2]",
    MAX_KEY: b"\x00",
}


class FakeWriter:
    """Records every put_many batch; fails on the batch numbered ``fail_on`` (0-based)."""

    def __init__(self, fail_on: int | None = None) -> None:
        self.rows: dict[int, bytes] = {}
        self.batches: list[list[tuple[int, bytes]]] = []
        self.fail_on = fail_on

    def put_many(self, pairs: Any) -> int:
        pairs = list(pairs)
        if self.fail_on is not None and len(self.batches) == self.fail_on:
            self.batches.append(pairs)
            raise Unavailable("shard s0001 has no leader within 10.0 s")
        self.batches.append(pairs)
        self.rows.update(pairs)
        return len(pairs)


class FakeResult:
    def __init__(self, columns: Sequence[str], pages: Iterable[list[tuple[Any, ...]]]) -> None:
        self.columns = tuple(columns)
        self._pages = pages
        self.closed = False

    def pages(self) -> Iterable[list[tuple[Any, ...]]]:
        return self._pages

    def close(self) -> None:
        self.closed = True


class FakeReader:
    """Answers a SELECT with the given rows in pages of two."""

    def __init__(self, rows: dict[int, bytes], columns: Sequence[str] = ("key", "value")) -> None:
        self.items = sorted(rows.items())
        self.columns = columns
        self.queries: list[Any] = []
        self.result: FakeResult | None = None

    def query(self, statement: Any) -> FakeResult:
        self.queries.append(statement)
        pages = [self.items[i:i + 2] for i in range(0, len(self.items), 2)]
        self.result = FakeResult(self.columns, pages)
        return self.result


def read(data: bytes, **options: Any) -> list[tuple[int, int, bytes]]:
    return list(RowReader(io.BytesIO(data), CopyOptions(**options)))


def export(rows: dict[int, bytes], **options: Any) -> str:
    out = io.StringIO()
    assert bulk.export_rows(FakeReader(rows), "SELECT * FROM kv", out, CopyOptions(**options)) == len(rows)
    return out.getvalue()


# --- keys and values ------------------------------------------------------------------------------


def test_keys_as_integers_and_as_timestamps() -> None:
    assert bulk.parse_key(" 42 ") == 42
    assert bulk.parse_key(str(MAX_KEY)) == MAX_KEY
    assert bulk.parse_key("0" * 30 + "7") == 7
    assert bulk.parse_key("2026-11-21T10:00:00.123456789Z", "timestamp") == TS
    assert bulk.parse_key("2026-11-21T11:00:00.123456789+01:00", "timestamp") == TS
    assert bulk.parse_key("1970-01-01T00:00:00Z", "timestamp") == 0


@pytest.mark.parametrize(("text", "key_format", "message"), [
    ("-1", "int", "not a whole number from 0 to 2**64-1"),
    ("1.5", "int", "not a whole number"),
    ("", "int", "the key is empty"),
    (str(2**64), "int", "larger than 2**64-1"),
    ("9" * 5000, "int", "larger than 2**64-1"),
    ("\u0661", "int", "not a whole number"),  # an Arabic-Indic digit is no key
    ("2026-11-21T10:00:00Z", "int", "use KEY_FORMAT timestamp"),
    ("1969-12-31T23:59:59Z", "timestamp", "before 1970-01-01"),
    ("2600-01-01T00:00:00Z", "timestamp", "after 2554-07-21"),
    ("yesterday", "timestamp", "bad timestamp"),
])
def test_bad_keys_say_what_is_wrong(text: str, key_format: str, message: str) -> None:
    with pytest.raises(ValueError, match=message.replace("*", r"\*").replace(".", r"\.")):
        bulk.parse_key(text, key_format)


def test_values_undo_the_shells_output_conventions() -> None:
    assert bulk.parse_value("\\xfffe00") == b"\xff\xfe\x00"
    assert bulk.parse_value("\\x") == b""
    assert bulk.parse_value("\\\\x41") == b"\\x41"  # text that reads \x41 has one more backslash
    assert bulk.parse_value("C:\\dir") == b"C:\\dir"  # a backslash elsewhere is itself
    assert bulk.parse_value("h\u00e9") == "h\u00e9".encode()
    for value in AWKWARD.values():
        text = value.decode("utf-8", errors="strict") if _is_utf8(value) else None
        shown = ("\\" + text if text.startswith("\\") else text) if text is not None else "\\x" + value.hex()
        assert bulk.parse_value(shown) == value


@pytest.mark.parametrize(("text", "message"), [
    ("\\xzz", "not an even number of hex digits"),
    ("\\xabc", "not an even number of hex digits"),
    ("\\x00 ff", "not an even number of hex digits"),  # bytes.fromhex would skip the space
    ("\ud800", "lone surrogate"),
    pytest.param("a" * (MAX_VALUE_BYTES + 1), "at most 1,048,576", id="longer-than-1-MiB"),
])
def test_bad_values_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        bulk.parse_value(text)


def _is_utf8(data: bytes) -> bool:
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


# --- reading files --------------------------------------------------------------------------------


def test_csv_rows_carry_the_line_they_start_on() -> None:
    data = b'1,a\n\n2,"multi\nline"\n3,"say ""hi"""\r\n4,\\xff\n'
    assert read(data) == [(1, 1, b"a"), (3, 2, b"multi\nline"), (5, 3, b'say "hi"'), (6, 4, b"\xff")]


def test_csv_header_names_the_columns_in_either_order_and_a_bom_is_skipped() -> None:
    assert read(b"\xef\xbb\xbfkey,value\n1,a\n", header=True) == [(2, 1, b"a")]
    assert read(b"Value , KEY\nb,2\n", header=True) == [(2, 2, b"b")]
    with pytest.raises(BadRow, match="line 1: the header must name the columns key and value"):
        read(b"k,v\n1,a\n", header=True)


def test_jsonl_rows_keys_as_strings_or_numbers_and_embedded_values() -> None:
    data = (b'{"key": "1", "value": "text"}\n'
            b'\n'
            b'{"value": {"t": 21.50, "a": [1, 2.0e3, true, null]}, "key": 2}\n'
            b'{"key": "3", "value": "\\\\xff00"}\n'
            b'{"key": "4", "value": "\\\\\\\\x41"}\n'
            b'{"key": "5", "value": 7}\n')
    assert read(data, format="jsonl") == [
        (1, 1, b"text"), (3, 2, b'{"t":21.50,"a":[1,2.0e3,true,null]}'), (4, 3, b"\xff\x00"),
        (5, 4, b"\\x41"), (6, 5, b"7")]
    spaced = b'{"key":"7","value":{ "a" : [ 1 , "x y" ] }}\n{ "key" : "8" , "value" : { "b" : 2 } }\n'
    assert read(spaced, format="jsonl") == [(1, 7, b'{"a":[1,"x y"]}'), (2, 8, b'{"b":2}')]
    ts = b'{"key": "2026-11-21T10:00:00.123456789Z", "value": "x"}\n'
    assert read(ts, format="jsonl", key_format="timestamp") == [(1, TS, b"x")]


@pytest.mark.parametrize(("data", "options", "line", "message"), [
    (b"1,a\n2\n", {}, 2, "expected 2 fields, key and value, but found 1"),
    (b"1,a\n2,b,c\n", {}, 2, "found 3; a value holding a comma"),
    (b'1,a\n2,"open\nstill open\n', {}, 2, "its closing double quote is missing"),
    (b'1,a\n2,"a"b\n', {}, 2, "goes on after its closing quote"),
    (b"1,a\nx,b\n", {}, 2, "the key 'x' is not a whole number"),
    (b"1,a\n2,\xff\n", {}, 2, "not UTF-8 text (byte 3 of the line)"),
    (b"1,a\n2,\\xf\n", {}, 2, "not an even number of hex digits"),
    (b'{"key": "1", "value": "a"}\n{"key": "2"\n', {"format": "jsonl"}, 2, "not JSON: expected ',' or '}' (the line ends)"),
    (b'{"key": "1", "value": tru}\n', {"format": "jsonl"}, 1, "not JSON: Expecting value (column 23)"),
    (b'{"key" "1", "value": 1}\n', {"format": "jsonl"}, 1, "not JSON: expected ':' (column 8)"),
    (b'{"key": "1" "value": 1}\n', {"format": "jsonl"}, 1, "not JSON: expected ',' or '}' (column 13)"),
    (b'{"key": "1", "value": 1} x\n', {"format": "jsonl"}, 1, "unexpected text after the object (column 26)"),
    (b'{key: "1"}\n', {"format": "jsonl"}, 1, "expected a member name in double quotes (column 2)"),
    (b'{"key": "1", "value": NaN}\n', {"format": "jsonl"}, 1, "NaN is not JSON"),
    (b'[1, 2]\n', {"format": "jsonl"}, 1, "expected a JSON object"),
    (b'{"key": "1"}\n', {"format": "jsonl"}, 1, 'the member "value" is missing'),
    (b'{"key": "1", "value": "a", "ts": 5}\n', {"format": "jsonl"}, 1, 'unexpected member "ts"'),
    (b'{"key": "1", "key": "2", "value": "a"}\n', {"format": "jsonl"}, 1, 'the member "key" appears twice'),
    # shaped like an exported line, but not one: the fast path must not take them
    (b'{"key": "1", "value": 5, "x": 1}\n', {"format": "jsonl"}, 1, 'unexpected member "x"'),
    (b'{"key": "1", "value": "a", "value": "b"}\n', {"format": "jsonl"}, 1, 'the member "value" appears twice'),
    (b'{"key": "1", "value": {"a": 1}, "value": 2}\n', {"format": "jsonl"}, 1, 'the member "value" appears twice'),
    (b'{"key": 1.5, "value": "a"}\n', {"format": "jsonl"}, 1, "the key '1.5' is not a whole number"),
    (b'{"key": true, "value": "a"}\n', {"format": "jsonl"}, 1, "the key is true; write it as a JSON string"),
    (b'{"key": 5, "value": "a"}\n', {"format": "jsonl", "key_format": "timestamp"}, 1, "the key is the number 5"),
    pytest.param(b'{"key": "1", "value": ' + b"[" * 100_000 + b"]" * 100_000 + b"}\n", {"format": "jsonl"}, 1,
                 "nested too deeply", id="deep"),
])
def test_a_bad_row_names_its_line_and_the_problem(data: bytes, options: dict[str, str], line: int,
                                                   message: str) -> None:
    with pytest.raises(BadRow) as info:
        read(data, **options)
    assert info.value.line == line
    assert message in info.value.reason


def test_a_line_longer_than_the_bound_is_refused_without_reading_it_whole() -> None:
    stream = io.BytesIO(b"1,a\n2," + b"x" * 10_000 + b"\n3,c\n")
    reader = RowReader(stream, CopyOptions(), max_line=1000)
    rows = iter(reader)
    assert next(rows) == (1, 1, b"a")
    with pytest.raises(BadRow, match="line 2: the line is longer than 1,000 bytes"):
        next(rows)
    assert reader.bytes_read <= 4 + 1001  # the first line and one bounded read of the second


# --- importing ------------------------------------------------------------------------------------


def test_batches_are_bounded_by_rows_and_by_bytes() -> None:
    rows = [(i + 1, i, b"v" * (i % 50)) for i in range(1000)]
    writer = FakeWriter()
    assert bulk.import_rows(writer, rows, batch_rows=64, batch_bytes=1500) == 1000
    assert writer.rows == {k: v for _, k, v in rows}
    for batch in writer.batches:
        assert 1 <= len(batch) <= 64
        assert sum(len(v) + bulk.ROW_OVERHEAD for _, v in batch) <= 1500
    assert len(writer.batches) >= 1000 // 64


def test_a_row_larger_than_the_byte_bound_goes_alone() -> None:
    writer = FakeWriter()
    bulk.import_rows(writer, [(1, 1, b"a"), (2, 2, b"x" * 5000), (3, 3, b"b")], batch_bytes=100)
    assert [len(b) for b in writer.batches] == [1, 1, 1]


def test_a_repeated_key_takes_its_last_value() -> None:
    writer = FakeWriter()
    assert bulk.import_rows(writer, [(1, 7, b"first"), (2, 8, b"x"), (3, 7, b"last")]) == 3
    assert writer.rows == {7: b"last", 8: b"x"} and len(writer.batches) == 1


def test_a_bad_row_writes_the_rows_before_it_and_none_after() -> None:
    data = b"".join(b"%d,v%d\n" % (i, i) for i in range(25)) + b"oops,x\n" + b"100,after\n"
    writer = FakeWriter()
    with pytest.raises(CopyError) as info:
        bulk.import_rows(writer, RowReader(io.BytesIO(data), CopyOptions()), batch_rows=10)
    err = info.value
    assert err.line == 26 and err.rows == 25
    assert err.message == ("line 26: the key 'oops' is not a whole number from 0 to 2**64-1; "
                           "the 25 rows before it were written, nothing after it")
    assert sorted(writer.rows) == list(range(25))


def test_a_bad_first_row_writes_nothing() -> None:
    writer = FakeWriter()
    with pytest.raises(CopyError, match="line 1: .*; no row before it was written, nothing after it"):
        bulk.import_rows(writer, RowReader(io.BytesIO(b"x,y\n1,a\n"), CopyOptions()))
    assert writer.batches == []


def test_a_failed_write_names_the_lines_of_its_batch() -> None:
    writer = FakeWriter(fail_on=1)
    rows = [(i + 1, i, b"v") for i in range(30)]
    with pytest.raises(CopyError) as info:
        bulk.import_rows(writer, rows, batch_rows=10)
    assert info.value.rows == 10
    assert info.value.message == ("writing the rows of lines 11-20 failed: unavailable: shard s0001 has no leader "
                                  "within 10.0 s; the 10 rows before them were written, and these 10 may or may "
                                  "not have been")
    assert len(writer.batches) == 2  # nothing after the failure


@pytest.mark.parametrize("error", [OSError(errno.ECONNRESET, "Connection reset by peer"), RuntimeError("a bug")],
                         ids=["OSError", "RuntimeError"])
def test_any_failed_write_names_its_lines_and_the_rows_written(error: Exception) -> None:
    class Failing(FakeWriter):
        def put_many(self, pairs: Any) -> int:
            if len(self.batches) == 1:
                raise error
            return super().put_many(pairs)

    with pytest.raises(CopyError) as info:
        bulk.import_rows(Failing(), [(i + 1, i, b"v") for i in range(30)], batch_rows=10)
    assert info.value.rows == 10
    assert info.value.message == (f"writing the rows of lines 11-20 failed: {type(error).__name__}: {error}; the 10 "
                                  "rows before them were written, and these 10 may or may not have been")


class BrokenStream(io.BytesIO):
    """Reads as a file whose disk fails (EIO) from byte ``fail_at`` on."""

    def __init__(self, data: bytes, fail_at: int) -> None:
        super().__init__(data)
        self.fail_at = fail_at

    def readline(self, size: int | None = -1) -> bytes:
        if self.tell() >= self.fail_at:
            raise OSError(errno.EIO, "Input/output error")
        return super().readline(size)


def test_a_read_error_midway_writes_the_rows_read_and_says_how_many() -> None:
    data = b"".join(b"%d,v\n" % i for i in range(40))
    writer = FakeWriter()
    stream = BrokenStream(data, fail_at=len(b"".join(b"%d,v\n" % i for i in range(25))))
    with pytest.raises(CopyError) as info:
        bulk.import_stream(writer, stream, "in.csv", CopyOptions(), batch_rows=10)
    assert info.value.rows == 25 and sorted(writer.rows) == list(range(25))
    assert info.value.message == ("in.csv: reading failed after line 25: Input/output error; the 25 rows before it "
                                  "were written, nothing after it")


class SlowWriter(FakeWriter):
    """On batch ``interrupt_on`` put_many sends Ctrl-C to the main thread, as SIGINT does, and is
    slow to finish: it waits for ``release`` if given, else for a moment."""

    def __init__(self, interrupt_on: int, release: threading.Event | None = None) -> None:
        super().__init__()
        self.interrupt_on = interrupt_on
        self.release = release
        self.events: list[str] = []

    def put_many(self, pairs: Any) -> int:
        if len(self.batches) == self.interrupt_on:
            ctrl_c_when_main_waits_for_a_future()
            if self.release is not None:
                assert self.release.wait(50)
            else:
                time.sleep(0.3)  # slow: the main thread takes the Ctrl-C meanwhile
        n = super().put_many(pairs)
        self.events.append("put")
        return n

    def close(self) -> None:
        self.events.append("close")


def test_ctrl_c_waits_for_the_batch_on_its_way_and_counts_it() -> None:
    writer = SlowWriter(interrupt_on=2)
    rows = [(i + 1, i, b"v") for i in range(100)]
    with pytest.raises(bulk.CopyInterrupted) as info:
        bulk.import_rows(writer, rows, batch_rows=10)
    assert info.value.rows == 30 and info.value.first is None
    assert info.value.message == "30 rows written"
    assert len(writer.batches) == 3 and sorted(writer.rows) == list(range(30))  # nothing sent after Ctrl-C


def test_ctrl_c_names_the_lines_of_a_batch_that_did_not_finish_in_time() -> None:
    release = threading.Event()
    writer = SlowWriter(interrupt_on=2, release=release)
    rows = [(i + 1, i, b"v") for i in range(100)]
    try:
        with pytest.raises(bulk.CopyInterrupted) as info:
            bulk.import_rows(writer, rows, batch_rows=10, cancel_wait=0.05)
    finally:
        release.set()
    assert (info.value.rows, info.value.first, info.value.last) == (20, 21, 30)
    assert info.value.message == "20 rows written; lines 21-30 may have been partly written"
    assert isinstance(info.value, KeyboardInterrupt)  # whatever handles Ctrl-C still does


def test_cli_import_ctrl_c_reports_the_rows_written_and_closes_the_client_after(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "in.csv"
    path.write_text("".join(f"{i},v\n" for i in range(12_000)))  # batches of 5,000, 5,000 and 2,000
    client = SlowWriter(interrupt_on=1)
    monkeypatch.setattr(bulk_cli, "_client", lambda args: client)
    args = cli.build_parser().parse_args(["import", str(path)])
    assert args.func(args) == 130
    assert capsys.readouterr().err == "raftkv import: cancelled: 10,000 rows written\n"
    assert client.events == ["put", "put", "close"]  # the batch on its way finished before the close


def test_import_streams_the_file() -> None:
    """The first batch is written when a bounded part of a large input has been read."""

    class Counting(io.BytesIO):
        def __init__(self, data: bytes) -> None:
            super().__init__(data)
            self.at_put: list[int] = []

    data = b"".join(b"%d,%s\n" % (i, b"x" * 100) for i in range(100_000))  # about 10 MB
    stream = Counting(data)
    reader = RowReader(stream, CopyOptions())

    class Watching(FakeWriter):
        def put_many(self, pairs: Any) -> int:
            stream.at_put.append(reader.bytes_read)
            return super().put_many(pairs)

    writer = Watching()
    assert bulk.import_rows(writer, reader, batch_rows=1000) == 100_000
    assert stream.at_put[0] < 350_000 < len(data)  # a batch or two, not the file
    assert all(b - a < 350_000 for a, b in zip(stream.at_put, stream.at_put[1:], strict=False))


def test_import_file_reports_the_path_and_progress(tmp_path: Path) -> None:
    path = tmp_path / "in.csv"
    path.write_bytes(b"".join(b"%d,v\n" % i for i in range(50)))
    seen: list[tuple[int, float | None]] = []
    writer = FakeWriter()
    n = bulk.import_file(writer, str(path), CopyOptions(), batch_rows=20, progress=lambda r, f: seen.append((r, f)))
    assert n == 50 and len(writer.rows) == 50
    assert [r for r, _ in seen] == [20, 40, 50]
    assert seen[-1][1] == 1.0 and all(f is not None and 0 < f <= 1 for _, f in seen)
    with pytest.raises(CopyError, match=r"^cannot read .*missing.csv: No such file.*; no row was written"):
        bulk.import_file(writer, str(tmp_path / "missing.csv"), CopyOptions())
    path.write_bytes(b"1,a\n2,\\xq\n")
    with pytest.raises(CopyError, match=r"in.csv: line 2: "):
        bulk.import_file(writer, str(path), CopyOptions())


# --- exporting ------------------------------------------------------------------------------------


def test_csv_export_writes_what_the_shell_writes_and_reads_back() -> None:
    text = export(AWKWARD, header=True)
    lines = text.split("\n")
    assert lines[0] == "key,value"
    assert "5,\\xfffe0062696e617279" in lines and "6,\\\\x41 is text" in lines and '9,""' in lines
    assert '2,"a,b"' in lines and '3,"say ""hi"""' in lines
    back = read(text.encode(), header=True)
    assert {k: v for _, k, v in back} == AWKWARD


def test_jsonl_export_embeds_json_and_writes_keys_as_strings() -> None:
    text = export(AWKWARD, format="jsonl")
    objects = [json.loads(line) for line in text.split("\n") if line]
    by_key = {o["key"]: o["value"] for o in objects}
    assert by_key["15"] == {"name": "caf\u00e9", "line": "a\nb", "n": 1.5}  # compact JSON is embedded
    assert by_key["12"] is None and by_key["13"] == '"a JSON string"'
    assert by_key[str(MAX_KEY)] == "\x00" and by_key["5"] == "\\xfffe0062696e617279"
    assert '"value": {"name":"caf\\u00e9","line":"a\\nb","n":1.50e0}}' in text  # as stored


def test_jsonl_round_trips_every_value_byte_for_byte() -> None:
    """A JSON value that an import would not read back as stored (whitespace between tokens, a
    character the line escapes) is written as a JSON string of its text."""
    text = export(AWKWARD, format="jsonl")
    by_key = {o["key"]: o["value"] for o in map(json.loads, text.splitlines())}
    assert by_key["8"] == '{"temp": 21.50, "tags": ["a", "b"], "n": null}' and by_key["16"] == "42\n"
    assert by_key["17"] == '{"c1":"\x7f\x85\u009b","bidi":"\u202e"}' and by_key["18"] == "[1, 2]"
    assert not any(c in text for c in "\x7f\x85\x9b\u202e")  # escaped on the line all the same
    back = {k: v for _, k, v in read(text.encode(), format="jsonl")}
    assert back == AWKWARD


@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_timestamp_keys_round_trip(fmt: str) -> None:
    rows = {0: b"epoch", TS: b"now", MAX_KEY: b"last"}
    text = export(rows, format=fmt, key_format="timestamp")
    assert "2026-11-21T10:00:00.123456789Z" in text and "2554-07-21T23:34:33.709551615Z" in text
    back = read(text.encode(), format=fmt, key_format="timestamp")
    assert {k: v for _, k, v in back} == rows


def test_export_of_other_columns_and_an_empty_result() -> None:
    reader = FakeReader({3: b"x"}, columns=("n", "min(key)"))
    reader.items = [(3, 1795255200000000000)]
    out = io.StringIO()
    query = "SELECT count(*) AS n, min(key) FROM kv"
    assert bulk.export_rows(reader, query, out, CopyOptions("jsonl")) == 1
    assert json.loads(out.getvalue()) == {"n": 3, "min(key)": "1795255200000000000"}  # min(key) is a key
    out = io.StringIO()
    assert bulk.export_rows(FakeReader({}), "SELECT * FROM kv", out, CopyOptions(header=True)) == 0
    assert out.getvalue() == "key,value\n"


def test_export_runs_only_a_select_and_closes_the_result() -> None:
    reader = FakeReader({1: b"a"})
    with pytest.raises(CopyError, match="an export runs a SELECT, not DELETE"):
        bulk.export_rows(reader, "DELETE FROM kv WHERE TRUE", io.StringIO(), CopyOptions())
    assert reader.queries == []
    bulk.export_rows(reader, parse("SELECT * FROM kv WHERE key > 0"), io.StringIO(), CopyOptions())
    assert reader.result is not None and reader.result.closed


def test_a_failed_export_leaves_no_file(tmp_path: Path) -> None:
    def pages() -> Iterable[list[tuple[Any, ...]]]:
        yield [(1, b"a")]
        raise Unavailable("no quorum")

    class Failing(FakeReader):
        def query(self, statement: Any) -> FakeResult:
            return FakeResult(("key", "value"), pages())

    target = tmp_path / "out.csv"
    target.write_text("old\n")
    with pytest.raises(CopyError) as info:
        bulk.export_file(Failing({}), "SELECT * FROM kv", str(target), CopyOptions())
    assert info.value.rows == 1
    assert info.value.message.endswith("out.csv: the query failed after 1 rows: unavailable: no quorum")
    assert target.read_text() == "old\n" and sorted(p.name for p in tmp_path.iterdir()) == ["out.csv"]
    assert bulk.export_file(FakeReader({1: b"a"}), "SELECT * FROM kv", str(target), CopyOptions()) == 1
    assert target.read_text() == "1,a\n"


def test_a_failed_write_of_the_file_says_how_many_rows_were_written() -> None:
    class Full(io.StringIO):
        def write(self, text: str) -> int:
            if self.tell() > 0:
                raise OSError(errno.ENOSPC, "No space left on device")
            return super().write(text)

    with pytest.raises(CopyError) as info:
        bulk.export_rows(FakeReader({1: b"a", 2: b"b", 3: b"c"}), "SELECT * FROM kv", Full(), CopyOptions())
    assert info.value.rows == 2
    assert info.value.message == "writing failed after 2 rows: No space left on device"


def test_export_replaces_a_symlinks_target_and_keeps_its_mode(tmp_path: Path) -> None:
    real = tmp_path / "real.csv"
    real.write_text("old\n")
    real.chmod(0o640)
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    assert bulk.export_file(FakeReader({1: b"a"}), "SELECT * FROM kv", str(link), CopyOptions()) == 1
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert real.read_text() == "1,a\n" and stat.S_IMODE(real.stat().st_mode) == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "real.csv"]  # no temporary file left


def test_export_does_not_write_through_a_link_planted_at_a_temporary_name(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    (tmp_path / f".out.csv.{os.getpid()}.tmp").symlink_to(victim)  # the name it used to pick
    target = tmp_path / "out.csv"
    assert bulk.export_file(FakeReader({1: b"a"}), "SELECT * FROM kv", str(target), CopyOptions()) == 1
    assert victim.read_text() == "precious\n"
    assert not target.is_symlink() and target.read_text() == "1,a\n"
    umask = os.umask(0o022)
    os.umask(umask)
    assert stat.S_IMODE(target.stat().st_mode) == 0o666 & ~umask  # a new file's mode, as open() gives


def test_a_dash_is_a_file_name_to_the_library(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Only ``raftkv import/export`` take ``-`` for standard input and output."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.stdin", None)  # reading it would fail the test
    monkeypatch.setattr("sys.stdout", None)
    assert bulk.export_file(FakeReader({1: b"a"}), "SELECT * FROM kv", "-", CopyOptions()) == 1
    assert (tmp_path / "-").read_text() == "1,a\n"
    writer = FakeWriter()
    assert bulk.import_file(writer, "-", CopyOptions()) == 1 and writer.rows == {1: b"a"}


def test_csv_errors_are_explained_or_shown_as_they_are() -> None:
    assert bulk._csv_problem("unexpected end of data") == "a quoted value is not closed: its closing double quote is missing"
    assert bulk._csv_problem("Unexpected End Of Data") == bulk._csv_problem("unexpected end of data")
    assert bulk._csv_problem("a wording no Python has used") == "malformed csv: a wording no Python has used"


# --- COPY, options and progress -------------------------------------------------------------------


def test_run_copy_runs_both_directions(tmp_path: Path) -> None:
    out = tmp_path / "x.jsonl"
    report = bulk.run_copy(FakeReader({1: b'{"a":1}'}), f"COPY kv TO '{out}'")
    assert (report.direction, report.rows, report.status) == ("to", 1, "COPY 1")
    assert out.read_text() == '{"key": "1", "value": {"a":1}}\n'  # jsonl from the file name
    writer = FakeWriter()
    assert bulk.run_copy(writer, parse(f"COPY kv FROM '{out}'")).rows == 1
    assert writer.rows == {1: b'{"a":1}'}
    with pytest.raises(CopyError, match="not a COPY statement"):
        bulk.run_copy(writer, "GET 1")


def test_is_copy_looks_past_comments() -> None:
    assert bulk.is_copy("  -- load\n copy kv FROM 'a'")
    assert bulk.is_copy(parse("COPY kv FROM 'a'"))
    assert not bulk.is_copy("SELECT 'COPY' FROM kv") and not bulk.is_copy("copying")


def test_format_follows_the_file_name_unless_given() -> None:
    assert CopyOptions.for_path("a.JSONL").format == "jsonl"
    assert CopyOptions.for_path("a.ndjson").format == "jsonl"
    assert CopyOptions.for_path("a.txt").format == "csv"
    assert CopyOptions.for_path("a.jsonl", "csv").format == "csv"
    with pytest.raises(CopyError, match="HEADER is for the csv format"):
        CopyOptions("jsonl", header=True)

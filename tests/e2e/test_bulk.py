"""COPY, ``raftkv import`` and ``raftkv export`` against a real cluster (node processes, LevelDB, sockets)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftkv import Client, bulk
from raftkv.bulk import CopyError
from raftkv.errors import QueryError
from raftkv.keys import MAX_KEY

from ..shell.conftest import cli_env
from .conftest import RunningCluster

pytestmark = pytest.mark.timeout(120)

TS = 1_795_255_200_000_000_000  # 2026-11-21T10:00:00Z
AWKWARD = [
    b"plain",
    b"a,b,c",
    b'say "hi", twice: ""',
    b"two\nlines\r\nand a CR\r",
    b"\xff\xfe\x00binary\x80",
    b"\\x41 is text, not binary",
    b"\\\\ two backslashes",
    b'{"temp": 21.50, "tags": ["a", "b"], "n": null}',
    b"",
    b"  spaces around  ",
    "h\u00e9llo \u202e bidi \x1b]0;title\x07".encode(),
    b"null",
    b'"a JSON string"',
    b"42\n",
    b'{"compact":"caf\\u00e9","n":1.50e0}',
    '{"c1":"\x85\u009b\x7f","bidi":"\u202e"}'.encode(),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningCluster]:
    c = RunningCluster(str(tmp_path_factory.mktemp("bulk") / "c"), shards=4)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def db(cluster: RunningCluster) -> Iterator[Client]:
    with Client(cluster.seeds) as client:
        client.delete_range(0, MAX_KEY)  # every test starts from an empty table
        yield client


def cli(*args: str, cwd: Path, input: str | None = None, timeout: float = 100) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "raftkv", *args], capture_output=True, text=True, input=input,
                          timeout=timeout, cwd=cwd, env=cli_env(),
                          stdin=None if input is not None else subprocess.DEVNULL)


def stored(db: Client) -> dict[int, bytes]:
    return dict(db.range_query(0, MAX_KEY))


@pytest.mark.parametrize("key_format", ["int", "timestamp"])
@pytest.mark.parametrize("fmt", ["csv", "jsonl"])
def test_round_trip(db: Client, tmp_path: Path, fmt: str, key_format: str) -> None:
    base = TS if key_format == "timestamp" else 0
    rows = {base + i * 1_000_003: value for i, value in enumerate(AWKWARD)}
    rows[MAX_KEY] = b"the last key"
    db.put_many(rows)
    path = tmp_path / f"out.{fmt}"
    options = f"WITH (FORMAT {fmt}, KEY_FORMAT {key_format})"
    report = bulk.run_copy(db, f"COPY kv TO '{path}' {options}")
    assert report.rows == len(rows) and report.status == f"COPY {len(rows)}"
    text = path.read_text(encoding="utf-8")
    if key_format == "timestamp":
        assert "2026-11-21T10:00:00.000000000Z" in text and "2554-07-21T23:34:33.709551615Z" in text
    db.delete_range(0, MAX_KEY)
    assert stored(db) == {}
    assert bulk.run_copy(db, f"COPY kv FROM '{path}' {options}").rows == len(rows)
    assert stored(db) == rows  # byte for byte, JSON values too: a backup restores what it saved
    if fmt == "jsonl":
        values = [json.loads(line)["value"] for line in text.splitlines()]
        assert {"compact": "caf\u00e9", "n": 1.5} in values  # compact JSON is embedded
        assert '{"temp": 21.50, "tags": ["a", "b"], "n": null}' in values  # other JSON is its text


def test_header_names_the_columns(db: Client, tmp_path: Path) -> None:
    db.put_many([(1, b"one"), (2, b"two, with a comma")])
    path = tmp_path / "h.csv"
    bulk.run_copy(db, f"COPY kv TO '{path}' WITH (HEADER)")
    assert path.read_text().splitlines() == ["key,value", "1,one", '2,"two, with a comma"']
    db.delete_range(0, MAX_KEY)
    # without HEADER, the header line is the first row, and its key is no number: nothing is written
    with pytest.raises(CopyError, match=r"h.csv: line 1: the key 'key' is not a whole number.*no row before it"):
        bulk.run_copy(db, f"COPY kv FROM '{path}'")
    assert stored(db) == {}
    path.write_text("value,key\none,1\nthree,3\n")  # a header may list the columns in either order
    assert bulk.run_copy(db, f"COPY kv FROM '{path}' WITH (FORMAT csv, HEADER)").rows == 2
    assert stored(db) == {1: b"one", 3: b"three"}


def test_a_bad_row_stops_the_import_after_the_rows_before_it(db: Client, tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    good = [f"{i},value {i}" for i in range(12)]
    path.write_text("\n".join([*good, "13,\\xABC", "14,after", "15,after"]) + "\n")
    with pytest.raises(CopyError) as info:
        bulk.run_copy(db, f"COPY kv FROM '{path}'", batch_rows=5)
    err = info.value
    assert (err.line, err.rows) == (13, 12)
    assert "bad.csv: line 13: the value '\\\\xABC' starts with \\x" in err.message
    assert err.message.endswith("the 12 rows before it were written, nothing after it")
    assert stored(db) == {i: f"value {i}".encode() for i in range(12)}


class Recording:
    """A real client whose put_many batches are recorded."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.batches: list[tuple[int, int]] = []  # (rows, bytes)

    def put_many(self, pairs: Any) -> int:
        pairs = list(pairs)
        self.batches.append((len(pairs), sum(len(v) + bulk.ROW_OVERHEAD for _, v in pairs)))
        return self.client.put_many(pairs)


def test_a_large_file_goes_in_bounded_batches(db: Client, tmp_path: Path) -> None:
    path = tmp_path / "large.jsonl"
    n = 30_000
    with path.open("w") as f:
        for i in range(n):
            f.write(json.dumps({"key": str(TS + i * 1000), "value": {"seq": i, "pad": "x" * 80}}) + "\n")
    writer = Recording(db)
    rows = bulk.import_file(writer, str(path), bulk.CopyOptions("jsonl"), batch_rows=1000, batch_bytes=64 << 10)
    assert rows == n
    assert all(1 <= count <= 1000 and size <= 64 << 10 for count, size in writer.batches)
    assert sum(count for count, _ in writer.batches) == n
    assert len(writer.batches) >= n * 100 // (64 << 10)  # the byte bound, not the row bound, cut them
    assert list(db.query("SELECT count(*) FROM kv")) == [(n,)]
    assert json.loads(db.get(TS + 12_345_000)) == {"seq": 12_345, "pad": "x" * 80}


def test_export_of_a_query_with_a_predicate(db: Client, tmp_path: Path) -> None:
    # compact JSON, which an export embeds (JSON with spaces is written as a string, to come back as it was)
    db.put_many([(TS + i, json.dumps({"temp": 20 + i, "site": "north" if i % 2 else "south"},
                                     separators=(",", ":")).encode()) for i in range(20)])
    path = tmp_path / "hot.jsonl"
    query = (f"SELECT key, value FROM kv WHERE key >= {TS + 5} AND value->'temp' > 30 "
             "AND value->>'site' = 'north' ORDER BY key DESC")
    assert bulk.run_copy(db, f"COPY ({query}) TO '{path}' WITH (KEY_FORMAT timestamp)").rows == 5
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["value"]["temp"] for line in lines] == [39, 37, 35, 33, 31]
    assert lines[0] == {"key": "2026-11-21T10:00:00.000000019Z", "value": {"temp": 39, "site": "north"}}


def test_query_refuses_copy(db: Client) -> None:
    with pytest.raises(QueryError, match="COPY reads and writes files on the client"):
        db.query("COPY kv FROM 'x.csv'")


def test_cli_import_and_export(cluster: RunningCluster, db: Client, tmp_path: Path) -> None:
    source = tmp_path / "in.csv"
    source.write_text('key,value\n1,"{""temp"": 31}"\n2,\\xdeadbeef\n3,"a\nb"\n')
    r = cli("import", str(source), "--header", "--connect", cluster.seeds, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.startswith(f"imported 3 rows from {source} in ")
    assert stored(db) == {1: b'{"temp": 31}', 2: b"\xde\xad\xbe\xef", 3: b"a\nb"}

    # the local cluster through --data-dir, a query with a predicate, jsonl from the file name
    r = cli("export", "--query", "SELECT * FROM kv WHERE key >= 2", "out.jsonl", "--data-dir", cluster.root,
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert "exported 2 rows to out.jsonl" in r.stderr
    assert (tmp_path / "out.jsonl").read_text() == ('{"key": "2", "value": "\\\\xdeadbeef"}\n'
                                                   '{"key": "3", "value": "a\\nb"}\n')
    r = cli("export", "-", "--key-format", "timestamp", "--header", "--connect", cluster.seeds, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[:2] == ["key,value", '1970-01-01T00:00:00.000000001Z,"{""temp"": 31}"']

    db.delete_range(0, MAX_KEY)
    r = cli("import", "out.jsonl", "--connect", cluster.seeds, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert stored(db) == {2: b"\xde\xad\xbe\xef", 3: b"a\nb"}

    # standard input, timestamps as keys
    r = cli("import", "-", "--format", "jsonl", "--key-format", "timestamp", "--connect", cluster.seeds,
            cwd=tmp_path, input='{"key": "2026-11-21T10:00:00Z", "value": [1, 2]}\n')
    assert r.returncode == 0, r.stderr
    assert "imported 1 row from - in " in r.stderr
    assert db.get(TS) == b"[1,2]"


def test_cli_export_refuses_a_terminal_as_standard_output(cluster: RunningCluster, db: Client,
                                                          tmp_path: Path) -> None:
    import pty

    db.put_many([(1, b"\x1b]0;retitled\x07")])
    leader, follower = pty.openpty()
    try:
        r = subprocess.run([sys.executable, "-m", "raftkv", "export", "-", "--connect", cluster.seeds],
                           stdout=follower, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True,
                           timeout=100, cwd=tmp_path, env=cli_env())
    finally:
        os.close(follower)
    os.set_blocking(leader, False)
    try:
        shown = os.read(leader, 65536)
    except OSError:  # EAGAIN or, with the other end closed, EIO: nothing was written to it
        shown = b""
    finally:
        os.close(leader)
    assert r.returncode == 1
    assert r.stderr.startswith("raftkv: export: standard output is a terminal") and "a file" in r.stderr
    assert b"\x1b" not in shown  # nothing reached the terminal


def test_cli_import_of_a_bad_file_fails_with_the_line(cluster: RunningCluster, db: Client, tmp_path: Path) -> None:
    (tmp_path / "bad.jsonl").write_text('{"key": "1", "value": "a"}\n{"key": "2", "value": "b", "x": 1}\n')
    r = cli("import", "bad.jsonl", "--connect", cluster.seeds, cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.strip() == ('raftkv: import: bad.jsonl: line 2: unexpected member "x": a line holds "key" and '
                                '"value"; the 1 row before it was written, nothing after it')
    assert stored(db) == {1: b"a"}
    r = cli("import", "missing.csv", "--connect", cluster.seeds, cwd=tmp_path)
    assert r.returncode == 1 and "cannot read missing.csv: No such file or directory" in r.stderr


def test_copy_in_the_shell(cluster: RunningCluster, db: Client, tmp_path: Path) -> None:
    (tmp_path / "in.csv").write_text("10,ten\n11,eleven\n")
    script = ("COPY kv FROM 'in.csv';\n"
              "COPY (SELECT * FROM kv WHERE key > 10) TO 'out.csv';\n"
              "SELECT count(*) FROM kv;\n")
    r = cli("shell", "--connect", cluster.seeds, "--no-timing", "--format", "csv", "-e", script, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    assert r.stderr.splitlines() == ["COPY 2", "COPY 1", "(1 row)"]
    assert r.stdout == "count(*)\n2\n"
    assert (tmp_path / "out.csv").read_text() == "11,eleven\n"
    r = cli("shell", "--connect", cluster.seeds, "--no-timing", "-e", "COPY kv FROM 'in.csv' WITH (FORMAT xml);",
            cwd=tmp_path)
    assert r.returncode == 1
    assert r.stderr.splitlines() == ["ERROR: line 1, column 36: FORMAT must be csv or jsonl, not xml",
                                     "  COPY kv FROM 'in.csv' WITH (FORMAT xml)",
                                     "                                     ^"]

"""Faithful output through the shell, and Ctrl-C during an aggregate.

The shell's engine with fake clients (which columns are keys, ``\\jsonkeys``, ``--json-keys``, csv
on a terminal, a cleanup that fails while Ctrl-C unwinds), then the real ``raftkv shell`` against
a real cluster: a large key through ``--format json``, binary and control characters in every
data format, and Ctrl-C on a pty while an aggregate runs.
"""

from __future__ import annotations

import io
import json
import termios
import time
from collections.abc import Iterator

import pytest

from raftkv import Client
from raftkv.cli import build_parser
from raftkv.cluster import launcher
from shell.commands import run_command
from shell.runner import Outcome, Settings, Shell, key_columns

from .conftest import RunCli
from .fakes import Factory, FakeClient, FakeResult
from .test_e2e_pty import Terminal, open_shell

pytestmark = pytest.mark.timeout(120)

BIG_KEY = 1795957530750702678  # JavaScript and jq read it as 1795957530750702600
ROWS = 200_000
BASE = 10**15
# the reported statement, with more aggregates so that it runs long enough to be interrupted
AGGREGATE = ("SELECT count(*), avg(value->'temp'), max(value->'temp' * 2 + 1), sum(length(value)) FROM kv "
             "WHERE value->'sensor' IN ('s1','s2') OR value->'temp' * 2 > 1000;")


class TtyIO(io.StringIO):
    def isatty(self) -> bool:
        return True


def make_shell(fmt: str, out: io.StringIO | None = None,
               client: FakeClient | None = None) -> tuple[Shell, Factory]:
    factory = Factory(client)
    shell = Shell("h:1", Settings(format=fmt, timing=False), out=out or io.StringIO(), err=io.StringIO(),
                  client_factory=factory)
    return shell, factory


# --- the engine, with fake clients ------------------------------------------------------------------

def test_key_columns_follow_the_statement_not_the_names() -> None:
    assert key_columns("SELECT * FROM kv", ("key", "value")) == {0}
    assert key_columns("SELECT value, key AS ts FROM kv", ("value", "ts")) == {1}
    grouped = ("SELECT time_bucket(INTERVAL '1 minute', key) AS b, count(*), min(key), sum(key), max(key + 1) "
               "FROM kv GROUP BY time_bucket(INTERVAL '1 minute', key)")
    assert key_columns(grouped, ("b", "count(*)", "min(key)", "sum(key)", "max(key + 1)")) == {0, 2}
    assert key_columns("SELECT count(*) AS first_key FROM kv", ("first_key",)) == set()  # nor does a name
    assert key_columns("GET 5", ("key", "value")) == {0}
    assert key_columns("SHOW SHARDS", ("id", "first_key", "last_key", "replicas")) == {1, 2}
    assert key_columns("EXPLAIN SELECT * FROM kv", ("plan",)) == set()
    assert key_columns("not a statement", ("key", "n")) == {0}  # unreadable: guessed by name


def test_json_output_writes_keys_as_strings_until_told_otherwise() -> None:
    shell, _ = make_shell("json")
    shell.run_text(f"PUT {BIG_KEY} '{{\"temp\": 21.5}}'; PUT 2 x'00ff'; SELECT * FROM kv;")
    assert shell.out.getvalue().splitlines() == [  # type: ignore[attr-defined]
        '{"key": "2", "value": "\\\\x00ff"}', f'{{"key": "{BIG_KEY}", "value": {{"temp":21.5}}}}']

    assert run_command(shell, "\\jsonkeys number") is Outcome.OK
    assert shell.err.getvalue().splitlines()[-1] == "json output writes keys as numbers"  # type: ignore[attr-defined]
    shell.out = io.StringIO()
    shell.execute(f"GET {BIG_KEY}")
    assert shell.out.getvalue() == f'{{"key": {BIG_KEY}, "value": {{"temp":21.5}}}}\n'
    assert run_command(shell, "\\jsonkeys hex") is Outcome.FAILED
    assert "unknown json key style 'hex'" in shell.err.getvalue()  # type: ignore[attr-defined]
    assert run_command(shell, "\\jsonkeys STRING") is Outcome.OK and shell.settings.json_keys == "string"


def test_the_json_keys_option() -> None:
    assert build_parser().parse_args(["shell"]).json_keys == "string"
    assert build_parser().parse_args(["up", "--json-keys", "number"]).json_keys == "number"
    with pytest.raises(SystemExit):
        build_parser().parse_args(["shell", "--json-keys", "hex"])


def test_csv_escapes_control_characters_on_a_terminal_and_nowhere_else() -> None:
    script = "PUT 1 x'1b5d303b7469746c6507'; PUT 2 '\\x41'; SELECT * FROM kv;"
    piped, _ = make_shell("csv")
    piped.run_text(script)
    assert piped.out.getvalue() == "key,value\n1,\x1b]0;title\x07\n2,\\\\x41\n"  # type: ignore[attr-defined]
    tty, _ = make_shell("csv", out=TtyIO())
    tty.run_text(script)
    assert tty.out.getvalue() == "key,value\n1,\\u001b]0;title\\u0007\n2,\\\\x41\n"  # type: ignore[attr-defined]


def test_a_cleanup_failing_while_ctrl_c_unwinds_is_still_a_cancellation() -> None:
    # what the client did: Ctrl-C stopped the wait for the aggregate's page, then closing the
    # still-running generator raised RuntimeError, which replaced the KeyboardInterrupt
    def pages() -> Iterator[list[tuple[int]]]:
        try:
            raise KeyboardInterrupt
            yield [(1,)]
        finally:
            raise RuntimeError("aclose(): asynchronous generator is already running")

    def answer(text: str, st: object) -> FakeResult:
        return FakeResult(("count(*)",), "SELECT", pages()) if "count" in text else FakeResult(status="INSERT 1")

    shell, factory = make_shell("table", client=FakeClient(answer))
    assert shell.execute("SELECT count(*) FROM kv") is Outcome.CANCELLED
    assert shell.err.getvalue() == "cancelled\n"  # type: ignore[attr-defined]
    # the client was closed (it may still be running the statement) and the next one reconnects
    assert factory.client.closed and not shell.connected
    assert shell.execute("PUT 1 'a'") is Outcome.OK
    assert len(factory.calls) == 2


# --- the real shell and a real cluster ----------------------------------------------------------------

def test_large_keys_binary_and_control_characters_through_the_real_shell(cluster: launcher.ClusterInfo,
                                                                         run_cli: RunCli) -> None:
    k = BIG_KEY
    puts = (f"PUT {k} '{{\"temp\": 21.5, \"id\": 12345678901234567890}}'; PUT {k + 1} x'fffe00';"
            f"PUT {k + 2} '\\x41'; PUT {k + 3} x'1b5d303b7469746c6507';")
    select = f"SELECT * FROM kv WHERE key >= {k} AND key <= {k + 3};"
    r = run_cli("shell", "--connect", cluster.seeds, "--format", "json", "-e", puts + select)
    assert r.returncode == 0, r.stderr
    assert "\x1b" not in r.stdout and "\x07" not in r.stdout
    assert [json.loads(line) for line in r.stdout.splitlines()] == [
        {"key": str(k), "value": {"temp": 21.5, "id": 12345678901234567890}},
        {"key": str(k + 1), "value": "\\xfffe00"},  # binary: bytea hex
        {"key": str(k + 2), "value": "\\\\x41"},  # text that reads \x41: its backslash doubled
        {"key": str(k + 3), "value": "\x1b]0;title\x07"},  # text, escaped by JSON
    ]
    assert f'"key": "{k}"' in r.stdout and '"id":12345678901234567890' in r.stdout  # digits as stored

    r = run_cli("shell", "--connect", cluster.seeds, "--format", "json", "--json-keys", "number", "-e", f"GET {k}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith(f'{{"key": {k}, ')

    # csv to a pipe is the raw text; a table (even piped) is escaped
    r = run_cli("shell", "--connect", cluster.seeds, "--format", "csv", "-e", select)
    assert r.stdout.splitlines()[1:] == [f'{k},"{{""temp"": 21.5, ""id"": 12345678901234567890}}"',
                                         f"{k + 1},\\xfffe00", f"{k + 2},\\\\x41", f"{k + 3},\x1b]0;title\x07"]
    r = run_cli("shell", "--connect", cluster.seeds, "--format", "table", "--no-timing", "-e", select)
    assert [line.split(" | ")[1] for line in r.stdout.splitlines()[3:5]] == ["\\xfffe00", "\\\\x41"]
    assert r.stdout.splitlines()[5] == f" {k + 3} | \\u001b]0;title\\u0007"


@pytest.fixture(scope="module")
def loaded(cluster: launcher.ClusterInfo) -> launcher.ClusterInfo:
    with Client(cluster.seeds) as db:
        for start in range(BASE, BASE + ROWS, 20_000):
            db.put_many((key, b'{"sensor": "s%d", "temp": %d}' % (key % 7, key % 600))
                        for key in range(start, start + 20_000))
    return cluster


def _running_a_statement(term: Terminal) -> bool:
    # the prompt gives the terminal back to canonical (line) mode once it hands a statement over,
    # and takes it again only to prompt: the statement runs while the terminal is canonical
    return bool(termios.tcgetattr(term.fd)[3] & termios.ICANON)


def test_ctrl_c_cancels_a_running_aggregate_and_the_prompt_returns(loaded: launcher.ClusterInfo) -> None:
    term = open_shell(loaded.seeds)
    try:
        start = len(term.seen)
        term.send(AGGREGATE + "\r")
        deadline = time.monotonic() + 30
        while not _running_a_statement(term):
            assert time.monotonic() < deadline, f"the statement did not start; tail: {term.seen[-400:]!r}"
            term.read(0.02)
        time.sleep(0.5)  # well into the aggregate: the reported failure came from here
        term.send("\x03")
        cancelled = term.wait_for(r"\ncancelled\n|\(1 row|ERROR.*", start)
        assert cancelled.group() != "(1 row", "the aggregate ended before Ctrl-C: it needs more rows"
        assert cancelled.group() == "\ncancelled\n"  # not "ERROR: internal error: RuntimeError: aclose() ..."
        term.wait_for(r"raftkv> ", cancelled.end())
        assert "ERROR" not in term.seen[start:]

        # the session goes on: the next statement connects again and runs
        again = len(term.seen)
        term.send(f"SELECT count(*) FROM kv WHERE key >= {BASE} AND key < {BASE + ROWS};\r")
        counted = term.wait_for(rf"{ROWS}\s*\n.*\(1 row, ", again)
        term.wait_for(r"raftkv> ", counted.end())  # Ctrl-D only at the prompt (see test_e2e_pty)
        term.send("\x04")
        assert term.wait_exit() == 0
    finally:
        term.kill()

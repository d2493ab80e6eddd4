"""Timestamps in the shell: ``\\keys``, ``\\timezone``, ``--keys``/``--timezone``, to_timestamp() values,
and ``raftkv cluster status --keys timestamp``; pure formatting first, then the real shell on a cluster."""

from __future__ import annotations

import io
import json
from typing import Any

import pytest

from raftkv.cli import build_parser
from raftkv.cluster import launcher
from raftkv.cluster.cli import key_range, render_status
from raftkv.query import Timestamp, parse, parse_timezone
from shell import formats
from shell.commands import help_text, run_command
from shell.runner import Outcome, Settings, Shell, key_columns

from .conftest import RunCli
from .fakes import Factory, FakeClient, FakeResult
from .test_e2e_pty import open_shell

pytestmark = pytest.mark.timeout(60)

NOW = 1_795_255_200_000_000_000  # 2026-11-21T10:00:00Z
UTC_NOW = "2026-11-21T10:00:00.000000000Z"
BERLIN_NOW = "2026-11-21T11:00:00.000000000+01:00"
LAST_KEY = "2554-07-21T23:34:33.709551615Z"  # 2**64-1


# --- formats (pure) -------------------------------------------------------------------------------


def render(fmt: str, rows: list[tuple[Any, ...]], keys: str = "timestamp", tz: str = "UTC",
           columns: tuple[str, ...] = ("key", "n", "t"), **options: Any) -> list[str]:
    return formats.render_all(fmt, columns, [rows], key_columns={0}, keys=keys, tz=parse_timezone(tz),
                              **options).splitlines()


def test_key_columns_as_timestamps_in_every_format() -> None:
    rows = [(NOW, 7, Timestamp(NOW + 1)), (None, 8, None)]
    assert render("table", rows) == [
        "              key               | n |               t",
        "--------------------------------+---+--------------------------------",
        " 2026-11-21T10:00:00.000000000Z | 7 | 2026-11-21T10:00:00.000000001Z",
        " NULL                           | 8 | NULL",  # a timestamp is text: aligned left
    ]
    assert render("vertical", rows[:1], tz="Europe/Berlin")[1:] == [
        f"key | {BERLIN_NOW}", "n   | 7", "t   | 2026-11-21T11:00:00.000000001+01:00"]
    assert render("csv", rows) == ["key,n,t", f"{UTC_NOW},7,2026-11-21T10:00:00.000000001Z", ",8,"]
    assert [json.loads(line) for line in render("json", rows, tz="+05:30")] == [
        {"key": "2026-11-21T15:30:00.000000000+05:30", "n": 7, "t": "2026-11-21T15:30:00.000000001+05:30"},
        {"key": None, "n": 8, "t": None}]


def test_int_keys_stay_integers_but_timestamps_stay_timestamps() -> None:
    rows = [(NOW, 7, Timestamp(NOW))]
    assert render("csv", rows, keys="int") == ["key,n,t", f"{NOW},7,{UTC_NOW}"]
    assert render("json", rows, keys="int", json_keys="number") == [f'{{"key": {NOW}, "n": 7, "t": "{UTC_NOW}"}}']
    assert render("table", rows, keys="int", tz="Europe/Berlin")[2] == f" {NOW} | 7 | {BERLIN_NOW}"
    with pytest.raises(ValueError, match="unknown key style"):
        formats.renderer("table", ("key",), keys="hex")


def test_display_value_of_timestamps() -> None:
    assert formats.display_value(Timestamp(0)) == "1970-01-01T00:00:00.000000000Z"
    assert formats.csv_field(Timestamp(NOW), tz=parse_timezone("-08:00")) == "2026-11-21T02:00:00.000000000-08:00"
    assert formats.json_text(Timestamp(NOW), key=True, json_keys="number") == f'"{UTC_NOW}"'


# --- the shell engine, with a stand-in client -----------------------------------------------------


SHARDS = ("id", "first_key", "last_key", "replicas", "leader", "generation", "bytes", "keys", "writes_per_s",
          "stripe")


def answer(text: str, st: Any) -> FakeResult:
    """SHOW SHARDS, GET and SELECTs as the real client gives them (to_timestamp: Timestamp values)."""
    if "SHOW SHARDS" in text:
        return FakeResult(SHARDS, "SHOW", [[("s0000", 0, NOW - 1, "n1", "n1", 1, 10, 2, 0.5, None),
                                           ("s0001", NOW, 2**64 - 1, "n1", None, 1, None, None, None, None)]])
    if "GET" in text:
        return FakeResult(("key", "value"), "GET", [[(NOW, b"a")]])
    if "to_timestamp" in text:
        return FakeResult(("key", "t"), "SELECT", [[(NOW, Timestamp(NOW))]])
    return FakeResult(("now()",), "SELECT", [[(NOW,)]])


def make_shell(fmt: str = "table") -> Shell:
    return Shell("h:1", Settings(format=fmt, timing=False), out=io.StringIO(), err=io.StringIO(),
                 client_factory=Factory(FakeClient(answer)))


def run(shell: Shell, text: str) -> tuple[Outcome, list[str], str]:
    shell.out.seek(0), shell.out.truncate()
    shell.err.seek(0), shell.err.truncate()
    outcome = shell.run_text(text)
    return outcome, shell.out.getvalue().splitlines(), shell.err.getvalue()  # type: ignore[attr-defined]


def test_keys_and_timezone_commands_change_the_display() -> None:
    shell = make_shell()
    assert run(shell, "\\keys") == (Outcome.OK, ["keys are shown as integers"], "")
    assert run(shell, "GET 1;")[1][2] == f" {NOW} | a"
    assert run(shell, "\\keys timestamp") == (
        Outcome.OK, ["keys are shown as timestamps (RFC 3339, time zone UTC)"], "")
    assert run(shell, "GET 1;")[1][2] == f" {UTC_NOW} | a"
    assert run(shell, "\\timezone Europe/Berlin") == (
        Outcome.OK, ["timestamps are shown in time zone Europe/Berlin"], "")
    out = [[cell.strip() for cell in line.split("|")] for line in run(shell, "SHOW SHARDS;")[1][2:4]]
    assert out == [  # first_key and last_key are keys; the other integers stay numbers
        ["s0000", "1970-01-01T01:00:00.000000000+01:00", "2026-11-21T10:59:59.999999999+01:00", "n1", "n1", "1",
         "10", "2", "0.5", "NULL"],
        ["s0001", BERLIN_NOW, "2554-07-22T01:34:33.709551615+02:00", "n1", "NULL", "1", "NULL", "NULL", "NULL",
         "NULL"]]
    assert run(shell, "\\tz +0530")[1] == ["timestamps are shown in time zone +05:30"]
    assert run(shell, "\\timezone")[1] == ["timestamps are shown in time zone +05:30"]
    assert shell.settings.keys == "timestamp" and shell.settings.timezone == "+05:30"


def test_to_timestamp_values_need_no_setting_and_now_is_no_key() -> None:
    shell = make_shell("csv")
    assert run(shell, "SELECT key, to_timestamp(key) AS t FROM kv;")[1] == ["key,t", f"{NOW},{UTC_NOW}"]
    run(shell, "\\keys timestamp")
    run(shell, "\\timezone Europe/Berlin")
    assert run(shell, "GET 1;")[1] == ["key,value", f"{BERLIN_NOW},a"]
    assert run(shell, "SELECT now();")[1] == ["now()", str(NOW)]  # a constant is not a key


def test_bad_settings_are_refused_and_change_nothing() -> None:
    shell = make_shell()
    outcome, out, err = run(shell, "\\keys hex")
    assert outcome is Outcome.FAILED and err == "ERROR: unknown key style 'hex'; choose one of: int, timestamp\n"
    outcome, out, err = run(shell, "\\timezone Mars/Olympus")
    assert outcome is Outcome.FAILED and err.startswith("ERROR: unknown time zone 'Mars/Olympus': use UTC, ")
    assert (shell.settings.keys, shell.settings.timezone) == ("int", "UTC")
    assert run_command(shell, "\\keys int timestamp") is Outcome.FAILED
    assert "\\keys [int|timestamp]" in help_text() and "\\timezone [ZONE]" in help_text()


def test_key_columns_of_a_select_without_from() -> None:
    assert key_columns("SELECT now() AS first_key", ("first_key",)) == frozenset()  # a constant is no key
    assert key_columns(parse("SELECT to_timestamp(key), key FROM kv"), ("to_timestamp(key)", "key")) == {1}


def test_command_line_options() -> None:
    args = build_parser().parse_args(["shell", "--keys", "timestamp", "--timezone", "+02"])
    assert (args.keys, args.timezone) == ("timestamp", "+02:00")
    args = build_parser().parse_args(["up"])
    assert (args.keys, args.timezone) == ("int", "UTC")
    for bad in (["shell", "--keys", "hex"], ["shell", "--timezone", "Mars/Olympus"],
                ["cluster", "status", "--keys", "int"]):
        with pytest.raises(SystemExit):
            build_parser().parse_args(bad)


def test_cluster_status_ranges_as_timestamps() -> None:
    assert key_range(0, NOW) == "0x0000000000000000..0x18ea0717bd2c3fff"
    assert key_range(NOW, 2**64, "timestamp") == f"{UTC_NOW}..{LAST_KEY}"
    st = {"nodes": [{"id": "n1", "address": "127.0.0.1:7401", "pid": 11, "up": True}], "epoch": 3,
          "shards": [{"id": "s0000", "start": 0, "end": NOW, "replicas": ["n1"], "leader": "n1", "generation": 1},
                     {"id": "s0001", "start": NOW, "end": 2**64, "replicas": ["n1"], "leader": "n1",
                      "generation": 2}]}
    lines = render_status(st, keys="timestamp", tz=parse_timezone("Europe/Berlin")).splitlines()
    assert lines[-3].split()[:3] == ["SHARD", "RANGE", "(RFC"]
    assert lines[-2].split()[:2] == ["s0000", "1970-01-01T01:00:00.000000000+01:00..2026-11-21T10:59:59.999999999+01:00"]
    assert lines[-1].split()[1] == f"{BERLIN_NOW}..2554-07-22T01:34:33.709551615+02:00"
    assert "RANGE (hex, inclusive)" in render_status(st)  # the default is unchanged


# --- the real shell on a real cluster -------------------------------------------------------------


@pytest.fixture(scope="module")
def loaded(cluster: launcher.ClusterInfo) -> launcher.ClusterInfo:
    from raftkv import Client

    with Client(cluster.seeds) as db:
        db.put_many([(NOW, b"a"), (NOW + 1, b"b")])
    return cluster


def test_scripts_print_timestamps(loaded: launcher.ClusterInfo, run_cli: RunCli) -> None:
    r = run_cli("shell", "--connect", loaded.seeds, "--format", "csv", "--keys", "timestamp",
                "--timezone", "Europe/Berlin",
                "-e", f"SELECT key, to_timestamp(key) AS t, value FROM kv WHERE key BETWEEN {NOW} AND {NOW + 1};"
                      f"SELECT to_timestamp(min(key)), max(key), count(*) FROM kv WHERE key >= {NOW} AND key < {NOW + 2};"
                      "SELECT to_timestamp(TIMESTAMP '2026-11-21T10:00:00Z') AS t, 1 + 2, INTERVAL '1 min' AS ns")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines() == [
        "key,t,value", f"{BERLIN_NOW},{BERLIN_NOW},a",
        "2026-11-21T11:00:00.000000001+01:00,2026-11-21T11:00:00.000000001+01:00,b",
        "to_timestamp(min(key)),max(key),count(*)", f"{BERLIN_NOW},2026-11-21T11:00:00.000000001+01:00,2",
        "t,1 + 2,ns", f"{BERLIN_NOW},3,60000000000"]
    r = run_cli("shell", "--connect", loaded.seeds, "--format", "json", "-e", f"GET {NOW}; SELECT now()")
    assert r.returncode == 0, r.stderr
    lines = [json.loads(line) for line in r.stdout.splitlines()]
    assert lines[0] == {"key": str(NOW), "value": "a"} and type(lines[1]["now()"]) is int  # keys stay ints


def test_interactive_keys_and_timezone(loaded: launcher.ClusterInfo) -> None:
    term = open_shell(loaded.seeds)
    try:
        start = len(term.seen)
        term.send("\\keys timestamp\r")
        term.wait_for(r"keys are shown as timestamps \(RFC 3339, time zone UTC\)", start)
        term.send("\\timezone -05:00\r")
        term.wait_for(r"timestamps are shown in time zone -05:00", start)
        at = len(term.seen)
        term.send(f"SELECT key, value FROM kv WHERE key = {NOW};\r")
        term.wait_for(r" 2026-11-21T05:00:00\.000000000-05:00 \| a\s*\n\(1 row", at)
        at = len(term.seen)
        term.send("SELECT to_timestamp(now() - now() + 1) AS t;\r")
        term.wait_for(r" 1969-12-31T19:00:00\.000000001-05:00\s*\n\(1 row", at)
        at = len(term.seen)
        term.send("SHOW SHARDS;\r")
        term.wait_for(r" 1969-12-31T19:00:00\.000000000-05:00 \| ", at)  # the first shard's first_key
        term.wait_for(r"\| 2554-07-21T18:34:33\.709551615-05:00 \| ", at)  # the last shard's last_key
        term.send("\\q\r")
        assert term.wait_exit() == 0
    finally:
        term.kill()


def test_cluster_status_with_timestamps(loaded: launcher.ClusterInfo, run_cli: RunCli) -> None:
    r = run_cli("cluster", "status", "--data-dir", str(loaded.data_dir), "--keys", "timestamp")
    assert r.returncode == 0, r.stderr
    assert "RANGE (RFC 3339, inclusive)" in r.stdout
    assert f"1970-01-01T00:00:00.000000000Z..{LAST_KEY}" not in r.stdout  # several shards
    assert "1970-01-01T00:00:00.000000000Z.." in r.stdout and f"..{LAST_KEY}" in r.stdout
    r = run_cli("cluster", "status", "--data-dir", str(loaded.data_dir), "--json", "--keys", "timestamp")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["shards"][0]["start"] == 0  # --json is unchanged

"""``raftkv shell`` and ``raftkv up`` as processes, against a real cluster."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from raftkv import Client
from raftkv.cluster import launcher

from .conftest import RunCli, start_cluster

pytestmark = pytest.mark.timeout(120)


def test_execute_prints_csv_and_exits_zero(cluster: launcher.ClusterInfo, run_cli: RunCli) -> None:
    r = run_cli("shell", "-e", "PUT 1 'a'; SELECT * FROM kv WHERE key < 100;", "--connect", cluster.seeds,
                "--format", "csv")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "key,value\n1,a\n"
    assert r.stderr.splitlines()[0].startswith("INSERT 1 (")  # footers of data formats go to stderr


def test_bad_statement_fails_with_the_caret_and_stops(cluster: launcher.ClusterInfo, run_cli: RunCli) -> None:
    r = run_cli("shell", "--connect", cluster.seeds, "--no-timing",
                "-e", "PUT 20 'b';\nSELECT * FORM kv;\nPUT 21 'c';")
    assert r.returncode == 1
    assert r.stderr.splitlines() == [
        "INSERT 1",
        "ERROR: line 2, column 10: unexpected name 'FORM'; expected one of: ',', FROM",
        "  SELECT * FORM kv",
        "           ^",
    ]
    with Client(cluster.seeds) as db:
        assert db.get(20) == b"b" and db.get(21) is None  # nothing ran after the error


def test_statements_from_stdin(cluster: launcher.ClusterInfo, run_cli: RunCli) -> None:
    script = ("INSERT INTO kv VALUES (1000, '{\"temp\": 30}'), (1001, x'00ff');\n"
              "SELECT key, value\n  FROM kv WHERE key >= 1000 AND key < 2000; -- two rows\n"
              "SELECT count(*) AS n FROM kv WHERE key >= 1000 AND key < 2000;\n")
    r = run_cli("shell", "--connect", cluster.seeds, "--format", "json", input=script)
    assert r.returncode == 0, r.stderr
    assert [json.loads(line) for line in r.stdout.splitlines()] == [
        {"key": "1000", "value": {"temp": 30}}, {"key": "1001", "value": "\\x00ff"}, {"n": 2}]


def test_file_table_format_and_local_data_dir(cluster: launcher.ClusterInfo, run_cli: RunCli,
                                              tmp_path: Path) -> None:
    script = tmp_path / "q.sql"
    script.write_text("\\timing off\nPUT 3000 'hello\nworld';\nGET 3000;\nEXPLAIN SELECT * FROM kv WHERE key = 3000;\n")
    r = run_cli("shell", "--data-dir", cluster.data_dir, "-f", str(script), "--format", "table")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    assert lines[:6] == ["timing is off", "INSERT 1", " key  |    value", "------+--------------",
                         " 3000 | hello\\nworld", "(1 row)"]
    assert lines[6].strip() == "plan" and lines[8] == " SELECT key, value" and lines[-1].startswith("(") and "rows)" in lines[-1]


def test_errors_in_files_name_the_file(cluster: launcher.ClusterInfo, run_cli: RunCli, tmp_path: Path) -> None:
    script = tmp_path / "bad.sql"
    script.write_text("GET 1;\n\nGET 'one';\n")
    r = run_cli("shell", "--connect", cluster.seeds, "-f", str(script))
    assert r.returncode == 1
    assert r.stderr.splitlines()[-3].startswith(f"{script}:3: ERROR: line 3, column 5: ")


def test_default_format_off_a_terminal_is_csv_and_consistency_option(cluster: launcher.ClusterInfo,
                                                                     run_cli: RunCli) -> None:
    r = run_cli("shell", "--connect", cluster.seeds, "--consistency", "serializable",
                "-e", "PUT 4000 'x'", "-e", "GET 4000")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "key,value\n4000,x\n"


def test_missing_cluster_and_unreachable_nodes(run_cli: RunCli, tmp_path: Path) -> None:
    r = run_cli("shell", "--data-dir", str(tmp_path / "none"), "-e", "GET 1")
    assert r.returncode == 1 and "no local cluster" in r.stderr and "raftkv up" in r.stderr
    r = run_cli("shell", "--connect", "127.0.0.1:1", "-e", "GET 1")
    assert r.returncode == 1 and "ERROR: unavailable" in r.stderr


def test_up_runs_piped_statements_and_leaves_the_cluster_running(request: pytest.FixtureRequest,
                                                                  run_cli: RunCli, tmp_path: Path) -> None:
    data_dir = tmp_path / "up"
    request.addfinalizer(lambda: launcher.stop(data_dir) if data_dir.exists() else None)
    r = run_cli("up", "--data-dir", str(data_dir), "--shards", "4", input="PUT 7 'seven';\nSELECT * FROM kv;\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "key,value\n7,seven\n"
    seeds = ",".join(launcher.addresses(data_dir))
    assert f"seeds: {seeds}" in r.stderr
    assert "raftkv cluster stop" in r.stderr
    status = launcher.status(data_dir)
    assert [n["up"] for n in status["nodes"]] == [True, True, True] and len(status["shards"]) == 4
    pids = launcher.load(data_dir).pids

    # again: the running cluster is reused, with its data
    r = run_cli("up", "--data-dir", str(data_dir), "-e", "GET 7")
    assert r.returncode == 0, r.stderr
    assert r.stdout == "key,value\n7,seven\n"
    assert launcher.load(data_dir).pids == pids
    # a layout that contradicts the existing cluster is refused, not silently ignored
    r = run_cli("up", "--data-dir", str(data_dir), "--shards", "8", "-e", "GET 7")
    assert r.returncode == 1 and "differs" in r.stderr


def test_start_cluster_helper_is_usable_per_test(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    info = start_cluster(request, tmp_path / "c2")
    with Client(info.seeds) as db:
        assert list(db.query("SELECT count(*) FROM kv")) == [(0,)]

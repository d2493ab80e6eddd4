"""``raftkv cluster status`` exit statuses, output into a closed pipe, and the ports a new local cluster
prefers (``raftkv cluster start`` / ``raftkv up``), against real node processes.

The preferred ports here are ones each test found free itself: the real defaults (7401..) may be in
use by a developer's cluster or another test, and nothing here depends on them.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from raftkv.cli import EXIT_BROKEN_PIPE, main
from raftkv.cluster import launcher
from raftkv.cluster.cli import EXIT_HEALTHY, EXIT_UNHEALTHY, EXIT_UNREACHABLE, health

from .conftest import cleanup_cluster

pytestmark = pytest.mark.timeout(90)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def new_dir(tmp_path: Path) -> Iterator[Callable[[str], Path]]:
    """``new_dir(name)``: a not-yet-existing cluster directory, its processes all killed at teardown."""
    made: list[Path] = []

    def make(name: str) -> Path:
        made.append(tmp_path / name)
        return made[-1]

    try:
        yield make
    finally:
        for d in made:
            cleanup_cluster(d)


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    """``raftkv ARGS`` in this process: (exit status, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def into_closed_pipe(*args: str) -> subprocess.CompletedProcess[str]:
    """``raftkv ARGS`` with stdout a pipe nobody reads any more (as after ``| head -1`` has exited)."""
    r, w = os.pipe()
    os.close(r)  # before the child starts: its first write to stdout fails with EPIPE, every time
    try:
        return subprocess.run([sys.executable, "-m", "raftkv", *args], stdout=w, stderr=subprocess.PIPE,
                              stdin=subprocess.DEVNULL, text=True, timeout=60, cwd=ROOT)
    finally:
        os.close(w)


# --- health of a status, without a cluster -------------------------------------------------------------


def status_of(up: list[bool], leaders: list[str | None], meta: str | None = "n1") -> dict[str, Any]:
    nodes = [{"id": f"n{i + 1}", "address": f"127.0.0.1:{i + 1}", "pid": 100 + i if u else None, "up": u}
             for i, u in enumerate(up)]
    shards = [{"id": f"s{i:04d}", "leader": leader} for i, leader in enumerate(leaders)]
    return {"nodes": nodes, "shards": shards, "epoch": 1 if any(up) else None, "meta": {"leader": meta}}


def test_health_of_a_status() -> None:
    assert health(status_of([True] * 3, ["n1", "n2"])) == (EXIT_HEALTHY, [])

    code, problems = health(status_of([True, True, False], ["n1", "n2"]))
    assert code == EXIT_UNHEALTHY and problems == ["not running: n3"]

    code, problems = health(status_of([True] * 3, ["n1", None, None]))
    assert code == EXIT_UNHEALTHY and problems == ["no leader for s0001, s0002"]

    code, problems = health(status_of([True] * 3, ["n1"], meta=None))
    assert code == EXIT_UNHEALTHY and problems == ["no leader for the meta group"]

    # a process that runs but does not answer is named apart from one that is gone
    st = status_of([True, False, False], ["n1"])
    st["nodes"][1]["pid"] = 7
    code, problems = health(st)
    assert code == EXIT_UNHEALTHY and problems == ["not running: n3", "not answering: n2"]

    code, problems = health(status_of([False] * 3, []))
    assert code == EXIT_UNREACHABLE and problems == ["no node answers (not running: n1, n2, n3)"]


# --- a real cluster ------------------------------------------------------------------------------------------


def test_status_exit_status_follows_the_cluster_and_survives_a_closed_pipe(
        new_dir: Callable[[str], Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    data_dir = new_dir("raftkv-data")  # the default --data-dir, seen from its parent
    launcher.start(data_dir, nodes=3, shards=2, wait=60.0)

    monkeypatch.chdir(data_dir.parent)
    code, out, err = run(capsys, "cluster", "status")
    assert code == EXIT_HEALTHY, out + err
    assert out.startswith("3/3 nodes up, 2/2 shards with a leader") and err == ""
    code, out, err = run(capsys, "cluster", "status", "--json")
    assert code == EXIT_HEALTHY, err
    assert set(json.loads(out)) == {"nodes", "shards", "epoch"}  # the documented shape, nothing added

    # | head: no traceback, and the status a process killed by SIGPIPE would have
    for args in (["cluster", "status", "--data-dir", str(data_dir)],
                 ["cluster", "status", "--data-dir", str(data_dir), "--json"]):
        done = into_closed_pipe(*args)
        assert done.returncode == EXIT_BROKEN_PIPE, done.stderr
        assert "Traceback" not in done.stderr and "BrokenPipe" not in done.stderr and "Exception" not in done.stderr

    # running but silent (paused): looked at again for a while, then unhealthy all the same
    launcher.kill_node(data_dir, "n3", signal.SIGSTOP)
    code, out, err = run(capsys, "cluster", "status", "--data-dir", str(data_dir), "--json")
    assert code == EXIT_UNHEALTHY and "not answering: n3" in err
    assert [n["up"] for n in json.loads(out)["nodes"]] == [True, True, False]

    launcher.kill_node(data_dir, "n3")  # SIGKILL ends a paused process too
    code, out, err = run(capsys, "cluster", "status", "--data-dir", str(data_dir))
    assert code == EXIT_UNHEALTHY
    assert out.startswith("2/3 nodes up") and "raftkv: cluster unhealthy: not running: n3" in err
    code, out, err = run(capsys, "cluster", "status", "--data-dir", str(data_dir), "--json")
    assert code == EXIT_UNHEALTHY
    assert [n["up"] for n in json.loads(out)["nodes"]] == [True, True, False]  # printed all the same

    launcher.stop(data_dir)
    code, out, err = run(capsys, "cluster", "status", "--data-dir", str(data_dir), "--json")
    assert code == EXIT_UNREACHABLE
    st = json.loads(out)
    assert [n["up"] for n in st["nodes"]] == [False] * 3 and st["epoch"] is None
    assert "raftkv: cluster unreachable: no node answers" in err


# --- preferred ports ---------------------------------------------------------------------------------------


def free_pair() -> list[int]:
    """A client and a peer port, free now, to stand in for the defaults."""
    return launcher.free_ports(2)


def start_one_node(capsys: pytest.CaptureFixture[str], data_dir: Path) -> tuple[int, str, str]:
    return run(capsys, "cluster", "start", "--data-dir", str(data_dir), "--nodes", "1", "--shards", "1",
               "--replication", "1", "--wait", "60")


def test_a_new_cluster_takes_the_preferred_ports_when_all_are_free(
        new_dir: Callable[[str], Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = free_pair()
    monkeypatch.setattr(launcher, "default_ports", lambda nodes: wanted if nodes == 1 else None)
    data_dir = new_dir("c")
    code, out, err = start_one_node(capsys, data_dir)
    assert code == 0, out + err
    assert f"seeds: 127.0.0.1:{wanted[0]}\n" in out and "free ports" not in err
    assert launcher.load(data_dir).node("n1").peer == ("127.0.0.1", wanted[1])


def test_a_taken_preferred_port_means_free_ports_said_so(
        new_dir: Callable[[str], Path], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    wanted = free_pair()
    monkeypatch.setattr(launcher, "default_ports", lambda nodes: wanted if nodes == 1 else None)
    data_dir = new_dir("c")
    with socket.socket() as squatter:  # someone else's listener on the preferred peer port
        squatter.bind(("127.0.0.1", wanted[1]))
        squatter.listen()
        code, out, err = start_one_node(capsys, data_dir)
        assert code == 0, out + err
        assert f"port {wanted[1]} already in use" in err and "takes free ports instead" in err
        node = launcher.load(data_dir).node("n1")
        assert node.peer[1] != wanted[1] and [node.client[1], node.peer[1]] != wanted
        seeds = [line for line in out.splitlines() if line.startswith("seeds: ")]
        assert seeds == [f"seeds: 127.0.0.1:{node.client[1]}"]
        assert launcher.status(data_dir)["nodes"][0]["up"]

    # a restart keeps the ports the cluster was created with, preferred ones free again or not
    launcher.stop(data_dir)
    code, out, err = start_one_node(capsys, data_dir)
    assert code == 0, out + err
    assert launcher.load(data_dir).node("n1") == node and "free ports" not in err

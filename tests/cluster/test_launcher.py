"""The local cluster launcher (library and ``raftkv cluster`` CLI) against real node processes."""

from __future__ import annotations

import io
import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import psutil
import pytest

from raftkv import Client
from raftkv.cluster import launcher
from raftkv.errors import InvalidArgument, Unavailable
from raftkv.routing.shardmap import DEFAULT_SHARDS

from ..helpers import wait_until

pytestmark = pytest.mark.timeout(120)

KEY_SPACE_END = 2**64


def raftkv_cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "raftkv", *args], capture_output=True, text=True,
                          timeout=timeout, stdin=subprocess.DEVNULL)


def is_running(pid: int) -> bool:
    """Alive and not a zombie (a killed child of ours may linger as one until reaped)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


SHARD_FIELDS = {"id", "start", "end", "replicas", "leader", "generation", "stripe", "bytes", "keys", "writes_per_s"}


def check_status_shape(st: dict[str, Any], node_ids: list[str], shard_count: int = DEFAULT_SHARDS) -> None:
    """Exactly the documented shape, with shards covering the key space in contiguous segments.

    A segment is one range shard or the K stripes ``[i, K]`` of one range, which share its bounds.
    """
    assert set(st) == {"nodes", "shards", "epoch"}
    assert [n["id"] for n in st["nodes"]] == node_ids
    for n in st["nodes"]:
        assert set(n) == {"id", "address", "pid", "up", "state", "replicas", "leaders", "metrics"}
        # a node that answers says where it serves metrics (the launcher asks each for a free port)
        assert not n["up"] or (isinstance(n["metrics"], str) and n["metrics"].startswith("127.0.0.1:"))
        # membership, as the meta leader reports it (None when no meta leader answers)
        assert n["state"] in (None, "up", "suspect", "dead", "decommissioning")
        assert n["replicas"] is None or type(n["replicas"]) is int
        host, _, port = n["address"].rpartition(":")
        assert host == "127.0.0.1" and port.isdigit()
        assert n["pid"] is None or isinstance(n["pid"], int)
        assert isinstance(n["up"], bool)
    assert len(st["shards"]) == shard_count
    assert (st["epoch"] is None) == (shard_count == 0)
    assert st["epoch"] is None or (type(st["epoch"]) is int and st["epoch"] >= 1)
    expected_start, i = 0, 0
    shards = st["shards"]
    while i < len(shards):
        first = shards[i]
        count = 1 if first["stripe"] is None else first["stripe"][1]
        segment = shards[i:i + count]
        assert [s["stripe"] for s in segment] == ([None] if count == 1 else [[k, count] for k in range(count)])
        assert all((s["start"], s["end"]) == (first["start"], first["end"]) for s in segment)
        assert type(first["start"]) is int and type(first["end"]) is int
        assert first["start"] == expected_start < first["end"]
        expected_start = first["end"]
        i += count
    for s in shards:
        assert set(s) == SHARD_FIELDS
        assert len(s["replicas"]) == len(set(s["replicas"])) == 3
        assert set(s["replicas"]) <= set(node_ids)
        assert s["leader"] is None or s["leader"] in s["replicas"]
        assert type(s["generation"]) is int and s["generation"] >= 1
        # load figures: None from nodes that do not report them (yet)
        assert s["bytes"] is None or (type(s["bytes"]) is int and s["bytes"] >= 0)
        assert s["keys"] is None or (type(s["keys"]) is int and s["keys"] >= 0)
        assert s["writes_per_s"] is None or (type(s["writes_per_s"]) is float and s["writes_per_s"] >= 0)
    assert expected_start == (KEY_SPACE_END if shards else 0)


def all_led_by(st: dict[str, Any], allowed: set[str]) -> bool:
    return bool(st["shards"]) and all(s["leader"] in allowed for s in st["shards"])


# --- one shared cluster: read-only checks ------------------------------------------------------------


def test_status_reports_every_node_up_and_every_shard_led(shared_cluster: launcher.ClusterInfo) -> None:
    st = launcher.status(shared_cluster.data_dir)
    check_status_shape(st, ["n1", "n2", "n3"])
    assert all(n["up"] for n in st["nodes"])
    assert all(s["leader"] is not None for s in st["shards"])
    assert [n["address"] for n in st["nodes"]] == shared_cluster.addresses
    for n in st["nodes"]:
        proc = psutil.Process(n["pid"])
        assert "raftkv" in " ".join(proc.cmdline()) and n["id"] in proc.cmdline()
    assert json.loads(json.dumps(st)) == st  # 2**64 survives JSON as an int
    # a fresh cluster: nothing split, no stripes; the epoch is the map's
    assert [(s["generation"], s["stripe"]) for s in st["shards"]] == [(1, None)] * DEFAULT_SHARDS
    with Client(shared_cluster.seeds) as db:
        assert st["epoch"] == db.shard_map().epoch
    assert launcher.status(shared_cluster.data_dir, include_meta=True)["meta"]["leader"] in {"n1", "n2", "n3"}


def test_cluster_json_and_addresses(shared_cluster: launcher.ClusterInfo) -> None:
    with open(os.path.join(shared_cluster.data_dir, "cluster.json")) as f:
        stored = json.load(f)
    assert [n["id"] for n in stored["nodes"]] == ["n1", "n2", "n3"]
    assert (stored["shards"], stored["replication"]) == (DEFAULT_SHARDS, 3)
    assert launcher.addresses(shared_cluster.data_dir) == [n["client"] for n in stored["nodes"]]
    ports = [int(n[k].rpartition(":")[2]) for n in stored["nodes"] for k in ("client", "peer")]
    assert len(set(ports)) == 6
    for node_id, pid in shared_cluster.pids.items():
        with open(os.path.join(shared_cluster.data_dir, node_id, "pid")) as f:
            assert int(f.read()) == pid
        assert os.path.getsize(os.path.join(shared_cluster.data_dir, node_id, "node.log")) > 0


def test_cli_status_json_and_table(shared_cluster: launcher.ClusterInfo) -> None:
    out = raftkv_cli("cluster", "status", "--data-dir", shared_cluster.data_dir, "--json")
    assert out.returncode == 0, out.stderr
    st = json.loads(out.stdout)
    check_status_shape(st, ["n1", "n2", "n3"])
    # leader counts come from heartbeats and may change between two calls
    steady = ("id", "address", "pid", "up")
    assert [{k: n[k] for k in steady} for n in st["nodes"]] == \
        [{k: n[k] for k in steady} for n in launcher.status(shared_cluster.data_dir)["nodes"]]

    out = raftkv_cli("cluster", "status", "--data-dir", shared_cluster.data_dir)
    assert out.returncode == 0, out.stderr
    assert "3/3 nodes up, 12/12 shards with a leader" in out.stdout
    assert "0x0000000000000000..0x1555555555555554" in out.stdout
    assert "0xeaaaaaaaaaaaaaa7..0xffffffffffffffff" in out.stdout


def test_second_start_reuses_running_nodes(shared_cluster: launcher.ClusterInfo) -> None:
    again = launcher.start(shared_cluster.data_dir, wait=30.0)
    assert again.pids == shared_cluster.pids and again.addresses == shared_cluster.addresses
    # a layout that contradicts cluster.json is refused, not silently ignored
    with pytest.raises(InvalidArgument, match="nodes=5"):
        launcher.start(shared_cluster.data_dir, nodes=5)
    with pytest.raises(InvalidArgument, match="shards=4"):
        launcher.start(shared_cluster.data_dir, shards=4)


def test_unknown_directory_and_node_are_clear_errors(tmp_path: Path,
                                                     shared_cluster: launcher.ClusterInfo) -> None:
    with pytest.raises(InvalidArgument, match="no cluster"):
        launcher.status(tmp_path / "nothing-here")
    with pytest.raises(InvalidArgument, match="no cluster"):
        launcher.stop(tmp_path / "nothing-here")
    with pytest.raises(InvalidArgument, match="n9"):
        launcher.kill_node(shared_cluster.data_dir, "n9")
    out = raftkv_cli("cluster", "status", "--data-dir", str(tmp_path / "nothing-here"))
    assert out.returncode == 1 and "no cluster" in out.stderr


# --- fresh clusters: faults, stop, restart -------------------------------------------------------------


def test_kill_restart_stop_and_restart(cluster_dir: Path) -> None:
    info = launcher.start(cluster_dir, nodes=3, wait=60.0)
    first_pids = dict(info.pids)
    assert all(first_pids.values())

    killed = launcher.kill_node(cluster_dir, "n1")
    assert killed == first_pids["n1"] and not is_running(killed)
    st = launcher.status(cluster_dir)
    n1 = st["nodes"][0]
    assert (n1["id"], n1["up"], n1["pid"]) == ("n1", False, None)
    assert all(n["up"] for n in st["nodes"][1:])
    # the survivors are a majority of every group: each shard gets (or keeps) a leader among them
    def led_by_survivors() -> dict[str, Any]:
        current = launcher.status(cluster_dir)
        assert all_led_by(current, {"n2", "n3"}), f"leaders {[s['leader'] for s in current['shards']]}"
        return current

    st = wait_until(led_by_survivors, 60, "n2/n3 to lead every shard", interval=0.1)
    check_status_shape(st, ["n1", "n2", "n3"])
    assert launcher.kill_node(cluster_dir, "n1") is None  # already down

    new_pid = launcher.start_node(cluster_dir, "n1")
    assert new_pid != first_pids["n1"] and is_running(new_pid)
    assert all(n["up"] for n in launcher.status(cluster_dir)["nodes"])

    pids = [n["pid"] for n in launcher.status(cluster_dir)["nodes"]]
    assert launcher.stop(cluster_dir) == {"n1": "stopped", "n2": "stopped", "n3": "stopped"}
    assert not any(is_running(p) for p in pids)
    assert not any((cluster_dir / n / "pid").exists() for n in ("n1", "n2", "n3"))
    st = launcher.status(cluster_dir)
    assert [(n["up"], n["pid"]) for n in st["nodes"]] == [(False, None)] * 3 and st["shards"] == []
    assert st["epoch"] is None  # no node answers: no map, no epoch
    assert launcher.stop(cluster_dir) == {"n1": "not running", "n2": "not running", "n3": "not running"}

    # same directory: same ports, same data, every node a new process
    again = launcher.start(cluster_dir, wait=60.0)
    assert again.addresses == info.addresses
    assert not set(again.pids.values()) & set(pids)
    st = launcher.status(cluster_dir)
    check_status_shape(st, ["n1", "n2", "n3"])
    assert all(n["up"] for n in st["nodes"]) and all(s["leader"] for s in st["shards"])


def test_cli_start_and_stop(cluster_dir: Path) -> None:
    out = raftkv_cli("cluster", "start", "--nodes", "3", "--data-dir", str(cluster_dir), "--shards", "4")
    assert out.returncode == 0, out.stdout + out.stderr
    seeds = [line for line in out.stdout.splitlines() if line.startswith("seeds: ")]
    assert len(seeds) == 1
    assert seeds[0].removeprefix("seeds: ").split(",") == launcher.addresses(cluster_dir)
    assert "3/3 nodes up, 4/4 shards with a leader" in out.stdout
    pids = [n["pid"] for n in launcher.status(cluster_dir)["nodes"]]
    assert all(pids)

    # restarting with a contradicting layout fails before touching anything
    out = raftkv_cli("cluster", "start", "--nodes", "5", "--data-dir", str(cluster_dir))
    assert out.returncode == 1 and "nodes=5" in out.stderr

    out = raftkv_cli("cluster", "stop", "--data-dir", str(cluster_dir))
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:3] == ["n1: stopped", "n2: stopped", "n3: stopped"]
    # the nodes outlived the CLI that started them (init reaped them); now they are gone
    assert not any(psutil.pid_exists(p) and is_running(p) for p in pids)


def test_start_timeout_says_what_is_missing(cluster_dir: Path) -> None:
    # elections that cannot finish within the wait: the error names the leaderless groups
    with pytest.raises(Unavailable, match=r"no leader for: .*meta"):
        launcher.start(cluster_dir, nodes=3, raft={"election_min": 30.0, "election_max": 40.0}, wait=5.0)
    launcher.stop(cluster_dir)

    # a node that cannot start (its peer port taken): the error says it exited and quotes its log
    peer_port = launcher.load(cluster_dir).node("n2").peer[1]
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", peer_port))
        squatter.listen()
        with pytest.raises(Unavailable) as exc:
            launcher.start(cluster_dir, raft={}, wait=30.0)
    message = exc.value.message
    # it gives up as soon as n2 has exited, so n1 and n3 may or may not be answering yet
    silent = re.search(r"not answering: ([^;\n]*)", message)
    assert silent and launcher.addresses(cluster_dir)[1] in silent[1]
    assert "cannot reach" in silent[1]  # and why it counts as silent
    assert "n2 exited (exit status 1)" in message and "node.log" in message  # how it ended, from its parent
    assert "Address already in use" in message or "Errno 98" in message


def test_a_node_just_spawned_counts_as_alive_before_its_command_line_is_readable(cluster_dir: Path,
                                                                                  monkeypatch) -> None:
    # For a moment after Popen returns, /proc/PID/cmdline of the child reads empty (the kernel sets
    # the new argv while it loads the program).  A readiness wait that looked then took the node for
    # dead and ignored its answers for a whole minute (a flaky start-up failure on a busy machine).
    launcher.start(cluster_dir, nodes=1, shards=1, replication=1, wait=60.0)
    launcher.stop(cluster_dir)
    info = launcher.load(cluster_dir)
    real_open = open

    def racing_open(path, *args, **kwargs):  # the window, held open
        if isinstance(path, str) and path.startswith("/proc/") and path.endswith("/cmdline"):
            return io.BytesIO(b"")
        return real_open(path, *args, **kwargs)

    pid = launcher._spawn(info, "n1")
    monkeypatch.setattr("builtins.open", racing_open)
    try:
        assert launcher._live_pid(info, "n1") == pid
    finally:
        monkeypatch.undo()
    launcher.start(cluster_dir, nodes=None, shards=None, replication=None, wait=60.0)  # it serves
    assert launcher._live_pid(info, "n1") == pid

"""Adding and removing nodes with the launcher and ``raftkv cluster add-node|remove-node``.

The fast tests need no cluster (argument errors, cluster.json, rendering); the others run real
node processes and wait on conditions, never for a guessed time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import psutil
import pytest

from raftkv import Client
from raftkv.client import rpc
from raftkv.cluster import launcher
from raftkv.cluster.cli import render_status
from raftkv.errors import InvalidArgument
from raftkv.routing.shardmap import DEFAULT_SHARDS

from ..helpers import wait_until
from .test_launcher import is_running, raftkv_cli

SPREAD = 0x9E3779B97F4A7C15  # odd: i * SPREAD mod 2**64 never repeats and reaches every shard
KEYS = 240




def key(i: int) -> int:
    return i * SPREAD % 2**64


def write_keys(seeds: str) -> None:
    # every shard gets writes: a shard gains a replica from a snapshot of what it applied
    with Client(seeds) as db:
        db.put_many((key(i), b"v%d" % i) for i in range(KEYS))


def all_readable(seeds: str) -> bool:
    with Client(seeds) as db:
        return all(db.get(key(i)) == b"v%d" % i for i in range(KEYS))


def node_entry(data_dir: Path, node_id: str) -> dict[str, Any]:
    return next(n for n in launcher.status(data_dir)["nodes"] if n["id"] == node_id)


def membership_lines(data_dir: Path) -> str:
    """Each node's last warnings and membership and leadership lines: all a failure in CI leaves."""
    out = []
    for log in sorted(data_dir.glob("n*/node.log")):
        lines = [ln.rstrip()[:200] for ln in log.read_text(errors="replace").splitlines()
                 if any(w in ln for w in ("WARNING", "ERROR", "members", " leads ", "leadership"))]
        out += [f"--- {log.parent.name}", *lines[-12:]]
    return "\n".join(out)


def shards(seeds: str) -> list[dict[str, Any]]:
    return rpc.call_any(seeds, "map", timeout=2.0)["map"]["shards"]


def cluster_json(data_dir: Path) -> dict[str, Any]:
    return json.loads((data_dir / "cluster.json").read_text())


# --- no cluster needed ---------------------------------------------------------------------------

@pytest.mark.timeout(60)
@pytest.mark.parametrize("args, message", [
    (["remove-node", "--node", "n4"], "one of the arguments --data-dir --connect is required"),
    (["remove-node", "--data-dir", "x", "--connect", "127.0.0.1:1", "--node", "n4"], "not allowed with"),
    (["remove-node", "--data-dir", "x"], "--node"),
    (["add-node"], "--data-dir"),
])
def test_cli_usage_errors(args: list[str], message: str) -> None:
    out = raftkv_cli("cluster", *args)
    assert out.returncode == 2 and message in out.stderr, out.stderr


@pytest.mark.timeout(60)
def test_cli_bad_values_and_missing_cluster(tmp_path: Path) -> None:
    nothing = str(tmp_path / "nothing-here")
    cases = [
        (["add-node", "--data-dir", nothing], "no cluster"),
        (["add-node", "--data-dir", nothing, "--wait", "0"], "--wait must be positive"),
        (["remove-node", "--data-dir", nothing, "--node", "n4"], "no cluster"),
        (["remove-node", "--data-dir", nothing, "--node", "n4", "--timeout", "-1"], "--timeout must be positive"),
        (["remove-node", "--data-dir", nothing, "--node", " "], "--node needs a node id"),
        (["remove-node", "--data-dir", nothing, "--node", "n4", "--secret-file", "s"], "goes with --connect"),
        (["remove-node", "--connect", "127.0.0.1:1", "--node", "n4", "--secret-file", str(tmp_path / "absent")],
         "cannot read the secret file"),
        (["remove-node", "--connect", "nonsense", "--node", "n4"], "nonsense"),
    ]
    for args, message in cases:
        out = raftkv_cli("cluster", *args)
        assert out.returncode == 1 and message in out.stderr, (args, out.stderr)
        assert "Traceback" not in out.stderr


@pytest.mark.timeout(60)
def test_cli_remove_node_reports_an_unreachable_cluster() -> None:
    (port,) = launcher.free_ports(1)  # nothing listens there
    out = raftkv_cli("cluster", "remove-node", "--connect", f"127.0.0.1:{port}", "--node", "n4", "--timeout", "5")
    assert out.returncode == 1 and "cannot reach the cluster" in out.stderr, out.stderr


@pytest.mark.timeout(30)
def test_cluster_json_keeps_joined_nodes_and_removed_founders(tmp_path: Path) -> None:
    # a cluster.json from before membership (no "joined") reads as founders only
    old = {"version": 1, "shards": 8, "replication": 3, "raft": {},
           "nodes": [{"id": f"n{i}", "client": f"127.0.0.1:{7000 + i}", "peer": f"127.0.0.1:{7100 + i}"}
                     for i in (1, 2, 3)]}
    (tmp_path / "cluster.json").write_text(json.dumps(old))
    info = launcher.load(tmp_path)
    assert info.joined == () and [n.id for n in info.founders] == ["n1", "n2", "n3"]
    assert info.to_json() == old  # written back unchanged: nothing new appears for an old cluster

    founder_spec = info.nodes_spec
    n4 = launcher.NodeAddress("n4", ("127.0.0.1", 7004), ("127.0.0.1", 7104))
    grown = launcher.replace(info, nodes=(*info.nodes, n4), joined=("n4",))
    launcher._save(grown)
    again = launcher.load(tmp_path)
    assert again.joined == ("n4",) and again.is_joined("n4") and not again.is_joined("n1")
    # a joined node does not change the founders' --nodes: it is their identity
    assert again.nodes_spec == founder_spec
    assert launcher._next_id(again) == "n5"
    # removing a founder keeps its address in the founders' list, in its place
    launcher._drop(str(tmp_path), "n1")
    shrunk = launcher.load(tmp_path)
    assert [n.id for n in shrunk.nodes] == ["n2", "n3", "n4"]
    assert shrunk.nodes_spec == founder_spec
    assert cluster_json(tmp_path)["removed_founders"][0]["id"] == "n1"
    # a restart without layout options is not refused for the nodes added or removed since
    launcher._check_same_layout(shrunk, 3, None, 8, 3)
    with pytest.raises(InvalidArgument, match="nodes=4"):
        launcher._check_same_layout(shrunk, 4, None, None, None)
    # ids are never given twice: a removed node's directory still holds its data
    (tmp_path / "n7").mkdir()
    assert launcher._next_id(shrunk) == "n8"
    launcher._drop(str(tmp_path), "n4")
    assert launcher.load(tmp_path).joined == ()


@pytest.mark.timeout(30)
def test_render_status_shows_member_state_and_counts() -> None:
    st = {"nodes": [{"id": "n1", "address": "127.0.0.1:1", "pid": 5, "up": True, "state": "up", "replicas": 8,
                     "leaders": 3, "metrics": "127.0.0.1:9"},
                    {"id": "n4", "address": "127.0.0.1:4", "pid": 6, "up": True, "state": "decommissioning",
                     "replicas": 12, "leaders": None},
                    {"id": "n5", "address": "127.0.0.1:5", "pid": None, "up": False, "state": None,
                     "replicas": None, "leaders": None}],
          "shards": [], "epoch": None}
    lines = render_status(st).splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("NODE"))
    rows = [[c for c in line.split("  ") if c.strip()] for line in lines[header:header + 4]]
    rows = [[c.strip() for c in r] for r in rows]
    assert rows[0] == ["NODE", "ADDRESS", "PID", "STATE", "MEMBER", "REPLICAS", "LEADERS", "METRICS"]
    assert rows[1] == ["n1", "127.0.0.1:1", "5", "up", "up", "8", "3", "127.0.0.1:9"]
    assert rows[2] == ["n4", "127.0.0.1:4", "6", "up", "decommissioning", "12", "-", "-"]
    assert rows[3] == ["n5", "127.0.0.1:5", "-", "down", "-", "-", "-", "-"]


# --- real clusters ------------------------------------------------------------------------------------

@pytest.mark.timeout(120)
def test_removing_below_the_replication_factor_is_refused_and_changes_nothing(
        shared_cluster: launcher.ClusterInfo) -> None:
    data_dir = shared_cluster.data_dir
    before = cluster_json(Path(data_dir))
    out = raftkv_cli("cluster", "remove-node", "--data-dir", data_dir, "--node", "n2", "--timeout", "30")
    assert out.returncode == 1, out.stdout + out.stderr
    assert "cannot remove n2" in out.stderr and "replication factor 3" in out.stderr, out.stderr
    # the same through --connect: the node's refusal, and a hint when the proof is missing
    secret = str(Path(data_dir) / "secret")
    out = raftkv_cli("cluster", "remove-node", "--connect", shared_cluster.seeds, "--node", "n2",
                     "--secret-file", secret, "--timeout", "30")
    assert out.returncode == 1 and "replication factor 3" in out.stderr, out.stderr
    out = raftkv_cli("cluster", "remove-node", "--connect", shared_cluster.seeds, "--node", "n2", "--timeout", "30")
    assert out.returncode == 1 and "--secret-file" in out.stderr, out.stderr
    out = raftkv_cli("cluster", "remove-node", "--connect", shared_cluster.seeds, "--node", "n9",
                     "--secret-file", secret, "--timeout", "30")
    assert out.returncode == 1 and "cannot remove n9" in out.stderr and "n9" in out.stderr, out.stderr
    with pytest.raises(InvalidArgument, match="no node 'n9'"):
        launcher.remove_node(data_dir, "n9")
    # nothing changed: same file, same processes, nobody draining
    assert cluster_json(Path(data_dir)) == before
    st = launcher.status(data_dir)
    assert {n["id"]: n["pid"] for n in st["nodes"]} == shared_cluster.pids
    assert all(n["state"] == "up" and n["replicas"] == DEFAULT_SHARDS for n in st["nodes"]), st["nodes"]
    assert all(len(s["replicas"]) == 3 for s in st["shards"])


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_add_node_joins_takes_replicas_serves_data_and_leaves_through_connect(cluster_dir: Path) -> None:
    info = launcher.start(cluster_dir, nodes=3, settings={"dead_after": 5}, wait=60.0)
    write_keys(info.seeds)

    out = raftkv_cli("cluster", "add-node", "--data-dir", str(cluster_dir), "--wait", "60")
    assert out.returncode == 0, out.stdout + out.stderr
    assert out.stdout.strip() == "n4"
    stored = cluster_json(cluster_dir)
    assert [n["id"] for n in stored["nodes"]] == ["n1", "n2", "n3", "n4"] and stored["joined"] == ["n4"]
    grown = launcher.load(cluster_dir)
    n4_address = grown.addresses[3]
    argv = psutil.Process(grown.pids["n4"]).cmdline()
    # it names only itself and joins through the others; the founders' layout is not on its command line
    assert argv[argv.index("--nodes") + 1].startswith("n4=") and "," not in argv[argv.index("--nodes") + 1]
    assert set(argv[argv.index("--join") + 1].split(",")) == set(info.addresses)
    assert "--shards" not in argv

    wait_until(lambda: (node_entry(cluster_dir, "n4")["replicas"] or 0) > 0, 90, "replicas moved to n4")
    entry = node_entry(cluster_dir, "n4")
    assert entry["up"] and entry["state"] == "up", (entry, membership_lines(cluster_dir))
    wait_until(lambda: all_readable(n4_address), 60, "the data written before, read through n4")
    out = raftkv_cli("cluster", "status", "--data-dir", str(cluster_dir), "--json")
    st = json.loads(out.stdout)
    assert all({"id", "address", "pid", "up", "state", "replicas", "leaders"} <= set(n) for n in st["nodes"])
    out = raftkv_cli("cluster", "status", "--data-dir", str(cluster_dir))
    assert "4/4 nodes up" in out.stdout and "MEMBER" in out.stdout

    # a restart of the newcomer needs no join: it remembers it was admitted
    launcher.kill_node(cluster_dir, "n4")
    pid = launcher.start_node(cluster_dir, "n4", wait=60.0)
    wait_until(lambda: node_entry(cluster_dir, "n4")["state"] == "up", 60, "n4 up again after its restart")

    # --connect drains it and has the cluster forget it, but cannot stop the process: the operator does
    out = raftkv_cli("cluster", "remove-node", "--connect", ",".join(info.addresses), "--node", "n4",
                     "--secret-file", str(cluster_dir / "secret"), "--timeout", "180", timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "Stop its process yourself" in out.stdout and "still with a replica" in out.stderr
    assert not any("n4" in s["replicas"] or "n4" in s.get("learners", []) for s in shards(info.seeds))
    # forget committed at the meta leader; a node that follows the records may show n4 a moment longer
    wait_until(lambda: all("n4" not in launcher.member_records(a) for a in info.addresses), 30,
               "every node to forget n4")
    assert is_running(pid)
    assert all_readable(info.seeds)
    # locally, what is left is to stop it and drop it from cluster.json
    assert launcher.remove_node(cluster_dir, "n4", wait=60.0) == "stopped"
    assert not is_running(pid)
    assert [n["id"] for n in cluster_json(cluster_dir)["nodes"]] == ["n1", "n2", "n3"]
    assert "joined" not in cluster_json(cluster_dir)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_remove_node_drains_a_founder_of_four_and_the_rest_restarts(cluster_dir: Path) -> None:
    info = launcher.start(cluster_dir, nodes=4, settings={"dead_after": 5}, wait=60.0)
    write_keys(info.seeds)
    victim_pid = info.pids["n1"]
    out = raftkv_cli("cluster", "remove-node", "--data-dir", str(cluster_dir), "--node", "n1", "--timeout", "180",
                     timeout=240)
    assert out.returncode == 0, out.stdout + out.stderr
    assert "n1 removed" in out.stdout and "stopped" in out.stdout
    assert not is_running(victim_pid)

    st = launcher.status(cluster_dir)
    assert [n["id"] for n in st["nodes"]] == ["n2", "n3", "n4"] and all(n["up"] for n in st["nodes"])
    seeds = launcher.load(cluster_dir).seeds
    for s in shards(seeds):
        assert len(s["replicas"]) == 3 and "n1" not in s["replicas"] and not s.get("learners"), s
    wait_until(lambda: all("n1" not in launcher.member_records(a) for a in seeds.split(",")), 30,
               "every node to forget n1")
    assert all_readable(seeds)
    # the founders left still run with the whole founders' list (their identity) after a restart
    launcher.stop(cluster_dir)
    # nodes=4: the layout options describe the cluster as it was created
    again = launcher.start(cluster_dir, nodes=4, wait=60.0)
    assert sorted(again.pids) == ["n2", "n3", "n4"]
    argv = psutil.Process(again.pids["n2"]).cmdline()
    assert argv[argv.index("--nodes") + 1].startswith("n1=")
    assert all_readable(again.seeds)
    # the next node gets a fresh id: n1's directory (and log) stays
    assert launcher.add_node(cluster_dir, wait=60.0) == "n5"

"""Seeded fault-lab scenarios on a real cluster: each run's history must be linearizable.

Together they cover every fault kind.  Each also checks that the faults really happened and that
calls were really served -- a run where every call failed would be trivially linearizable.
Marked slow (about a minute each on 2 shared cores, cluster start-up and checking included).
"""

from __future__ import annotations

import json
import signal

import pytest

from raftkv.client import rpc
from tests.helpers import wait_until
from tests.lab.runner import LAB_RAFT, LabCluster, LabConfig, report, run

pytestmark = pytest.mark.slow

MIN_OK = 50  # per op kind: far below what a healthy run serves, far above a run that served nothing

SCENARIOS = [
    # (faults, seed): seeds picked so that the plans hold every kind asked for, and every partition
    # variant (leader, node, link) and cut mode (reset, blackhole)
    pytest.param(["kill", "leader-kill"], 12, id="kill+leader-kill"),
    pytest.param(["pause"], 10, id="pause"),
    pytest.param(["partition"], 13, id="partition"),
    pytest.param(["restart-all", "kill"], 16, id="restart-all+kill"),
    pytest.param(["split", "stripe", "leader-kill"], 21, id="split+stripe+leader-kill"),
    # a shard loses a replica through a membership change, and the mover gives it back
    pytest.param(["move", "leader-kill"], 22, id="move+leader-kill"),
]


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("faults", "seed"), SCENARIOS)
def test_history_is_linearizable_under_faults(tmp_path, faults: list[str], seed: int) -> None:
    cfg = LabConfig(duration=25.0, faults=faults, seed=seed, out=str(tmp_path / "out"), clients=5, keys=5)
    result = run(cfg, log=lambda *a: None)
    text = report(result)
    s = result.summary
    assert not s["problems"], text
    started = {e["fault"] for e in s["nemesis"] if e["event"] == "start"}
    assert started == set(faults), f"not every fault kind fired:\n{text}"
    assert s["verdict"] is not None, "tests/lab/check.py is missing"
    assert s["verdict"]["linearizable"], text
    for op in ("put", "get"):
        assert s["ops"][op]["ok"] >= MIN_OK, f"too few {op} calls served to prove anything:\n{text}"
    # and calls ran while the faults did: from the first fault to the last heal
    times = [e["time"] for e in s["nemesis"] if e["event"] in ("start", "heal")]
    history = [json.loads(line) for line in (tmp_path / "out" / "history.jsonl").read_text().splitlines()]
    during = [o for o in history if o["ok"] and min(times) <= o["call"] <= max(times)]
    assert len(during) >= MIN_OK, f"only {len(during)} calls served while faults ran:\n{text}"
    assert result.exit_code == 0
    # every acknowledged write to a fresh key was read back at the end (none lost to a crash)
    assert s["fresh"]["acknowledged"] >= MIN_OK and s["fresh"]["acknowledged_lost"] == 0, text
    for name in ("history.jsonl", "nemesis.jsonl", "summary.json", "logs/n1.log"):
        assert (tmp_path / "out" / name).is_file()


@pytest.mark.timeout(180)
def test_proxied_partition_isolates_the_leader_and_heal_rejoins_it(tmp_path) -> None:
    """The peer_via proxies are really in the path: cutting them deposes a leader, healing reconnects."""
    cluster = LabCluster(str(tmp_path / "cluster"), shards=1, raft=LAB_RAFT)
    try:
        cluster.start()
        old = cluster.leader(0)
        assert old is not None
        for other in cluster.node_ids:
            if other != old:
                cluster.cut(old, other, "reset")

        def deposed_and_alone() -> bool:  # the majority elects someone else; the isolated node sees no peer
            new = cluster.leader(0)
            peers_up = rpc.call(cluster.address(old), "status", timeout=5)["peers_up"]
            assert new not in (None, old) and peers_up == [], f"leader {new}, {old}'s links up: {peers_up}"
            return True

        wait_until(deposed_and_alone, 60, f"{old} to be deposed and cut off", interval=0.2)
        cluster.heal_links()
        others = sorted(n for n in cluster.node_ids if n != old)
        wait_until(lambda: sorted(rpc.call(cluster.address(old), "status", timeout=5)["peers_up"]) == others,
                   60, "the links to come back after heal", interval=0.2)
        # a paused node resumes too (the nemesis relies on signal() through the launcher)
        cluster.signal(old, signal.SIGSTOP)
        cluster.signal(old, signal.SIGCONT)
        assert rpc.call(cluster.address(old), "status", timeout=5)["node"] == old
    finally:
        cluster.stop()

"""Nodes fail and come back, on real node processes: replicas are re-created from snapshots, moved
one safe step at a time, and nothing acknowledged is lost."""

from __future__ import annotations

import time
from typing import Any

import pytest

from raftkv.client import rpc

from ..helpers import wait_until
from .appenders import Appenders, assert_none_lost

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

SPREAD = 0x9E3779B97F4A7C15  # odd: multiplying by it mod 2**64 is a bijection, so keys never repeat


def batch(lane: int, i: int) -> list[tuple[int, bytes]]:
    """Three fresh keys, spread over every initial shard."""
    return [(((i * 3 + lane) * 3 + j) * SPREAD % 2**64, b"v%d-%d-%d" % (lane, i, j)) for j in range(3)]


def shards(seeds: str) -> list[dict[str, Any]]:
    return rpc.call_any(seeds, "map", timeout=2.0)["map"]["shards"]


def placed_on(seeds: str, node: str) -> list[str]:
    """The shards that still keep a replica (voter or learner) on ``node``."""
    return [s["id"] for s in shards(seeds) if node in s["replicas"] or node in s.get("learners", [])]


def fully_replicated(seeds: str, factor: int = 3) -> bool:
    return all(len(s["replicas"]) == factor and not s.get("learners") for s in shards(seeds))


def meta_leader(cluster: Any) -> str | None:
    """The node leading the meta group (the one whose ``nodes`` answer has the liveness states)."""
    for node in cluster.info.nodes:
        try:
            if "states" in rpc.call(cluster.address(node.id), "nodes", timeout=2.0):
                return node.id
        except Exception:  # noqa: BLE001 -- a dead node; ask the next
            continue
    return None


def node_states(cluster: Any) -> dict[str, dict[str, Any]]:
    """Each node's liveness and counts, as the meta leader sees them."""
    leader = meta_leader(cluster)
    return {} if leader is None else rpc.call(cluster.address(leader), "nodes", timeout=2.0)["states"]


def _hosts_meta(cluster: Any, node: str) -> bool:
    try:
        st = rpc.call(cluster.address(node), "status", timeout=2.0, brief=True)
    except Exception:  # noqa: BLE001 -- down
        return False
    return any(g["id"] == "meta" for g in st["groups"])


def test_a_dead_node_is_replaced_under_writes_and_its_stale_replicas_go_when_it_returns(make_cluster):
    """The node that dies is the meta leader: the meta group elects another, which declares the
    node dead and moves its shard replicas *and* its meta replica to the spare node."""
    cluster = make_cluster(nodes=4, settings={"dead_after": 5})
    victim = wait_until(lambda: meta_leader(cluster), 30, "a meta leader")
    spare = next(n.id for n in cluster.info.nodes if not _hosts_meta(cluster, n.id))
    held = placed_on(cluster.seeds, victim)
    assert held, "the initial placement puts replicas on every node"
    with Appenders(cluster.seeds, lanes=3, batch=batch) as writers:
        wait_until(lambda: len(writers.acked) > 300, 60, "writes before the failure")
        cluster.kill(victim)
        killed_at = time.monotonic()
        wait_until(lambda: node_states(cluster).get(victim, {}).get("state") == "dead", 30,
                   f"{victim} declared dead")
        assert time.monotonic() - killed_at >= 4.0, "declared dead before dead_after"
        wait_until(lambda: not placed_on(cluster.seeds, victim) and fully_replicated(cluster.seeds), 120,
                   f"every replica of {victim} re-created elsewhere")
        wait_until(lambda: _hosts_meta(cluster, spare), 60, f"a meta replica on the spare node {spare}")
        acked_during = len(writers.acked)
        wait_until(lambda: len(writers.acked) > acked_during + 100, 60, "writes after the repair")
    assert_none_lost(cluster.seeds, writers.acked)
    # the dead node comes back: its stale replicas are removed, and balance moves some back to it
    cluster.restart(victim)

    def holds_only_what_the_map_gives_it() -> bool:
        st = rpc.call(cluster.address(victim), "status", timeout=5.0, brief=True)
        local = {g["id"] for g in st["groups"] if g["id"] != "meta"}
        return local == set(placed_on(cluster.seeds, victim))

    wait_until(holds_only_what_the_map_gives_it, 60, f"{victim} to drop the replicas it lost")
    wait_until(lambda: not _hosts_meta(cluster, victim), 60, f"{victim} to drop its stale meta replica")
    # three live replicas everywhere again: any one more node may fail without losing a write
    cluster.kill(next(s for s in shards(cluster.seeds) if s["id"] == held[0])["replicas"][0])
    assert_none_lost(cluster.seeds, writers.acked)


def _learning(seeds: str) -> dict[str, list[str]]:
    """Shard -> its learners, for the shards with a move under way."""
    return {s["id"]: s["learners"] for s in shards(seeds) if s.get("learners")}


def _diagnosis(cluster: Any) -> str:
    """What a stalled move needs explained: the map's placement, liveness as the meta leader sees
    it, and each node's last warnings and membership lines (a failure in CI leaves only this)."""
    import glob
    import os

    out = []
    try:
        for s in shards(cluster.seeds):
            out.append(f"{s['id']} gen {s.get('generation')} voters {s['replicas']} learners {s.get('learners')}")
    except Exception as exc:  # noqa: BLE001 -- a diagnosis must not fail
        out.append(f"map: {exc!r}")
    try:
        out.append(f"meta leader {meta_leader(cluster)}; states {node_states(cluster)}")
    except Exception as exc:  # noqa: BLE001
        out.append(f"states: {exc!r}")
    for log in sorted(glob.glob(os.path.join(cluster.root, "*", "node.log"))):
        with open(log, errors="replace") as f:
            lines = [ln.rstrip()[:240] for ln in f if "WARNING" in ln or "members" in ln or "ERROR" in ln]
        out.append(f"--- {log}")
        out.extend(lines[-15:])
    return "\n".join(out)


def test_a_drain_survives_kill_9_of_the_receiving_node_and_of_the_meta_leader(make_cluster):
    """A node is decommissioned under writes; in the middle of its moves the node receiving a
    replica is killed, then the meta leader.  Both come back; the drain completes from the map
    alone, and nothing acknowledged is lost."""
    from raftkv.server import maplink

    cluster = make_cluster(nodes=5, settings={"dead_after": 5})
    secret_path = f"{cluster.root}/secret"
    try:
        with open(secret_path, "rb") as f:
            secret: bytes | None = f.read().strip()
    except FileNotFoundError:
        secret = None
    leaving = "n1"
    with Appenders(cluster.seeds, lanes=3, batch=batch) as writers:
        wait_until(lambda: len(writers.acked) > 300, 60, "writes before the drain")
        rpc.call_any(cluster.seeds, "decommission", timeout=10.0, node=leaving,
                     proof=maplink.proof(secret, ["decommission", leaving]))
        moving = wait_until(lambda: _learning(cluster.seeds), 60, "a replica moving")
        receiver = next(iter(moving.values()))[0]
        cluster.kill(receiver)
        wait_until(lambda: any(len(s["replicas"]) > 3 or s.get("learners") for s in shards(cluster.seeds)
                               if receiver not in s["replicas"] + s.get("learners", [])), 60,
                   "another move under way")
        leader = wait_until(lambda: meta_leader(cluster), 30, "the meta leader")
        if leader != receiver:
            cluster.kill(leader)
        time.sleep(2.0)
        cluster.restart(receiver)
        if leader != receiver:
            cluster.restart(leader)

        def drained() -> bool:
            rpc.call_any(cluster.seeds, "forget", timeout=10.0, node=leaving,
                         proof=maplink.proof(secret, ["forget", leaving]))
            return True

        def explained(predicate: Any, timeout: float, what: str) -> Any:
            try:
                return wait_until(predicate, timeout, what)
            except AssertionError as exc:
                raise AssertionError(f"{exc}\n{_diagnosis(cluster)}") from None

        explained(drained, 180, f"{leaving} drained and forgotten")
        # the meta leader's map no longer names it; every node's copy follows within a second
        explained(lambda: not placed_on(cluster.seeds, leaving), 10, f"every map without {leaving}")
        explained(lambda: fully_replicated(cluster.seeds), 120, "every shard at three voters")
        acked_during = len(writers.acked)
        wait_until(lambda: len(writers.acked) > acked_during + 100, 60, "writes after the drain")
    assert_none_lost(cluster.seeds, writers.acked)


def test_a_node_joins_under_writes_and_scans_and_takes_its_share(make_cluster):
    """A fourth node joins while writers and a scanner run.  Every scan is in key order with no
    key twice, and holds every write acknowledged before it began; replicas and leadership move
    to the newcomer until its replica count is within the balance band."""
    import threading

    from raftkv import Client
    from raftkv.cluster import launcher
    from raftkv.replication.planner import band

    cluster = make_cluster(nodes=3, settings={"dead_after": 5})
    problems: list[str] = []
    scans = [0]
    with Appenders(cluster.seeds, lanes=2, batch=batch) as writers:
        stop = threading.Event()

        def scanner() -> None:
            with Client(cluster.seeds, timeout=30.0) as db:
                while not stop.is_set():
                    before = dict(writers.acked)
                    try:
                        keys = [k for k, _ in db.range_query(0, 2**64 - 1)]
                    except Exception as exc:  # noqa: BLE001 -- recorded: a scan must not fail
                        problems.append(f"scan failed: {exc!r}")
                        continue
                    if keys != sorted(set(keys)):
                        problems.append("a scan returned keys out of order or twice")
                    missing = set(before) - set(keys)
                    if missing:
                        problems.append(f"a scan missed {len(missing)} acknowledged keys")
                    scans[0] += 1

        t = threading.Thread(target=scanner)
        t.start()
        try:
            wait_until(lambda: len(writers.acked) > 200 and scans[0] > 2, 60, "writes and scans before")
            newcomer = launcher.add_node(cluster.root)
            cluster.info = launcher.load(cluster.root)

            def its_share() -> bool:
                smap = shards(cluster.seeds)
                counts = {n.id: 0 for n in cluster.info.nodes}
                for s in smap:
                    for n in s["replicas"]:
                        counts[n] += 1
                lo, hi = band(list(counts.values()))
                return fully_replicated(cluster.seeds) and counts[newcomer] > 0 and \
                    all(lo <= c <= hi for c in counts.values())

            wait_until(its_share, 120, f"{newcomer} to take its share of replicas")
            wait_until(lambda: (node_states(cluster).get(newcomer) or {}).get("leaders"), 60,
                       f"{newcomer} to lead some shards")
            done = scans[0]
            wait_until(lambda: scans[0] > done + 2, 60, "scans after the join")
        finally:
            stop.set()
            t.join(timeout=60)
    assert not problems, problems[:5]
    assert_none_lost(cluster.seeds, writers.acked)


def test_a_new_meta_leader_judges_liveness_by_its_own_term_only(make_cluster):
    """The meta leader is killed; the node that takes over must not judge the survivors by what it
    saw (or never saw) before it led.  Its first ``nodes`` answer shows every live node up: each
    gets a fresh grace from the new term, as the mover's own view always did."""
    cluster = make_cluster(nodes=3, settings={"dead_after": 5})
    # The same leader for 7 s: what any survivor last heard as leader (at its start, or in a
    # term it led before balancing moved the meta group's lead) is then old enough that judging
    # by it would call a live node suspect or dead.
    seen: dict[str, Any] = {"leader": None, "since": time.monotonic()}

    def steady_leader() -> str | None:
        leader, now = meta_leader(cluster), time.monotonic()
        if leader != seen["leader"]:
            seen.update(leader=leader, since=now)
        return leader if leader is not None and now - seen["since"] >= 7.0 else None

    victim = wait_until(steady_leader, 60, "a meta leader that stays 7 s", interval=0.2)
    survivors = [n.id for n in cluster.info.nodes if n.id != victim]
    cluster.kill(victim)

    def first_states() -> tuple[str, dict[str, Any]] | None:
        for node in survivors:
            try:
                reply = rpc.call(cluster.address(node), "nodes", timeout=1.0)
            except Exception:  # noqa: BLE001 -- busy electing; ask again
                continue
            if "states" in reply:
                return node, reply["states"]
        return None

    # polled closely, so that the first answer a new leader gives is the one checked
    leader, states = wait_until(first_states, 30, "a new meta leader's liveness", interval=0.005)
    for node in survivors:
        assert states[node]["state"] == "up", (leader, states, _diagnosis(cluster))
    wait_until(lambda: node_states(cluster).get(victim, {}).get("state") == "dead", 30, f"{victim} declared dead")

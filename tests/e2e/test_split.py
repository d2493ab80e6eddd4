"""Shard splits on real node processes: data, routing, the map, crashes in the middle."""

from __future__ import annotations

import random
import threading
import time
from typing import Any

import pytest

from raftkv import Client, errors
from raftkv.client import rpc
from raftkv.keys import MAX_KEY
from raftkv.routing.shardmap import meta_replicas

from ..helpers import wait_until
from .appenders import Appenders, assert_none_lost

pytestmark = pytest.mark.timeout(240)


def split(cluster, shard: str, at: int | None = None, timeout: float = 30.0) -> dict:
    """Split ``shard`` at its leader, retrying while leadership moves."""

    def attempt():
        leader = cluster.leader_of(shard, timeout=timeout)
        try:
            return rpc.call(cluster.address(leader), "split", timeout=15.0, shard=shard, at=at)
        except (errors.NotLeader, errors.Unavailable):
            return None

    return wait_until(attempt, timeout, f"a split of {shard}")


def maps(cluster) -> list[dict]:
    out = []
    for node in cluster.info.nodes:
        try:
            out.append(rpc.call(cluster.address(node.id), "map", timeout=2.0)["map"])
        except errors.RaftKVError:
            pass
    return out


def test_split_moves_the_upper_half_and_every_reader_follows(make_cluster):
    cluster = make_cluster(shards=2)
    with Client(cluster.seeds) as db:
        rows = {i * 1000: b"v%d" % i for i in range(3000)}
        db.put_many(rows.items())
        before = db.shard_map()
        reply = split(cluster, "s0000")
        left, right = reply["shards"]
        assert left["id"] == "s0000" and left["generation"] == 2 and right["generation"] == 1
        assert 0 < right["start"] == left["end"] < 3000 * 1000  # near the median: data on both sides
        assert right["id"] not in {s.id for s in before.shards}
        # every node sees the new map (this client's cached one is stale: it must repair itself)
        wait_until(lambda: all(m["epoch"] == reply["epoch"] for m in maps(cluster)), 10, "the map everywhere")
        assert db.range_query(0, MAX_KEY) == sorted(rows.items())
        assert all(db.get(k) == v for k, v in random.Random(1).sample(sorted(rows.items()), 200))
        for k in (left["end"] - 1000, left["end"], left["end"] + 5):
            db.put(k, b"new")
            rows[k] = b"new"
        assert db.range_query(0, MAX_KEY) == sorted(rows.items())
        assert db.shard_map().epoch == reply["epoch"]
        # each replica of both sides holds exactly its half, and says so
        below = sum(1 for k in rows if k < right["start"])
        for node in cluster.info.nodes:
            groups = {g["id"]: g for g in rpc.call(cluster.address(node.id), "status")["groups"]}
            wait_until(lambda n=node: {g["id"]: g for g in rpc.call(cluster.address(n.id), "status")["groups"]}
                       [right["id"]]["keys"] == len(rows) - below, 10, "the new shard's rows on every replica")
            assert groups["s0000"]["keys"] == below and groups["s0000"]["generation"] == 2


def test_split_retries_are_idempotent_and_bad_split_keys_are_refused(make_cluster):
    cluster = make_cluster(shards=1)
    with Client(cluster.seeds) as db:
        db.put_many((k, b"x") for k in range(100))
        first = split(cluster, "s0000", at=50)
        again = split(cluster, "s0000", at=50)  # a retry after a lost reply
        assert again["shards"] == first["shards"] and again["epoch"] == first["epoch"]

        def ask(**fields):
            return rpc.call(cluster.address(cluster.leader_of("s0000")), "split", timeout=15.0, shard="s0000",
                            **fields)

        with pytest.raises(errors.InvalidArgument, match="strictly inside"):
            ask(at=70)
        with pytest.raises(errors.InvalidArgument, match="strictly inside"):
            ask(at=0)
        with pytest.raises(errors.InvalidKey):
            ask(at=-1)
        split(cluster, "s0000", at=1)
        with pytest.raises(errors.InvalidArgument, match="fewer than 2 keys"):
            ask(at=None)
        assert db.range_query(0, MAX_KEY) == [(k, b"x") for k in range(100)]
        assert len(db.shard_map().shards) == 3


def test_nodes_without_a_meta_replica_follow_the_map_and_route(make_cluster):
    cluster = make_cluster(shards=2, nodes=5)
    ids = [n.id for n in cluster.info.nodes]
    outsiders = [n for n in ids if n not in meta_replicas(ids)]
    assert len(outsiders) == 2
    first = split(cluster, "s0000", at=1 << 40)
    second = split(cluster, first["shards"][1]["id"], at=1 << 50)

    def epoch_at(node_id: str) -> int:
        return rpc.call(cluster.address(node_id), "map", timeout=2.0)["map"]["epoch"]

    for node_id in outsiders:
        # that map or a later one: the mover may be balancing replicas over the five nodes meanwhile
        wait_until(lambda n=node_id: epoch_at(n) >= second["epoch"], 5.0, f"{node_id} to see the new map")
    # a client that knows only a node without a meta replica finds every shard
    with Client(cluster.address(outsiders[0])) as db:
        keys = [5, (1 << 40) + 1, (1 << 50) + 7, 1 << 63, MAX_KEY]
        db.put_many((k, b"k%d" % k) for k in keys)
        assert db.range_query(0, MAX_KEY) == [(k, b"k%d" % k) for k in keys]
        assert len(db.shard_map().shards) == 4


@pytest.mark.slow
@pytest.mark.parametrize("victim", ["follower", "leader", "every node"])
def test_kill_9_in_the_middle_of_a_split_loses_nothing(make_cluster, victim):
    cluster = make_cluster(shards=1)
    with Appenders(cluster.seeds, 3, lambda lane, i: [((lane + 1 << 32) + i, b"w%d" % i)]) as writers:
        acked = writers.acked
        wait_until(lambda: len(acked) > 300, 60, "writes before the split")
        leader = cluster.leader_of("s0000")
        result: list = []
        splitter = threading.Thread(target=lambda: result.append(_try_split(cluster, leader)))
        splitter.start()
        time.sleep(random.Random(victim).uniform(0.0, 0.05))
        if victim == "every node":
            for node in cluster.info.nodes:
                cluster.kill(node.id)
            cluster.restart_all()
        else:
            target = leader if victim == "leader" else next(n.id for n in cluster.info.nodes if n.id != leader)
            cluster.kill(target)
            time.sleep(1.0)
            cluster.restart(target)
        splitter.join(timeout=60)
        wait_until(lambda: len(acked) > 0 and _one_epoch(cluster), 30, "one map on every node")
        split(cluster, "s0000", at=(2 << 32))  # splitting still works after the crash
        n = len(acked)
        wait_until(lambda: len(acked) > n + 100, 60, "writes after the crash")
    got = assert_none_lost(cluster.seeds, acked)
    with Client(cluster.seeds, timeout=30.0) as fresh:
        shards = fresh.shard_map().shards
        assert len(shards) >= 2
        # every replica of every shard holds exactly the rows the map gives its shard
        wait_until(lambda: _replicas_agree(cluster, shards, got), 30, "replicas agreeing with the map")


def _try_split(cluster, leader: str) -> Any:
    try:
        return rpc.call(cluster.address(leader), "split", timeout=10.0, shard="s0000", at=None)
    except errors.RaftKVError as exc:
        return exc


def _one_epoch(cluster) -> bool:
    found = maps(cluster)
    return len(found) == len(cluster.info.nodes) and len({m["epoch"] for m in found}) == 1


def _replicas_agree(cluster, shards, rows: dict[int, bytes]) -> bool:
    for node in cluster.info.nodes:
        groups = {g["id"]: g for g in rpc.call(cluster.address(node.id), "status", timeout=5.0)["groups"]}
        for s in shards:
            if node.id not in s.replicas:
                continue
            g = groups.get(s.id)
            expected = sum(1 for k in rows if s.start <= k < s.end)
            if g is None or g.get("keys") != expected or g.get("generation") != s.generation:
                return False
    return True


@pytest.mark.slow
def test_a_replica_that_missed_a_split_learns_it_from_snapshots(make_cluster):
    cluster = make_cluster(shards=1, raft={"compact_entries": 100})
    leader = cluster.leader_of("s0000")
    away = next(n.id for n in cluster.info.nodes if n.id != leader)
    cluster.kill(away)
    with Client(cluster.seeds, timeout=30.0) as db:
        rows = {k * 7: b"r%d" % k for k in range(1000)}
        db.put_many(rows.items())
        reply = split(cluster, "s0000")
        child = reply["shards"][1]["id"]
        for k in range(1000, 1400):  # both sides move on; their logs are compacted past the split
            db.put(k * 7, b"r%d" % k)
            rows[k * 7] = b"r%d" % k
        for node in cluster.info.nodes:
            if node.id != away:
                for sid in ("s0000", child):
                    rpc.call(cluster.address(node.id), "compact", shard=sid)
        cluster.restart(away)

        def caught_up() -> bool:
            groups = {g["id"]: g for g in rpc.call(cluster.address(away), "status")["groups"]}
            return child in groups and groups[child].get("keys") == sum(1 for k in rows if k >= reply["shards"][1]["start"])

        wait_until(caught_up, 60, f"{away} to hold {child}'s rows")
        # with another replica down, the one that missed the split is needed for every quorum
        other = next(n.id for n in cluster.info.nodes if n.id not in (away, cluster.leader_of(child)))
        cluster.kill(other)
        assert db.range_query(0, MAX_KEY) == sorted(rows.items())
        db.put(13, b"after")
        assert db.get(13) == b"after"


def test_reads_racing_splits_never_miss_a_row(make_cluster):
    """A read that passed the bounds check, then waited for its ReadIndex round while a split moved
    its row away, used to answer None (the fault lab found it). Rows here are written once and never
    deleted, so every read must find its row."""
    cluster = make_cluster(shards=1)
    keys = list(range(0, 4000, 10))
    with Client(cluster.seeds) as db:
        db.put_many((k, b"r%d" % k) for k in keys)
        stop = threading.Event()
        wrong: list = []

        def reader(seed: int) -> None:
            rnd = random.Random(seed)
            with Client(cluster.seeds) as mine:
                while not stop.is_set():
                    k = rnd.choice(keys)
                    got = mine.get(k)
                    if got != b"r%d" % k:
                        wrong.append((k, got))
                    lo = rnd.choice(keys)
                    page = mine.range_query(lo, lo + 200)
                    if [k for k, _ in page] != [k for k in keys if lo <= k <= lo + 200]:
                        wrong.append(("scan", lo, len(page)))

        threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
        for t in threads:
            t.start()
        try:
            shard = "s0000"
            for at in range(3900, 0, -200):  # each split moves the upper part away from s0000
                split(cluster, shard, at=at + 5)
        finally:
            stop.set()
            for t in threads:
                t.join(timeout=60)
        assert not wrong, f"{len(wrong)} reads missed rows, e.g. {wrong[:5]}"


@pytest.mark.slow
def test_a_shard_busy_with_writes_splits_on_load_and_its_halves_lead_apart(make_cluster):
    # 1 shard, and a threshold a few writers on loopback exceed many times over
    cluster = make_cluster(shards=1, settings={"load_split_per_s": 40, "split_bytes": 64 << 20})
    rng = random.Random(7)
    with Client(cluster.seeds) as db:
        db.put_many((rng.getrandbits(64), b"p") for _ in range(2000))  # enough keys to split
    lanes = [random.Random(lane) for lane in range(4)]

    def one_put(lane: int, i: int) -> list[tuple[int, bytes]]:
        return [(lanes[lane].getrandbits(64), b"u")]  # uniform keys: no tail to stripe

    with Appenders(cluster.seeds, 4, one_put) as writers:
        def ranges() -> list[dict]:
            current = max(maps(cluster), key=lambda m: m["epoch"])
            return [s for s in current["shards"] if s["id"] != "meta"]

        wait_until(lambda: len(ranges()) >= 2, 90, "a split on load")
        shards = ranges()
        assert not any(s.get("stripe") for s in shards), "uniform writes must not be striped"
        # the halves cover the key space between them, cut near the middle of the writes
        assert sorted((s["start"], s["end"]) for s in shards)[0][0] == 0
        assert sum(1 for s in shards if s["end"] is None) == 1  # the wire's "to the end of the key space"
        cut = sorted(s["start"] for s in shards)[1]
        assert 2**62 < cut < 3 * 2**62, f"a uniform load's middle is near 2**63, got {cut}"

        def leaders() -> set[str]:
            return {cluster.leader_of(s["id"]) for s in ranges()[:2]}

        # the point of the split: the balancer hands one half to another node
        wait_until(lambda: len(leaders()) == 2, 60, "the halves led by different nodes")
        acked = writers.acked
    assert_none_lost(cluster.seeds, acked)


def test_writes_a_follower_refuses_do_not_count_as_its_load(make_cluster):
    """A follower answers misrouted puts with NotLeader and counts none of them: counted, they read
    as load once leadership moved to it, and shards at half the threshold split (12 uniform shards
    became 19 at 4,096 puts in flight on 6 nodes)."""
    cluster = make_cluster(shards=2, settings={"load_split_per_s": 40, "split_bytes": 64 << 20})
    with Client(cluster.seeds) as db:
        shard = db.shard_map().shards[0]

    def writes_per_s(node: str) -> float:
        st = rpc.call(cluster.address(node), "status", timeout=10)
        return next(g["writes_per_s"] for g in st["groups"] if g["id"] == shard.id)

    def refused_by(node: str) -> int:
        refused = 0
        for i in range(200):
            try:
                rpc.call(cluster.address(node), "put", timeout=10, shard=shard.id, pairs=[[shard.start + i, b"m"]])
            except errors.NotLeader:
                refused += 1
        return refused

    # the balancer may hand the shard to the node we picked meanwhile: then it rightly counted
    # what it took as the leader, and another node that never led it is asked instead
    asked: set[str] = set()
    for _ in range(2):
        leader = cluster.leader_of(shard.id)
        follower = next(n.id for n in cluster.info.nodes if n.id not in asked | {leader})
        asked.add(follower)
        if refused_by(follower) == 200:
            break
    else:
        pytest.fail("leadership kept moving to the node written to")
    assert writes_per_s(follower) == 0.0
    # the leader counts what it takes (the same status field, so the check above can fail)
    with Client(cluster.seeds) as db:
        for i in range(50):
            db.put(shard.start + i, b"routed")
    assert max(writes_per_s(n.id) for n in cluster.info.nodes) > 0.0

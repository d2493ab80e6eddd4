"""Fault scenarios with real processes and real signals: kill -9, SIGSTOP, restarts.

Marked slow: run alone with ``pytest -m slow``; CI runs them with everything else.
"""

import signal
import threading
import time

import pytest

from raftkv import Client, errors
from raftkv.client import rpc
from raftkv.keys import MAX_KEY

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


class Writer:
    """Threads writing increasing keys into one shard; remembers exactly which writes were acknowledged."""

    def __init__(self, db, base: int, threads: int = 4) -> None:
        self.db = db
        self.base = base
        self.acked: dict[int, bytes] = {}
        self.ack_times: list[float] = []
        self.failures = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(t, threads)) for t in range(threads)]

    def _run(self, t: int, n: int) -> None:
        i = t
        while not self._stop.is_set():
            key = self.base + i
            value = b"w%d" % i
            try:
                self.db.put(key, value)
            except errors.Unavailable:
                with self._lock:
                    self.failures += 1
                continue  # retry the same key: its outcome is unknown, a retry makes it known
            with self._lock:
                self.acked[key] = value
                self.ack_times.append(time.monotonic())
            i += n

    def __enter__(self):
        for th in self._threads:
            th.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        for th in self._threads:
            th.join(timeout=60)

    def acked_after(self, t: float) -> int:
        with self._lock:
            return sum(1 for x in self.ack_times if x > t)


def _check_all_present(db, acked):
    got = dict(db.range_query(min(acked), max(acked)))
    missing = [k for k in acked if got.get(k) != acked[k]]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"


def test_kill_leader_under_write_load(cluster):
    with Client(cluster.seeds, timeout=20) as db:
        shard = db.shard_map().shards[2]
        leader = cluster.leader_of(shard.id)
        with Writer(db, shard.start) as w:
            time.sleep(1.5)
            before = len(w.acked)
            assert before > 20
            t_kill = time.monotonic()
            cluster.kill(leader, signal.SIGKILL)
            new_leader = cluster.leader_of(shard.id, exclude=leader)
            assert new_leader != leader
            deadline = time.monotonic() + 30
            while w.acked_after(t_kill + 0.01) < 50:  # writes resume after the election
                assert time.monotonic() < deadline, "writes did not resume after the leader was killed"
                time.sleep(0.1)
        _check_all_present(db, w.acked)
        # the killed node restarts and catches up
        cluster.restart(leader)
        addr = cluster.address(leader)
        target = max(g["commit"] for g in rpc.call(cluster.address(new_leader), "status")["groups"]
                     if g["id"] == shard.id)
        deadline = time.monotonic() + 60
        while True:
            st = rpc.call(addr, "status")
            g = next(g for g in st["groups"] if g["id"] == shard.id)
            if g["applied"] >= target:
                break
            assert time.monotonic() < deadline, f"restarted node stuck at {g}"
            time.sleep(0.2)
        sample = list(w.acked.items())[-200:]
        for k, v in sample:  # its own local copy (serializable read, straight to that node) has them
            assert rpc.call(addr, "get", shard=shard.id, key=k, consistency="serializable") == v


def test_kill_every_node_at_once_then_restart(cluster):
    with Client(cluster.seeds, timeout=5) as db:
        smap = db.shard_map()
        with Writer(db, smap.shards[5].start, threads=3) as w1, Writer(db, smap.shards[0].start, threads=3) as w0:
            time.sleep(2.0)
            for node in cluster.info.nodes:  # as close to simultaneous as signals get
                cluster.kill(node.id, signal.SIGKILL)
            time.sleep(0.5)
        acked = {**w0.acked, **w1.acked}
        assert len(acked) > 50
    cluster.restart_all()
    with Client(cluster.seeds, timeout=30) as db:
        _check_all_present(db, w0.acked)
        _check_all_present(db, w1.acked)
        # and the cluster takes writes again, everywhere
        db.put(MAX_KEY, b"after")
        db.put(0, b"after")
        assert db.get(MAX_KEY) == b"after" and db.get(0) == b"after"


def test_isolated_old_leader_never_serves_a_stale_read(cluster):
    """Trap: pysyncobj has no ReadIndex, and an isolated leader believes it leads for a while."""
    with Client(cluster.seeds, timeout=20) as db:
        shard = db.shard_map().shards[1]
        key = shard.start + 7
        db.put(key, b"old")
        old = cluster.leader_of(shard.id)
        cluster.kill(old, signal.SIGSTOP)  # frozen: it still thinks it leads when it wakes
        try:
            new = cluster.leader_of(shard.id, exclude=old)
            db.put(key, b"new")
        finally:
            cluster.kill(old, signal.SIGCONT)
        stale_answers = []
        deadline = time.monotonic() + 3
        while time.monotonic() < deadline:  # hammer the old leader right after it wakes up
            try:
                value = rpc.call(cluster.address(old), "get", shard=shard.id, key=key, timeout=5)
            except errors.Unavailable:
                continue  # NotLeader / timeout: the correct refusals
            if value != b"new":
                stale_answers.append(value)
        assert stale_answers == []
        assert new != old
        assert db.get(key) == b"new"


def test_no_quorum_fails_within_the_deadline_and_recovers(cluster):
    """Trap: pysyncobj never times out a callback on a leader that lost its followers."""
    with Client(cluster.seeds, timeout=3) as db:
        shard = db.shard_map().shards[3]
        leader = cluster.leader_of(shard.id)
        followers = [n.id for n in cluster.info.nodes if n.id != leader]
        for f in followers:
            cluster.kill(f, signal.SIGSTOP)
        try:
            t0 = time.monotonic()
            with pytest.raises(errors.Unavailable):
                db.put(shard.start + 1, b"x")
            assert time.monotonic() - t0 < 15  # bounded by the client deadline, never a hang
            with pytest.raises(errors.Unavailable):
                db.get(shard.start + 1)
        finally:
            for f in followers:
                cluster.kill(f, signal.SIGCONT)
    with Client(cluster.seeds, timeout=30) as db:
        db.put(shard.start + 2, b"back")
        assert db.get(shard.start + 2) == b"back"


def test_replica_down_while_log_compacted_catches_up_by_snapshot(make_cluster):
    cluster = make_cluster(raft={"compact_entries": 200})
    with Client(cluster.seeds, timeout=20) as db:
        shard = db.shard_map().shards[6]
        leader = cluster.leader_of(shard.id)
        victim = next(n.id for n in cluster.info.nodes if n.id != leader)
        cluster.kill(victim, signal.SIGKILL)
        expected = {}
        for i in range(1500):
            k = shard.start + i * 3
            db.put(k, b"s%d" % i)
            expected[k] = b"s%d" % i
        for n in cluster.info.nodes:
            if n.id != victim:
                rpc.call(cluster.address(n.id), "compact", shard=shard.id)
        time.sleep(1.0)
        cluster.restart(victim)
        addr = cluster.address(victim)
        deadline = time.monotonic() + 60
        while True:
            g = next(g for g in rpc.call(addr, "status")["groups"] if g["id"] == shard.id)
            if g["snapshots_installed"] >= 1 and g["applied"] >= 1500:
                break
            assert time.monotonic() < deadline, f"no snapshot catch-up: {g}"
            time.sleep(0.2)
        for k, v in list(expected.items())[::50]:
            assert rpc.call(addr, "get", shard=shard.id, key=k, consistency="serializable") == v

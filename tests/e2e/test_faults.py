"""Fault scenarios with real processes and real signals: kill -9, SIGSTOP, restarts.

Marked slow: run alone with ``pytest -m slow``; CI runs them with everything else.
"""

import glob
import os
import signal
import socket
import threading
import time
from typing import Any

import pytest

from raftkv import Client, errors
from raftkv.client import rpc
from raftkv.keys import MAX_KEY
from raftkv.protocol.codec import NEED_DATA, FrameDecoder, encode
from raftkv.storage.leveldb import NodeStore

from ..helpers import wait_until

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


def _group_status(address: str, shard_id: str) -> dict[str, Any]:
    """One node's own view of its replica of ``shard_id``."""
    return next(g for g in rpc.call(address, "status")["groups"] if g["id"] == shard_id)


def _check_all_present(db, acked):
    got = dict(db.range_query(min(acked), max(acked)))
    missing = [k for k in acked if got.get(k) != acked[k]]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"


def test_kill_leader_under_write_load(cluster):
    with Client(cluster.seeds, timeout=20) as db:
        shard = db.shard_map().shards[2]
        leader = cluster.leader_of(shard.id)
        with Writer(db, shard.start) as w:
            wait_until(lambda: len(w.acked) > 20, 60, "20 acknowledged writes before the kill")
            t_kill = time.monotonic()
            cluster.kill(leader, signal.SIGKILL)
            new_leader = cluster.leader_of(shard.id, exclude=leader)
            assert new_leader != leader
            # writes resume after the election: 50 acknowledged after the kill, by the new leader
            wait_until(lambda: w.acked_after(t_kill + 0.01) >= 50, 60,
                       "50 acknowledged writes after the leader was killed", interval=0.1)
        _check_all_present(db, w.acked)
        # the killed node restarts and catches up
        cluster.restart(leader)
        addr = cluster.address(leader)
        target = _group_status(cluster.address(new_leader), shard.id)["commit"]
        wait_until(lambda: _group_status(addr, shard.id)["applied"] >= target, 120,
                   f"the restarted {leader} to apply {target}", interval=0.2)
        sample = list(w.acked.items())[-200:]
        for k, v in sample:  # its own local copy (serializable read, straight to that node) has them
            assert rpc.call(addr, "get", shard=shard.id, key=k, consistency="serializable") == v


def test_kill_every_node_at_once_then_restart(cluster):
    with Client(cluster.seeds, timeout=5) as db:
        smap = db.shard_map()
        with Writer(db, smap.shards[5].start, threads=3) as w1, Writer(db, smap.shards[0].start, threads=3) as w0:
            # both shards under write load when the power goes: enough acknowledged writes to lose
            wait_until(lambda: len(w0.acked) > 25 and len(w1.acked) > 25, 60,
                       "25 acknowledged writes in each shard before the kill")
            for node in cluster.info.nodes:  # as close to simultaneous as signals get
                cluster.kill(node.id, signal.SIGKILL)
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
    """Trap: pysyncobj has no ReadIndex, and an isolated leader believes it leads for a while.

    Every shard gets "old"; the leader of shard 1 is frozen; every shard gets "new" from the
    others.  When it wakes, the old leader's own store still says "old" everywhere (it missed
    every "new"), so any read it serves before it has caught up is stale.  We hammer it from the
    instant it wakes and keep going until it has *served* reads again (leader balancing hands it
    back its share of the groups, at least one of them a shard): a run where every call is
    refused proves nothing, so it fails instead of passing.
    """
    with Client(cluster.seeds, timeout=30) as db:
        shards = db.shard_map().shards
        keys = {s.id: s.start + 7 for s in shards}
        for key in keys.values():
            db.put(key, b"old")
        old = cluster.leader_of(shards[1].id)
        cluster.kill(old, signal.SIGSTOP)  # frozen: it still thinks it leads when it wakes
        try:
            new = cluster.leader_of(shards[1].id, exclude=old)
            for key in keys.values():
                db.put(key, b"new")
        finally:
            cluster.kill(old, signal.SIGCONT)
        woke = time.monotonic()
        served: list[str] = []
        stale: list[tuple[str, bytes | None]] = []

        def hammer() -> bool:
            for sid, key in keys.items():
                try:
                    value = rpc.call(cluster.address(old), "get", shard=sid, key=key, timeout=5)
                except errors.Unavailable:
                    continue  # NotLeader / timeout: the correct refusals
                if value == b"new":
                    served.append(sid)
                else:
                    stale.append((sid, value))
            # look for stale answers for a while after the wake-up, and until some read was served
            return bool(served) and time.monotonic() - woke > 3

        wait_until(hammer, 150, f"{old} (the old leader) to serve linearizable reads again", interval=0.01)
        assert stale == []
        assert served  # reads really reached the old leader's read path, and it answered
        assert new != old
        assert db.get(keys[shards[1].id]) == b"new"


def _raw_request(address: tuple[str, int], request: dict[str, Any]) -> dict[str, Any]:
    """Send one request frame to a node's client port and return its reply frame as it is."""
    with socket.create_connection(address, timeout=10) as sock:
        sock.sendall(encode(request))
        decoder = FrameDecoder()
        while (msg := decoder.next_message()) is NEED_DATA:
            data = sock.recv(1 << 16)
            assert data, "the node closed the connection without a reply"
            decoder.receive_data(data)
        return msg


def test_no_quorum_fails_within_the_deadline_and_recovers(cluster):
    """Trap: pysyncobj never times out a callback on a leader that lost its followers."""
    with Client(cluster.seeds, timeout=3) as db:
        shard = db.shard_map().shards[3]
        leader = cluster.leader_of(shard.id)
        followers = [n.id for n in cluster.info.nodes if n.id != leader]
        for f in followers:
            cluster.kill(f, signal.SIGSTOP)
        try:
            # the leader itself answers a put it cannot commit by the put's own deadline
            node = next(n for n in cluster.info.nodes if n.id == leader)
            t0 = time.monotonic()
            reply = _raw_request(node.client, {"id": 7, "op": "put", "shard": shard.id, "timeout": 0.5,
                                               "pairs": [[shard.start + 1, b"y"]]})
            assert 0.5 <= time.monotonic() - t0 < 3
            assert reply["id"] == 7 and reply["err"]["code"] == "timeout", reply
            assert "not acknowledged within 0.5s" in reply["err"]["message"]
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
        [store] = glob.glob(os.path.join(cluster.root, victim, "**", "store"), recursive=True)
        # the victim is dead (kill_node waits for its last thread): its LevelDB is free to read
        kv = wait_until(lambda: NodeStore(store), 10, "the victim's LevelDB lock", ignore=(errors.StorageError,))
        try:
            entries = kv.raft_log(shard.id).entries(flush=False)  # the log the victim loads when it restarts
        finally:
            kv.close()
        last = entries[-1][1] if entries else 0
        expected = {}
        for i in range(1500):
            k = shard.start + i * 3
            db.put(k, b"s%d" % i)
            expected[k] = b"s%d" % i
        live = [cluster.address(n.id) for n in cluster.info.nodes if n.id != victim]

        def no_log_reaches_back() -> dict[str, int]:
            # a log holds [first, last] with last >= commit, so first >= commit - entries + 1
            firsts = {}
            for addr in live:
                g = _group_status(addr, shard.id)
                firsts[addr] = g["commit"] - g["log_entries"] + 1
            if min(firsts.values()) > last:
                return firsts
            for addr in live:
                rpc.call(addr, "compact", shard=shard.id)
            raise AssertionError(f"logs start at or after {firsts}; the victim's log ends at {last}")

        # Every live replica compacted past the victim's last entry, and a log's start never moves
        # back: whichever node leads, the victim can catch up only by a snapshot.
        wait_until(no_log_reaches_back, 60, "every live replica to compact past the victim's log", interval=0.2)
        cluster.restart(victim)
        addr = cluster.address(victim)

        def caught_up_by_snapshot() -> dict[str, Any]:
            g = _group_status(addr, shard.id)
            assert g["snapshots_installed"] >= 1 and g["applied"] >= 1500, f"no snapshot catch-up yet: {g}"
            return g

        wait_until(caught_up_by_snapshot, 120, f"{victim} to catch up by snapshot", interval=0.2)
        for k, v in list(expected.items())[::50]:
            assert rpc.call(addr, "get", shard=shard.id, key=k, consistency="serializable") == v

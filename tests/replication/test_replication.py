"""Replication invariants, each tied to a pysyncobj trap it closes (see docs/design.md)."""

import os
import pickle
import random
import threading
import time

import pytest

from raftkv.replication import commands
from raftkv.replication.group import RaftOptions

from .harness import LocalCluster

pytestmark = pytest.mark.timeout(120)


def test_no_message_leaves_before_its_journal_is_synced(cluster):
    """Trap: pysyncobj acks (and counts its own copy) before anything is on disk.

    Invariant of the Raft loop: when replies and votes are released to the sockets, every
    journal of that node is clean (entries and term/vote fsynced).  Only leaders'
    AppendEntries may leave earlier, and nothing else travels in that early release.
    """
    violations: list[str] = []
    releases = [0]
    for nid, loop in cluster.loops.items():
        hub = loop.hub
        real_release, real_early = hub.release, hub.release_early

        def checked(loop=loop, real=real_release, nid=nid):
            dirty = [g.group_id for g in loop.groups.values() if g.journal.dirty]
            waiting = [m for ob in loop.hub._out.values() for m in ob.staged]
            if dirty and waiting:
                violations.append(f"{nid}: {dirty} dirty while {len(waiting)} replies leave")
            releases[0] += 1
            real()

        def checked_early(hub=hub, real=real_early, nid=nid):
            kinds = {m[1]["type"] for ob in hub._out.values() for m in ob.early}
            if kinds - {"append_entries"}:
                violations.append(f"{nid}: early release carried {kinds}")
            real()

        hub.release, hub.release_early = checked, checked_early
    for i in range(200):
        cluster.put(i, b"v%d" % i)
    cluster.assert_replicated({i: b"v%d" % i for i in range(200)})
    assert violations == []
    assert releases[0] > 200


def test_acknowledged_writes_are_in_a_majority_of_journals_on_disk(cluster):
    """Read the journal files back from disk (as a crash would) right after each ack."""
    for i in range(30):
        cmd = commands.put([(i, os.urandom(50))])
        cluster.write(cmd)
        holders = 0
        for nid in cluster.ids:
            path = os.path.join(cluster.root, nid, "g1", "raft.log")
            if cmd in open(path, "rb").read():
                holders += 1
        assert holders >= 2, f"write {i} acknowledged but on disk at only {holders} node(s)"


def test_lone_write_does_not_wait_for_the_heartbeat(tmp_path):
    """Trap: in batch mode pysyncobj sends new entries only at the next heartbeat.

    With a 1 s heartbeat, 20 sequential writes would need ~20 s if each waited;
    the loop sends new entries at once, so they finish far sooner.
    """
    opts = RaftOptions(heartbeat=1.0, election_min=3.2, election_max=4.0)
    c = LocalCluster(str(tmp_path), options=opts)
    try:
        c.leader(timeout=30)
        t0 = time.monotonic()
        for i in range(20):
            c.put(i, b"x")
        assert time.monotonic() - t0 < 10.0
    finally:
        c.close()


def test_large_random_binary_values_replicate(cluster):
    """Trap: pysyncobj's chunked pickle path corrupts binary entries from about 64 KiB up."""
    rng = random.Random(5)
    values = {k: rng.randbytes(1 << 20) for k in range(6)}
    for k, v in values.items():
        cluster.put(k, v)
    _, leader = cluster.leader()
    cluster.wait_applied(leader.store.applied_index)
    for nid in cluster.ids:
        assert dict(cluster.rows(nid)) == values


def test_pickled_and_membership_entries_are_never_unpickled(cluster, tmp_path):
    """Log entries are msgpack; a pickle (or a membership change) in the log is inert."""
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    _, leader = cluster.leader()
    before = leader.store.applied_index
    assert leader._SyncObj__doApplyCommand(b"\x02" + pickle.dumps(("add", "n9", "n9"))) is None
    assert leader._SyncObj__doApplyCommand(b"\x03" + pickle.dumps(7)) is None
    reply = leader._SyncObj__doApplyCommand(b"\x00" + pickle.dumps(Evil()))
    assert "error" in reply and not marker.exists()
    assert leader.store.applied_index > before  # the regular (bad) entry still counts as applied
    assert not leader.conf.dynamicMembershipChange
    assert leader.peer_ids == [n for n in cluster.ids if n != leader.transport.hub.self_id]


def test_concurrent_writers_agree_with_a_model(cluster):
    model: dict[int, bytes] = {}
    lock = threading.Lock()

    def writer(t):
        rng = random.Random(t)
        for i in range(40):
            k = rng.randrange(50)
            v = b"%d-%d" % (t, i)
            # writes to one key from one thread are ordered, so the model's last write per key is the truth
            cluster.put(k * 8 + t, v)
            with lock:
                model[k * 8 + t] = v

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    _, leader = cluster.leader()
    cluster.wait_applied(leader.store.applied_index)
    for nid in cluster.ids:
        assert dict(cluster.rows(nid)) == model


def test_replica_down_during_compaction_catches_up_by_snapshot(tmp_path):
    """A follower that missed entries the others compacted away receives a streamed snapshot."""
    opts = RaftOptions(heartbeat=0.05, election_min=0.4, election_max=0.8, compact_entries=50,
                       snapshot_chunk=16 * 1024)
    c = LocalCluster(str(tmp_path), options=opts)
    try:
        for i in range(20):
            c.put(i, b"early")
        leader_id, _ = c.leader()
        victim = next(n for n in c.ids if n != leader_id)
        c.stop_node(victim)
        rng = random.Random(9)
        expected = {i: b"early" for i in range(20)}
        for _ in range(300):
            k = rng.randrange(2**64)
            v = rng.randbytes(200)
            c.put(k, v)
            expected[k] = v
        _, leader = c.leader()
        deadline = time.monotonic() + 20
        while leader.journal[0][1] <= 25:  # wait until the leader's log no longer reaches back
            assert time.monotonic() < deadline, "leader never compacted"
            c.put(0, b"early")
            time.sleep(0.05)
        c.start_node(victim)
        c.wait_applied(leader.store.applied_index, nodes=[victim])
        g = c.loops[victim].groups["g1"]
        assert g.serializer.installs >= 1
        assert dict(c.rows(victim)) == expected
        # and it keeps replicating normally afterwards
        c.put(12345, b"after")
        _, leader = c.leader()
        c.wait_applied(leader.store.applied_index, nodes=[victim])
        assert dict(c.rows(victim))[12345] == b"after"
    finally:
        c.close()


def test_log_is_bounded_by_bytes(tmp_path):
    """Trap: the whole log sits in RAM until compaction, which pysyncobj triggers by entry count only."""
    opts = RaftOptions(heartbeat=0.05, election_min=0.4, election_max=0.8, compact_entries=10**6,
                       compact_bytes=2 << 20)
    c = LocalCluster(str(tmp_path), options=opts)
    try:
        for i in range(40):
            c.put(i, os.urandom(256 * 1024))  # 10 MiB in all
        time.sleep(1.0)
        for loop in c.loops.values():
            assert loop.groups["g1"].journal.size_bytes < 5 << 20
    finally:
        c.close()


def test_crash_between_compaction_marker_and_log_truncation_loses_nothing(tmp_path):
    """Every node crashes after writing its compaction marker but before dropping the log prefix.

    pysyncobj then finds a log that does not start at the marker and clears the whole log; the
    new leader reuses indexes the stores already applied, and new acknowledged writes vanish.
    """
    import msgpack

    from raftkv.replication.journal import DurableJournal

    c = LocalCluster(str(tmp_path))
    expected = {}
    try:
        for i in range(30):
            c.put(i, b"a%d" % i)
            expected[i] = b"a%d" % i
        c.assert_replicated(expected)
    finally:
        c.close()
    for nid in c.ids:  # the state a crash inside compaction leaves behind, on every node
        d = tmp_path / nid / "g1"
        j = DurableJournal(str(d / "raft.log"))
        prev, last = j[len(j) - 12], j[len(j) - 11]
        j._destroy()
        (d / "snap.meta").write_bytes(msgpack.packb({"last": list(last), "prev": list(prev)}))
    c = LocalCluster(str(tmp_path))  # the same directories, restarted
    try:
        for i in range(30, 40):
            c.put(i, b"b%d" % i)
            expected[i] = b"b%d" % i
        c.assert_replicated(expected)
    finally:
        c.close()


def test_follower_commits_only_what_the_message_proved():
    """Commit index = min(leaderCommit, last new entry): a kept suffix beyond the message is unproven."""
    from pysyncobj.node import Node

    from raftkv.replication.group import GroupTransport

    class Hub:
        def send(self, *a):
            return True

    t = GroupTransport(Hub(), "g1", None, Node("n1"), [Node("n2")])
    seen = []
    t.setOnMessageReceivedCallback(lambda node, msg: seen.append(msg))
    t.deliver("n2", {"type": "append_entries", "term": 3, "prevLogIdx": 9, "prevLogTerm": 3,
                     "entries": [(b"\x00x", 10, 3)], "commit_index": 12})
    t.deliver("n2", {"type": "append_entries", "term": 3, "prevLogIdx": 9, "prevLogTerm": 3, "commit_index": 12})
    t.deliver("n2", {"type": "append_entries", "term": 3, "prevLogIdx": 20, "prevLogTerm": 3, "commit_index": 12})
    assert [m["commit_index"] for m in seen] == [10, 9, 12]

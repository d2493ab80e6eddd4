"""Leader leases: reads served without a round trip, and never by a leader that was cut off."""

import threading
import time

import pytest

from raftkv.replication import commands

from ..helpers import wait_until

pytestmark = pytest.mark.timeout(120)


def _on_loop(cluster, nid, fn):
    """``fn()`` run on ``nid``'s Raft thread (group state belongs to it); its result."""
    box, done = [], threading.Event()
    cluster.loops[nid].call_soon(lambda: (box.append(fn()), done.set()))
    assert done.wait(10)
    return box[0]


def _read(cluster, nid, gid="g1", timeout=1.0):
    """A linearizable read barrier on ``nid``: None when it may serve, else the error."""
    box, done = [], threading.Event()
    cluster.loops[nid].read_index(gid, lambda err: (box.append(err), done.set()), timeout)
    assert done.wait(timeout + 10)
    return box[0]


def _isolate(cluster, nid, gid="g1"):
    """Cut ``nid`` off from its peers for this group, both ways (messages are lost)."""
    cluster.loops[nid].groups[gid].transport.send = lambda node, message: True
    for other, loop in cluster.loops.items():
        t = loop.groups[gid].transport
        real = t.deliver
        if other == nid:
            t.deliver = lambda peer, message: None
        else:
            t.deliver = lambda peer, message, real=real: None if peer == nid else real(peer, message)


def test_a_leader_serves_reads_under_its_lease_without_a_round_trip(cluster):
    cluster.put(1, b"v")
    nid, g = cluster.leader()
    wait_until(lambda: _on_loop(cluster, nid, g.lease_valid), 10, "the leader's lease")
    followers = [n for n in cluster.ids if n != nid]
    assert not any(_on_loop(cluster, f, cluster.loops[f].groups["g1"].lease_valid) for f in followers)
    # reads answered while the lease holds send nothing: compare AppendEntries sent
    served = 0
    for _ in range(20):
        before = _on_loop(cluster, nid, lambda: (g.transport.seq, g.lease_valid()))
        assert _read(cluster, nid) is None
        after = _on_loop(cluster, nid, lambda: (g.transport.seq, g.lease_valid()))
        if before[1] and after[1] and after[0] == before[0]:
            served += 1
    assert served > 0, "no read was served on the lease alone"


def test_a_cut_off_leader_never_serves_a_read_once_another_leader_has_written(cluster):
    """The isolated-leader case the lease must survive: the old leader keeps running (no pause,
    its clock goes on) and believes it leads until it notices it lost its majority; the others
    elect a leader and commit a write.  Reads hammer the old leader from the moment it is cut
    off: some are served on the lease alone (nothing reaches it any more), and none after the
    new leader's write was acknowledged."""
    cluster.put(1, b"old")
    old, g = cluster.leader()
    wait_until(lambda: _on_loop(cluster, old, g.lease_valid), 10, "the leader's lease")
    served: list[float] = []
    published: list[float] = []
    stop = threading.Event()

    def hammer() -> None:
        while not stop.is_set():
            done = threading.Event()

            def answered(err, done=done):
                if err is None:
                    served.append(time.monotonic())  # on the Raft thread, as the read is served
                done.set()

            cluster.loops[old].read_index("g1", answered, 0.2)
            done.wait(10)
            now = time.monotonic()  # the server's request threads read the published deadline
            if now < g.lease_until:
                published.append(now)

    # pysyncobj's leader steps down once it has not heard a majority for election_min, which
    # alone would hide a lease that outlives its bound: keep the old leader believing it leads
    g._SyncObj__conf.leaderFallbackTimeout = 3600.0
    _isolate(cluster, old)
    cut = time.monotonic()
    reader = threading.Thread(target=hammer)
    reader.start()
    try:
        def new_leader():
            for nid in cluster.ids:
                if nid != old and cluster.loops[nid].groups["g1"].leader_ready:
                    return nid
            return None

        new = wait_until(new_leader, 30, "a leader among the others")
        ng = cluster.loops[new].groups["g1"]
        done = threading.Event()
        ng.submit(commands.put([(1, b"new")]), lambda res, err: done.set() if err == 0 else None)
        cluster.loops[new].poke("g1")
        assert done.wait(30), "the new leader's write was not committed"
        committed = time.monotonic()
        time.sleep(0.5)  # keep reading at the old leader a while after the write
    finally:
        stop.set()
        reader.join(30)
    assert _on_loop(cluster, old, lambda: g.is_leader), "the old leader stepped down: the lease went untested"
    assert [t for t in served if t >= committed] == []
    assert [t for t in published if t >= committed] == []
    assert [t for t in served if t > cut], "the cut-off leader served nothing on its lease"
    assert [t for t in published if t > cut], "its published lease was never seen valid"


def _cut(cluster, a, b, gid="g1"):
    """Lose every message between ``a`` and ``b`` (both ways); the other links stay."""
    for me, peer in ((a, b), (b, a)):
        t = cluster.loops[me].groups[gid].transport
        real_send, real_deliver = t.send, t.deliver
        t.send = lambda node, message, real=real_send, peer=peer: True if node.id == peer else real(node, message)
        t.deliver = lambda p, message, real=real_deliver, peer=peer: None if p == peer else real(p, message)


def test_a_node_cut_off_from_the_leader_alone_cannot_unseat_it(cluster):
    """Stickiness, on which the lease rests: a follower that cannot hear the leader asks for votes
    (pre-vote) again and again, and the other follower, which still hears the leader, refuses.
    Without it the cut-off node would win while the old leader's lease still holds."""
    cluster.put(1, b"v")
    leader, g = cluster.leader()
    cut_off, other = [n for n in cluster.ids if n != leader]
    cg = cluster.loops[cut_off].groups["g1"]
    _cut(cluster, leader, cut_off)
    start_term = _on_loop(cluster, leader, lambda: g.term)
    wait_until(lambda: _on_loop(cluster, cut_off, lambda: cg._prevote is not None), 30, f"{cut_off} asking for votes")
    for i in range(20):  # the leader goes on committing through the other follower, term unchanged
        cluster.put(100 + i, b"w")
        assert _on_loop(cluster, leader, lambda: (g.is_leader, g.term)) == (True, start_term)
    assert _on_loop(cluster, cut_off, lambda: cg.term) == start_term  # asked, never granted: no new term

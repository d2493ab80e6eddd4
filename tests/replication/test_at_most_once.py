"""A command takes effect at most once: no forwarding by deposed leaders, retries deduplicated.

Deterministic: the interleavings that the fault lab found by pausing leaders are driven here
step by step on real Raft loops (real sockets, LevelDB and fsyncs), not hoped for.
"""

import threading

import pytest

from raftkv.replication import commands
from raftkv.replication.group import FAIL_REASON

from .harness import LocalCluster

pytestmark = pytest.mark.timeout(120)


def _submit(group, loop, command: bytes) -> tuple[threading.Event, list]:
    done, box = threading.Event(), []
    group.submit(command, lambda res, err: (box.append((res, err)), done.set()))
    loop.poke(group.group_id)
    return done, box


def test_a_command_queued_at_a_replica_that_does_not_lead_is_failed_not_forwarded(cluster):
    """pysyncobj forwards a follower's queued commands to the leader.  A leader that was paused
    with requests in its queue wakes up as a follower and would forward them: committed again,
    after the writes its clients made on retrying.  Now the command fails with NOT_LEADER."""
    leader_id, _ = cluster.leader()
    follower_id = next(n for n in cluster.ids if n != leader_id)
    follower = cluster.loops[follower_id].groups["g1"]
    assert follower.leader_id == leader_id  # a follower that knows the leader: pysyncobj would forward
    done, box = _submit(follower, cluster.loops[follower_id], commands.put([(1, b"queued at a follower")]))
    assert done.wait(10), "the command got no answer"
    assert box == [(None, FAIL_REASON.NOT_LEADER)]
    cluster.put(2, b"marker")  # everything committed before the marker is applied everywhere with it
    cluster.assert_replicated({2: b"marker"})


def test_a_paused_leaders_queued_write_never_lands_after_newer_writes(tmp_path):
    """The lab's anomaly, driven step by step: the leader's Raft thread is frozen (as by SIGSTOP)
    with a client's write in its queue; a new leader commits the client's retry and then a newer
    write; the old leader wakes up knowing the new leader.  The old copy must not land."""
    cluster = LocalCluster(str(tmp_path))
    try:
        old_id, old = cluster.leader()
        old_loop = cluster.loops[old_id]
        freeze, frozen, release = threading.Event(), threading.Event(), threading.Event()

        def pause_point() -> None:
            # End of an iteration: on waking, the thread reads the new leader's messages first and
            # only then ticks its queue -- the order that made pysyncobj forward the queued write.
            if freeze.is_set():
                frozen.set()
                release.wait(60)

        old_loop.after_iteration(pause_point)
        freeze.set()
        assert frozen.wait(10)
        session = [b"client-paused-01", 1, 1, 0]
        write = commands.put([(5, b"v1")], session)
        done, box = _submit(old, old_loop, write)  # accepted while it still believed it led
        # the others elect a leader among themselves; the frozen one still believes it leads, and
        # a write handed to it would wait for the thaw (60 s in half the runs, by dict order)
        others = frozenset({old_id})
        cluster.leader(timeout=30, exclude=others)
        assert cluster.write(write, exclude=others) is None  # the client's retry (same session number) commits here
        cluster.write(commands.put([(5, b"v2")], [b"client-other-001", 1, 1, 0]), exclude=others)  # a newer acked write
        freeze.clear()
        release.set()  # as SIGCONT: the new leader's heartbeats are waiting in its socket
        assert done.wait(15), "the queued write got no answer"
        assert box[0][1] != FAIL_REASON.SUCCESS
        cluster.put(6, b"marker")
        cluster.assert_replicated({5: b"v2", 6: b"marker"})
    finally:
        release.set()
        cluster.close()


def test_a_retry_of_a_committed_write_is_not_applied_again(cluster):
    """A client whose first attempt committed but whose reply was lost retries with the same
    session number; in between another client wrote a newer value, which must stay."""
    first = commands.put([(9, b"first")], [b"client-retry-001", 3, 3, 0])
    cluster.write(first)
    cluster.write(commands.put([(9, b"newer")], [b"client-retry-002", 1, 1, 0]))
    assert cluster.write(first) is None  # the retry gets the first application's reply ...
    cluster.put(10, b"marker")
    cluster.assert_replicated({9: b"newer", 10: b"marker"})  # ... and changes nothing

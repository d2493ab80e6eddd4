"""The durable journal: what pysyncobj's FileJournal got wrong, each with a test that catches it.

The journal stages its changes in the node's LevelDB (``NodeStore``); the Raft loop makes them
durable with ``flush_durable``.  "A crash" here is a journal reopened after the staged, unflushed
writes are dropped: exactly what a process killed before the flush leaves.
"""

import os

import pytest

from raftkv.errors import StorageError
from raftkv.protocol.codec import pack
from raftkv.replication.journal import DurableJournal, encode_record
from raftkv.storage.leveldb import NodeStore

pytestmark = pytest.mark.timeout(30)


@pytest.fixture
def kv(tmp_path):
    node = NodeStore(str(tmp_path / "store"))
    yield node
    node.close()


def _fill(j, n, term=1):
    for i in range(1, n + 1):
        j.add(b"c%d" % i, i, term)


def _after_crash(kv, name="g"):
    """The journal a restart would load now: whatever was staged but not flushed is lost."""
    kv._pending.clear()
    return DurableJournal(kv.raft_log(name))


def test_nothing_is_durable_before_the_flush_and_everything_after(kv):
    j = DurableJournal(kv.raft_log("g"))
    _fill(j, 5)
    j.setCurrentTerm(3, "n2")
    assert j.dirty
    j.sync()  # staged for the node's flush: the Raft loop decides when it hits the disk
    assert not j.dirty
    assert kv.raft_log("g").entries(flush=False) == []
    assert kv.flush_durable() == 6  # five entries and the term/vote record, in one synced write
    again = _after_crash(kv)
    assert [e[1] for e in again[:]] == [1, 2, 3, 4, 5]
    assert (again.getCurrentTerm(), again.getVotedForNodeId()) == (3, "n2")


def test_one_flush_makes_every_group_durable(kv):
    journals = [DurableJournal(kv.raft_log(f"g{i}")) for i in range(20)]
    for n, j in enumerate(journals, 1):
        _fill(j, n)
        j.setCurrentTerm(n, "me")
        j.sync()
    assert kv.flush_durable() == sum(range(1, 21)) + 20
    for n in range(1, 21):
        again = _after_crash(kv, f"g{n - 1}")
        assert len(again) == n and again.getCurrentTerm() == n


def test_a_crash_before_the_flush_loses_only_what_no_one_heard_of(kv):
    j = DurableJournal(kv.raft_log("g"))
    _fill(j, 3)
    j.sync()
    kv.flush_durable()
    j.add(b"c4", 4, 1)
    j.setCurrentTerm(7, "n1")
    j.sync()  # staged, never flushed: no message that depends on it left the node
    again = _after_crash(kv)
    assert [e[1] for e in again[:]] == [1, 2, 3] and again.getCurrentTerm() == 0


def test_follower_keeps_a_matching_suffix(kv):
    """pysyncobj deletes every entry after prevLogIdx, even matching ones; we only cut on conflict."""
    j = DurableJournal(kv.raft_log("g"))
    _fill(j, 5)
    j.sync()
    # a re-sent AppendEntries(prev=2, entries=[3]): pysyncobj calls deleteEntriesFrom(2), then add(3)
    j.deleteEntriesFrom(2)
    j.add(b"c3", 3, 1)
    j.end_message()
    assert [e[1] for e in j[:]] == [1, 2, 3, 4, 5]
    assert not j.dirty
    # a real conflict at index 4 (term 2 replaces term 1) truncates from there
    j.deleteEntriesFrom(2)
    j.add(b"c3", 3, 1)
    j.add(b"new", 4, 2)
    j.end_message()
    j.sync()
    kv.flush_durable()
    assert _after_crash(kv)[:] == [(b"c1", 1, 1), (b"c2", 2, 1), (b"c3", 3, 1), (b"new", 4, 2)]


def test_compaction_survives_reopen(kv):
    j = DurableJournal(kv.raft_log("g"))
    _fill(j, 100)
    j.deleteEntriesTo(98)
    j.add(b"c101", 101, 1)
    j.sync()
    kv.flush_durable()
    assert [e[1] for e in _after_crash(kv)[:]] == [99, 100, 101]
    assert j.size_bytes == sum(len(e[0]) for e in j[:])
    j._check()


def test_truncate_of_written_entries_is_durable(kv):
    j = DurableJournal(kv.raft_log("g"))
    _fill(j, 5)
    j.sync()
    kv.flush_durable()
    j.deleteEntriesFrom(1)
    j.add(b"x", 2, 2)
    j.sync()
    kv.flush_durable()
    assert _after_crash(kv)[:] == [(b"c1", 1, 1), (b"x", 2, 2)]
    j = DurableJournal(kv.raft_log("g"))
    j.clear()
    j.sync()
    kv.flush_durable()
    assert len(_after_crash(kv)) == 0


def test_commit_hint_never_points_past_the_log(kv):
    """After a crash the lazily saved commit index may name entries that never reached the disk."""
    j = DurableJournal(kv.raft_log("g"))
    _fill(j, 3)
    j.sync()
    kv.flush_durable()
    j.setRaftCommitIndex(9)
    j.onOneSecondTimer()  # the hint is saved ...
    j.add(b"c4", 4, 1)  # ... entries 4.. were staged but the process died before the flush
    j.sync()
    assert _after_crash(kv).getRaftCommitIndex() == 3
    assert DurableJournal(kv.raft_log("empty")).getRaftCommitIndex() == 1


def test_a_term_that_cannot_be_stored_keeps_the_journal_dirty(kv):
    """The loop stops the node when a sync raises: nothing may be acknowledged on its strength."""
    j = DurableJournal(kv.raft_log("g"))
    _fill(j, 2)
    j.setCurrentTerm(2**64, None)
    with pytest.raises(Exception):  # noqa: B017 -- msgpack's OverflowError; any error will do
        j.sync()
    assert j.dirty


def test_term_vote_must_be_whole(kv):
    j = DurableJournal(kv.raft_log("g"))
    j.setCurrentTerm(4, "n3")
    j.sync()
    kv.flush_durable()
    kv.raft_db.put(b"rg", b"\xc1garbage")
    with pytest.raises(StorageError, match="term and vote"):
        DurableJournal(kv.raft_log("g"))  # a node that lost its vote must not start as if it never voted


def test_a_log_file_of_the_old_layout_moves_into_the_node_store(kv, tmp_path):
    path = str(tmp_path / "g" / "raft.log")
    os.makedirs(os.path.dirname(path))
    with open(path, "wb") as f:
        for i in range(1, 4):
            f.write(encode_record(b"c%d" % i, i, 2))
        f.write(encode_record(b"torn", 4, 2)[:-3])  # a write a crash cut short: not part of the log
    with open(path + ".meta", "wb") as f:
        f.write(pack({"term": 5, "vote": "n2"}))
    with open(path + ".commit", "wb") as f:
        f.write(b"2")
    j = DurableJournal(kv.raft_log("g"), legacy_path=path)
    assert j[:] == [(b"c1", 1, 2), (b"c2", 2, 2), (b"c3", 3, 2)]
    assert (j.getCurrentTerm(), j.getVotedForNodeId(), j.getRaftCommitIndex()) == (5, "n2", 2)
    assert not any(os.path.exists(path + s) for s in ("", ".meta", ".commit"))
    again = _after_crash(kv)  # moved durably
    assert again[:] == j[:] and again.getCurrentTerm() == 5

"""The durable journal: what pysyncobj's FileJournal got wrong, each with a test that catches it."""

import os

import pytest

from raftkv.replication.journal import DurableJournal, encode_record

pytestmark = pytest.mark.timeout(30)


def _fill(j, n, term=1):
    for i in range(1, n + 1):
        j.add(b"c%d" % i, i, term)


def test_nothing_is_written_before_sync_and_everything_after(tmp_path):
    path = str(tmp_path / "log")
    j = DurableJournal(path)
    _fill(j, 5)
    j.setCurrentTerm(3, "n2")
    assert j.dirty
    assert os.path.getsize(path) == 0  # staged only: the Raft loop decides when it hits the disk
    assert not os.path.exists(path + ".meta")
    j.sync()
    assert not j.dirty
    j2 = DurableJournal(path)  # a fresh reader (as after kill -9) sees everything synced
    assert [e[1] for e in j2[:]] == [1, 2, 3, 4, 5]
    assert (j2.getCurrentTerm(), j2.getVotedForNodeId()) == (3, "n2")


def test_sync_uses_fdatasync_and_fsyncs_meta(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(os, "fdatasync", lambda fd: calls.append("fdatasync"))
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append("fsync"), real_fsync(fd)))
    j = DurableJournal(str(tmp_path / "log"))
    _fill(j, 3)
    j.setCurrentTerm(1, None)
    j.sync()
    assert calls[0] == "fdatasync" and calls.count("fsync") >= 2  # meta file + its directory


def test_torn_tail_is_cut(tmp_path):
    path = str(tmp_path / "log")
    j = DurableJournal(path)
    _fill(j, 3)
    j.sync()
    with open(path, "ab") as f:
        f.write(encode_record(b"partial", 4, 1)[:-3])  # a write cut short by a crash
    j2 = DurableJournal(path)
    assert [e[1] for e in j2[:]] == [1, 2, 3]
    j2.add(b"c4", 4, 1)
    j2.sync()
    assert [e[1] for e in DurableJournal(path)[:]] == [1, 2, 3, 4]


def test_corrupt_record_ends_the_log(tmp_path):
    path = str(tmp_path / "log")
    j = DurableJournal(path)
    _fill(j, 3)
    j.sync()
    data = bytearray(open(path, "rb").read())
    data[-1] ^= 0xFF  # flip a bit in the last command
    open(path, "wb").write(bytes(data))
    assert [e[1] for e in DurableJournal(path)[:]] == [1, 2]


def test_follower_keeps_a_matching_suffix(tmp_path):
    """pysyncobj deletes every entry after prevLogIdx, even matching ones; we only cut on conflict."""
    path = str(tmp_path / "log")
    j = DurableJournal(path)
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
    assert DurableJournal(path)[:] == [(b"c1", 1, 1), (b"c2", 2, 1), (b"c3", 3, 1), (b"new", 4, 2)]


def test_compaction_rewrites_and_survives_reopen(tmp_path):
    path = str(tmp_path / "log")
    j = DurableJournal(path)
    _fill(j, 100)
    j.deleteEntriesTo(98)
    j.add(b"c101", 101, 1)
    j.sync()
    assert [e[1] for e in DurableJournal(path)[:]] == [99, 100, 101]
    assert j.size_bytes == sum(len(e[0]) for e in j[:])


def test_truncate_of_written_entries_is_durable(tmp_path):
    path = str(tmp_path / "log")
    j = DurableJournal(path)
    _fill(j, 5)
    j.sync()
    j.deleteEntriesFrom(1)
    j.add(b"x", 2, 2)
    j.sync()
    assert DurableJournal(path)[:] == [(b"c1", 1, 1), (b"x", 2, 2)]
    j.clear()
    j.sync()
    assert len(DurableJournal(path)) == 0


def test_commit_hint_never_points_past_the_log(tmp_path):
    """After a crash the lazily saved commit index may name entries that never reached the disk."""
    path = str(tmp_path / "log")
    j = DurableJournal(path)
    _fill(j, 3)
    j.sync()
    j.setRaftCommitIndex(9)
    j.onOneSecondTimer()  # the hint is saved ...
    j.add(b"c4", 4, 1)  # ... entries 4.. were staged but the process died before sync
    assert DurableJournal(path).getRaftCommitIndex() == 3
    assert DurableJournal(str(tmp_path / "empty")).getRaftCommitIndex() == 1


def test_failed_fsync_keeps_everything_staged(tmp_path, monkeypatch):
    """A failed write must not mark entries durable, nor leave a gap on disk later."""
    path = str(tmp_path / "log")
    j = DurableJournal(path)
    _fill(j, 2)
    j.sync()
    j.add(b"c3", 3, 1)
    real = os.fdatasync

    def broken(fd):
        raise OSError(5, "EIO")

    monkeypatch.setattr(os, "fdatasync", broken)
    with pytest.raises(OSError):
        j.sync()
    assert j.dirty  # nothing may be acknowledged on the strength of this sync
    monkeypatch.setattr(os, "fdatasync", real)
    j.add(b"c4", 4, 1)
    j.sync()
    assert [e[1] for e in DurableJournal(path)[:]] == [1, 2, 3, 4]


def test_term_vote_file_is_only_replaced_durably_and_must_be_whole(tmp_path):
    from raftkv.errors import StorageError

    path = str(tmp_path / "log")
    j = DurableJournal(path)
    _fill(j, 3)
    j.setCurrentTerm(4, "n3")
    j.sync()
    meta_before = open(path + ".meta", "rb").read()
    j.setRaftCommitIndex(3)
    j.onOneSecondTimer()  # the commit hint goes to its own file ...
    assert open(path + ".meta", "rb").read() == meta_before  # ... never through the term/vote file
    again = DurableJournal(path)
    assert (again.getCurrentTerm(), again.getVotedForNodeId(), again.getRaftCommitIndex()) == (4, "n3", 3)
    open(path + ".meta", "wb").write(b"\xc1garbage")
    with pytest.raises(StorageError):
        DurableJournal(path)  # a node that lost its vote must not start as if it never voted

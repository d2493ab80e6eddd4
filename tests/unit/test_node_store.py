"""A node's LevelDBs: replicas as keyspaces of the state one, their generations, purging, crash
repair; Raft logs in the other one, and their move there from the state one.

Real LevelDB files throughout.  What a crash leaves is made by writing exactly what the
interrupted step would have written, then closing and reopening the database.
"""

from __future__ import annotations

import os
import shutil

import plyvel
import pytest

from raftkv.errors import StorageError
from raftkv.replication.journal import DurableJournal
from raftkv.storage import leveldb
from raftkv.storage.leveldb import NodeStore, ShardStore, migrate_legacy

pytestmark = pytest.mark.timeout(60)

TOP = 2**64


def _all(store: ShardStore) -> list[tuple[int, bytes]]:
    return store.scan(0, TOP, limit=10**6, max_bytes=1 << 40)[0]


def _keys_of(node: NodeStore, name: str) -> int:
    """Every key the database holds for replica ``name``, in any generation."""
    it = node.db.iterator(prefix=b"g" + name.encode() + b"/", include_value=False)
    try:
        return sum(1 for _ in it)
    finally:
        it.close()


@pytest.fixture
def node(tmp_path):
    n = NodeStore(str(tmp_path / "store"))
    yield n
    n.close()


def test_replicas_share_one_database_and_never_see_each_other(node):
    a, b, ab = node.replica("s0001"), node.replica("s0002"), node.replica("s00012")  # a name prefixing another
    a.apply(1, puts=[(k, b"a") for k in range(0, 100)], system={b"sess": b"A"})
    b.apply(1, puts=[(k, b"b") for k in range(50, 150)])
    ab.apply(5, puts=[(TOP - 1, b"ab")])
    assert [k for k, _ in _all(a)] == list(range(100)) and {v for _, v in _all(a)} == {b"a"}
    assert [k for k, _ in _all(b)] == list(range(50, 150))
    assert _all(ab) == [(TOP - 1, b"ab")]
    assert b.get_system(b"sess") is None and a.get_system(b"sess") == b"A"
    assert (a.applied_index, b.applied_index, ab.applied_index) == (1, 1, 5)
    assert a.scan(90, TOP, reverse=True, limit=3)[0] == [(99, b"a"), (98, b"a"), (97, b"a")]
    assert a.key_span(0, TOP) == (0, 99) and ab.key_span(0, TOP) == (TOP - 1, TOP - 1)
    view = b.open_view()
    blob, values, resume = view.scan_raw(0, TOP, limit=2)
    assert blob == b"k" + (50).to_bytes(8, "big") + b"k" + (51).to_bytes(8, "big") and resume == 52
    view.close()
    for s in (a, b, ab):
        s._check()
        s.close()
    assert sorted(node.names()) == ["s0001", "s00012", "s0002"]


def test_one_open_per_replica_and_a_bad_name_is_refused(node):
    a = node.replica("s0001")
    with pytest.raises(StorageError, match="already open"):
        node.replica("s0001")
    with pytest.raises(StorageError, match="is open"):
        node.drop("s0001")
    for bad in ("", "a/b", "x" * 201):
        with pytest.raises(StorageError, match="bad replica name"):
            node.replica(bad)
    a.close()
    node.replica("s0001").close()  # released on close


def test_install_replaces_one_replica_and_purges_its_old_generation(node):
    a, b = node.replica("s0001"), node.replica("s0002")
    a.apply(1, puts=[(k, b"old") for k in range(1000)])
    b.apply(1, puts=[(k, b"b") for k in range(10)])
    src = node.replica("src")
    src.apply(9, puts=[(k, b"new") for k in range(500, 600)])
    index, items = src.snapshot_items()
    before = a.generation
    a.install(items, index)
    assert a.generation > before and a.applied_index == 9
    assert _all(a) == [(k, b"new") for k in range(500, 600)]
    assert node.wait_purged()
    assert _keys_of(node, "s0001") == 100 + 1  # the rows and the applied index: nothing old
    assert _all(b) == [(k, b"b") for k in range(10)]  # the neighbour is untouched
    for s in (a, b, src):
        s._check()
        s.close()


def test_a_crash_in_the_middle_of_an_install_leaves_the_old_state_and_no_garbage(tmp_path):
    path = str(tmp_path / "store")
    node = NodeStore(path)
    a = node.replica("s0001")
    a.apply(3, puts=[(k, b"old") for k in range(20)])
    gen = a.generation
    # what an install writes before its final switch: the next generation's rows, no pointer
    half = leveldb._prefix(b"s0001", gen + 1)
    for k in range(5):
        node.db.put(half + b"k" + k.to_bytes(8, "big"), b"half")
    a.close()
    node.close()  # the crash

    node = NodeStore(path)
    try:
        a = node.replica("s0001")
        assert a.generation == gen and a.applied_index == 3 and _all(a) == [(k, b"old") for k in range(20)]
        assert node.wait_purged()
        assert _keys_of(node, "s0001") == 20 + 1
        a._check()
        a.close()
    finally:
        node.close()


def test_a_dropped_replica_is_forgotten_and_a_new_one_of_that_name_starts_empty(tmp_path):
    path = str(tmp_path / "store")
    node = NodeStore(path)
    a = node.replica("s0004")
    a.apply(2, puts=[(k, b"x") for k in range(12_000)])  # more than one purge batch
    a.close()
    node.drop("s0004")
    assert node.names() == []
    again = node.replica("s0004")  # while the purge may still run: a newer generation, empty
    assert _all(again) == [] and again.applied_index == 0
    again.apply(1, puts=[(1, b"new")])
    assert node.wait_purged()
    assert _all(again) == [(1, b"new")]
    again.close()
    node.drop("s0004")
    node.close()  # a crash before the purge ran: it resumes when the database opens

    node = NodeStore(path)
    try:
        assert node.wait_purged() and _keys_of(node, "s0004") == 0 and node.names() == []
    finally:
        node.close()


def test_a_replica_in_its_own_leveldb_moves_into_the_node_store(tmp_path):
    # the layout before one database per node: <dir>/CURRENT names <dir>/db-<gen>
    old = tmp_path / "groups" / "s0002" / "store"
    os.makedirs(old / "db-3")
    db = plyvel.DB(str(old / "db-3"), create_if_missing=True)
    db.put(b"sapplied", (41).to_bytes(8, "big"))
    for k in range(30):
        db.put(b"k" + k.to_bytes(8, "big"), b"v%d" % k)
    db.put(b"sshard", b"bounds")
    db.close()
    (old / "CURRENT").write_bytes(b"3")

    node = NodeStore(str(tmp_path / "store"))
    try:
        s = node.replica("s0002")
        assert migrate_legacy(s, str(old)) is True
        assert not old.exists()
        assert s.applied_index == 41 and s.get_system(b"hard") is None and s.get_system(b"shard") == b"bounds"
        assert _all(s) == [(k, b"v%d" % k) for k in range(30)]
        assert migrate_legacy(s, str(old)) is False  # nothing left to move
        s._check()
        s.close()
    finally:
        node.close()


def test_a_store_of_its_own_keeps_the_path_api(tmp_path):
    path = str(tmp_path / "s")
    s = ShardStore(path)
    s.apply(1, puts=[(7, b"seven")])
    s.close()
    s = ShardStore(path)
    try:
        assert s.get(7) == b"seven" and s.path == os.path.realpath(path)
        with pytest.raises(StorageError):
            ShardStore(path)
    finally:
        s.close()


def _raft_keys(db: plyvel.DB) -> dict[bytes, bytes]:
    """Every Raft-log, term/vote and commit-hint key in ``db``."""
    out = {}
    for prefix in (b"j", b"m", b"r"):
        it = db.iterator(prefix=prefix)
        try:
            out.update(it)
        finally:
            it.close()
    return out


def _old_layout(tmp_path, crash: str) -> tuple[str, dict[bytes, bytes], dict[bytes, bytes]]:
    """A node store as the layout before the Raft database left it (logs in the state database),
    or as a move of it that a crash cut short (``crash``): its path, its Raft keys, its rows."""
    path = str(tmp_path / "store")
    node = NodeStore(path)
    for n, name in enumerate(("s0001", "s0002")):
        j = DurableJournal(node.raft_log(name))
        for i in range(1, 3001):  # more than one move batch
            j.add(b"cmd %d" % i, i, 1 + n)
        j.setCurrentTerm(1 + n, "n2")
        j.sync()
        node.raft_log(name).set_commit_hint(2500)
        node.replica(name).apply(7, puts=[(k, b"row") for k in range(100)])
    node.close()
    raft = plyvel.DB(path + leveldb.RAFT_SUFFIX)
    keys = _raft_keys(raft)
    raft.close()
    state = plyvel.DB(path)
    with state.write_batch() as wb:
        for k, v in keys.items():
            wb.put(k, v)
    if crash == "deleting":  # the copies were synced, and some originals deleted
        for k in sorted(keys)[:1000]:
            state.delete(k)
    state.close()
    shutil.rmtree(path + leveldb.RAFT_SUFFIX)
    if crash == "copying":  # part of the keys copied
        raft = plyvel.DB(path + leveldb.RAFT_SUFFIX, create_if_missing=True)
        for k in sorted(keys)[::3]:
            raft.put(k, keys[k])
        raft.close()
    elif crash == "deleting":
        raft = plyvel.DB(path + leveldb.RAFT_SUFFIX, create_if_missing=True)
        for k, v in keys.items():
            raft.put(k, v)
        raft.close()
    return path, keys, {k: b"row" for k in range(100)}


@pytest.mark.parametrize("crash", ["none", "copying", "deleting"])
def test_raft_logs_kept_in_the_state_database_move_to_the_raft_database(tmp_path, crash):
    path, keys, rows = _old_layout(tmp_path, crash)
    assert len(keys) == 2 * (3000 + 2)
    node = NodeStore(path)
    try:
        assert _raft_keys(node.db) == {} and _raft_keys(node.raft_db) == keys
        for n, name in enumerate(("s0001", "s0002")):
            j = DurableJournal(node.raft_log(name))
            assert [e[1] for e in j[:]] == list(range(1, 3001)) and j[-1][0] == b"cmd 3000"
            assert (j.getCurrentTerm(), j.getVotedForNodeId()) == (1 + n, "n2")
            assert node.raft_log(name).commit_hint() == 2500
            s = node.replica(name)
            assert dict(_all(s)) == rows and s.applied_index == 7
            s._check()
            s.close()
    finally:
        node.close()
    node = NodeStore(path)  # moved once: a second open finds nothing to move and changes nothing
    try:
        assert _raft_keys(node.db) == {} and _raft_keys(node.raft_db) == keys
    finally:
        node.close()


def _voted_replica(node: NodeStore, name: str) -> None:
    """A replica ``name`` on ``node`` with a durable log entry, term and vote, and commit hint."""
    j = DurableJournal(node.raft_log(name))
    j.add(b"x", 1, 4)
    j.setCurrentTerm(4, "n2")
    j.sync()
    node.flush_durable()
    node.raft_log(name).set_commit_hint(1)
    node.replica(name).close()


def test_a_dropped_replica_leaves_nothing_in_either_database(tmp_path):
    path = str(tmp_path / "store")
    node = NodeStore(path)
    _voted_replica(node, "s0003")
    node.replica("s0004").close()
    assert len(_raft_keys(node.raft_db)) == 3
    node.drop("s0003")
    try:
        assert _raft_keys(node.raft_db) == {} and node.names() == ["s0004"]
    finally:
        node.close()


def test_a_lost_raft_database_is_refused_not_started_empty(tmp_path):
    path = str(tmp_path / "store")
    node = NodeStore(path)
    _voted_replica(node, "s0005")
    node.close()
    shutil.rmtree(path + leveldb.RAFT_SUFFIX)  # deleted, or a backup that copied the state database alone
    with pytest.raises(StorageError, match="Raft terms, votes and logs are gone"):
        NodeStore(path)
    assert not os.path.exists(path + leveldb.RAFT_SUFFIX)  # nothing made in its place
    NodeStore(path + "-new").close()  # a new node's first open makes both
    assert os.path.isdir(path + "-new" + leveldb.RAFT_SUFFIX)

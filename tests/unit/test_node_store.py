"""One LevelDB per node: replicas as keyspaces of it, their generations, purging, crash repair.

Real LevelDB files throughout.  What a crash leaves is made by writing exactly what the
interrupted step would have written, then closing and reopening the database.
"""

from __future__ import annotations

import os

import plyvel
import pytest

from raftkv.errors import StorageError
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

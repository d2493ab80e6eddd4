"""Splits and the meta group's records through ``commands.apply``, on real LevelDB stores.

A split is one entry in the parent shard's log: the parent keeps ``[start, at)`` with the next
generation, and a child replica built from the parent's rows and client sessions takes
``[at, end)``.  The node's side of that (``SplitHooks``) is played by :class:`Node`, which
builds the child's ``ShardStore`` for real from ``parent.raw_items`` -- only the node's
directory layout is simplified.  Then: writes routed before the split and applied after it are
refused on the wrong side; a refused split changes nothing; a replayed index is a no-op; the
meta group stores shard records by compare-and-set, allocates shard numbers, and migrates a
legacy whole-map blob on its first record change.
"""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import msgpack
import pytest

from raftkv.replication import commands, sessions
from raftkv.routing import records
from raftkv.routing.shardmap import Shard, ShardMap, initial_map, shard_name
from raftkv.routing.stripes import stripe_of
from raftkv.storage.leveldb import SYSTEM, ShardStore

pytestmark = pytest.mark.timeout(60)

TOP = 2**64
REPS = ("n1", "n2", "n3")
CID = b"client-a-0123456"  # 16 bytes, like a client's session id
COPIED = (sessions.PREFIX, sessions.REPLIES, sessions.BY_TIME)  # what a split copies besides rows
CHILD_START = 3  # a child's log starts as if compacted here (as the node does it)
PARENT = Shard("s0001", 1000, 5000, REPS)


def sess(seq: int, low: int = 1, now_ms: int = 1_000) -> list[Any]:
    """A session field: ``low`` 1 means the client still awaits every reply since its first write."""
    return [CID, seq, low, now_ms]


class Node:
    """SplitHooks with a real child store: ``<root>/<id>/store``, built from the parent's rows and sessions."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.stores: dict[str, ShardStore] = {}
        self.prepared: list[tuple[str, int]] = []
        self.opened: list[str] = []

    def prepare_child(self, child: Shard, parent: ShardStore, index: int) -> None:
        self.prepared.append((child.id, index))
        if child.id in self.stores:
            return  # this node holds a replica of it already
        store = ShardStore(str(self.root / child.id / "store"))
        state = (SYSTEM + commands.SHARD_KEY, commands.ShardState(child).encode())
        store.install(itertools.chain([state], parent.raw_items((child.start, child.end), COPIED)), CHILD_START)
        self.stores[child.id] = store

    def open_child(self, child: Shard) -> None:
        assert child.id in self.stores
        self.opened.append(child.id)

    def close(self) -> None:
        for s in self.stores.values():
            s.close()


class Log:
    """Feeds commands to ``commands.apply`` at consecutive indexes, as a replica's apply loop does."""

    def __init__(self, store: ShardStore, hooks: Node | None = None) -> None:
        self.store = store
        self.hooks = hooks
        self.index = store.applied_index

    def apply(self, command: bytes) -> Any:
        self.index += 1
        return commands.apply(self.store, self.index, command[1:], self.hooks)


def raw_state(store: ShardStore) -> dict[bytes, bytes]:
    """Every stored pair but the applied index."""
    return dict(store.snapshot_items()[1])


def rows(store: ShardStore) -> dict[int, bytes]:
    found, resume = store.scan(0, TOP, limit=1 << 20, max_bytes=1 << 40)
    assert resume is None
    return dict(found)


@pytest.fixture
def node(tmp_path):
    n = Node(tmp_path / "node")
    yield n
    n.close()


@pytest.fixture
def parent(tmp_path):
    store = ShardStore(str(tmp_path / PARENT.id / "store"))
    commands.init_shard_state(store, PARENT)
    yield store
    store.close()


DATA = {k: f"v{k}".encode() for k in [1000, 1001, 1500, 2999, 3000, 3001, 4000, 4998, 4999,
                                         *range(1003, 4990, 37)]}


def load(log: Log) -> None:
    items = sorted(DATA.items())
    for n in range(0, len(items), 20):
        assert log.apply(commands.put(items[n:n + 20])) is None


# --- the split itself -------------------------------------------------------------------------

def test_split_hands_the_keys_at_or_above_at_to_the_child(tmp_path, node):
    path = str(tmp_path / PARENT.id / "store")
    parent = ShardStore(path)
    try:
        commands.init_shard_state(parent, PARENT)
        log = Log(parent, node)
        load(log)
        reply = log.apply(commands.split(3000, "s0002", 1))
        left, child = Shard("s0001", 1000, 3000, REPS, 2), Shard("s0002", 3000, 5000, REPS, 1)
        assert reply == {"shards": [left.to_dict(), child.to_dict()]}
        kid = node.stores["s0002"]
        assert rows(parent) == {k: v for k, v in DATA.items() if k < 3000}
        assert rows(kid) == {k: v for k, v in DATA.items() if k >= 3000}
        assert commands.shard_state(parent) == commands.ShardState(left, (child,))
        assert commands.shard_state(kid) == commands.ShardState(child)
        assert node.prepared == [("s0002", log.index)] and node.opened == ["s0002"]
        assert parent.applied_index == log.index and kid.applied_index == CHILD_START
        parent._check()
        kid._check()
    finally:
        parent.close()

    # durable: a reopened parent knows its new bounds
    parent = ShardStore(path)
    try:
        assert commands.shard_state(parent) == commands.ShardState(left, (child,))
        assert rows(parent) == {k: v for k, v in DATA.items() if k < 3000}
        # and splits again, at its new generation; the children accumulate
        reply = Log(parent, node).apply(commands.split(2000, "s0003", 2))
        left2, child2 = Shard("s0001", 1000, 2000, REPS, 3), Shard("s0003", 2000, 3000, REPS)
        assert reply == {"shards": [left2.to_dict(), child2.to_dict()]}
        assert commands.shard_state(parent) == commands.ShardState(left2, (child, child2))
        assert rows(node.stores["s0003"]) == {k: v for k, v in DATA.items() if 2000 <= k < 3000}
        assert rows(parent) == {k: v for k, v in DATA.items() if k < 2000}
    finally:
        parent.close()
    # the child splits too, from its own log
    reply = Log(kid, node).apply(commands.split(4000, "s0004", 1))
    assert reply["shards"] == [Shard("s0002", 3000, 4000, REPS, 2).to_dict(),
                               Shard("s0004", 4000, 5000, REPS).to_dict()]
    assert rows(node.stores["s0004"]) == {k: v for k, v in DATA.items() if k >= 4000}
    assert rows(kid) == {k: v for k, v in DATA.items() if 3000 <= k < 4000}


def test_sessions_travel_with_the_split(parent, node):
    log = Log(parent, node)
    assert log.apply(commands.put([(1500, b"a")], sess(1))) is None
    assert log.apply(commands.put([(3500, b"b"), (3600, b"c")], sess(2))) is None
    assert log.apply(commands.delete([3600, 3601], sess(3))) == 1
    log.apply(commands.split(3000, "s0002", 1))
    kid = node.stores["s0002"]
    klog = Log(kid, node)
    before = {"parent": rows(parent), "child": rows(kid)}
    assert before == {"parent": {1500: b"a"}, "child": {3500: b"b"}}
    # each number already applied is a duplicate on both sides: the first reply, and no effect
    for side, lg, key in (("parent", log, 1500), ("child", klog, 3500)):
        assert lg.apply(commands.put([(key, b"X")], sess(1))) is None
        assert lg.apply(commands.put([(key, b"X")], sess(2))) is None
        assert lg.apply(commands.delete([key], sess(3))) == 1
        assert rows(lg.store) == before[side], side
    # a new number applies
    assert klog.apply(commands.put([(3500, b"new")], sess(4))) is None
    assert kid.get(3500) == b"new"
    # the child's copy of the session goes on like any other: a number the client no longer
    # awaits, and does not remember, is refused
    assert klog.apply(commands.put([(3500, b"late")], sess(5, low=5))) is None
    reply = klog.apply(commands.put([(3500, b"older")], sess(4)))
    assert reply.get("outcome_unknown") is True and kid.get(3500) == b"late"


def test_writes_on_the_wrong_side_of_a_split_are_stale_and_change_nothing(parent, node):
    log = Log(parent, node)
    load(log)
    log.apply(commands.split(3000, "s0002", 1))
    kid = node.stores["s0002"]
    klog = Log(kid, node)
    for lg, cmds in (
        (log, [commands.put([(3000, b"x")]), commands.put([(1500, b"x"), (3500, b"x")]),
               commands.put([(4999, b"x")], sess(7)), commands.delete([3500]), commands.delete([1500, 3000]),
               commands.delete([999]), commands.put([(5000, b"x")]), commands.delete_range(2000, 4000),
               commands.delete_range(2000, None), commands.delete_range(0, 2000)]),
        (klog, [commands.put([(2999, b"x")]), commands.put([(3500, b"x"), (1500, b"x")]),
                commands.delete([2999]), commands.delete([5000]), commands.put([(TOP - 1, b"x")]),
                commands.delete_range(2000, 3500), commands.delete_range(3000, None)]),
    ):
        for cmd in cmds:
            before = raw_state(lg.store)
            reply = lg.apply(cmd)
            assert isinstance(reply, dict) and reply.get("stale") is True and reply["error"], reply
            assert raw_state(lg.store) == before
            assert lg.store.applied_index == lg.index  # recorded as applied all the same
    # the refused write with a session left no trace of it: the same number applies where it belongs
    assert klog.apply(commands.put([(4999, b"y")], sess(7))) is None
    assert kid.get(4999) == b"y"
    assert log.apply(commands.put([(1500, b"y")], sess(7))) is None
    assert parent.get(1500) == b"y"
    # in-bounds writes on both sides still work, up to the edges
    assert log.apply(commands.put([(2999, b"e"), (1000, b"e")])) is None
    first = sorted(rows(parent))
    assert log.apply(commands.delete_range(1000, 3000, max_keys=10)) == {"deleted": 10, "resume": first[10]}
    assert sorted(rows(parent)) == first[10:]
    assert klog.apply(commands.delete([3000, 4999])) == 2
    assert klog.apply(commands.delete_range(3000, 5000))["deleted"] > 0
    assert rows(kid) == {}


def test_writes_to_a_stripe_must_hash_to_it(tmp_path):
    store = ShardStore(str(tmp_path / "stripe"))
    try:
        commands.init_shard_state(store, Shard("s0005", 0, TOP, REPS, 1, (1, 4)))
        log = Log(store, Node(tmp_path))
        mine = [k for k in range(100) if stripe_of(k, 4) == 1]
        other = [k for k in range(100) if stripe_of(k, 4) != 1]
        assert log.apply(commands.put([(k, b"v") for k in mine])) is None
        before = raw_state(store)
        assert log.apply(commands.put([(mine[0], b"w"), (other[0], b"w")]))["stale"] is True
        assert log.apply(commands.delete([other[1]]))["stale"] is True
        assert log.apply(commands.split(50, "s0009", 1))["stale"] is True  # stripes are not split
        assert raw_state(store) == before
    finally:
        store.close()


@pytest.mark.parametrize("at, gen", [
    (3000, 0), (3000, 2), (3000, 7),  # not at the expected generation
    (1000, 1), (5000, 1), (999, 1), (5001, 1), (0, 1), (TOP - 1, 1),  # not strictly inside
])
def test_a_refused_split_changes_nothing(parent, node, at, gen):
    log = Log(parent, node)
    load(log)
    before = raw_state(parent)
    reply = log.apply(commands.split(at, "s0002", gen))
    assert reply["stale"] is True and reply["error"]
    assert raw_state(parent) == before and parent.applied_index == log.index
    assert commands.shard_state(parent) == commands.ShardState(PARENT)
    assert node.prepared == [] and node.opened == [] and not (node.root / "s0002").exists()


def test_a_split_needs_a_shard_and_hooks(tmp_path, parent, node):
    meta = ShardStore(str(tmp_path / "meta"))
    try:
        assert Log(meta, node).apply(commands.split(3000, "s0002", 1))["stale"] is True  # the meta group
    finally:
        meta.close()
    log = Log(parent)  # no hooks
    before = raw_state(parent)
    assert log.apply(commands.split(3000, "s0002", 1))["stale"] is True
    # a malformed split: refused by decoding, still recorded as applied
    log.hooks = node
    for bad in (["split", 3000, "x2", 1], ["split", 3000, "s0002"], ["split", -1, "s0002", 1],
                ["split", 3000, "s0002", "1"], ["split", 3000.5, "s0002", 1]):
        assert "error" in log.apply(commands.encode(bad))
    assert raw_state(parent) == before and parent.applied_index == log.index
    assert node.prepared == []


@pytest.mark.parametrize("new_id", ["s0001", "s0002"])
def test_a_split_to_an_id_the_shard_knows_is_refused(parent, node, new_id):
    log = Log(parent, node)
    load(log)
    log.apply(commands.split(4000, "s0002", 1))
    before = raw_state(parent)
    reply = log.apply(commands.split(3000, new_id, 2))
    assert isinstance(reply, dict) and "error" in reply
    assert raw_state(parent) == before


def test_replaying_an_applied_index_is_a_no_op(parent, node):
    log = Log(parent, node)
    load(log)
    cmd = commands.split(3000, "s0002", 1)
    log.apply(cmd)
    index, before = log.index, raw_state(parent)
    kid_before = raw_state(node.stores["s0002"])
    for payload in (cmd, commands.split(2000, "s0003", 2), commands.put([(1500, b"z")])):
        assert commands.apply(parent, index, payload[1:], node) is None
        assert commands.apply(parent, index - 1, payload[1:], node) is None
    assert raw_state(parent) == before and parent.applied_index == index
    assert node.prepared == [("s0002", index)] and node.opened == ["s0002"]
    assert raw_state(node.stores["s0002"]) == kid_before
    # the same split as a new entry (a second proposal): the generation moved, so it is refused
    assert log.apply(cmd)["stale"] is True
    assert raw_state(parent) == before and len(node.prepared) == 1


# --- the meta group -----------------------------------------------------------------------------

@pytest.fixture
def meta(tmp_path):
    store = ShardStore(str(tmp_path / "meta"))
    yield store
    store.close()


def record_names(store: ShardStore) -> list[bytes]:
    return store.system_names(commands.RECORD, commands.RECORD + b"\xff", 1 << 20)


def test_records_bootstrap_then_a_published_split(tmp_path, meta, parent, node):
    mlog = Log(meta)
    assert commands.stored_shard_map(meta) is None
    start = initial_map(["n1", "n2", "n3", "n4"], 8)
    assert mlog.apply(commands.change_records(records.initial_changes(start))) == {"epoch": 1}
    assert commands.stored_shard_map(meta) == start
    assert len(record_names(meta)) == 8
    # a second bootstrap (another leader's) loses, and changes nothing
    before = raw_state(meta)
    reply = mlog.apply(commands.change_records(records.initial_changes(start)))
    assert reply["conflict"] is True and reply["epoch"] == 1 and reply["error"]
    assert raw_state(meta) == before and meta.applied_index == mlog.index
    # numbers past every shard in use, increasing
    assert [mlog.apply(commands.allocate_ids(n)) for n in (1, 3, 1)] == [8, 9, 12]

    # a replica of s0003 splits (a real store), then publishes its catch-up
    s3 = start.shard_by_id("s0003")
    store = ShardStore(str(tmp_path / "s0003"))
    try:
        commands.init_shard_state(store, s3)
        slog = Log(store, node)
        assert slog.apply(commands.put([(s3.start + k, b"v") for k in range(10)])) is None
        new_id = shard_name(mlog.apply(commands.allocate_ids(1)))
        assert new_id == "s0013"
        at = s3.start + 5
        slog.apply(commands.split(at, new_id, 1))
        state = commands.shard_state(store)
        changes = records.catch_up(commands.stored_shard_map(meta), state.shard, state.children)
        assert mlog.apply(commands.change_records(changes)) == {"epoch": 2}
        truth = start.split("s0003", at, new_id)
        assert commands.stored_shard_map(meta) == truth
        assert records.catch_up(truth, state.shard, state.children) is None
        # the same publication again (a retry) is refused harmlessly
        assert mlog.apply(commands.change_records(changes))["conflict"] is True
        assert commands.stored_shard_map(meta) == truth
        # the child splits in its turn and publishes
        kid = node.stores[new_id]
        klog = Log(kid, node)
        new2 = shard_name(mlog.apply(commands.allocate_ids(1)))
        klog.apply(commands.split(at + 2, new2, 1))
        kstate = commands.shard_state(kid)
        kchanges = records.catch_up(commands.stored_shard_map(meta), kstate.shard, kstate.children)
        assert mlog.apply(commands.change_records(kchanges)) == {"epoch": 3}
        assert commands.stored_shard_map(meta) == truth.split(new_id, at + 2, new2)
        assert rows(kid) == {at + k: b"v" for k in range(2)}
    finally:
        store.close()
    # replaying an applied index changes nothing
    before = raw_state(meta)
    assert commands.apply(meta, mlog.index, commands.change_records(changes)[1:]) is None
    assert commands.apply(meta, mlog.index, commands.allocate_ids(1)[1:]) is None
    assert raw_state(meta) == before


def test_alloc_starts_past_the_ids_in_the_records(meta):
    mlog = Log(meta)
    shards = (Shard("s0003", 0, 10, REPS), Shard("s0042", 10, 20, REPS), Shard("legacy-a", 20, TOP, REPS))
    assert mlog.apply(commands.change_records(records.initial_changes(ShardMap(1, shards)))) == {"epoch": 1}
    assert mlog.apply(commands.allocate_ids(2)) == 43
    assert mlog.apply(commands.allocate_ids(1)) == 45
    for bad in (0, 1025, -1, "1"):
        before = raw_state(meta)
        assert "error" in mlog.apply(commands.encode(["alloc", bad]))
        assert raw_state(meta) == before
    assert mlog.apply(commands.allocate_ids(1024)) == 46
    assert mlog.apply(commands.allocate_ids(1)) == 1070


def test_alloc_before_bootstrap_never_hands_out_an_initial_id(meta):
    mlog = Log(meta)
    start = initial_map(["n1", "n2", "n3"], 8)
    first = mlog.apply(commands.allocate_ids(1))
    assert first.get("stale") and "not written yet" in first["error"]  # refused: the client retries
    mlog.apply(commands.change_records(records.initial_changes(start)))
    second = mlog.apply(commands.allocate_ids(1))
    assert start.shard_by_id(shard_name(second)) is None


def test_a_legacy_map_blob_is_read_and_migrated_by_the_first_record_change(meta):
    mlog = Log(meta)
    bounds = [0, 100, 2**63, 2**63 + 5, TOP]
    # a map written before splits existed: no generation, no stripe
    legacy = {"epoch": 3, "shards": [{"id": shard_name(i), "start": lo, "end": None if hi == TOP else hi,
                                      "replicas": list(REPS)} for i, (lo, hi) in enumerate(zip(bounds[:-1], bounds[1:], strict=True))]}
    assert mlog.apply(commands.set_map(legacy, 0)) == 3
    assert mlog.apply(commands.set_map({"epoch": 9, "shards": []}, 2)) == 3  # wrong expected epoch: unchanged
    assert commands.stored_map(meta) == legacy
    old = commands.stored_shard_map(meta)
    assert old == ShardMap.from_dict(legacy) and old.epoch == 3 and all(s.generation == 1 for s in old.shards)
    assert record_names(meta) == []
    # a change that loses its compare-and-set migrates nothing
    s1 = old.shard_by_id("s0001")
    wrong = [["s0001", 2, Shard("s0001", s1.start, s1.end, ("n9",), 3).to_dict()]]
    assert mlog.apply(commands.change_records(wrong))["epoch"] == 3
    assert record_names(meta) == [] and commands.stored_shard_map(meta) == old
    # the first accepted change writes every record, the untouched ones too, and the next epoch
    truth = old.split("s0001", 2**62, "s0004")
    left = truth.shard_by_id("s0001")
    changes = records.catch_up(old, left, [truth.shard_by_id("s0004")])
    assert mlog.apply(commands.change_records(changes)) == {"epoch": 4}
    assert len(record_names(meta)) == 5
    assert commands.stored_shard_map(meta) == truth
    stored = {n[len(commands.RECORD):].decode(): msgpack.unpackb(v, raw=False)
              for n, v in meta.system_items(commands.RECORD, commands.RECORD + b"\xff", 100)}
    assert stored["s0000"] == legacy["shards"][0]  # migrated as it was
    # from now on the records are the map, whatever the old blob says
    assert mlog.apply(commands.allocate_ids(1)) == 5
    s3 = truth.shard_by_id("s0003")
    moved = Shard("s0003", s3.start, s3.end, ("n4",), 2)
    assert mlog.apply(commands.change_records([["s0003", 1, moved.to_dict()]])) == {"epoch": 5}
    assert commands.stored_shard_map(meta) == truth.with_shards([moved], epoch=5)
    assert commands.stored_map(meta) == legacy


def test_a_malformed_record_change_is_recorded_as_applied(meta):
    bad = {**Shard("s0001", 0, TOP, REPS).to_dict(), "stripe": [0]}
    reply = commands.apply(meta, 1, commands.change_records([["s0001", 0, bad]])[1:])
    assert "error" in reply and meta.applied_index == 1


# --- striping: a range shard hands [at, end) to new, empty stripe groups ---------------------------


class Born(Node):
    """Also records which shards made empty the state machine asked the node to start."""

    def __init__(self, root: Path) -> None:
        super().__init__(root)
        self.born: list[str] = []

    def open_empty(self, shard: Shard) -> None:
        self.born.append(shard.id)


def _stripes(at: int, end: int, k: int = 3, first: int = 20) -> list[Shard]:
    return [Shard(shard_name(first + i), at, end, REPS, stripe=(i, k), born_empty=True) for i in range(k)]


def test_a_stripe_command_shrinks_the_shard_and_names_the_born_groups(parent, tmp_path):
    parent.apply(1, puts=[(1000, b"a"), (2000, b"b")])
    hooks = Born(tmp_path / "born")
    log = Log(parent, hooks)
    tail = Shard("s0030", 4000, 5000, REPS, born_empty=True)
    reply = log.apply(commands.stripe(3000, 4000, _stripes(3000, 4000), tail, 1))
    assert [s["id"] for s in reply["shards"]] == ["s0001", "s0020", "s0021", "s0022", "s0030"]
    state = commands.shard_state(parent)
    assert (state.shard.start, state.shard.end, state.shard.generation) == (1000, 3000, 2)
    assert [c.id for c in state.children] == ["s0020", "s0021", "s0022", "s0030"]
    assert hooks.born == ["s0020", "s0021", "s0022", "s0030"]
    assert rows(parent) == {1000: b"a", 2000: b"b"}  # nothing moved: the new groups start empty
    # keys of the striped segment are no longer this shard's
    refused = log.apply(commands.put([(3500, b"x")]))
    assert refused["stale"] and 3500 not in rows(parent)
    hooks.close()


@pytest.mark.parametrize("case", ["generation", "keys past at", "one key at at", "one stripe", "gap in stripes", "outside",
                                  "tail missing", "tail not needed", "taken id", "not born empty"])
def test_a_bad_stripe_command_is_refused_and_changes_nothing(parent, tmp_path, case):
    parent.apply(1, puts=[(1000, b"a"), (2000, b"b")])
    stripes, tail, at, end, gen = _stripes(3000, 4000), Shard("s0030", 4000, 5000, REPS, born_empty=True), 3000, 4000, 1
    if case == "generation":
        gen = 2
    elif case == "keys past at":
        at = 1500
        stripes = _stripes(1500, 4000)
    elif case == "one key at at":  # the segment's only key is its first (the fault lab's seed 26)
        at = 2000
        stripes = _stripes(2000, 4000)
    elif case == "one stripe":
        stripes = [Shard("s0020", 3000, 4000, REPS, stripe=(0, 1), born_empty=True)]
    elif case == "gap in stripes":
        stripes = [stripes[0], stripes[2]]
    elif case == "outside":
        end = 6000
        stripes = _stripes(3000, 6000)
    elif case == "tail missing":
        tail = None
    elif case == "tail not needed":
        end = 5000
        stripes = _stripes(3000, 5000)
    elif case == "taken id":
        stripes = [Shard("s0001", 3000, 4000, REPS, stripe=(0, 3), born_empty=True), *stripes[1:]]
    elif case == "not born empty":
        stripes = [Shard("s0020", 3000, 4000, REPS, stripe=(0, 3)), *stripes[1:]]
    before = raw_state(parent)
    hooks = Born(tmp_path / "born")
    reply = Log(parent, hooks).apply(commands.stripe(at, end, stripes, tail, gen))
    assert reply.get("stale") and reply["error"]
    assert raw_state(parent) == before and hooks.born == []
    hooks.close()

"""The meta group's shard records: compare-and-set changes (``apply_changes``), their wire check
(``check_changes``) and what a shard leader publishes to catch the map up (``catch_up``).

The last test is a seeded simulation: shards split on their own (the "truth"), their leaders
publish catch-ups computed against whatever map they saw, and the publications reach the meta
group late, out of order and twice.  Every map the records form on the way must be valid and
must never be ahead of the truth, and once the leaders keep publishing the map must become the
truth exactly.
"""

from __future__ import annotations

import copy
import random

import pytest

from raftkv.routing.records import apply_changes, catch_up, check_changes, initial_changes, map_of
from raftkv.routing.shardmap import Shard, ShardMap, initial_map, shard_name

pytestmark = pytest.mark.timeout(60)

TOP = 2**64
NODES = ["n1", "n2", "n3", "n4"]


def recs(m: ShardMap) -> dict[str, dict]:
    return {s.id: s.to_dict() for s in m.shards}


def commit(current: dict[str, dict], epoch: int, changes: list) -> tuple[dict[str, dict], int]:
    """What the meta group does with an accepted change: write (None deletes), bump the epoch."""
    writes, why = apply_changes(current, epoch, changes)
    assert why is None, why
    out = dict(current)
    for sid, r in writes.items():
        if r is None:
            out.pop(sid, None)
        else:
            out[sid] = r
    return out, epoch + 1


def refused(current: dict[str, dict], epoch: int, changes: list) -> str:
    before = copy.deepcopy(current)
    writes, why = apply_changes(current, epoch, changes)
    assert writes == {} and why is not None
    assert current == before  # never touched
    return why


BASE = initial_map(NODES, 4)


# --- apply_changes ---------------------------------------------------------------------------

def test_cas_per_record():
    cur = recs(BASE)
    s1 = BASE.shards[1]
    left = Shard(s1.id, s1.start, s1.start + 10, s1.replicas, 2)
    right = Shard("s0004", s1.start + 10, s1.end, s1.replicas)
    change = [[s1.id, 1, left.to_dict()], [right.id, 0, right.to_dict()]]
    writes, why = apply_changes(cur, 1, change)
    assert why is None and writes == {s1.id: left.to_dict(), right.id: right.to_dict()}
    # the same change with any one expectation wrong is refused as a whole
    assert "generation 1, not 2" in refused(cur, 1, [[s1.id, 2, left.to_dict()], change[1]])
    assert "generation 1, not 0" in refused(cur, 1, [[s1.id, 0, left.to_dict()], change[1]])
    assert "generation 0, not 1" in refused(cur, 1, [change[0], [right.id, 1, right.to_dict()]])
    # applied once, a second copy (a retry) is refused, harmlessly
    after, epoch = commit(cur, 1, change)
    assert epoch == 2
    refused(after, epoch, change)
    assert map_of(after.values(), epoch).shard_by_id(s1.id) == left


def test_records_without_generation_count_as_generation_1():
    legacy = {sid: {k: v for k, v in r.items() if k not in ("generation", "stripe")} for sid, r in recs(BASE).items()}
    s0 = BASE.shards[0]
    grown = Shard(s0.id, 0, s0.end, ("n9",), 2)
    writes, why = apply_changes(legacy, 7, [[s0.id, 1, grown.to_dict()]])
    assert why is None and writes == {s0.id: grown.to_dict()}
    refused(legacy, 7, [[s0.id, 0, grown.to_dict()]])


def test_epoch_is_the_callers_to_bump():
    cur = recs(BASE)
    s0 = BASE.shards[0]
    change = [[s0.id, 1, Shard(s0.id, 0, s0.end, ("n4",), 2).to_dict()]]
    for epoch in (0, 1, 41):
        writes, why = apply_changes(cur, epoch, change)
        assert why is None and set(writes) == {s0.id}  # the writes only: no epoch among them
    assert cur == recs(BASE)
    after, epoch = commit(cur, 41, change)
    assert map_of(after.values(), epoch).epoch == 42


@pytest.mark.parametrize("make", [
    pytest.param(lambda m: [[m.shards[1].id, 1, {**m.shards[1].to_dict(), "end": m.shards[1].end - 1,
                                                  "generation": 2}]], id="gap"),
    pytest.param(lambda m: [[m.shards[1].id, 1, {**m.shards[1].to_dict(), "end": m.shards[2].start + 1,
                                                  "generation": 2}]], id="overlap"),
    pytest.param(lambda m: [["s0009", 0, {**m.shards[1].to_dict(), "id": "s0009"}]], id="duplicate-range"),
    pytest.param(lambda m: [[m.shards[2].id, 1, None]], id="delete-leaves-gap"),
    pytest.param(lambda m: [[s.id, 1, None] for s in m.shards], id="delete-all"),
    pytest.param(lambda m: [[m.shards[3].id, 1, {**m.shards[3].to_dict(), "stripe": [0, 2], "generation": 2}]],
                 id="half-a-stripe-set"),
])
def test_a_change_that_would_break_the_map_is_refused(make):
    assert "would break the map" in refused(recs(BASE), 1, make(BASE))


def test_deleting_records():
    cur = recs(BASE)
    a, b = BASE.shards[1], BASE.shards[2]
    merged = Shard(a.id, a.start, b.end, a.replicas, 2)
    # a merge: the left grows, the right is deleted; both compare their generations
    refused(cur, 1, [[a.id, 1, merged.to_dict()], [b.id, 2, None]])
    after, epoch = commit(cur, 1, [[a.id, 1, merged.to_dict()], [b.id, 1, None]])
    assert b.id not in after and len(after) == 3
    assert map_of(after.values(), epoch).shard_for_key(b.start) == merged
    # deleting what is absent (expected 0) writes a deletion of nothing
    writes, why = apply_changes(after, epoch, [[b.id, 0, None]])
    assert why is None and writes == {b.id: None}
    # a deleted record is absent: it can be written again with expectation 0
    refused(after, epoch, [[b.id, 1, b.to_dict()]])


def test_a_striped_tail_is_written_whole_and_its_stripes_change_one_by_one():
    cur = recs(BASE)
    tail = BASE.shards[-1]
    t2 = tail.start + 1000
    stripes = [Shard(f"s{10 + i:04d}", t2, TOP, ("n1",), 1, (i, 3)) for i in range(3)]
    head = Shard(tail.id, tail.start, t2, tail.replicas, 2)
    change = [[head.id, 1, head.to_dict()], *([s.id, 0, s.to_dict()] for s in stripes)]
    assert "would break" in refused(cur, 1, change[:-1])  # without its last stripe
    after, epoch = commit(cur, 1, change)
    m = map_of(after.values(), epoch)
    assert [s.stripe for s in m.shards[-3:]] == [(0, 3), (1, 3), (2, 3)]
    # one stripe moved to other replicas (its record alone)
    moved = Shard(stripes[1].id, t2, TOP, ("n2",), 2, (1, 3))
    after2, epoch2 = commit(after, epoch, [[moved.id, 1, moved.to_dict()]])
    assert map_of(after2.values(), epoch2).shard_by_id(moved.id) == moved


# --- check_changes ---------------------------------------------------------------------------

GOOD = Shard("s0001", 0, TOP, ("n1",)).to_dict()


def test_check_changes_accepts_and_copies_well_formed_input():
    raw = [["s0001", 1, dict(GOOD)], ["s0002", 0, None]]
    out = check_changes(raw)
    assert out == raw and out is not raw
    ceiling = [[f"s{i:04d}", 0, {**GOOD, "id": f"s{i:04d}"}] for i in range(4096)]
    assert check_changes(ceiling) == ceiling  # the ceiling itself


def test_a_change_must_move_each_generation_on():
    cur = recs(BASE)
    s0 = BASE.shards[0]
    same = Shard(s0.id, 0, s0.end, ("n4",), 1)
    assert "generation above 1" in refused(cur, 1, [[s0.id, 1, same.to_dict()]])
    with pytest.raises(ValueError, match="twice"):
        check_changes([[s0.id, 1, same.to_dict()], [s0.id, 1, None]])


@pytest.mark.parametrize("raw", [
    pytest.param(None, id="none"),
    pytest.param({"s0001": GOOD}, id="dict"),
    pytest.param(("s0001", 1, GOOD), id="tuple"),
    pytest.param([], id="empty"),
    pytest.param([["s0001", 1, GOOD]] * 4097, id="too-many"),
    pytest.param(["s0001", 1, GOOD], id="not-nested"),
    pytest.param([("s0001", 1, GOOD)], id="item-tuple"),
    pytest.param([["s0001", 1]], id="two-fields"),
    pytest.param([["s0001", 1, GOOD, 4]], id="four-fields"),
    pytest.param([[1, 1, GOOD]], id="id-int"),
    pytest.param([[b"s0001", 1, GOOD]], id="id-bytes"),
    pytest.param([["s0001", "1", GOOD]], id="generation-str"),
    pytest.param([["s0001", 1.0, GOOD]], id="generation-float"),
    pytest.param([["s0001", True, GOOD]], id="generation-bool"),
    pytest.param([["s0001", -1, GOOD]], id="generation-negative"),
    pytest.param([["s0001", 1, [GOOD]]], id="record-list"),
    pytest.param([["s0001", 1, "record"]], id="record-str"),
    pytest.param([["s0002", 1, GOOD]], id="id-mismatch"),
    pytest.param([["s0001", 1, {**GOOD, "generation": 0}]], id="record-generation-0"),
    pytest.param([["s0001", 1, {**GOOD, "replicas": []}]], id="record-no-replicas"),
    pytest.param([["s0001", 1, {**GOOD, "replicas": "n1"}]], id="record-replicas-str"),
    pytest.param([["s0001", 1, {**GOOD, "start": 5.7}]], id="record-start-float"),
    pytest.param([["s0001", 1, {**GOOD, "end": 2**64}]], id="record-end-2**64"),
    pytest.param([["s0001", 1, {**GOOD, "generation": True}]], id="record-generation-bool"),
    pytest.param([["s0001", 1, GOOD], ["s0002", 0, GOOD]], id="id-mismatch-second"),
    pytest.param([["s0001", 1, {k: v for k, v in GOOD.items() if k != "start"}]], id="record-no-start"),
    pytest.param([["s0001", 1, {k: v for k, v in GOOD.items() if k != "replicas"}]], id="record-no-replicas"),
    pytest.param([["s0001", 1, {**GOOD, "end": "far"}]], id="record-end-str"),
    pytest.param([["s0001", 1, {**GOOD, "replicas": 3}]], id="record-replicas-int"),
    pytest.param([["s0001", 1, {**GOOD, "stripe": 3}]], id="record-stripe-int"),
    pytest.param([["s0001", 1, {**GOOD, "generation": None}]], id="record-generation-none"),
])
def test_check_changes_refuses_malformed_input(raw):
    # callers catch exactly these three (commands.decode, node.op_map_change)
    with pytest.raises((ValueError, KeyError, TypeError)):
        check_changes(raw)


@pytest.mark.parametrize("stripe", [[0], []])
def test_check_changes_refuses_a_short_stripe(stripe):
    with pytest.raises((ValueError, KeyError, TypeError)):
        check_changes([["s0001", 1, {**GOOD, "stripe": stripe}]])


# --- catch_up ----------------------------------------------------------------------------------

def test_catch_up_is_none_while_the_map_is_current():
    m = BASE
    s = m.shards[1]
    assert catch_up(m, s, []) is None
    assert catch_up(m, s, [Shard("s0009", 5, 6, ("n1",))]) is None  # the generation decides
    assert catch_up(m, Shard(s.id, s.start, s.end, s.replicas, 1), []) is None
    # the map ahead of the replica (a replica that lags): nothing to publish
    ahead = m.split(s.id, s.start + 5, "s0009")
    assert catch_up(ahead, s, []) is None
    # a shard the map does not know yet (its parent has not published): not its to publish
    assert catch_up(m, Shard("s0009", s.start + 5, s.end, s.replicas, 2), []) is None


def test_catch_up_after_one_split():
    m = BASE
    s = m.shards[1]
    at = s.start + 12345
    truth = m.split(s.id, at, "s0004")
    left, child = truth.shard_by_id(s.id), truth.shard_by_id("s0004")
    changes = catch_up(m, left, [child])
    assert changes == [[s.id, 1, left.to_dict()], ["s0004", 0, child.to_dict()]]
    assert check_changes(changes) == changes
    after, epoch = commit(recs(m), m.epoch, changes)
    assert map_of(after.values(), epoch).shards == truth.shards
    assert catch_up(map_of(after.values(), epoch), left, [child]) is None


def test_catch_up_after_two_splits_and_with_a_child_already_published():
    m = BASE
    s = m.shards[2]
    one = m.split(s.id, s.start + 1000, "s0004")
    two = one.split(s.id, s.start + 10, "s0005")
    left = two.shard_by_id(s.id)
    assert left.generation == 3
    children = [one.shard_by_id("s0004"), two.shard_by_id("s0005")]
    # the map saw neither split: the left, then both children
    changes = catch_up(m, left, children)
    assert changes == [[s.id, 1, left.to_dict()], ["s0004", 0, children[0].to_dict()],
                       ["s0005", 0, children[1].to_dict()]]
    after, epoch = commit(recs(m), m.epoch, changes)
    assert map_of(after.values(), epoch).shards == two.shards
    # the map saw the first split, and the first child has split since: it is left alone
    moved_on = one.split("s0004", children[0].start + 7, "s0006")
    changes = catch_up(moved_on, left, children)
    assert changes == [[s.id, 2, left.to_dict()], ["s0005", 0, children[1].to_dict()]]
    after, epoch = commit(recs(moved_on), moved_on.epoch, changes)
    got = map_of(after.values(), epoch)
    assert got.shard_by_id("s0004") == moved_on.shard_by_id("s0004")  # not put back to its first bounds
    assert got.shard_by_id("s0006") is not None and got.shard_by_id("s0005") == children[1]


def test_initial_changes_write_the_initial_map():
    m = initial_map(NODES, 8)
    changes = initial_changes(m)
    assert check_changes(changes) == changes
    after, epoch = commit({}, 0, changes)
    assert map_of(after.values(), epoch) == m  # epoch 1, like the initial map
    refused(after, epoch, changes)  # a second bootstrap loses


# --- publications in any order converge --------------------------------------------------------

class World:
    """Shard replicas splitting on their own, and the meta group's records."""

    def __init__(self, rng: random.Random, start: ShardMap) -> None:
        self.rng = rng
        # each shard's own durable state: its record and the children its splits created
        self.local: dict[str, tuple[Shard, list[Shard]]] = {s.id: (s, []) for s in start.shards}
        self.records, self.epoch = commit({}, 0, initial_changes(start))
        self.next_id = max(int(s.id[1:]) for s in start.shards) + 1
        self.pending: list[list] = []
        self.accepted = self.conflicts = 0

    def truth(self) -> ShardMap:
        return map_of((s.to_dict() for s, _ in self.local.values()), 1)

    def meta_map(self) -> ShardMap:
        return map_of(self.records.values(), self.epoch)

    def split(self) -> None:
        cands = [s for s, _ in self.local.values() if s.stripe is None and s.end - s.start >= 2]
        s = self.rng.choice(cands)
        at = self.rng.choice([s.start + 1, s.end - 1, self.rng.randrange(s.start + 1, s.end)])
        new = shard_name(self.next_id)
        self.next_id += 1
        left = Shard(s.id, s.start, at, s.replicas, s.generation + 1)
        child = Shard(new, at, s.end, s.replicas)
        self.local[s.id] = (left, [*self.local[s.id][1], child])
        self.local[new] = (child, [])

    def publish(self, sid: str) -> None:
        shard, children = self.local[sid]
        changes = catch_up(self.meta_map(), shard, children)
        if changes is not None:
            changes = check_changes(changes)
            self.pending.append(changes)
            if self.rng.random() < 0.3:
                self.pending.append(copy.deepcopy(changes))  # a retry: the same publication again

    def deliver(self, changes: list) -> None:
        writes, why = apply_changes(self.records, self.epoch, changes)
        if why is not None:
            assert writes == {}
            self.conflicts += 1
            return
        self.records, self.epoch = commit(self.records, self.epoch, changes)
        self.accepted += 1
        self.check()

    def check(self) -> None:
        m = self.meta_map()  # valid, or map_of raises
        m._check()
        for s in m.shards:  # never ahead of the truth: each record is a state its shard has had
            shard, children = self.local[s.id]
            assert s.generation <= shard.generation
            if s.generation == shard.generation:
                assert s == shard

    def step(self) -> None:
        r = self.rng.random()
        if r < 0.25:
            self.split()
        elif r < 0.65:
            # mostly a shard that has split (it may lag in the map), sometimes any shard
            parents = sorted(sid for sid, (_, children) in self.local.items() if children)
            pool = parents if parents and self.rng.random() < 0.8 else sorted(self.local)
            self.publish(self.rng.choice(pool))
        elif self.pending:
            self.deliver(self.pending.pop(self.rng.randrange(len(self.pending))))

    def settle(self) -> None:
        """Deliver what is in flight, then let every leader publish until nothing is left to say."""
        self.rng.shuffle(self.pending)
        while self.pending:
            self.deliver(self.pending.pop())
        for _ in range(200):
            quiet = True
            for sid in sorted(self.local):
                shard, children = self.local[sid]
                changes = catch_up(self.meta_map(), shard, children)
                if changes is not None:
                    quiet = False
                    self.deliver(changes)  # computed on the current map: must win
                    assert catch_up(self.meta_map(), shard, children) is None
            if quiet:
                return
        raise AssertionError("publications never settled")


@pytest.mark.parametrize("seed", range(12))
def test_out_of_order_and_repeated_publications_converge_on_the_truth(seed):
    rng = random.Random(seed)
    start = initial_map(NODES, rng.choice([1, 2, 8]))
    if seed % 3 == 0:  # with a striped tail, which never splits
        tail = start.shards[-1]
        t2 = tail.start + (tail.end - tail.start) // 2
        start = start.with_shards([Shard(tail.id, tail.start, t2, tail.replicas),
                                   *(Shard(shard_name(50 + i), t2, TOP, ("n1",), 1, (i, 4)) for i in range(4))])
    w = World(rng, start)
    for _ in range(400):
        w.step()
    w.settle()
    assert w.meta_map().shards == w.truth().shards
    assert w.accepted > 10 and w.conflicts > 0

"""The shard map against a plain model, and the stripe hash against its documented formula.

A seeded stress test in the sortedcontainers style: from ``initial_map`` it applies a few
thousand random changes -- ``split`` of a range shard at a key strictly inside it,
``with_shards`` patches that cut a shard in two, build a striped tail ``[T2, 2**64)`` of K
stripes, stripe or un-stripe a segment, merge two neighbours -- plus changes that must be
refused.  After each, ``ShardMap._check()`` holds and the map equals a model: a sorted list of
``(start, end, [ids])`` segments (one id, or the ids of stripes ``0..K-1``).  Lookups of keys
near every kind of boundary, range lookups with their clipping, and the wire round trip are
compared with the model as it goes.

The stripe hash is part of the on-disk contract: its values are pinned here, computed from the
formula in ``stripes.py`` by this file's own code and by published SplitMix64 vectors.
"""

from __future__ import annotations

import bisect
import dataclasses
import random

import msgpack
import pytest

from raftkv.routing import stripes
from raftkv.routing.shardmap import Shard, ShardMap, initial_map, shard_name
from raftkv.routing.stripes import MAX_STRIPES, stripe_of

pytestmark = pytest.mark.timeout(60)

TOP = 2**64
M64 = TOP - 1
NODES = ["n1", "n2", "n3", "n4", "n5"]


# --- the stripe hash, from its documentation -----------------------------------------------------

def ref_mix(k: int) -> int:
    """SplitMix64's finaliser, written out from the docstring of ``stripes.py``."""
    x = k
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) % TOP
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) % TOP
    return x ^ (x >> 31)


def ref_stripe(k: int, count: int) -> int:
    return ref_mix(k) % count


GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment: its n-th output is mix(seed + n * GAMMA)


def test_mix_matches_published_splitmix64_outputs():
    # the first outputs of SplitMix64 seeded with 0 and with 1234567 (Vigna's reference code)
    assert [stripes.mix(n * GAMMA % TOP) for n in (1, 2, 3)] == \
        [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]
    assert [stripes.mix((1234567 + n * GAMMA) % TOP) for n in range(1, 6)] == \
        [6457827717110365317, 3203168211198807973, 9817491932198370423, 4593380528125082431,
         16408922859458223821]


# key -> its stripe for K = 2, 3, 8, 16 (fixed forever: replicas check their keys with it)
PINNED = {
    0: (0, 0, 0, 0),
    1: (1, 1, 5, 5),
    2: (0, 1, 2, 10),
    42: (0, 2, 2, 2),
    123456789: (0, 2, 0, 0),
    10**18: (0, 0, 2, 2),
    1_700_000_000_000_000_000: (0, 1, 6, 14),
    2**63: (0, 0, 2, 10),
    M64: (1, 0, 3, 11),
}


@pytest.mark.parametrize("key", sorted(PINNED))
def test_stripe_of_is_pinned(key):
    assert tuple(stripe_of(key, k) for k in (2, 3, 8, 16)) == PINNED[key]
    assert tuple(ref_stripe(key, k) for k in (2, 3, 8, 16)) == PINNED[key]


def test_stripe_of_agrees_with_the_documented_formula():
    rng = random.Random(7)
    keys = [0, 1, M64, 2**63, *(rng.randrange(TOP) for _ in range(2000)), *range(1000)]
    for key in keys:
        assert stripes.mix(key) == ref_mix(key)
        for count in (1, 2, 3, 5, 8, 16):
            assert stripe_of(key, count) == ref_stripe(key, count)
            assert 0 <= stripe_of(key, count) < count


@pytest.mark.parametrize("step", [1, 10**6])
@pytest.mark.parametrize("count", [3, 8, 16])
def test_nanosecond_timestamps_spread_evenly(step, count):
    base = 1_700_000_000 * 10**9  # nanoseconds since the epoch, late 2023
    n = 100_000
    tally = [0] * count
    for i in range(n):
        tally[stripe_of(base + i * step, count)] += 1
    mean = n / count
    assert all(abs(c - mean) <= 0.05 * mean for c in tally), tally


@pytest.mark.parametrize("seed", range(20))
def test_first_foreign_is_owns_over_a_batch(seed):
    """``first_foreign`` (the batch check of the leader and of every replica) names exactly the first
    key ``owns`` refuses, for range shards and stripes, keys inside, at and beyond the bounds."""
    rng = random.Random(seed)
    start = rng.randrange(0, 2**63)
    end = rng.choice([start + 1, start + rng.randrange(2, 2**40), 2**64])
    count = rng.randint(1, MAX_STRIPES)
    shard = Shard("s0001", start, end, ("n1",), stripe=rng.choice([None, (rng.randrange(count), count)]))
    edges = [start, end - 1, end, max(0, start - 1), 2**64 - 1]
    for _ in range(50):
        keys = [rng.choice(edges) if rng.random() < 0.1 else rng.randrange(start, min(end, start + 2**20))
                for _ in range(rng.randint(0, 30))]
        assert shard.first_foreign(keys) == next((k for k in keys if not shard.owns(k)), None)
        assert shard.first_foreign(iter(keys)) == shard.first_foreign(keys)  # any iterable, one pass


def test_owns_as_compares_bounds_and_stripe_only():
    a = Shard("s0001", 10, 20, ("n1", "n2", "n3"), generation=3, stripe=(1, 4))
    assert a.owns_as(dataclasses.replace(a, replicas=("n4",), generation=4))
    assert not a.owns_as(dataclasses.replace(a, end=19))
    assert not a.owns_as(dataclasses.replace(a, stripe=(2, 4)))
    assert not a.owns_as(dataclasses.replace(a, stripe=None))


# --- the model ---------------------------------------------------------------------------------

class Model:
    """Segments ``[start, end, ids]`` in key order (``ids``: one range shard, or stripes 0..K-1),
    plus each shard's generation and replicas, and the epoch."""

    def __init__(self, m: ShardMap) -> None:
        self.segs: list[list] = [[s.start, s.end, [s.id]] for s in m.shards]
        self.gen = {s.id: s.generation for s in m.shards}
        self.reps = {s.id: s.replicas for s in m.shards}
        self.epoch = m.epoch

    def shard(self, sid: str, seg: list) -> Shard:
        ids = seg[2]
        stripe = None if len(ids) == 1 else (ids.index(sid), len(ids))
        return Shard(sid, seg[0], seg[1], self.reps[sid], self.gen[sid], stripe)

    def segment(self, seg: list) -> tuple[Shard, ...]:
        return tuple(self.shard(sid, seg) for sid in seg[2])

    def shards(self) -> tuple[Shard, ...]:
        return tuple(s for seg in self.segs for s in self.segment(seg))

    def starts(self) -> list[int]:
        return [seg[0] for seg in self.segs]

    def owner(self, key: int) -> str:
        seg = self.segs[bisect.bisect_right(self.starts(), key) - 1]
        assert seg[0] <= key < seg[1]
        ids = seg[2]
        return ids[0] if len(ids) == 1 else ids[ref_stripe(key, len(ids))]

    def segments_for_range(self, start: int, end: int) -> list[tuple[tuple[Shard, ...], int, int]]:
        return [(self.segment(seg), max(seg[0], start), min(seg[1], end))
                for seg in self.segs if max(seg[0], start) < min(seg[1], end)]

    def all_ids(self) -> set[str]:
        return {sid for seg in self.segs for sid in seg[2]}


class Stress:
    """One seeded run: the map, its model, and the random changes."""

    def __init__(self, seed: int, start: ShardMap, max_shards: int) -> None:
        self.rng = random.Random(seed)
        self.m = start
        self.model = Model(start)
        self.next_id = len(start.shards)
        self.max_shards = max_shards
        self.refused = 0
        self.counts: dict[str, int] = {}

    # helpers

    def fresh(self) -> str:
        sid = shard_name(self.next_id)
        self.next_id += 1
        return sid

    def replicas(self) -> tuple[str, ...]:
        return tuple(self.rng.sample(NODES, 3))

    def inside(self, start: int, end: int) -> int:
        """A key strictly inside ``(start, end)`` (needs ``end - start >= 2``), often near an edge."""
        r = self.rng.random()
        if r < 0.15:
            return start + 1
        if r < 0.3:
            return end - 1
        if r < 0.4:
            return (start + end) // 2
        if r < 0.55:
            return self.rng.randrange(start + 1, min(end, start + 100))
        return self.rng.randrange(start + 1, end)

    def range_segments(self, min_width: int = 2) -> list[int]:
        return [i for i, seg in enumerate(self.model.segs) if len(seg[2]) == 1 and seg[1] - seg[0] >= min_width]

    def striped_segments(self) -> list[int]:
        return [i for i, seg in enumerate(self.model.segs) if len(seg[2]) > 1]

    def interesting_key(self) -> int:
        r = self.rng.random()
        segs = self.model.segs
        seg = segs[self.rng.randrange(len(segs))]
        if r < 0.1:
            return self.rng.choice([0, 1, M64, M64 - 1])
        if r < 0.3:
            return self.rng.randrange(TOP)
        if r < 0.7:
            return min(M64, max(0, seg[self.rng.randrange(2)] + self.rng.choice([-1, 0, 1])))
        return self.rng.randrange(seg[0], seg[1])

    def accept(self, new: ShardMap, what: str) -> None:
        self.m = new
        self.counts[what] = self.counts.get(what, 0) + 1

    # changes that must succeed

    def op_split(self) -> bool:
        cands = self.range_segments()
        if not cands:
            return False
        i = self.rng.choice(cands)
        s, e, (sid,) = self.model.segs[i]
        at, new = self.inside(s, e), self.fresh()
        result = self.m.split(sid, at, new)
        self.model.segs[i:i + 1] = [[s, at, [sid]], [at, e, [new]]]
        self.model.gen[sid] += 1
        self.model.gen[new] = 1
        self.model.reps[new] = self.model.reps[sid]
        self.model.epoch += 1
        self.accept(result, "split")
        return True

    def op_halves(self) -> bool:
        """with_shards: a range shard replaced by two halves (keeping its id on the left, or not)."""
        cands = self.range_segments()
        if not cands:
            return False
        i = self.rng.choice(cands)
        s, e, (sid,) = self.model.segs[i]
        at = self.inside(s, e)
        keep = self.rng.random() < 0.5
        left_id = sid if keep else self.fresh()
        right_id = self.fresh()
        lrep, rrep = self.model.reps[sid], self.replicas()
        lgen = self.model.gen[sid] + 1 if keep else self.rng.randrange(1, 4)
        changed = [Shard(left_id, s, at, lrep, lgen), Shard(right_id, at, e, rrep)]
        self.rng.shuffle(changed)
        epoch = self.rng.choice([None, self.model.epoch + 5])
        result = self.m.with_shards(changed, epoch=epoch)
        if not keep:
            del self.model.gen[sid]
        self.model.segs[i:i + 1] = [[s, at, [left_id]], [at, e, [right_id]]]
        self.model.gen[left_id], self.model.reps[left_id] = lgen, lrep
        self.model.gen[right_id], self.model.reps[right_id] = 1, rrep
        self.model.epoch = self.model.epoch + 1 if epoch is None else epoch
        self.accept(result, "halves")
        return True

    def op_striped_tail(self) -> bool:
        """with_shards: the tail range shard [T, 2**64) becomes [T, T2) plus K stripes of [T2, 2**64)."""
        s, e, ids = self.model.segs[-1]
        if len(ids) != 1 or e - s < 2:
            return False
        sid = ids[0]
        t2 = self.inside(s, e)
        k = self.rng.randrange(2, MAX_STRIPES + 1)
        stripe_ids = [self.fresh() for _ in range(k)]
        gen = self.model.gen[sid] + 1
        changed = [Shard(sid, s, t2, self.model.reps[sid], gen),
                   *(Shard(x, t2, TOP, self.replicas(), 1, (n, k)) for n, x in enumerate(stripe_ids))]
        self.rng.shuffle(changed)
        result = self.m.with_shards(changed)
        self.model.segs[-1:] = [[s, t2, [sid]], [t2, TOP, stripe_ids]]
        self.model.gen[sid] = gen
        for c in changed:
            self.model.reps[c.id] = c.replicas
            self.model.gen.setdefault(c.id, 1)
        self.model.epoch += 1
        self.accept(result, "striped_tail")
        return True

    def op_stripe_segment(self) -> bool:
        """with_shards: any range shard becomes K stripes sharing its bounds (fresh ids)."""
        cands = self.range_segments(min_width=1)
        if not cands:
            return False
        i = self.rng.choice(cands)
        s, e, (sid,) = self.model.segs[i]
        k = self.rng.randrange(2, MAX_STRIPES + 1)
        stripe_ids = [self.fresh() for _ in range(k)]
        changed = [Shard(x, s, e, self.replicas(), 1, (n, k)) for n, x in enumerate(stripe_ids)]
        result = self.m.with_shards(changed)
        del self.model.gen[sid]
        self.model.segs[i] = [s, e, stripe_ids]
        for c in changed:
            self.model.reps[c.id], self.model.gen[c.id] = c.replicas, 1
        self.model.epoch += 1
        self.accept(result, "stripe")
        return True

    def op_unstripe(self) -> bool:
        """with_shards: a striped segment becomes one range shard, or is absorbed by its left neighbour."""
        cands = self.striped_segments()
        if not cands:
            return False
        i = self.rng.choice(cands)
        s, e, ids = self.model.segs[i]
        if i > 0 and len(self.model.segs[i - 1][2]) == 1 and self.rng.random() < 0.5:
            ps, _, (pid,) = self.model.segs[i - 1]
            gen = self.model.gen[pid] + 1
            result = self.m.with_shards([Shard(pid, ps, e, self.model.reps[pid], gen)])
            self.model.segs[i - 1:i + 1] = [[ps, e, [pid]]]
            self.model.gen[pid] = gen
        else:
            new, reps = self.fresh(), self.replicas()
            result = self.m.with_shards([Shard(new, s, e, reps, 2)])
            self.model.segs[i] = [s, e, [new]]
            self.model.gen[new], self.model.reps[new] = 2, reps
        for x in ids:
            del self.model.gen[x]
        self.model.epoch += 1
        self.accept(result, "unstripe")
        return True

    def op_merge(self) -> bool:
        """with_shards: two neighbouring range shards become the left one, widened."""
        segs = self.model.segs
        cands = [i for i in range(len(segs) - 1) if len(segs[i][2]) == 1 and len(segs[i + 1][2]) == 1]
        if not cands:
            return False
        i = self.rng.choice(cands)
        (s, _, (lid,)), (_, e, (rid,)) = segs[i], segs[i + 1]
        gen = self.model.gen[lid] + 1
        result = self.m.with_shards([Shard(lid, s, e, self.model.reps[lid], gen)])
        segs[i:i + 2] = [[s, e, [lid]]]
        self.model.gen[lid] = gen
        del self.model.gen[rid]
        self.model.epoch += 1
        self.accept(result, "merge")
        return True

    # changes that must be refused

    def op_invalid(self) -> bool:
        rng, m, segs = self.rng, self.m, self.model.segs
        i = rng.randrange(len(segs))
        s, e, ids = segs[i]
        sid = ids[0]
        kind = rng.randrange(9)
        if kind == 0:  # split at or outside the shard's bounds
            if len(ids) != 1:
                return False
            at = rng.choice([s, e, max(0, s - 1), min(e + 1, M64), 0 if s > 0 else e])
            if s < at < e:
                return False
            bad = lambda: m.split(sid, at, self.fresh())  # noqa: E731
        elif kind == 1:  # split a stripe
            cands = self.striped_segments()
            if not cands:
                return False
            ss, se, sids = segs[rng.choice(cands)]
            if se - ss < 2:
                return False
            bad = lambda: m.split(rng.choice(sids), self.inside(ss, se), self.fresh())  # noqa: E731
        elif kind == 2:  # split to a taken id (its own, or another's)
            if len(ids) != 1 or e - s < 2:
                return False
            taken = rng.choice(sorted(self.model.all_ids()))
            bad = lambda: m.split(sid, self.inside(s, e), taken)  # noqa: E731
        elif kind == 3:  # split an unknown shard
            bad = lambda: m.split("s99999999", 1, self.fresh())  # noqa: E731
        elif kind == 4:  # a shorter replacement: leaves a gap (or no longer reaches 2**64)
            if len(ids) != 1 or e - s < 2:
                return False
            bad = lambda: m.with_shards([Shard(sid, s, self.inside(s, e), ("n1",), 9)])  # noqa: E731
        elif kind == 5:  # stripes 0..K-1 incomplete (one missing)
            if len(ids) != 1:
                return False
            k = rng.randrange(2, MAX_STRIPES + 1)
            missing = rng.randrange(k)
            bad = lambda: m.with_shards([Shard(self.fresh(), s, e, ("n1",), 1, (n, k))  # noqa: E731
                                         for n in range(k) if n != missing])
        elif kind == 6:  # stripes of mixed K
            if len(ids) != 1:
                return False
            k = rng.randrange(2, MAX_STRIPES)
            odd = rng.randrange(k)
            bad = lambda: m.with_shards([Shard(self.fresh(), s, e, ("n1",), 1,  # noqa: E731
                                               (n, k + 1 if n == odd else k)) for n in range(k)])
        elif kind == 7:  # one shard's end moved, its neighbour's start not: an overlap or a gap
            if len(ids) != 1 or i + 1 == len(segs):
                return False
            end = rng.choice([e + 1, e - 1, segs[i + 1][1]])
            if end <= s:
                return False
            moved = tuple(dataclasses.replace(x, end=end) if x.id == sid else x for x in m.shards)
            bad = lambda: ShardMap(m.epoch, moved)  # noqa: E731
        else:  # two shards with one id
            if len(m.shards) < 2:
                return False
            j = rng.randrange(len(m.shards))
            other = m.shards[(j + 1) % len(m.shards)]
            twin = list(m.shards)
            twin[j] = Shard(other.id, twin[j].start, twin[j].end, twin[j].replicas, twin[j].generation,
                            twin[j].stripe)
            bad = lambda: ShardMap(m.epoch, tuple(twin))  # noqa: E731
        with pytest.raises(ValueError):
            bad()
        self.refused += 1
        return True

    # checks

    def check(self, full: bool) -> None:
        m, model = self.m, self.model
        m._check()
        assert m.epoch == model.epoch
        if full:
            assert m.shards == model.shards()
        rng = self.rng
        for n in range(8):
            key = self.interesting_key()
            owner = model.owner(key)
            got = m.shard_for_key(key)
            assert got.id == owner, (key, got, owner)
            assert got.owns(key)
            # every other shard: refuses the key (all of them once per step; the near ones otherwise)
            if n == 0:
                others = m.shards
            else:
                j = bisect.bisect_right(model.starts(), key) - 1
                others = [s for seg in model.segs[max(0, j - 1):j + 2] for s in model.segment(seg)]
            assert [s.id for s in others if s.owns(key)] == [owner]
        for _ in range(2):
            a, b = self.interesting_key(), self.interesting_key()
            if rng.random() < 0.2:
                b = TOP
            start, end = (a, b) if rng.random() < 0.85 else (b, a)
            want = model.segments_for_range(start, end)
            got = m.segments_for_range(start, end)
            assert got == want, (start, end)
            assert m.shards_for_range(start, end) == [(s, lo, hi) for seg, lo, hi in want for s in seg]
            for seg, lo, hi in got:
                assert all(x.start <= lo < hi <= x.end for x in seg)

    def round_trip(self) -> None:
        wire = msgpack.unpackb(msgpack.packb(self.m.to_dict(), use_bin_type=True), raw=False)
        back = ShardMap.from_dict(wire)
        assert back == self.m and back.shards == self.m.shards
        assert back.shard_for_key(M64) == self.m.shard_for_key(M64)

    def run(self, steps: int) -> None:
        ops = [self.op_split, self.op_halves, self.op_striped_tail, self.op_stripe_segment,
               self.op_unstripe, self.op_merge, self.op_invalid]
        for step in range(steps):
            big = len(self.m.shards) > self.max_shards
            weights = [1, 1, 1, 1, 4, 6, 2] if big else [6, 4, 2, 1, 1, 2, 2]
            while not self.rng.choices(ops, weights)[0]():
                pass
            self.check(full=True)
            if step % 25 == 0:
                self.round_trip()
        self.round_trip()


@pytest.mark.parametrize("seed, start, steps", [
    (1, initial_map(NODES, 8), 3000),
    (2, initial_map(NODES, 1, replication=3), 1500),
    (3, initial_map(NODES, split_points=[1, 2, 3, M64 - 1, M64]), 1500),  # tiny shards at both ends
])
def test_random_changes_against_model(seed, start, steps):
    run = Stress(seed, start, max_shards=80)
    run.check(full=True)
    run.run(steps)
    # every kind of change happened, and so did refusals
    assert set(run.counts) == {"split", "halves", "striped_tail", "stripe", "unstripe", "merge"}, run.counts
    assert run.refused > steps // 20


# --- fixed cases ---------------------------------------------------------------------------------

def S(sid: str, start: int, end: int, gen: int = 1, stripe: tuple[int, int] | None = None,
      replicas: tuple[str, ...] = ("n1", "n2", "n3")) -> Shard:
    return Shard(sid, start, end, replicas, gen, stripe)


def stripes_of(prefix: str, start: int, end: int, k: int, skip: int | None = None,
               odd: tuple[int, int] | None = None) -> list[Shard]:
    return [S(f"{prefix}{n:02d}", start, end, stripe=odd[1] if odd is not None and odd[0] == n else (n, k))
            for n in range(k) if n != skip]


VALID = ShardMap(4, (S("s0000", 0, 100), S("s0001", 100, 200, 3), *stripes_of("s1", 200, TOP, 3)))


def test_a_valid_map_with_a_striped_tail():
    m = VALID
    assert [s.id for s, _, _ in m.shards_for_range(150, 250)] == ["s0001", "s100", "s101", "s102"]
    assert m.segments_for_range(150, 250)[1][1:] == (200, 250)
    for key in (200, 201, 12345, M64):
        assert m.shard_for_key(key).stripe == (ref_stripe(key, 3), 3)
    assert m.shard_for_key(199).id == "s0001" and m.shard_for_key(0).id == "s0000"
    assert m.segments_for_range(7, 7) == [] and m.segments_for_range(9, 3) == []
    assert m.group_ids() == ["s0000", "s0001", "s100", "s101", "s102"]
    assert ShardMap.from_dict(m.to_dict()) == m
    # a stripe keeps its bounds on the wire, and a record from before splits has generation 1
    d = m.shards[-1].to_dict()
    assert d["end"] is None and d["stripe"] == [2, 3]
    assert Shard.from_dict({k: v for k, v in m.shards[0].to_dict().items() if k != "generation"}).generation == 1


@pytest.mark.parametrize("shards", [
    pytest.param([S("a", 0, 10), S("b", 11, TOP)], id="gap"),
    pytest.param([S("a", 0, 10), S("b", 5, TOP)], id="overlap"),
    pytest.param([S("a", 0, 10), S("b", 10, 20), S("c", 15, TOP)], id="overlap-later"),
    pytest.param([S("a", 0, 10), S("b", 10, 20, stripe=(0, 2)), S("c", 10, 21, stripe=(1, 2)), S("d", 21, TOP)],
                 id="stripes-disagree-on-end"),
    pytest.param([S("a", 0, 10), S("a", 10, TOP)], id="duplicate-id"),
    pytest.param([S("a", 0, 10), S("b", 10, TOP, stripe=(0, 1)), S("a", 10, TOP, stripe=(1, 2))],
                 id="duplicate-id-in-stripes"),
    pytest.param([S("a", 0, 10), *stripes_of("b", 10, TOP, 3, skip=1)], id="stripe-missing"),
    pytest.param([S("a", 0, 10), *stripes_of("b", 10, TOP, 3, skip=2)], id="last-stripe-missing"),
    pytest.param([S("a", 0, 10), *stripes_of("b", 10, TOP, 3, skip=0)], id="first-stripe-missing"),
    pytest.param([S("a", 0, 10), *stripes_of("b", 10, TOP, 3, odd=(2, (2, 4)))], id="mixed-k"),
    pytest.param([S("a", 0, 10), *stripes_of("b", 10, TOP, 3, odd=(1, (2, 3)))], id="stripe-twice"),
    pytest.param([S("a", 0, 10), *stripes_of("b", 10, TOP, MAX_STRIPES + 1)], id="too-many-stripes"),
    pytest.param([S("a", 0, 10, stripe=(0, 2)), S("c", 0, 10), S("b", 10, TOP)], id="stripe-and-range"),
    pytest.param([S("a", 0, 10), S("b", 10, 20, stripe=(0, 1)), S("c", 20, TOP, stripe=(1, 2))],
                 id="stripes-in-two-segments"),
    pytest.param([S("b", 10, TOP), S("a", 0, 10)], id="unsorted"),
    pytest.param([S("a", 0, 10), *reversed(stripes_of("b", 10, TOP, 2))], id="stripes-unsorted"),
    pytest.param([S("a", 1, TOP)], id="not-from-0"),
    pytest.param([S("a", 0, TOP - 1)], id="not-to-2**64"),
    pytest.param([S("a", 0, 10), S("b", 10, 10), S("c", 10, TOP)], id="empty-shard"),
    pytest.param([], id="empty"),
    pytest.param([S("a", 0, 10, gen=0), S("b", 10, TOP)], id="generation-0"),
    pytest.param([S("a", 0, 10, replicas=()), S("b", 10, TOP)], id="no-replicas"),
])
def test_invalid_maps_are_refused(shards):
    with pytest.raises(ValueError):
        ShardMap(1, tuple(shards))
    with pytest.raises(ValueError):
        ShardMap.from_dict({"epoch": 1, "shards": [s.to_dict() for s in shards]})


def test_bad_splits_are_refused():
    m = VALID
    for sid, at, new in [("s0001", 100, "s0009"), ("s0001", 200, "s0009"), ("s0001", 99, "s0009"),
                         ("s0001", 201, "s0009"), ("s0001", 0, "s0009"), ("s0000", 0, "s0009"),
                         ("s0001", 150, "s0000"), ("s0001", 150, "s0001"), ("s0001", 150, "s101"),
                         ("s101", 300, "s0009"), ("s0042", 150, "s0009")]:
        with pytest.raises(ValueError):
            m.split(sid, at, new)
    after = m.split("s0001", 101, "s0009")
    assert after.epoch == 5
    assert after.shard_by_id("s0001") == S("s0001", 100, 101, 4)
    assert after.shard_by_id("s0009") == S("s0009", 101, 200, 1)
    assert m.shard_by_id("s0001").end == 200  # the old map is a value: unchanged


def test_with_shards_refuses_a_patch_that_breaks_the_map():
    m = VALID
    with pytest.raises(ValueError):
        m.with_shards([S("s0001", 100, 150, 4)])  # a gap [150, 200)
    with pytest.raises(ValueError):
        m.with_shards([S("s0001", 100, 150, 4), S("s0009", 150, 210)])  # cuts into the stripes
    with pytest.raises(ValueError):
        m.with_shards([S("x", 200, TOP, stripe=(0, 2))])  # replaces all three stripes by one of two
    # a whole new striped tail of another K is fine
    patched = m.with_shards(stripes_of("t", 200, TOP, 2), epoch=9)
    assert patched.epoch == 9 and [s.id for s in patched.shards][2:] == ["t00", "t01"]

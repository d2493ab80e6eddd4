import math
import random
import tracemalloc

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.replication.split_policy import (
    ShardStats,
    Split,
    SplitSettings,
    WriteTracker,
    manual_split_point,
    maybe_load_split,
    maybe_split,
    place_stripe_leaders,
    plan_segment,
    stripe_replicas,
)
from raftkv.routing.placement import COPYSETS, HRW
from raftkv.routing.stripes import MAX_STRIPES

pytestmark = pytest.mark.timeout(60)

END = 2**64
MAXK = 2**64 - 1
MiB = 1024 * 1024
S = SplitSettings()
T0 = 1_700_000_000_000_000_000  # a nanosecond timestamp of this decade


def stats(start=0, end=END, size=100 * MiB, keys=1000, largest=None, smallest=None,
          wps=0.0, appends=0.0, median=None, sid="s0001"):
    return ShardStats(sid, start, end, size, keys, largest, smallest, wps, appends, median)


# --- maybe_split: table ----------------------------------------------------------------------------

@pytest.mark.parametrize("case, kw, expected", [
    ("small shard", dict(size=64 * MiB, smallest=10, largest=1000, median=500), None),
    ("just over", dict(size=64 * MiB + 1, smallest=10, largest=1000, median=500), ("size", 500)),
    ("too few keys", dict(keys=1, smallest=10, largest=10, median=10, appends=1.0), None),
    ("empty shard", dict(keys=0), None),
    ("appends dominate: split past the largest key",
     dict(smallest=T0, largest=T0 + 10**9, median=T0 + 5 * 10**8, appends=0.8), ("tail", T0 + 10**9 + 1)),
    ("appends not dominant: median",
     dict(smallest=T0, largest=T0 + 10**9, median=T0 + 5 * 10**8, appends=0.79), ("size", T0 + 5 * 10**8)),
    ("largest is 2**64-1: no room at the tail, median",
     dict(smallest=5, largest=MAXK, median=2**63, appends=1.0), ("size", 2**63)),
    ("largest is end-1 of an inner shard: median",
     dict(start=100, end=200, smallest=100, largest=199, median=150, appends=1.0), ("size", 150)),
    ("largest is 2**64-1 and no median", dict(smallest=5, largest=MAXK, appends=1.0), None),
    ("median == smallest: one past it", dict(keys=2, smallest=7, largest=9, median=7), ("size", 8)),
    ("median == smallest == largest: all one key", dict(keys=2, smallest=7, largest=7, median=7), None),
    ("median at start: one past it", dict(start=7, end=100, smallest=7, largest=50, median=7), ("size", 8)),
    ("median beyond largest (stale estimate)", dict(smallest=1, largest=10, median=11), None),
    ("median unknown", dict(smallest=1, largest=10), None),
    ("smallest unknown", dict(largest=10, median=5), None),
    ("keys share a long prefix", dict(smallest=T0, largest=T0 + 3, median=T0 + 2), ("size", T0 + 2)),
    ("keys share a prefix at the very top",
     dict(start=END - 16, smallest=END - 4, largest=MAXK, median=END - 2, appends=1.0), ("size", END - 2)),
    ("largest below start (incoherent): median",
     dict(start=100, end=200, smallest=120, largest=50, median=150, appends=1.0), None),
])
def test_maybe_split_table(case, kw, expected):
    got = maybe_split(stats(**kw), S)
    if expected is None:
        assert got is None, case
    else:
        assert got == Split("s0001", expected[1], expected[0]), case


def test_tail_split_leaves_an_empty_right_side_and_all_data_left():
    st_ = stats(start=0, end=2**62, smallest=T0, largest=T0 + 999, median=T0 + 500, appends=0.95)
    split = maybe_split(st_, S)
    assert split.reason == "tail" and split.at == T0 + 1000
    assert st_.largest_key < split.at < st_.end


# --- maybe_split: random stress --------------------------------------------------------------------

def _random_stats(rng: random.Random) -> ShardStats:
    """Random, sometimes incoherent, stats with the edge values over-represented."""
    edges = [0, 1, 2**63, END - 2, END - 1]
    start = rng.choice([0, 0, rng.randrange(END - 1), rng.choice(edges)])
    start = min(start, END - 2)
    end = rng.choice([END, END, start + 1, start + 2, rng.randrange(start + 1, END + 1)])

    def key_in_range():
        return rng.choice([start, end - 1, rng.randrange(start, end), rng.randrange(END)])

    a, b = key_in_range(), key_in_range()
    smallest, largest = (a, b) if rng.random() < 0.9 else (b, a)
    if rng.random() < 0.1:
        smallest = largest = None
    median = rng.choice([smallest, largest, None, key_in_range(),
                         rng.randrange(min(a, b), max(a, b) + 1)])
    size = rng.choice([0, S.split_bytes, S.split_bytes + 1, rng.randrange(4 * S.split_bytes)])
    keys = rng.choice([0, 1, 2, 3, rng.randrange(10**7)])
    appends = rng.choice([0.0, S.tail_append_fraction, 1.0, rng.random()])
    return ShardStats("s", start, end, size, keys, largest, smallest, rng.random() * 10**4, appends, median)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_maybe_split_invariants_on_random_stats(seed):
    rng = random.Random(seed)
    seen = {"tail": 0, "size": 0, None: 0}
    for _ in range(2000):
        s = _random_stats(rng)
        split = maybe_split(s, S)
        seen[split.reason if split else None] += 1
        big = s.bytes > S.split_bytes and s.keys >= S.min_keys_to_split
        if not big:
            assert split is None  # never below split_bytes or with too few keys
            continue
        tail_ok = (s.append_fraction >= S.tail_append_fraction and s.largest_key is not None
                   and s.start < s.largest_key + 1 < s.end)
        if split is None:
            assert not tail_ok
            continue
        assert s.start < split.at < s.end and split.shard_id == s.shard_id
        if split.reason == "tail":
            assert s.append_fraction >= S.tail_append_fraction and split.at == s.largest_key + 1
        else:
            assert split.reason == "size" and not tail_ok
            assert s.smallest_key < split.at <= s.largest_key  # keys on both sides
            assert split.at in (s.median_key, s.median_key + 1)
    assert min(seen.values()) > 50  # the generator reaches every outcome


@settings(derandomize=True, max_examples=300, deadline=None)
@given(keys=st.lists(st.integers(0, MAXK), min_size=2, max_size=50, unique=True),
       appends=st.floats(0.0, 1.0))
def test_split_of_real_key_sets_leaves_data_on_both_sides(keys, appends):
    keys.sort()
    # an estimator may report the upper or the lower median; ``at`` goes right, so the lower
    # median of an even count leaves the halves two keys apart
    for median, slack in ((keys[len(keys) // 2], 1), (keys[(len(keys) - 1) // 2], 2)):
        s = stats(size=S.split_bytes + 1, keys=len(keys), smallest=keys[0], largest=keys[-1],
                  median=median, appends=appends)
        split = maybe_split(s, S)
        assert split is not None
        left = [k for k in keys if k < split.at]
        right = [k for k in keys if k >= split.at]
        assert left and 0 < split.at < END
        if split.reason == "size":
            assert right and abs(len(left) - len(right)) <= slack
        else:
            assert not right and appends >= S.tail_append_fraction


# --- manual_split_point -------------------------------------------------------------------------

def test_manual_split_point():
    s = stats(start=100, end=200, keys=3, smallest=110, largest=190, median=150, size=0)
    assert manual_split_point(s, None) == 150  # size does not matter for a manual split
    assert manual_split_point(s, 101) == 101
    assert manual_split_point(s, 199) == 199  # explicit keys may leave a side empty
    for bad in (100, 200, 99, 10**30):
        with pytest.raises(ValueError, match="not strictly inside shard s0001"):
            manual_split_point(s, bad)
    with pytest.raises(ValueError, match="integer"):
        manual_split_point(s, True)
    with pytest.raises(ValueError, match="too few keys"):
        manual_split_point(stats(start=100, end=200, keys=1, smallest=150, largest=150, median=150), None)
    with pytest.raises(ValueError, match="no usable median"):
        manual_split_point(stats(start=100, end=200, keys=5, smallest=150, largest=150, median=150), None)
    with pytest.raises(ValueError, match="no usable median"):
        manual_split_point(stats(keys=5, smallest=1, largest=9), None)
    last = stats(start=END - 1, end=END, keys=1, smallest=MAXK, largest=MAXK)
    with pytest.raises(ValueError, match="not strictly inside"):
        manual_split_point(last, MAXK)


# --- WriteTracker --------------------------------------------------------------------------------

class _Model:
    """Every observation kept; figures summed over the same window the tracker promises."""

    def __init__(self, window_s, bucket_s):
        self.n, self.b = round(window_s / bucket_s), bucket_s
        self.obs, self.latest = [], -math.inf

    def observe(self, keys, now, largest_before):
        now = self.latest = max(now, self.latest)
        appends = len([k for k in keys if largest_before is None or k > largest_before])
        if keys:  # an empty batch is no write request
            self.obs.append((math.floor(now / self.b), len(keys), appends))

    def figures(self, now):
        now = max(now, self.latest)
        cur = math.floor(now / self.b)
        w = sum(n for b, n, _ in self.obs if cur - self.n <= b <= cur)
        a = sum(x for b, _, x in self.obs if cur - self.n <= b <= cur)
        r = sum(1 for b, _, _ in self.obs if cur - self.n <= b <= cur)
        span = self.n * self.b + (now - cur * self.b)
        return w / span, (a / w if w else 0.0), r / span


@pytest.mark.parametrize("seed, window_s, bucket_s", [(1, 10.0, 1.0), (2, 10.0, 1.0), (3, 5.0, 0.25)])
def test_write_tracker_matches_the_model(seed, window_s, bucket_s):
    rng = random.Random(seed)
    tracker, model = WriteTracker(window_s, bucket_s), _Model(window_s, bucket_s)
    now, largest = rng.uniform(0, 1000), None
    for _ in range(3000):
        now += rng.choice([0.0, 0.001, rng.expovariate(5.0), rng.uniform(0, 3 * window_s), -0.5])
        if rng.random() < 0.8:
            base = largest if largest is not None else T0
            keys = [base + rng.randrange(-100, 1000) for _ in range(rng.randrange(0, 20))]
            tracker.observe(keys, now, largest)
            model.observe(keys, now, largest)
            if keys:
                largest = max(keys + ([largest] if largest is not None else []))
        ask = now + rng.choice([0.0, rng.uniform(0, 2 * window_s), -1.0])
        rate, frac, requests = model.figures(ask)
        assert tracker.writes_per_s(ask) == pytest.approx(rate, rel=1e-9, abs=1e-12)
        assert tracker.requests_per_s(ask) == pytest.approx(requests, rel=1e-9, abs=1e-12)
        assert tracker.append_fraction(ask) == pytest.approx(frac, rel=1e-9, abs=1e-12)


def test_write_tracker_steady_rate_and_appends():
    t = WriteTracker()
    assert t.writes_per_s(0.0) == 0.0 and t.append_fraction(0.0) == 0.0
    largest = None
    for i in range(2000):  # 100 keys/s for 20 s, all increasing
        t.observe([T0 + i], i * 0.01, largest)
        largest = T0 + i
    assert t.writes_per_s(19.99) == pytest.approx(100.0, rel=0.01)
    assert t.append_fraction(19.99) == 1.0
    t.observe([T0], 20.0, largest)  # one key below the largest: not an append
    assert t.append_fraction(20.0) < 1.0
    assert t.writes_per_s(1000.0) == 0.0 and t.append_fraction(1000.0) == 0.0  # the window moved on


def test_write_tracker_counts_requests_apart_from_keys():
    t = WriteTracker()
    for i in range(100):  # 10 s: one batch of 50 keys and one single put every 0.1 s
        t.observe(list(range(i * 50, i * 50 + 50)), i * 0.1, None)
        t.observe([10**9 + i], i * 0.1 + 0.05, None)
    span = 10.99  # ten whole buckets and the 0.99 s of the current one
    assert t.writes_per_s(9.99) == pytest.approx(5100 / span)
    assert t.requests_per_s(9.99) == pytest.approx(200 / span)


# --- maybe_load_split ------------------------------------------------------------------------------

def busy(requests=1100.0, keys=5000, appends=0.1, recent=tuple(range(1000, 1256)), start=0, end=END,
         siblings=()):
    return ShardStats("s0001", start, end, 10 * MiB, keys, max(recent, default=None),
                      min(recent, default=None), requests, appends, None, requests, tuple(recent), siblings)


@pytest.mark.parametrize("case, st, settings, expected", [
    ("busy: split at the median of recent writes", busy(), S, 1128),
    ("recent keys in any order", busy(recent=(9, 1, 5, 7, 3)), S, 5),
    ("at the threshold: no", busy(requests=1000.0), S, None),
    ("turned off", busy(requests=10_000.0), SplitSettings(load_split_requests_per_s=0), None),
    ("a hot tail is striped, not split", busy(appends=0.8), S, None),
    ("too few keys", busy(keys=999), S, None),
    ("one hot key: nothing to split", busy(recent=(7,) * 256), S, None),
    ("median is the smallest recent key", busy(recent=(7, 7, 7, 9)), S, None),
    ("no recent keys", busy(recent=()), S, None),
    ("median at the shard's start", busy(recent=(100, 100, 100, 50), start=100, end=200), S, None),
    ("median outside the shard (stale sample)", busy(recent=(300, 400, 500), start=100, end=200), S, None),
    ("lower threshold", busy(requests=60.0), SplitSettings(load_split_requests_per_s=50), 1128),
    ("the node's other shards idle: split", busy(siblings=(0.0, 3.0, 12.0)), S, 1128),
    ("the node's other shard as busy (uniform keys): no", busy(siblings=(1050.0,)), S, None),
    ("most of the others as busy: no", busy(siblings=(0.0, 900.0, 1000.0)), S, None),
    ("twice the median of the others: split", busy(requests=2000.0, siblings=(0.0, 1000.0, 1200.0)), S, 1128),
    ("just under twice: no", busy(requests=1999.0, siblings=(0.0, 1000.0, 1200.0)), S, None),
    ("skew 1: as busy as the others is enough", busy(siblings=(1100.0,)), SplitSettings(load_split_skew=1.0),
     1128),
])
def test_maybe_load_split_table(case, st, settings, expected):
    got = maybe_load_split(st, settings)
    assert (got and got.at) == expected, case
    if got is not None:
        assert got == Split("s0001", expected, "load")
        assert st.start < got.at < st.end and min(st.recent_keys) < got.at


@pytest.mark.parametrize("seed", range(5))
def test_maybe_load_split_leaves_recent_writes_on_both_sides(seed):
    rng = random.Random(seed)
    for _ in range(500):
        start = rng.randrange(0, 2**63)
        end = start + rng.randrange(2, 2**20)
        recent = tuple(rng.randrange(start, end) for _ in range(rng.randrange(0, 300)))
        got = maybe_load_split(busy(recent=recent, start=start, end=end), S)
        if got is None:
            continue
        left = sum(1 for k in recent if k < got.at)
        assert start < got.at < end and left >= 1 and len(recent) - left >= len(recent) // 2


def test_sustained_rate_is_the_quietest_whole_second_of_the_window():
    t = WriteTracker()
    for second in range(12):  # 1,100 requests a second, but 700 in second 5
        n = 700 if second == 5 else 1100
        for i in range(n):
            t.observe([i], second + i / n, None)
    assert t.requests_per_s(11.5) > 1000  # the average is over a threshold of 1,000 ...
    assert t.sustained_requests_per_s(11.5) == 700.0  # ... the rate held through the window is not
    assert t.sustained_requests_per_s(16.5) == 0.0  # seconds 12-15 were silent
    assert t.sustained_requests_per_s(17.0) == 0.0


def test_a_young_tracker_has_no_sustained_rate():
    t = WriteTracker()
    for i in range(5000):  # 5 s of 1,000 a second
        t.observe([i], i / 1000, None)
    assert t.sustained_requests_per_s(5.0) == 0.0
    for i in range(5000, 11_000):
        t.observe([i], i / 1000, None)
    assert t.sustained_requests_per_s(11.0) == 1000.0


def test_write_tracker_young_tracker_does_not_overstate_a_burst():
    t = WriteTracker()
    t.observe(list(range(1000)), 5.0, None)
    assert t.writes_per_s(5.001) < 1000 / 10  # counted over the whole window, not 1 ms
    assert t.append_fraction(5.0) == 1.0


def test_write_tracker_refuses_bad_arguments():
    with pytest.raises(ValueError):
        WriteTracker(10.0, 0.0)
    with pytest.raises(ValueError):
        WriteTracker(0.5, 1.0)
    with pytest.raises(ValueError):
        WriteTracker().observe([1], math.nan, None)


def test_write_tracker_memory_is_bounded():
    t = WriteTracker()
    tracemalloc.start()
    try:
        largest = None
        for i in range(100_000):
            t.observe((i,), i * 1e-4, largest)
            largest = i
        before = tracemalloc.take_snapshot()
        for i in range(100_000, 1_000_000):  # 1e6 observations over 100 s, 10k per second
            t.observe((i,), i * 1e-4, largest)
            largest = i
        grown = tracemalloc.take_snapshot().compare_to(before, "filename")
    finally:
        tracemalloc.stop()
    assert sum(max(0, d.size_diff) for d in grown) < 16 * 1024
    assert all(len(x) == 11 for x in (t._ids, t._writes, t._appends))
    assert t.writes_per_s(99.9999) == pytest.approx(10_000, rel=0.01)


# --- plan_segment -------------------------------------------------------------------------------

def tail(wps, appends=1.0, largest=T0, start=2**60, end=END):
    return stats(start=start, end=end, smallest=start, largest=largest, wps=wps, appends=appends,
                 median=None, size=0)


RATE = 10**9  # key space per second: nanosecond timestamps written in real time


def test_plan_segment_thresholds():
    th = S.tail_stripe_writes_per_s
    assert plan_segment(tail(th), S, 3, RATE, 100) is None  # must exceed, not equal
    plan = plan_segment(tail(th + 1), S, 3, RATE, 100)
    assert plan.at == T0 + 1 + RATE // 2 and plan.stripes == 3 and plan.at < plan.end < END
    assert plan_segment(tail(th + 1, appends=0.79), S, 3, RATE, 100) is None  # writes are not at the tail
    assert plan_segment(tail(10 * th, largest=MAXK), S, 3, RATE, 100) is None  # no room past the largest key
    assert plan_segment(tail(10 * th, largest=None), S, 3, RATE, 100) is None
    assert plan_segment(tail(10 * th), S, 3, 0.0, 100) is None  # the largest key does not move
    assert plan_segment(tail(10 * th), S, 1, RATE, 100) is None  # one node: stripes gain nothing


def test_a_zero_stripe_threshold_means_tails_are_never_striped():
    off = SplitSettings(tail_stripe_writes_per_s=0)
    assert not off.stripes_tails and S.stripes_tails
    for wps in (1.0, S.tail_stripe_writes_per_s + 1, 10**9):
        assert plan_segment(tail(wps), off, 3, RATE, 100) is None
    assert plan_segment(tail(10**9), S, 3, RATE, 100) is not None  # the same tail, striped by default


def test_a_segment_is_sized_so_its_stripes_fill_to_split_bytes():
    cfg = SplitSettings(split_bytes=64 << 20)
    wps, row = 8000.0, 100.0  # above the stripe threshold
    plan = plan_segment(tail(wps), cfg, 4, RATE, row)
    seconds = (plan.end - plan.at) / RATE  # how long the appends take to cross it
    assert seconds * wps * row == pytest.approx(4 * (64 << 20), rel=1e-6)
    inner = plan_segment(tail(wps, start=0, end=T0 + 10 * RATE), cfg, 4, RATE, row)
    assert inner.end == T0 + 10 * RATE  # the shard ends first: no range shard after the segment


@pytest.mark.parametrize("nodes, tail_stripes, k", [
    (3, 0, 3), (40, 0, MAX_STRIPES), (3, 5, 5), (3, 99, MAX_STRIPES), (1, 4, 4),
])
def test_plan_segment_stripe_count(nodes, tail_stripes, k):
    cfg = SplitSettings(tail_stripes=tail_stripes)
    assert plan_segment(tail(10**9), cfg, nodes, RATE, 100).stripes == k


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_plan_segment_invariants_on_random_stats(seed):
    rng = random.Random(seed)
    for _ in range(2000):
        s = _random_stats(rng)
        s = ShardStats(s.shard_id, s.start, s.end, s.bytes, s.keys, s.largest_key, s.smallest_key,
                       rng.choice([0.0, S.tail_stripe_writes_per_s, rng.random() * 10**5]),
                       s.append_fraction, s.median_key)
        rate = rng.choice([0.0, 1.0, rng.random() * 10**12])
        plan = plan_segment(s, S, rng.randrange(0, 30), rate, rng.choice([0.0, 100.0, 1e6]))
        if plan is None:
            continue
        assert s.start < plan.at < plan.end <= s.end and plan.at > s.largest_key
        assert s.append_fraction >= S.tail_append_fraction and s.writes_per_s > S.tail_stripe_writes_per_s
        assert 2 <= plan.stripes <= S.max_stripes


# --- stripe placement ---------------------------------------------------------------------------

def test_place_stripe_leaders():
    assert place_stripe_leaders(3, ["a", "b", "c", "d"]) == ["a", "b", "c"]
    assert place_stripe_leaders(5, ["a", "b"]) == ["a", "b", "a", "b", "a"]
    assert place_stripe_leaders(2, ["a", "a", "b"]) == ["a", "b"]  # repeats are one node
    with pytest.raises(ValueError):
        place_stripe_leaders(0, ["a"])
    with pytest.raises(ValueError):
        place_stripe_leaders(2, [])


def test_stripe_replicas_table():
    nodes = ["n1", "n2", "n3", "n4"]
    assert [stripe_replicas(i, 4, nodes, 3) for i in range(4)] == [
        ("n1", "n2", "n3"), ("n2", "n3", "n4"), ("n3", "n4", "n1"), ("n4", "n1", "n2")]
    assert stripe_replicas(1, 2, ["a", "b"], 3) == ("b", "a")  # all nodes when fewer than factor
    with pytest.raises(ValueError):
        stripe_replicas(2, 2, nodes, 3)


def test_stripes_of_a_copyset_cluster_stay_in_their_leaders_copyset():
    nodes = ["n3", "n4", "n5", "n6", "n1", "n2"]  # rotated, as _stripe rotates who leads stripe 0
    reps = [stripe_replicas(i, 6, nodes, 3, COPYSETS) for i in range(6)]
    assert reps == [("n3", "n1", "n2"), ("n4", "n5", "n6"), ("n5", "n4", "n6"), ("n6", "n4", "n5"),
                    ("n1", "n2", "n3"), ("n2", "n1", "n3")]
    peers = {n: {p for r in reps if n in r for p in r} - {n} for n in nodes}
    assert all(len(p) == 2 for p in peers.values()), peers  # where the ring gave each node 4
    # nodes that form no copysets (or an HRW cluster): the ring
    assert stripe_replicas(0, 4, ["n1", "n2", "n3", "n4"], 3, COPYSETS) == ("n1", "n2", "n3")
    assert stripe_replicas(0, 6, nodes, 3, HRW) == ("n3", "n4", "n5")


@pytest.mark.parametrize("scheme", [HRW, COPYSETS])
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_stripe_placement_invariants(seed, scheme):
    rng = random.Random(seed)
    for _ in range(300):
        nodes = [f"n{i}" for i in rng.sample(range(100), rng.randrange(1, 20))]
        k, factor = rng.randrange(1, MAX_STRIPES + 1), rng.randrange(1, 6)
        leaders = place_stripe_leaders(k, nodes)
        assert leaders == place_stripe_leaders(k, list(nodes))  # deterministic
        assert len(leaders) == k and set(leaders) <= set(nodes)
        if k <= len(nodes):
            assert len(set(leaders)) == k
        else:  # spread as evenly as possible
            counts = [leaders.count(n) for n in nodes]
            assert max(counts) - min(counts) <= 1
        load = dict.fromkeys(nodes, 0)
        for i in range(k):
            reps = stripe_replicas(i, k, nodes, factor, scheme)
            assert reps[0] == leaders[i]
            assert len(reps) == len(set(reps)) == min(factor, len(nodes)) and set(reps) <= set(nodes)
            for n in reps:
                load[n] += 1
        if k % len(nodes) == 0:  # whole turns: every node holds as many replicas
            assert len(set(load.values())) == 1


def test_settings_are_checked():
    for bad in (dict(max_stripes=MAX_STRIPES + 1), dict(max_stripes=1), dict(tail_append_fraction=1.5),
                dict(tail_stripe_writes_per_s=-1), dict(tail_stripes=-1), dict(split_bytes=0),
                dict(load_split_requests_per_s=-1), dict(min_keys_to_load_split=1), dict(load_split_skew=0.5),
                dict(load_split_skew=float("nan"))):
        with pytest.raises(ValueError):
            SplitSettings(**bad)

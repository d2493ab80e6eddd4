"""Partial aggregates: one pass equals any split into shards merged in any order."""

import json
import random

import msgpack
import pytest

from raftkv.errors import QueryError
from raftkv.query import Aggregates

pytestmark = pytest.mark.timeout(60)

SPECS = [["count"], ["min", ["key"]], ["max", ["key"]], ["sum", ["json", ["t"]]], ["avg", ["json", ["t"]]],
         ["min", ["json", ["t"]]], ["max", ["*", ["json", ["t"]], 2]], ["sum", ["len"]]]


def rows(seed: int, n: int) -> list[tuple[int, bytes]]:
    rnd = random.Random(seed)
    out = []
    for key in sorted(rnd.sample(range(10**6), n)):
        t = rnd.choice([rnd.randint(-50, 50), None, "hot", rnd.randint(0, 9) / 4, True])
        out.append((key, b"junk" if rnd.random() < 0.1 else json.dumps({"t": t}).encode()))
    return out


def one_pass(aggs: Aggregates, data) -> list:
    p = aggs.new()
    for k, v in data:
        aggs.update(p, k, v)
    return p


def over_the_wire(partials):
    return msgpack.unpackb(msgpack.packb(partials, use_bin_type=True), raw=False)


def reference(data) -> list:
    ts = []
    for _, v in data:
        try:
            t = json.loads(v).get("t")
        except ValueError:
            t = None
        if type(t) in (int, float):
            ts.append(t)
    keys = [k for k, _ in data]
    return [len(data), min(keys, default=None), max(keys, default=None), sum(ts) if ts else None,
            sum(ts) / len(ts) if ts else None, min(ts, default=None), max((t * 2 for t in ts), default=None),
            sum(len(v) for _, v in data) if data else None]


def test_single_pass_matches_reference():
    aggs = Aggregates(SPECS)
    data = rows(1, 400)
    assert aggs.finalize(one_pass(aggs, data)) == [pytest.approx(reference(data))]


def test_empty_input():
    aggs = Aggregates(SPECS)
    assert aggs.finalize(aggs.new()) == [[0, None, None, None, None, None, None, None]]
    assert aggs.finalize(aggs.merge(aggs.new(), aggs.new())) == aggs.finalize(aggs.new())


def test_nulls_are_ignored():
    aggs = Aggregates([["count"], ["sum", ["json", ["t"]]], ["avg", ["json", ["t"]]], ["min", ["json", ["t"]]]])
    p = aggs.new()
    for v in (b'{"t": null}', b"{}", b"bad", b'{"t": "3"}', b'{"t": false}'):
        aggs.update(p, 1, v)
    assert aggs.finalize(p) == [[5, None, None, None]]
    aggs.update(p, 1, b'{"t": 4}')
    assert aggs.finalize(p) == [[6, 4, 4.0, 4]]


@pytest.mark.parametrize("seed", range(20))
def test_any_split_merges_to_the_single_pass_result(seed):
    rnd = random.Random(seed)
    aggs = Aggregates(SPECS)
    data = rows(seed, rnd.randint(0, 300))
    cuts = sorted(rnd.sample(range(len(data) + 1), min(len(data) + 1, rnd.randint(1, 6))))
    shards = [data[a:b] for a, b in zip([0, *cuts], [*cuts, len(data)], strict=True)]
    partials = [over_the_wire(one_pass(aggs, shard)) for shard in shards]
    rnd.shuffle(partials)
    merged = aggs.new()
    for p in partials:
        merged = aggs.merge(merged, p)
    assert aggs.finalize(merged) == [pytest.approx(aggs.finalize(one_pass(aggs, data))[0])]
    assert aggs.finalize(merged) == [pytest.approx(reference(data))]


def test_huge_sums_stay_exact_and_msgpack_safe():
    aggs = Aggregates([["sum", ["key"]], ["avg", ["key"]], ["max", ["*", ["key"], ["key"]]], ["min", ["neg", ["key"]]]])
    top = 2**64 - 1
    p = aggs.new()
    for _ in range(3):
        aggs.update(p, top, b"")
    p = over_the_wire(p)  # a plain int above 2**64 would not pack
    q = aggs.merge(p, over_the_wire(one_pass(aggs, [(top, b"")])))
    assert aggs.finalize(q) == [[4 * top, float(top), top * top, -top]]
    assert type(aggs.finalize(q)[0][0]) is int


def test_min_max_mix_ints_and_floats():
    aggs = Aggregates([["min", ["json", ["t"]]], ["max", ["json", ["t"]]]])
    p = one_pass(aggs, [(1, b'{"t": 2}'), (2, b'{"t": 1.5}'), (3, b'{"t": 3}')])
    assert aggs.finalize(p) == [[1.5, 3]]


# --- grouped --------------------------------------------------------------------------------------


def test_grouped_partials_merge_and_finalize():
    aggs = Aggregates([["bucket"], ["count"], ["avg", ["json", ["t"]]]], bucket_ns=10)
    data = [(1, b'{"t": 1}'), (9, b'{"t": 3}'), (10, b'{"t": 5}'), (25, b"x"), (29, b'{"t": 7}')]
    p = one_pass(aggs, data)
    assert p == [[0, [None, 2, [4, 2]]], [10, [None, 1, [5, 1]]], [20, [None, 2, [7, 1]]]]
    assert aggs.finalize(p) == [[0, 2, 2.0], [10, 1, 5.0], [20, 2, 7.0]]
    assert aggs.finalize(p, descending=True) == [[20, 2, 7.0], [10, 1, 5.0], [0, 2, 2.0]]
    # Shards overlapping in buckets (a bucket cut by a shard boundary) merge back together.
    a, b = over_the_wire(one_pass(aggs, data[:2])), over_the_wire(one_pass(aggs, data[2:]))
    assert aggs.merge(b, a) == p
    assert aggs.finalize(aggs.new()) == []


def test_grouped_out_of_order_rows():
    aggs = Aggregates([["bucket"], ["count"]], bucket_ns=10)
    p = one_pass(aggs, [(55, b""), (5, b""), (31, b""), (58, b""), (7, b"")])
    assert aggs.finalize(p) == [[0, 2], [30, 1], [50, 2]]


@pytest.mark.parametrize("seed", range(5))
def test_grouped_split_merge(seed):
    rnd = random.Random(seed)
    aggs = Aggregates([["count"], ["sum", ["json", ["t"]]], ["bucket"], ["max", ["key"]]], bucket_ns=50_000)
    data = rows(seed, 300)
    cut = rnd.randint(0, len(data))
    merged = aggs.merge(over_the_wire(one_pass(aggs, data[cut:])), over_the_wire(one_pass(aggs, data[:cut])))
    assert aggs.finalize(merged) == aggs.finalize(one_pass(aggs, data))


# --- hostile input ---------------------------------------------------------------------------------


@pytest.mark.parametrize(("specs", "bucket"), [
    ([], None), ("count", None), ([["count", ["key"], 1]], None), ([["sum"]], None), ([["median", ["key"]]], None),
    ([["sum", ["value"]]], None), ([["bucket"]], None), ([["count"]], 0), ([["count"]], 1.5), ([["count"]], 2**64),
    ([["count"]] * 65, None), ([[]], None), ([["min", ["json", []]]], None), ([[["count"]]], None),
])
def test_bad_specs(specs, bucket):
    with pytest.raises(QueryError, match="bad aggregate|bad filter"):
        Aggregates(specs, bucket)


@pytest.mark.parametrize("partials", [
    None, [], [0], [0, None, None, None, None], [-1, None, None, None], [True, None, None, None],
    [0, "x", None, None], [0, None, None, [0]], [0, None, None, [0, -1]], [0, None, None, [None, 0]],
    [0, None, [1], [0, 0]], [0, None, None, [0, 1.5]], [0, None, "12a", [0, 0]],
])
def test_bad_partials(partials):
    aggs = Aggregates([["count"], ["min", ["key"]], ["sum", ["key"]], ["avg", ["key"]]])
    with pytest.raises(QueryError, match="bad aggregate"):
        aggs.merge(aggs.new(), partials)
    with pytest.raises(QueryError, match="bad aggregate"):
        aggs.finalize(partials)


@pytest.mark.parametrize("partials", [None, [1], [[1]], [[-1, [0]]], [["a", [0]]], [[1, [0], 2]], [[2**64, [0]]],
                                      [[1, [None]]]])
def test_bad_grouped_partials(partials):
    aggs = Aggregates([["count"]], bucket_ns=10)
    with pytest.raises(QueryError, match="bad aggregate"):
        aggs.merge(partials, [])

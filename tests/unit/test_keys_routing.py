import random
from collections import Counter

import pytest

from raftkv.errors import InvalidArgument, InvalidKey, InvalidValue
from raftkv.keys import MAX_VALUE_BYTES, check_key, check_limit, check_value, decode_key, encode_key
from raftkv.routing.placement import COPYSETS, HRW, copysets, initial_place, place
from raftkv.routing.ranges import even_split_points, inclusive_to_half_open, ranges_from_split_points
from raftkv.routing.shardmap import ShardMap, initial_map

pytestmark = pytest.mark.timeout(30)


@pytest.mark.parametrize("bad", [-1, 2**64, 1.0, "1", None, True, b"\x01"])
def test_bad_keys_refused(bad):
    with pytest.raises(InvalidKey):
        check_key(bad)


def test_key_encoding_orders_numerically():
    rng = random.Random(1)
    keys = sorted({rng.randrange(2**64) for _ in range(500)} | {0, 2**64 - 1})
    encoded = [encode_key(k) for k in keys]
    assert encoded == sorted(encoded)
    assert [decode_key(e) for e in encoded] == keys


def test_values():
    assert check_value("é") == "é".encode()
    assert check_value(b"x" * MAX_VALUE_BYTES) == b"x" * MAX_VALUE_BYTES
    for bad in (b"x" * (MAX_VALUE_BYTES + 1), 5, None, ["a"]):
        with pytest.raises(InvalidValue):
            check_value(bad)
    with pytest.raises(InvalidArgument):
        check_limit(-1)


def test_ranges():
    assert inclusive_to_half_open(3, 2) is None
    assert inclusive_to_half_open(0, 2**64 - 1) == (0, 2**64)
    assert ranges_from_split_points(even_split_points(4))[-1][1] == 2**64
    with pytest.raises(ValueError):
        ranges_from_split_points([0])


def test_shard_map_lookup_matches_linear_scan():
    m = initial_map(["n1", "n2", "n3"], 8)
    rng = random.Random(2)
    for key in [0, 2**64 - 1, *(rng.randrange(2**64) for _ in range(300)), *(s.start for s in m.shards)]:
        expected = next(s for s in m.shards if s.start <= key < s.end)
        assert m.shard_for_key(key) == expected
    assert m == ShardMap.from_dict(m.to_dict())


def test_shards_for_range_clips_and_prunes():
    m = initial_map(["n1", "n2", "n3"], 8)
    assert len(m.shards_for_range(0, 2**64)) == 8
    b = m.shards[3].start
    segs = m.shards_for_range(b - 1, b + 1)
    assert [(s.id, lo, hi) for s, lo, hi in segs] == [(m.shards[2].id, b - 1, b), (m.shards[3].id, b, b + 1)]
    assert m.shards_for_range(5, 5) == []


def test_map_invariant_checked():
    m = initial_map(["n1"], 2, replication=1)
    with pytest.raises(ValueError):
        ShardMap(1, (m.shards[1],))


def test_rendezvous_moves_only_what_a_new_node_wins():
    nodes = [f"n{i}" for i in range(1, 6)]
    before = {f"s{i}": place(f"s{i}", nodes, 3) for i in range(200)}
    after = {f"s{i}": place(f"s{i}", [*nodes, "n6"], 3) for i in range(200)}
    for sid in before:
        assert len(after[sid]) == 3 and len(set(after[sid])) == 3
        if "n6" not in after[sid]:
            assert after[sid] == before[sid]  # shards the new node does not win do not move
        else:
            assert len(set(before[sid]) - set(after[sid])) == 1  # it displaces exactly one replica
    moved = sum("n6" in a for a in after.values())
    assert 80 <= moved <= 160  # ~3/6 of shards gain the new node


def test_a_new_cluster_of_six_places_its_shards_in_two_copysets():
    nodes = ["n4", "n2", "n6", "n1", "n5", "n3"]  # any order: the groups come from the sorted ids
    m = initial_map(nodes, 12, scheme=COPYSETS)
    groups = {frozenset(s.replicas) for s in m.shards}
    assert groups == {frozenset({"n1", "n2", "n3"}), frozenset({"n4", "n5", "n6"})}
    per_node = Counter(n for s in m.shards for n in s.replicas)
    assert set(per_node.values()) == {6}  # balanced: the planner has nothing to move
    # each node shares shards with its two copyset peers only
    peers = {n: {p for s in m.shards if n in s.replicas for p in s.replicas} - {n} for n in per_node}
    assert all(len(p) == 2 for p in peers.values()), peers
    assert initial_map(sorted(nodes), 12, scheme=COPYSETS) == m


@pytest.mark.parametrize("count", [1, 2, 3, 4, 5, 7, 8])
def test_nodes_that_do_not_form_two_copysets_are_placed_by_hrw(count):
    nodes = [f"n{i}" for i in range(1, count + 1)]
    factor = min(3, count)
    m = initial_map(nodes, 8, replication=factor, scheme=COPYSETS)
    assert [list(s.replicas) for s in m.shards] == [place(s.id, nodes, factor) for s in m.shards]


@pytest.mark.parametrize("count", [6, 9])
def test_the_hrw_scheme_places_as_clusters_made_before_copysets(count):
    # what a data dir made before copysets records (no scheme): its initial map must not change
    nodes = [f"n{i}" for i in range(1, count + 1)]
    m = initial_map(nodes, 12)
    assert m == initial_map(nodes, 12, scheme=HRW)
    assert [list(s.replicas) for s in m.shards] == [place(s.id, nodes, 3) for s in m.shards]
    assert m != initial_map(nodes, 12, scheme=COPYSETS)


def test_copysets_of_nine_nodes_take_the_shards_in_turn():
    nodes = [f"n{i}" for i in range(1, 10)]
    assert copysets(nodes, 3) == [["n1", "n2", "n3"], ["n4", "n5", "n6"], ["n7", "n8", "n9"]]
    m = initial_map(nodes, 12, scheme=COPYSETS)
    for i, s in enumerate(m.shards):
        assert set(s.replicas) == set(copysets(nodes, 3)[i % 3])
    assert copysets(nodes, 1) is None and copysets(nodes[:6], 4) is None
    with pytest.raises(ValueError, match="unknown placement"):
        initial_place(0, "s0000", nodes, 3, "random")

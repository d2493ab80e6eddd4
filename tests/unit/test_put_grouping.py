"""How the client cuts a put_many: pairs grouped by owning shard (striped segments included), and
each shard's pairs cut into requests within the batch limits.  Pure functions, no cluster."""

from __future__ import annotations

import random

import pytest

from raftkv.client.aio import BATCH_BYTES, BATCH_KEYS, put_batches
from raftkv.routing.shardmap import Shard, ShardMap

pytestmark = pytest.mark.timeout(60)


def _striped_map() -> ShardMap:
    """Range shards with a segment of three stripes between them."""
    r = ("n1", "n2", "n3")
    q = 2**62
    return ShardMap(5, (Shard("s0", 0, q, r), Shard("s1", q, 2 * q, r),
                        *(Shard(f"t{i}", 2 * q, 3 * q, r, stripe=(i, 3)) for i in range(3)),
                        Shard("s2", 3 * q, 2**64, r)))


@pytest.mark.parametrize("order", ["sorted", "shuffled"])
def test_grouping_matches_shard_for_key_pair_by_pair(order):
    smap = _striped_map()
    assert any(s.stripe is not None for s in smap.shards)
    rng = random.Random(7)
    edges = [s.start for s in smap.shards] + [s.end - 1 for s in smap.shards]
    keys = [rng.randrange(2**64) for _ in range(3000)] + edges
    keys += [2**63 + i for i in range(3000)]  # a run through the stripes
    keys = sorted(keys) if order == "sorted" else rng.sample(keys, len(keys))
    pairs = [(k, b"v%d" % i) for i, k in enumerate(keys)]
    expected: dict[str, list] = {}
    for p in pairs:
        expected.setdefault(smap.shard_for_key(p[0]).id, []).append(p)
    got = smap.group_by_shard(pairs)
    assert got == expected
    assert all(got.values()) and len(got) >= 5  # no empty group; the stripes are among them


def test_put_batches_keep_order_and_limits():
    rng = random.Random(11)
    for sizes in ([100] * 12_345, [rng.choice([0, 10, 300_000, 1 << 20]) for _ in range(200)],
                  [rng.randrange(0, 5000) for _ in range(20_000)], [1 << 20], []):
        pairs = [(i, b"x" * n) for i, n in enumerate(sizes)]
        batches = list(put_batches(pairs))
        assert [p for b in batches for p in b] == pairs
        for b in batches:
            assert 0 < len(b) <= BATCH_KEYS
            assert len(b) == 1 or sum(len(v) + 16 for _, v in b) <= BATCH_BYTES
    small = list(put_batches([(i, b"x" * 100) for i in range(12_345)]))
    assert [len(b) for b in small] == [BATCH_KEYS, BATCH_KEYS, 12_345 - 2 * BATCH_KEYS]

"""Key-set algebra, checked against Python sets on a small universe plus the real edges."""

import random

import pytest

from raftkv.keys import MAX_KEY
from raftkv.query import keyset
from raftkv.query.keyset import EMPTY, FULL

pytestmark = pytest.mark.timeout(60)


def test_normalize_sorts_merges_and_drops_empty():
    assert keyset.normalize([(5, 9), (1, 2), (3, 3), (10, 12), (20, 19), (30, 40), (35, 36)]) == (
        (1, 3), (5, 12), (30, 40))
    assert keyset.normalize([]) == EMPTY
    assert keyset.normalize([(3, 3), (1, 1), (2, 2), (7, 7), (7, 7)]) == ((1, 3), (7, 7))


def test_complement_edges():
    assert keyset.complement(EMPTY) == FULL
    assert keyset.complement(FULL) == EMPTY
    assert keyset.complement(((0, 0),)) == ((1, MAX_KEY),)
    assert keyset.complement(((MAX_KEY, MAX_KEY),)) == ((0, MAX_KEY - 1),)
    assert keyset.complement(((0, 0), (MAX_KEY, MAX_KEY))) == ((1, MAX_KEY - 1),)
    assert keyset.complement(((5, 9),)) == ((0, 4), (10, MAX_KEY))


def test_size():
    assert keyset.size(FULL) == 2**64
    assert keyset.size(((1, 3), (7, 7))) == 4
    assert keyset.size(EMPTY) == 0


def _random_set(rnd: random.Random) -> tuple:
    ranges = []
    for _ in range(rnd.randint(0, 4)):
        lo = rnd.choice([0, rnd.randint(0, 40), MAX_KEY - rnd.randint(0, 3)])
        ranges.append((lo, min(MAX_KEY, lo + rnd.randint(-1, 6))))
    return keyset.normalize(ranges)


def _members(ks: tuple, universe: list[int]) -> set[int]:
    return {k for k in universe if any(lo <= k <= hi for lo, hi in ks)}


def test_operations_match_python_sets():
    rnd = random.Random(7)
    universe = list(range(0, 50)) + [MAX_KEY - i for i in range(10)]
    for _ in range(500):
        a, b = _random_set(rnd), _random_set(rnd)
        ma, mb = _members(a, universe), _members(b, universe)
        assert _members(keyset.union(a, b), universe) == ma | mb
        assert _members(keyset.intersect(a, b), universe) == ma & mb
        assert _members(keyset.complement(a), universe) == set(universe) - ma
        for result in (keyset.union(a, b), keyset.intersect(a, b), keyset.complement(a)):
            assert keyset.normalize(result) == result  # always in normal form

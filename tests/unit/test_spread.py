"""Spread scans' pieces without a cluster: what replicas remember of recent writes, views at an
index on a real LevelDB store, shared snapshots, the chunk cuts, and the client's plan."""

import os
import random

import pytest

from raftkv.client.spread import chunk_bounds, replica_order
from raftkv.errors import CursorExpired, RemoteProtocolError
from raftkv.server.cursors import MAX_SHARED, Cursors
from raftkv.storage.leveldb import ShardStore
from raftkv.storage.recent import RecentWrites

pytestmark = pytest.mark.timeout(60)


def test_recent_writes_never_vouch_for_a_range_an_entry_wrote_and_vouch_for_the_rest_while_they_remember():
    rng = random.Random(7)
    for trial in range(200):
        small = trial % 2 == 0  # small bounds: entries are forgotten and the answers must turn to no
        recent = RecentWrites(applied=0, max_keys=12 if small else 10**6, max_bytes=10**9)
        entries = []  # (index, keys written), the truth
        for index in range(1, 30):
            kind = rng.random()
            if kind < 0.15:
                recent.record(index)  # wrote no data (a session or system entry)
                continue
            puts = [[rng.randrange(100), b"x"] for _ in range(rng.randrange(1, 5))]
            deletes = [rng.randrange(100) for _ in range(rng.randrange(3))]
            span = None
            if kind > 0.9:
                a = rng.randrange(100)
                span = (a, a + rng.randrange(1, 20))
            recent.record(index, puts, deletes, span, size=len(puts))
            written = {p[0] for p in puts} | set(deletes) | (set(range(*span)) if span else set())
            entries.append((index, written))
        for _ in range(50):
            since = rng.randrange(0, 31)
            upto = rng.randrange(since, 31)
            lo = rng.randrange(100)
            hi = lo + rng.randrange(1, 40)
            truth = not any(since < i <= upto and any(lo <= k < hi for k in keys) for i, keys in entries)
            got = recent.unchanged(since, upto, lo, hi)
            assert not got or truth, (trial, since, upto, lo, hi)  # sound: never a false yes
            if not small:
                assert got == truth  # complete while every entry is remembered
    assert not RecentWrites(applied=5).unchanged(6, 5, 0, 10)  # behind the index asked: no


def test_a_view_at_an_index_shows_that_state_for_ranges_written_since_nowhere(store):
    store.apply(1, puts=[(k, b"one") for k in range(100)])
    store.apply(2, puts=[(10, b"two")], deletes=[20])
    store.apply(3, puts=[(80, b"three")])
    assert store.open_view().index == 3
    view = store.open_view_at(1, 30, 80)  # entries 2 and 3 wrote outside [30, 80)
    assert view is not None and view.index == 1
    assert view.scan(30, 80, limit=100)[0] == [(k, b"one") for k in range(30, 80)]
    view.close()
    assert store.open_view_at(1, 0, 15) is None  # entry 2 wrote key 10
    assert store.open_view_at(1, 20, 21) is None  # ... and deleted 20
    assert store.open_view_at(2, 70, 81) is None  # entry 3 wrote key 80
    assert store.open_view_at(2, 0, 80) is not None  # since 2, only 80 changed
    assert store.open_view_at(4, 0, 10) is None  # the store is behind index 4
    store.apply(4, delete_span=(90, 95))
    assert store.open_view_at(3, 0, 90) is not None and store.open_view_at(3, 94, 200) is None


def test_a_reopened_or_replaced_store_does_not_vouch_for_what_it_applied_before(tmp_path):
    path = str(tmp_path / "s")
    s = ShardStore(path)
    s.apply(1, puts=[(1, b"a")])
    s.apply(2, puts=[(2, b"b")])
    s.close()
    s = ShardStore(path)
    assert s.open_view_at(1, 100, 200) is None  # what entry 2 wrote is not known after a restart
    assert s.open_view_at(2, 0, 10) is not None  # the current state is always known
    index, items = s.snapshot_items()
    s.install(items, index + 5)
    assert s.open_view_at(index, 100, 200) is None and s.open_view_at(index + 5, 0, 10) is not None
    s.close()


def test_a_shared_view_lasts_until_its_last_holder_lets_go_and_the_store_can_still_end_it(store):
    store.apply(1, puts=[(1, b"a")])
    view = store.open_view()
    assert view.share() is view
    view.close()
    assert not view.closed and view.scan(0, 10)[0] == [(1, b"a")]
    view.close()
    assert view.closed
    other = store.open_view().share()
    index, items = store.snapshot_items()
    store.install(items, index + 1)  # the state is replaced: every holder's view ends
    assert other.closed


def test_shared_snapshots_fork_views_and_are_bounded_and_checked(store):
    store.apply(1, puts=[(k, b"v") for k in range(10)])
    cursors = Cursors("n1")
    view = store.open_view()
    handle = cursors.share("s1", view, now=0.0)
    view.close()  # the first page's holder is done: the shared hold keeps the snapshot
    store.apply(2, puts=[(3, b"later")])
    forked = cursors.fork(handle, "s1", now=1.0)
    assert forked is view and forked.scan(0, 10)[0] == [(k, b"v") for k in range(10)]
    forked.close()
    for bad in (["n2", handle[1]], ["n1", 10**9], "junk", None):
        with pytest.raises(CursorExpired):
            cursors.fork(bad, "s1", now=1.0)
    with pytest.raises(CursorExpired):
        cursors.fork(handle, "s2", now=1.0)  # another shard's
    cursors.expire(0.5)
    assert not view.closed  # used at 1.0: not idle
    for i in range(MAX_SHARED):
        cursors.share("s1", store.open_view(), now=2.0 + i)
    assert view.closed and cursors.shared == MAX_SHARED  # the oldest shared snapshot made room
    with pytest.raises(CursorExpired):
        cursors.fork(handle, "s1", now=3.0)


def test_a_released_shared_snapshot_goes_at_once_and_one_closed_under_it_is_expired(store):
    store.apply(1, puts=[(1, b"a")])
    cursors = Cursors("n1")
    view = store.open_view()
    handle = cursors.share("s1", view, now=0.0)
    view.close()
    assert not cursors.release(handle, "s2") and not cursors.release(["n2", handle[1]], "s1")
    assert cursors.release(handle, "s1") and view.closed and cursors.shared == 0
    assert not cursors.release(handle, "s1")  # twice: nothing held
    other = store.open_view()
    handle = cursors.share("s1", other, now=0.0)
    other.release()  # what an installed snapshot does to every view of the replaced state
    with pytest.raises(CursorExpired):
        cursors.fork(handle, "s1", now=1.0)
    assert cursors.share("s1", other, now=1.0) is None


def test_chunk_cuts_fall_inside_the_range_in_order_and_split_it_into_similar_chunks(store):
    keys = [1_000_000 + 7 * i for i in range(40_000)]
    for n in range(0, len(keys), 5000):
        store.apply(n + 1, puts=[(k, os.urandom(64)) for k in keys[n:n + 5000]])
    store._db.compact_range()  # on disk: LevelDB's size estimates count only tables
    start, end = keys[0], keys[-1] + 1
    page_end = keys[1000]
    cuts = store.chunk_cuts(page_end, end, rows_per_chunk=4000, sample=(start, page_end, 1000))
    assert cuts == sorted(set(cuts)) and all(page_end < c < end for c in cuts)
    assert 5 <= len(cuts) <= 15  # 39,000 rows left in chunks of about 4,000
    edges = [page_end, *cuts, end]
    sizes = [sum(1 for k in keys if a <= k < b) for a, b in zip(edges, edges[1:], strict=False)]
    assert max(sizes) <= 3 * 4000 and min(sizes) >= 4000 // 3, sizes
    few = store.chunk_cuts(page_end, end, 4000, (start, page_end, 1000), max_cuts=3)
    assert len(few) == 3 and few == sorted(few)  # bounded: 4 bigger chunks
    assert store.chunk_cuts(page_end, end, 10**9, (start, page_end, 1000)) == []  # one chunk would do
    assert store.chunk_cuts(end, end + 100, 10, (start, page_end, 1000)) == []  # nothing there
    assert store.chunk_cuts(page_end, end, 10, (end, end + 5, 3)) == []  # a sample with no size


def test_rows_still_in_the_memtable_are_cut_by_key_span_at_the_pages_density(store):
    # LevelDB sizes only its tables: a range written a moment ago (a time series' newest rows)
    # has no size yet, and used to get no cuts at all, so its scan was never spread
    keys = [5_000_000 + 3 * i for i in range(20_000)]
    for n in range(0, len(keys), 5000):
        store.apply(n + 1, puts=[(k, b"v" * 64) for k in keys[n:n + 5000]])
    start, end, page_end = keys[0], keys[-1] + 1, keys[1000]
    assert store._db.approximate_size(store._bound(start), store._bound(end)) == 0  # all in the memtable
    cuts = store.chunk_cuts(page_end, end, rows_per_chunk=4000, sample=(start, page_end, 1000))
    assert cuts == sorted(set(cuts)) and all(page_end < c < end for c in cuts)
    edges = [page_end, *cuts, end]
    sizes = [sum(1 for k in keys if a <= k < b) for a, b in zip(edges, edges[1:], strict=False)]
    assert len(sizes) == 4 and max(sizes) - min(sizes) <= 2, sizes  # 19,000 rows: 4 chunks of 4,750
    # the page's density, not the width of the range it was asked for: a scan from 0 reads the
    # same page and gets the same cuts
    assert store.chunk_cuts(page_end, end, 4000, (0, page_end, 1000)) == cuts
    two = store.chunk_cuts(page_end, end, 4000, (start, page_end, 1000), max_cuts=2)
    assert len(two) == 2 and two == sorted(two)  # bounded: 3 bigger chunks
    assert store.chunk_cuts(page_end, end, 10**9, (start, page_end, 1000)) == []  # one chunk would do
    assert store.chunk_cuts(page_end, end, 10, (start, start + 1, 1)) == []  # one row: no density


def test_chunk_bounds_check_a_nodes_cuts_and_keep_visiting_order():
    assert chunk_bounds([20, 50], 10, 90, False) == [(10, 20), (20, 50), (50, 90)]
    assert chunk_bounds([50, 20], 10, 90, True) == [(50, 90), (20, 50), (10, 20)]
    for bad in ([], [10], [90], [50, 20], [20, 20], ["20"], [True], "20", None):
        with pytest.raises(RemoteProtocolError):
            chunk_bounds(bad, 10, 90, False)
    with pytest.raises(RemoteProtocolError):
        chunk_bounds([20, 50], 10, 90, True)  # a reverse scan's cuts come descending


def test_chunks_go_to_the_followers_first_then_the_leader():
    assert replica_order(["n1", "n2", "n3"], "n2") == ["n1", "n3", "n2"]
    assert replica_order(["n1", "n2", "n3"], None) == ["n1", "n2", "n3"]

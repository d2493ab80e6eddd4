"""Client routing by key range while shards split: scans, range_steps, aggregates, put_many, delete_range.

The pure pieces (map patching, the k-way stripe merge, routing the head of a scan's work list)
are tested directly; the rest runs the real :class:`AsyncClient` against an in-memory cluster
(fake_cluster.py) that splits shards while requests are in flight.
"""

from __future__ import annotations

import asyncio
import collections
import random
from typing import Any

import pytest

from raftkv import errors
from raftkv.client.aio import SCAN_PREFETCH_SHARDS, KeyMerge, first_segment, patched_map, route_ahead
from raftkv.keys import KEY_SPACE_END, MAX_KEY
from raftkv.query import executor
from raftkv.routing.shardmap import Shard, initial_map

from .fake_cluster import FakeClient, FakeCluster, striped_map

pytestmark = pytest.mark.timeout(60)

SMALL = initial_map(["n1", "n2", "n3"], 4, split_points=[1000, 2000, 3000])


def rows_of(keys: Any) -> dict[int, bytes]:
    return {k: b"v%d" % k for k in keys}


def run(coro: Any) -> Any:
    async def main() -> Any:
        result = await coro
        for _ in range(5):  # cancelled requests take a turn or two of the loop to wind down
            await asyncio.sleep(0)
        # nothing the client started may outlive the operation
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return result

    return asyncio.run(main())


async def collect(client: FakeClient, lo: int, hi: int, **kw: Any) -> list[tuple[int, bytes]]:
    return [row async for row in client.scan(lo, hi, **kw)]


# --- patched_map ------------------------------------------------------------------------------


def test_a_newer_split_patches_the_cached_map():
    split = SMALL.split("s0001", 1500, "s0009")
    left, right = split.shard_by_id("s0001"), split.shard_by_id("s0009")
    got = patched_map(SMALL, {"epoch": split.epoch, "shards": [left.to_dict(), right.to_dict()]})
    assert got == split and got.shard_for_key(1499) == left and got.shard_for_key(1500) == right


def test_what_cannot_patch_the_map_asks_for_a_whole_map():
    split = SMALL.split("s0001", 1500, "s0009")
    both = [split.shard_by_id("s0001").to_dict(), split.shard_by_id("s0009").to_dict()]
    assert patched_map(SMALL, {"epoch": split.epoch}) is None  # an older node: no shards
    assert patched_map(SMALL, {"epoch": split.epoch, "shards": []}) is None
    assert patched_map(None, {"epoch": split.epoch, "shards": both}) is None
    assert patched_map(split, {"epoch": SMALL.epoch, "shards": [SMALL.shards[1].to_dict()]}) is None  # older
    assert patched_map(SMALL, {"epoch": split.epoch, "shards": both[1:]}) is None  # leaves a gap: invalid
    assert patched_map(SMALL, {"epoch": split.epoch, "shards": [{"id": "s0001"}]}) is None  # malformed
    assert patched_map(SMALL, {"epoch": "7", "shards": both}) is None
    assert patched_map(split, {"epoch": split.epoch, "shards": both}) is None  # nothing new
    # a record with a lower generation than the cache's (a node that missed the split)
    older = SMALL.shard_by_id("s0001").to_dict()
    assert patched_map(split, {"epoch": split.epoch + 1, "shards": [older]}) is None


def test_an_equal_epoch_still_patches_a_partly_stale_cache():
    """A cache patched to epoch E may still hold older records for other ranges: a node at E fixes them."""
    e2 = SMALL.split("s0001", 1500, "s0009")
    e3 = e2.split("s0002", 2500, "s0010")
    hybrid = patched_map(SMALL, {"epoch": e3.epoch, "shards": [e3.shard_by_id("s0002").to_dict(),
                                                               e3.shard_by_id("s0010").to_dict()]})
    assert hybrid is not None and hybrid.epoch == e3.epoch and hybrid.shard_by_id("s0009") is None
    fixed = patched_map(hybrid, {"epoch": e3.epoch, "shards": [e3.shard_by_id("s0001").to_dict(),
                                                              e3.shard_by_id("s0009").to_dict()]})
    assert fixed == e3


# --- KeyMerge ---------------------------------------------------------------------------------


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("seed", range(30))
def test_key_merge_interleaves_stripes_in_key_order(seed, reverse):
    rnd = random.Random(seed)
    k = rnd.randint(1, 6)
    keys = rnd.sample(range(500), rnd.randint(0, 200))
    streams = [sorted((x for x in keys if x % k == i), reverse=reverse) for i in range(k)]
    pages = []
    for s in streams:  # cut each stream into pages, empty ones included (a filter kept nothing)
        cuts, out = sorted(rnd.sample(range(len(s) + 1), min(len(s) + 1, rnd.randint(1, 5)))), []
        for a, b in zip([0, *cuts], [*cuts, len(s)], strict=True):
            out.append([(x, b"") for x in s[a:b]])
        pages.append(collections.deque(out))
    merge = KeyMerge(k, reverse)
    got: list[int] = []
    while not merge.exhausted():
        hungry = merge.hungry()
        for i in rnd.sample(hungry, len(hungry)):
            page = pages[i].popleft()
            merge.feed(i, page, finished=not pages[i])
        out = merge.take()
        got += [x for x, _ in out]
        if out:
            assert merge.last == out[-1][0]
            # everything on one side of ``last`` went out, nothing on the other
            assert all((x > merge.last) if reverse else (x < merge.last) for x in got[:-1])
    assert got == sorted(keys, reverse=reverse)


def test_key_merge_waits_for_a_hungry_stream_and_refuses_an_early_feed():
    merge = KeyMerge(2)
    merge.feed(0, [(1, b""), (5, b"")], finished=False)
    assert merge.hungry() == [1] and merge.take() == []
    merge.feed(1, [(2, b"")], finished=False)
    assert merge.take() == [(1, b""), (2, b"")]  # stops: stream 1's next key is unknown
    with pytest.raises(ValueError):
        merge.feed(0, [(9, b"")], finished=True)
    merge.feed(1, [], finished=True)
    assert merge.take() == [(5, b"")] and merge.hungry() == [0]


# --- route_ahead ------------------------------------------------------------------------------


class Unit:
    def __init__(self, shards: tuple[Shard, ...], lo: int, hi: int) -> None:
        self.shards, self.lo, self.hi, self.started = shards, lo, hi, False

    def start(self) -> None:
        self.started = True


@pytest.mark.parametrize("reverse", [False, True])
def test_route_ahead_routes_one_segment_at_a_time_and_starts_the_prefetch_window(reverse):
    smap = initial_map(["n1", "n2", "n3"], 10)
    work: collections.deque[Any] = collections.deque([(5, KEY_SPACE_END - 5)])
    head = route_ahead(work, smap, reverse, Unit)
    units = [u for u in work if isinstance(u, Unit)]
    assert head is work[0] and all(u.started for u in units)
    assert len(units) == 1 + SCAN_PREFETCH_SHARDS  # the head and the window behind it
    assert isinstance(work[-1], tuple) and len(work) == len(units) + 1  # the rest is not routed yet
    order = [u.lo for u in units]
    assert order == sorted(order, reverse=reverse)
    assert (head.lo, head.hi) == ((smap.shards[-1].start, KEY_SPACE_END - 5) if reverse else (5, smap.shards[0].end))
    # everything is covered once: units then the unrouted rest
    spans = sorted([(u.lo, u.hi) for u in units] + [work[-1]])
    assert spans[0][0] == 5 and spans[-1][1] == KEY_SPACE_END - 5
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_first_segment_clips_the_segment_at_either_end_of_the_range():
    smap = striped_map(2000, 3)
    shards, lo, hi = first_segment(smap, 5, 1500)
    assert [s.id for s in shards] == ["a"] and (lo, hi) == (5, 1000)
    shards, lo, hi = first_segment(smap, 5, 2500, reverse=True)
    assert [s.id for s in shards] == ["t0", "t1", "t2"] and (lo, hi) == (2000, 2500)
    shards, lo, hi = first_segment(smap, 1200, 1300, reverse=True)
    assert [s.id for s in shards] == ["b"] and (lo, hi) == (1200, 1300)


def test_route_ahead_counts_stripes_against_the_window():
    smap = striped_map(1 << 40, SCAN_PREFETCH_SHARDS + 2)
    work: collections.deque[Any] = collections.deque([(0, KEY_SPACE_END)])
    route_ahead(work, smap, False, Unit)
    units = [u for u in work if isinstance(u, Unit)]
    assert [u.started for u in units] == [True, True, False]  # the striped tail does not fit the window


# --- scans through splits ----------------------------------------------------------------------


def split_randomly(rnd: random.Random, every: int, keys_below: int) -> Any:
    """A ``before`` hook splitting a random shard at a random key every ``every`` requests or so."""

    def hook(cluster: FakeCluster, shard_id: str, op: str, req: dict[str, Any]) -> None:
        if rnd.randrange(every):
            return
        # prefer the shard being read, in the part it has still to read
        shard = cluster.map.shard_by_id(shard_id)
        if shard is None or shard.stripe is not None or rnd.random() < 0.3:
            shard = rnd.choice([s for s in cluster.map.shards if s.stripe is None])
        lo, hi = shard.start, min(shard.end, keys_below)
        if hi - lo >= 2:
            cluster.split(shard.id, rnd.randrange(lo + 1, hi))

    return hook


@pytest.mark.parametrize("carry", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("seed", range(8))
def test_scans_return_every_row_once_in_order_while_shards_split(seed, reverse, carry):
    rnd = random.Random(seed)
    rows = rows_of(rnd.sample(range(4000), 900))
    cluster = FakeCluster(SMALL, rows, carry_shards=carry)
    cluster.before = split_randomly(rnd, 3, 4000)
    lo, hi = rnd.randrange(0, 500), rnd.randrange(3500, 4200)

    async def go() -> Any:
        async with FakeClient(cluster, page_keys=rnd.randint(1, 40)) as db:
            got = await collect(db, lo, hi, reverse=reverse)
            return got, db

    got, db = run(go())
    assert got == sorted(((k, v) for k, v in rows.items() if lo <= k <= hi), reverse=reverse)
    assert len(cluster.map.shards) > 8  # it did split, many times
    if carry:
        # the StaleRoutes' shards patched the cache, mostly (a split outside the requested range
        # leaves a gap the carried shards cannot fill: then the whole map is fetched)
        assert db.map_fetches < cluster.stale_routes


@pytest.mark.parametrize("reverse", [False, True])
def test_a_limited_scan_stops_early_and_leaves_nothing_running(reverse):
    rnd = random.Random(5)
    rows = rows_of(range(0, 4000, 3))
    cluster = FakeCluster(SMALL, rows)
    cluster.before = split_randomly(rnd, 2, 4000)

    async def go() -> Any:
        async with FakeClient(cluster, page_keys=7) as db:
            return await collect(db, 0, MAX_KEY, reverse=reverse, limit=100)

    assert run(go()) == sorted(rows.items(), reverse=reverse)[:100]


def test_a_filtered_scan_with_empty_pages_and_lost_cursors_goes_on():
    rnd = random.Random(9)
    rows = rows_of(range(4000))
    cluster = FakeCluster(SMALL, rows)
    split = split_randomly(rnd, 4, 4000)

    def hook(c: FakeCluster, shard_id: str, op: str, req: dict[str, Any]) -> None:
        c.expire_cursors = rnd.random() < 0.2
        split(c, shard_id, op, req)

    cluster.before = hook

    async def go() -> Any:
        async with FakeClient(cluster, page_keys=5) as db:
            return await collect(db, 0, MAX_KEY, filter="even")

    assert run(go()) == [(k, v) for k, v in sorted(rows.items()) if k % 2 == 0]


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("seed", range(6))
def test_striped_segments_are_merged_in_key_order_and_survive_a_reshape(seed, reverse):
    rnd = random.Random(seed)
    tail = 2000
    rows = rows_of(rnd.sample(range(6000), 1500))
    cluster = FakeCluster(striped_map(tail, 3), rows)
    reshapes = iter(sorted(rnd.sample(range(tail + 1, 6000), 3)))
    split = split_randomly(rnd, 5, tail)

    def hook(c: FakeCluster, shard_id: str, op: str, req: dict[str, Any]) -> None:
        split(c, shard_id, op, req)
        shard = c.map.shard_by_id(shard_id)
        if shard is not None and shard.stripe is not None and rnd.random() < 0.2:
            at = next(reshapes, None)
            if at is not None:
                c.reshape_stripes(at, rnd.randint(1, 4))

    cluster.before = hook

    async def go() -> Any:
        async with FakeClient(cluster, page_keys=rnd.randint(2, 30)) as db:
            return await collect(db, 0, MAX_KEY, reverse=reverse)

    assert run(go()) == sorted(rows.items(), reverse=reverse)
    assert sum(s.stripe is not None for s in cluster.map.shards) > 3  # reshaped at least once


def test_a_map_that_never_settles_ends_in_unavailable_not_a_hang():
    cluster = FakeCluster(SMALL, rows_of(range(100)))

    def hook(c: FakeCluster, shard_id: str, op: str, req: dict[str, Any]) -> None:
        shard = c.map.shard_by_id(shard_id)
        if shard is not None and shard.end - shard.start >= 2:
            c.split(shard_id, shard.start + 1 if shard.start < req["start"] else shard.end - 1)

    cluster.before = hook

    async def go() -> Any:
        async with FakeClient(cluster, timeout=0.3) as db:
            with pytest.raises(errors.Unavailable):
                await collect(db, 0, 999)

    run(go())


# --- range_steps and aggregates ----------------------------------------------------------------


@pytest.mark.parametrize("seed", range(8))
def test_range_steps_cover_every_key_once_through_splits_reshapes_and_lost_cursors(seed):
    rnd = random.Random(seed)
    tail = 2000
    rows = rows_of(rnd.sample(range(6000), 800))
    cluster = FakeCluster(striped_map(tail, 2), rows)
    split = split_randomly(rnd, 4, tail)
    reshapes = iter(sorted(rnd.sample(range(tail + 1, 6000), 2)))

    def hook(c: FakeCluster, shard_id: str, op: str, req: dict[str, Any]) -> None:
        split(c, shard_id, op, req)
        c.expire_cursors = rnd.random() < 0.1
        if rnd.random() < 0.04:
            at = next(reshapes, None)
            if at is not None:
                c.reshape_stripes(at, rnd.randint(1, 3))

    cluster.before = hook
    lo, hi = rnd.randrange(0, 300), rnd.randrange(5000, 6500)
    fields = {"aggs": [["count"], ["sum", ["key"]], ["min", ["key"]]], "bucket_ns": None, "filter": None}
    events: list[str] = []

    async def go() -> Any:
        parts: dict[int, list[list[int]]] = {}
        kept: list[int] = []
        done: set[int] = set()
        async with FakeClient(cluster) as db:
            async for step in db.range_steps("aggregate", lo, hi, fields, parallel=rnd.randint(1, 5),
                                             restart_on_expiry=True):
                events.append(step.kind)
                assert step.part not in done
                if step.kind == "reply":
                    parts.setdefault(step.part, []).append(step.reply["partials"])
                elif step.kind == "discard":
                    parts.pop(step.part, None)
                else:
                    done.add(step.part)
                    kept += [p[0] for p in parts.pop(step.part, [])]
        assert not parts
        return sum(kept)

    count = run(go())
    assert count == sum(1 for k in rows if lo <= k <= hi)
    assert "discard" in events


@pytest.mark.parametrize("seed", range(5))
def test_aggregate_queries_are_exact_while_shards_split(seed):
    rnd = random.Random(seed)
    rows = {k: b'{"t": %d}' % (k % 17) for k in rnd.sample(range(4000), 700)}
    cluster = FakeCluster(SMALL, rows)
    split = split_randomly(rnd, 3, 4000)

    def hook(c: FakeCluster, shard_id: str, op: str, req: dict[str, Any]) -> None:
        split(c, shard_id, op, req)
        c.expire_cursors = rnd.random() < 0.1

    cluster.before = hook

    async def go() -> Any:
        async with FakeClient(cluster) as db:
            res = await db.query("SELECT count(*), sum(value->'t'), max(key) FROM kv WHERE key BETWEEN 100 AND 3900")
            plain = await res.rows()
            res = await db.query("SELECT count(*) FROM kv WHERE key IN (5, 1000, 1001, 2999, 3000, 3001) "
                                 "OR key BETWEEN 1200 AND 2800")
            return plain, await res.rows()

    plain, listed = run(go())
    inside = [k for k in rows if 100 <= k <= 3900]
    assert plain == [(len(inside), sum(k % 17 for k in inside), max(inside))]
    wanted = {5, 1000, 1001, 2999, 3000, 3001} | set(range(1200, 2801))
    assert listed == [(len(wanted & rows.keys()),)]


# --- writes ------------------------------------------------------------------------------------


def test_a_batch_split_under_it_is_resent_in_pieces_with_its_own_session_number():
    """The first try commits, its reply is lost, the shard splits: the pieces must not apply it again."""
    cluster = FakeCluster(SMALL)
    pairs = [(k, b"new") for k in range(1100, 1200)]
    seen: list[list[Any]] = []

    def hook(c: FakeCluster, shard_id: str, op: str, req: dict[str, Any]) -> None:
        seen.append(req["session"])
        if len(seen) == 1:
            c.lose_next_reply.add("put")  # applied, but the client hears a timeout ...
        elif len(seen) == 2:
            c.split(shard_id, 1150)  # ... and the shard splits before the retry arrives
        else:
            assert c.client is not None and req["session"][1] in c.client._session._open  # still open

    cluster.before = hook

    async def go() -> Any:
        async with FakeClient(cluster) as db:
            assert await db.put_many(pairs) == len(pairs)
            return dict(db._session._open)

    assert run(go()) == {}  # every number closed afterwards
    first = seen[0]
    assert len(seen) >= 4 and all(s == first for s in seen)  # the pieces reuse [client id, seq, low]
    assert [(sid, seq) for sid, seq, _ in cluster.applied] == [("s0001", first[1])]  # applied once
    assert {k: cluster.rows[k] for k, _ in pairs} == dict(pairs)


def test_put_many_lands_every_pair_once_while_shards_split():
    rnd = random.Random(3)
    cluster = FakeCluster(SMALL)
    cluster.before = split_randomly(rnd, 2, 4000)
    pairs = [(k, b"v%d" % k) for k in rnd.sample(range(4000), 2000)]

    async def go() -> None:
        async with FakeClient(cluster) as db:
            await db.put_many(pairs)

    run(go())
    assert cluster.rows == dict(pairs)
    applied = [k for _, _, keys in cluster.applied for k in keys]
    assert sorted(applied) == sorted(k for k, _ in pairs)


@pytest.mark.parametrize("lose", [False, True])
def test_delete_range_counts_and_deletes_everything_while_shards_split(lose):
    rnd = random.Random(4)
    rows = rows_of(range(0, 4000, 2))
    cluster = FakeCluster(SMALL, rows)
    split = split_randomly(rnd, 3, 4000)

    def hook(c: FakeCluster, shard_id: str, op: str, req: dict[str, Any]) -> None:
        if lose and rnd.random() < 0.2:
            c.lose_next_reply.add("delete_range")
        split(c, shard_id, op, req)

    cluster.before = hook

    async def go() -> int:
        async with FakeClient(cluster) as db:
            return await db.delete_range(500, 3500)

    deleted = run(go())
    assert deleted == sum(1 for k in rows if 500 <= k <= 3500)
    assert sorted(cluster.rows) == [k for k in sorted(rows) if not 500 <= k <= 3500]


def test_delete_range_covers_every_stripe():
    rows = rows_of(range(1500, 2600))
    cluster = FakeCluster(striped_map(2000, 3), rows)

    async def go() -> int:
        async with FakeClient(cluster) as db:
            return await db.delete_range(1800, 2400)

    assert run(go()) == 601
    assert sorted(cluster.rows) == [k for k in sorted(rows) if not 1800 <= k <= 2400]


def test_delete_range_covers_every_stripe_when_the_segment_is_reshaped_under_it():
    rnd = random.Random(6)
    rows = rows_of(range(1500, 4000))
    cluster = FakeCluster(striped_map(2000, 3), rows)
    ats = iter([2300, 2600, 3100])

    def hook(c: FakeCluster, shard_id: str, op: str, req: dict[str, Any]) -> None:
        shard = c.map.shard_by_id(shard_id)
        if shard is not None and shard.stripe is not None and rnd.random() < 0.1:
            at = next(ats, None)
            if at is not None:
                c.reshape_stripes(at, rnd.randint(1, 4))

    cluster.before = hook

    async def go() -> int:
        async with FakeClient(cluster) as db:
            return await db.delete_range(1800, 3500)

    assert run(go()) == 1701
    assert sorted(cluster.rows) == [k for k in sorted(rows) if not 1800 <= k <= 3500]
    assert next(ats, None) is None  # every reshape happened mid-delete


def test_the_executor_and_client_do_not_import_each_other_at_module_level():
    import sys

    import raftkv.client.aio as aio

    assert "raftkv.query" not in aio.__dict__ and executor.__name__ in sys.modules
    source = open(aio.__file__).read()
    assert "from ..query" not in source.replace("        from ..query.executor import execute", "")


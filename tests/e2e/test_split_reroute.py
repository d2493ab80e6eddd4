"""Range operations in flight while a real shard splits: no row missing, none twice, no Unavailable.

The client routes by key range: a page, step or batch refused with StaleRoute after a split has
its unread remainder routed again through the repaired map.  Splits are made with the node's
``split`` operation, sent raw to the shard's leader.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from raftkv import AsyncClient
from raftkv.keys import MAX_KEY

pytestmark = pytest.mark.timeout(240)


class Splitter:
    """Splits shards through their leaders with its own client, so the clients under test learn of
    each split only from the cluster's StaleRoute answers."""

    def __init__(self, cluster: Any, db: AsyncClient) -> None:
        self.cluster = cluster
        self.db = db
        self.epoch = 0  # the map's epoch after our last split

    async def __call__(self, at: int) -> dict[str, Any]:
        """Split the shard holding key ``at`` at ``at``."""
        while True:  # a map with our last split in it (a follower's copy may lag for a moment)
            await self.db.connect()
            smap = await self.db.shard_map()
            if smap.epoch >= self.epoch:
                break
            await asyncio.sleep(0.05)
        shard = smap.shard_for_key(at)
        leader = await asyncio.to_thread(self.cluster.leader_of, shard.id)  # without blocking the loop
        conn = await self.db._conn(self.cluster.address(leader), time.monotonic() + 15)
        reply = await conn.request({"op": "split", "shard": shard.id, "at": at, "timeout": 10}, 15)
        assert reply["shards"][0]["id"] == shard.id and reply["shards"][1]["start"] == at
        self.epoch = reply["epoch"]
        return reply


async def load(db: AsyncClient, count: int, step: int = 7) -> tuple[str, list[int]]:
    """``count`` keys in the first shard; its id and the keys."""
    first = (await db.shard_map()).shards[0]
    keys = [first.start + 1 + i * step for i in range(count)]
    await db.put_many([(k, b"v%d" % k) for k in keys])
    return first.id, keys


@pytest.mark.parametrize("reverse", [False, True])
def test_a_scan_reads_on_through_splits_ahead_of_it_and_behind_it(cluster, reverse):
    async def scenario() -> None:
        async with AsyncClient(cluster.seeds, page_keys=50) as db, AsyncClient(cluster.seeds) as other:
            split = Splitter(cluster, other)
            _, keys = await load(db, 3000)
            order = sorted(keys, reverse=reverse)
            got = []
            async for k, v in db.scan(0, MAX_KEY, reverse=reverse):
                assert v == b"v%d" % k
                got.append(k)
                if len(got) == 400:
                    # ahead of the scan: the pages still to come are in the new right-hand shard
                    # (or, descending, in the shrunk left-hand one)
                    await split(order[1500])
                if len(got) == 1800:
                    await split(order[1000])  # behind it now: the shard being read shrinks under it
            assert got == order

    asyncio.run(scenario())


def test_a_stale_client_reads_writes_and_deletes_after_another_split_the_shard(cluster):
    async def scenario() -> None:
        async with AsyncClient(cluster.seeds) as stale, AsyncClient(cluster.seeds) as other:
            _, keys = await load(stale, 1000)
            before = (await stale.shard_map()).epoch
            await Splitter(cluster, other)(keys[500])
            # every operation of the stale client meets StaleRoute first, and repairs its map
            assert await stale.get(keys[700]) == b"v%d" % keys[700]
            await stale.put(keys[800], b"new")
            assert await stale.delete(keys[900]) is True
            assert len(await stale.range_query(keys[0], keys[-1])) == 999
            res = await stale.query(f"SELECT count(*) FROM kv WHERE key BETWEEN {keys[0]} AND {keys[-1]}")
            assert await res.rows() == [(999,)]
            await stale.put_many([(k, b"again") for k in keys[400:600]])
            assert await stale.delete_range(keys[450], keys[549]) == 100
            assert len(await stale.range_query(keys[0], keys[-1])) == 899
            assert (await stale.shard_map()).epoch > before

    asyncio.run(scenario())


def test_aggregates_put_many_and_delete_range_racing_splits_are_exact(cluster):
    async def scenario() -> None:
        async with AsyncClient(cluster.seeds) as db, AsyncClient(cluster.seeds) as splitter:
            _, keys = await load(db, 4000, step=3)
            lo, hi = keys[0], keys[-1] + 1
            extra = [(k + 1, b"x") for k in keys]  # between the existing keys
            split = Splitter(cluster, splitter)

            async def split_at(*points: int) -> None:
                for at in points:
                    await split(at)

            async def counts() -> list[Any]:
                out = []
                for _ in range(5):
                    res = await db.query(f"SELECT count(*), sum(key) FROM kv WHERE key BETWEEN {lo} AND {hi}")
                    out.append(await res.rows())
                return out

            # aggregates while the shard splits under them: the rows do not change, so every count is exact
            _, seen = await asyncio.gather(split_at(keys[2000], keys[1000]), counts())
            assert seen == [[(4000, sum(keys))]] * 5
            # a batch ingest while it splits again: every pair lands once
            await asyncio.gather(split_at(keys[3000], keys[500] + 1), db.put_many(extra))
            assert [k for k, _ in await db.range_query(lo, hi)] == sorted(keys + [k for k, _ in extra])
            # and a delete of it all
            deleting = asyncio.ensure_future(db.delete_range(lo, hi))
            await split_at(keys[3500])
            assert await deleting == 8000
            assert await db.range_query(lo, hi) == []

    asyncio.run(scenario())

"""The executor's plain-SELECT path against an in-memory client, checked with the reference model.

Runs of single-key ranges (``key IN (...)``) are read as concurrent GETs in windows, filtered
with the shards' own compiled filter: the rows, their order and LIMIT must not change.
"""

import asyncio
import json
import random

import pytest

from raftkv.errors import Unavailable
from raftkv.keys import MAX_KEY
from raftkv.query import compile_filter, executor, parse
from raftkv.routing.shardmap import initial_map

from .query_reference import holds

pytestmark = pytest.mark.timeout(60)

MAP = initial_map(["n1", "n2", "n3"], 8)
NOW = 50


class MemoryClient:
    """The slice of AsyncClient the executor uses for SELECTs, over a dict, counting concurrency."""

    def __init__(self, rows: dict[int, bytes], fail_key: int | None = None) -> None:
        self.rows = rows
        self.fail_key = fail_key
        self.in_flight = self.most_in_flight = self.gets = self.scans = 0

    async def shard_map(self):
        return MAP

    async def get(self, key: int) -> bytes | None:
        self.gets += 1
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(0)  # let the other reads of the window start
            if key == self.fail_key:
                raise Unavailable("shard lost its quorum")
            await asyncio.sleep(0)
            return self.rows.get(key)
        finally:
            self.in_flight -= 1

    async def scan_pages(self, start, end, *, limit=None, reverse=False, filter=None, page_keys=None):
        self.scans += 1
        match = compile_filter(filter)
        keys = sorted((k for k in self.rows if start <= k <= end), reverse=reverse)
        page = [(k, self.rows[k]) for k in keys if match(k, self.rows[k])]
        if limit is not None:
            page = page[:limit]
        if page:
            yield page


def run(client: MemoryClient, text: str) -> list[tuple]:
    async def go():
        result = await executor.execute(client, text, now_ns=NOW)
        return await result.rows()
    return asyncio.run(go())


def make_rows(seed: int) -> dict[int, bytes]:
    rnd = random.Random(seed)
    rows = {}
    for k in rnd.sample(range(400), 200) + [MAX_KEY]:
        rows[k] = json.dumps({"temp": rnd.randint(0, 50), "dev": rnd.choice(["a7", "b2"])}).encode()
    return rows


@pytest.mark.parametrize("order", ["", " ORDER BY key DESC"])
@pytest.mark.parametrize("limit", ["", " LIMIT 0", " LIMIT 7", " LIMIT 150"])
def test_in_lists_return_the_reference_rows_in_order(order, limit):
    rows = make_rows(1)
    rnd = random.Random(2)
    items = ", ".join(str(rnd.randrange(420)) for _ in range(300))
    where = f"(key IN ({items}, {MAX_KEY}) OR key BETWEEN 100 AND 120) AND value->'temp' > 20"
    client = MemoryClient(rows)
    got = run(client, f"SELECT * FROM kv WHERE {where}{order}{limit}")
    e = parse(f"SELECT * FROM kv WHERE {where}").where
    expected = [(k, v) for k, v in sorted(rows.items(), reverse="DESC" in order) if holds(e, k, v, NOW)]
    if limit:
        expected = expected[:int(limit.split()[-1])]
    assert got == expected
    if limit != " LIMIT 0":
        assert client.scans >= 1 and client.gets >= 1  # both paths ran
        assert 1 < client.most_in_flight <= executor.POINT_WINDOW


def test_a_small_limit_reads_at_most_one_window_of_keys():
    rows = {k: b"x" for k in range(0, 3000, 6)}
    client = MemoryClient(rows)  # keys 3 apart: single-key ranges, not merged into one range
    got = run(client, "SELECT key FROM kv WHERE key IN (" + ", ".join(map(str, range(0, 3000, 3))) + ") LIMIT 3")
    assert got == [(0,), (6,), (12,)]
    assert client.gets == executor.POINT_WINDOW


def test_a_failed_read_fails_the_query_and_cancels_its_window():
    rows = {k: b"x" for k in range(0, 200, 2)}
    client = MemoryClient(rows, fail_key=10)

    async def go():
        result = await executor.execute(client, "SELECT * FROM kv WHERE key IN (" +
                                        ", ".join(map(str, range(0, 200, 2))) + ")", now_ns=NOW)
        with pytest.raises(Unavailable):
            await result.rows()
        assert asyncio.all_tasks() == {asyncio.current_task()}  # no read left running

    asyncio.run(go())
    assert client.in_flight == 0

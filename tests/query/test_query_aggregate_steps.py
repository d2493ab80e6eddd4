"""The executor's aggregates over :meth:`AsyncClient.range_steps` events, against a scripted client.

The client may interleave parts, discard a part's replies (it starts over), and finish parts in
any order; the merged result must still be the reference aggregate of the rows.
"""

import asyncio
import json
import random

import pytest

from raftkv.errors import Unavailable
from raftkv.query import Aggregates, executor
from raftkv.routing.shardmap import initial_map

pytestmark = pytest.mark.timeout(60)

MAP = initial_map(["n1", "n2", "n3"], 8)


class StepClient:
    """The slice of AsyncClient that aggregates use, yielding scripted ``range_steps`` events."""

    def __init__(self, rows: dict[int, bytes], seed: int, fail_range: int | None = None) -> None:
        self.rows = rows
        self.rnd = random.Random(seed)
        self.fail_range = fail_range
        self.calls: list[tuple[int, int, int]] = []
        self.active = self.most_active = self.closed = 0

    async def shard_map(self):
        return MAP

    async def range_steps(self, op, lo, hi, fields, *, parallel, restart_on_expiry):
        assert op == "aggregate" and restart_on_expiry
        self.calls.append((lo, hi, parallel))
        self.active += 1
        self.most_active = max(self.most_active, self.active)
        try:
            aggs = Aggregates(fields["aggs"], fields["bucket_ns"])
            keys = sorted(k for k in self.rows if lo <= k <= hi)
            cuts = sorted(self.rnd.sample(range(len(keys) + 1), min(len(keys) + 1, self.rnd.randint(1, 4))))
            events = []
            for pid, (a, b) in enumerate(zip([0, *cuts], [*cuts, len(keys)], strict=True)):
                part = []
                if self.rnd.random() < 0.4:  # replies that will be discarded: counted once, then dropped
                    part += [("reply", pid, self.partials(aggs, keys[a:b])), ("discard", pid, None)]
                steps = sorted(self.rnd.sample(range(a, b + 1), min(b - a + 1, self.rnd.randint(0, 3))))
                for x, y in zip([a, *steps], [*steps, b], strict=True):
                    part.append(("reply", pid, self.partials(aggs, keys[x:y])))
                part.append(("done", pid, None))
                events.append(part)
            while any(events):  # interleave the parts, each in its own order
                part = self.rnd.choice([p for p in events if p])
                kind, pid, partials = part.pop(0)
                await asyncio.sleep(0)
                if (lo, hi) == self.fail_range:
                    raise Unavailable("no quorum")
                yield _Step(kind, pid, None if partials is None else {"partials": partials, "resume": None})
        finally:
            self.active -= 1
            self.closed += 1

    def partials(self, aggs, keys):
        p = aggs.new()
        for k in keys:
            aggs.update(p, k, self.rows[k])
        return p


class _Step:
    def __init__(self, kind, part, reply):
        self.kind, self.part, self.reply = kind, part, reply


def make_rows(seed):
    rnd = random.Random(seed)
    return {k: json.dumps({"t": rnd.randint(-5, 40)}).encode() for k in rnd.sample(range(5000), 600)}


def run(client, text):
    async def go():
        res = await executor.execute(client, text, now_ns=0)
        rows = await res.rows()
        await asyncio.sleep(0)
        assert asyncio.all_tasks() == {asyncio.current_task()}
        return rows

    return asyncio.run(go())


@pytest.mark.parametrize("seed", range(10))
def test_discarded_and_interleaved_parts_merge_to_the_reference(seed):
    rows = make_rows(seed)
    client = StepClient(rows, seed)
    got = run(client, "SELECT count(*), sum(value->'t'), min(value->'t'), max(key), avg(value->'t') FROM kv "
                      "WHERE key BETWEEN 100 AND 4000")
    inside = {k: json.loads(v)["t"] for k, v in rows.items() if 100 <= k <= 4000}
    ts = list(inside.values())
    assert got == [(len(ts), sum(ts), min(ts), max(inside), sum(ts) / len(ts))]
    assert client.calls == [(100, 4000, executor.AGG_PARALLEL_SHARDS)]  # one wide range gets every slot


def test_grouped_aggregates_over_many_ranges_share_the_parallelism():
    rows = make_rows(3)
    client = StepClient(rows, 3)
    ranges = [(i * 400, i * 400 + 150) for i in range(10)]
    where = " OR ".join(f"key BETWEEN {a} AND {b}" for a, b in ranges)
    got = run(client, f"SELECT time_bucket(1000, key), count(*) FROM kv WHERE {where} "
                      "GROUP BY time_bucket(1000, key)")
    expected: dict[int, int] = {}
    for k in rows:
        if any(a <= k <= b for a, b in ranges):
            expected[k - k % 1000] = expected.get(k - k % 1000, 0) + 1
    assert got == sorted(expected.items())
    assert sorted((lo, hi) for lo, hi, _ in client.calls) == ranges
    assert {p for _, _, p in client.calls} == {1}
    assert client.most_active <= executor.AGG_PARALLEL_SHARDS


def test_a_failing_range_fails_the_query_and_stops_the_others():
    rows = make_rows(4)
    ranges = [(i * 1000, i * 1000 + 500) for i in range(4)]
    client = StepClient(rows, 4, fail_range=ranges[2])
    where = " OR ".join(f"key BETWEEN {a} AND {b}" for a, b in ranges)
    with pytest.raises(Unavailable):
        run(client, f"SELECT count(*) FROM kv WHERE {where}")
    assert client.active == 0 and client.closed == len(client.calls)  # every walk was closed

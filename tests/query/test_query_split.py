"""SPLIT SHARD and SHOW SHARDS through the executor, against a stand-in client (no cluster)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from raftkv.errors import InvalidArgument, QueryError, Unavailable
from raftkv.query import executor
from raftkv.routing.shardmap import Shard, ShardMap, initial_map

pytestmark = pytest.mark.timeout(60)

MAP = initial_map(["n1", "n2", "n3"], 4)
STEP = 2**64 // 4
NODES = {"n1": "127.0.0.1:1", "n2": "127.0.0.1:2", "n3": "127.0.0.1:3"}


def striped_map() -> ShardMap:
    """s0000 split at 100, and the tail [3 * STEP, 2**64) served by two stripes."""
    base = MAP.split("s0000", 100, "s0004")
    tail = base.shard_by_id("s0003")
    stripes = [Shard("s0005", tail.start, tail.end, tail.replicas, 1, (0, 2)),
               Shard("s0006", tail.start, tail.end, tail.replicas, 1, (1, 2))]
    shards = [s for s in base.shards if s.id != "s0003"] + stripes
    return ShardMap(base.epoch + 1, tuple(shards))


class FakeClient:
    """The slice of AsyncClient that SHOW and SPLIT use."""

    def __init__(self, smap: ShardMap = MAP, statuses: dict[str, Any] | None = None,
                 leaders: dict[str, str] | None = None, split_reply: Any = None) -> None:
        self.smap = smap
        self.statuses = statuses or {}
        self.leaders = leaders or {}
        self.split_reply = split_reply
        self.splits: list[tuple[str, int | None]] = []

    async def shard_map(self) -> ShardMap:
        return self.smap

    def leader_hints(self) -> dict[str, str]:
        return dict(self.leaders)

    def node_addresses(self) -> dict[str, str]:
        return dict(NODES)

    async def node_status(self, address: str) -> dict[str, Any]:
        node = next(n for n, a in NODES.items() if a == address)
        st = self.statuses.get(node)
        if st is None:
            raise Unavailable(f"cannot reach {address}")
        return st

    async def split_shard(self, shard_id: str, at: int | None = None) -> dict[str, Any]:
        self.splits.append((shard_id, at))
        if isinstance(self.split_reply, Exception):
            raise self.split_reply
        return self.split_reply


def run(client: FakeClient, text: str) -> tuple[tuple[str, ...], str, list[tuple]]:
    async def go() -> tuple[tuple[str, ...], str, list[tuple]]:
        res = await executor.execute(client, text, now_ns=10**18)
        return res.columns, res.status, await res.rows()

    return asyncio.run(go())


def group(gid: str, state: str = "follower", **load: Any) -> dict[str, Any]:
    return {"id": gid, "state": state, "leader": None, "term": 1, "commit": 1, "applied": 1, "log_entries": 0,
            **load}


# --- SHOW SHARDS -----------------------------------------------------------------------------------


SHOW_COLUMNS = ("id", "first_key", "last_key", "replicas", "leader", "generation", "bytes", "keys",
                "writes_per_s", "stripe")


def test_show_shards_keeps_the_old_columns_first_and_takes_load_from_the_leader() -> None:
    statuses = {
        "n1": {"node": "n1", "pid": 1, "groups": [group("s0000", "leader", bytes=1000, keys=10, writes_per_s=2.5),
                                                  group("s0001", bytes=7, keys=1, writes_per_s=0)]},
        "n2": {"node": "n2", "pid": 2, "groups": [group("s0000", bytes=990, keys=9, writes_per_s=2.0),
                                                  group("s0001", "leader", bytes=2000, keys=20, writes_per_s=1)]},
    }
    # the client's hint for s0001 is stale (n1): the node that says it leads wins; with no claim
    # (s0002) the hint stays
    columns, status, rows = run(FakeClient(statuses=statuses, leaders={"s0001": "n1", "s0002": "n3"}),
                                "SHOW SHARDS")
    assert (columns, status) == (SHOW_COLUMNS, "SHOW")
    leaders = {"s0000": "n1", "s0001": "n2", "s0002": "n3"}
    assert [r[:5] for r in rows] == [(s.id, s.start, s.end - 1, ",".join(s.replicas), leaders.get(s.id))
                                     for s in MAP.shards]
    assert rows[0][5:] == (1, 1000, 10, 2.5, None)
    assert rows[1][5:] == (1, 2000, 20, 1.0, None)
    assert all(type(r[8]) is float for r in rows[:2])
    # no node reports s0002 or s0003: NULLs, not zeros
    assert rows[2][5:] == rows[3][5:] == (1, None, None, None, None)


def test_show_shards_without_load_figures_or_with_nodes_down() -> None:
    # nodes that predate the new status fields: the map's columns are still there
    statuses = {"n1": {"node": "n1", "pid": 1, "groups": [group(s.id, "leader") for s in MAP.shards]}}
    _, _, rows = run(FakeClient(statuses=statuses), "SHOW SHARDS")
    assert [r[5:] for r in rows] == [(1, None, None, None, None)] * 4
    _, _, rows = run(FakeClient(statuses={}), "SHOW SHARDS")  # every node down
    assert len(rows) == 4 and all(r[6:9] == (None, None, None) for r in rows)


def test_show_shards_after_splits_and_with_stripes() -> None:
    smap = striped_map()
    statuses = {"n2": {"node": "n2", "pid": 2, "groups": [group("s0005", "leader", bytes=5, keys=1,
                                                                writes_per_s=0.5, extra="ignored")]}}
    _, _, rows = run(FakeClient(smap, statuses=statuses), "SHOW SHARDS")
    assert [(r[0], r[1], r[2], r[5], r[9]) for r in rows] == [
        ("s0000", 0, 99, 2, None),
        ("s0004", 100, STEP - 1, 1, None),
        ("s0001", STEP, 2 * STEP - 1, 1, None),
        ("s0002", 2 * STEP, 3 * STEP - 1, 1, None),
        # the stripes share their range; each row stands for its own shard
        ("s0005", 3 * STEP, 2**64 - 1, 1, "0/2"),
        ("s0006", 3 * STEP, 2**64 - 1, 1, "1/2"),
    ]
    assert rows[4][6:9] == (5, 1, 0.5) and rows[5][6:9] == (None, None, None)


def test_show_shards_refuses_odd_figures() -> None:
    statuses = {"n1": {"node": "n1", "pid": 1,
                       "groups": [group("s0000", "leader", bytes=True, keys="many", writes_per_s="fast")]}}
    _, _, rows = run(FakeClient(statuses=statuses), "SHOW SHARDS")
    assert rows[0][6:9] == (None, None, None)


# --- SPLIT SHARD -----------------------------------------------------------------------------------


def split_reply(at: int = 100) -> dict[str, Any]:
    after = MAP.split("s0000", at, "s0004")
    return {"epoch": after.epoch,
            "shards": [after.shard_by_id("s0000").to_dict(), after.shard_by_id("s0004").to_dict()]}


def test_split_runs_through_the_client_and_shows_both_shards() -> None:
    client = FakeClient(split_reply=split_reply(100))
    columns, status, rows = run(client, "SPLIT SHARD s0000 AT 100;")
    assert client.splits == [("s0000", 100)]
    assert (columns, status) == (("id", "first_key", "last_key", "replicas", "generation", "epoch"), "SPLIT")
    replicas = ",".join(MAP.shards[0].replicas)
    assert rows == [("s0000", 0, 99, replicas, 2, MAP.epoch + 1),
                    ("s0004", 100, STEP - 1, replicas, 1, MAP.epoch + 1)]


def test_split_without_at_and_of_the_last_shard() -> None:
    after = MAP.split("s0003", 2**64 - 10, "s0004")
    reply = {"epoch": after.epoch, "shards": [after.shard_by_id("s0003").to_dict(), after.shard_by_id("s0004").to_dict()]}
    assert reply["shards"][1]["end"] is None  # the wire form of 2**64
    client = FakeClient(split_reply=reply)
    _, _, rows = run(client, "split shard s0003")
    assert client.splits == [("s0003", None)]
    assert [r[:3] for r in rows] == [("s0003", 3 * STEP, 2**64 - 11), ("s0004", 2**64 - 10, 2**64 - 1)]


def test_split_key_expressions_are_evaluated_once() -> None:
    client = FakeClient(split_reply=split_reply())
    run(client, "SPLIT SHARD s0000 AT now() - INTERVAL '1 s'")
    assert client.splits == [("s0000", 10**18 - 10**9)]


def test_split_errors() -> None:
    client = FakeClient(split_reply=InvalidArgument("split key 5 is not strictly inside shard s0001"))
    with pytest.raises(InvalidArgument, match="not strictly inside"):
        run(client, "SPLIT SHARD s0001 AT 5")
    # a bad key never reaches the client
    with pytest.raises(QueryError, match="outside"):
        run(client, "SPLIT SHARD s0001 AT 0 - 1")
    assert client.splits == [("s0001", 5)]


def test_show_status_lists_a_node_that_does_not_answer_as_unreachable() -> None:
    statuses = {"n1": {"node": "n1", "pid": 1, "groups": [group("s0000", "leader")]}}
    columns, _, rows = run(FakeClient(statuses=statuses), "SHOW STATUS")
    assert columns[:3] == ("node", "group", "state")
    assert rows[0][:3] == ("n1", "s0000", "leader")
    down = [r for r in rows if r[0] != "n1"]
    assert down and all(r[1:] == (None, "unreachable", None, None, None, None, None) for r in down)
    assert {r[0] for r in down} == set(NODES) - {"n1"}

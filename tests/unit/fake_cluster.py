"""An in-memory cluster behind a real :class:`AsyncClient`, for routing tests without sockets.

The client keeps all of its own logic (routing, retries, map repair, scans, range_steps,
put_many, delete_range); only its one network attempt (``_send``) and its map fetch
(``_fetch_map``) are served here.  The cluster keeps the true shard map and answers like a
node does: ``StaleRoute`` (carrying the current shards of the requested range, unless
``carry_shards`` is off) for a request outside the shard's range, snapshots under cursors,
one client-session table per shard (copied to both halves by a split), and bounded steps.
Tests change the map while requests are in flight through the ``before`` hook.
"""

from __future__ import annotations

import asyncio
import dataclasses
import itertools
from collections.abc import Callable
from typing import Any

from raftkv import errors
from raftkv.client.aio import AsyncClient
from raftkv.keys import KEY_SPACE_END
from raftkv.protocol.pages import KEY_RECORD
from raftkv.query.aggregate import Aggregates
from raftkv.routing.ranges import end_from_wire
from raftkv.routing.shardmap import Shard, ShardMap

Row = tuple[int, bytes]
STEP_ROWS = 7  # rows an aggregate or delete_range step examines


class FakeCluster:
    """The cluster's side: the true map, the rows, cursors and sessions."""

    def __init__(self, smap: ShardMap, rows: dict[int, bytes] | None = None, *, carry_shards: bool = True) -> None:
        self.map = smap
        self.rows: dict[int, bytes] = dict(rows or {})
        self.carry_shards = carry_shards
        self.expire_cursors = False
        self.cursors: dict[int, tuple[str, list[Row]]] = {}
        self.sessions: dict[str, dict[tuple[bytes, int], Any]] = {s.id: {} for s in smap.shards}
        self.applied: list[tuple[str, int, list[int]]] = []  # (shard, seq, keys) of every write applied
        self.sent: list[tuple[str, str, dict[str, Any]]] = []  # (shard, op, request) of every request
        self.before: Callable[[FakeCluster, str, str, dict[str, Any]], None] | None = None
        self.lose_next_reply: set[str] = set()  # ops whose next reply is lost after the op took effect
        self.stale_routes = 0  # StaleRoutes answered
        self.client: AsyncClient | None = None
        self._ids = itertools.count(1)

    # --- changes of the map -------------------------------------------------------------------

    def split(self, shard_id: str, at: int) -> str:
        """Split range shard ``shard_id`` at ``at``; the new shard's id.  Sessions go to both halves."""
        new_id = f"x{next(self._ids):03d}"
        self.map = self.map.split(shard_id, at, new_id)
        self.sessions[new_id] = dict(self.sessions[shard_id])
        return new_id

    def reshape_stripes(self, at: int, count: int) -> None:
        """Cut the striped segment holding ``at`` there: its stripes keep ``[start, at)``, and
        ``count`` new stripes take ``[at, end)``."""
        old = [s for s in self.map.shards if s.stripe is not None and s.start < at < s.end]
        assert old, f"no striped segment around {at}"
        kept = [dataclasses.replace(s, end=at, generation=s.generation + 1) for s in old]
        fresh = []
        for i in range(count):
            sid = f"x{next(self._ids):03d}"
            fresh.append(Shard(sid, at, old[0].end, old[0].replicas, 1, (i, count)))
            self.sessions[sid] = {}
        self.map = self.map.with_shards([*kept, *fresh])

    # --- serving -----------------------------------------------------------------------------

    def handle(self, shard_id: str, op: str, req: dict[str, Any]) -> Any:
        """Answer one request like a node would."""
        self.sent.append((shard_id, op, req))
        if self.before is not None:
            self.before(self, shard_id, op, req)
        shard = self.map.shard_by_id(shard_id)
        if shard is None:
            raise errors.ShardNotHere(f"no shard {shard_id}", epoch=self.map.epoch)
        if op == "put":
            return self._put(shard, req)
        lo, hi = req["start"], end_from_wire(req["end"])
        if not shard.start <= lo < hi <= shard.end:
            raise self._stale(f"[{lo}, {hi}) is not in shard {shard.id}", lo, hi)
        if op == "delete_range":
            return self._delete_range(shard, lo, hi, req)
        snapshot = self._snapshot(shard, req)
        if op == "scan":
            return self._scan(shard, lo, hi, req, snapshot)
        if op == "aggregate":
            return self._aggregate(shard, lo, hi, req, snapshot)
        raise AssertionError(op)

    def _stale(self, message: str, lo: int, hi: int) -> errors.StaleRoute:
        self.stale_routes += 1
        details: dict[str, Any] = {"epoch": self.map.epoch}
        if self.carry_shards:
            details["shards"] = [s.to_dict() for s, _, _ in self.map.shards_for_range(lo, hi)]
        return errors.StaleRoute(message, **details)

    def _snapshot(self, shard: Shard, req: dict[str, Any]) -> list[Row]:
        cursor = req.get("cursor")
        if cursor is None:
            return sorted((k, v) for k, v in self.rows.items() if shard.owns(k))
        entry = self.cursors.pop(cursor, None)
        if entry is None or entry[0] != shard.id or self.expire_cursors:
            raise errors.CursorExpired("cursor expired")
        return entry[1]

    def _page(self, shard: Shard, lo: int, hi: int, reverse: bool, limit: int, snapshot: list[Row],
              keep: Callable[[int], bool]) -> tuple[list[Row], int | None, int | None]:
        """Examine up to ``limit`` rows of ``[lo, hi)``; the kept ones, resume and a new cursor."""
        rows = [r for r in snapshot if lo <= r[0] < hi]
        if reverse:
            rows.reverse()
        examined, rest = rows[:limit], rows[limit:]
        kept = [r for r in examined if keep(r[0])]
        if not rest:
            return kept, None, None
        cid = next(self._ids)
        self.cursors[cid] = (shard.id, snapshot)
        return kept, rest[0][0] + 1 if reverse else rest[0][0], cid

    def _scan(self, shard: Shard, lo: int, hi: int, req: dict[str, Any], snapshot: list[Row]) -> Any:
        keep = (lambda k: k % 2 == 0) if req.get("filter") == "even" else (lambda k: True)
        rows, resume, cursor = self._page(shard, lo, hi, req["reverse"], req["limit"], snapshot, keep)
        return {"keys": b"".join(KEY_RECORD.pack(b"k", k) for k, _ in rows), "values": [v for _, v in rows],
                "resume": resume, "cursor": cursor}

    def _aggregate(self, shard: Shard, lo: int, hi: int, req: dict[str, Any], snapshot: list[Row]) -> Any:
        aggs = Aggregates(req["aggs"], req["bucket_ns"])
        rows, resume, cursor = self._page(shard, lo, hi, False, STEP_ROWS, snapshot, lambda k: True)
        partials = aggs.new()
        for k, v in rows:
            aggs.update(partials, k, v)
        return {"partials": partials, "resume": resume, "cursor": cursor}

    def _session(self, shard: Shard, req: dict[str, Any], apply: Callable[[], Any], op: str) -> Any:
        cid, seq, _low = req["session"]
        table = self.sessions[shard.id]
        if (cid, seq) not in table:
            table[(cid, seq)] = apply()
        reply = table[(cid, seq)]
        if op in self.lose_next_reply:
            self.lose_next_reply.discard(op)
            raise errors.Timeout("the reply was lost; the write took effect")
        return reply

    def _put(self, shard: Shard, req: dict[str, Any]) -> Any:
        pairs = req["pairs"]
        for k, _ in pairs:
            if not shard.owns(k):
                raise self._stale(f"key {k} is not in shard {shard.id}", k, k + 1)

        def apply() -> int:
            self.rows.update((k, v) for k, v in pairs)
            self.applied.append((shard.id, req["session"][1], [k for k, _ in pairs]))
            return len(pairs)

        return self._session(shard, req, apply, "put")

    def _delete_range(self, shard: Shard, lo: int, hi: int, req: dict[str, Any]) -> Any:
        def apply() -> dict[str, Any]:
            rows = sorted(k for k in self.rows if lo <= k < hi and shard.owns(k))
            gone, rest = rows[:STEP_ROWS], rows[STEP_ROWS:]
            for k in gone:
                del self.rows[k]
            self.applied.append((shard.id, req["session"][1], gone))
            return {"deleted": len(gone), "resume": rest[0] if rest else None}

        return self._session(shard, req, apply, "delete_range")


class FakeClient(AsyncClient):
    """An AsyncClient whose one network attempt and map fetch are served by a :class:`FakeCluster`."""

    def __init__(self, cluster: FakeCluster, **options: Any) -> None:
        super().__init__("127.0.0.1:1", **options)
        self.cluster = cluster
        cluster.client = self
        self.map_fetches = 0

    async def _fetch_map(self, deadline: float) -> None:
        self.map_fetches += 1
        await asyncio.sleep(0)
        fresh = self.cluster.map
        if self._map is None or fresh.epoch >= self._map.epoch:
            self._map = fresh

    async def _send(self, shard: Shard, op: str, fields: dict[str, Any], deadline: float) -> Any:
        await asyncio.sleep(0)  # let the other requests in flight interleave
        return self.cluster.handle(shard.id, op, dict(fields))


def striped_map(tail_start: int, stripes: int) -> ShardMap:
    """Two range shards, then a striped tail ``[tail_start, 2**64)`` of ``stripes`` stripes."""
    reps = ("n1", "n2", "n3")
    half = tail_start // 2
    shards = [Shard("a", 0, half, reps), Shard("b", half, tail_start, reps)]
    shards += [Shard(f"t{i}", tail_start, KEY_SPACE_END, reps, 1, (i, stripes)) for i in range(stripes)]
    return ShardMap(1, tuple(shards))

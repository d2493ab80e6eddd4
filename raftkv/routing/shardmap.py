"""The shard map: which shard owns which key range, and where its replicas are.

It is a plain value: pure lookups, a dict form for the wire and for the meta
Raft group, and an ``epoch`` that grows with every change so a node can tell a
client that its cached copy is stale.

Invariant: shards are sorted by ``start``, contiguous, and cover ``[0, 2**64)``.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from typing import Any

from ..keys import KEY_SPACE_END
from . import placement
from .ranges import end_from_wire, end_to_wire, even_split_points, intersect, ranges_from_split_points

META_GROUP = "meta"


@dataclass(frozen=True)
class Shard:
    """One shard: owns ``[start, end)``; ``replicas`` are node ids."""

    id: str
    start: int
    end: int
    replicas: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        """Wire form; ``end`` of the last shard is 2**64, sent as None to fit msgpack's uint64."""
        return {"id": self.id, "start": self.start, "end": end_to_wire(self.end),
                "replicas": list(self.replicas)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Shard:
        """Inverse of :meth:`to_dict`."""
        end = end_from_wire(None if d["end"] is None else int(d["end"]))
        return cls(str(d["id"]), int(d["start"]), end, tuple(str(r) for r in d["replicas"]))


@dataclass(frozen=True)
class ShardMap:
    """An epoch-stamped, sorted, gap-free list of shards."""

    epoch: int
    shards: tuple[Shard, ...]
    _starts: list[int] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        self._starts.extend(s.start for s in self.shards)
        self._check()

    def _check(self) -> None:
        """Assert the invariant (cheap; called on every construction)."""
        if not self.shards or self.shards[0].start != 0 or self.shards[-1].end != KEY_SPACE_END:
            raise ValueError("shard map must cover [0, 2**64)")
        for a, b in zip(self.shards, self.shards[1:], strict=False):
            if a.end != b.start or a.start >= a.end:
                raise ValueError(f"shards {a.id} and {b.id} are not contiguous")

    def shard_for_key(self, key: int) -> Shard:
        """The shard owning ``key``."""
        return self.shards[bisect.bisect_right(self._starts, key) - 1]

    def shard_by_id(self, shard_id: str) -> Shard | None:
        """The shard named ``shard_id``, or None."""
        for s in self.shards:
            if s.id == shard_id:
                return s
        return None

    def shards_for_range(self, start: int, end: int) -> list[tuple[Shard, int, int]]:
        """Shards intersecting half-open ``[start, end)``, ascending, each with the clipped sub-range."""
        if start >= end:
            return []
        out = []
        i = bisect.bisect_right(self._starts, start) - 1
        while i < len(self.shards) and self.shards[i].start < end:
            s = self.shards[i]
            clip = intersect(s.start, s.end, start, end)
            if clip:
                out.append((s, clip[0], clip[1]))
            i += 1
        return out

    def group_ids(self) -> list[str]:
        """Every shard id in key order."""
        return [s.id for s in self.shards]

    def to_dict(self) -> dict[str, Any]:
        """Wire / storage form."""
        return {"epoch": self.epoch, "shards": [s.to_dict() for s in self.shards]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardMap:
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["epoch"]), tuple(Shard.from_dict(s) for s in d["shards"]))


def initial_map(node_ids: list[str], shard_count: int = 8, split_points: list[int] | None = None,
                replication: int = 3) -> ShardMap:
    """The deterministic map a new cluster starts with: equal ranges (or ``split_points``), HRW placement."""
    points = split_points if split_points is not None else even_split_points(shard_count)
    shards = []
    for i, (start, end) in enumerate(ranges_from_split_points(points)):
        sid = f"s{i:04d}"
        shards.append(Shard(sid, start, end, tuple(placement.place(sid, node_ids, replication))))
    return ShardMap(1, tuple(shards))


def meta_replicas(node_ids: list[str], replication: int = 3) -> list[str]:
    """Nodes hosting the meta group (the replicated shard map)."""
    return placement.place(META_GROUP, node_ids, replication)

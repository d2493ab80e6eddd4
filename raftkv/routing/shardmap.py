"""The shard map: which shard owns which key range, and where its replicas are.

It is a plain value: pure lookups, a dict form for the wire and for the meta
Raft group, and an ``epoch`` that grows with every change so a node can tell a
client that its cached copy is stale.

The key space is cut into contiguous **segments**.  A segment is served either
by one range shard, or -- a striped tail -- by K shards that share its bounds,
stripe ``i`` owning the keys with ``stripe_of(key, K) == i`` (``stripes.py``).
Each shard has a ``generation`` that grows whenever its bounds change (a split
shrinks it); the meta group keeps one record per shard and compares
generations, not the whole map, when a record changes.

Invariants (:meth:`ShardMap._check`): shards sorted by ``(start, stripe)``;
segments contiguous, covering ``[0, 2**64)``; a striped segment has exactly the
stripes ``0..K-1`` of one K; ids unique; generations positive.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..keys import KEY_SPACE_END
from . import placement
from .ranges import end_from_wire, end_to_wire, even_split_points, intersect, ranges_from_split_points
from .stripes import MAX_STRIPES, stripe_of

META_GROUP = "meta"


@dataclass(frozen=True)
class Shard:
    """One shard: owns ``[start, end)`` (only its stripe of it if ``stripe`` is ``(i, K)``)."""

    id: str
    start: int
    end: int
    replicas: tuple[str, ...]
    generation: int = 1
    stripe: tuple[int, int] | None = None
    # made with no data (a stripe, or the range after a striped segment): a node that should hold
    # a replica and has none may start one empty; a split's child never is (it starts with rows)
    born_empty: bool = False
    # replicas joining as non-voters (replication/membership.py): they hold the data but never
    # lead nor count, so clients never go to them
    learners: tuple[str, ...] = ()

    def owns(self, key: int) -> bool:
        """Whether ``key`` belongs to this shard."""
        if not self.start <= key < self.end:
            return False
        return self.stripe is None or stripe_of(key, self.stripe[1]) == self.stripe[0]

    def first_foreign(self, keys: Iterable[int]) -> int | None:
        """The first of ``keys`` this shard does not own, or None: :meth:`owns` over a whole batch,
        in one loop (a batch holds up to 10,000 keys, and each is checked by the leader and again by
        every replica as it applies)."""
        start, end = self.start, self.end
        if self.stripe is None:
            for k in keys:
                if not start <= k < end:
                    return k
            return None
        mine, count = self.stripe
        for k in keys:
            if not start <= k < end or stripe_of(k, count) != mine:
                return k
        return None

    def owns_as(self, other: Shard) -> bool:
        """Whether ``other`` owns exactly the keys this shard owns (same bounds and stripe): keys
        routed to one need no check against the other, one by one."""
        return (self.start, self.end, self.stripe) == (other.start, other.end, other.stripe)

    def to_dict(self) -> dict[str, Any]:
        """Wire form; ``end`` of the last shard is 2**64, sent as None to fit msgpack's uint64."""
        d = {"id": self.id, "start": self.start, "end": end_to_wire(self.end),
             "replicas": list(self.replicas), "generation": self.generation,
             "stripe": None if self.stripe is None else list(self.stripe)}
        if self.born_empty:
            d["born_empty"] = True
        if self.learners:
            d["learners"] = list(self.learners)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Shard:
        """Inverse of :meth:`to_dict` (maps written before splits existed have no generation).

        Raises ValueError for anything malformed: records arrive over the network.
        """
        if not isinstance(d, dict):
            raise ValueError("a shard record must be a map")
        sid, start, end, replicas = d.get("id"), d.get("start"), d.get("end"), d.get("replicas")
        generation, stripe = d.get("generation", 1), d.get("stripe")
        if not isinstance(sid, str) or not sid or len(sid) > 64:
            raise ValueError("a shard id must be a non-empty string of at most 64 characters")
        if not _is_u64(start) or not (end is None or _is_u64(end)):
            raise ValueError(f"shard {sid}: start and end must be keys (end None for 2**64)")
        if not (isinstance(replicas, list) and replicas and all(isinstance(r, str) and r for r in replicas)
                and len(set(replicas)) == len(replicas)):
            raise ValueError(f"shard {sid}: replicas must be a list of distinct node ids")
        if type(generation) is not int or not 1 <= generation < 2**63:
            raise ValueError(f"shard {sid}: generation must be a positive int")
        if stripe is not None and not (isinstance(stripe, list) and len(stripe) == 2
                                       and all(type(x) is int for x in stripe)
                                       and 0 <= stripe[0] < stripe[1] <= MAX_STRIPES):
            raise ValueError(f"shard {sid}: stripe must be [i, K] with 0 <= i < K <= {MAX_STRIPES}")
        learners = d.get("learners", [])
        if not (isinstance(learners, list) and all(isinstance(r, str) and r for r in learners)
                and len(set(learners)) == len(learners) and not set(learners) & set(replicas)):
            raise ValueError(f"shard {sid}: learners must be distinct node ids that are not replicas")
        return cls(sid, start, end_from_wire(end), tuple(replicas), generation,
                   None if stripe is None else (stripe[0], stripe[1]), d.get("born_empty") is True,
                   tuple(learners))


@dataclass(frozen=True)
class ShardMap:
    """An epoch-stamped, sorted, gap-free list of shards."""

    epoch: int
    shards: tuple[Shard, ...]
    # segment starts, and for each segment the index of its first shard and its shard count
    _starts: list[int] = field(default_factory=list, compare=False, repr=False)
    _first: list[int] = field(default_factory=list, compare=False, repr=False)

    def __post_init__(self) -> None:
        for i, s in enumerate(self.shards):
            if not self._starts or self._starts[-1] != s.start:
                self._starts.append(s.start)
                self._first.append(i)
        self._first.append(len(self.shards))
        self._check()

    def _check(self) -> None:
        """Raise ValueError unless the invariant holds (cheap; called on every construction)."""
        if not self.shards or self.shards[0].start != 0 or self.shards[-1].end != KEY_SPACE_END:
            raise ValueError("shard map must cover [0, 2**64)")
        if len({s.id for s in self.shards}) != len(self.shards):
            raise ValueError("shard ids must be unique")
        prev_end = 0
        for n in range(len(self._starts)):
            seg = self.shards[self._first[n]:self._first[n + 1]]
            head = seg[0]
            if head.start != prev_end or head.start >= head.end:
                raise ValueError(f"shard {head.id} does not follow its predecessor")
            if any(s.end != head.end for s in seg):
                raise ValueError(f"shards starting at {head.start} disagree on their end")
            if len(seg) == 1 and head.stripe is None:
                pass
            elif any(s.stripe is None for s in seg) or [s.stripe for s in seg] != \
                    [(i, len(seg)) for i in range(len(seg))] or len(seg) > MAX_STRIPES:
                raise ValueError(f"the segment at {head.start} is neither one shard nor stripes 0..K-1")
            for s in seg:
                if s.generation < 1 or not s.replicas:
                    raise ValueError(f"shard {s.id} needs a positive generation and replicas")
            prev_end = head.end

    # --- lookups ------------------------------------------------------------------------------

    def _segment(self, n: int) -> tuple[Shard, ...]:
        return self.shards[self._first[n]:self._first[n + 1]]

    def shard_for_key(self, key: int) -> Shard:
        """The shard owning ``key``."""
        seg = self._segment(bisect.bisect_right(self._starts, key) - 1)
        return seg[0] if len(seg) == 1 else seg[stripe_of(key, len(seg))]

    def group_by_shard(self, pairs: Iterable[Sequence[Any]]) -> dict[str, list[Any]]:
        """``pairs`` (each with its key first) grouped by the id of the shard owning the key, in
        input order within a group: :meth:`shard_for_key` over a whole batch, with one segment
        lookup per run of keys in one segment (a bulk load's sorted keys stay in one for
        thousands of pairs), the stripe hash only for keys of a striped segment."""
        out: dict[str, list[Any]] = {}
        lo = hi = 0  # the current segment's bounds: none yet
        target: list[Any] | None = None  # the current segment's group, unless it is striped
        stripes: list[list[Any]] = []
        for pair in pairs:
            k = pair[0]
            if not lo <= k < hi:
                seg = self._segment(bisect.bisect_right(self._starts, k) - 1)
                lo, hi = seg[0].start, seg[0].end
                if len(seg) == 1:
                    target = out.setdefault(seg[0].id, [])
                else:
                    target = None
                    stripes = [out.setdefault(s.id, []) for s in seg]
            if target is not None:
                target.append(pair)
            else:
                stripes[stripe_of(k, len(stripes))].append(pair)
        return {sid: group for sid, group in out.items() if group}

    def shard_by_id(self, shard_id: str) -> Shard | None:
        """The shard named ``shard_id``, or None."""
        for s in self.shards:
            if s.id == shard_id:
                return s
        return None

    def shards_for_range(self, start: int, end: int) -> list[tuple[Shard, int, int]]:
        """Shards intersecting half-open ``[start, end)``, ascending, each with the clipped sub-range.

        Every stripe of a striped segment is listed, each with the same clipped range.
        """
        return [(s, lo, hi) for seg, lo, hi in self.segments_for_range(start, end) for s in seg]

    def segments_for_range(self, start: int, end: int) -> list[tuple[tuple[Shard, ...], int, int]]:
        """Segments intersecting ``[start, end)`` in key order: ``(shards, lo, hi)`` (one shard unless striped)."""
        if start >= end:
            return []
        out = []
        n = bisect.bisect_right(self._starts, start) - 1
        while n < len(self._starts) and self._starts[n] < end:
            seg = self._segment(n)
            clip = intersect(seg[0].start, seg[0].end, start, end)
            if clip:
                out.append((seg, clip[0], clip[1]))
            n += 1
        return out

    def group_ids(self) -> list[str]:
        """Every shard id in key order."""
        return [s.id for s in self.shards]

    # --- changes (each returns a new map) -----------------------------------------------------

    def split(self, shard_id: str, at: int, new_id: str) -> ShardMap:
        """The map after range shard ``shard_id`` splits at ``at``: it keeps ``[start, at)`` with
        a higher generation, and ``new_id`` takes ``[at, end)`` on the same replicas."""
        old = self.shard_by_id(shard_id)
        if old is None:
            raise ValueError(f"no shard {shard_id!r}")
        if old.stripe is not None:
            raise ValueError(f"shard {shard_id} is a stripe; stripes are not split")
        if not old.start < at < old.end:
            raise ValueError(f"split key {at} is not strictly inside shard {shard_id}")
        if self.shard_by_id(new_id) is not None:
            raise ValueError(f"shard id {new_id!r} is taken")
        left = dataclasses.replace(old, end=at, generation=old.generation + 1)
        right = Shard(new_id, at, old.end, old.replicas)
        return self.with_shards([left, right])

    def with_shards(self, changed: Iterable[Shard], epoch: int | None = None) -> ShardMap:
        """The map with ``changed`` shards put in: each replaces the shard of the same id and every
        shard whose range it overlaps.  ValueError if the result is not a valid map (a caller
        patching a cache then fetches the whole map instead)."""
        changed = list(changed)
        ids = {s.id for s in changed}
        kept = [s for s in self.shards if s.id not in ids and not any(
            intersect(s.start, s.end, c.start, c.end) for c in changed)]
        shards = sorted([*kept, *changed], key=lambda s: (s.start, s.stripe or (0, 0)))
        return ShardMap(self.epoch + 1 if epoch is None else epoch, tuple(shards))

    # --- wire ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Wire / storage form."""
        return {"epoch": self.epoch, "shards": [s.to_dict() for s in self.shards]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ShardMap:
        """Inverse of :meth:`to_dict`."""
        return cls(int(d["epoch"]), tuple(Shard.from_dict(s) for s in d["shards"]))


def _is_u64(v: Any) -> bool:
    return type(v) is int and 0 <= v < KEY_SPACE_END


# A new cluster's shard count.  12 divides by 1, 2, 3, 4 and 6, so the leaders of an even load (uniform
# keys) spread evenly over clusters of those sizes: with 8, six nodes led 2/2/1/1/1/1 and the two
# nodes leading two shards capped the whole cluster (bench/elastic.py, README "Scale-out").
DEFAULT_SHARDS = 12


def initial_map(node_ids: list[str], shard_count: int = DEFAULT_SHARDS, split_points: list[int] | None = None,
                replication: int = 3, scheme: str = placement.HRW) -> ShardMap:
    """The deterministic map a new cluster starts with: equal ranges (or ``split_points``), placed by
    ``scheme`` (``placement.initial_place``: HRW, or copysets when the nodes form them)."""
    points = split_points if split_points is not None else even_split_points(shard_count)
    shards = []
    for i, (start, end) in enumerate(ranges_from_split_points(points)):
        sid = shard_name(i)
        shards.append(Shard(sid, start, end, tuple(placement.initial_place(i, sid, node_ids, replication, scheme))))
    return ShardMap(1, tuple(shards))


def shard_name(number: int) -> str:
    """The id of the ``number``-th shard ever created (``s0000``, ``s0001``, ...)."""
    return f"s{number:04d}"


def meta_replicas(node_ids: list[str], replication: int = 3) -> list[str]:
    """Nodes hosting the meta group (the replicated shard map)."""
    return placement.place(META_GROUP, node_ids, replication)

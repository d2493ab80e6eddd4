"""Split and stripe decisions (pure): when a shard should split, where, and when to stripe the tail.

Nothing here does I/O, starts a thread or reads a clock; time is passed in.  A
shard leader feeds every applied write batch to a :class:`WriteTracker`, builds
a :class:`ShardStats` from it and from its store's estimates, and asks:

* :func:`maybe_split` -- split a shard that outgrew ``split_bytes``.  When most
  writes land past the largest key (timestamps inserted in increasing order),
  it splits *at the tail*, just past the largest key: the right-hand shard
  starts empty, so nothing is copied.  Otherwise it splits at the median key.
* :func:`maybe_load_split` -- split a shard that takes more write requests than
  ``load_split_requests_per_s`` (not a hot tail: that is striped), at the median of the keys
  recently written to it, so that leadership of the halves can spread over nodes (as TiKV and
  CockroachDB split on load);
* :func:`plan_segment` -- a tail that takes more writes than one Raft group
  should carry is striped: a stretch of key space from just past its largest
  key is served by K groups (``routing/stripes.py``), whose leaders
  :func:`place_stripe_leaders` and :func:`stripe_replicas` spread over nodes.
* :func:`manual_split_point` -- checks (or picks) the split key of an
  operator's ``SPLIT`` and says in plain words why it cannot.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from ..routing import placement
from ..routing.stripes import MAX_STRIPES

SplitReason = Literal["size", "tail", "manual", "load"]


class WriteTracker:
    """Sliding-window write rate and append share of one shard (sans-IO; one per shard leader).

    The window is ``window_s`` seconds of whole buckets of ``bucket_s`` seconds
    plus the bucket ``now`` falls in, so memory is ``window_s / bucket_s + 1``
    counters whatever the write rate.  A steady rate reads exactly once the
    tracker has lived a full window; before that, the time it has not lived
    counts as silence, so a new leader's first burst is not mistaken for load.
    Time that goes backwards (a caller mixing clocks) is read as the latest time seen.
    """

    def __init__(self, window_s: float = 10.0, bucket_s: float = 1.0) -> None:
        if not (math.isfinite(bucket_s) and bucket_s > 0 and math.isfinite(window_s) and window_s >= bucket_s):
            raise ValueError("need 0 < bucket_s <= window_s, both finite")
        self._bucket_s = bucket_s
        self._full = max(1, round(window_s / bucket_s))  # whole buckets behind the current one
        slots = self._full + 1
        # a ring: slot b % slots holds bucket b, or an older one that is reset on reuse
        self._ids: list[int | None] = [None] * slots
        self._writes = [0] * slots
        self._appends = [0] * slots
        self._requests = [0] * slots
        self._latest = -math.inf

    def observe(self, keys: Sequence[int], now: float, largest_before: int | None) -> None:
        """Record one write request's batch: ``keys`` at time ``now``; ``largest_before`` is the
        shard's largest key before the batch (None: the shard was empty, so every key is an append)."""
        now = self._clamp(now)
        self._latest = now
        if not keys:
            return
        if largest_before is None:
            appends = len(keys)
        else:
            appends = sum(1 for k in keys if k > largest_before)
        bucket = math.floor(now / self._bucket_s)
        slot = bucket % len(self._ids)
        if self._ids[slot] != bucket:
            self._ids[slot] = bucket
            self._writes[slot] = 0
            self._appends[slot] = 0
            self._requests[slot] = 0
        self._writes[slot] += len(keys)
        self._appends[slot] += appends
        self._requests[slot] += 1

    def writes_per_s(self, now: float) -> float:
        """Keys written per second over the window ending at ``now``."""
        now = self._clamp(now)
        return self._sums(now)[0] / self._span(now)

    def requests_per_s(self, now: float) -> float:
        """Write requests (a put or a batch, whatever its size) per second over the window."""
        now = self._clamp(now)
        return self._sums(now)[2] / self._span(now)

    def sustained_requests_per_s(self, now: float) -> float:
        """Write requests per second in the quietest whole bucket of the window: a rate held in
        every bucket, where :meth:`requests_per_s` averages (0.0 until a full window has passed)."""
        current = math.floor(self._clamp(now) / self._bucket_s)
        lowest = None
        for bucket in range(current - self._full, current):
            slot = bucket % len(self._ids)
            n = self._requests[slot] if self._ids[slot] == bucket else 0
            lowest = n if lowest is None else min(lowest, n)
        return (lowest or 0) / self._bucket_s

    def append_fraction(self, now: float) -> float:
        """Share of the window's written keys that landed past the shard's largest key (0.0 if none)."""
        writes, appends, _ = self._sums(self._clamp(now))
        return appends / writes if writes else 0.0

    def _clamp(self, now: float) -> float:
        if not math.isfinite(now):
            raise ValueError(f"time must be finite, got {now}")
        return max(now, self._latest)

    def _sums(self, now: float) -> tuple[int, int, int]:
        """Keys written, appends and requests in the window ending at ``now``."""
        current = math.floor(now / self._bucket_s)
        writes = appends = requests = 0
        for slot, bucket in enumerate(self._ids):
            if bucket is not None and current - self._full <= bucket <= current:
                writes += self._writes[slot]
                appends += self._appends[slot]
                requests += self._requests[slot]
        return writes, appends, requests

    def _span(self, now: float) -> float:
        # the whole buckets plus the elapsed part of the current one (never zero)
        into_current = now - math.floor(now / self._bucket_s) * self._bucket_s
        return self._full * self._bucket_s + max(0.0, into_current)


@dataclass(frozen=True)
class ShardStats:
    """What a shard leader knows about its shard when it decides (sizes and keys are estimates).

    ``start``/``end`` are its bounds (``end`` may be 2**64); for a striped tail the
    segment's bounds and its stripes' combined figures.  ``smallest_key``,
    ``largest_key`` and ``median_key`` are None when unknown or the shard is empty.
    """

    shard_id: str
    start: int
    end: int
    bytes: int
    keys: int
    largest_key: int | None
    smallest_key: int | None
    writes_per_s: float = 0.0
    append_fraction: float = 0.0
    median_key: int | None = None
    # write requests/s held through the window (WriteTracker.sustained_requests_per_s)
    requests_per_s: float = 0.0
    # a sample of the keys written lately (any order): where the write load's middle is
    recent_keys: tuple[int, ...] = ()
    # write requests/s of the other shards the same node leads: whether this one stands out
    sibling_requests_per_s: tuple[float, ...] = ()


@dataclass(frozen=True)
class SplitSettings:
    """Thresholds of the split and stripe policy."""

    split_bytes: int = 64 * 1024 * 1024
    # "most writes land past the largest key": the tail is where the writes go
    tail_append_fraction: float = 0.8
    min_keys_to_split: int = 2
    # tail load (keys/s) above which the tail is striped: about a third of what one group carries
    # when each node has a core (15.6k-17.1k single-key puts/s at 64 in flight, three nodes sharing
    # two cores), so a tail is striped well before its group saturates and not while it is light.
    # The scale lab's nodes have 0.2 of a core (about 1,700 puts/s a group): bench/elastic.py
    # passes 1,000 for them.  0: never stripe (the local launcher's choice when its nodes share
    # fewer cores than there are nodes, cluster/launcher.py)
    tail_stripe_writes_per_s: float = 5000.0
    tail_stripes: int = 0  # K; 0 means "the number of nodes"
    max_stripes: int = MAX_STRIPES
    # write requests/s above which a shard that is not a hot tail splits on load (0: never): the
    # tail's threshold, about a third of what one group whose leader has 0.15 of a core carries
    # (2,600-3,000 single-key puts/s, bench/elastic.py --keys window), so a hot range spreads
    # before its leader saturates
    load_split_requests_per_s: float = 1000.0
    # fewer keys than this: too small to split on load (its load is a handful of hot keys)
    min_keys_to_load_split: int = 1000
    # a shard splits on load only if it takes at least this many times the median rate of the
    # other shards its node leads: when they are as busy, the node's load is already spread over
    # shards and a split only makes the leader count uneven (12 uniform shards on 6 nodes split
    # into 19 once the whole cluster passed 12 x the threshold, and lost a fifth of their throughput)
    load_split_skew: float = 2.0

    @property
    def stripes_tails(self) -> bool:
        """Whether hot tails are striped at all (``tail_stripe_writes_per_s`` 0: never)."""
        return self.tail_stripe_writes_per_s > 0

    def __post_init__(self) -> None:
        if self.split_bytes < 1 or self.min_keys_to_split < 1:
            raise ValueError("split_bytes and min_keys_to_split must be positive")
        if not 0.0 <= self.tail_append_fraction <= 1.0:
            raise ValueError("tail_append_fraction must be in [0, 1]")
        if not self.tail_stripe_writes_per_s >= 0:
            raise ValueError("tail_stripe_writes_per_s must be >= 0 (0: never stripe)")
        # the shard map refuses a segment of more than MAX_STRIPES stripes
        if not 2 <= self.max_stripes <= MAX_STRIPES:
            raise ValueError(f"max_stripes must be in 2..{MAX_STRIPES}")
        if self.tail_stripes < 0:
            raise ValueError("tail_stripes must be 0 (one per node) or a stripe count")
        if self.load_split_requests_per_s < 0 or self.min_keys_to_load_split < 2:
            raise ValueError("load_split_requests_per_s must be >= 0 (0: off), min_keys_to_load_split >= 2")
        if not self.load_split_skew >= 1.0:
            raise ValueError("load_split_skew must be at least 1")


@dataclass(frozen=True)
class Split:
    """Split ``shard_id`` at ``at``: it keeps ``[start, at)``, a new shard takes ``[at, end)``."""

    shard_id: str
    at: int
    reason: SplitReason


@dataclass(frozen=True)
class StripePlan:
    """Serve ``[at, end)`` as a new segment of ``stripes`` stripes; keys below ``at`` stay put, keys
    from ``end`` on go to a new range shard (none when ``end`` is the shard's end)."""

    at: int
    stripes: int
    end: int


def _inside(stats: ShardStats, at: int) -> bool:
    return stats.start < at < stats.end


def _median_point(stats: ShardStats) -> int | None:
    """A split key near the median that leaves keys on both sides, or None.

    ``at`` goes to the right side, so ``smallest < at <= largest`` leaves data on
    both.  A median equal to the smallest key (the lower median of two keys, or a
    coarse estimate) is moved one past it rather than given up on.
    """
    m, lo, hi = stats.median_key, stats.smallest_key, stats.largest_key
    if m is None or lo is None or hi is None:
        return None
    for at in (m, m + 1):
        if lo < at <= hi and _inside(stats, at):
            return at
    return None


def _tail_point(stats: ShardStats, settings: SplitSettings) -> int | None:
    """Just past the largest key when appends dominate and that key is inside the shard, else None."""
    if stats.append_fraction < settings.tail_append_fraction or stats.largest_key is None:
        return None
    at = stats.largest_key + 1
    # key 2**64-1 (or end-1) written: there is no room past it, so no tail point
    return at if _inside(stats, at) else None


def maybe_split(stats: ShardStats, settings: SplitSettings) -> Split | None:
    """The split ``stats``' shard should make now, or None.

    Only a shard over ``split_bytes`` with at least ``min_keys_to_split`` keys
    splits.  If appends dominate (``append_fraction >= tail_append_fraction``) it
    splits at ``largest_key + 1`` (reason ``"tail"``): the right side starts
    empty and takes the appends, nothing is copied.  Otherwise, or when there is
    no room past the largest key, at the median (``"size"``), only if that leaves
    keys on both sides.  A returned ``at`` is always strictly inside
    ``(start, end)``.  For a hot tail that :func:`plan_stripes` also wants to
    stripe, stripe first: both cut at the same key.
    """
    if stats.bytes <= settings.split_bytes or stats.keys < settings.min_keys_to_split:
        return None
    at = _tail_point(stats, settings)
    if at is not None:
        return Split(stats.shard_id, at, "tail")
    at = _median_point(stats)
    if at is not None:
        return Split(stats.shard_id, at, "size")
    return None


def maybe_load_split(stats: ShardStats, settings: SplitSettings) -> Split | None:
    """The split a shard busy with writes should make now, or None.

    A shard taking more than ``load_split_requests_per_s`` write requests per second in every
    second of the window (``stats.requests_per_s``, the sustained rate; 0 turns this off), with
    at least ``min_keys_to_load_split`` keys, whose writes do not mostly land past its largest
    key (a hot tail is striped instead: :func:`plan_segment`), splits at the median of
    ``recent_keys``, the keys written lately: each half then takes about half the load, and the
    leader balancer can hand one half to another node.  None when that median leaves no recent
    key on its left or does not lie strictly inside the shard.  Each half must take the rate again
    over a whole window before it splits in turn, so a busy cluster settles at about its write
    rate over the threshold shards.

    Nor does a shard split while the other shards its node leads are about as busy (it takes less
    than ``load_split_skew`` times their median rate): the load is spread already, as uniform keys
    spread it, and more shards would only lead unevenly.  A node that leads no other shard, or
    whose others idle, splits its hot one.
    """
    threshold = settings.load_split_requests_per_s
    if not threshold or stats.requests_per_s <= threshold or stats.keys < settings.min_keys_to_load_split:
        return None
    siblings = sorted(stats.sibling_requests_per_s)
    if siblings and stats.requests_per_s < settings.load_split_skew * siblings[len(siblings) // 2]:
        return None
    if stats.append_fraction >= settings.tail_append_fraction or len(stats.recent_keys) < 2:
        return None
    ordered = sorted(stats.recent_keys)
    at = ordered[len(ordered) // 2]
    if not (ordered[0] < at and _inside(stats, at)):
        return None
    return Split(stats.shard_id, at, "load")


def manual_split_point(stats: ShardStats, at: int | None) -> int:
    """The key an operator's split of ``stats``' shard happens at: ``at`` itself, or the median if None.

    Raises ValueError, worded for the operator, when ``at`` is not strictly
    inside the shard, or when no ``at`` is given and the shard has too few keys
    (or no usable median) to pick one.  An explicit ``at`` may leave a side empty.
    """
    bounds = f"[{stats.start}, {stats.end})"
    if at is not None:
        if type(at) is not int:  # bool is an int subclass and is refused on purpose
            raise ValueError(f"split key must be an integer, got {type(at).__name__}")
        if not _inside(stats, at):
            raise ValueError(f"split key {at} is not strictly inside shard {stats.shard_id} {bounds}; "
                             f"pick a key above {stats.start} and below {stats.end}")
        return at
    if stats.keys < 2:
        raise ValueError(f"shard {stats.shard_id} {bounds} has too few keys ({stats.keys}) to pick a split "
                         "key; give one explicitly")
    point = _median_point(stats)
    if point is None:
        raise ValueError(f"shard {stats.shard_id} {bounds} has no usable median key to split at "
                         "(too few distinct keys, or not known yet); give a split key explicitly")
    return point


def plan_segment(stats: ShardStats, settings: SplitSettings, node_count: int, key_rate: float,
                 row_bytes: float) -> StripePlan | None:
    """Where a hot tail's striped segment goes, or None (the shard is a range shard, not a stripe).

    Only a shard taking more than ``tail_stripe_writes_per_s`` keys/s (0: none), most of them past its
    largest key (``append_fraction >= tail_append_fraction``), is striped, over
    ``K = tail_stripes or node_count`` stripes (at most ``max_stripes``; one node alone gains
    nothing from stripes).  The segment:

    * starts half a second of appends past the largest key (``key_rate``: how fast the largest
      key moves, keys of key space per second), so writes in flight still land below it -- a
      segment must start empty;
    * ends where its stripes would hold about ``split_bytes`` each at the current rate
      (``row_bytes`` per key), or at the shard's end.  The range after it stays one shard,
      striped in turn when its appends grow hot, so a striped segment never needs re-cutting.
    """
    if not settings.stripes_tails or stats.writes_per_s <= settings.tail_stripe_writes_per_s \
            or stats.largest_key is None:
        return None
    if stats.append_fraction < settings.tail_append_fraction or not key_rate > 0:
        return None
    k = min(settings.max_stripes, settings.tail_stripes or node_count)
    if k < 2:
        return None
    at = stats.largest_key + 1 + math.ceil(key_rate * 0.5)
    lifetime = k * settings.split_bytes / max(stats.writes_per_s * max(row_bytes, 1.0), 1.0)
    end = min(stats.end, at + max(math.ceil(key_rate * lifetime), k))
    if not stats.start < at < end:
        return None
    return StripePlan(at, k, end)


def _distinct(nodes: Sequence[str]) -> list[str]:
    if not nodes:
        raise ValueError("need at least one node")
    return list(dict.fromkeys(nodes))  # drop repeats, keep the caller's order


def place_stripe_leaders(k: int, nodes: list[str]) -> list[str]:
    """Preferred leaders of stripes ``0..k-1``: ``nodes`` round-robin in the given order.

    Distinct when ``k <= len(nodes)``; otherwise as even as possible.  The result
    depends only on the arguments, so pass a fixed order (sorted, or least loaded first).
    """
    if k < 1:
        raise ValueError("need at least one stripe")
    order = _distinct(nodes)
    return [order[i % len(order)] for i in range(k)]


def stripe_replicas(stripe_index: int, k: int, nodes: list[str], factor: int,
                    scheme: str = placement.HRW) -> tuple[str, ...]:
    """Replicas of stripe ``stripe_index`` of ``k``: its preferred leader from
    :func:`place_stripe_leaders` first, then ``factor - 1`` more distinct nodes (all
    of them if fewer): with the ``copysets`` scheme, when ``nodes`` form copysets, the
    rest of the leader's copyset; else the nodes that follow it in ``nodes``' order,
    wrapping around."""
    if not 0 <= stripe_index < k:
        raise ValueError(f"stripe index {stripe_index} is not in 0..{k - 1}")
    if factor < 1:
        raise ValueError("need at least one replica")
    order = _distinct(nodes)
    leader = place_stripe_leaders(k, order)[stripe_index]
    groups = placement.copysets_of(scheme, order, factor)
    if groups is not None:
        # a node then hears from its copyset peers only, as for the initial shards (placement.py)
        group = next(g for g in groups if leader in g)
        return (leader, *(n for n in group if n != leader))
    first = order.index(leader)
    # consecutive windows of the ring: every node gets about the same number of replicas
    return tuple(order[(first + j) % len(order)] for j in range(min(factor, len(order))))

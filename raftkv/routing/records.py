"""The shard map as small records (pure): one record per shard, each changed by compare-and-set.

The meta group stores the map as one record per shard (its ``Shard.to_dict``)
plus an epoch, not as one blob: a change writes only the shards it touches,
and a map of 100,000 shards never travels as one command.  A change is a list
of ``[shard_id, expected_generation, record | None]``: it applies only if every
named shard is still at its expected generation (0: "absent"), and only if the
resulting records still form a valid map (``ShardMap._check``); it then bumps
the epoch once.  So two leaders publishing overlapping splits cannot both win,
and a record published twice (a retry) is refused the second time, harmlessly.

:func:`catch_up` is what a shard leader publishes when the map lags behind its
own durable state (a split it applied whose publication was lost in a crash).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from .shardmap import Shard, ShardMap

Change = list[Any]  # [shard_id, expected_generation, record dict | None]


def check_changes(raw: Any) -> list[Change]:
    """Validate the wire form of a change list (ValueError if malformed)."""
    if not isinstance(raw, list) or not 0 < len(raw) <= 4096:
        raise ValueError("a map change is a list of 1..4096 [shard_id, expected_generation, record]")
    out = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                and type(item[1]) is int and item[1] >= 0 and (item[2] is None or isinstance(item[2], dict))):
            raise ValueError("malformed map change")
        if item[2] is not None:
            shard = Shard.from_dict(item[2])  # raises on a malformed record
            if shard.id != item[0]:
                raise ValueError("a map change names one shard and carries another")
        out.append([item[0], item[1], item[2]])
    if len({c[0] for c in out}) != len(out):
        raise ValueError("a map change names a shard twice")
    return out


def apply_changes(records: Mapping[str, dict[str, Any]], epoch: int,
                  changes: list[Change]) -> tuple[dict[str, dict[str, Any] | None], str | None]:
    """Decide a change: ``(writes, None)`` with the records to write (None = delete), or ``({}, why)``.

    ``records``: the current records by shard id.  The caller bumps the epoch when it writes.
    """
    writes: dict[str, dict[str, Any] | None] = {}
    for shard_id, expected, record in changes:
        current = records.get(shard_id)
        have = int(current.get("generation", 1)) if current is not None else 0
        if have != expected:
            return {}, f"shard {shard_id} is at generation {have}, not {expected}"
        if record is not None and int(record.get("generation", 1)) <= expected:
            # every change moves a shard's generation on, so two changes made from the same
            # generation can never both win
            return {}, f"shard {shard_id}'s new record must have a generation above {expected}"
        writes[shard_id] = record
    merged = {**records, **writes}
    try:
        map_of(merged.values(), epoch + 1)
    except (ValueError, KeyError, TypeError) as exc:
        return {}, f"the change would break the map: {exc}"
    return writes, None


def map_of(records: Iterable[dict[str, Any] | None], epoch: int) -> ShardMap:
    """The map the records form (ValueError unless they form a valid one)."""
    shards = [Shard.from_dict(r) for r in records if r is not None]
    shards.sort(key=lambda s: (s.start, s.stripe or (0, 0)))
    return ShardMap(epoch, tuple(shards))


def initial_changes(shard_map: ShardMap) -> list[Change]:
    """The change that writes a new cluster's initial map (every record expected absent)."""
    return [[s.id, 0, s.to_dict()] for s in shard_map.shards]


def catch_up(shard_map: ShardMap, local: Shard, children: Iterable[Shard]) -> list[Change] | None:
    """What a shard leader publishes when the map is behind its own durable state, or None.

    ``local``: the shard as its replica knows it (bounds and generation from its store);
    ``children``: the shards its splits created, as they were created.  Children the map
    already holds are left alone (they may have moved on since).
    """
    known = shard_map.shard_by_id(local.id)
    if known is None or known.generation >= local.generation:
        return None
    changes: list[Change] = [[local.id, known.generation, local.to_dict()]]
    for child in children:
        if shard_map.shard_by_id(child.id) is None:
            changes.append([child.id, 0, child.to_dict()])
    return changes

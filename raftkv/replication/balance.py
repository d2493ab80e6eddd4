"""Leadership balancing (pure): which group, if any, this node should hand to whom.

Every shard's reads and writes go to its leader, so a node leading most shards
does most of the work.  Each node periodically asks :func:`pick_transfer`; a
node leading more than its fair share hands one group to the replica that
leads the fewest, and only when that is a strict improvement (the receiver
stays within the fair share), so two nodes never trade a group back and forth.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection


def pick_transfer(me: str, leaders: dict[str, str | None], replicas: dict[str, list[str]],
                  preferred: dict[str, str] | None = None,
                  recently_tried: Collection[str] = ()) -> tuple[str, str] | None:
    """``(group_id, target_node)`` to transfer now, or None.

    ``leaders``: group -> its current leader (None while electing: then do nothing);
    ``replicas``: group -> its replica nodes.  Only groups led by ``me`` move.
    ``preferred``: group -> the node that should lead it (the stripes of a segment each
    prefer a different node, so their writes spread); such a group goes to its preferred
    node whenever that is one of its replicas, and is never moved to even out counts.
    ``recently_tried``: groups we asked to move a moment ago that we still lead -- the target
    refused (it lags, or is down): pick another, or a target that refuses would block every
    other move for good.
    """
    preferred = preferred or {}
    for group in sorted(g for g, leader in leaders.items() if leader == me and g not in recently_tried):
        want = preferred.get(group)
        if want is not None and want != me and want in replicas.get(group, ()):
            return group, want
    if not leaders or any(v is None for v in leaders.values()):
        return None
    nodes = {n for members in replicas.values() for n in members}
    counts = Counter({n: 0 for n in nodes})
    counts.update(v for v in leaders.values() if v is not None)
    fair = math.ceil(len(leaders) / max(1, len(nodes)))
    if counts[me] <= fair:
        return None
    for group in sorted(g for g, leader in leaders.items()
                        if leader == me and g not in preferred and g not in recently_tried):
        targets = sorted((counts[n], n) for n in replicas[group] if n != me and counts[n] + 1 <= fair)
        if targets:
            return group, targets[0][1]
    return None

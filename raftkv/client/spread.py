"""Spread scans: one shard's large scan read from all its replicas at once (the plan; pure, no I/O).

A shard is one Raft group, and its leader reads a scan's pages one after another on one core
while the other replicas idle.  When a scan's first page says more follows, the leader also cuts
the rest into chunks (``chunks``: keys in visiting order) and names the Raft index of its snapshot.
The client reads the chunks a few at a time, each on a replica in turn, at that index, and hands
the rows out strictly in key order: a chunk's pages wait, bounded, until the chunks before it are
out.  A replica that cannot show the snapshot's state for a chunk (it wrote into it since, or is
behind, or is down) makes the client read that chunk from the leader's snapshot itself.

This module decides the chunks' bounds and replicas; ``aio.py`` does the reading.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from .. import errors

CHUNK_PAGES = 4  # a chunk is about this many pages
CHUNKS_AHEAD = 6  # chunks read at once, beyond the one whose rows go out
PAGES_AHEAD = CHUNK_PAGES  # pages a chunk holds before its turn comes (bounds the client's memory)


def chunk_bounds(cuts: Any, lo: int, hi: int, reverse: bool) -> list[tuple[int, int]]:
    """The chunks ``[a, b)`` that ``cuts`` (a node's reply) make of ``[lo, hi)``, in visiting order.

    ``cuts`` must be ints strictly inside ``[lo, hi)``, ascending (descending if ``reverse``);
    the first chunk runs from the scan's position to the first cut, the last from the last cut
    to the end.  Raises :class:`~raftkv.errors.RemoteProtocolError` for anything else.
    """
    if not isinstance(cuts, list) or not cuts:
        raise errors.RemoteProtocolError(f"chunks {cuts!r:.60} is not a list of keys")
    ordered = cuts[::-1] if reverse else cuts
    prev = lo
    for cut in ordered:
        if type(cut) is not int or not prev < cut < hi:
            raise errors.RemoteProtocolError(f"chunk cut {cut!r:.40} is not a key inside ({prev}, {hi})")
        prev = cut
    edges = [lo, *ordered, hi]
    bounds = list(zip(edges, edges[1:], strict=False))
    return bounds[::-1] if reverse else bounds


def replica_order(replicas: Sequence[str], leader: str | None) -> list[str]:
    """The replicas in the order chunks go to them: the followers first (the leader is reading the
    first chunk already), then the leader, round and round."""
    followers = [r for r in replicas if r != leader]
    return followers + ([leader] if leader in replicas else [])

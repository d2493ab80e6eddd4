"""Replica placement by rendezvous (highest-random-weight) hashing.

Each (shard, node) pair gets a pseudo-random weight; a shard's replicas are the
``factor`` nodes of highest weight.  Adding or removing a node changes only the
shards for which that node is (or was) among the winners, so placement is
stable -- the property later rebalancing relies on.
"""

from __future__ import annotations

import hashlib


def weight(shard_id: str, node_id: str) -> int:
    """Deterministic 64-bit weight of ``node_id`` for ``shard_id`` (same on every machine)."""
    digest = hashlib.blake2b(f"{shard_id}\0{node_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def place(shard_id: str, node_ids: list[str], factor: int) -> list[str]:
    """The ``factor`` nodes (or all, if fewer) that host ``shard_id``, best first."""
    ranked = sorted(node_ids, key=lambda n: (weight(shard_id, n), n), reverse=True)
    return ranked[: min(factor, len(ranked))]

"""Replica placement: rendezvous (highest-random-weight) hashing, and copysets for a new cluster.

Each (shard, node) pair gets a pseudo-random weight; a shard's replicas are the
``factor`` nodes of highest weight.  Adding or removing a node changes only the
shards for which that node is (or was) among the winners, so placement is
stable -- the property later rebalancing relies on.

A cluster made with the ``copysets`` scheme (the default since it was measured,
recorded in each data dir's identity so that older clusters keep ``hrw``) places
its initial shards in *copysets* when its founders divide into two or more groups
of ``factor`` (Cidon et al., USENIX ATC 2013): the sorted founders form disjoint
groups, and the shards go to them in turn.  A node then shares shards with
``factor - 1`` peers instead of with every node, so its Raft messages come from
two peers and batch as on a 3-node cluster, and losing any ``factor`` nodes at
once loses a shard only if they form a copyset.  The cost: a dead node's replicas
are copied back from its two peers only.  Nodes that join later are placed by the
planner, which balances counts.
"""

from __future__ import annotations

import hashlib

HRW = "hrw"
COPYSETS = "copysets"
SCHEMES = (HRW, COPYSETS)
DEFAULT_SCHEME = COPYSETS  # for a new cluster; a data dir that records no scheme was made with HRW


def weight(shard_id: str, node_id: str) -> int:
    """Deterministic 64-bit weight of ``node_id`` for ``shard_id`` (same on every machine)."""
    digest = hashlib.blake2b(f"{shard_id}\0{node_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def place(shard_id: str, node_ids: list[str], factor: int) -> list[str]:
    """The ``factor`` nodes (or all, if fewer) that host ``shard_id``, best first."""
    ranked = sorted(node_ids, key=lambda n: (weight(shard_id, n), n), reverse=True)
    return ranked[: min(factor, len(ranked))]


def copysets(node_ids: list[str], factor: int) -> list[list[str]] | None:
    """The sorted nodes cut into disjoint groups of ``factor``, or None when they do not divide
    into two or more such groups (then every placement is HRW's)."""
    nodes = sorted(node_ids)
    if factor < 2 or len(nodes) < 2 * factor or len(nodes) % factor:
        return None
    return [nodes[i:i + factor] for i in range(0, len(nodes), factor)]


def copysets_of(scheme: str, node_ids: list[str], factor: int) -> list[list[str]] | None:
    """The copysets ``scheme`` places in (None: it places otherwise, or the nodes form none)."""
    if scheme not in SCHEMES:
        raise ValueError(f"unknown placement {scheme!r}: one of {', '.join(SCHEMES)}")
    return copysets(node_ids, factor) if scheme == COPYSETS else None


def initial_place(index: int, shard_id: str, node_ids: list[str], factor: int, scheme: str = HRW) -> list[str]:
    """The replicas of a new cluster's ``index``-th shard under ``scheme``: with copysets (when the
    nodes form them) the next copyset in turn, else HRW's choice; best first either way."""
    groups = copysets_of(scheme, node_ids, factor)
    if groups is None:
        return place(shard_id, node_ids, factor)
    return place(shard_id, groups[index % len(groups)], factor)

"""Replica moves (pure): which replicas to add, remove or replace so that every shard keeps
``factor`` replicas on healthy nodes and every up node holds about as many replicas as the others.

Placement is explicit: a shard's replicas are what its map record says.  A node that joins holds
nothing until moves are planned onto it, and a split's child stays where its parent was.
Rendezvous hashing (``placement.weight``) only breaks ties, so that a plan is deterministic and
spreads the shards between equally loaded nodes.  Pure hashing cannot balance by itself: at
1,000 nodes its busiest node holds 1.2x the mean.

The caller (the meta group's leader) calls :func:`plan_moves` now and then and runs what it
returns.  An added node joins as a non-voter, catches up and is promoted; then the removed node
leaves.  The caller passes the moves still under way as ``in_flight``.  The work is done most
urgent first, in the same order as TiKV PD's replica checker:

1. ``dead``: replace a replica on a dead node;
2. ``decommission``: move a replica off a node being drained;
3. ``under-replicated``: add a replica to a shard with fewer than ``factor`` on live nodes;
4. ``over-replicated``: remove a replica from a shard with more than ``factor``;
5. ``balance``: move a replica from the busiest up node towards the emptiest, until every up
   node's count is within :func:`band`.

A ``suspect`` node (missed heartbeats, not yet declared dead) keeps its replicas but is never a
target.  A shard that has lost its quorum (half or more of its replicas on dead nodes) cannot
change its membership, so no move is planned for it; an operator has to recover it.
"""

from __future__ import annotations

import bisect
import dataclasses
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass

from ..routing import placement
from ..routing.shardmap import Shard, ShardMap

UP, SUSPECT, DEAD, DECOMMISSIONING = "up", "suspect", "dead", "decommissioning"
STATES = frozenset({UP, SUSPECT, DEAD, DECOMMISSIONING})
LIVE = frozenset({UP, SUSPECT})

# the reasons, most urgent first
DEAD_REPLICA, DECOMMISSION, UNDER, OVER, BALANCE = (
    "dead", "decommission", "under-replicated", "over-replicated", "balance")
REASONS = (DEAD_REPLICA, DECOMMISSION, UNDER, OVER, BALANCE)


@dataclass(frozen=True)
class Move:
    """One membership change of one shard: ``add`` gains a replica, ``remove`` loses one.

    With both set it is a replacement. ``add`` joins as a non-voter, catches up and is promoted
    before ``remove`` leaves.
    """

    shard: str
    add: str | None
    remove: str | None
    reason: str

    def __post_init__(self) -> None:
        if self.add is None and self.remove is None:
            raise ValueError("a move adds or removes a replica")
        if self.add == self.remove:
            raise ValueError("a move cannot add and remove the same node")
        if self.reason not in REASONS:
            raise ValueError(f"unknown reason {self.reason!r}")


def band(counts: Collection[int]) -> tuple[int, int]:
    """The replica counts ``(lo, hi)`` (inclusive) that count as balanced, given every up node's count.

    That is the mean ±10 %, or ±1 when 10 % of the mean is less than one replica.  Integer
    arithmetic, because the floats in ``300 * 0.9`` would round 270 up to 271.
    """
    total, n = sum(counts), len(counts)
    if n == 0:
        return 0, 0
    if total >= 10 * n:
        return -(-9 * total // (10 * n)), 11 * total // (10 * n)
    return -(-total // n) - 1, total // n + 1


def plan_moves(shards: Sequence[Shard] | ShardMap, nodes: Mapping[str, str],
               load: Mapping[str, int] | None = None, *, factor: int = 3,
               in_flight: Iterable[str | Move] = (), max_per_node: int = 2,
               max_moves: int | None = None) -> list[Move]:
    """The moves to start now, most urgent first (deterministic for the same input).

    ``shards``: the current placement (a map, or its shards).  ``nodes``: node id -> state,
    one of :data:`STATES`; every node holding a replica must be listed.  ``load``: shard id ->
    approximate bytes; balancing moves the smallest shards of a node first.
    ``in_flight``: shards with a move under way, as shard ids or as the :class:`Move` itself.
    None of them gets another move.  Each counts towards ``max_per_node`` on the nodes it
    touches: the move's own two nodes if given, otherwise every replica of the shard.  A
    :class:`Move` also counts as done in the replica counts, as far as the map does not show it.
    ``max_per_node``: moves touching a node, as gainer or loser, in flight included.  A dead
    node is exempt, because it does no work to lose a replica, and it must lose all of them fast.
    ``max_moves``: cap on the plan's length.
    """
    shard_list = list(shards.shards if isinstance(shards, ShardMap) else shards)
    for node, st in nodes.items():
        if st not in STATES:
            raise ValueError(f"node {node}: unknown state {st!r} (one of {sorted(STATES)})")
    if factor < 1 or max_per_node < 1 or (max_moves is not None and max_moves < 0):
        raise ValueError("factor and max_per_node must be positive, max_moves not negative")
    for s in shard_list:
        for r in s.replicas:
            if r not in nodes:
                raise ValueError(f"shard {s.id} has a replica on {r!r}, which is not a known node")
    plan = _Plan(shard_list, nodes, load or {}, factor, in_flight, max_per_node, max_moves)
    plan.repair()
    plan.balance()
    return plan.moves


def apply_moves(shards: Sequence[Shard] | ShardMap, moves: Iterable[Move]) -> list[Shard]:
    """The shards once ``moves`` are done (at most one per shard), in the same order.

    A replacement takes the removed replica's place in ``replicas``; an addition goes last.
    Generations are left as they are.  ValueError if a move does not fit its shard.
    """
    by_id: dict[str, Move] = {}
    for m in moves:
        if m.shard in by_id:
            raise ValueError(f"two moves for shard {m.shard}")
        by_id[m.shard] = m
    out = []
    for s in (shards.shards if isinstance(shards, ShardMap) else shards):
        m = by_id.pop(s.id, None)
        if m is None:
            out.append(s)
            continue
        reps = list(s.replicas)
        if m.add is not None and m.add in reps:
            raise ValueError(f"{m}: {m.add} already holds shard {s.id}")
        if m.remove is not None and m.remove not in reps:
            raise ValueError(f"{m}: {m.remove} does not hold shard {s.id}")
        if m.remove is None:
            reps.append(m.add)
        elif m.add is None:
            reps.remove(m.remove)
        else:
            reps[reps.index(m.remove)] = m.add
        if not reps:
            raise ValueError(f"{m} would leave shard {s.id} with no replica")
        out.append(dataclasses.replace(s, replicas=tuple(reps)))
    if by_id:
        raise ValueError(f"moves for unknown shards: {sorted(by_id)}")
    return out


def _hrw(shard_id: str, node: str) -> tuple[int, str]:
    return placement.weight(shard_id, node), node


class _Plan:
    """One planning pass: projected replica counts, per-node budgets and the moves so far."""

    def __init__(self, shards: list[Shard], nodes: Mapping[str, str], load: Mapping[str, int],
                 factor: int, in_flight: Iterable[str | Move], max_per_node: int,
                 max_moves: int | None) -> None:
        self.shards, self.state, self.load, self.factor = shards, dict(nodes), load, factor
        self.limit = max_moves
        self.moves: list[Move] = []
        self.count = dict.fromkeys(self.state, 0)
        for s in shards:
            for r in s.replicas:
                self.count[r] += 1
        self.budget = dict.fromkeys(self.state, max_per_node)
        by_id = {s.id: s for s in shards}
        self.busy: set[str] = set()  # shards that may not get a move (in flight, or planned)
        for f in in_flight:
            if isinstance(f, Move):
                self.busy.add(f.shard)
                touched: Iterable[str] = (n for n in (f.add, f.remove) if n is not None)
                # count it as done, as far as the map does not show it yet, so that no other move
                # chases the same imbalance
                reps = by_id[f.shard].replicas if f.shard in by_id else ()
                if f.add in self.count and f.add not in reps:
                    self.count[f.add] += 1
                if f.remove in reps:
                    self.count[f.remove] -= 1
            else:
                self.busy.add(f)
                touched = by_id[f].replicas if f in by_id else ()
            for n in touched:
                if n in self.budget:
                    self.budget[n] -= 1
        self.up = sorted(n for n, st in self.state.items() if st == UP)
        # the up nodes that may still take part in a move, by projected replica count
        self.ranked = sorted((self.count[n], n) for n in self.up if self.budget[n] > 0)
        # balance candidates: exactly factor replicas, all live (a move keeps the live count)
        self.healthy: list[Shard] = []

    # --- bookkeeping ------------------------------------------------------------------------

    def full(self) -> bool:
        return self.limit is not None and len(self.moves) >= self.limit

    def free(self, node: str) -> bool:
        """Whether ``node`` may take part in one more move."""
        return self.state[node] == DEAD or self.budget[node] > 0

    def _touch(self, node: str, delta: int) -> None:
        if self.state[node] == DEAD:  # exempt from the budget, and never ranked
            self.count[node] += delta
            return
        key = (self.count[node], node)
        i = bisect.bisect_left(self.ranked, key)
        if i < len(self.ranked) and self.ranked[i] == key:
            del self.ranked[i]
        self.count[node] += delta
        self.budget[node] -= 1
        if self.state[node] == UP and self.budget[node] > 0:
            bisect.insort(self.ranked, (self.count[node], node))

    def commit(self, shard: Shard, add: str | None, remove: str | None, reason: str) -> None:
        self.moves.append(Move(shard.id, add, remove, reason))
        self.busy.add(shard.id)
        if add is not None:
            self._touch(add, +1)
        if remove is not None:
            self._touch(remove, -1)

    def target(self, shard: Shard, below: int | None = None) -> str | None:
        """The up node with budget left and the fewest replicas that does not hold ``shard``.

        Ties go to the highest rendezvous weight.  None if there is no such node, or if its
        count is not under ``below``; only the tied candidates are hashed.
        """
        holders = shard.replicas
        best, tied = None, []
        for c, n in self.ranked:
            if best is not None and c > best:
                break
            if n not in holders:
                if best is None and below is not None and c >= below:
                    return None
                best = c
                tied.append(n)
        return max(tied, key=lambda n: _hrw(shard.id, n)) if tied else None

    def can_ever_add(self, shard: Shard) -> bool:
        """Whether some up node does not hold ``shard``, budgets aside.

        If not, waiting will not help.
        """
        return len(self.up) > sum(1 for r in shard.replicas if self.state[r] == UP)

    # --- repairs: dead, decommissioning, under- and over-replicated --------------------------

    def needs(self, shard: Shard) -> list[str]:
        """The repairs ``shard`` needs, most urgent first."""
        states = [self.state[r] for r in shard.replicas]
        live = sum(1 for st in states if st in LIVE)
        out = []
        if DEAD in states:
            out.append(DEAD_REPLICA)
        if DECOMMISSIONING in states:
            out.append(DECOMMISSION)
        if live < self.factor:
            out.append(UNDER)
        if len(states) > self.factor:
            out.append(OVER)
        return out

    def repair(self) -> None:
        queues: dict[str, list[Shard]] = {r: [] for r in REASONS[:4]}
        for s in self.shards:
            if s.id in self.busy:
                continue
            states = [self.state[r] for r in s.replicas]
            if len(states) == self.factor and all(st in LIVE for st in states):
                self.healthy.append(s)  # the common case, kept cheap
            elif 2 * sum(1 for st in states if st != DEAD) <= len(states):
                continue  # no quorum: a membership change could never commit
            elif needs := self.needs(s):
                queues[needs[0]].append(s)
        for reason, queue in queues.items():
            for s in queue:  # a later queue may grow while an earlier one runs
                if self.full():
                    return
                if self.fix(s, reason) == "impossible":
                    later = [r for r in self.needs(s) if REASONS.index(r) > REASONS.index(reason)]
                    if later:
                        queues[later[0]].append(s)

    def fix(self, s: Shard, reason: str) -> str:
        """Plan ``reason``'s move for ``s``.

        Returns "planned"; "blocked" if budgets stand in the way (next time, perhaps); or
        "impossible" if no up node could take a replica.
        """
        live = sum(1 for r in s.replicas if self.state[r] in LIVE)
        if reason in (DEAD_REPLICA, DECOMMISSION):
            victim = next(r for r in s.replicas if self.state[r] == (DEAD if reason == DEAD_REPLICA
                                                                     else DECOMMISSIONING))
            if not self.free(victim):
                return "blocked"
            if live >= self.factor:  # enough live replicas without it: just drop it
                self.commit(s, None, victim, reason)
                return "planned"
            add = self.target(s)
            if add is not None:
                self.commit(s, add, victim, reason)
                return "planned"
            if self.can_ever_add(s):
                return "blocked"
            if reason == DEAD_REPLICA:
                # a dead voter only counts against the quorum, so drop it
                self.commit(s, None, victim, reason)
                return "planned"
            return "impossible"  # a draining node keeps serving until a node can take over
        if reason == UNDER:
            add = self.target(s)
            if add is not None:
                self.commit(s, add, None, reason)
                return "planned"
            return "blocked" if self.can_ever_add(s) else "impossible"
        # OVER: drop a replica, least useful first: draining, then suspect, then the busiest up node
        rank = {DEAD: 0, DECOMMISSIONING: 0, SUSPECT: 1, UP: 2}
        victim = min(s.replicas, key=lambda r: (rank[self.state[r]], -self.count[r], _hrw(s.id, r)))
        if self.state[victim] in LIVE and live <= self.factor:
            return "impossible"  # never drop a live replica of a shard that needs them all
        if not self.free(victim):
            return "blocked"
        self.commit(s, None, victim, reason)
        return "planned"

    # --- balance ----------------------------------------------------------------------------

    def balance(self) -> None:
        """Move replicas from the busiest up nodes to the emptiest until counts are in the band.

        Each move is a strict improvement: its source is above the band or its target below.
        After the move the source still holds at least as many replicas as the target.  So the
        sum of squared counts falls with every move, and plans cannot trade a replica back and
        forth.
        """
        if not self.up:
            return
        lo, hi = band([self.count[n] for n in self.up])
        by_node: dict[str, list[Shard]] | None = None
        sorted_nodes: set[str] = set()
        exhausted: set[str] = set()
        while not self.full() and self.ranked:
            src = next((n for _, n in reversed(self.ranked) if n not in exhausted), None)
            if src is None:
                break
            have, least = self.count[src], self.ranked[0][0]
            if have - least < 2 or (have <= hi and least >= lo):
                break  # nobody with budget is out of the band; the next sources have fewer
            if by_node is None:  # built only when there is something to balance
                by_node = {n: [] for n in self.up}
                for s in self.healthy:
                    for r in s.replicas:
                        if r in by_node:  # a suspect replica stays where it is
                            by_node[r].append(s)
            if src not in sorted_nodes:
                by_node[src].sort(key=lambda s: (self.load.get(s.id, 0), s.id))
                sorted_nodes.add(src)
            for s in by_node[src]:
                if s.id in self.busy:
                    continue
                add = self.target(s, below=have - 1)
                if add is not None and (have > hi or self.count[add] < lo):
                    self.commit(s, add, src, BALANCE)
                    break
            else:
                exhausted.add(src)

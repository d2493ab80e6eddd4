"""The replica planner: one test per reason a replica moves, the limits, and a seeded stress test.

The stress test builds random clusters (3-40 nodes, 10-2,000 shards) and applies random events:
nodes join, are drained, die, turn suspect and recover.  After each event it plans and applies
moves until the plan is empty.  Every plan must respect the limits.  Every run must converge:
no placement may come back (that would be ping-pong).  The result must pass :func:`_check`.
"""

from __future__ import annotations

import random
from collections import Counter

import pytest

from raftkv.replication.planner import (
    DEAD,
    DECOMMISSIONING,
    LIVE,
    SUSPECT,
    UP,
    Move,
    apply_moves,
    band,
    plan_moves,
)
from raftkv.routing import placement
from raftkv.routing.shardmap import Shard, initial_map

pytestmark = pytest.mark.timeout(60)


def _shards(*placements: str) -> list[Shard]:
    """Shards s0, s1, ... with the given replicas ("n1 n2 n3"); ranges do not matter to the planner."""
    return [Shard(f"s{i}", i, i + 1, tuple(p.split())) for i, p in enumerate(placements)]


def _nodes(count: int, **states: str) -> dict[str, str]:
    return {f"n{i}": states.get(f"n{i}", UP) for i in range(1, count + 1)}


def _counts(shards: list[Shard], nodes: dict[str, str]) -> Counter:
    c = Counter(dict.fromkeys(nodes, 0))
    c.update(r for s in shards for r in s.replicas)
    return c


def _check_plan(shards: list[Shard], nodes: dict[str, str], moves: list[Move], max_per_node: int,
                in_flight: set[str] = frozenset()) -> None:
    """What every plan must respect, whatever the cluster."""
    by_id = {s.id: s for s in shards}
    assert len({m.shard for m in moves}) == len(moves), "two moves for one shard"
    touches = Counter()
    for m in moves:
        s = by_id[m.shard]
        assert m.shard not in in_flight
        if m.add is not None:
            assert nodes[m.add] == UP and m.add not in s.replicas
            touches[m.add] += 1
        if m.remove is not None:
            assert m.remove in s.replicas
            if nodes[m.remove] != DEAD:
                touches[m.remove] += 1
        if m.reason == "balance":
            assert m.add is not None and nodes[m.remove] == UP
        live_before = sum(nodes[r] in LIVE for r in s.replicas)
        after = apply_moves([s], [m])[0]
        if m.reason != "over-replicated":
            assert sum(nodes[r] in LIVE for r in after.replicas) >= live_before, m
    assert all(v <= max_per_node for v in touches.values()), touches


def _converge(shards: list[Shard], nodes: dict[str, str], rounds: int = 2000, rnd: random.Random | None = None,
              **kw) -> tuple[list[Shard], list[Move]]:
    """Plan and apply until the plan is empty; returns the placement and every move made.

    With ``rnd``, only a random part of each plan is done before the next (the rest failed or
    is slow), so that plans made from every half-way placement are exercised.
    """
    seen = {tuple(s.replicas for s in shards)}
    done: list[Move] = []
    for _ in range(rounds):
        moves = plan_moves(shards, nodes, **kw)
        if not moves:
            return shards, done
        _check_plan(shards, nodes, moves, kw.get("max_per_node", 2))
        if rnd is not None:
            moves = rnd.sample(moves, rnd.randint(1, len(moves)))
        shards = apply_moves(shards, moves)
        done += moves
        state = tuple(s.replicas for s in shards)
        assert state not in seen, "a placement came back: ping-pong"
        seen.add(state)
    raise AssertionError("the planner did not converge")


def _check(shards: list[Shard], nodes: dict[str, str], factor: int = 3) -> None:
    """The placement a converged planner leaves behind."""
    up = [n for n, st in nodes.items() if st == UP]
    for s in shards:
        assert len(set(s.replicas)) == len(s.replicas), s
        assert all(nodes[r] != DEAD for r in s.replicas), s
        if len(up) >= factor:
            assert len(s.replicas) == factor and all(nodes[r] in LIVE for r in s.replicas), s
    if len(up) >= factor:
        counts = _counts(shards, nodes)
        lo, hi = band([counts[n] for n in up])
        assert all(lo <= counts[n] <= hi for n in up), (lo, hi, sorted(counts[n] for n in up))


# --- each reason ---------------------------------------------------------------------------------

def test_band():
    assert band([300] * 10) == (270, 330)  # not 271: no float rounding
    assert band([1, 2]) == (1, 2)  # mean 1.5: +-1
    assert band([0, 0, 3]) == (0, 2)
    assert band([]) == (0, 0)


def test_a_replica_on_a_dead_node_is_replaced():
    shards = _shards("n1 n2 n3", "n1 n2 n3", "n1 n2 n4")
    nodes = _nodes(5, n3=DEAD)
    moves = plan_moves(shards, nodes, max_per_node=5)
    # the two shards on n3 get a replica on the emptiest nodes: first n5 (none), then n4 or n5
    # (one each now; rendezvous hashing decides)
    assert moves[0] == Move("s0", "n5", "n3", "dead")
    assert moves[1] in (Move("s1", "n4", "n3", "dead"), Move("s1", "n5", "n3", "dead"))
    after = apply_moves(shards, moves)
    assert [s.replicas[:2] for s in after] == [("n1", "n2")] * 3  # the replacement takes n3's place
    final, _ = _converge(shards, nodes)
    _check(final, nodes)


def test_a_dead_replica_is_dropped_when_no_node_can_replace_it():
    # three nodes, one dead: nowhere to put a third replica, and a dead voter only hurts the quorum
    nodes = _nodes(3, n3=DEAD)
    assert plan_moves(_shards("n1 n2 n3"), nodes) == [Move("s0", None, "n3", "dead")]
    # an over-replicated shard loses its dead replica rather than replacing it
    assert plan_moves(_shards("n1 n2 n3 n4"), _nodes(5, n4=DEAD)) == [Move("s0", None, "n4", "dead")]


def test_a_shard_that_lost_its_quorum_is_left_alone():
    assert plan_moves(_shards("n1 n2 n3", "n2 n3 n4"), _nodes(6, n2=DEAD, n3=DEAD)) == []


def test_a_decommissioning_node_is_drained_within_its_budget():
    shards = _shards(*["n1 n2 n3"] * 6)
    nodes = _nodes(6, n1=DECOMMISSIONING)
    moves = plan_moves(shards, nodes)
    assert len(moves) == 2 and all(m.remove == "n1" and m.reason == "decommission" for m in moves)
    final, done = _converge(shards, nodes)
    assert all("n1" not in s.replicas for s in final)
    assert [m.remove for m in done if m.reason == "decommission"] == ["n1"] * 6
    assert all(m.reason == "balance" for m in done if m.remove != "n1")  # n2 and n3 then shed theirs
    _check(final, nodes)


def test_a_drain_waits_when_no_node_could_take_over():
    # 3 nodes and a factor of 3: dropping n1's replicas would leave two, so they stay
    assert plan_moves(_shards("n1 n2 n3"), _nodes(3, n1=DECOMMISSIONING)) == []
    # with four replicas, the draining one is the one to drop
    assert plan_moves(_shards("n1 n2 n3 n4"), _nodes(4, n1=DECOMMISSIONING)) == \
        [Move("s0", None, "n1", "decommission")]


def test_under_and_over_replicated_shards_are_fixed():
    shards = _shards("n1 n2", "n1 n2 n3 n4", "n1 n2 n3 n4", "n3 n4 n5")
    nodes = _nodes(5, n4=SUSPECT)
    moves = plan_moves(shards, nodes, max_per_node=5)
    assert Move("s0", "n5", None, "under-replicated") in moves  # the only up node without it
    # the suspect replica goes first, then the busiest
    assert Move("s1", None, "n4", "over-replicated") in moves
    assert Move("s2", None, "n4", "over-replicated") in moves
    final, _ = _converge(shards, nodes)
    _check(final, nodes)


def test_over_replicated_drops_the_busiest_up_replica():
    shards = _shards("n1 n2 n3 n4", "n1 n5 n6", "n1 n2 n3")
    moves = plan_moves(shards, _nodes(6))
    assert moves[0] == Move("s0", None, "n1", "over-replicated")


def test_a_node_that_joins_empty_gets_its_share_and_nothing_else_moves():
    nodes = _nodes(4)
    shards = [Shard(f"s{i}", i, i + 1, tuple(placement.place(f"s{i}", ["n1", "n2", "n3"], 3)))
              for i in range(30)]
    final, done = _converge(shards, nodes)
    counts = _counts(final, nodes)
    assert band(list(counts.values())) == (21, 24)
    assert 21 <= counts["n4"] <= 24 and len(done) == counts["n4"]  # every move went to the new node
    _check(final, nodes)


def test_a_suspect_node_keeps_its_replicas_and_is_never_a_target():
    shards = _shards("n1 n2 n3", "n1 n2 n4", "n1 n3 n4")
    nodes = _nodes(5, n3=DEAD, n5=SUSPECT)
    moves = plan_moves(shards, nodes, max_per_node=10)
    assert all(m.add != "n5" for m in moves)
    assert {m.shard for m in moves} == {"s0", "s2"} and all(m.remove == "n3" for m in moves)
    # empty and suspect: balancing does not fill it either
    assert plan_moves(_shards(*["n1 n2 n3"] * 9), _nodes(4, n4=SUSPECT)) == []


def test_balance_moves_the_smallest_shards_first():
    shards = _shards(*["n1 n2 n3"] * 8)
    load = {f"s{i}": 1000 - i for i in range(8)}  # s7 is the smallest
    moves = plan_moves(shards, _nodes(4), load, max_moves=1)
    assert moves[0].shard == "s7" and moves[0].add == "n4" and moves[0].reason == "balance"


def test_limits_are_respected():
    shards = _shards(*["n1 n2 n3"] * 20)
    nodes = _nodes(10, n1=DEAD)
    moves = plan_moves(shards, nodes, max_per_node=3)
    _check_plan(shards, nodes, moves, 3)
    assert len(moves) == 20  # the dead node is exempt; 7 targets x 3
    assert len(plan_moves(shards, nodes, max_per_node=3, max_moves=4)) == 4
    assert plan_moves(shards, nodes, max_moves=0) == []
    # the most urgent moves come first when the cap bites
    mixed = _shards("n2 n3 n4", "n2 n3", "n2 n3 n5 n6", "n2 n3 n7")
    nodes = _nodes(8, n4=DEAD, n7=DECOMMISSIONING)
    assert [m.reason for m in plan_moves(mixed, nodes, max_per_node=9)] == \
        ["dead", "decommission", "under-replicated", "over-replicated"]
    assert [m.reason for m in plan_moves(mixed, nodes, max_per_node=9, max_moves=2)] == ["dead", "decommission"]


def test_moves_in_flight_are_skipped_and_use_the_budget():
    shards = _shards("n1 n2 n3", "n1 n2 n3", "n1 n4 n5")
    nodes = _nodes(6, n1=DECOMMISSIONING)
    assert {m.shard for m in plan_moves(shards, nodes, max_per_node=5)} == {"s0", "s1", "s2"}
    # s0 in flight: not planned again, and n1 has one move left
    moves = plan_moves(shards, nodes, in_flight=["s0"])
    assert [m.shard for m in moves] == ["s1"]
    # a bare id charges every replica of its shard; a Move only its own two nodes
    shards = _shards("n1 n2 n3", "n4 n2 n5")
    nodes = _nodes(6, n4=DECOMMISSIONING)
    assert plan_moves(shards, nodes, in_flight=["s0"], max_per_node=1) == \
        [Move("s1", "n6", "n4", "decommission")]  # n1 and n3 are busy
    assert plan_moves(shards, nodes, in_flight=[Move("s0", "n6", "n1", "decommission")], max_per_node=1) == \
        [Move("s1", "n3", "n4", "decommission")]  # n6 is busy, n3 is not
    # a move under way counts as done: the node it fills is no longer the emptiest
    shards = _shards(*["n1 n2 n3"] * 6)
    first = plan_moves(shards, _nodes(5), max_moves=1)[0]
    assert first.add in ("n4", "n5")
    assert plan_moves(shards, _nodes(5), in_flight=[first], max_moves=1)[0].add == ({"n4", "n5"} - {first.add}).pop()


def test_plans_are_deterministic():
    rnd = random.Random(7)
    names = [f"n{i}" for i in range(12)]
    shards = [Shard(f"s{i}", i, i + 1, tuple(rnd.sample(names, 3))) for i in range(300)]
    nodes = {n: rnd.choice([UP, UP, UP, SUSPECT, DEAD, DECOMMISSIONING]) for n in names}
    first = plan_moves(shards, nodes)
    assert first and plan_moves(list(shards), dict(reversed(list(nodes.items())))) == first


def test_a_shard_map_is_accepted():
    smap = initial_map(["n1", "n2", "n3"], shard_count=4)
    nodes = _nodes(4)
    moves = plan_moves(smap, nodes)
    assert moves and all(m.add == "n4" for m in moves)
    assert [s.generation for s in apply_moves(smap, moves)] == [s.generation for s in smap.shards]


def test_bad_input_is_refused():
    shards = _shards("n1 n2 n3")
    with pytest.raises(ValueError, match="unknown state"):
        plan_moves(shards, _nodes(3, n2="gone"))
    with pytest.raises(ValueError, match="not a known node"):
        plan_moves(shards, _nodes(2))
    with pytest.raises(ValueError):
        plan_moves(shards, _nodes(3), factor=0)
    with pytest.raises(ValueError):
        plan_moves(shards, _nodes(3), max_per_node=0)
    with pytest.raises(ValueError):
        Move("s0", None, None, "dead")
    with pytest.raises(ValueError):
        Move("s0", "n1", "n2", "whim")
    with pytest.raises(ValueError, match="already holds"):
        apply_moves(shards, [Move("s0", "n1", None, "balance")])
    with pytest.raises(ValueError, match="does not hold"):
        apply_moves(shards, [Move("s0", "n4", "n5", "balance")])
    with pytest.raises(ValueError, match="unknown shards"):
        apply_moves(shards, [Move("s9", "n4", None, "balance")])


def test_a_dead_node_in_a_hundred_thousand_shards_is_replaced_everywhere():
    # how long this takes is measured in bench/sim.py, never asserted here
    rnd = random.Random(1)
    names = [f"n{i}" for i in range(1000)]
    shards = [Shard(f"s{i}", i, i + 1, tuple(rnd.sample(names, 3))) for i in range(100_000)]
    nodes = dict.fromkeys(names, UP) | {"n7": DEAD, "new": UP}
    moves = plan_moves(shards, nodes)
    assert len([m for m in moves if m.reason == "dead"]) == sum("n7" in s.replicas for s in shards)


# --- the stress test ------------------------------------------------------------------------------

@pytest.mark.parametrize("seed", range(8))
def test_random_clusters_converge_to_a_balanced_healthy_placement(seed):
    rnd = random.Random(seed)
    factor = rnd.choice([3, 3, 5])  # odd: one death never takes a quorum
    names = [f"n{i}" for i in range(rnd.randint(3, 40))]
    nodes = dict.fromkeys(names, UP)
    shards = [Shard(f"s{i}", i, i + 1, tuple(placement.place(f"s{i}", names, factor)))
              for i in range(rnd.randint(10, 2000))]
    kw = {"factor": factor, "max_per_node": rnd.choice([2, 5, 50])}
    shards, _ = _converge(shards, nodes, **kw)
    _check(shards, nodes, factor)
    fresh = len(names)
    for _ in range(8):
        up = sorted(n for n, st in nodes.items() if st == UP)
        event = rnd.choice(["join", "join", "drain", "die", "suspect", "recover", "forget"])
        if event == "join" or len(up) <= factor:
            nodes[f"n{fresh}"] = UP
            fresh += 1
        elif event == "drain":
            nodes[rnd.choice(up)] = DECOMMISSIONING
        elif event == "die":  # one at a time, after convergence: no shard loses its quorum
            nodes[rnd.choice(up)] = DEAD
        elif event == "suspect":
            nodes[rnd.choice(up)] = SUSPECT
        elif event == "recover":
            for n, st in nodes.items():
                if st == SUSPECT:
                    nodes[n] = UP
        else:  # drained and dead nodes that hold nothing leave the membership
            held = _counts(shards, nodes)
            nodes = {n: st for n, st in nodes.items() if st in LIVE or held[n]}
        shards, _ = _converge(shards, nodes, rnd=rnd if rnd.random() < 0.5 else None, **kw)
        _check(shards, nodes, factor)
        assert plan_moves(shards, nodes, **kw) == []

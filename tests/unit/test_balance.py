import pytest

from raftkv.replication.balance import pick_transfer

pytestmark = pytest.mark.timeout(30)

ALL3 = ["n1", "n2", "n3"]


def _simulate(leaders, replicas, rounds=20):
    """Apply every node's decision until nobody moves; returns the final leaders and the moves made."""
    moves = 0
    for _ in range(rounds):
        moved = False
        for me in sorted({n for r in replicas.values() for n in r}):
            choice = pick_transfer(me, leaders, replicas)
            if choice:
                group, target = choice
                assert leaders[group] == me and target in replicas[group] and target != me
                leaders[group] = target
                moves += 1
                moved = True
        if not moved:
            return leaders, moves
    raise AssertionError("did not converge")


def test_skewed_leadership_converges_to_fair_shares():
    replicas = {f"s{i}": ALL3 for i in range(9)}
    leaders = {g: "n3" for g in replicas}
    final, moves = _simulate(dict(leaders), replicas)
    counts = sorted(list(final.values()).count(n) for n in ALL3)
    assert counts == [3, 3, 3] and moves == 6  # no group moved more than needed


def test_balanced_or_electing_clusters_do_not_move():
    replicas = {f"s{i}": ALL3 for i in range(8)}
    balanced = {f"s{i}": ALL3[i % 3] for i in range(8)}  # 3, 3, 2
    assert all(pick_transfer(n, balanced, replicas) is None for n in ALL3)
    electing = {**balanced, "s0": None}
    assert all(pick_transfer(n, {**electing, "s1": "n1", "s2": "n1"}, replicas) is None for n in ALL3)


def test_only_replicas_are_targets():
    replicas = {"a": ["n1", "n2", "n3"], "b": ["n1", "n2", "n3"], "c": ["n1", "n4", "n5"], "d": ["n1", "n4", "n5"]}
    leaders = {g: "n1" for g in replicas}
    group, target = pick_transfer("n1", leaders, replicas)
    assert target in replicas[group]


def test_a_group_with_a_preferred_leader_goes_there_and_stays():
    replicas = {"t0": list(ALL3), "t1": list(ALL3), "t2": list(ALL3)}
    preferred = {"t0": "n1", "t1": "n2", "t2": "n3"}
    leaders = {"t0": "n1", "t1": "n1", "t2": "n1"}
    # n1 hands each stripe it should not lead to its preferred node, one at a time
    assert pick_transfer("n1", leaders, replicas, preferred) == ("t1", "n2")
    leaders["t1"] = "n2"
    assert pick_transfer("n1", leaders, replicas, preferred) == ("t2", "n3")
    leaders["t2"] = "n3"
    # placed as preferred: nothing moves, and counts never pull a stripe off its node
    assert all(pick_transfer(n, leaders, replicas, preferred) is None for n in ALL3)
    # a preference for a node that is not a replica is ignored
    assert pick_transfer("n1", {"t0": "n1"}, {"t0": ["n1", "n2"]}, {"t0": "n9"}) is None


def test_a_hand_off_that_did_not_happen_does_not_block_the_others():
    # the target of the first choice refused (it lags, or is down): the next call moves another
    # group rather than asking for the same one forever
    replicas = {f"s{i}": ALL3 for i in range(6)}
    leaders = {g: "n1" for g in replicas}
    first = pick_transfer("n1", leaders, replicas)
    second = pick_transfer("n1", leaders, replicas, recently_tried={first[0]})
    assert second is not None and second[0] != first[0]
    # the same for a stripe whose preferred node does not take it
    preferred = {"s0": "n2", "s1": "n3"}
    assert pick_transfer("n1", leaders, replicas, preferred)[0] == "s0"
    assert pick_transfer("n1", leaders, replicas, preferred, recently_tried={"s0"})[0] == "s1"
    # everything tried: nothing to do until the retry time passes
    assert pick_transfer("n1", leaders, replicas, preferred, recently_tried=set(replicas)) is None

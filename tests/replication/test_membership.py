"""Membership changes of one Raft group on real loops: learners join from a snapshot, are promoted,
voters leave; each test closes one of pysyncobj's membership traps (shared elasticity notes)."""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest

from raftkv.replication import commands, membership
from raftkv.replication.group import RaftGroup

from ..helpers import wait_until
from .harness import LocalCluster

pytestmark = pytest.mark.timeout(120)


def on_loop(cluster: LocalCluster, nid: str, fn: Any) -> Any:
    """Run ``fn()`` on node ``nid``'s Raft thread (where group state may be read) and return it."""
    box: list[Any] = []
    done = threading.Event()
    cluster.loops[nid].call_soon(lambda: (box.append(fn()), done.set()))
    assert done.wait(10), "the Raft loop did not run the call"
    return box[0]


def change(cluster: LocalCluster, voters: list[str], learners: list[str], gid: str = "g1",
           timeout: float = 30.0) -> membership.Config:
    """Propose a membership change at the leader (retrying while it is refused for now) and wait
    until it is applied there; returns the new configuration."""
    deadline = time.monotonic() + timeout
    why = None
    while time.monotonic() < deadline:
        nid, g = cluster.leader(gid)
        why, version = on_loop(cluster, nid, lambda g=g: (g.member_change_refusal(voters, learners),
                                                          g.config.version))
        if why is None:
            reply = cluster.write(commands.change_members(voters, learners, version), gid)
            assert "members" in reply, reply
            return membership.Config.from_wire(reply["members"])
        time.sleep(0.05)
    raise AssertionError(f"change to {voters} + learners {learners} refused: {why}")


def config_of(cluster: LocalCluster, nid: str, gid: str = "g1") -> membership.Config:
    return on_loop(cluster, nid, lambda: cluster.loops[nid].groups[gid].config)


@pytest.fixture
def four(tmp_path):
    """Four nodes; the group starts on n1..n3, n4 hosts nothing yet."""
    c = LocalCluster(str(tmp_path), n=4, members=3)
    yield c
    c.close()


def test_a_learner_joins_from_a_snapshot_is_promoted_and_a_voter_leaves(four):
    expected = {}
    for k in range(200):
        four.put(k, b"v%d" % k)
        expected[k] = b"v%d" % k
    voters = ["n1", "n2", "n3"]
    change(four, voters, ["n4"])
    learner = four.add_replica("n4", "g1", voters, ["n4"])
    # the learner installs a snapshot (the first change compacted the leader's log), then follows
    for k in range(200, 260):
        four.put(k, b"w%d" % k)
        expected[k] = b"w%d" % k
    _, leader = four.leader()
    four.wait_applied(leader.store.applied_index, nodes=["n4"])
    assert dict(four.rows("n4")) == expected
    assert learner.serializer.installs >= 1, "the newcomer must start from a snapshot, not replay the log"
    assert config_of(four, "n4") == config_of(four, four.leader()[0])
    assert not learner.is_leader and not learner.votes

    def promotable() -> bool:
        nid, g = four.leader()
        progress, last = on_loop(four, nid, lambda: (g.learner_progress(), g.last_index))
        return membership.caught_up(progress.get("n4", 0), last)

    wait_until(promotable, 30, "the learner to catch up")
    promoted = change(four, ["n1", "n2", "n3", "n4"], [])
    assert promoted.voters == ("n1", "n2", "n3", "n4") and promoted.version == 2
    # a voter leaves: not the leader (a leader cannot remove itself)
    leader_id, _ = four.leader()
    leaving = next(n for n in ("n1", "n2", "n3") if n != leader_id)
    remaining = sorted({"n1", "n2", "n3", "n4"} - {leaving})
    change(four, remaining, [])
    four.stop_node(leaving)
    for k in range(260, 300):
        four.put(k, b"x%d" % k)
        expected[k] = b"x%d" % k
    four.assert_replicated(expected)
    for nid in remaining:
        assert config_of(four, nid).voters == tuple(remaining)


def test_the_configuration_survives_a_restart_of_every_node(four):
    four.put(1, b"a")
    change(four, ["n1", "n2", "n3"], ["n4"])
    four.add_replica("n4", "g1", ["n1", "n2", "n3"], ["n4"])
    four.put(2, b"b")
    _, leader = four.leader()
    four.wait_applied(leader.store.applied_index, nodes=["n4"])
    wait_until(lambda: membership.caught_up(*on_loop(four, four.leader()[0], lambda: (
        four.leader()[1].learner_progress().get("n4", 0), four.leader()[1].last_index))), 30, "catch-up")
    change(four, ["n1", "n2", "n3", "n4"], [])
    four.wait_applied(four.leader()[1].store.applied_index)  # every replica applied the change
    for nid in list(four.loops):
        four.stop_node(nid)
    # restart with the creation config (n1..n3): the durable configuration must win
    four.hosting["n4"]["g1"] = (["n1", "n2", "n3"], ["n4"])
    for nid in four.ids:
        four.start_node(nid)
    for nid in four.ids:
        assert config_of(four, nid).voters == ("n1", "n2", "n3", "n4"), nid
    # n4 votes now: with n1 and n2 down, n3 and n4 are not a majority of four ...
    four.stop_node("n1")
    four.stop_node("n2")
    time.sleep(2.0)
    assert not any(g.is_leader for loop in four.loops.values() for g in loop.groups.values())
    # ... and with n2 back, three of four are
    four.start_node("n2")
    four.put(3, b"c")
    four.assert_replicated({1: b"a", 2: b"b", 3: b"c"})


def test_a_learner_neither_campaigns_nor_counts(four):
    """Trap 3: pysyncobj has no learner role.  A learner must not lead, and its vote and its copy
    of the log must not make a majority."""
    four.put(1, b"a")
    change(four, ["n1", "n2", "n3"], ["n4"])
    four.add_replica("n4", "g1", ["n1", "n2", "n3"], ["n4"])
    _, leader = four.leader()
    four.wait_applied(leader.store.applied_index, nodes=["n4"])
    leader_id, g = four.leader()
    term_before = g.term
    followers = [n for n in ("n1", "n2", "n3") if n != leader_id]
    # one voter left alive with the learner: 2 of 4 replicas, but only 1 of 3 voters
    for nid in [leader_id, followers[0]]:
        four.stop_node(nid)
    time.sleep(3.0)  # several election timeouts
    alive = {nid: four.loops[nid].groups["g1"] for nid in four.loops}
    assert not any(g.is_leader for g in alive.values()), "a leader without a majority of voters"
    learner = alive["n4"]
    box: list[Any] = []
    done = threading.Event()
    alive[followers[1]].submit(commands.put([(2, b"b")]), lambda r, e: (box.append(e), done.set()))
    four.loops[followers[1]].poke("g1")
    assert done.wait(5) and box[0] != 0, "a write committed without a majority of voters"
    # the voter left asks for votes (pre-vote) and wins no majority, so its term stays; the learner
    # is neither asked nor counted, and never stood itself
    voter = alive[followers[1]]
    asked = wait_until(lambda: on_loop(four, followers[1], lambda: voter._prevote), 10, "a pre-vote round")
    assert "n4" not in asked.voters and asked.yes == {followers[1]}
    assert on_loop(four, followers[1], lambda: voter.term) == term_before
    assert on_loop(four, "n4", lambda: learner.term) == term_before
    assert not learner.votes


def test_changes_are_one_safe_step_and_one_at_a_time(four):
    """Trap 2: pysyncobj never enforces one change at a time.  Two changes decided from the same
    configuration cannot both apply, and a change of two voters at once is refused."""
    four.put(1, b"a")
    nid, g = four.leader()
    version = config_of(four, nid).version
    first = four.write(commands.change_members(["n1", "n2", "n3"], ["n4"], version))
    second = four.write(commands.change_members(["n1", "n2", "n3"], [], version))
    assert "members" in first and "error" in second and "version" in second["error"]
    assert config_of(four, nid).learners == ("n4",)
    # two voters at once is not one step
    bad = four.write(commands.change_members(["n1"], ["n4"], version + 1))
    assert "error" in bad and "one voter" in bad["error"]
    # a voter may only come from the learners
    bad = four.write(commands.change_members(["n1", "n2", "n3"], ["n4"], version + 1))
    assert "error" in bad  # changes nothing
    leader_id, g = four.leader()
    assert "cannot remove itself" in on_loop(
        four, leader_id, lambda: g.member_change_refusal([n for n in ("n1", "n2", "n3") if n != leader_id], []))


def test_a_removed_voter_cannot_disrupt_the_group(four):
    """A voter removed from the group keeps its old view and campaigns; the others must ignore it
    (it is no longer a member), so the group's term and leader stay put."""
    four.put(1, b"a")
    leader_id, _ = four.leader()
    victim = next(n for n in ("n1", "n2", "n3") if n != leader_id)
    rest = sorted({"n1", "n2", "n3"} - {victim})
    # n4 first joins and is promoted, so that two voters remain a majority after the removal
    change(four, ["n1", "n2", "n3"], ["n4"])
    four.add_replica("n4", "g1", ["n1", "n2", "n3"], ["n4"])
    wait_until(lambda: membership.caught_up(*on_loop(four, four.leader()[0], lambda: (
        four.leader()[1].learner_progress().get("n4", 0), four.leader()[1].last_index))), 30, "catch-up")
    change(four, ["n1", "n2", "n3", "n4"], [])
    change(four, [*rest, "n4"], [])
    leader_id, g = four.leader()
    term = g.term
    removed: RaftGroup = four.loops[victim].groups["g1"]
    # the removed replica may or may not have applied its own removal; either way it must not
    # be able to move the group's term
    time.sleep(3.0)
    _, g2 = four.leader()
    assert g2.term == term, f"the group's term moved from {term} to {g2.term}"
    four.put(2, b"b")
    assert removed.is_leader is False


def test_the_peer_port_learns_and_forgets_nodes_at_run_time(tmp_path):
    """A node that joins later is unknown to the others' peer ports, which refuse its hello, until
    they are told of it; a node that left is hung up on and refused."""
    from raftkv.cluster.launcher import free_ports
    from raftkv.replication.loop import RaftLoop

    pa, pb = free_ports(2)
    a_addr, b_addr = ("127.0.0.1", pa), ("127.0.0.1", pb)
    secret = b"s" * 16
    a = RaftLoop("a", a_addr, {"a": a_addr}, secret)
    b = RaftLoop("b", b_addr, {"a": a_addr, "b": b_addr}, secret)
    a.start()
    b.start()
    try:
        time.sleep(1.0)  # b dials a five times meanwhile
        assert a.hub.inbound_count[1] == 0, "a accepted the hello of a node it does not know"
        a.set_peers({"a": a_addr, "b": b_addr})
        wait_until(lambda: a.hub.is_up("b") and b.hub.is_up("a"), 10, "both links up")
        assert a.hub.peer_ids == ["b"]
        a.set_peers({"a": a_addr})
        wait_until(lambda: not a.hub.is_up("b") and a.hub.inbound_count[1] == 0, 10, "a hung up on b")
        time.sleep(1.0)  # b keeps dialing; a keeps refusing
        assert a.hub.inbound_count[1] == 0 and a.hub.peer_ids == []
    finally:
        a.stop()
        b.stop()


def test_a_change_takes_effect_when_applied_so_a_rolled_back_one_never_did(tmp_path):
    """Traps 1 and 5: pysyncobj makes a change take effect when its entry is *appended*, and
    reverses it when a follower's log is rolled back.  Ours take effect when applied: an entry
    that never commits changes nothing, and its rollback has nothing to undo."""
    c = LocalCluster(str(tmp_path), n=3)
    try:
        c.put(1, b"a")
        leader_id, leader = c.leader()
        followers = [n for n in c.ids if n != leader_id]
        for nid in followers:
            c.stop_node(nid)
        version = config_of(c, leader_id).version
        leader.submit(commands.change_members(list(c.ids), ["n9"], version), lambda r, e: None)
        c.loops[leader_id].poke("g1")
        wait_until(lambda: on_loop(c, leader_id, lambda: commands.is_member_change(
            leader.journal[len(leader.journal) - 1][0])), 10, "the change appended at the cut-off leader")
        time.sleep(1.0)
        assert config_of(c, leader_id).learners == (), "a change took effect before it committed"
        c.stop_node(leader_id)
        for nid in followers:
            c.start_node(nid)
        c.put(2, b"b")  # the two followers elect a leader and overwrite the old leader's suffix
        c.start_node(leader_id)
        c.assert_replicated({1: b"a", 2: b"b"})
        for nid in c.ids:
            assert config_of(c, nid) == membership.Config.of(c.ids, [], version), nid
    finally:
        c.close()

"""Membership changes, pure (``membership.py``) and as applied to a real store (``commands.py``)."""

from __future__ import annotations

import pytest

from raftkv.replication import commands, membership
from raftkv.replication.membership import Config
from raftkv.routing import records
from raftkv.routing.shardmap import Shard, initial_map
from raftkv.storage.leveldb import ShardStore

pytestmark = pytest.mark.timeout(60)

ABC = Config.of(["a", "b", "c"])


@pytest.mark.parametrize(("voters", "learners", "why"), [
    (["a", "b", "c"], ["d"], None),                       # a learner joins
    (["a", "b", "c"], [], "changes nothing"),
    (["a", "b"], [], None),                                # a voter leaves
    (["a"], [], "at most one voter"),                      # two leave at once
    (["a", "b", "c", "d"], [], "must join as a learner"),  # straight to voter
    ([], ["a"], "at least one voter"),
    (["a", "b", "c"], ["c"], "both voter and learner"),
    (["a", "b", "c"], [f"x{i}" for i in range(14)], "at most"),
])
def test_which_changes_are_one_safe_step(voters, learners, why):
    got = membership.refusal(ABC, voters, learners)
    assert (got is None) if why is None else (got is not None and why in got)


def test_a_learner_is_promoted_then_the_old_voter_leaves_in_three_versions():
    c1 = membership.apply(ABC, ["a", "b", "c"], ["d"], 0)
    c2 = membership.apply(c1, ["a", "b", "c", "d"], [], 1)
    c3 = membership.apply(c2, ["a", "b", "d"], [], 2)
    assert c3 == Config(("a", "b", "d"), (), 3)
    # a change decided from an older version is refused, whatever it asks
    assert "version" in membership.apply(c3, ["a", "b", "d"], ["e"], 2)


def test_the_wire_form_round_trips_and_rejects_junk():
    c = Config.of(["b", "a"], ["z"], 7)
    assert Config.from_wire(c.to_wire()) == c == Config(("a", "b"), ("z",), 7)
    for junk in [None, [], {"voters": "abc"}, {"voters": ["a", "a"]}, {"voters": ["a"], "version": -1},
                 {"voters": ["a"], "learners": [1]}, {"voters": ["x" * 65]}]:
        with pytest.raises(ValueError):
            Config.from_wire(junk)


def test_promotion_waits_for_ninety_percent_of_the_leaders_log():
    assert not membership.caught_up(0, 10)
    assert not membership.caught_up(899, 1000)
    assert membership.caught_up(900, 1000)
    assert membership.caught_up(1000, 1000)


def test_a_change_command_is_recognised_without_decoding_and_validated_on_decode():
    entry = commands.change_members(["b", "a"], ["c"], 4)
    assert commands.is_member_change(entry)
    assert not commands.is_member_change(commands.put([(1, b"conf")]))
    assert commands.decode(entry[1:]) == ["conf", ["a", "b"], ["c"], 4]
    with pytest.raises(commands.InvalidArgument):
        commands.decode(commands.encode(["conf", ["a", "a"], [], 0])[1:])


@pytest.fixture
def shard_store(tmp_path):
    store = ShardStore(str(tmp_path / "s"))
    yield store
    store.close()


def test_applying_a_change_moves_the_shards_own_record_on(shard_store):
    shard = Shard("s0001", 0, 2**64, ("a", "b", "c"), generation=3)
    commands.init_shard_state(shard_store, shard)
    assert commands.init_config(shard_store, Config.of(shard.replicas)) == ABC
    reply = commands.apply(shard_store, 1, commands.change_members(["a", "b", "c"], ["d"], 0)[1:])
    assert reply == {"members": {"voters": ["a", "b", "c"], "learners": ["d"], "version": 1}}
    state = commands.shard_state(shard_store)
    assert state.shard.learners == ("d",) and state.shard.generation == 4
    assert commands.stored_config(shard_store) == Config.of(["a", "b", "c"], ["d"], 1)
    # the map catches up with it like after a split: one record, compare-and-set on generation
    smap = initial_map(["a", "b", "c"], 1).with_shards([Shard("s0000", 0, 2**64, ("a", "b", "c"), 3)])
    assert records.catch_up(smap, Shard("s0000", 0, 2**64, ("a", "b", "c"), 4, learners=("d",)), ()) == [
        ["s0000", 3, Shard("s0000", 0, 2**64, ("a", "b", "c"), 4, learners=("d",)).to_dict()]]
    # while a replica joins, the shard does not split (the child would leave it half in)
    split = commands.apply(shard_store, 2, commands.split(10, "s0009", 4)[1:], hooks=object())
    assert "joining" in split["error"]
    # promoted, then "a" leaves: replicas keep their order, the newcomer last
    commands.apply(shard_store, 3, commands.change_members(["a", "b", "c", "d"], [], 1)[1:])
    commands.apply(shard_store, 4, commands.change_members(["b", "c", "d"], [], 2)[1:])
    state = commands.shard_state(shard_store)
    assert state.shard.replicas == ("b", "c", "d") and state.shard.learners == () and state.shard.generation == 6
    # a refused change still takes its index, and changes nothing
    bad = commands.apply(shard_store, 5, commands.change_members(["b"], [], 3)[1:])
    assert "one voter" in bad["error"] and shard_store.applied_index == 5
    assert commands.stored_config(shard_store).version == 3


def test_a_shard_record_with_learners_round_trips_and_learners_never_overlap_replicas():
    s = Shard("s0002", 5, 10, ("a", "b", "c"), 2, learners=("d",))
    assert Shard.from_dict(s.to_dict()) == s
    assert "learners" not in Shard("s0002", 5, 10, ("a",)).to_dict()  # old readers see old records
    with pytest.raises(ValueError):
        Shard.from_dict({**s.to_dict(), "learners": ["a"]})


def test_a_move_is_add_learner_then_promote_then_remove_resuming_from_any_point():
    progress = {"d": 0}
    c = ABC
    kinds = []
    for _ in range(10):
        step = membership.next_step(c, add="d", remove="a", me="b", learner_match=progress, last_index=100)
        kinds.append(step.kind)
        if step.kind == "done":
            break
        if step.kind == "wait":
            progress["d"] = 95  # caught up meanwhile
            continue
        assert step.kind == "change" and membership.refusal(c, step.voters, step.learners) is None
        c = Config(step.voters, step.learners, c.version + 1)
    assert kinds == ["change", "wait", "change", "change", "done"]
    assert c.voters == ("b", "c", "d") and c.learners == ()


def test_a_leader_that_must_leave_hands_leadership_away_first():
    step = membership.next_step(ABC, add=None, remove="a", me="a", learner_match={}, last_index=10)
    assert step.kind == "transfer" and step.target in ("b", "c")
    step = membership.next_step(Config.of(["a", "b", "c", "d"]), add="d", remove="a", me="a",
                                learner_match={}, last_index=10)
    assert step == membership.Step("transfer", target="d", why=step.why)
    # a learner whose node is lost is simply dropped
    step = membership.next_step(Config.of(["a", "b", "c"], ["d"]), add=None, remove="d", me="a",
                                learner_match={}, last_index=10)
    assert step.kind == "change" and step.learners == () and step.voters == ABC.voters
    assert membership.next_step(Config.of(["a"]), add=None, remove="a", me="b", learner_match={},
                                last_index=1).kind == "wait"

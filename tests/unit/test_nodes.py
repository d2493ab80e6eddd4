"""Node records and liveness (``routing/nodes.py``), and the meta group's ``nrec`` command.

First the pure layer.  Records are validated as they arrive over the network, and changes are
compare-and-set on a version.  Liveness is read off a scripted clock: up, then suspect, then
dead, with grace for a new leader.  Then ``nrec`` goes through ``commands.apply`` on a real
LevelDB store: records are stored and read back, a replayed index is a no-op, and a refused
or malformed command still takes its index.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest

from raftkv.replication import commands
from raftkv.routing import nodes
from raftkv.routing.nodes import (
    ACTIVE,
    DEAD,
    DECOMMISSIONING,
    MIN_DEAD_AFTER,
    SUSPECT,
    UP,
    Liveness,
    NodeRecord,
    apply_node_changes,
    check_dead_after,
    check_node_changes,
    node_states,
)
from raftkv.storage.leveldb import ShardStore

pytestmark = pytest.mark.timeout(60)


def rec(node_id: str, n: int, version: int = 1, state: str = ACTIVE) -> dict[str, Any]:
    """A valid record: node ``n`` listens on host ``h<n>``, clients on 7000+n, peers on 8000+n."""
    return NodeRecord(node_id, f"h{n}:{7000 + n}", f"h{n}:{8000 + n}", state, version).to_dict()


def commit(current: dict[str, dict], changes: list) -> dict[str, dict]:
    """What the meta group does with an accepted change: write, or delete where the record is None."""
    writes, why = apply_node_changes(current, check_node_changes(changes))
    assert why is None, why
    out = dict(current)
    for nid, r in writes.items():
        if r is None:
            out.pop(nid, None)
        else:
            out[nid] = r
    return out


def refused(current: dict[str, dict], changes: list) -> str:
    before = copy.deepcopy(current)
    writes, why = apply_node_changes(current, check_node_changes(changes))
    assert writes == {} and why is not None
    assert current == before  # never touched
    return why


# --- NodeRecord -----------------------------------------------------------------------------------

def test_a_record_round_trips():
    r = NodeRecord("n-1.a_B", "10.0.0.1:7001", "10.0.0.1:8001", DECOMMISSIONING, 7)
    assert NodeRecord.from_dict(r.to_dict()) == r
    assert r.client_address == ("10.0.0.1", 7001) and r.peer_address == ("10.0.0.1", 8001)
    assert NodeRecord.from_dict({**r.to_dict(), "later": "field"}) == r  # unknown keys: ignored
    ipv6 = NodeRecord("n6", "[::1]:7001", "[::1]:8001")
    assert NodeRecord.from_dict(ipv6.to_dict()).peer_address == ("[::1]", 8001)


GOOD = rec("n1", 1)


@pytest.mark.parametrize("bad", [
    None, [], "n1",
    {k: v for k, v in GOOD.items() if k != "version"},
    {k: v for k, v in GOOD.items() if k != "id"},
    {**GOOD, "id": ""}, {**GOOD, "id": "x" * 65}, {**GOOD, "id": "n 1"}, {**GOOD, "id": "n/1"},
    {**GOOD, "id": "ñ1"}, {**GOOD, "id": 1},
    {**GOOD, "client": "h1"}, {**GOOD, "client": ":7001"}, {**GOOD, "client": "h1:"},
    {**GOOD, "client": "h1:0"}, {**GOOD, "client": "h1:65536"}, {**GOOD, "client": "h1:-1"},
    {**GOOD, "client": "h1:07001"}, {**GOOD, "client": "h1:x"}, {**GOOD, "client": "h 1:7001"},
    {**GOOD, "client": "h1:٣"}, {**GOOD, "client": 7001}, {**GOOD, "peer": None},
    {**GOOD, "peer": GOOD["client"]}, {**GOOD, "peer": "H1:7001"},  # one port cannot serve both
    {**GOOD, "state": "up"}, {**GOOD, "state": "dead"}, {**GOOD, "state": None},
    {**GOOD, "version": 0}, {**GOOD, "version": -1}, {**GOOD, "version": True},
    {**GOOD, "version": 1.0}, {**GOOD, "version": "1"}, {**GOOD, "version": 2**63},
])
def test_a_malformed_record_is_refused(bad):
    with pytest.raises(ValueError):
        NodeRecord.from_dict(bad)


# --- check_node_changes -------------------------------------------------------------------------

def test_well_formed_changes_pass():
    changes = [["n1", 0, rec("n1", 1)], ["n2", 3, None]]
    assert check_node_changes(changes) == changes
    assert len(check_node_changes([[f"n{i}", 0, rec(f"n{i}", i)] for i in range(64)])) == 64


@pytest.mark.parametrize("bad", [
    None, [], {"n1": GOOD}, [["n1", 0]], [["n1", 0, GOOD, 1]], [("n1", 0, GOOD)],
    [["n1", -1, GOOD]], [["n1", 0.0, GOOD]], [["n1", True, GOOD]], [["n1", "0", GOOD]],
    [["n1", 0, "record"]], [["n1", 0, {**GOOD, "version": 0}]],
    [["n2", 0, GOOD]],  # names one node, carries another
    [["", 0, None]], [["n/1", 1, None]], [[1, 1, None]],
    [["n1", 0, GOOD], ["n1", 1, None]],  # the same node twice
    [[f"n{i}", 0, rec(f"n{i}", i)] for i in range(65)],  # too many
])
def test_malformed_changes_are_refused(bad):
    with pytest.raises(ValueError):
        check_node_changes(bad)


# --- apply_node_changes: compare-and-set on versions --------------------------------------------

def test_add_change_and_delete():
    cur = commit({}, [["n1", 0, rec("n1", 1)], ["n2", 0, rec("n2", 2)]])
    assert set(cur) == {"n1", "n2"}
    cur = commit(cur, [["n1", 1, rec("n1", 1, 2, DECOMMISSIONING)]])
    assert NodeRecord.from_dict(cur["n1"]).state == DECOMMISSIONING
    cur = commit(cur, [["n1", 2, None]])
    assert set(cur) == {"n2"}
    # the deleted node's addresses are free again, and its id starts again at version 1
    cur = commit(cur, [["n3", 0, rec("n3", 1)], ["n1", 0, rec("n1", 4)]])
    assert set(cur) == {"n1", "n2", "n3"}


def test_a_repeated_add_is_refused():
    cur = commit({}, [["n1", 0, rec("n1", 1)]])
    assert "version 1, not 0" in refused(cur, [["n1", 0, rec("n1", 1)]])


def test_a_version_mismatch_is_refused_and_refuses_the_whole_change():
    cur = commit({}, [["n1", 0, rec("n1", 1)], ["n2", 0, rec("n2", 2)]])
    cur = commit(cur, [["n1", 1, rec("n1", 1, 2)]])
    # a change made from an older read loses, and takes nothing else with it
    refused(cur, [["n2", 1, rec("n2", 2, 2)], ["n1", 1, rec("n1", 1, 2, DECOMMISSIONING)]])
    refused(cur, [["n1", 3, None]])  # a delete compares too
    refused(cur, [["n9", 1, None]])  # absent is version 0


@pytest.mark.parametrize("version", [1, 3, 10])
def test_a_new_record_must_be_exactly_one_version_up(version):
    cur = commit({}, [["n1", 0, rec("n1", 1)]])
    assert "must have version 2" in refused(cur, [["n1", 1, rec("n1", 1, version)]])


def test_two_changes_from_the_same_read_cannot_both_win():
    cur = commit({}, [["n1", 0, rec("n1", 1)]])
    drain = [["n1", 1, rec("n1", 1, 2, DECOMMISSIONING)]]
    move = [["n1", 1, NodeRecord("n1", "h9:7009", "h9:8009", ACTIVE, 2).to_dict()]]
    after = commit(cur, drain)
    refused(after, move)


@pytest.mark.parametrize("clash", [
    {"client": "h1:7001"}, {"peer": "h1:8001"},
    {"client": "H1:8001"},  # another node's peer address, spelled in capitals: still the same
])
def test_two_nodes_may_not_share_an_address(clash):
    cur = commit({}, [["n1", 0, rec("n1", 1)]])
    new = {**rec("n2", 2), **clash}
    assert "already used by node n1" in refused(cur, [["n2", 0, new]])


def test_a_change_may_not_give_one_address_twice_but_may_move_one():
    bad = [["n1", 0, rec("n1", 1)], ["n2", 0, {**rec("n2", 2), "peer": "h1:8001"}]]
    assert "already used" in refused({}, bad)
    cur = commit({}, [["n1", 0, rec("n1", 1)]])
    # n1 leaves, n2 takes its addresses, in one change
    cur = commit(cur, [["n1", 1, None], ["n2", 0, {**rec("n2", 2), "client": "h1:7001", "peer": "h1:8001"}]])
    assert set(cur) == {"n2"}
    # n1 moves to new ports, n3 takes its old client port, in one change
    cur = commit(cur, [["n3", 0, rec("n3", 3)]])
    cur = commit(cur, [["n3", 1, {**rec("n3", 3, 2), "client": "h3:7100"}],
                       ["n4", 0, {**rec("n4", 4), "client": "h3:7003"}]])
    assert cur["n4"]["client"] == "h3:7003"


# --- liveness ----------------------------------------------------------------------------------

RECS = {"a": NodeRecord("a", "h1:7001", "h1:8001"), "b": NodeRecord("b", "h2:7002", "h2:8002"),
        "d": NodeRecord("d", "h3:7003", "h3:8003", DECOMMISSIONING, 2)}
DEAD_AFTER = 10.0


def test_check_dead_after():
    assert check_dead_after(MIN_DEAD_AFTER) == MIN_DEAD_AFTER
    assert check_dead_after(60) == 60.0 and nodes.DEFAULT_DEAD_AFTER >= MIN_DEAD_AFTER
    for bad in (4.99, 0, -1, float("nan"), float("inf"), True, "60", None):
        with pytest.raises(ValueError):
            check_dead_after(bad)
    with pytest.raises(ValueError):
        node_states(RECS, {}, 0.0, since=0.0, dead_after=1.0)


def test_up_then_suspect_then_dead_on_a_scripted_clock():
    live = Liveness(100.0)
    for t in (100.0, 101.0, 102.0):
        live.observe("a", t)
        live.observe("b", t)
    assert live.states(RECS, 102.0, DEAD_AFTER) == {"a": UP, "b": UP, "d": DECOMMISSIONING}
    live.observe("a", 104.0)  # only a keeps reporting
    assert live.states(RECS, 104.9, DEAD_AFTER)["b"] == UP  # 2.9 s of silence
    assert live.states(RECS, 105.0, DEAD_AFTER)["b"] == SUSPECT  # 3 s
    assert live.states(RECS, 111.9, DEAD_AFTER)["b"] == SUSPECT
    assert live.states(RECS, 112.0, DEAD_AFTER) == {"a": SUSPECT, "b": DEAD, "d": DEAD}
    # b reports again: up at once, however long it was dead
    live.observe("b", 500.0)
    assert live.states(RECS, 500.5, DEAD_AFTER)["b"] == UP
    assert live.states(RECS, 500.5, DEAD_AFTER, suspect_after=0.25)["b"] == SUSPECT


def test_a_late_observation_never_moves_a_node_back_in_time():
    live = Liveness(0.0)
    live.observe("a", 50.0)
    live.observe("a", 20.0)  # a reply that arrived late
    assert live.last_seen == {"a": 50.0}
    assert live.states(RECS, 59.0, DEAD_AFTER)["a"] == SUSPECT


def test_a_new_leader_gives_every_node_a_full_grace():
    live = Liveness(0.0)
    # a node never heard from counts as heard when watching began
    assert live.states(RECS, 9.9, DEAD_AFTER) == {"a": SUSPECT, "b": SUSPECT, "d": DECOMMISSIONING}
    assert set(live.states(RECS, 10.0, DEAD_AFTER).values()) == {DEAD}
    live.observe("a", 10.0)
    # a new leader at 1000 knows nothing of the old term: nobody is dead before 1010
    live.reset(1000.0)
    assert live.since == 1000.0 and live.last_seen == {}
    assert live.states(RECS, 1000.0, DEAD_AFTER) == {"a": UP, "b": UP, "d": DECOMMISSIONING}
    assert live.states(RECS, 1009.9, DEAD_AFTER)["b"] == SUSPECT
    assert live.states(RECS, 1010.0, DEAD_AFTER)["b"] == DEAD


def test_observations_from_before_since_count_as_since():
    # the pure function, handed a stale observation: it cannot make a node dead early
    states = node_states(RECS, {"a": 0.0, "b": 95.0}, 101.0, since=100.0, dead_after=DEAD_AFTER)
    assert states == {"a": UP, "b": UP, "d": DECOMMISSIONING}
    # ids seen without a record are not reported, and a clock that moved back counts as just heard
    assert node_states(RECS, {"zz": 5.0, "a": 200.0}, 150.0, since=100.0, dead_after=DEAD_AFTER)["a"] == UP
    assert "zz" not in node_states(RECS, {"zz": 5.0}, 150.0, since=100.0, dead_after=DEAD_AFTER)


def test_decommissioning_wins_until_the_node_is_dead():
    live = Liveness(0.0)
    for t in range(0, 30, 2):  # d keeps reporting: decommissioning, never suspect
        live.observe("d", float(t))
        assert live.states(RECS, t + 2.9, DEAD_AFTER)["d"] == DECOMMISSIONING
    assert live.states(RECS, 28.0 + 9.9, DEAD_AFTER)["d"] == DECOMMISSIONING
    assert live.states(RECS, 28.0 + 10.0, DEAD_AFTER)["d"] == DEAD


def test_forget():
    live = Liveness(0.0)
    live.observe("a", 5.0)
    live.forget("a")
    live.forget("never-seen")
    assert live.last_seen == {}


# --- the nrec command on a real store ----------------------------------------------------------

@pytest.fixture
def meta(tmp_path):
    store = ShardStore(str(tmp_path / "meta"))
    yield store
    store.close()


def raw_nodes(store: ShardStore) -> list[tuple[bytes, bytes]]:
    return store.system_items(commands.NODE, commands.NODE + b"\xff", 1 << 20)


def run(store: ShardStore, index: int, command: bytes) -> Any:
    return commands.apply(store, index, command[1:])


def test_nrec_stores_changes_and_deletes_records(meta):
    assert commands.stored_nodes(meta) == {}
    reply = run(meta, 1, commands.change_nodes([["n1", 0, rec("n1", 1)], ["n2", 0, rec("n2", 2)]]))
    assert reply == {"nodes": 2} and meta.applied_index == 1
    assert commands.stored_nodes(meta) == {"n1": NodeRecord.from_dict(rec("n1", 1)),
                                           "n2": NodeRecord.from_dict(rec("n2", 2))}
    assert [name for name, _ in raw_nodes(meta)] == [b"nrec/n1", b"nrec/n2"]
    assert run(meta, 2, commands.change_nodes([["n1", 1, rec("n1", 1, 2, DECOMMISSIONING)]])) == {"nodes": 2}
    assert commands.stored_nodes(meta)["n1"].state == DECOMMISSIONING
    assert run(meta, 3, commands.change_nodes([["n1", 2, None]])) == {"nodes": 1}
    assert set(commands.stored_nodes(meta)) == {"n2"} and meta.applied_index == 3
    # node records live beside the shard map's, and do not disturb it
    assert commands.stored_shard_map(meta) is None


def test_nrec_replaying_an_applied_index_is_a_no_op(meta):
    cmd = commands.change_nodes([["n1", 0, rec("n1", 1)]])
    assert run(meta, 1, cmd) == {"nodes": 1}
    run(meta, 2, commands.change_nodes([["n1", 1, None]]))
    before = raw_nodes(meta)
    assert before == []
    # entry 1 again (a restart replays the log): already applied, so nothing comes back
    assert run(meta, 1, cmd) is None
    assert raw_nodes(meta) == before and meta.applied_index == 2
    # the same add as a new entry is a fresh proposal, judged by compare-and-set, and applies again
    assert run(meta, 3, cmd) == {"nodes": 1}
    assert run(meta, 4, cmd) == {"error": "node n1 is at version 1, not 0", "conflict": True}


def test_a_refused_nrec_changes_nothing_but_takes_its_index(meta):
    run(meta, 1, commands.change_nodes([["n1", 0, rec("n1", 1)]]))
    before = raw_nodes(meta)
    clash = {**rec("n2", 2), "peer": "h1:8001"}
    reply = run(meta, 2, commands.change_nodes([["n2", 0, clash]]))
    assert reply["conflict"] is True and "already used" in reply["error"]
    assert raw_nodes(meta) == before and meta.applied_index == 2


@pytest.mark.parametrize("body", [
    ["nrec", [["n1", 0, {**rec("n1", 1), "state": "up"}]]],
    ["nrec", []],
    ["nrec", [["n1", 0, rec("n1", 1)]], "extra"],
    ["nrec"],
])
def test_a_malformed_nrec_replies_an_error_and_takes_its_index(meta, body):
    reply = run(meta, 1, commands.encode(body))
    assert "error" in reply and "conflict" not in reply
    assert meta.applied_index == 1 and raw_nodes(meta) == []

"""The group registry's start-up repairs, on real directories, stores and Raft groups (no sockets used).

A split builds the child replica durably *before* the parent's write that applies it; a crash in
between leaves a child directory whose parent never applied the split.  Start-up must remove it
(the parent's log replays the split and builds it again) and must keep a child whose split the
parent did apply.
"""

from __future__ import annotations

import os

import pytest

from raftkv.replication import commands
from raftkv.replication.group import RaftOptions
from raftkv.replication.loop import RaftLoop
from raftkv.routing.shardmap import Shard, initial_map
from raftkv.server.registry import GroupRegistry

pytestmark = pytest.mark.timeout(60)

NODES = ["n1", "n2", "n3"]


def _registry(tmp_path) -> tuple[GroupRegistry, RaftLoop]:
    loop = RaftLoop("n1", ("127.0.0.1", 0), {"n1": ("127.0.0.1", 0)})
    reg = GroupRegistry("n1", str(tmp_path), loop, RaftOptions())
    reg.open_all(initial_map(NODES, 1), meta_nodes=[])
    return reg, loop


def _close(reg: GroupRegistry, loop: RaftLoop) -> None:
    loop.stop()
    reg.close()


@pytest.mark.parametrize("parent_applied", [False, True])
def test_a_child_survives_start_up_only_if_its_parent_applied_the_split(tmp_path, parent_applied):
    reg, loop = _registry(tmp_path)
    parent = reg.stores["s0000"]
    parent.apply(1, puts=[(k, b"v") for k in range(0, 100)])
    child = Shard("s0001", 50, 2**64, tuple(NODES))
    reg.prepare_child(child, parent, index=2)  # what the split's apply does first ...
    if parent_applied:  # ... and then the parent's own write, with the split's index
        parent.apply(2, delete_span=(50, 2**64), sync=True)
    _close(reg, loop)
    assert os.path.isdir(tmp_path / "groups" / "s0001")

    reg, loop = _registry(tmp_path)  # a restart
    try:
        if parent_applied:
            assert set(loop.groups) == {"s0000", "s0001"}
            kept = reg.stores["s0001"]
            assert kept.applied_index == 3 and commands.shard_state(kept).shard == child
            assert [k for k, _ in kept.scan(0, 2**64, limit=1000)[0]] == list(range(50, 100))
        else:
            assert set(loop.groups) == {"s0000"}
            assert not os.path.exists(tmp_path / "groups" / "s0001")
    finally:
        _close(reg, loop)


def test_an_unfinished_child_build_is_swept_at_start_up(tmp_path):
    reg, loop = _registry(tmp_path)
    _close(reg, loop)
    os.makedirs(tmp_path / "groups" / "s0007.tmp" / "store")
    reg, loop = _registry(tmp_path)
    try:
        assert not os.path.exists(tmp_path / "groups" / "s0007.tmp")
        assert set(loop.groups) == {"s0000"}
    finally:
        _close(reg, loop)


def test_a_shard_made_empty_is_started_from_the_map_once_and_passive_after_its_first_generation(tmp_path):
    reg, loop = _registry(tmp_path)
    try:
        fresh = Shard("s0005", 10, 20, tuple(NODES), stripe=(0, 2), born_empty=True)
        later = Shard("s0006", 10, 20, tuple(NODES), generation=2, stripe=(1, 2), born_empty=True)
        elsewhere = Shard("s0007", 20, 30, ("n2", "n3", "n4"), born_empty=True)
        for shard in (fresh, later, elsewhere, fresh):
            reg.open_empty(shard)
        assert set(loop.groups) == {"s0000", "s0005", "s0006"}
        assert not loop.groups["s0005"].passive and commands.shard_state(reg.stores["s0005"]).shard == fresh
        # past its first generation it has applied entries: start empty, passive, and wait for a snapshot
        assert loop.groups["s0006"].passive and commands.shard_state(reg.stores["s0006"]) is None
    finally:
        _close(reg, loop)
    reg, loop = _registry(tmp_path)  # a restart keeps both, and the passive one stays passive
    try:
        assert set(loop.groups) == {"s0000", "s0005", "s0006"} and loop.groups["s0006"].passive
    finally:
        _close(reg, loop)


def test_state_without_a_replica_directory_is_dropped_at_start_up(tmp_path):
    # a split child's state is written before its directory is renamed into place: a crash in
    # between leaves state that no directory claims
    reg, loop = _registry(tmp_path)
    orphan = reg.kv.replica("s0009")
    orphan.apply(4, puts=[(k, b"o") for k in range(100)])
    orphan.close()
    _close(reg, loop)
    reg, loop = _registry(tmp_path)
    try:
        assert reg.kv.names() == ["s0000"] and reg.kv.wait_purged()
        fresh = reg.kv.replica("s0009")  # the name is free and empty again
        assert fresh.applied_index == 0 and fresh.scan(0, 2**64)[0] == []
        fresh.close()
    finally:
        _close(reg, loop)

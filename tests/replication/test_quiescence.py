"""Quiescence on real Raft loops: idle groups stop ticking and heartbeating, and anything that needs
them -- a write, a read, a leader that went silent -- brings them back."""

from __future__ import annotations

import threading
import time

import pytest

from raftkv.replication import commands

from ..helpers import wait_until
from .harness import LocalCluster

pytestmark = pytest.mark.timeout(120)

GROUPS = ("g1", "g2", "g3")


def _all_quiet(cluster: LocalCluster, groups=GROUPS) -> bool:
    return all(loop.groups[g].quiesced for loop in cluster.loops.values() for g in groups)


def test_idle_groups_go_quiet_and_a_write_wakes_only_its_group(tmp_path):
    cluster = LocalCluster(str(tmp_path), groups=GROUPS)
    try:
        for i, g in enumerate(GROUPS):
            cluster.put(i, b"first", gid=g)
        wait_until(lambda: _all_quiet(cluster), 20, "every replica of every group to go quiet")
        # quiet means silent: no AppendEntries leave for a while
        sent = {g: cluster.leader(g)[1].transport.seq for g in GROUPS}
        time.sleep(1.0)
        assert {g: cluster.leader(g)[1].transport.seq for g in GROUPS} == sent
        cluster.put(10, b"second", gid="g2")  # wakes g2 on its leader, and its followers by message
        assert not cluster.leader("g2")[1].quiesced
        assert all(loop.groups[g].quiesced for loop in cluster.loops.values() for g in ("g1", "g3"))
        cluster.assert_replicated({1: b"first", 10: b"second"}, gid="g2")
        wait_until(lambda: _all_quiet(cluster), 20, "g2 to go quiet again")
    finally:
        cluster.close()


def test_a_read_at_a_quiet_leader_is_confirmed_by_a_fresh_round(tmp_path):
    cluster = LocalCluster(str(tmp_path), groups=("g1",))
    try:
        cluster.put(1, b"x")
        wait_until(lambda: _all_quiet(cluster, ("g1",)), 20, "g1 to go quiet")
        nid, g = cluster.leader()
        done, box = threading.Event(), []
        cluster.loops[nid].read_index("g1", lambda err: (box.append(err), done.set()), 5.0)
        assert done.wait(10) and box == [None]
    finally:
        cluster.close()


def test_quiet_followers_of_a_silent_leader_elect_another(tmp_path):
    """The leader's node freezes (as SIGSTOP would) with its sockets open: no link goes down, only
    the hub's pings stop.  The quiet followers must notice, wake and elect a new leader."""
    cluster = LocalCluster(str(tmp_path), groups=("g1",))
    release = threading.Event()
    try:
        cluster.put(1, b"x")
        wait_until(lambda: _all_quiet(cluster, ("g1",)), 20, "g1 to go quiet")
        old_id, old = cluster.leader()
        frozen = threading.Event()

        def pause_point() -> None:
            frozen.set()
            release.wait(60)

        cluster.loops[old_id].after_iteration(pause_point)
        cluster.loops[old_id].wake()
        assert frozen.wait(10)

        def new_leader():
            return next((nid for nid, loop in cluster.loops.items()
                         if nid != old_id and loop.groups["g1"].leader_ready), None)

        others = [n for n in cluster.loops if n != old_id]

        def written() -> bool:
            new_id = wait_until(new_leader, 30, "a new leader among the quiet followers")
            done, box = threading.Event(), []
            g = cluster.loops[new_id].groups["g1"]
            g.submit(commands.put([(2, b"y")]), lambda res, err: (box.append(err), done.set()))
            cluster.loops[new_id].poke("g1")
            return done.wait(5) and box == [0]

        wait_until(written, 30, "a write committed by the new leader")
        cluster.wait_applied(cluster.loops[others[0]].groups["g1"].store.applied_index, nodes=others)
        release.set()  # the old leader wakes to the new leader's messages, steps down and catches up
        wait_until(lambda: dict(cluster.rows(old_id)).get(2) == b"y", 15, "the old leader to catch up")
        assert not cluster.loops[old_id].groups["g1"].is_leader
        cluster.assert_replicated({1: b"x", 2: b"y"})
    finally:
        release.set()
        cluster.close()

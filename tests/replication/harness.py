"""Several real Raft loops in one process: real sockets on 127.0.0.1, real LevelDB, real fsyncs.

Faster and more observable than separate processes, for invariants of the
replication layer; the process-level fault tests live in tests/e2e.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from raftkv.cluster.launcher import free_ports
from raftkv.replication import commands
from raftkv.replication.group import RaftGroup, RaftOptions
from raftkv.replication.loop import RaftLoop
from raftkv.storage.leveldb import NodeStore

from ..helpers import wait_until


class LocalCluster:
    """``n`` nodes (one RaftLoop each) hosting the same Raft groups."""

    def __init__(self, root: str, n: int = 3, groups: tuple[str, ...] = ("g1",),
                 options: RaftOptions | None = None, secret: bytes | None = None,
                 members: int | None = None) -> None:
        """``members``: how many of the ``n`` nodes (the first ones) host the groups at first;
        the others start with none (``add_replica`` gives them one)."""
        self.root = root
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.members = self.ids[:members or n]
        # what each node hosts, so a restart reopens the same replicas: gid -> (voters, learners)
        self.hosting: dict[str, dict[str, tuple[list[str], list[str]]]] = {
            nid: {gid: (self.members, []) for gid in groups} if nid in self.members else {} for nid in self.ids}
        self.peers = {nid: ("127.0.0.1", p) for nid, p in zip(self.ids, free_ports(n), strict=True)}
        self.group_ids = groups
        self.options = options or RaftOptions(heartbeat=0.05, election_min=0.4, election_max=0.8)
        self.secret = secret
        self.loops: dict[str, RaftLoop] = {}
        self.kvs: dict[str, NodeStore] = {}  # each node's one LevelDB, as a real node has
        for nid in self.ids:
            self.start_node(nid)

    def start_node(self, nid: str) -> RaftLoop:
        loop = RaftLoop(nid, self.peers[nid], self.peers, self.secret)
        kv = self.kvs[nid] = NodeStore(os.path.join(self.root, nid, "store"))
        loop.before_release(kv.flush_durable)
        self.loops[nid] = loop
        for gid, (voters, learners) in self.hosting[nid].items():
            loop.add_group(self._group(nid, gid, voters, learners))
        loop.start()
        return loop

    def _group(self, nid: str, gid: str, voters: list[str], learners: list[str]) -> RaftGroup:
        kv = self.kvs[nid]
        return RaftGroup(gid, nid, voters, kv.replica(gid), kv.raft_log(gid), os.path.join(self.root, nid, gid),
                         self.loops[nid].hub, self.options,
                         passive=nid in learners, learners=learners)

    def add_replica(self, nid: str, gid: str, voters: list[str], learners: list[str]) -> RaftGroup:
        """Open an empty replica of ``gid`` on running node ``nid`` (as a real node's registry
        does when the map names it a learner): it waits for a snapshot from the leader."""
        self.hosting[nid][gid] = (voters, learners)
        loop = self.loops[nid]
        group = self._group(nid, gid, voters, learners)
        done = threading.Event()
        loop.call_soon(lambda: (loop.add_group(group), done.set()))
        assert done.wait(10), "the loop did not take the group"
        return group
    def stop_node(self, nid: str) -> None:
        loop = self.loops.pop(nid)
        loop.stop()
        for g in loop.groups.values():
            g.store.close()
        self.kvs.pop(nid).close()

    def stored_log(self, nid: str, gid: str = "g1") -> list[tuple[bytes, int, int]]:
        """Node ``nid``'s log of ``gid`` as its database holds it -- what a crash now would leave
        (a running node's staged writes are not in it)."""
        if nid in self.kvs:
            return self.kvs[nid].raft_log(gid).entries(flush=False)
        kv = NodeStore(os.path.join(self.root, nid, "store"))
        try:
            return kv.raft_log(gid).entries(flush=False)
        finally:
            kv.close()

    def close(self) -> None:
        for nid in list(self.loops):
            self.stop_node(nid)

    def leader(self, gid: str = "g1", timeout: float = 30.0, exclude: frozenset[str] = frozenset()) -> tuple[str, RaftGroup]:
        """A node that leads ``gid`` and has applied its term's no-op (waits for one); never one in
        ``exclude`` (say a leader whose thread a test froze, which still believes it leads)."""

        def ready() -> tuple[str, RaftGroup] | None:
            return next(((nid, loop.groups[gid]) for nid, loop in self.loops.items()
                         if nid not in exclude and gid in loop.groups and loop.groups[gid].leader_ready), None)

        return wait_until(ready, timeout, f"a ready leader of {gid}", interval=0.02)

    def write(self, command: bytes, gid: str = "g1", timeout: float = 30.0,
              exclude: frozenset[str] = frozenset()) -> Any:
        """Submit at the leader (never one in ``exclude``) and wait for the commit callback."""
        deadline = time.monotonic() + timeout
        while True:
            nid, g = self.leader(gid, max(0.1, deadline - time.monotonic()), exclude)
            done = threading.Event()
            box: list[Any] = []
            g.submit(command, lambda res, err, box=box, done=done: (box.append((res, err)), done.set()))
            self.loops[nid].poke(gid)
            if done.wait(max(0.1, deadline - time.monotonic())) and box[0][1] == 0:
                return box[0][0]
            if time.monotonic() > deadline:
                raise AssertionError(f"write not committed: {box}")

    def put(self, key: int, value: bytes, gid: str = "g1") -> None:
        self.write(commands.put([(key, value)]), gid)

    def wait_applied(self, index: int, gid: str = "g1", nodes: list[str] | None = None,
                     timeout: float = 60.0) -> None:
        """Wait until every node in ``nodes`` (default: all live ones) has applied ``index``."""
        stores = {nid: self.loops[nid].groups[gid].store for nid in nodes or list(self.loops)}

        def caught_up() -> bool:
            behind = {nid: s.applied_index for nid, s in stores.items() if s.applied_index < index}
            assert not behind, f"still behind: {behind}"  # the timeout message shows who and where
            return True

        wait_until(caught_up, timeout, f"{list(stores)} to apply {index} of {gid}", interval=0.02)

    def rows(self, nid: str, gid: str = "g1") -> list[tuple[int, bytes]]:
        rows, _ = self.loops[nid].groups[gid].store.scan(0, 2**64, limit=10**9, max_bytes=1 << 62)
        return rows

    def assert_replicated(self, expected: dict[int, bytes], gid: str = "g1") -> None:
        """Every live node's store holds exactly ``expected`` once it has caught up with the leader."""
        _, leader = self.leader(gid)
        self.wait_applied(leader.store.applied_index, gid)
        for nid in self.loops:
            assert dict(self.rows(nid, gid)) == expected, f"{nid} diverges"

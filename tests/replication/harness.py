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
from raftkv.storage.leveldb import ShardStore


class LocalCluster:
    """``n`` nodes (one RaftLoop each) hosting the same Raft groups."""

    def __init__(self, root: str, n: int = 3, groups: tuple[str, ...] = ("g1",),
                 options: RaftOptions | None = None, secret: bytes | None = None) -> None:
        self.root = root
        self.ids = [f"n{i + 1}" for i in range(n)]
        self.peers = {nid: ("127.0.0.1", p) for nid, p in zip(self.ids, free_ports(n), strict=True)}
        self.group_ids = groups
        self.options = options or RaftOptions(heartbeat=0.05, election_min=0.4, election_max=0.8)
        self.secret = secret
        self.loops: dict[str, RaftLoop] = {}
        for nid in self.ids:
            self.start_node(nid)

    def start_node(self, nid: str) -> RaftLoop:
        loop = RaftLoop(nid, self.peers[nid], self.peers, self.secret)
        for gid in self.group_ids:
            directory = os.path.join(self.root, nid, gid)
            store = ShardStore(os.path.join(directory, "store"))
            loop.add_group(RaftGroup(gid, nid, self.ids, store, directory, loop.hub, self.options))
        loop.start()
        self.loops[nid] = loop
        return loop

    def stop_node(self, nid: str) -> None:
        loop = self.loops.pop(nid)
        loop.stop()
        for g in loop.groups.values():
            g.store.close()

    def close(self) -> None:
        for nid in list(self.loops):
            self.stop_node(nid)

    def leader(self, gid: str = "g1", timeout: float = 15.0) -> tuple[str, RaftGroup]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for nid, loop in self.loops.items():
                g = loop.groups[gid]
                if g.leader_ready:
                    return nid, g
            time.sleep(0.02)
        raise AssertionError(f"no leader for {gid} within {timeout}s")

    def write(self, command: bytes, gid: str = "g1", timeout: float = 10.0) -> Any:
        """Submit at the leader and wait for the commit callback."""
        deadline = time.monotonic() + timeout
        while True:
            nid, g = self.leader(gid, max(0.1, deadline - time.monotonic()))
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
                     timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        for nid in nodes or list(self.loops):
            store = self.loops[nid].groups[gid].store
            while store.applied_index < index:
                if time.monotonic() > deadline:
                    raise AssertionError(f"{nid} applied {store.applied_index} < {index}")
                time.sleep(0.02)

    def rows(self, nid: str, gid: str = "g1") -> list[tuple[int, bytes]]:
        rows, _ = self.loops[nid].groups[gid].store.scan(0, 2**64, limit=10**9, max_bytes=1 << 62)
        return rows

    def assert_replicated(self, expected: dict[int, bytes], gid: str = "g1") -> None:
        """Every live node's store holds exactly ``expected`` once it has caught up with the leader."""
        _, leader = self.leader(gid)
        self.wait_applied(leader.store.applied_index, gid)
        for nid in self.loops:
            assert dict(self.rows(nid, gid)) == expected, f"{nid} diverges"

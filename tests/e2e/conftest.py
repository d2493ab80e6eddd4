"""A real local cluster (separate node processes on 127.0.0.1, free ports) per test, killed by PID after."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from typing import Any

import pytest

from raftkv.client import rpc
from raftkv.cluster import launcher

from ..helpers import signal_ours, wait_until


class RunningCluster:
    """Handle on a launcher-managed cluster, with the fault helpers the tests need."""

    def __init__(self, root: str, raft: dict[str, Any] | None = None, shards: int = 8, nodes: int = 3,
                 settings: dict[str, int] | None = None) -> None:
        self.root = root
        try:
            self.info = launcher.start(root, nodes=nodes, shards=shards, raft=raft or {}, wait=60,
                                       settings=settings)
        except BaseException:
            signal_ours(None, root)  # a start that failed half way: its nodes are ours all the same
            raise

    @property
    def seeds(self) -> str:
        return ",".join(self.info.addresses)

    def address(self, node_id: str) -> str:
        return self.info.addresses[[n.id for n in self.info.nodes].index(node_id)]

    def leader_of(self, shard: str, exclude: str | None = None, timeout: float = 30.0) -> str:
        """The node that leads ``shard`` according to that node itself."""

        def leader() -> str | None:
            for node in self.info.nodes:
                if node.id == exclude:
                    continue
                try:
                    st = rpc.call(self.address(node.id), "status", timeout=1.0)
                except Exception:
                    continue
                for g in st["groups"]:
                    if g["id"] == shard and g["state"] == "leader":
                        return node.id
            return None

        return wait_until(leader, timeout, f"a leader for {shard}", interval=0.1)

    def kill(self, node_id: str, sig: int = signal.SIGKILL) -> None:
        launcher.kill_node(self.root, node_id, sig)

    def restart(self, node_id: str) -> None:
        launcher.start_node(self.root, node_id, wait=60)

    def restart_all(self) -> None:
        self.info = launcher.start(self.root, nodes=None, shards=None, replication=None, wait=60)

    def close(self) -> None:
        try:
            launcher.stop(self.root, timeout=10)
        finally:
            signal_ours(None, self.root)  # belt and braces: nothing we started may outlive the test


@pytest.fixture
def make_cluster(tmp_path) -> Iterator[Any]:
    made: list[RunningCluster] = []

    def make(**kwargs: Any) -> RunningCluster:
        c = RunningCluster(str(tmp_path / f"cluster{len(made)}"), **kwargs)
        made.append(c)
        return c

    yield make
    for c in made:
        c.close()


@pytest.fixture
def cluster(make_cluster) -> RunningCluster:
    return make_cluster()

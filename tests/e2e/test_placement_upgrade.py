"""Copysets are upgrade-safe: a 6-node data set made with HRW placement (what every cluster made before
copysets had; its identity names no scheme) restarts on today's code without ``--placement`` as it
was, opening no replica it never held, while a new 6-node cluster places its shards in copysets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from raftkv import Client
from raftkv.client import rpc
from raftkv.cluster import launcher
from raftkv.routing.placement import COPYSETS, copysets
from raftkv.routing.shardmap import initial_map

from ..helpers import keys_in_each_shard, signal_ours, wait_until

pytestmark = [pytest.mark.timeout(300), pytest.mark.slow]

IDS = [f"n{i}" for i in range(1, 7)]
SHARDS = 8  # HRW's 5/4/4/4/4/3 replicas per node is within the mover's band: it moves nothing


class SixNodes:
    """Six ``raftkv node`` processes on loopback, each with its data dir under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        ports = launcher.free_ports(12)
        self.spec = ",".join(f"{n}=127.0.0.1:{ports[i]}:{ports[6 + i]}" for i, n in enumerate(IDS))
        self.addrs = [f"127.0.0.1:{p}" for p in ports[:6]]
        self.pids: list[int] = []

    def start(self, *extra: str) -> None:
        self.root.mkdir(exist_ok=True)
        for n in IDS:
            with open(self.root / f"{n}.log", "ab") as log:  # a file: a pipe nobody drains could block it
                self.pids.append(subprocess.Popen(
                    [sys.executable, "-m", "raftkv", "node", "--id", n, "--data-dir", str(self.root / n),
                     "--nodes", self.spec, *extra],
                    stdout=subprocess.DEVNULL, stderr=log, start_new_session=True).pid)

    def kill(self) -> None:
        signal_ours(self.pids, str(self.root))
        for pid in self.pids:
            try:
                os.waitpid(pid, 0)
            except ChildProcessError:
                pass
        self.pids.clear()

    def placed(self) -> dict[str, set[str]]:
        """Shard -> its replicas, as the cluster's map says, once every node serves one."""
        def ask() -> dict[str, set[str]] | None:
            maps = [rpc.call(a, "map", timeout=2)["map"]["shards"] for a in self.addrs]
            return {s["id"]: set(s["replicas"]) for s in maps[0]} if all(maps) else None
        return wait_until(ask, 90, "every node to serve the map")

    def groups_on_disk(self) -> dict[str, set[str]]:
        """Node -> the shard replicas its data dir holds."""
        return {n: {g for g in os.listdir(self.root / n / "groups") if g.startswith("s")} for n in IDS}

    def identity(self, node_id: str) -> dict[str, object]:
        return json.loads((self.root / node_id / "cluster-identity.json").read_text())


def held_by_node(placed: dict[str, set[str]]) -> dict[str, set[str]]:
    return {n: {sid for sid, reps in placed.items() if n in reps} for n in IDS}


def test_an_hrw_cluster_restarts_as_it_was_and_a_new_one_uses_copysets(tmp_path: Path) -> None:
    hrw = {s.id: set(s.replicas) for s in initial_map(IDS, SHARDS).shards}
    cop = {s.id: set(s.replicas) for s in initial_map(IDS, SHARDS, scheme=COPYSETS).shards}
    assert hrw != cop  # else this test could not tell the schemes apart

    old = SixNodes(tmp_path / "old")
    new = SixNodes(tmp_path / "new")
    keys = keys_in_each_shard(2, SHARDS)
    try:
        # the data set an older release made: HRW, and an identity that names no scheme
        old.start("--shards", str(SHARDS), "--placement", "hrw")
        assert old.placed() == hrw
        with Client(",".join(old.addrs)) as db:
            db.put_many([(k, f"v{k}".encode()) for k in keys])
        assert all("placement" not in old.identity(n) for n in IDS)
        before = old.groups_on_disk()
        assert before == held_by_node(hrw)
        old.kill()

        # today's code, started as before the upgrade: no --placement, no --shards
        old.start()
        assert old.placed() == hrw
        with Client(",".join(old.addrs)) as db:
            assert db.range_query(0, 2**64 - 1) == [(k, f"v{k}".encode()) for k in keys]
        # no node opened, as a new empty group, a shard that copysets would have given it
        assert old.groups_on_disk() == before
        assert all("placement" not in old.identity(n) for n in IDS)
        old.kill()

        # a new cluster without --placement: its shards in two copysets, each node with 2 peers
        new.start("--shards", str(SHARDS))
        assert new.placed() == cop
        assert {frozenset(r) for r in cop.values()} == {frozenset(g) for g in copysets(IDS, 3)}
        assert all(new.identity(n)["placement"] == COPYSETS for n in IDS)
        with Client(",".join(new.addrs)) as db:
            db.put_many([(k, b"x") for k in keys])
            assert [k for k, _ in db.range_query(0, 2**64 - 1)] == keys
        assert new.groups_on_disk() == held_by_node(cop)
    finally:
        old.kill()
        new.kill()

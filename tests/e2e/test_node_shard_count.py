"""``raftkv node`` without ``--shards``: a new data dir takes the default count, an existing one keeps
the count it was created with (so nodes deployed before the default changed restart as they were),
and an explicit count that contradicts the data dir is refused with a clear error."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from raftkv import Client
from raftkv.client import rpc
from raftkv.cluster import launcher
from raftkv.routing.shardmap import DEFAULT_SHARDS

from ..helpers import signal_ours, wait_until

pytestmark = pytest.mark.timeout(120)


def start_node(data: Path, cport: int, pport: int, *extra: str) -> subprocess.Popen[bytes]:
    """A one-node cluster's node, its log in ``data``.log (a file: a pipe nobody drains could block it)."""
    with open(f"{data}.log", "ab") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "raftkv", "node", "--id", "n1", "--data-dir", str(data),
             "--nodes", f"n1=127.0.0.1:{cport}:{pport}", "--replication", "1", *extra],
            stdout=subprocess.DEVNULL, stderr=log, start_new_session=True)


def shard_count(addr: str) -> int:
    return len(wait_until(lambda: rpc.call(addr, "map", timeout=1)["map"]["shards"], 30, "the node to serve"))


def test_a_data_dir_keeps_its_shard_count_and_a_new_one_takes_the_default(tmp_path: Path) -> None:
    cport, pport = launcher.free_ports(2)
    addr = f"127.0.0.1:{cport}"
    old = tmp_path / "old"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        procs.append(start_node(old, cport, pport, "--shards", "2"))
        assert shard_count(addr) == 2
        with Client(addr) as db:
            db.put(7, b"seven")
        signal_ours([procs[-1].pid], str(tmp_path))
        procs[-1].wait(timeout=30)

        # restarted without --shards: the count it was created with, and its data
        procs.append(start_node(old, cport, pport))
        assert shard_count(addr) == 2
        with Client(addr) as db:
            assert db.get(7) == b"seven"
        signal_ours([procs[-1].pid], str(tmp_path))
        procs[-1].wait(timeout=30)

        # a count that contradicts the data dir: refused, the data dir unchanged
        procs.append(start_node(old, cport, pport, "--shards", "3"))
        assert procs[-1].wait(timeout=60) != 0
        err = Path(f"{old}.log").read_text()
        assert "belongs to cluster" in err and "'shards': 2" in err, err

        # a new data dir without --shards: the default
        procs.append(start_node(tmp_path / "new", cport, pport))
        assert shard_count(addr) == DEFAULT_SHARDS
    finally:
        signal_ours([p.pid for p in procs], str(tmp_path))
        for p in procs:
            p.wait(timeout=30)

"""How long writes stall when a shard leader is killed (kill -9) under load; JSON lines.

    python bench/failover.py [--rounds 3]

Four writer tasks put increasing keys into one shard; the script kills that shard's leader and
reports the longest gap between two acknowledged writes (the stall) and how long after the kill
that gap ended (writes resumed).  The killed node is restarted between rounds.

Each round prints two lines: ``"bench": "failover"`` (the stall) and ``"bench": "failover_series"``,
the acknowledged writes in each ``bin_s`` (0.1 s) bin from ``start_s`` seconds before the kill
(negative) to the end of the round, for ``bench/report.py``'s throughput-over-time chart.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import signal
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from raftkv import AsyncClient  # noqa: E402
from raftkv.client import rpc  # noqa: E402
from raftkv.cluster import launcher  # noqa: E402


def leader_of(info: launcher.ClusterInfo, shard: str) -> str:
    for node, addr in zip(info.nodes, info.addresses, strict=True):
        try:
            for g in rpc.call(addr, "status", timeout=1.0)["groups"]:
                if g["id"] == shard and g["state"] == "leader":
                    return node.id
        except Exception:
            continue
    raise RuntimeError(f"no leader for {shard}")


def summary(n: int, victim: str, acks: list[float], t_kill: float) -> dict[str, Any]:
    """Round ``n``'s stall line from the acknowledgement times (monotonic seconds) and the kill's."""
    acks = sorted(acks)
    gap, resumed = max((b - a, b) for a, b in zip(acks, acks[1:], strict=False))
    return {"bench": "failover", "round": n, "killed": victim, "longest_stall_s": round(gap, 3),
            "writes_resumed_after_kill_s": round(resumed - t_kill, 3),
            "acks_per_s_before": round(sum(1 for t in acks if t_kill - 2 < t < t_kill) / 2)}


def series(n: int, acks: list[float], t_kill: float, start_s: float = -2.0, end_s: float = 5.0,
           bin_s: float = 0.1) -> dict[str, Any]:
    """Round ``n``'s writes per ``bin_s`` bin over ``[t_kill + start_s, t_kill + end_s)``."""
    bins = [0] * round((end_s - start_s) / bin_s)
    for t in acks:
        i = math.floor((t - t_kill - start_s) / bin_s)  # not //: 7.0 // 0.1 is 69.0
        if 0 <= i < len(bins):
            bins[i] += 1
    return {"bench": "failover_series", "system": "raftkv", "round": n, "start_s": start_s, "bin_s": bin_s,
            "writes": bins}


async def round_(root: str, info: launcher.ClusterInfo, n: int) -> None:
    async with AsyncClient(",".join(info.addresses), timeout=30) as db:
        shard = (await db.shard_map()).shards[2]
        acks: list[float] = []
        stop = asyncio.Event()

        async def writer(w: int) -> None:
            i = w
            while not stop.is_set():
                await db.put(shard.start + n * 10**9 + i, b"v" * 100)
                acks.append(time.monotonic())
                i += 4

        tasks = [asyncio.create_task(writer(w)) for w in range(4)]
        await asyncio.sleep(2.0)
        victim = leader_of(info, shard.id)
        t_kill = time.monotonic()
        launcher.kill_node(root, victim, signal.SIGKILL)
        await asyncio.sleep(5.0)
        stop.set()
        await asyncio.gather(*tasks)
    print(json.dumps(summary(n, victim, acks, t_kill)), flush=True)
    print(json.dumps(series(n, acks, t_kill)), flush=True)
    launcher.start_node(root, victim, wait=60)
    await asyncio.sleep(3.0)  # let it catch up before the next round


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="raftkv-failover-")
    info = launcher.start(root, nodes=3, shards=8, wait=60)
    try:
        for n in range(args.rounds):
            asyncio.run(round_(root, info, n))
    finally:
        launcher.stop(root)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

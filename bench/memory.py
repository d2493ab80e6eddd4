"""Memory per node as data grows: resident set size of each node with 0, 1M and 10M keys.

    python bench/memory.py [--steps 0,1000000,10000000] [--value-bytes 100]

Starts a throw-away local 3-node cluster, loads increasing nanosecond-timestamp keys with
``put_many`` up to each step, waits for the nodes to settle (log compaction, LevelDB
compaction), and prints one JSON line per step: each node's RSS and the largest, the keys
held, and the bytes on disk.  What bounds a node's memory, and by what, is in docs/design.md
("Speed, memory and hardware").
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from raftkv import AsyncClient  # noqa: E402
from raftkv.cluster import launcher  # noqa: E402

T0 = 1_763_700_000_000_000_000  # a nanosecond timestamp in 2025: keys look like sensor readings
BATCH = 50_000


def rss_mib(pid: int) -> float:
    """Resident set size of ``pid`` in MiB (from /proc)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def disk_mib(path: str) -> float:
    """Bytes under ``path``, in MiB."""
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            try:
                total += os.path.getsize(os.path.join(root, name))
            except OSError:
                pass
    return total / 2**20


async def load(seeds: str, start: int, stop: int, value: bytes) -> float:
    """Put keys ``T0 + start`` .. ``T0 + stop - 1`` (1 µs apart); the seconds it took."""
    t = time.monotonic()
    async with AsyncClient(seeds, timeout=120.0) as db:
        for lo in range(start, stop, BATCH):
            hi = min(stop, lo + BATCH)
            await db.put_many({T0 + 1000 * i: value for i in range(lo, hi)})
    return time.monotonic() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", default="0,1000000,10000000", help="key counts to measure at, ascending")
    ap.add_argument("--value-bytes", type=int, default=100)
    ap.add_argument("--settle", type=float, default=15.0, help="seconds to wait before measuring each step")
    args = ap.parse_args()
    steps = [int(s) for s in args.steps.split(",") if s]
    if steps != sorted(steps) or any(s < 0 for s in steps):
        ap.error("--steps must be ascending key counts")
    value = b"v" * args.value_bytes
    tmp = tempfile.mkdtemp(prefix="raftkv-memory-")
    info = launcher.start(tmp, nodes=3, wait=120)
    try:
        held = 0
        for step in steps:
            loaded = step - held
            seconds = asyncio.run(load(info.seeds, held, step, value)) if loaded else 0.0
            held = step
            time.sleep(args.settle)  # let log compaction and LevelDB's own compaction run
            rss = {n: round(rss_mib(pid), 1) for n, pid in info.pids.items() if pid}
            print(json.dumps({"bench": "memory", "keys": held, "value_bytes": args.value_bytes,
                              "rss_mib": rss, "rss_mib_max": max(rss.values()),
                              "disk_mib": round(disk_mib(tmp), 1),
                              "load_keys_per_s": round(loaded / seconds) if seconds else None}), flush=True)
    finally:
        launcher.stop(tmp)
        shutil.rmtree(tmp, ignore_errors=True)  # the cluster's data: hundreds of MB in /tmp otherwise
    return 0


if __name__ == "__main__":
    sys.exit(main())

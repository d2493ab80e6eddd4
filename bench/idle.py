"""Idle cost of many Raft groups: CPU, threads, descriptors and memory of each node with N shards (JSON lines).

    python bench/idle.py [--shards 64] [--seconds 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from raftkv.cluster import launcher  # noqa: E402


def cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--shards", type=int, default=64)
    ap.add_argument("--seconds", type=float, default=10.0)
    args = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="raftkv-idle-")
    t0 = time.monotonic()
    info = launcher.start(tmp, nodes=3, shards=args.shards, wait=max(120.0, args.shards * 0.5))
    ready = time.monotonic() - t0
    try:
        time.sleep(2.0)  # let elections settle
        before = {n: cpu_seconds(p) for n, p in info.pids.items()}
        time.sleep(args.seconds)
        after = {n: cpu_seconds(p) for n, p in info.pids.items()}
        for node, pid in sorted(info.pids.items()):
            threads = len(os.listdir(f"/proc/{pid}/task"))
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            with open(f"/proc/{pid}/status") as f:
                rss_kib = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
            print(json.dumps({"bench": "idle", "node": node, "shards": args.shards,
                              "replicas_hosted": args.shards + 1,
                              "cpu_percent": round(100 * (after[node] - before[node]) / args.seconds, 2),
                              "threads": threads, "fds": fds, "rss_mib": round(rss_kib / 1024, 1),
                              "all_leaders_after_s": round(ready, 2)}))
    finally:
        launcher.stop(tmp)
        shutil.rmtree(tmp, ignore_errors=True)  # the cluster's data: hundreds of MB in /tmp otherwise
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Quick benchmark of a local 3-node raftkv cluster; prints one JSON object per line.

    python bench/quick.py [--keys 1000000] [--seeds host:port,...]

Without --seeds it starts a throw-away cluster in a temp dir (and stops it after).
Workloads mirror shared/baseline-etcd.md so results can be put side by side:
8-byte increasing keys (nanosecond-like timestamps), 100-byte values, requests
sent straight to shard leaders.  Timings are wall-clock on a shared machine:
compare ratios within one run, not absolute numbers across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from raftkv import AsyncClient  # noqa: E402
from raftkv.cluster import launcher  # noqa: E402

T0 = 1_763_700_000_000_000_000  # a nanosecond timestamp in 2025: keys look like sensor readings
VALUE = b"v" * 100


def emit(**fields) -> None:
    print(json.dumps(fields), flush=True)


def pct(samples: list[float], p: float) -> float:
    s = sorted(samples)
    return round(s[min(len(s) - 1, int(p / 100 * len(s)))] * 1000, 3)


async def closed_loop(fn, total: int, inflight: int) -> tuple[float, list[float]]:
    """Run ``fn(i)`` ``total`` times with ``inflight`` concurrent callers; return (seconds, latencies)."""
    lat: list[float] = []
    counter = iter(range(total))

    async def worker():
        for i in counter:
            t = time.perf_counter()
            await fn(i)
            lat.append(time.perf_counter() - t)

    t0 = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(inflight)))
    return time.perf_counter() - t0, lat


async def run(seeds: str, keys: int, only: set[str] | None = None) -> None:
    async with AsyncClient(seeds, timeout=60) as db:
        if only:
            return await run_only(db, only)
        base = T0
        for name, inflight, n in (("put", 1, 1000), ("put", 64, 20000)):
            secs, lat = await closed_loop(lambda i, b=base: db.put(b + i, VALUE), n, inflight)
            emit(bench=name, inflight=inflight, ops=n, ops_per_s=round(n / secs), p50_ms=pct(lat, 50),
                 p99_ms=pct(lat, 99))
            base += n
        for consistency in ("linearizable", "serializable"):
            db.consistency = consistency
            n = 20000
            secs, lat = await closed_loop(lambda i: db.get(T0 + 1000 + i % 20000), n, 64)
            emit(bench="get", consistency=consistency, inflight=64, ops=n, ops_per_s=round(n / secs),
                 p50_ms=pct(lat, 50), p99_ms=pct(lat, 99))
        db.consistency = "linearizable"

        start = T0 + 10**12
        t0 = time.perf_counter()
        step = 50_000
        for off in range(0, keys, step):
            await db.put_many([(start + i * 1000, VALUE) for i in range(off, min(keys, off + step))])
        secs = time.perf_counter() - t0
        emit(bench="bulk_load", keys=keys, keys_per_s=round(keys / secs), seconds=round(secs, 2))

        t0 = time.perf_counter()
        count = 0
        async for page in db.scan_pages(start, start + keys * 1000):
            count += len(page)
        secs = time.perf_counter() - t0
        emit(bench="scan", keys=count, keys_per_s=round(count / secs), seconds=round(secs, 2),
             page_keys=db.page_keys)

        big = os.urandom(1 << 20)
        n = 40
        secs, lat = await closed_loop(lambda i: db.put(T0 + 2 * 10**12 + i, big), n, 4)
        emit(bench="put_1MiB", inflight=4, ops=n, mb_per_s=round(n / secs, 1), p50_ms=pct(lat, 50))

        n = 2000
        t0 = time.perf_counter()
        secs, lat = await closed_loop(lambda i: db.range_query(start + i * 1000 * 50, start + i * 1000 * 50 + 99_000),
                                      n, 16)
        emit(bench="range_100", inflight=16, ops=n, ops_per_s=round(n / secs), p50_ms=pct(lat, 50))


async def run_only(db: AsyncClient, only: set[str]) -> None:
    if "put_1MiB" in only:
        big = os.urandom(1 << 20)
        n = 60
        secs, lat = await closed_loop(lambda i: db.put(T0 + 2 * 10**12 + i, big), n, 4)
        emit(bench="put_1MiB", inflight=4, ops=n, mb_per_s=round(n / secs, 1), p50_ms=pct(lat, 50))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", help="use a running cluster instead of starting one")
    ap.add_argument("--keys", type=int, default=1_000_000, help="keys for bulk load and scan")
    ap.add_argument("--only", default="", help="comma-separated subset (supported: put_1MiB)")
    args = ap.parse_args()
    tmp = None
    seeds = args.seeds
    if seeds is None:
        tmp = tempfile.mkdtemp(prefix="raftkv-bench-")
        info = launcher.start(tmp, nodes=3, shards=8, wait=60)
        seeds = ",".join(info.addresses)
    try:
        emit(bench="setup", seeds=seeds, python=sys.version.split()[0], cpus=os.cpu_count())
        asyncio.run(run(seeds, args.keys, set(filter(None, args.only.split(",")))))
    finally:
        if tmp is not None:
            launcher.stop(tmp)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

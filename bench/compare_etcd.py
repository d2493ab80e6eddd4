"""raftkv beside etcd, in one run on one machine; prints one JSON line per workload with both and the ratio.

    apt-get install -y etcd-server && pip install -e '.[bench]'
    python bench/compare_etcd.py [--keys 1000000] [--latency-inflight 4,16,128]

Both run 3 members on 127.0.0.1 and are driven from this Python process by asyncio clients
(raftkv's AsyncClient; aetcd for etcd's gRPC API, as in shared/baseline-etcd.md).  The
workloads alternate, raftkv then etcd, so drift on this shared machine hits both alike.

Besides each workload's line (``raftkv``, ``etcd``, ``ratio``), every put and get loop prints a
``"bench": "latency"`` line with both systems' p50/p90/p99 in ms at its number of requests in
flight; ``--latency-inflight`` adds put loops at more in-flight counts, run last so that they do
not change what the workloads before them see.  ``bench/report.py`` charts both kinds of line.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

try:
    import aetcd
except ImportError:  # only running needs it: the line formats below are importable without the bench extra
    aetcd = None
from quick import T0, VALUE, closed_loop, emit, pct  # noqa: E402

from raftkv import AsyncClient  # noqa: E402
from raftkv.cluster import launcher  # noqa: E402


def comparison(bench: str, unit: str, rk: float, et: float, **extra: Any) -> dict[str, Any]:
    """One workload's line: raftkv's and etcd's figure and their ratio."""
    return dict(bench=bench, unit=unit, raftkv=round(rk, 1), etcd=round(et, 1),
                ratio=round(rk / et, 2) if et else None, **extra)


def latency(op: str, inflight: int, rl: list[float], el: list[float], **extra: Any) -> dict[str, Any]:
    """One loop's latency percentiles (ms) for both systems, from per-request seconds."""
    return dict(bench="latency", op=op, inflight=inflight, unit="ms", ops=len(rl),
                raftkv={f"p{p}": pct(rl, p) for p in (50, 90, 99)},
                etcd={f"p{p}": pct(el, p) for p in (50, 90, 99)}, **extra)


def start_etcd(root: str) -> tuple[list[subprocess.Popen], list[int]]:
    ports = launcher.free_ports(6)
    client, peer = ports[:3], ports[3:]
    cluster = ",".join(f"e{i}=http://127.0.0.1:{peer[i]}" for i in range(3))
    procs = []
    for i in range(3):
        procs.append(subprocess.Popen(
            ["etcd", "--name", f"e{i}", "--data-dir", os.path.join(root, f"e{i}"),
             "--listen-client-urls", f"http://127.0.0.1:{client[i]}",
             "--advertise-client-urls", f"http://127.0.0.1:{client[i]}",
             "--listen-peer-urls", f"http://127.0.0.1:{peer[i]}",
             "--initial-advertise-peer-urls", f"http://127.0.0.1:{peer[i]}",
             "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", "bench",
             "--max-request-bytes", str(2 << 20)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    return procs, client


def _key(k: int) -> bytes:
    return k.to_bytes(8, "big")


async def etcd_leader(ports: list[int]) -> aetcd.Client:
    """A client connected straight to the member that leads (as the baseline measured)."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        probe = aetcd.Client("127.0.0.1", ports[0])
        try:
            st = await probe.status()
            urls = list(st.leader.client_urls) if st.leader is not None else []
        except Exception:
            urls = []
        await probe.close()
        for port in ports:
            if any(u.endswith(f":{port}") for u in urls):
                return aetcd.Client("127.0.0.1", port, timeout=60,
                                    options={"grpc.max_receive_message_length": 256 << 20})
        await asyncio.sleep(0.3)
    raise RuntimeError("etcd elected no leader")


async def etcd_scan_paged(c: aetcd.Client, start: int, end: int, page: int) -> int:
    count, key = 0, _key(start)
    while True:
        req = c._build_get_range_request(key, _key(end), limit=page)
        resp = await c.kvstub.Range(req, timeout=60, metadata=c.metadata)
        count += len(resp.kvs)
        if not resp.more or not resp.kvs:
            return count
        key = resp.kvs[-1].key + b"\x00"


async def run(seeds: str, etcd_ports: list[int], keys: int, sweep: list[int]) -> None:
    e = await etcd_leader(etcd_ports)
    async with AsyncClient(seeds, timeout=60) as r:

        def side_by_side(bench: str, unit: str, rk: float, et: float, **extra) -> None:
            emit(**comparison(bench, unit, rk, et, **extra))

        for inflight, n in ((1, 1000), (64, 20000)):
            rs, rl = await closed_loop(lambda i: r.put(T0 + i, VALUE), n, inflight)
            es, el = await closed_loop(lambda i: e.put(_key(T0 + i), VALUE), n, inflight)
            side_by_side("put", "ops/s", n / rs, n / es, inflight=inflight,
                         p50_ms={"raftkv": pct(rl, 50), "etcd": pct(el, 50)},
                         p99_ms={"raftkv": pct(rl, 99), "etcd": pct(el, 99)})
            emit(**latency("put", inflight, rl, el))
        for level in ("linearizable", "serializable"):
            r.consistency = level
            n = 20000
            rs, rl = await closed_loop(lambda i: r.get(T0 + i % 20000), n, 64)
            es, el = await closed_loop(lambda i, s=level == "serializable": e.get(_key(T0 + i % 20000), serializable=s),
                                       n, 64)
            side_by_side("get", "ops/s", n / rs, n / es, inflight=64, consistency=level,
                         p50_ms={"raftkv": pct(rl, 50), "etcd": pct(el, 50)})
            emit(**latency("get", 64, rl, el, consistency=level))
        r.consistency = "linearizable"

        start = T0 + 10**12
        t0 = time.perf_counter()
        for off in range(0, keys, 50_000):
            await r.put_many([(start + i, VALUE) for i in range(off, min(keys, off + 50_000))])
        rsecs = time.perf_counter() - t0
        t0 = time.perf_counter()
        sem = asyncio.Semaphore(8)

        async def txn(off: int) -> None:
            async with sem:
                ops = [e.transactions.put(_key(start + i), VALUE) for i in range(off, min(keys, off + 128))]
                await e.transaction(compare=[], success=ops, failure=[])

        await asyncio.gather(*(txn(off) for off in range(0, keys, 128)))
        esecs = time.perf_counter() - t0
        side_by_side("bulk_load", "keys/s", keys / rsecs, keys / esecs, keys=keys,
                     how={"raftkv": "put_many, 50k pairs per call", "etcd": "txn of 128 puts, 8 in flight"})

        t0 = time.perf_counter()
        got = 0
        async for page in r.scan_pages(start, start + keys - 1):
            got += len(page)
        rsecs = time.perf_counter() - t0
        t0 = time.perf_counter()
        egot = await etcd_scan_paged(e, start, start + keys, 10_000)
        esecs = time.perf_counter() - t0
        side_by_side("scan", "keys/s", got / rsecs, egot / esecs, keys=[got, egot],
                     pages={"raftkv": f"{r.page_keys} keys / 1 MiB, parallel shards", "etcd": "10k keys"})

        big = os.urandom(1 << 20)
        n = 40
        rs, _ = await closed_loop(lambda i: r.put(T0 + 2 * 10**12 + i, big), n, 4)
        es, _ = await closed_loop(lambda i: e.put(_key(T0 + 2 * 10**12 + i), big), n, 4)
        side_by_side("put_1MiB", "MB/s", n / rs, n / es, inflight=4)

        base = T0 + 3 * 10**12
        for inflight in sweep:
            n = max(2000, 100 * inflight)
            _, rl = await closed_loop(lambda i, b=base: r.put(b + i, VALUE), n, inflight)
            _, el = await closed_loop(lambda i, b=base: e.put(_key(b + i), VALUE), n, inflight)
            emit(**latency("put", inflight, rl, el))
            base += n
    await e.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--latency-inflight", default="4,16,128",
                    help="more in-flight counts for put latency, comma-separated ('' for none)")
    args = ap.parse_args()
    sweep = [int(x) for x in args.latency_inflight.split(",") if x]
    if aetcd is None:
        print("aetcd is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    if shutil.which("etcd") is None:
        print("etcd is not installed: apt-get install -y etcd-server", file=sys.stderr)
        return 2
    root = tempfile.mkdtemp(prefix="raftkv-vs-etcd-")
    procs, eports = start_etcd(root)
    try:
        info = launcher.start(os.path.join(root, "raftkv"), nodes=3, shards=8, wait=60)
        emit(bench="setup", raftkv=",".join(info.addresses), etcd=eports, cpus=os.cpu_count())
        asyncio.run(run(",".join(info.addresses), eports, args.keys, sweep))
    finally:
        launcher.stop(os.path.join(root, "raftkv"))
        for p in procs:
            p.kill()
            p.wait()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

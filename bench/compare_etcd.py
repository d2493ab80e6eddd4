"""raftkv beside etcd, in one run on one machine; prints one JSON line per workload with both and the ratio.

    apt-get install -y etcd-server && pip install -e '.[bench]'
    python bench/compare_etcd.py [--keys 1000000] [--latency-inflight 4,16,128]

Both run 3 members on 127.0.0.1 and are driven from this Python process by asyncio clients
(raftkv's AsyncClient; aetcd for etcd's gRPC API, as in shared/baseline-etcd.md).  The
workloads alternate, raftkv then etcd, so drift on this shared machine hits both alike.  Before
the first put row, each system takes three seconds of uncounted puts (:func:`warm_up`): a
cluster's first seconds are not its steady state.

Besides each workload's line (``raftkv``, ``etcd``, ``ratio``), every put and get loop prints a
``"bench": "latency"`` line with both systems' p50/p90/p99 in ms at its number of requests in
flight; ``--latency-inflight`` adds put loops at more in-flight counts, run last so that they do
not change what the workloads before them see.  ``bench/report.py`` charts both kinds of line.

Last comes the write stall after a ``kill -9`` of the leader (``--failover-rounds``, 2 by default;
0 skips it), measured as ``bench/failover.py`` measures it: four writers keep puts in flight to
one key range (for raftkv, one shard), the leader of that range is killed, and the stall is the
longest gap between two acknowledged writes; the killed member is restarted before the next
round.  Each round kills raftkv's leader, then etcd's.  The ``"bench": "failover"`` line gives
both medians in seconds: LOWER is better there (``"better": "lower"``).  etcd's writers start on
its leader and, as etcd's own client does, move to the next member when an attempt fails; an
attempt gives up after ``--etcd-attempt-timeout`` seconds (0.5), because a put a follower has
forwarded to a dead leader is lost and would otherwise wait for etcd's 7 s request timeout.

``--only`` runs some workloads only, e.g. ``--only failover``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

try:
    import aetcd
except ImportError:  # only running needs it: the line formats below are importable without the bench extra
    aetcd = None
from failover import Round, raftkv_round, ride_through  # noqa: E402
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


def failover_comparison(rk: list[Round], et: list[Round], **extra: Any) -> dict[str, Any]:
    """The leader-kill line: each system's median stall (s) over its rounds; lower is better."""
    rs, es = [r.stall() for r in rk], [r.stall() for r in et]
    rmed, emed = statistics.median(rs), statistics.median(es)
    return dict(bench="failover", unit="s", better="lower", raftkv=round(rmed, 3), etcd=round(emed, 3),
                ratio=round(rmed / emed, 2) if emed else None, rounds=len(rs),
                stalls={"raftkv": [round(x, 3) for x in rs], "etcd": [round(x, 3) for x in es]},
                resumed_after_kill_s={"raftkv": [round(r.resumed_after_kill(), 3) for r in rk],
                                      "etcd": [round(r.resumed_after_kill(), 3) for r in et]},
                killed={"raftkv": [r.victim for r in rk], "etcd": [r.victim for r in et]},
                failed_attempts={"raftkv": [r.failed for r in rk], "etcd": [r.failed for r in et]}, **extra)


@dataclass
class Etcd:
    """A local 3-member etcd cluster: members ``e0..e2``, restartable one by one."""

    root: str
    client: list[int]
    peer: list[int]
    procs: list[subprocess.Popen | None] = field(default_factory=list)

    def argv(self, i: int) -> list[str]:
        """Member ``i``'s command line; a restart reuses it (etcd then reads its data dir, not the flags)."""
        cluster = ",".join(f"e{j}=http://127.0.0.1:{self.peer[j]}" for j in range(len(self.peer)))
        return ["etcd", "--name", f"e{i}", "--data-dir", os.path.join(self.root, f"e{i}"),
                "--listen-client-urls", f"http://127.0.0.1:{self.client[i]}",
                "--advertise-client-urls", f"http://127.0.0.1:{self.client[i]}",
                "--listen-peer-urls", f"http://127.0.0.1:{self.peer[i]}",
                "--initial-advertise-peer-urls", f"http://127.0.0.1:{self.peer[i]}",
                "--initial-cluster", cluster, "--initial-cluster-state", "new", "--initial-cluster-token", "bench",
                "--max-request-bytes", str(2 << 20)]

    def start(self, i: int) -> None:
        """Start member ``i`` (again)."""
        while len(self.procs) <= i:
            self.procs.append(None)
        self.procs[i] = subprocess.Popen(self.argv(i), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def kill(self, i: int) -> None:
        """``kill -9`` member ``i`` and reap it."""
        proc = self.procs[i]
        if proc is not None:
            proc.kill()
            proc.wait()
            self.procs[i] = None

    def stop(self) -> None:
        """Kill every member still running (the data dirs go with ``root``)."""
        for i in range(len(self.procs)):
            self.kill(i)


WARM_SECONDS = 3.0
WARM_KEYS = T0 - 10**12  # below every key a workload writes
PUTS_ONE_IN_FLIGHT = 2000


async def warm_up(put: Any, seconds: float = WARM_SECONDS) -> int:
    """Puts one at a time for ``seconds``, not counted; how many were made."""
    deadline = time.monotonic() + seconds
    done = 0
    while time.monotonic() < deadline:
        await put(done)
        done += 1
    return done


def start_etcd(root: str) -> Etcd:
    """Start a 3-member etcd cluster with its data under ``root``."""
    ports = launcher.free_ports(6)
    etcd = Etcd(root, ports[:3], ports[3:])
    for i in range(3):
        etcd.start(i)
    return etcd


def _key(k: int) -> bytes:
    return k.to_bytes(8, "big")


async def etcd_leader_index(ports: list[int], wait: float = 30.0) -> int:
    """Which member leads, asking each in turn (one may be down)."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        for port in ports:
            probe = aetcd.Client("127.0.0.1", port, timeout=2)
            try:
                st = await probe.status()
                urls = list(st.leader.client_urls) if st.leader is not None else []
            except Exception:  # down or not ready yet: ask the next member
                urls = []
            finally:
                await probe.close()
            for i, p in enumerate(ports):
                if any(u.endswith(f":{p}") for u in urls):
                    return i
        await asyncio.sleep(0.3)
    raise RuntimeError("etcd elected no leader")


async def etcd_leader(ports: list[int]) -> aetcd.Client:
    """A client connected straight to the member that leads (as the baseline measured)."""
    port = ports[await etcd_leader_index(ports)]
    return aetcd.Client("127.0.0.1", port, timeout=60, options={"grpc.max_receive_message_length": 256 << 20})


async def etcd_round(etcd: Etcd, base: int, attempt_timeout: float) -> Round:
    """Kill -9 etcd's leader while writing keys from ``base``, as ``failover.ride_through`` does; restart it."""
    clients = [aetcd.Client("127.0.0.1", port) for port in etcd.client]
    try:
        leader = await etcd_leader_index(etcd.client)
        at = [leader] * 4  # the member each writer talks to: the leader first
        keys = itertools.count(base)  # shared: writers never repeat a key

        async def put(w: int) -> None:
            try:
                await asyncio.wait_for(clients[at[w]].put(_key(next(keys)), VALUE), attempt_timeout)
            except Exception:  # a timeout too: the member may be forwarding to a dead leader
                at[w] = (at[w] + 1) % len(clients)  # etcd's own client moves on to its next endpoint alike
                raise

        async def find() -> str:
            return f"e{await etcd_leader_index(etcd.client)}"

        result = await ride_through(put, find, lambda victim: etcd.kill(int(victim[1:])), writers=len(at))
    finally:
        for c in clients:
            await c.close()
    i = int(result.victim[1:])
    etcd.start(i)
    await etcd_ready(etcd.client[i])
    await asyncio.sleep(3.0)  # let it catch up before the next round, as raftkv's member does
    return result


async def etcd_ready(port: int, wait: float = 60.0) -> None:
    """Wait until the member at ``port`` answers and knows a leader."""
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        probe = aetcd.Client("127.0.0.1", port, timeout=2)
        try:
            if (await probe.status()).leader is not None:
                return
        except Exception:  # still starting
            pass
        finally:
            await probe.close()
        await asyncio.sleep(0.3)
    raise RuntimeError(f"etcd member on port {port} did not come back")


async def etcd_scan_paged(c: aetcd.Client, start: int, end: int, page: int) -> int:
    count, key = 0, _key(start)
    while True:
        req = c._build_get_range_request(key, _key(end), limit=page)
        resp = await c.kvstub.Range(req, timeout=60, metadata=c.metadata)
        count += len(resp.kvs)
        if not resp.more or not resp.kvs:
            return count
        key = resp.kvs[-1].key + b"\x00"


async def etcd_scan_whole(c: aetcd.Client, start: int, end: int) -> int:
    """Every key of ``[start, end)`` in etcd's single, unpaged reply (the client accepts up to 256 MiB)."""
    req = c._build_get_range_request(_key(start), _key(end), limit=0)
    resp = await c.kvstub.Range(req, timeout=120, metadata=c.metadata)
    return len(resp.kvs)


WORKLOADS = ("put", "get", "bulk_load", "scan", "put_1MiB", "latency", "failover")
NEEDS = {"get": "put", "scan": "bulk_load"}  # gets read the puts' keys, the scan the bulk load's


def workloads(only: str) -> list[str]:
    """The workloads ``--only`` names, in run order; ValueError for an unknown one or a missing prerequisite."""
    names = [w.strip() for w in only.split(",") if w.strip()] if only else list(WORKLOADS)
    unknown = sorted(set(names) - set(WORKLOADS))
    if unknown:
        raise ValueError(f"unknown workload(s) {', '.join(unknown)}; known: {', '.join(WORKLOADS)}")
    for w, need in NEEDS.items():
        if w in names and need not in names:
            raise ValueError(f"{w} needs {need} too: it reads the keys {need} writes")
    return [w for w in WORKLOADS if w in names]


async def run(info: launcher.ClusterInfo, raftkv_root: str, etcd: Etcd, keys: int, sweep: list[int],
              only: list[str], failover_rounds: int = 2, etcd_attempt_timeout: float = 0.5) -> None:
    """Every workload in ``only``, in :data:`WORKLOADS` order, each on raftkv then on etcd."""
    seeds = ",".join(info.addresses)
    e = await etcd_leader(etcd.client)
    async with AsyncClient(seeds, timeout=60) as r:

        def side_by_side(bench: str, unit: str, rk: float, et: float, **extra) -> None:
            emit(**comparison(bench, unit, rk, et, **extra))

        if "put" in only:
            # A cluster that has just started is still settling (its leaders are balanced over
            # the nodes in its first seconds) and both clients still have their first
            # connections to make: neither belongs in a steady figure, so both systems take
            # WARM_SECONDS of uncounted puts first.  (Measured on raftkv: the first 1,000 puts
            # after start ran at 481/s, the next ten thousand at 670-860/s.)
            await warm_up(lambda i: r.put(WARM_KEYS + i, VALUE))
            await warm_up(lambda i: e.put(_key(WARM_KEYS + i), VALUE))
            for inflight, n in ((1, PUTS_ONE_IN_FLIGHT), (64, 20000)):
                rs, rl = await closed_loop(lambda i: r.put(T0 + i, VALUE), n, inflight)
                es, el = await closed_loop(lambda i: e.put(_key(T0 + i), VALUE), n, inflight)
                side_by_side("put", "ops/s", n / rs, n / es, inflight=inflight,
                             p50_ms={"raftkv": pct(rl, 50), "etcd": pct(el, 50)},
                             p99_ms={"raftkv": pct(rl, 99), "etcd": pct(el, 99)})
                emit(**latency("put", inflight, rl, el))
        if "get" in only:
            for level in ("linearizable", "serializable"):
                r.consistency = level
                n = 20000
                rs, rl = await closed_loop(lambda i: r.get(T0 + i % 20000), n, 64)
                es, el = await closed_loop(
                    lambda i, s=level == "serializable": e.get(_key(T0 + i % 20000), serializable=s), n, 64)
                side_by_side("get", "ops/s", n / rs, n / es, inflight=64, consistency=level,
                             p50_ms={"raftkv": pct(rl, 50), "etcd": pct(el, 50)})
                emit(**latency("get", 64, rl, el, consistency=level))
            r.consistency = "linearizable"

        start = T0 + 10**12
        if "bulk_load" in only:
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

        if "scan" in only:
            t0, c0 = time.perf_counter(), time.process_time()
            got = 0
            async for page in r.scan_pages(start, start + keys - 1):
                got += len(page)
            rsecs, rcpu = time.perf_counter() - t0, time.process_time() - c0
            t0 = time.perf_counter()
            egot = await etcd_scan_paged(e, start, start + keys, 10_000)
            esecs = time.perf_counter() - t0
            side_by_side("scan", "keys/s", got / rsecs, egot / esecs, keys=[got, egot],
                         pages={"raftkv": f"{r.page_keys} keys / 1 MiB, parallel shards", "etcd": "10k keys"})
            # etcd's fastest way to read it all: one reply, as much memory as the range (raftkv's
            # scan of the line above is compared with it too; raftkv never sends a range unpaged)
            t0 = time.perf_counter()
            wgot = await etcd_scan_whole(e, start, start + keys)
            wsecs = time.perf_counter() - t0
            side_by_side("scan_unpaged", "keys/s", got / rsecs, wgot / wsecs, keys=[got, wgot],
                         pages={"raftkv": f"{r.page_keys} keys / 1 MiB, parallel shards", "etcd": "one reply"})
            # What spreading brings, in this run (a line of its own, not a comparison with etcd):
            # the same scan read at each shard's leader alone, after etcd's, then spread again.
            # The first read of a fresh load pays for compactions LevelDB's reads set off (design
            # §9), so only the two later reads compare like with like.
            async def timed_scan(spread: bool) -> tuple[int, float, float]:
                async with AsyncClient(seeds, timeout=60, spread_scans=spread) as c:
                    t0, c0 = time.perf_counter(), time.process_time()
                    n = 0
                    async for page in c.scan_pages(start, start + keys - 1):
                        n += len(page)
                    return n, time.perf_counter() - t0, time.process_time() - c0

            lgot, lsecs, lcpu = await timed_scan(False)
            sgot, ssecs, scpu = await timed_scan(True)
            # the client's CPU per key (this process: etcd's client threads idle meanwhile)
            emit(bench="scan_spread", unit="keys/s", first_read_spread=round(got / rsecs, 1),
                 leader_only=round(lgot / lsecs, 1), spread=round(sgot / ssecs, 1), keys=[got, lgot, sgot],
                 client_us_per_key={"first_read_spread": round(rcpu / max(got, 1) * 1e6, 3),
                                    "leader_only": round(lcpu / max(lgot, 1) * 1e6, 3),
                                    "spread": round(scpu / max(sgot, 1) * 1e6, 3)})

        if "put_1MiB" in only:
            big = os.urandom(1 << 20)
            n = 40
            rs, _ = await closed_loop(lambda i: r.put(T0 + 2 * 10**12 + i, big), n, 4)
            es, _ = await closed_loop(lambda i: e.put(_key(T0 + 2 * 10**12 + i), big), n, 4)
            side_by_side("put_1MiB", "MB/s", n / rs, n / es, inflight=4)

        if "latency" in only:
            base = T0 + 3 * 10**12
            for inflight in sweep:
                n = max(2000, 100 * inflight)
                _, rl = await closed_loop(lambda i, b=base: r.put(b + i, VALUE), n, inflight)
                _, el = await closed_loop(lambda i, b=base: e.put(_key(b + i), VALUE), n, inflight)
                emit(**latency("put", inflight, rl, el))
                base += n
    await e.close()  # before the kills: this client is pinned to etcd's leader

    if "failover" in only and failover_rounds > 0:
        rk: list[Round] = []
        et: list[Round] = []
        for n in range(failover_rounds):
            base = T0 + 4 * 10**12 + n * 10**9  # the same keys for both: a fresh range per round
            rk.append(await raftkv_round(raftkv_root, info, base))
            et.append(await etcd_round(etcd, base, etcd_attempt_timeout))
        emit(**failover_comparison(rk, et, writers=4, how={
            "raftkv": "AsyncClient, keys of the killed leader's shard",
            "etcd": f"aetcd, next member on a failed attempt, {etcd_attempt_timeout} s per attempt"}))


def main() -> int:
    """Start both clusters, run the workloads, print their lines, stop everything."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--keys", type=int, default=1_000_000)
    ap.add_argument("--latency-inflight", default="4,16,128",
                    help="more in-flight counts for put latency, comma-separated ('' for none)")
    ap.add_argument("--failover-rounds", type=int, default=2,
                    help="leader kills per system in the last workload (0: none)")
    ap.add_argument("--etcd-attempt-timeout", type=float, default=0.5,
                    help="seconds one etcd put may take in the failover workload before the next member is tried")
    ap.add_argument("--only", default="", help=f"comma-separated workloads to run, of {','.join(WORKLOADS)}")
    args = ap.parse_args()
    sweep = [int(x) for x in args.latency_inflight.split(",") if x]
    try:
        only = workloads(args.only)
    except ValueError as exc:
        ap.error(str(exc))
    if aetcd is None:
        print("aetcd is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    if shutil.which("etcd") is None:
        print("etcd is not installed: apt-get install -y etcd-server", file=sys.stderr)
        return 2
    root = tempfile.mkdtemp(prefix="raftkv-vs-etcd-")
    raftkv_root = os.path.join(root, "raftkv")
    etcd = start_etcd(root)
    try:
        info = launcher.start(raftkv_root, nodes=3, shards=8, wait=60)
        emit(bench="setup", raftkv=",".join(info.addresses), etcd=etcd.client, cpus=os.cpu_count())
        asyncio.run(run(info, raftkv_root, etcd, args.keys, sweep, only, args.failover_rounds,
                        args.etcd_attempt_timeout))
    finally:
        if os.path.isdir(raftkv_root):
            launcher.stop(raftkv_root)
        etcd.stop()
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

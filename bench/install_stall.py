"""Does installing a big snapshot stall the receiving node's other Raft groups? (JSON lines)

    python bench/install_stall.py [--mb 200] [--shards 8] [--inflight 1] [--interval 0.02] [--pause brief|long]

Three nodes, ``--shards`` shards (auto-splitting and striping disabled).  Node X (n1) is a
follower of shard A (the last shard); the other nodes reach X's peer port through a small proxy
that this script runs.  About ``--mb`` MB of 1 KiB values are loaded into A; then (``--pause
brief``, the default) only the link from A's leader to X is cut for a moment while A takes a few
more entries and its log is compacted on the live replicas, so that X must receive A's snapshot
while it keeps leading the groups that leadership balancing gave it; ``--pause long`` SIGSTOPs X
instead (X then leads little during the install: balancing hands groups back one per 3 s).
Meanwhile every other shard takes a steady stream of single puts (``--inflight`` sequential writers
per shard, one put per ``--interval`` seconds each).

Each put is classed by the node that led its shard when it started (polled from ``status``), and
the script reports put latency p50/p99/max for shards led by X and for the rest, leader and term
changes of the groups other than A, and how long X's Raft loop went without an iteration, in four
windows: ``quiet`` (before anything, all nodes up), ``transfer`` (X resumed until the snapshot has
arrived), ``install`` (X writing it into LevelDB: from when ``snap.incoming`` stops growing until it
is deleted, cross-checked with X's log line "installed snapshot ... in S s"), and ``after``.
The last line is a summary.  Numbers are wall-clock on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from typing import Any

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, REPO)
# the nodes run ``python -m raftkv`` with our environment: let them find this checkout from any directory
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (REPO, os.environ.get("PYTHONPATH")) if p)

from raftkv import AsyncClient  # noqa: E402
from raftkv.client import rpc  # noqa: E402
from raftkv.cluster import launcher  # noqa: E402
from raftkv.routing.shardmap import Shard  # noqa: E402

VALUE_BYTES = 1024
BRIEF_X = "n1"  # with --pause brief, the node that installs the snapshot
LOAD_CALL_BYTES = 16 << 20  # one put_many call: 8 batches of 2 MiB, sent in parallel by the client
INSTALLED = re.compile(r"^(\S+ \S+) INFO \S+: (?:\S+: )?installed (?:a )?snapshot at index (\d+) in ([\d.]+) s")
HANDOFF = re.compile(r"^(\S+ \S+) INFO \S+: handing leadership of (\S+) to (\S+) \(balancing\)")


def emit(**fields: Any) -> None:
    print(json.dumps({"bench": "install_stall", **fields}), flush=True)


def log_time(stamp: str) -> float:
    """A node.log asctime ("2025-01-02 03:04:05,678", local time) as a Unix timestamp."""
    return datetime.datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S,%f").timestamp()


# --- watching the cluster -----------------------------------------------------------------------


@dataclass
class Watch:
    """What the pollers saw: leadership claims and terms per group, X's loop, X's incoming snapshot."""

    claims: dict[str, list[tuple[float, int, str]]] = field(default_factory=dict)  # gid -> (t, term, node)
    terms: dict[str, list[tuple[float, int]]] = field(default_factory=dict)  # gid -> (t, term) seen anywhere
    x_iterations: list[tuple[float, int]] = field(default_factory=list)  # (t, raft_iterations) of X
    x_group_a: list[tuple[float, int, int]] = field(default_factory=list)  # (t, applied, snapshots_installed)
    file_sizes: list[tuple[float, int]] = field(default_factory=list)  # (t, size of X's snap.incoming)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def leader_at(self, gid: str, t: float) -> str | None:
        """The node with the highest-term leader claim for ``gid`` seen at or before ``t``."""
        best: tuple[int, float, str] | None = None
        for ts, term, node in self.claims.get(gid, ()):
            if ts <= t and (best is None or (term, ts) > best[:2]):
                best = (term, ts, node)
        return None if best is None else best[2]

    def term_at(self, gid: str, t: float) -> int:
        return max((term for ts, term in self.terms.get(gid, ()) if ts <= t), default=0)


def poll_node(watch: Watch, node: str, address: str, x: str, shard_a: str, every: float) -> None:
    """Thread: ask one node for ``status`` every ``every`` seconds (a paused node just times out)."""
    while not watch.stop.is_set():
        t_ask = time.time()
        try:
            st = rpc.call(address, "status", timeout=1.0, brief=True)
        except Exception:
            watch.stop.wait(every)
            continue
        t = (t_ask + time.time()) / 2
        with watch.lock:
            for g in st["groups"]:
                watch.terms.setdefault(g["id"], []).append((t, g["term"]))
                if g["state"] == "leader":
                    watch.claims.setdefault(g["id"], []).append((t, g["term"], node))
                if node == x and g["id"] == shard_a:
                    watch.x_group_a.append((t, g["applied"], g["snapshots_installed"]))
            if node == x:
                watch.x_iterations.append((t, st["raft_iterations"]))
        watch.stop.wait(max(0.0, every - (time.time() - t_ask)))


def poll_file(watch: Watch, path: str, every: float = 0.02) -> None:
    """Thread: the size of X's incoming snapshot file (-1 while there is none)."""
    while not watch.stop.is_set():
        try:
            size = os.stat(path).st_size
        except OSError:
            size = -1
        with watch.lock:
            if not watch.file_sizes or watch.file_sizes[-1][1] != size:
                watch.file_sizes.append((time.time(), size))
        watch.stop.wait(every)


# --- load ---------------------------------------------------------------------------------------


@dataclass
class Sample:
    gid: str
    start: float  # wall clock
    end: float
    ok: bool


async def writer(db: AsyncClient, shard: Shard, w: int, interval: float, stop: asyncio.Event,
                 out: list[Sample]) -> None:
    """Sequential single puts into ``shard``, one every ``interval`` seconds at most."""
    i = 0
    value = b"w" * 100
    while not stop.is_set():
        key = shard.start + (w << 32) + i
        i += 1
        t0 = time.time()
        try:
            await db.put(key, value)
            ok = True
        except Exception:
            ok = False
        t1 = time.time()
        out.append(Sample(shard.id, t0, t1, ok))
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(stop.wait(), max(0.0, interval - (t1 - t0)))


async def load(seeds: str, shard: Shard, mb: float) -> tuple[int, float]:
    """Put about ``mb`` MB of random 1 KiB values at increasing keys from the start of ``shard``."""
    total = int(mb * 1e6) // VALUE_BYTES
    per_call = LOAD_CALL_BYTES // VALUE_BYTES
    rnd = random.Random(1)
    t0 = time.monotonic()
    async with AsyncClient(seeds, timeout=120) as db:
        for first in range(0, total, per_call):
            n = min(per_call, total - first)
            await db.put_many([(shard.start + first + j, rnd.randbytes(VALUE_BYTES)) for j in range(n)])
    return total, time.monotonic() - t0


# --- reporting ----------------------------------------------------------------------------------


def latency(samples: list[Sample], w0: float) -> dict[str, Any]:
    """Percentiles of ``samples``, and the three slowest as [ms, shard, seconds into the window]."""
    ms = sorted((s.end - s.start) * 1000 for s in samples)
    if not ms:
        return {"count": 0}
    slow = sorted(samples, key=lambda s: s.start - s.end)[:3]
    return {"count": len(ms), "failed": sum(1 for s in samples if not s.ok),
            "p50_ms": round(ms[len(ms) // 2], 1), "p99_ms": round(ms[min(len(ms) - 1, int(0.99 * len(ms)))], 1),
            "max_ms": round(ms[-1], 1), "over_100ms": sum(1 for v in ms if v > 100),
            "slowest": [[round((s.end - s.start) * 1000, 1), s.gid, round(s.start - w0, 2)] for s in slow]}


def window_report(name: str, w0: float, w1: float, samples: list[Sample], watch: Watch, x: str,
                  shard_a: str, handoffs: list[tuple[float, str, str, str]]) -> dict[str, Any]:
    with watch.lock:
        inside = [s for s in samples if s.end >= w0 and s.start <= w1]
        by_x = [s for s in inside if watch.leader_at(s.gid, s.start) == x]
        rest = [s for s in inside if watch.leader_at(s.gid, s.start) != x]
        others = sorted(g for g in watch.terms if g != shard_a)
        led_by_x = sorted(g for g in others if any(
            watch.leader_at(g, t) == x for t in [w0, *(t for t, _, _ in watch.claims.get(g, ()) if w0 <= t <= w1)]))
        changes = 0
        for g in others:
            seen = {(term, n) for t, term, n in watch.claims.get(g, ()) if t <= w0}
            first = max(seen, default=None)
            new = {(term, n) for t, term, n in watch.claims.get(g, ()) if w0 < t <= w1}
            changes += len({c for c in new if first is None or c > first})
        terms = sum(watch.term_at(g, w1) - watch.term_at(g, w0) for g in others)
        its = [(t, n) for t, n in watch.x_iterations if w0 <= t <= w1]
    # the longest stretch over which X's Raft loop counter did not move (resolution: the poll period)
    stall, last_change = 0.0, None
    for (t_prev, n_prev), (t, n) in zip(its, its[1:], strict=False):
        if last_change is None:
            last_change = t_prev
        if n != n_prev:
            stall = max(stall, t - last_change)
            last_change = t
    rate = (its[-1][1] - its[0][1]) / (its[-1][0] - its[0][0]) if len(its) > 1 and its[-1][0] > its[0][0] else None
    return {"window": name, "seconds": round(w1 - w0, 2), "groups_led_by_x": led_by_x,
            "puts_led_by_x": latency(by_x, w0), "puts_others": latency(rest, w0),
            "leader_changes_not_a": changes, "term_increments_not_a": terms,
            "balancing_handoffs": [f"{g}:{src}->{dst}" for t, g, src, dst in handoffs if w0 <= t <= w1],
            "x_loop_iterations_per_s": None if rate is None else round(rate, 1),
            "x_loop_longest_still_s": round(stall, 2)}


def read_logs(info: launcher.ClusterInfo, x: str, since: float
              ) -> tuple[list[tuple[float, int, float]], list[tuple[float, str, str, str]]]:
    """X's "installed snapshot" lines (t, index, seconds) and every node's balancing handoffs since ``since``."""
    installs, handoffs = [], []
    for node in info.nodes:
        with open(os.path.join(info.node_dir(node.id), launcher.LOG_FILE), errors="replace") as f:
            for line in f:
                if node.id == x and (m := INSTALLED.match(line)) and log_time(m[1]) >= since:
                    installs.append((log_time(m[1]), int(m[2]), float(m[3])))
                elif (m := HANDOFF.match(line)) and log_time(m[1]) >= since:
                    handoffs.append((log_time(m[1]), m[2], node.id, m[3]))
    return installs, handoffs


# --- a cuttable peer link -------------------------------------------------------------------------


def proxy_child(target_port: int) -> int:
    """``--proxy-child PORT``: forward 127.0.0.1:(printed port) to 127.0.0.1:PORT until stdin closes.

    A node sends Raft traffic to a peer only on the connection it dialed itself, so a node that
    dials X through this proxy can be cut off from X in one direction ("cut" on stdin closes every
    connection and refuses new ones; "heal" accepts again), while X still reaches it.  Runs in its
    own process so that copying bytes never competes with the benchmark's client for a GIL.
    """
    import socket

    listener = socket.create_server((launcher.HOST, 0))
    lock = threading.Lock()
    pipes: set[socket.socket] = set()
    cut = threading.Event()

    def pump(src: socket.socket, dst: socket.socket) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(1 << 16):
                dst.sendall(data)
        for sock in (src, dst):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            with lock:
                pipes.discard(sock)

    def accept() -> None:
        while True:
            down, _ = listener.accept()
            try:
                if cut.is_set():
                    raise OSError("cut")
                up = socket.create_connection((launcher.HOST, target_port), timeout=2.0)
                up.settimeout(None)  # the timeout was for connecting: an idle direction is normal
            except OSError:
                down.close()
                continue
            for sock in (down, up):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            with lock:
                pipes.update((down, up))
            threading.Thread(target=pump, args=(down, up), daemon=True).start()
            threading.Thread(target=pump, args=(up, down), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    print(listener.getsockname()[1], flush=True)
    for line in sys.stdin:
        if line.strip() == "cut":
            cut.set()
            with lock:
                doomed = list(pipes)
            for sock in doomed:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        elif line.strip() == "heal":
            cut.clear()
        print("ok", flush=True)
    return 0


class Proxy:
    """A :func:`proxy_child` process."""

    def __init__(self, target_port: int) -> None:
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--proxy-child", str(target_port)],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        self.port = int(self.proc.stdout.readline())

    def send(self, command: str) -> None:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        self.proc.stdout.readline()

    def close(self) -> None:
        with contextlib.suppress(OSError):
            if self.proc.stdin is not None:
                self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def free_base_port() -> int:
    """A base port P with P..P+2 and P+100..P+102 free (the launcher's --base-port layout)."""
    rnd = random.Random()
    for _ in range(200):
        base = rnd.randrange(20000, 40000)
        ports = [base + i for i in range(3)] + [base + launcher.PEER_PORT_OFFSET + i for i in range(3)]
        if not any(launcher._port_busy(port) for port in ports):
            return base
    raise RuntimeError("no free port range found")


# --- the run ------------------------------------------------------------------------------------


def leaders(info: launcher.ClusterInfo) -> dict[str, str | None]:
    return rpc.call_any(info.addresses, "map", timeout=2.0)["leaders"]


async def settle(info: launcher.ClusterInfo, watch: Watch, x: str, shard_a: str, seconds: float) -> list[str]:
    """Wait (up to ``seconds``) until X has applied all of A and leads a shard other than A; what X leads."""
    deadline = time.monotonic() + seconds
    led: list[str] = []
    while time.monotonic() < deadline:
        applied = []
        for a in info.addresses:
            with contextlib.suppress(Exception):
                st = await asyncio.to_thread(rpc.call, a, "status", 2.0, brief=True)
                applied += [g["applied"] for g in st["groups"] if g["id"] == shard_a]
        now = time.time()
        with watch.lock:
            led = sorted(g for g in watch.claims if g not in (shard_a, "meta") and watch.leader_at(g, now) == x)
        if led and applied and min(applied) == max(applied):
            break
        await asyncio.sleep(0.5)
    return led


async def run(args: argparse.Namespace, root: str, info: launcher.ClusterInfo, watch: Watch,
              proxies: dict[str, Proxy]) -> None:
    async with AsyncClient(info.seeds, timeout=30) as db:
        smap = await db.shard_map()
    lead = leaders(info)
    if proxies:
        # X is fixed (its peers dial it through the proxies); A is the last shard it does not lead
        x = BRIEF_X
        shard_a = [s for s in smap.shards if lead.get(s.id) not in (x, None)][-1]
    else:
        # the last group in id order: balancing, which offers groups in id order, gives X the others first
        shard_a = smap.shards[-1]
        counts = {n.id: sum(1 for g, v in lead.items() if v == n.id and g != shard_a.id) for n in info.nodes}
        x = max((n for n in shard_a.replicas if n != lead.get(shard_a.id)), key=lambda n: (counts[n], n))
    live = ",".join(a for n, a in zip(info.nodes, info.addresses, strict=True) if n.id != x)
    others = [s for s in smap.shards if s.id != shard_a.id]
    incoming = os.path.join(info.node_dir(x), "groups", shard_a.id, "snap.incoming")
    threads = [threading.Thread(target=poll_node, args=(watch, n.id, a, x, shard_a.id, 0.1), daemon=True)
               for n, a in zip(info.nodes, info.addresses, strict=True)]
    threads.append(threading.Thread(target=poll_file, args=(watch, incoming), daemon=True))
    for t in threads:
        t.start()
    emit(phase="setup", nodes=len(info.nodes), shards=len(smap.shards), shard_a=shard_a.id, x=x,
         leaders_at_start=lead, mb=args.mb, inflight_per_shard=args.inflight, interval_s=args.interval)

    samples: list[Sample] = []
    stop = asyncio.Event()
    t_start = time.time()
    async with AsyncClient(info.seeds, timeout=60) as db:
        tasks = [asyncio.create_task(writer(db, s, w, args.interval, stop, samples))
                 for s in others for w in range(args.inflight)]
        try:
            await asyncio.sleep(1.0)  # warm the client's map and leader cache
            q0 = time.time()
            await asyncio.sleep(args.quiet)
            q1 = time.time()

            if args.pause == "long":
                # X sleeps through the whole load: the realistic "far behind" follower, but balancing
                # gives X groups back only some seconds after it wakes, often after the install
                launcher.kill_node(root, x, signal.SIGSTOP)
                t_stop = time.time()
                keys, load_s = await load(live, shard_a, args.mb)
                emit(phase="loaded", shard=shard_a.id, keys=keys, mb=round(keys * VALUE_BYTES / 1e6, 1),
                     seconds=round(load_s, 1), mb_per_s=round(keys * VALUE_BYTES / 1e6 / load_s, 1))
            else:
                # X takes the load like everyone, keeps leading its groups, and misses only a few
                # entries while paused for well under an election timeout
                keys, load_s = await load(info.seeds, shard_a, args.mb)
                emit(phase="loaded", shard=shard_a.id, keys=keys, mb=round(keys * VALUE_BYTES / 1e6, 1),
                     seconds=round(load_s, 1), mb_per_s=round(keys * VALUE_BYTES / 1e6 / load_s, 1))
                led = await settle(info, watch, x, shard_a.id, args.settle)
                emit(phase="settled", x_leads=led, leaders=leaders(info))
                if not led:
                    emit(phase="warning", warning=f"{x} leads no shard other than {shard_a.id} before the pause")
                if watch.leader_at(shard_a.id, time.time()) == x:
                    raise RuntimeError(f"{x} leads {shard_a.id}; it cannot be the follower that installs")
                async with AsyncClient(live, timeout=10) as la:
                    await la.put(shard_a.start + keys, b"p")  # warm: map and A's leader cached
                    cut = leaders(info)[shard_a.id]
                    assert cut is not None and cut != x
                    proxies[cut].send("cut")  # A's leader can no longer reach X; X still reaches it
                    t_stop = time.time()
                    # compaction keeps the last two applied entries: three new ones put X's
                    # next index below the leader's log start
                    for i in range(1, 4):
                        await la.put(shard_a.start + keys + i, b"p")
            compacted = {}
            for n, a in zip(info.nodes, info.addresses, strict=True):
                if n.id != x:
                    rpc.call(a, "compact", timeout=5.0, shard=shard_a.id)
            # compaction runs on the next tick of each Raft loop: wait until both logs are short
            until = time.monotonic() + (5.0 if args.pause == "long" else 0.5)
            while True:
                for n, a in zip(info.nodes, info.addresses, strict=True):
                    if n.id != x:
                        st = rpc.call(a, "status", timeout=5.0, brief=True)
                        g = next(g for g in st["groups"] if g["id"] == shard_a.id)
                        compacted[n.id] = {"log_entries": g["log_entries"], "applied": g["applied"]}
                if all(c["log_entries"] <= 3 for c in compacted.values()) or time.monotonic() > until:
                    break
                await asyncio.sleep(0.01)
            with watch.lock:
                x_applied = watch.x_group_a[-1][1] if watch.x_group_a else None
                installs_before = watch.x_group_a[-1][2] if watch.x_group_a else 0
            t_cont = time.time()
            if args.pause == "long":
                launcher.kill_node(root, x, signal.SIGCONT)
            else:
                proxies[cut].send("heal")
            emit(phase="resumed", pause=args.pause, x_cut_off_s=round(t_cont - t_stop, 2),
                 x_applied_before_pause=x_applied, live_replicas_after_compact=compacted)
            deadline = time.monotonic() + args.install_timeout
            target = max(c["applied"] for c in compacted.values())
            while time.monotonic() < deadline:
                with watch.lock:
                    last = watch.x_group_a[-1] if watch.x_group_a else None
                if last is not None and last[0] > t_cont and last[2] > installs_before and last[1] >= target:
                    break
                await asyncio.sleep(0.1)
            else:
                emit(phase="error", error=f"{x} did not install {shard_a.id}'s snapshot within "
                                          f"{args.install_timeout:g}s")
            t_caught_up = time.time()
            await asyncio.sleep(args.after)
            t_end = time.time()
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    installs, handoffs = read_logs(info, x, t_start - 1)
    installs = [i for i in installs if i[0] >= t_cont]
    with watch.lock:
        sizes = [(t, s) for t, s in watch.file_sizes if t >= t_cont]
    # the file grows while chunks arrive, stops growing when the last one is in (the install starts)
    # and is deleted when the install ends
    grown = [t for (t, s), (_, prev) in zip(sizes[1:], sizes, strict=False) if s > prev and s > 0]
    gone = [t for (t, s), (_, prev) in zip(sizes[1:], sizes, strict=False) if s < 0 <= prev]
    snapshot_mb = max((s for _, s in sizes), default=-1) / 1e6
    # a transfer that started over: the file was reopened (smaller, or gone and back) before the install
    restarts = sum(1 for (_, sz), (_, prev) in zip(sizes[1:], sizes, strict=False) if 0 <= sz < prev) \
        + max(0, sum(1 for (_, sz), (_, prev) in zip(sizes[1:], sizes, strict=False) if prev < 0 <= sz) - 1)
    if grown and gone and gone[0] >= grown[-1]:
        i0, i1, source = grown[-1], gone[0], "snap.incoming"
    elif installs:
        i0, i1, source = installs[0][0] - installs[0][2], installs[0][0], "node.log"
    else:
        i0 = i1 = t_caught_up
        source = "none"
    first_seen = sizes[0][0] if sizes and sizes[0][1] >= 0 else (grown[0] if grown else t_cont)
    windows = [("quiet", q0, q1), ("transfer", t_cont, i0), ("install", i0, i1), ("after", t_caught_up, t_end)]
    reports = {}
    for name, w0, w1 in windows:
        reports[name] = window_report(name, w0, w1, samples, watch, x, shard_a.id, handoffs)
        emit(**reports[name])
    inst = reports["install"]
    emit(phase="summary", mb=args.mb, snapshot_mb=round(snapshot_mb, 1),
         install_s=round(i1 - i0, 2), install_s_logged=installs[0][2] if installs else None,
         install_window_from=source, installs_logged=len(installs),
         transfer_s=round(i0 - t_cont, 2), first_chunk_after_resume_s=round(first_seen - t_cont, 2),
         transfer_restarts=restarts,
         x=x, shard_a=shard_a.id, x_led_during_install=inst["groups_led_by_x"],
         p99_ms_led_by_x=inst["puts_led_by_x"].get("p99_ms"), p99_ms_others=inst["puts_others"].get("p99_ms"),
         leader_changes_not_a=inst["leader_changes_not_a"], x_loop_longest_still_s=inst["x_loop_longest_still_s"],
         meets_issue=source != "none" and bool(inst["groups_led_by_x"]) and inst["puts_led_by_x"].get("count", 0) > 0
         and inst["puts_led_by_x"]["p99_ms"] < 100 and (inst["puts_others"].get("p99_ms") or 0) < 100
         and inst["leader_changes_not_a"] <= len(inst["balancing_handoffs"]),
         load_avg=os.getloadavg()[0])


def main() -> int:
    if sys.argv[1:2] == ["--proxy-child"]:
        return proxy_child(int(sys.argv[2]))
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--mb", type=float, default=200.0, help="MB of 1 KiB values loaded into shard A")
    ap.add_argument("--shards", type=int, default=8, help="shards (A is the last one)")
    ap.add_argument("--inflight", type=int, default=1, help="sequential writers per shard other than A")
    ap.add_argument("--interval", type=float, default=0.02, help="seconds between one writer's puts (at most)")
    ap.add_argument("--quiet", type=float, default=8.0, help="seconds of the quiet window before the pause")
    ap.add_argument("--after", type=float, default=5.0, help="seconds of the window after the install")
    ap.add_argument("--pause", choices=("brief", "long"), default="brief",
                    help="brief: A's leader is cut off from X just long enough for X to miss a few entries of "
                    "A (X keeps its leaderships); long: X is paused (SIGSTOP) during the whole load")
    ap.add_argument("--settle", type=float, default=30.0,
                    help="brief: seconds to wait for X to catch up A and lead another shard")
    ap.add_argument("--install-timeout", type=float, default=120.0)
    ap.add_argument("--keep", action="store_true", help="keep the cluster directory")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="raftkv-stall-")
    watch = Watch()
    pids: dict[str, int | None] = {}
    proxies: dict[str, Proxy] = {}
    try:
        base_port = via = None
        if args.pause == "brief":
            # the other nodes dial X's peer port through proxies that can cut them off from X
            base_port = free_base_port()
            x_peer = base_port + launcher.PEER_PORT_OFFSET + int(BRIEF_X[1:]) - 1
            for node in ("n1", "n2", "n3"):
                if node != BRIEF_X:
                    proxies[node] = Proxy(x_peer)
            via = {node: {BRIEF_X: (launcher.HOST, proxy.port)} for node, proxy in proxies.items()}
        info = launcher.start(root, nodes=3, shards=args.shards, wait=120, base_port=base_port, peer_via=via,
                              settings={"split_bytes": 1 << 40, "stripe_writes_per_s": 1 << 40})
        pids = dict(info.pids)
        time.sleep(2.0)  # let elections and leadership balancing settle
        asyncio.run(run(args, root, info, watch, proxies))
    finally:
        watch.stop.set()
        for proxy in proxies.values():
            proxy.close()
        for pid in pids.values():
            if pid is not None:
                with contextlib.suppress(OSError):
                    os.kill(pid, signal.SIGCONT)
        with contextlib.suppress(Exception):
            launcher.stop(root)
        for pid in pids.values():  # any node stop() left behind, if it is still ours
            with contextlib.suppress(OSError), open(f"/proc/{pid}/cmdline", "rb") as f:
                if os.path.realpath(root).encode() in f.read():
                    os.kill(pid, signal.SIGKILL)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            print(f"cluster directory kept: {root}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

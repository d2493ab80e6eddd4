"""How long writes stall when a shard leader is killed (kill -9) under load; JSON lines.

    python bench/failover.py [--rounds 3]
    python bench/failover.py --steady [SECONDS]

Four writer tasks put increasing keys into one shard; the script kills that shard's leader and
reports the longest gap between two acknowledged writes (the stall) and how long after the kill
that gap ended (writes resumed).  The killed node is restarted between rounds.

Each round prints two lines: ``"bench": "failover"`` (the stall) and ``"bench": "failover_series"``,
the acknowledged writes in each ``bin_s`` (0.1 s) bin from ``start_s`` seconds before the kill
(negative) to the end of the round, for ``bench/report.py``'s throughput-over-time chart.

``--steady SECONDS`` (60 by default) kills nothing: it ingests increasing keys at full speed
(``--inflight`` puts, 64 by default) and counts the leader changes of every group, from each
node's ``status`` sampled every second, so that a leader that lost its post and got it back
counts too.  It prints one ``"bench": "steady_leaders"`` line; a healthy cluster shows no leader
change.  ``handoffs`` counts the leadership hand-offs the nodes' balancing logged meanwhile
(planned, not elections); ``unplanned_leader_changes`` are the changes no hand-off explains, which
elections caused.  Groups born meanwhile (splits, stripes) count from their first leader on.

``ride_through``, ``raftkv_round`` and ``summary`` are shared with ``compare_etcd.py``, which
measures etcd's stall the same way in the same run.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import itertools
import json
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from raftkv import AsyncClient, errors  # noqa: E402
from raftkv.client import rpc  # noqa: E402
from raftkv.cluster import launcher  # noqa: E402

WRITERS = 4
VALUE = b"v" * 100


def leader_of(info: launcher.ClusterInfo, shard: str) -> str:
    """The node that says it leads group ``shard`` (RuntimeError if none does)."""
    best: tuple[int, str] | None = None
    for node, addr in zip(info.nodes, info.addresses, strict=True):
        try:
            groups = rpc.call(addr, "status", timeout=1.0, brief=True)["groups"]
        except Exception:
            continue
        for g in groups:
            # an old leader may not know yet that it was replaced: the higher term wins
            if g["id"] == shard and g["state"] == "leader" and (best is None or g["term"] > best[0]):
                best = (g["term"], node.id)
    if best is None:
        raise RuntimeError(f"no leader for {shard}")
    return best[1]


def longest_gap(acks: list[float]) -> tuple[float, float]:
    """The longest gap between consecutive acknowledgement times, and the time it ended."""
    acks = sorted(acks)
    return max(((b - a, b) for a, b in zip(acks, acks[1:], strict=False)), default=(0.0, 0.0))


def summary(n: int, victim: str, acks: list[float], t_kill: float) -> dict[str, Any]:
    """Round ``n``'s stall line from the acknowledgement times (monotonic seconds) and the kill's."""
    gap, resumed = longest_gap(acks)
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


@dataclass
class Round:
    """What one kill under load gave: the victim, when each write was acknowledged, when it was killed."""

    victim: str
    acks: list[float]
    t_kill: float
    failed: int  # attempts that raised: the clients' own retries are not counted

    def stall(self) -> float:
        """The longest gap between two acknowledged writes (seconds)."""
        return longest_gap(self.acks)[0]

    def resumed_after_kill(self) -> float:
        """Seconds from the kill to the acknowledgement that ended the longest stall."""
        return longest_gap(self.acks)[1] - self.t_kill


async def ride_through(put: Callable[[int], Awaitable[object]], find: Callable[[], Awaitable[str]],
                       kill: Callable[[str], object], writers: int = WRITERS, before: float = 2.0,
                       after: float = 5.0, limit: float = 60.0) -> Round:
    """Keep ``writers`` calls of ``put(writer)`` in flight; after ``before`` s kill ``find()``'s answer.

    ``kill(victim)`` runs in a thread.  Writing goes on for ``after`` s past the kill, and longer
    (up to ``limit`` s) until writes have resumed, so that a stall longer than ``after`` is
    measured to its end rather than cut short.
    """
    acks: list[float] = []
    failed = 0
    stop = asyncio.Event()

    async def writer(w: int) -> None:
        nonlocal failed
        while not stop.is_set():
            try:
                await put(w)
            except Exception:  # a failed attempt acknowledges nothing; the next one may
                failed += 1
                await asyncio.sleep(0.01)  # no hot loop stealing the CPU the election needs
                continue
            acks.append(time.monotonic())

    tasks = [asyncio.create_task(writer(w)) for w in range(writers)]
    try:
        await asyncio.sleep(before)
        victim = await find()
        t_kill = time.monotonic()
        await asyncio.to_thread(kill, victim)
        await asyncio.sleep(after)
        while time.monotonic() < t_kill + limit and not (acks and acks[-1] > time.monotonic() - 0.5):
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    return Round(victim, acks, t_kill, failed)


async def raftkv_round(root: str, info: launcher.ClusterInfo, base: int, writers: int = WRITERS) -> Round:
    """Kill -9 the leader of the shard owning ``base`` while writing keys from ``base`` into it; restart it.

    Only keys that shard owns are written (a striped tail spreads neighbouring keys over several
    groups), so every writer waits on the killed leader's group.
    """
    async with AsyncClient(",".join(info.addresses), timeout=30) as db:
        shard = (await db.shard_map()).shard_for_key(base)
        # shared, so writers never repeat a key; past the shard's end (never reached in practice)
        # every key is taken rather than none, which would spin here forever
        keys = (k for k in itertools.count(base) if shard.owns(k) or k >= shard.end)

        async def put(_w: int) -> None:
            await db.put(next(keys), VALUE)

        async def find() -> str:
            return await asyncio.to_thread(leader_of, info, shard.id)

        result = await ride_through(put, find, lambda victim: launcher.kill_node(root, victim, signal.SIGKILL),
                                    writers)
    await asyncio.to_thread(launcher.start_node, root, result.victim, 60)
    await asyncio.sleep(3.0)  # let it catch up before the next round
    return result


async def round_(root: str, info: launcher.ClusterInfo, n: int) -> None:
    async with AsyncClient(",".join(info.addresses), timeout=30) as db:
        shard = (await db.shard_map()).shards[2]
    r = await raftkv_round(root, info, shard.start + n * 10**9)
    print(json.dumps(summary(n, r.victim, r.acks, r.t_kill)), flush=True)
    print(json.dumps(series(n, r.acks, r.t_kill)), flush=True)


# --- --steady: leader changes under a full-speed ingest ------------------------------------------

Leadership = dict[str, tuple[str | None, int]]  # group id -> (leader node or None, highest term seen)


def leadership(info: launcher.ClusterInfo, timeout: float = 5.0) -> Leadership:
    """Every group's leader and term, from each node's ``status``.

    The leader is the node that says it leads, at the highest term if two do (an old leader may
    not know yet); None if no node answering says so.  Nodes that do not answer are skipped.
    """
    out: dict[str, tuple[str | None, int]] = {}
    claims: dict[str, int] = {}
    for node in info.nodes:
        try:
            st = rpc.call(launcher.format_hostport(node.client), "status", timeout=timeout, brief=True)
        except errors.RaftKVError:
            continue
        for g in st["groups"]:
            leader, term = out.get(g["id"], (None, 0))
            if g["state"] == "leader" and g["term"] >= claims.get(g["id"], -1):
                claims[g["id"]] = g["term"]
                leader = st["node"]
            out[g["id"]] = (leader, max(term, g["term"]))
    return out


@dataclass
class Changes:
    """Leader and term changes found in a sequence of :func:`leadership` samples."""

    leader_changes: int
    term_changes: int
    groups: int  # groups seen in any sample
    new_groups: int  # groups absent from the first sample (splits, stripes)
    events: list[dict[str, Any]]


def count_changes(samples: list[tuple[float, Leadership]]) -> Changes:
    """Count, per group, each new leader (against the last one known) and each term step.

    ``samples`` are ``(seconds, leadership)`` in time order.  A sample in which a group has no
    known leader (mid-election, or its leader did not answer) changes nothing by itself: the next
    known leader is compared with the last known one, so A -> none -> A is no leader change (its
    term steps are counted).  Terms count by how much they grew (a failed campaign is a step too),
    from the group's first known leader on: the election that gave a new group its first leader
    is its birth, not a change.
    """
    leaders: dict[str, str] = {}
    terms: dict[str, int] = {}
    events: list[dict[str, Any]] = []
    leader_changes = term_changes = 0
    first = set(samples[0][1]) if samples else set()
    seen: set[str] = set()
    for at, sample in samples:
        for gid, (leader, term) in sorted(sample.items()):
            seen.add(gid)
            event: dict[str, Any] = {}
            # a new group's first election (no leader known yet) changes nothing
            if gid in terms and term > terms[gid] and gid in leaders:
                term_changes += term - terms[gid]
                event["term"] = [terms[gid], term]
            terms[gid] = max(term, terms.get(gid, term))
            if leader is not None:
                if gid in leaders and leaders[gid] != leader:
                    leader_changes += 1
                    event["leader"] = [leaders[gid], leader]
                leaders[gid] = leader
            if event:
                events.append({"at_s": round(at, 1), "group": gid, **event})
    return Changes(leader_changes, term_changes, len(seen), len(seen - first), events)


def _log_sizes(info: launcher.ClusterInfo) -> dict[str, int]:
    sizes = {}
    for node in info.nodes:
        try:
            sizes[node.id] = os.path.getsize(os.path.join(info.node_dir(node.id), launcher.LOG_FILE))
        except OSError:
            sizes[node.id] = 0
    return sizes


HANDOFF = re.compile(rb"handing leadership of (\S+) to (\S+) \(balancing\)")  # node.py's log line


def handoffs_since(info: launcher.ClusterInfo, sizes: dict[str, int]) -> list[tuple[str, str]]:
    """``(group, new leader)`` of each balancing hand-off the nodes logged past ``sizes`` bytes."""
    found = []
    for node in info.nodes:
        try:
            with open(os.path.join(info.node_dir(node.id), launcher.LOG_FILE), "rb") as f:
                f.seek(sizes.get(node.id, 0))
                found += [(g.decode(), to.decode()) for g, to in HANDOFF.findall(f.read())]
        except OSError:
            continue
    return found


def unplanned(events: list[dict[str, Any]], handoffs: list[tuple[str, str]]) -> int:
    """Leader changes in ``events`` that no hand-off explains (each hand-off explains one change)."""
    left = collections.Counter(handoffs)
    count = 0
    for e in events:
        if "leader" not in e:
            continue
        if left[(e["group"], e["leader"][1])] > 0:
            left[(e["group"], e["leader"][1])] -= 1
        else:
            count += 1
    return count


async def steady(info: launcher.ClusterInfo, seconds: float, inflight: int) -> dict[str, Any]:
    """Ingest increasing keys with ``inflight`` puts outstanding for ``seconds``; the leader changes seen."""
    base = time.time_ns()
    counter = itertools.count()
    done = failed = 0
    sizes = _log_sizes(info)
    samples: list[tuple[float, Leadership]] = [(0.0, await asyncio.to_thread(leadership, info))]
    t0 = time.monotonic()
    stop_at = t0 + seconds
    async with AsyncClient(",".join(info.addresses), timeout=30) as db:
        async def writer() -> None:
            nonlocal done, failed
            while time.monotonic() < stop_at:
                try:
                    await db.put(base + next(counter), VALUE)
                except errors.RaftKVError:  # counted, not fatal: one writer fewer would slow the rest
                    failed += 1
                    continue
                done += 1

        tasks = [asyncio.create_task(writer()) for _ in range(inflight)]
        try:
            tick = t0
            while time.monotonic() < stop_at:
                tick += 1.0
                await asyncio.sleep(max(0.0, min(tick, stop_at) - time.monotonic()))
                # status calls block: a thread keeps the writers going meanwhile
                samples.append((time.monotonic() - t0, await asyncio.to_thread(leadership, info)))
            elapsed = time.monotonic() - t0
        finally:
            await asyncio.gather(*tasks, return_exceptions=True)
    start, end = samples[0][1], samples[-1][1]
    changes = count_changes(samples)
    handoffs = handoffs_since(info, sizes)
    return {"bench": "steady_leaders", "seconds": round(elapsed, 1), "inflight": inflight,
            "puts_per_s": round(done / elapsed), "failed_puts": failed,
            "leader_changes": changes.leader_changes, "term_changes": changes.term_changes,
            "groups": changes.groups, "new_groups": changes.new_groups,
            "leader_differs_end_vs_start": sum(1 for g, (ld, _) in start.items()
                                               if ld is not None and g in end and end[g][0] not in (None, ld)),
            "handoffs": len(handoffs), "unplanned_leader_changes": unplanned(changes.events, handoffs),
            "samples": len(samples), "events": changes.events[:20]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--steady", type=float, nargs="?", const=60.0, default=None, metavar="SECONDS",
                    help="count leader changes during a full-speed ingest of SECONDS (60) instead")
    ap.add_argument("--inflight", type=int, default=64, help="puts in flight with --steady")
    args = ap.parse_args()
    root = tempfile.mkdtemp(prefix="raftkv-failover-")
    try:
        info = launcher.start(root, nodes=3, shards=8, wait=60)
        if args.steady is not None:
            print(json.dumps(asyncio.run(steady(info, args.steady, args.inflight))), flush=True)
        else:
            for n in range(args.rounds):
                asyncio.run(round_(root, info, n))
    finally:
        launcher.stop(root)
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

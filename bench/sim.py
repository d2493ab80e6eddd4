"""Placement at scale, without a cluster: the real rendezvous placement and replica planner on a map of
``--shards`` shards x 3 replicas over ``--nodes`` nodes (JSON lines).

    python bench/sim.py [--nodes 1000] [--shards 100000] [--seed 1] [--per-node 2]

Each plan is applied as if its moves had completed, then the next plan is made, until a plan is
empty ("converged").  ``--per-node`` is the planner's ``max_per_node``.  It prints:

* ``sim_initial``: the spread of pure HRW placement (as ``initial_map`` places), and the moves and
  rounds the planner needs to bring every node within the band (the mean ±10 %);
* ``sim_join``: one node joins; replicas moved / all replicas, against the ideal 1/(N+1);
* ``sim_leave``, ``sim_die``: one node is drained, another dies; replicas moved, and the spread after;
* ``sim_change_bytes``: msgpack bytes of the meta group's change (``records.py``) for one split and
  one move, at two map sizes.  They are the same apart from the ids' widths, and do not grow with
  the map;
* ``sim_lookup``: a client's ``ShardMap.shard_for_key`` on the full map, in microseconds;
* ``sim_plan``: seconds for one plan on the full map, with nothing to do and with a dead node.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import random
import statistics
import sys
import time
from collections import Counter
from concurrent.futures import ProcessPoolExecutor

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from raftkv.protocol import codec  # noqa: E402
from raftkv.replication.planner import DEAD, DECOMMISSIONING, UP, Move, apply_moves, band, plan_moves  # noqa: E402
from raftkv.routing import placement  # noqa: E402
from raftkv.routing.ranges import even_split_points, ranges_from_split_points  # noqa: E402
from raftkv.routing.shardmap import Shard, ShardMap, shard_name  # noqa: E402

FACTOR = 3


def node_names(count: int) -> list[str]:
    return [f"n{i:04d}" for i in range(count)]


def _place_block(args: tuple[list[str], list[str], int]) -> list[tuple[str, ...]]:
    ids, node_ids, factor = args
    return [tuple(placement.place(sid, node_ids, factor)) for sid in ids]


def hrw_map(node_ids: list[str], shard_count: int, factor: int = FACTOR) -> ShardMap:
    """What ``initial_map`` builds: equal ranges placed by ``placement.place``.

    At full size that is 10**8 hashes, so the work is spread over the cores.
    """
    ids = [shard_name(i) for i in range(shard_count)]
    if shard_count * len(node_ids) < 10**7:
        replicas = _place_block((ids, node_ids, factor))
    else:
        step = 2000
        blocks = [(ids[i:i + step], node_ids, factor) for i in range(0, shard_count, step)]
        with ProcessPoolExecutor() as pool:
            replicas = [r for block in pool.map(_place_block, blocks) for r in block]
    ranges = ranges_from_split_points(even_split_points(shard_count))
    return ShardMap(1, tuple(Shard(sid, lo, hi, reps) for sid, (lo, hi), reps in zip(ids, ranges, replicas,
                                                                                       strict=True)))


def spread(shards: list[Shard], nodes: dict[str, str]) -> dict:
    """How evenly the up nodes hold replicas."""
    held = Counter(r for s in shards for r in s.replicas)
    counts = [held[n] for n, st in nodes.items() if st == UP]
    mean = statistics.fmean(counts)
    lo, hi = band(counts)
    return {"max_over_mean": round(max(counts) / mean, 3), "min_over_mean": round(min(counts) / mean, 3),
            "stdev": round(statistics.pstdev(counts), 1), "in_band": lo <= min(counts) and max(counts) <= hi}


def converge(shards: list[Shard], nodes: dict[str, str], max_per_node: int = 2,
             max_rounds: int = 100_000) -> tuple[list[Shard], list[Move], int]:
    """Plan, apply, repeat until a plan is empty: ``(placement, every move, rounds)``."""
    done: list[Move] = []
    for rounds in range(max_rounds):
        moves = plan_moves(shards, nodes, factor=FACTOR, max_per_node=max_per_node)
        if not moves:
            return shards, done, rounds
        shards = apply_moves(shards, moves)
        done += moves
    raise RuntimeError("the planner did not converge")


def initial(smap: ShardMap, nodes: dict[str, str], max_per_node: int = 2) -> tuple[list[Shard], dict]:
    """From pure HRW placement to a balanced one."""
    before = spread(list(smap.shards), nodes)
    t0 = time.perf_counter()
    shards, moves, rounds = converge(list(smap.shards), nodes, max_per_node)
    return shards, {"moves": len(moves), "moved_fraction": round(len(moves) / (len(shards) * FACTOR), 5),
                    "rounds": rounds, "seconds": round(time.perf_counter() - t0, 1),
                    "before": before, "after": spread(shards, nodes)}


def join(shards: list[Shard], nodes: dict[str, str], new: str,
         max_per_node: int = 2) -> tuple[list[Shard], dict[str, str], dict]:
    """Node ``new`` joins empty; what the planner moves to give it its share."""
    nodes = {**nodes, new: UP}
    after, moves, rounds = converge(shards, nodes, max_per_node)
    total = len(shards) * FACTOR
    ideal = total / sum(st == UP for st in nodes.values())
    return after, nodes, {"moved": len(moves), "to_new_node": sum(m.add == new for m in moves),
                          "moved_fraction": round(len(moves) / total, 6),
                          "ideal_fraction": round(ideal / total, 6), "ratio_to_ideal": round(len(moves) / ideal, 3),
                          "rounds": rounds, "after": spread(after, nodes)}


def leave(shards: list[Shard], nodes: dict[str, str], node: str, state: str,
          max_per_node: int = 2) -> tuple[list[Shard], dict[str, str], dict]:
    """``node`` is drained (``state`` decommissioning) or dies; afterwards it leaves the membership."""
    held = sum(node in s.replicas for s in shards)
    nodes = {**nodes, node: state}
    after, moves, rounds = converge(shards, nodes, max_per_node)
    nodes = {n: st for n, st in nodes.items() if n != node}
    return after, nodes, {"state": state, "held": held, "moved": len(moves),
                          "off_the_node": sum(m.remove == node for m in moves),
                          "reasons": dict(Counter(m.reason for m in moves)), "rounds": rounds,
                          "after": spread(after, nodes)}


def split_change(smap: ShardMap) -> list:
    """The meta group's change (``records.py``) splitting shard 0 in two."""
    first = smap.shards[0]
    new_id = shard_name(len(smap.shards))
    after = smap.split(first.id, first.start + (first.end - first.start) // 2, new_id)
    return [[first.id, first.generation, after.shard_by_id(first.id).to_dict()],
            [new_id, 0, after.shard_by_id(new_id).to_dict()]]


def move_change(smap: ShardMap) -> list:
    """The change moving shard 0's first replica to another node."""
    first = smap.shards[0]
    spare = next(n for n in sorted({r for s in smap.shards[:50] for r in s.replicas}) if n not in first.replicas)
    # one record rewritten; its generation must grow for the compare-and-set to take it
    moved = dataclasses.replace(first, replicas=(spare, *first.replicas[1:]), generation=first.generation + 1)
    return [[first.id, first.generation, moved.to_dict()]]


def change_bytes(smap: ShardMap) -> dict:
    """msgpack bytes of one split's and one move's change."""
    return {"shards": len(smap.shards), "split_bytes": len(codec.pack(split_change(smap))),
            "move_bytes": len(codec.pack(move_change(smap))), "new_id_chars": len(shard_name(len(smap.shards)))}


def lookup_us(smap: ShardMap, samples: int = 200_000, seed: int = 1) -> float:
    """Microseconds per ``shard_for_key`` of a random key."""
    rnd = random.Random(seed)
    keys = [rnd.getrandbits(64) for _ in range(samples)]
    find = smap.shard_for_key
    t0 = time.perf_counter()
    for k in keys:
        find(k)
    return (time.perf_counter() - t0) / samples * 1e6


def plan_seconds(shards: list[Shard], nodes: dict[str, str], dead: str) -> dict:
    """One plan on a balanced placement, and one with ``dead`` just declared dead."""
    t0 = time.perf_counter()
    idle = plan_moves(shards, nodes)
    t1 = time.perf_counter()
    repair = plan_moves(shards, {**nodes, dead: DEAD})
    t2 = time.perf_counter()
    return {"idle_seconds": round(t1 - t0, 3), "idle_moves": len(idle),
            "dead_seconds": round(t2 - t1, 3), "dead_moves": len(repair)}


def _print(bench: str, fields: dict) -> None:
    print(json.dumps({"bench": bench, **fields}), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--nodes", type=int, default=1000)
    ap.add_argument("--shards", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--per-node", type=int, default=2, help="the planner's max_per_node")
    args = ap.parse_args()
    rnd = random.Random(args.seed)
    names = node_names(args.nodes)
    nodes = dict.fromkeys(names, UP)
    size = {"nodes": args.nodes, "shards": args.shards, "factor": FACTOR}

    t0 = time.perf_counter()
    smap = hrw_map(names, args.shards)
    _print("sim_hrw", {**size, "seconds": round(time.perf_counter() - t0, 1)})
    shards, fields = initial(smap, nodes, args.per_node)
    _print("sim_initial", {**size, **fields})

    _print("sim_plan", {**size, **plan_seconds(shards, nodes, rnd.choice(names))})

    shards, nodes, fields = join(shards, nodes, f"n{args.nodes:04d}", args.per_node)
    _print("sim_join", {**size, **fields})
    drained, dead = rnd.sample(names, 2)
    shards, nodes, fields = leave(shards, nodes, drained, DECOMMISSIONING, args.per_node)
    _print("sim_leave", {**size, "node": drained, **fields})
    shards, nodes, fields = leave(shards, nodes, dead, DEAD, args.per_node)
    _print("sim_die", {**size, "node": dead, **fields})

    small = hrw_map(names, max(2, args.shards // 100))
    for m in (small, ShardMap(smap.epoch, tuple(shards))):
        _print("sim_change_bytes", change_bytes(m))
    _print("sim_lookup", {"shards": args.shards, "us_per_lookup": round(lookup_us(smap), 2)})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""PNG charts from the benchmarks' JSON lines.

    pip install -e '.[bench]'
    python bench/compare_etcd.py > run1.jsonl   # three times: ratios are medians over runs
    python bench/failover.py > failover.jsonl
    python bench/limits.py > limits.jsonl
    python bench/report.py --out docs/img run1.jsonl run2.jsonl run3.jsonl failover.jsonl limits.jsonl

Every input line is read and sorted by its ``bench`` field, whichever file it is in; lines that are
not JSON objects are ignored.  Charts, each skipped with a word on stderr when its lines are missing:

``etcd_ratio.png``
    raftkv / etcd per workload (``compare_etcd.py``'s ``ratio``): the median over all the runs
    given, with the lowest and highest as a bar, parity at 1, and the goal of issue 9 as a tick
    (:data:`GOALS`); green bars meet their goal, orange ones are ahead of etcd only, red ones behind.
``latency_inflight.png``
    put latency (p50, p90, p99, ms) against requests in flight, both systems
    (``compare_etcd.py``'s ``"bench": "latency"`` lines, median per point over runs).
``failover_throughput.png``
    acknowledged writes per second, in 0.1 s bins, around a kill -9 of a shard leader, one line per
    round (``failover.py``'s ``failover_series``), with the median longest stall (``failover``).
``limits.png``
    each raftkv figure as a percentage of the machine's limit for it (``limits.py``).  A raftkv
    figure is ``compare_etcd.py``'s ``raftkv`` value, or ``quick.py``'s, the median of all found;
    a limit is the median of its ``limits.py`` values.  The rows (:data:`LIMITS`):

    * bulk load keys/s vs ``leveldb_sync_batch_keys`` / 3: three replicas on one machine write,
      and fsync, every key three times with the same cores and disk;
    * scan keys/s vs ``leveldb_iterate_keys``: the nodes read every row from LevelDB;
    * scan keys/s vs ``msgpack_unpack_rows``: the one client process decodes every row;
    * 1 MiB puts, MiB/s, vs ``tcp_loopback_throughput`` / 3 (in MiB/s): each value crosses
      loopback three times, client to leader and leader to two followers;
    * put with 1 in flight, ops/s, vs 1 / (``fdatasync_p50`` + 2 / ``tcp_loopback_roundtrips``):
      a write waits for at least one fsync and two round trips (client-leader, leader-follower).

    Gets at 64 in flight have no row: pipelined requests are bounded by no single figure measured.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any

# Issue 9's goals, raftkv / etcd, for the ratio chart's ticks.
GOALS = {
    "put, 1 in flight": 1.3,
    "put, 64 in flight": 2.5,
    "linearizable get, 64 in flight": 3.5,
    "serializable get, 64 in flight": 5.0,
    "bulk load": 6.0,
    "scan": 3.5,
    "scan vs etcd unpaged": 2.0,
    "1 MiB puts": 2.5,
    "leader-kill stall (etcd / raftkv)": 1 / 0.8,  # issue 9: raftkv's stall at most 0.8 x etcd's
}


def load(paths: Iterable[str]) -> list[dict[str, Any]]:
    """Every JSON object with a ``bench`` field in the files; unreadable files are reported and skipped."""
    records = []
    for path in paths:
        try:
            with open(path, encoding="utf-8") as f:
                lines = f.read().splitlines()
        except OSError as exc:
            print(f"report: cannot read {path}: {exc}", file=sys.stderr)
            continue
        for text in lines:
            try:
                rec = json.loads(text)
            except ValueError:
                continue  # benchmarks' stdout may carry a stray log line
            if isinstance(rec, dict) and "bench" in rec:
                records.append(rec)
    return records


def _is_comparison(rec: dict[str, Any]) -> bool:
    return "ratio" in rec and "etcd" in rec and "raftkv" in rec


def workload(rec: dict[str, Any]) -> str:
    """The chart label of a workload line (compare_etcd.py's or quick.py's)."""
    bench = rec["bench"]
    if bench == "put":
        return f"put, {rec.get('inflight')} in flight"
    if bench == "get":
        return f"{rec.get('consistency', 'linearizable')} get, {rec.get('inflight')} in flight"
    if rec.get("better") == "lower":
        return "leader-kill stall (etcd / raftkv)" if bench == "failover" else f"{bench} (etcd / raftkv)"
    return {"bulk_load": "bulk load", "put_1MiB": "1 MiB puts", "scan_unpaged": "scan vs etcd unpaged"}.get(bench, bench)


@dataclasses.dataclass(frozen=True)
class Ratio:
    """One workload's raftkv / etcd ratio over the runs given."""

    workload: str
    median: float
    low: float
    high: float
    runs: int


def ratios(records: list[dict[str, Any]]) -> list[Ratio]:
    """The ratio of each workload, in the order the workloads first appear."""
    by: dict[str, list[float]] = defaultdict(list)
    for rec in records:
        if _is_comparison(rec) and isinstance(rec["ratio"], int | float) and rec["ratio"] > 0:
            # a lower-is-better figure (a stall) is drawn inverted, so that every bar reads the same way
            ratio = float(rec["ratio"])
            by[workload(rec)].append(1 / ratio if rec.get("better") == "lower" else ratio)
    return [Ratio(w, statistics.median(v), min(v), max(v), len(v)) for w, v in by.items()]


def latencies(records: list[dict[str, Any]], op: str = "put") -> dict[str, dict[str, list[tuple[int, float]]]]:
    """``{system: {percentile: [(inflight, ms), ...]}}`` of ``op``'s latency lines, median per point."""
    points: dict[tuple[str, str, int], list[float]] = defaultdict(list)
    for rec in records:
        if rec["bench"] != "latency" or rec.get("op") != op or not isinstance(rec.get("inflight"), int):
            continue
        for system in ("raftkv", "etcd"):
            for p, ms in (rec.get(system) or {}).items():
                points[(system, p, int(rec["inflight"]))].append(float(ms))
    out: dict[str, dict[str, list[tuple[int, float]]]] = defaultdict(lambda: defaultdict(list))
    for (system, p, inflight), values in sorted(points.items()):
        out[system][p].append((inflight, statistics.median(values)))
    return {s: dict(ps) for s, ps in out.items()}


def failover_series(records: list[dict[str, Any]]) -> list[tuple[str, list[float], list[float]]]:
    """``(label, seconds from the kill, writes/s)`` of each round's series."""
    out = []
    found = [r for r in records if r["bench"] == "failover_series" and r.get("bin_s") and "start_s" in r]
    for i, rec in enumerate(found):
        bin_s, start = float(rec["bin_s"]), float(rec["start_s"])
        xs = [start + (j + 0.5) * bin_s for j in range(len(rec["writes"]))]
        ys = [n / bin_s for n in rec["writes"]]
        out.append((f"{rec.get('system', 'raftkv')} #{i + 1} (round {rec.get('round')})", xs, ys))
    return out


def limit_values(records: list[dict[str, Any]]) -> dict[str, float]:
    """The median of each ``limits.py`` figure over the runs given."""
    by: dict[str, list[float]] = defaultdict(list)
    for rec in records:
        if rec["bench"] == "limits" and isinstance(rec.get("value"), int | float):
            by[rec["what"]].append(float(rec["value"]))
    return {what: statistics.median(v) for what, v in by.items()}


def raftkv_figures(records: list[dict[str, Any]]) -> dict[str, float]:
    """raftkv's figure per workload label: compare_etcd.py's ``raftkv`` or quick.py's own field."""
    own = {"put": "ops_per_s", "get": "ops_per_s", "bulk_load": "keys_per_s", "scan": "keys_per_s",
           "put_1MiB": "mb_per_s"}
    by: dict[str, list[float]] = defaultdict(list)
    for rec in records:
        if _is_comparison(rec):
            value = rec["raftkv"]
        elif rec["bench"] in own:
            value = rec.get(own[rec["bench"]])
        else:
            continue
        if isinstance(value, int | float):
            by[workload(rec)].append(float(value))
    return {w: statistics.median(v) for w, v in by.items()}


def _need(limits: dict[str, float], *whats: str) -> bool:
    return all(limits.get(w) for w in whats)


@dataclasses.dataclass(frozen=True)
class Limit:
    """How one raftkv figure is bounded by this machine: a label, the workload, its unit, the limit."""

    label: str
    workload: str
    unit: str
    limit: Callable[[dict[str, float]], float | None]


MIB_PER_MB = 1e6 / (1 << 20)  # limits.py counts 10^6 bytes; compare_etcd.py counts 1 MiB values
LIMITS = [
    Limit("bulk load vs fsync'd LevelDB batches / 3 replicas", "bulk load", "keys/s",
          lambda m: m["leveldb_sync_batch_keys"] / 3 if _need(m, "leveldb_sync_batch_keys") else None),
    Limit("scan vs raw LevelDB iteration", "scan", "keys/s",
          lambda m: m["leveldb_iterate_keys"] if _need(m, "leveldb_iterate_keys") else None),
    Limit("scan vs msgpack decoding of rows (one client)", "scan", "keys/s",
          lambda m: m["msgpack_unpack_rows"] if _need(m, "msgpack_unpack_rows") else None),
    Limit("1 MiB puts vs loopback TCP / 3 transfers", "1 MiB puts", "MiB/s",
          lambda m: m["tcp_loopback_throughput"] * MIB_PER_MB / 3 if _need(m, "tcp_loopback_throughput") else None),
    Limit("put, 1 in flight vs 1 / (fdatasync p50 + 2 round trips)", "put, 1 in flight", "ops/s",
          lambda m: 1 / (m["fdatasync_p50"] * 1e-6 + 2 / m["tcp_loopback_roundtrips"])
          if _need(m, "fdatasync_p50", "tcp_loopback_roundtrips") else None),
]


@dataclasses.dataclass(frozen=True)
class LimitRow:
    """A raftkv figure beside its limit."""

    label: str
    unit: str
    figure: float
    limit: float

    @property
    def percent(self) -> float:
        """The figure as a percentage of the limit."""
        return 100 * self.figure / self.limit


def limit_rows(records: list[dict[str, Any]]) -> list[LimitRow]:
    """The rows of :data:`LIMITS` for which both the raftkv figure and the limit were measured."""
    limits, figures = limit_values(records), raftkv_figures(records)
    rows = []
    for spec in LIMITS:
        bound = spec.limit(limits)
        if bound and spec.workload in figures:
            rows.append(LimitRow(spec.label, spec.unit, figures[spec.workload], bound))
    return rows


def _human(x: float) -> str:
    for div, suffix in ((1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{suffix}"
    return f"{x:.3g}"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")  # files only: no display on these machines, nor in CI
    import matplotlib.pyplot as plt

    return plt


def draw_ratios(plt: Any, rows: list[Ratio], path: str) -> None:
    """Bar chart of raftkv / etcd per workload."""
    fig, ax = plt.subplots(figsize=(9, 4.8))
    xs = range(len(rows))
    med = [r.median for r in rows]
    err = [[r.median - r.low for r in rows], [r.high - r.median for r in rows]]
    # Green: goal met; orange: ahead of etcd but short of the goal; red: behind etcd.
    colors = ["C3" if r.median < 1 else "C2" if r.median >= GOALS.get(r.workload, 1) else "C1" for r in rows]
    ax.bar(xs, med, color=colors, yerr=err, capsize=4)
    goals = [(i, GOALS[r.workload]) for i, r in enumerate(rows) if r.workload in GOALS]
    if goals:
        ax.scatter([g[0] for g in goals], [g[1] for g in goals], marker="_", s=600, color="k", zorder=3,
                   label="goal (issue 9)")
        ax.legend(loc="upper left")
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    for i, r in enumerate(rows):
        ax.annotate(f"{r.median:.2f}", (i, r.high), textcoords="offset points", xytext=(0, 4), ha="center",
                    fontsize=8)
    ax.set_xticks(list(xs), [r.workload for r in rows], rotation=25, ha="right")
    ax.set_ylabel("raftkv / etcd (higher is better)")
    runs = sorted({r.runs for r in rows})
    ax.set_title(f"raftkv vs etcd 3.4, same run; median of {'/'.join(map(str, runs))} run(s)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_latencies(plt: Any, data: dict[str, dict[str, list[tuple[int, float]]]], path: str) -> None:
    """Put latency percentiles against requests in flight, one colour per system."""
    fig, ax = plt.subplots(figsize=(8, 4.8))
    styles = {"p50": "-o", "p90": ":^", "p99": "--s"}
    for color, system in zip(("C0", "C1"), ("raftkv", "etcd"), strict=True):
        for p, pts in sorted((data.get(system) or {}).items()):
            ax.plot([x for x, _ in pts], [y for _, y in pts], styles.get(p, "-"), color=color,
                    label=f"{system} {p}")
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    inflights = sorted({x for ps in data.values() for pts in ps.values() for x, _ in pts})
    ax.set_xticks(inflights, [str(x) for x in inflights])
    from matplotlib.ticker import FormatStrFormatter  # matplotlib is optional: imported only to draw

    ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))  # "2", not "2 x 10^0"
    ax.yaxis.set_minor_formatter(FormatStrFormatter("%g"))
    ax.set_xlabel("puts in flight")
    ax.set_ylabel("latency, ms")
    ax.set_title("put latency vs requests in flight (3 replicas, 100 B values)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(ncol=2, fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_failover(plt: Any, series: list[tuple[str, list[float], list[float]]], stalls: list[float],
                  path: str) -> None:
    """Writes per second around the kill of a shard leader, one line per round."""
    fig, ax = plt.subplots(figsize=(9, 4.5))
    for label, xs, ys in series:
        ax.plot(xs, ys, linewidth=1.2, label=label)
    ax.axvline(0.0, color="k", linestyle="--", linewidth=1, label="kill -9 of the leader")
    ax.set_xlabel("seconds from the kill")
    ax.set_ylabel("acknowledged writes/s (0.1 s bins)")
    title = "writes to one shard while its leader is killed"
    if stalls:
        title += f"; longest stall, median: {statistics.median(stalls):.2f} s over {len(stalls)} round(s)"
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_limits(plt: Any, rows: list[LimitRow], path: str) -> None:
    """Each raftkv figure as a percentage of its limit."""
    fig, ax = plt.subplots(figsize=(9, 0.7 * len(rows) + 1.6))
    ys = range(len(rows))
    pcts = [r.percent for r in rows]
    ax.barh(list(ys), pcts, color=["C2" if p >= 60 else "C1" for p in pcts])
    for y, r in zip(ys, rows, strict=True):
        ax.annotate(f"{_human(r.figure)} of {_human(r.limit)} {r.unit} ({r.percent:.0f} %)", (r.percent, y),
                    textcoords="offset points", xytext=(4, -3), fontsize=8)
    ax.axvline(60, color="grey", linestyle=":", linewidth=1, label="60 % (issue 9's aim)")
    ax.axvline(100, color="k", linestyle="--", linewidth=1, label="the machine's limit")
    ax.set_yticks(list(ys), [r.label for r in rows], fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, max(130.0, max(pcts) * 1.35))
    ax.set_xlabel("% of what this machine allows (bench/limits.py, same machine)")
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Write every chart whose lines are present; report the others as skipped on stderr."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="docs/img", help="directory for the PNG files")
    ap.add_argument("results", nargs="+", help="JSON-lines files from the bench/ scripts")
    args = ap.parse_args(argv)
    try:
        plt = _pyplot()
    except ImportError:
        print("report: matplotlib is not installed: pip install -e '.[bench]'", file=sys.stderr)
        return 2
    records = load(args.results)
    os.makedirs(args.out, exist_ok=True)
    stalls = [float(r["longest_stall_s"]) for r in records
              if r["bench"] == "failover" and isinstance(r.get("longest_stall_s"), int | float)]
    charts: list[tuple[str, Any, Callable[[Any, str], None], str]] = [
        ("etcd_ratio.png", ratios(records), lambda rows, p: draw_ratios(plt, rows, p),
         "no compare_etcd.py workload lines"),
        ("latency_inflight.png", latencies(records), lambda data, p: draw_latencies(plt, data, p),
         "no 'latency' lines from compare_etcd.py"),
        ("failover_throughput.png", failover_series(records), lambda s, p: draw_failover(plt, s, stalls, p),
         "no 'failover_series' lines from failover.py"),
        ("limits.png", limit_rows(records), lambda rows, p: draw_limits(plt, rows, p),
         "no raftkv figure together with its limits.py figures"),
    ]
    for name, data, draw, missing in charts:
        if not data:
            print(f"report: {missing}: {name} skipped", file=sys.stderr)
            continue
        path = os.path.join(args.out, name)
        draw(data, path)
        print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""``bench/limits.py`` and ``bench/report.py`` run as a user runs them, on small inputs.

The report's inputs are written by the benchmarks' own line-building code (``compare_etcd.py``'s
``comparison``/``latency`` printed through ``quick.emit``, ``failover.py``'s ``summary``/``series``,
``limits.py``'s ``line``), so a change of format on either side breaks these tests.
"""

from __future__ import annotations

import importlib.util
import json
import os
import pathlib
import subprocess
import sys

import pytest

pytestmark = pytest.mark.timeout(120)

BENCH = pathlib.Path(__file__).resolve().parents[2] / "bench"
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CHARTS = ("etcd_ratio.png", "latency_inflight.png", "failover_throughput.png", "limits.png")


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[f"bench_{name}"] = module
    spec.loader.exec_module(module)
    return module


limits = _load("limits")
compare = _load("compare_etcd")
failover = _load("failover")
report = _load("report")
quick = sys.modules["quick"]  # compare_etcd.py's emit comes from it

LIMITS = {  # what limits.py measures, with plausible values and units for this machine
    "leveldb_sync_batch_keys": (600_000, "keys/s"),
    "leveldb_sync_batches": (600.0, "batches/s"),
    "leveldb_iterate_keys": (2_000_000, "keys/s"),
    "msgpack_pack_rows": (10_000_000, "rows/s"),
    "msgpack_unpack_rows": (5_000_000, "rows/s"),
    "tcp_loopback_throughput": (3000.0, "MB/s"),
    "tcp_loopback_roundtrips": (40_000, "round trips/s"),
    "fdatasync_p50": (300.0, "us"),
    "fdatasync_p99": (900.0, "us"),
    "fdatasync_mean": (350.0, "us"),
}


def _run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, timeout=90, env=env)


def _limits(tmp_path: pathlib.Path, *args: str) -> dict[str, float]:
    """Run limits.py in a TMPDIR of its own; its figures by name, each line checked, and no file left."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    proc = _run(str(BENCH / "limits.py"), "--quick", *args, env={**os.environ, "TMPDIR": str(tmp)})
    assert proc.returncode == 0, proc.stderr
    records = [json.loads(text) for text in proc.stdout.splitlines()]
    for r in records:
        assert r["bench"] == "limits"
        assert isinstance(r["unit"], str) and r["unit"]
        assert isinstance(r["value"], int | float) and not isinstance(r["value"], bool) and r["value"] > 0, r
    assert list(tmp.iterdir()) == []
    return {r["what"]: r["value"] for r in records}


def test_limits_quick_prints_positive_figures_and_leaves_no_files(tmp_path):
    by = _limits(tmp_path, "--only", "msgpack,fdatasync")
    assert set(by) == {"msgpack_pack_rows", "msgpack_unpack_rows", "fdatasync_p50", "fdatasync_p99",
                       "fdatasync_mean"}
    assert by["fdatasync_p50"] <= by["fdatasync_p99"]


def test_limits_leveldb_and_loopback_groups_run(tmp_path):
    by = _limits(tmp_path, "--only", "leveldb_batch,leveldb_iterate,tcp", "--iter-keys", "5000")
    assert set(by) == {"leveldb_sync_batch_keys", "leveldb_sync_batches", "leveldb_iterate_keys",
                       "tcp_loopback_throughput", "tcp_loopback_roundtrips"}
    assert by["leveldb_sync_batch_keys"] == pytest.approx(1000 * by["leveldb_sync_batches"], rel=0.01)


def test_limits_refuses_an_unknown_group():
    proc = _run(str(BENCH / "limits.py"), "--quick", "--only", "msgpack,nonsense")
    assert proc.returncode != 0
    assert "nonsense" in proc.stderr and proc.stdout == ""


def test_limits_percentile_is_nearest_rank():
    samples = [float(x) for x in range(1, 101)]
    assert limits.percentile(samples, 50) == 50.0
    assert limits.percentile(samples, 99) == 99.0
    assert limits.percentile([7.0], 99) == 7.0


def test_failover_series_counts_writes_per_bin_around_the_kill():
    acks = [98.05, 99.95, 99.99, 100.0, 100.05, 104.99, 105.0, 90.0]
    line = failover.series(0, acks, t_kill=100.0)
    assert line["bench"] == "failover_series" and line["bin_s"] == 0.1 and line["start_s"] == -2.0
    writes = line["writes"]
    assert len(writes) == 70 and sum(writes) == 6  # 90.0 and 105.0 fall outside [98, 105)
    assert writes[0] == 1 and writes[19] == 2 and writes[20] == 2 and writes[69] == 1


def _write_inputs(directory: pathlib.Path, capsys) -> list[str]:
    """Three compare_etcd.py runs, two failover rounds and one limits.py run, in their printed format."""
    for run in range(3):
        scale = 1 + run / 10
        for inflight, ops in ((1, 1300), (64, 9000)):
            rl = [0.001 * inflight ** 0.5 * (1 + i / 100) for i in range(100)]
            el = [x * 1.4 for x in rl]
            quick.emit(**compare.comparison("put", "ops/s", ops * scale, 1000.0, inflight=inflight,
                                            p50_ms={"raftkv": quick.pct(rl, 50), "etcd": quick.pct(el, 50)},
                                            p99_ms={"raftkv": quick.pct(rl, 99), "etcd": quick.pct(el, 99)}))
            quick.emit(**compare.latency("put", inflight, rl, el))
        for level, ops in (("linearizable", 20000), ("serializable", 40000)):
            quick.emit(**compare.comparison("get", "ops/s", ops * scale, 9000.0, inflight=64, consistency=level,
                                            p50_ms={"raftkv": 2.0, "etcd": 5.0}))
            quick.emit(**compare.latency("get", 64, [0.002] * 10, [0.005] * 10, consistency=level))
        quick.emit(**compare.comparison("bulk_load", "keys/s", 126_000 * scale, 33_000.0, keys=1_000_000))
        quick.emit(**compare.comparison("scan", "keys/s", 900_000 * scale, 330_000.0, keys=[1_000_000] * 2))
        quick.emit(**compare.comparison("scan_unpaged", "keys/s", 900_000 * scale, 450_000.0, keys=[1_000_000] * 2))
        quick.emit(**compare.comparison("put_1MiB", "MB/s", 160 * scale, 97.0, inflight=4))
        for inflight in (4, 16, 128):
            rl = [0.001 * inflight ** 0.5] * 50
            quick.emit(**compare.latency("put", inflight, rl, [x * 1.5 for x in rl]))
        (directory / f"compare{run}.jsonl").write_text(capsys.readouterr().out)

    lines = []
    for n in range(2):
        t_kill = 50.0
        acks = [t_kill - 2 + i / 1000 for i in range(2000)] + [t_kill + 1.2 + i / 1000 for i in range(3800)]
        lines.append(json.dumps(failover.summary(n, f"n{n + 1}", acks, t_kill)))
        lines.append(json.dumps(failover.series(n, acks, t_kill)))
    (directory / "failover.jsonl").write_text("\n".join(lines) + "\n")

    (directory / "limits.jsonl").write_text(
        "".join(json.dumps(limits.line(what, value, unit)) + "\n" for what, (value, unit) in LIMITS.items()))
    return sorted(str(p) for p in directory.glob("*.jsonl"))


def test_report_maps_each_figure_to_its_limit(tmp_path, capsys):
    inputs = _write_inputs(tmp_path, capsys)
    records = report.load(inputs)
    rows = {r.label: r for r in report.limit_rows(records)}
    assert len(rows) == len(report.LIMITS)
    bulk = next(r for label, r in rows.items() if label.startswith("bulk load"))
    assert bulk.figure == pytest.approx(126_000 * 1.1) and bulk.limit == pytest.approx(200_000)
    scans = sorted(r.limit for label, r in rows.items() if label.startswith("scan"))
    assert scans == [2_000_000, 5_000_000]
    put1 = next(r for label, r in rows.items() if label.startswith("put, 1 in flight"))
    assert put1.limit == pytest.approx(1 / (300e-6 + 2 / 40_000))
    ratio = {r.workload: r for r in report.ratios(records)}
    assert ratio["scan vs etcd unpaged"].median == pytest.approx(round(900_000 * 1.1) / 450_000, abs=0.01)
    assert "scan vs etcd unpaged" in report.GOALS
    assert ratio["bulk load"].runs == 3 and ratio["bulk load"].median == pytest.approx(round(126_000 * 1.1) / 33_000,
                                                                                        abs=0.01)
    lat = report.latencies(records)
    assert [x for x, _ in lat["raftkv"]["p50"]] == [1, 4, 16, 64, 128]


def test_report_draws_every_chart(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    inputs = _write_inputs(tmp_path, capsys)
    out = tmp_path / "img"
    proc = _run(str(BENCH / "report.py"), "--out", str(out), *inputs)
    assert proc.returncode == 0, proc.stderr
    assert "skipped" not in proc.stderr
    for name in CHARTS:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE) and len(data) > 5000, name
        assert str(out / name) in proc.stdout.splitlines()


def test_report_skips_the_charts_whose_inputs_are_missing(tmp_path):
    pytest.importorskip("matplotlib")
    junk = tmp_path / "junk.jsonl"
    junk.write_text("not json\n[1, 2]\n" + json.dumps(limits.line("fdatasync_p50", 300.0, "us")) + "\n")
    out = tmp_path / "img"
    proc = _run(str(BENCH / "report.py"), "--out", str(out), str(junk), str(tmp_path / "absent.jsonl"))
    assert proc.returncode == 0, proc.stderr
    assert "absent.jsonl" in proc.stderr
    assert proc.stderr.count("skipped") == len(CHARTS)
    assert list(out.iterdir()) == []


def test_failover_count_changes_counts_returns_and_term_steps():
    samples = [
        (0.0, {"s1": ("n1", 3), "s2": ("n2", 5)}),
        (1.0, {"s1": (None, 4), "s2": ("n2", 5)}),  # s1 mid-election
        (2.0, {"s1": ("n1", 4), "s2": ("n3", 7), "s3": ("n1", 1)}),  # s1 came back to n1; s3 is new
        (3.0, {"s1": ("n1", 4), "s2": ("n2", 8), "s3": ("n1", 1)}),  # s2 went back to n2
    ]
    c = failover.count_changes(samples)
    assert (c.leader_changes, c.term_changes, c.groups, c.new_groups) == (2, 1 + 2 + 1, 3, 1)
    assert [(e["at_s"], e["group"], e.get("leader"), e.get("term")) for e in c.events] == [
        (1.0, "s1", None, [3, 4]), (2.0, "s2", ["n2", "n3"], [5, 7]), (3.0, "s2", ["n3", "n2"], [7, 8])]
    assert failover.count_changes([]).groups == 0


def test_failover_longest_gap_and_the_comparison_line():
    assert failover.longest_gap([3.0, 1.0, 1.5, 2.0]) == (1.0, 3.0)
    assert failover.longest_gap([1.0]) == (0.0, 0.0)
    rk = [failover.Round("n1", [9.0, 9.5, 10.2, 10.3], 10.0, 0), failover.Round("n2", [9.0, 10.6], 10.0, 1)]
    et = [failover.Round("e0", [9.0, 11.0], 10.0, 3), failover.Round("e1", [9.9, 11.4], 10.0, 5)]
    line = compare.failover_comparison(rk, et)
    assert line["bench"] == "failover" and line["better"] == "lower" and line["unit"] == "s"
    assert line["stalls"] == {"raftkv": [0.7, 1.6], "etcd": [2.0, 1.5]} and line["rounds"] == 2
    assert line["raftkv"] == pytest.approx(1.15) and line["etcd"] == pytest.approx(1.75)
    assert line["ratio"] == pytest.approx(0.66)
    assert line["failed_attempts"] == {"raftkv": [0, 1], "etcd": [3, 5]}


def test_compare_only_names_known_workloads_with_their_prerequisites():
    assert compare.workloads("") == list(compare.WORKLOADS)
    assert compare.workloads("failover") == ["failover"]
    assert compare.workloads("scan,bulk_load") == ["bulk_load", "scan"]
    with pytest.raises(ValueError, match="needs put"):
        compare.workloads("get")
    with pytest.raises(ValueError, match="nonsense"):
        compare.workloads("put,nonsense")


def test_failover_ride_through_measures_the_gap_around_the_kill():
    import asyncio

    killed_at: list[float] = []

    async def put(w: int) -> None:
        import time

        if killed_at and time.monotonic() < killed_at[0] + 0.3:
            raise ConnectionError("leader gone")  # counted as a failed attempt, not an ack
        await asyncio.sleep(0.01)

    async def find() -> str:
        return "n9"

    def kill(victim: str) -> None:
        import time

        assert victim == "n9"
        killed_at.append(time.monotonic())

    r = asyncio.run(failover.ride_through(put, find, kill, writers=2, before=0.2, after=0.5))
    assert r.victim == "n9" and r.failed > 0
    assert 0.25 < r.stall() < 0.5 and 0.25 < r.resumed_after_kill() < 0.5
    # only puts already under way at the kill (10 ms each) finish before the stall
    assert not [t for t in r.acks if r.t_kill + 0.05 < t < r.t_kill + 0.29]


def test_failover_steady_tells_handoffs_from_elections(tmp_path):
    samples = [(0.0, {"s1": ("n1", 1), "s4": (None, 0)}),
               (1.0, {"s1": ("n2", 2), "s4": ("n2", 1)}),  # s4's first leader is its birth
               (2.0, {"s1": ("n3", 3), "s4": ("n2", 1)})]
    c = failover.count_changes(samples)
    assert (c.leader_changes, c.term_changes, c.new_groups) == (2, 2, 0)

    class Node:
        def __init__(self, id: str) -> None:
            self.id = id

    class Info:
        nodes = [Node("n1"), Node("n2")]

        def node_dir(self, node_id: str) -> str:
            return str(tmp_path / node_id)

    for n in ("n1", "n2"):
        (tmp_path / n).mkdir()
    (tmp_path / "n1" / "node.log").write_bytes(b"2026-01-01 INFO x: handing leadership of s0 to n3 (balancing)\n")
    sizes = failover._log_sizes(Info())
    with open(tmp_path / "n1" / "node.log", "ab") as f:
        f.write(b"2026-01-01 INFO raftkv.server.node: handing leadership of s1 to n2 (balancing)\n")
    assert failover.handoffs_since(Info(), sizes) == [("s1", "n2")]  # n2 has no log: skipped
    assert failover.unplanned(c.events, [("s1", "n2")]) == 1  # n2 -> n3 was an election


def test_report_draws_a_lower_is_better_row_inverted():
    rk = [failover.Round("n1", [9.0, 10.4], 10.0, 0)]
    et = [failover.Round("e0", [9.0, 11.0], 10.0, 0)]
    rows = report.ratios([compare.failover_comparison(rk, et)])
    assert [r.workload for r in rows] == ["leader-kill stall (etcd / raftkv)"]
    assert rows[0].median == pytest.approx(2.0 / 1.4, rel=0.02)  # etcd's stall over ours: higher is better
    assert report.GOALS[rows[0].workload] == pytest.approx(1.25)

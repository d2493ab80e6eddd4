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

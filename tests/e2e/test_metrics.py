"""Operations, on real node processes: the Prometheus endpoint moves with traffic, and JSON logs
carry events with their shard."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from raftkv import Client
from raftkv.client import rpc
from raftkv.cluster import launcher
from raftkv.errors import InvalidKey

from ..helpers import signal_ours, wait_until

pytestmark = pytest.mark.timeout(120)


def scrape(address: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a node's /metrics: (name, sorted labels) -> value."""
    with urllib.request.urlopen(f"http://{address}/metrics", timeout=10) as r:
        text = r.read().decode()
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def total(samples: dict, name: str, **labels: str) -> float:
    """The sum of ``name`` over the samples whose labels include ``labels``."""
    want = set(labels.items())
    return sum(v for (n, lab), v in samples.items() if n == name and want <= set(lab))


def test_metrics_of_a_live_cluster_move_with_traffic(make_cluster):
    cluster = make_cluster(nodes=3, shards=4)
    st = launcher.status(cluster.root)
    addresses = [n["metrics"] for n in st["nodes"]]
    assert all(isinstance(a, str) and a.startswith("127.0.0.1:") for a in addresses), st["nodes"]
    before = [scrape(a) for a in addresses]
    with Client(cluster.seeds) as db:
        db.put_many([(1000 + k * 2**62 // 50, b"v") for k in range(200)])  # every shard
        for k in range(100):
            db.put(k, b"x" * 100)
        assert db.get(5) == b"x" * 100
        assert len(db.range_query(0, 2**64 - 1)) == 300
    # a request the node refuses: counted as an error of its operation, with its code
    with pytest.raises(InvalidKey):
        rpc.call(cluster.seeds.split(",")[0], "get", timeout=5, shard="s0000", key=-1)
    after = [scrape(a) for a in addresses]

    def applied_everywhere() -> bool:
        # followers apply once the leader's next message tells them the commit index: wait for it
        nonlocal after
        after = [scrape(a) for a in addresses]
        return all(total(a, "raftkv_raft_applied_index", group=shard) > total(b, "raftkv_raft_applied_index",
                                                                              group=shard)
                   for b, a in zip(before, after, strict=True) for shard in ("s0000", "s0001", "s0002", "s0003"))

    wait_until(applied_everywhere, 30, "every replica to apply the writes of its shard")

    def grew(name: str, **labels: str) -> float:
        return sum(total(a, name, **labels) - total(b, name, **labels) for a, b in zip(after, before, strict=True))

    assert grew("raftkv_requests_total", op="put") >= 100 + 4  # the puts, and put_many's per-shard batches
    assert grew("raftkv_request_duration_seconds_count", op="put") == grew("raftkv_requests_total", op="put")
    assert grew("raftkv_requests_total", op="get") >= 2
    assert grew("raftkv_requests_total", op="scan") >= 4  # one page per shard at least
    assert grew("raftkv_request_errors_total", op="get", code="invalid_key") == 1
    assert grew("raftkv_fsync_duration_seconds_count") > 0
    assert grew("raftkv_raft_loop_iterations_total") > 0
    # the leaders appended and applied the writes: their loops spent CPU ticking and replicating
    assert grew("raftkv_raft_loop_cpu_seconds_total", phase="tick") > 0
    assert grew("raftkv_raft_loop_cpu_seconds_total", phase="replicate") > 0
    for a in after:
        assert total(a, "raftkv_replicas") == 5  # four shards and the meta group
        assert total(a, "raftkv_leveldb_bytes") > 0 and total(a, "raftkv_peers_up") == 2
    # one leader per group across the nodes, and each saw a leader take over at least once
    for group in ("meta", "s0000", "s0001", "s0002", "s0003"):
        assert sum(total(a, "raftkv_raft_is_leader", group=group) for a in after) == 1
        assert all(total(a, "raftkv_raft_leader_changes_total", group=group) >= 1 for a in after)
    # the histogram's buckets add up: +Inf holds every observation
    a = after[0]
    assert total(a, "raftkv_request_duration_seconds_bucket", op="put", le="+Inf") == \
        total(a, "raftkv_request_duration_seconds_count", op="put")
    # made-up operations all count as "unknown": clients cannot grow the label set
    for made_up in ("nope", "x" * 50):
        with pytest.raises(Exception):  # noqa: B017 -- the node's UnknownOperation
            rpc.call(cluster.seeds.split(",")[0], made_up, timeout=5)
    ops = {dict(lab).get("op") for (n, lab) in scrape(addresses[0]) if n == "raftkv_requests_total"}
    assert "unknown" in ops and "nope" not in ops


def test_json_logs_carry_events_with_their_shard(tmp_path):
    """A one-node cluster with JSON logs: every line parses; leader changes and slow requests are
    events naming their shard."""
    cport, pport, mport = launcher.free_ports(3)
    log_path = tmp_path / "node.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "raftkv", "node", "--id", "n1", "--data-dir", str(tmp_path / "data"),
             "--nodes", f"n1=127.0.0.1:{cport}:{pport}", "--shards", "2", "--replication", "1",
             "--log-format", "json", "--slow-request-ms", "0.001", "--metrics-port", str(mport)],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        addr = f"127.0.0.1:{cport}"
        wait_until(lambda: rpc.call(addr, "map", timeout=1), 30, "the node to serve")
        with Client(addr) as db:
            db.put(7, b"seven")

        def events() -> list[dict[str, Any]]:
            lines = [ln for ln in log_path.read_text().splitlines() if ln.strip()]
            return [json.loads(ln) for ln in lines]  # every line is one JSON object

        found = wait_until(lambda: [e for e in events() if e.get("event") == "slow_request" and e["op"] == "put"],
                           30, "a slow put logged")
        # (the first put may meet a leader still starting: its outcome is then not_leader)
        assert found[0]["shard"] in ("s0000", "s0001") and found[0]["ms"] > 0 and found[0]["outcome"]
        # every group elects itself in its own time: a group nobody wrote to may come last
        leaders = wait_until(lambda: (lambda got: got if set(got) == {"meta", "s0000", "s0001"} else None)(
            {e["shard"]: e for e in events() if e.get("event") == "leader_change"}), 30, "every group's leader logged")
        assert all({"ts", "level", "logger", "msg"} <= set(e) for e in events())
        assert all(e["leader"] == "n1" and e["term"] >= 1 for e in leaders.values())
        assert scrape(f"127.0.0.1:{mport}")[("raftkv_replicas", ())] == 3
    finally:
        signal_ours([proc.pid], str(tmp_path))
        proc.wait(timeout=30)
    assert os.path.exists(log_path)


def test_scan_pages_are_read_ahead_and_taken(make_cluster):
    """A scan of many pages: after answering a page the leader reads the next one, and the client's
    next request takes it (the node's read-ahead counter); every row comes once, in order."""
    cluster = make_cluster(nodes=3, shards=1)
    with Client(cluster.seeds, page_keys=50) as db:
        db.put_many([(k, b"v%d" % k) for k in range(1000)])
        before = [scrape(n["metrics"]) for n in launcher.status(cluster.root)["nodes"]]
        assert db.range_query(0, 10**6) == [(k, b"v%d" % k) for k in range(1000)]
    after = [scrape(n["metrics"]) for n in launcher.status(cluster.root)["nodes"]]
    used = sum(total(a, "raftkv_scan_pages_read_ahead_total", outcome="used")
               - total(b, "raftkv_scan_pages_read_ahead_total", outcome="used") for a, b in zip(after, before, strict=True))
    assert used >= 15, used  # 20 pages; the first is read on request, and a leader change may cost a few

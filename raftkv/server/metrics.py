"""A node's Prometheus metrics (``--metrics-port``): what it serves, its Raft groups, its disk.

Nothing here is on the request path: requests and fsyncs are tallied by ``raftkv/stats.py``
where they happen, and :class:`NodeCollector` reads those tallies and the groups' state only
when Prometheus scrapes, on the HTTP server's own thread.  Every metric is listed, with what
it means, in docs/operations.md.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily
from prometheus_client.registry import Collector

from ..stats import Histogram

if TYPE_CHECKING:
    from .node import Node

# per-group series: 11 per replica; past this many replicas on one node only the node-wide
# metrics are kept, so that a node with thousands of split shards cannot swamp Prometheus
MAX_GROUP_SERIES = 2000


def _histogram(name: str, doc: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, doc, labels=labels)


def _add_histogram(family: HistogramMetricFamily, values: list[str], h: Histogram) -> None:
    family.add_metric(values, h.cumulative(), h.sum)


def directory_bytes(path: str) -> int:
    """Bytes of the files directly in ``path`` (a LevelDB directory has no subdirectories)."""
    total = 0
    try:
        with os.scandir(path) as entries:
            for e in entries:
                try:
                    if e.is_file(follow_symlinks=False):
                        total += e.stat(follow_symlinks=False).st_size
                except FileNotFoundError:  # compaction removed it meanwhile
                    continue
    except FileNotFoundError:
        return 0
    return total


class NodeCollector(Collector):
    """Builds every metric of one node at scrape time."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def collect(self) -> Iterator[Any]:
        """The metric families (prometheus_client's Collector protocol)."""
        node = self.node
        stats = node.stats
        requests = CounterMetricFamily("raftkv_requests", "Client requests answered, by operation", labels=["op"])
        latency = _histogram("raftkv_request_duration_seconds",
                             "Time from reading a client request to its reply being ready, by operation", ["op"])
        for op, n in list(stats.requests.items()):
            requests.add_metric([op], n)
            _add_histogram(latency, [op], stats.latency[op])
        yield requests
        yield latency
        errors = CounterMetricFamily("raftkv_request_errors", "Client requests answered with an error",
                                     labels=["op", "code"])
        for (op, code), n in sorted(stats.errors.items()):
            errors.add_metric([op, code], n)
        yield errors
        fsync = _histogram("raftkv_fsync_duration_seconds",
                           "Synced LevelDB writes of the Raft loop (one per iteration with new entries)", [])
        _add_histogram(fsync, [], node.registry.kv.fsync_seconds)
        yield fsync
        loop_cpu = CounterMetricFamily("raftkv_raft_loop_cpu_seconds",
                                       "CPU of the node's Raft loop thread, by phase of its iteration",
                                       labels=["phase"])
        for phase, seconds in list(node.loop.cpu_seconds.items()):
            loop_cpu.add_metric([phase], seconds)
        yield loop_cpu
        yield CounterMetricFamily("raftkv_raft_loop_iterations", "Iterations of the node's Raft loop",
                                  value=node.loop.iterations)
        yield GaugeMetricFamily("raftkv_leveldb_bytes", "Bytes of the node's LevelDB files on disk",
                                value=directory_bytes(node.registry.kv.path))
        clients = _snapshot(node._clients)
        yield GaugeMetricFamily("raftkv_client_connections", "Open client connections", value=len(clients))
        yield GaugeMetricFamily("raftkv_client_requests_in_progress",
                                "Client requests read and not yet answered, over every connection",
                                value=sum(c.inflight_count for c in clients))
        yield GaugeMetricFamily("raftkv_client_request_bytes_in_progress",
                                "Frame bytes of those requests (each connection holds at most max_request_bytes)",
                                value=sum(c.request_bytes for c in clients))
        yield GaugeMetricFamily("raftkv_open_cursors", "Scan cursors held for clients", value=len(node._cursors))
        yield GaugeMetricFamily("raftkv_shared_scan_snapshots", "Snapshots held for the chunks of spread scans",
                                value=node._cursors.shared)
        ahead = CounterMetricFamily("raftkv_scan_pages_read_ahead", "Scan pages read before they were asked for, "
                                    "by whether the next request took them", labels=["outcome"])
        for outcome, count in node._cursors.ahead_pages.items():
            ahead.add_metric([outcome], count)
        yield ahead
        chunks = CounterMetricFamily("raftkv_scan_chunks", "Chunks of spread scans begun on this node, by how: "
                                     "at the scan's index, refused (the replica wrote into the chunk since, or lags), "
                                     "or from the leader's snapshot", labels=["how"])
        for how, count in node.chunk_reads.items():
            chunks.add_metric([how], count)
        yield chunks
        yield GaugeMetricFamily("raftkv_peers_up", "Peer links up", value=len(node.loop.hub.up_peers()))
        groups = dict(node.loop.groups)
        yield GaugeMetricFamily("raftkv_replicas", "Raft groups (replicas) on this node", value=len(groups))
        yield GaugeMetricFamily("raftkv_leaders", "Raft groups this node leads",
                                value=sum(1 for g in groups.values() if g.is_leader))
        if len(groups) <= MAX_GROUP_SERIES:
            yield from _group_metrics(groups)


def _snapshot(items: Any) -> list[Any]:
    """A copy of a set the event loop changes while this thread reads it."""
    for _ in range(10):
        try:
            return list(items)
        except RuntimeError:  # changed size during the copy: take it again
            continue
    return []


def _group_metrics(groups: dict[str, Any]) -> Iterator[Any]:
    """One series per group for each Raft metric."""
    gauges = {
        "term": ("raftkv_raft_term", "Current Raft term", lambda g: g.term),
        "commit": ("raftkv_raft_commit_index", "Highest log index known committed", lambda g: g.raftCommitIndex),
        "applied": ("raftkv_raft_applied_index", "Highest log index applied to the store",
                    lambda g: g.store.applied_index),
        "leader": ("raftkv_raft_is_leader", "1 if this replica leads its group", lambda g: int(g.is_leader)),
        "log_bytes": ("raftkv_raft_log_bytes", "Bytes of the in-memory Raft log", lambda g: g.journal.size_bytes),
        "log_entries": ("raftkv_raft_log_entries", "Entries in the Raft log", lambda g: len(g.journal)),
    }
    counters = {
        "changes": ("raftkv_raft_leader_changes", "Leaders this replica has seen take over",
                    lambda g: g.leader_changes),
        "snap_sent": ("raftkv_raft_snapshots_sent", "Snapshots sent in full to followers",
                      lambda g: g.serializer.sent),
        "snap_received": ("raftkv_raft_snapshots_received", "Snapshots received and installed",
                          lambda g: g.serializer.installs),
        "snap_sent_bytes": ("raftkv_raft_snapshot_sent_bytes", "Snapshot bytes sent",
                            lambda g: g.serializer.sent_bytes),
        "snap_received_bytes": ("raftkv_raft_snapshot_received_bytes", "Snapshot bytes received",
                                lambda g: g.serializer.received_bytes),
    }
    families = {k: GaugeMetricFamily(name, doc, labels=["group"]) for k, (name, doc, _) in gauges.items()}
    families.update({k: CounterMetricFamily(name, doc, labels=["group"]) for k, (name, doc, _) in counters.items()})
    read = {k: f for k, (_, _, f) in (gauges | counters).items()}
    for gid, g in sorted(groups.items()):
        for k, family in families.items():
            try:
                family.add_metric([gid], read[k](g))
            except (AttributeError, TypeError):  # a group closing while we read it
                continue
    yield from families.values()


class MetricsServer:
    """The HTTP endpoint Prometheus scrapes (``/metrics``), on a thread of its own."""

    def __init__(self, node: Node, host: str, port: int) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(NodeCollector(node))
        self._server, self._thread = start_http_server(port, addr=host, registry=self.registry)
        self.port = self._server.server_address[1]
        self.address = f"{host}:{self.port}"  # host:port, as `cluster status` shows it

    def close(self) -> None:
        """Stop serving."""
        self._server.shutdown()
        self._server.server_close()

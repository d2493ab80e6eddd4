"""Counting on the hot path (pure): histograms and per-operation tallies, read at scrape time.

The node's request path and its Raft loop record here, and ``server/metrics.py`` turns what
they hold into Prometheus metrics when scraped.  prometheus_client's own Histogram takes a lock
and a method call per observation; these are plain lists and dicts updated by the one thread
that owns them, and a scrape from another thread reads them as they are.  A scrape may see a
count one observation ahead of a sum: harmless for rates and quantiles.
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence

# request latencies: 100 us .. 10 s
LATENCY_BUCKETS: tuple[float, ...] = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
                                      0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# fdatasync: 20 us .. 1 s (this machine: p50 108 us, p99 162 us)
FSYNC_BUCKETS: tuple[float, ...] = (0.00002, 0.00005, 0.0001, 0.0002, 0.0005, 0.001, 0.002, 0.005, 0.01,
                                    0.025, 0.05, 0.1, 0.25, 1.0)


class Histogram:
    """Observations counted into fixed upper bounds (seconds), plus their count and sum."""

    __slots__ = ("bounds", "counts", "count", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        if list(bounds) != sorted(set(bounds)) or not bounds:
            raise ValueError("bucket bounds must be distinct and increasing")
        self.bounds = tuple(bounds)
        self.counts = [0] * (len(self.bounds) + 1)  # the last counts what is above every bound
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        """Count one observation."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """Prometheus's buckets: (upper bound as text, observations at or below it), ending at +Inf."""
        out, running = [], 0
        counts = list(self.counts)  # one copy: the buckets of one scrape add up
        for bound, n in zip(self.bounds, counts, strict=False):
            running += n
            out.append((repr(bound), running))
        out.append(("+Inf", running + counts[-1]))
        return out


class OpStats:
    """Requests by operation: how many, how many failed (by error code), and how long they took.

    ``ops`` fixes the labels: any other name counts as "unknown", so a client sending made-up
    operations cannot grow the label set.
    """

    UNKNOWN = "unknown"

    def __init__(self, ops: Iterable[str], bounds: Sequence[float] = LATENCY_BUCKETS) -> None:
        names = [*sorted(set(ops)), self.UNKNOWN]
        self.requests = dict.fromkeys(names, 0)
        self.latency = {name: Histogram(bounds) for name in names}
        self.errors: dict[tuple[str, str], int] = {}

    def record(self, op: object, seconds: float, error: str | None = None) -> None:
        """Count one answered request; ``error`` is its error code, None if it succeeded."""
        name = op if isinstance(op, str) and op in self.requests else self.UNKNOWN
        self.requests[name] += 1
        self.latency[name].observe(seconds)
        if error is not None:
            key = (name, error)
            self.errors[key] = self.errors.get(key, 0) + 1

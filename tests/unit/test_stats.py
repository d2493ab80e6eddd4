"""The hot-path tallies behind the metrics endpoint (raftkv/stats.py)."""

from __future__ import annotations

import pytest

from raftkv.stats import Histogram, OpStats


def test_histogram_buckets_are_cumulative_and_end_at_inf():
    h = Histogram([0.001, 0.01, 0.1])
    for v in (0.0005, 0.001, 0.002, 0.05, 0.5, 3.0):
        h.observe(v)
    assert h.count == 6
    assert h.sum == pytest.approx(3.5535)
    # a value equal to a bound counts in that bound's bucket (Prometheus's "le")
    assert h.cumulative() == [("0.001", 2), ("0.01", 3), ("0.1", 4), ("+Inf", 6)]


@pytest.mark.parametrize("bounds", [[], [0.1, 0.01], [0.1, 0.1]])
def test_histogram_refuses_bounds_that_are_not_increasing(bounds):
    with pytest.raises(ValueError):
        Histogram(bounds)


def test_op_stats_count_requests_errors_and_latency_by_known_op_only():
    s = OpStats(["get", "put"])
    s.record("get", 0.0002)
    s.record("put", 0.003, "not_leader")
    s.record("put", 0.004)
    for made_up in ("x" * 1000, "drop table", None, 42):
        s.record(made_up, 0.0001, "unknown_operation")
    assert s.requests == {"get": 1, "put": 2, "unknown": 4}
    assert s.errors == {("put", "not_leader"): 1, ("unknown", "unknown_operation"): 4}
    assert s.latency["put"].count == 2 and s.latency["put"].sum == pytest.approx(0.007)
    # whatever clients send, the label set stays the known operations plus "unknown"
    assert set(s.latency) == {"get", "put", "unknown"}

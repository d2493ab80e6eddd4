"""A scan of a million keys streams: neither the client nor a node ever holds the result."""

import time
import tracemalloc

import psutil
import pytest

from raftkv import Client

pytestmark = [pytest.mark.slow, pytest.mark.timeout(400)]

N = 1_000_000
T0 = 1_763_700_000_000_000_000


def test_scan_of_a_million_keys_has_bounded_memory(cluster):
    with Client(cluster.seeds, timeout=60) as db:
        step = 50_000
        for off in range(0, N, step):
            db.put_many([(T0 + i * 1_000, b"%020d" % i) for i in range(off, off + step)])
        nodes = [psutil.Process(pid) for pid in cluster.info.pids.values()]
        rss_before = [p.memory_info().rss for p in nodes]
        peak_rss = list(rss_before)

        tracemalloc.start()
        count = 0
        last = -1
        t0 = time.monotonic()
        last_value = None
        for k, v in db.scan(T0, T0 + N * 1_000):
            assert k > last  # ascending, no duplicates
            last, last_value = k, v
            count += 1
            if count % 100_000 == 0:
                peak_rss = [max(a, p.memory_info().rss) for a, p in zip(peak_rss, nodes, strict=True)]
        elapsed = time.monotonic() - t0
        _, client_peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()

        assert count == N
        assert last_value == b"%020d" % (N - 1)
        # the rows alone are ~100 MB as Python objects; streaming keeps a few pages (~ MBs)
        assert client_peak < 40 << 20, f"client peaked at {client_peak >> 20} MiB"
        growth = [(peak - before) >> 20 for peak, before in zip(peak_rss, rss_before, strict=True)]
        assert max(growth) < 150, f"node RSS grew by {growth} MiB while serving the scan"
        print(f"scanned {count} keys in {elapsed:.1f}s; client peak {client_peak >> 10} KiB; node growth {growth} MiB")

"""Spread scans on a real cluster: one shard's scan read from all three replicas at once, every
chunk showing the state of the scan's first page, and falling back to the leader when a replica
cannot show it (it wrote into the chunk since, or it is dead)."""

import os

import pytest

from raftkv import Client, errors
from raftkv.client import rpc

from ..helpers import wait_until

pytestmark = pytest.mark.timeout(180)

BASE = 10**6  # every key in the first of the 8 shards
ROWS = 24_000  # of 1 KiB: more than a node's 16 MiB memtable, so most rows are in tables on disk,
#                 which LevelDB's size estimates (and so the chunk cuts) count


def load(db, step=1):
    rows = {BASE + step * i: os.urandom(1024) for i in range(ROWS)}
    items = sorted(rows.items())
    for n in range(0, len(items), 2000):
        db.put_many(items[n:n + 2000])
    return rows


def chunk_reads(cluster):
    return {n.id: rpc.call(cluster.address(n.id), "status")["chunk_reads"] for n in cluster.info.nodes}


def test_a_large_scan_of_one_shard_is_read_on_every_replica_and_comes_out_whole_and_in_order(cluster):
    with Client(cluster.seeds, page_keys=500) as db, Client(cluster.seeds, page_keys=500, spread_scans=False) as one:
        rows = load(db)
        want = sorted(rows.items())
        assert db.range_query(0, 2**62) == want
        sid = db.shard_map().shard_for_key(BASE).id
        leader = cluster.leader_of(sid)
        reads = chunk_reads(cluster)
        followers = [n for n in reads if n != leader]
        assert all(reads[n]["at_index"] > 0 for n in followers), reads  # the followers read chunks
        assert all(r["refused"] == 0 and r["from_snapshot"] == 0 for r in reads.values()), reads
        # the same rows as a scan at the leader alone, forward, reverse and from inside the range
        assert one.range_query(0, 2**62) == want
        lo, hi = want[700][0], want[-300][0]
        assert [r for page in db.scan_pages(lo, hi) for r in page] == [r for r in want if lo <= r[0] <= hi]
        assert list(db.scan(0, 2**62, reverse=True)) == want[::-1]
        assert list(db.scan(0, 2**62, limit=9_999)) == want[:9_999]
        # each scan, done or stopped at its limit, let go of the snapshot its chunks shared
        wait_until(lambda: all(rpc.call(cluster.address(n.id), "status")["shared_snapshots"] == 0
                               for n in cluster.info.nodes), 10, "the shared snapshots released")


def test_rows_just_written_and_still_in_the_memtable_are_spread_too(cluster):
    # 4 MB: no table on disk yet, so LevelDB sizes none of it; the cuts come from the key span
    # (the newest rows of a time series are the ones scanned most).  Before, such a scan was read
    # at the leader alone, and so was the large one above when its leader's flush came late.
    with Client(cluster.seeds, page_keys=250) as db:
        rows = {BASE + i: os.urandom(512) for i in range(8_000)}
        db.put_many(sorted(rows.items()))
        assert db.range_query(0, 2**62) == sorted(rows.items())
        reads = chunk_reads(cluster)
        leader = cluster.leader_of(db.shard_map().shard_for_key(BASE).id)
        assert all(reads[n]["at_index"] > 0 for n in reads if n != leader), reads


def test_writes_landing_during_a_spread_scan_are_not_seen_by_it(cluster):
    # small pages, so small chunks: more of them than the client starts before the writes land
    with Client(cluster.seeds, page_keys=100) as db:
        rows = load(db, step=2)  # even keys
        pages = db.scan_pages(0, 2**62)
        first = next(pages)
        # while the scan is under way: every row rewritten, and an odd key between every two
        after = sorted({**{k: b"after" for k in rows}, **{k + 1: b"new" for k in rows}}.items())
        for n in range(0, len(after), 5000):
            db.put_many(after[n:n + 5000])
        seen = first + [row for page in pages for row in page]
        assert seen == sorted(rows.items())  # the first page's state, whole: no "after", no odd key
        reads = chunk_reads(cluster)
        # the chunks asked after the writes could not be read at the scan's index on any replica,
        # and came from the leader's snapshot
        assert sum(r["refused"] for r in reads.values()) > 0, reads
        assert sum(r["from_snapshot"] for r in reads.values()) > 0, reads
        assert db.range_query(0, 2**62) == after  # a new scan sees the writes


def test_a_spread_scan_reads_a_dead_followers_chunks_from_the_leader(cluster):
    with Client(cluster.seeds, page_keys=500, attempt_timeout=1.0) as db:
        rows = load(db)
        sid = db.shard_map().shard_for_key(BASE).id
        leader = cluster.leader_of(sid)
        dead = next(n.id for n in cluster.info.nodes if n.id != leader)
        cluster.kill(dead)
        assert db.range_query(0, 2**62) == sorted(rows.items())
        reads = chunk_reads_alive(cluster, dead)
        assert reads[leader]["from_snapshot"] > 0, reads


def test_chunk_requests_are_checked_at_the_door(cluster):
    with Client(cluster.seeds) as db:
        db.put_many([(BASE + i, b"v") for i in range(100)])
        sid = db.shard_map().shard_for_key(BASE).id
        addr = cluster.address(cluster.leader_of(sid))
        bad = [({"spread": 0}, "spread"), ({"spread": "4"}, "spread"), ({"spread": 10, "at": 1}, "spread"),
               ({"at": -1}, "at must"), ({"at": "1"}, "at must"), ({"snapshot": "junk"}, "snapshot must"),
               ({"snapshot": [1, 2]}, "snapshot must")]
        for fields, words in bad:
            with pytest.raises(errors.InvalidArgument, match=words):
                rpc.call(addr, "scan", shard=sid, **fields)
        with pytest.raises(errors.CursorExpired):  # a well-formed handle this node never gave
            rpc.call(addr, "scan", shard=sid, snapshot=["n1", 10**9])
        assert rpc.call(addr, "release", shard=sid, snapshot=["n1", 10**9]) is False
        # a replica reads at an index it has applied, and says which; a chunk's cursor stays in its chunk
        index = rpc.call(addr, "scan", shard=sid)["index"]
        page = rpc.call(addr, "scan", shard=sid, start=BASE, end=BASE + 50, at=index, limit=10)
        assert page["index"] == index and page["resume"] == BASE + 10
        with pytest.raises(errors.CursorExpired, match="inside the chunk"):
            rpc.call(addr, "scan", shard=sid, start=BASE + 10, end=BASE + 90, cursor=page["cursor"])
        assert [k for k, _ in db.scan(0, 2**62)] == [BASE + i for i in range(100)]


def chunk_reads_alive(cluster, dead):
    return {n.id: rpc.call(cluster.address(n.id), "status")["chunk_reads"] for n in cluster.info.nodes
            if n.id != dead}


def test_a_shard_split_during_a_spread_scan_loses_and_repeats_no_row(cluster):
    with Client(cluster.seeds, page_keys=100) as db:
        rows = load(db)
        want = sorted(rows.items())
        sid = db.shard_map().shard_for_key(BASE).id
        pages = db.scan_pages(0, 2**62)
        got = list(next(pages))
        at = want[ROWS // 2][0]
        db.split_shard(sid, at)  # rows from ``at`` on move to a new shard while the scan is under way
        got += [row for page in pages for row in page]
        assert got == want
        assert db.shard_map().shard_for_key(at).id != sid

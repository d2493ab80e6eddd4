"""The data path through real node processes: every documented behaviour of the client API."""

import asyncio
import os
import random
import socket
import struct
import threading

import pytest

from raftkv import AsyncClient, Client, errors
from raftkv.client import rpc
from raftkv.keys import MAX_KEY, MAX_VALUE_BYTES
from raftkv.protocol.codec import encode

from ..helpers import recv_message, wait_until

pytestmark = pytest.mark.timeout(180)


def _everything(db):
    return list(db.scan(0, MAX_KEY))


def test_crud_ranges_and_edges_across_shards(cluster):
    with Client(cluster.seeds) as db:
        smap = db.shard_map()
        assert len(smap.shards) == 8 and all(len(s.replicas) == 3 for s in smap.shards)
        model = {}
        edges = {0, 1, MAX_KEY, MAX_KEY - 1}
        for s in smap.shards[1:]:
            edges |= {s.start - 1, s.start, s.start + 1}
        for k in sorted(edges):
            db.put(k, b"v%d" % k)
            model[k] = b"v%d" % k
        assert db.get(0) == b"v0" and db.get(MAX_KEY) == b"v%d" % MAX_KEY
        assert db.get(12345) is None
        db.put("text key?" and 77, "grüße")  # str values are stored as UTF-8
        model[77] = "grüße".encode()
        assert db.get(77) == "grüße".encode()
        # a range spanning every shard, in order, inclusive at both ends
        assert db.range_query(0, MAX_KEY) == sorted(model.items())
        assert db.range_query(1, MAX_KEY - 1) == [kv for kv in sorted(model.items()) if 1 <= kv[0] <= MAX_KEY - 1]
        assert db.range_query(5, 4) == []  # start > end
        assert db.range_query(100, 200) == []  # empty range
        b = smap.shards[4].start
        assert db.range_query(b - 1, b) == [(b - 1, model[b - 1]), (b, model[b])]  # across one boundary
        assert list(db.scan(0, MAX_KEY, reverse=True, limit=3)) == sorted(model.items(), reverse=True)[:3]
        assert list(db.scan(0, MAX_KEY, limit=0)) == []
        # deletes
        assert db.delete(0) is True and db.delete(0) is False and db.get(0) is None
        del model[0]
        # 1 MiB values, random binary, on two shards
        big = {3: os.urandom(MAX_VALUE_BYTES), smap.shards[7].start + 9: os.urandom(MAX_VALUE_BYTES)}
        for k, v in big.items():
            db.put(k, v)
            model[k] = v
        assert all(db.get(k) == v for k, v in big.items())
        assert _everything(db) == sorted(model.items())


BAD_CALLS = [
    lambda db: db.put(-1, b"x"),
    lambda db: db.put(2**64, b"x"),
    lambda db: db.put(1.5, b"x"),
    lambda db: db.put("1", b"x"),
    lambda db: db.put(True, b"x"),
    lambda db: db.put(1, b"x" * (MAX_VALUE_BYTES + 1)),
    lambda db: db.put(1, 12),
    lambda db: db.put(1, None),
    lambda db: db.put_many([(1, b"ok"), (2, b"ok"), (-5, b"bad")]),
    lambda db: db.put_many([(1, b"ok"), (2, ["not bytes"])]),
    lambda db: db.put_many([(1, b"ok"), 2]),  # not a pair
    lambda db: db.put_many([(1, b"ok", b"extra")]),
    lambda db: db.put_many({1: b"ok", 2: 3}),
    lambda db: db.get(-1),
    lambda db: db.delete(2**64),
    lambda db: db.range_query(0, 2**64),
    lambda db: db.range_query(-1, 5),
    lambda db: list(db.scan(0, 10, limit=-1)),
]


def test_bad_input_is_refused_and_nothing_written(cluster):
    with Client(cluster.seeds) as db:
        for i, call in enumerate(BAD_CALLS):
            with pytest.raises(errors.InvalidArgument):
                call(db)
            assert _everything(db) == [], f"bad call #{i} wrote something"


def test_put_many_takes_a_dict_too(cluster):
    with Client(cluster.seeds) as db:
        assert db.put_many({5: b"five", 2**63: "big"}) == 2
        assert db.get(5) == b"five" and db.get(2**63) == b"big"


def test_server_refuses_bad_input_at_the_door(cluster):
    """The same checks hold for a client that skips ours and talks to the port directly."""
    with Client(cluster.seeds) as db:
        smap = db.shard_map()
        leader = cluster.leader_of(smap.shards[0].id)
        addr = cluster.address(leader)
        sid = smap.shards[0].id
        bad = [
            ({"op": "put", "shard": sid, "pairs": [[-1, b"x"]]}, errors.InvalidKey),
            ({"op": "put", "shard": sid, "pairs": [[1, b"x"], [2, "x" * (MAX_VALUE_BYTES + 1)]]}, errors.InvalidValue),
            ({"op": "put", "shard": sid, "pairs": [[1, 5]]}, errors.InvalidValue),
            ({"op": "put", "shard": sid, "pairs": [[smap.shards[1].start, b"x"]]}, errors.StaleRoute),
            ({"op": "put", "shard": "s9999", "pairs": [[1, b"x"]]}, errors.ShardNotHere),
            ({"op": "put", "shard": sid, "pairs": []}, errors.InvalidArgument),
            ({"op": "scan", "shard": sid, "limit": 10**9}, errors.InvalidArgument),
            ({"op": "scan", "shard": sid, "max_bytes": 1 << 40}, errors.InvalidArgument),
            ({"op": "get", "shard": sid, "key": 1, "consistency": "whatever"}, errors.InvalidArgument),
            ({"op": "drop_table"}, errors.UnknownOperation),
        ]
        for req, exc in bad:
            op = req.pop("op")
            with pytest.raises(exc):
                rpc.call(addr, op, **req)
        assert _everything(db) == []


def _raw(addr, data, read=True):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(data)
        return recv_message(s) if read else None


def test_malformed_frames_get_a_clear_error_and_the_node_lives_on(cluster):
    addr = cluster.info.addresses[0]
    reply = _raw(addr, struct.pack(">I", 1 << 30))  # a 1 GiB frame header
    assert reply["err"]["code"] == "frame_too_large"
    reply = _raw(addr, struct.pack(">I", 2) + b"\xc1\xc1")
    assert reply["err"]["code"] == "remote_protocol_error"
    assert _raw(addr, encode(["not", "a", "map"]))["err"]["code"] == "invalid_argument"
    assert _raw(addr, encode({"id": 9, "op": 42}))["err"]["code"] == "unknown_operation"
    _raw(addr, struct.pack(">I", 100) + b"\x00" * 10, read=False)  # hang up mid-frame
    with Client(addr) as db:
        db.put(5, b"fine")
        assert db.get(5) == b"fine"


def test_many_threads_and_tasks_agree_with_a_model(cluster):
    """Concurrent writers (threads on one sync Client, tasks on one AsyncClient) and readers."""
    model = {}
    lock = threading.Lock()
    errors_seen = []

    def thread_worker(t, db):
        rng = random.Random(t)
        mine = {}
        try:
            for i in range(60):
                k = (rng.randrange(2**60) << 4) | t  # each worker owns keys with its low bits: a per-key order
                action = rng.random()
                if action < 0.6:
                    db.put(k, b"t%d-%d" % (t, i))
                    mine[k] = b"t%d-%d" % (t, i)
                elif action < 0.8 and mine:
                    victim = rng.choice(sorted(mine))
                    assert db.delete(victim) is True
                    del mine[victim]
                else:
                    batch = [((rng.randrange(2**60) << 4) | t, b"b%d" % j) for j in range(20)]
                    db.put_many(batch)
                    mine.update(batch)
                if mine:
                    probe = rng.choice(sorted(mine))
                    assert db.get(probe) == mine[probe]  # read-your-writes
        except Exception as exc:  # surfaced below
            errors_seen.append(exc)
        with lock:
            model.update(mine)

    async def task_worker(t, adb):
        rng = random.Random(100 + t)
        mine = {}
        for i in range(40):
            k = (rng.randrange(2**60) << 4) | t
            await adb.put(k, b"a%d-%d" % (t, i))
            mine[k] = b"a%d-%d" % (t, i)
            if i % 5 == 0:
                got = await adb.get(k)
                assert got == mine[k]
        return mine

    async def run_tasks():
        async with AsyncClient(cluster.seeds) as adb:
            results = await asyncio.gather(*(task_worker(t, adb) for t in range(8, 16)))
        for r in results:
            model.update(r)

    with Client(cluster.seeds) as db:
        threads = [threading.Thread(target=thread_worker, args=(t, db)) for t in range(8)]
        for th in threads:
            th.start()
        asyncio.run(run_tasks())
        for th in threads:
            th.join()
        assert errors_seen == []
        assert _everything(db) == sorted(model.items())


def test_delete_range_and_unavailable_deadline_shape(cluster):
    with Client(cluster.seeds, timeout=5) as db:
        db.put_many([(k, b"x") for k in range(0, 3000)])
        assert db.delete_range(100, 2099) == 2000
        assert len(db.range_query(0, MAX_KEY)) == 1000
        assert db.delete_range(10, 5) == 0


def test_scan_pages_use_one_snapshot_per_shard_and_survive_cursor_loss(cluster):
    with Client(cluster.seeds, page_keys=10) as db:
        db.put_many([(k, b"before") for k in range(100)])
        pages = db.scan_pages(0, 99)
        first = next(pages)
        db.put_many([(k, b"after") for k in range(100)])  # written while the scan is under way
        rest = [row for page in pages for row in page]
        assert {v for _, v in first + rest} == {b"before"}  # the shard's scan saw one state
        assert len(first + rest) == 100
        # a cursor the node no longer has: the client restarts that page from a fresh snapshot
        sid = db.shard_map().shards[0].id
        addr = cluster.address(cluster.leader_of(sid))
        with pytest.raises(errors.CursorExpired):
            rpc.call(addr, "scan", shard=sid, start=50, cursor=["n1", 10**9])
        assert [k for k, _ in db.scan(0, 99)] == list(range(100))


def test_leadership_spreads_over_the_nodes(cluster):
    """Nine groups (8 shards + meta) on 3 nodes end up led 3/3/3, whatever the elections gave."""

    def balanced() -> bool:
        leaders = [g["leader"] for g in rpc.call(cluster.info.addresses[0], "status")["groups"]]
        counts = sorted(leaders.count(n.id) for n in cluster.info.nodes)
        assert None not in leaders and counts == [3, 3, 3], f"leaders still {leaders}"
        return True

    wait_until(balanced, 90, "leadership to spread 3/3/3", interval=0.5)
    with Client(cluster.seeds) as db:  # and the cluster serves normally afterwards
        db.put(1, b"x")
        assert db.get(1) == b"x"


def test_a_batch_too_big_for_one_log_entry_is_refused_and_the_shard_keeps_working(cluster):
    """An entry over pysyncobj's batch size would take its pickled path, which we refuse: never commit."""
    with Client(cluster.seeds) as db:
        sid = db.shard_map().shards[0].id
        addr = cluster.address(cluster.leader_of(sid))
        pairs = [[k, bytes(1 << 20)] for k in range(5)]  # 5 MiB in one request: fits a frame
        with pytest.raises(errors.InvalidArgument, match="exceeds"):
            rpc.call(addr, "put", shard=sid, pairs=pairs, timeout=5.0)
        db.put_many([(k, bytes(1 << 20)) for k in range(5)])  # the client splits it instead
        assert [k for k, _ in db.scan(0, 10)] == list(range(5))
        db.put(7, b"small")
        assert db.get(7) == b"small"


def test_a_client_that_never_reads_replies_cannot_balloon_node_memory(cluster):
    import socket
    import time

    import psutil

    from raftkv.protocol.codec import encode

    with Client(cluster.seeds) as db:
        db.put_many([(k, bytes(200_000)) for k in range(40)])  # 8 MB: every page is ~4 MiB
        sid = db.shard_map().shards[0].id
        leader = cluster.leader_of(sid)
    proc = psutil.Process(cluster.info.pids[leader])
    before = proc.memory_info().rss
    host, port = cluster.address(leader).rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        s.setblocking(False)
        req = encode({"id": 1, "op": "scan", "shard": sid, "limit": 10_000, "max_bytes": 4 << 20,
                      "consistency": "serializable"})
        deadline = time.monotonic() + 5
        sent = 0
        while time.monotonic() < deadline:
            try:
                sent += s.send(req * 50)
            except BlockingIOError:
                time.sleep(0.05)  # the node stopped reading: that is the point
        peak = proc.memory_info().rss
    grown = (peak - before) >> 20
    assert sent > 0 and grown < 300, f"node grew by {grown} MiB"
    with Client(cluster.seeds) as db:
        assert db.get(1) == bytes(200_000)

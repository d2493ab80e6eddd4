"""The client port against hostile or careless clients: every request answered, memory and slots bounded."""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import os
import socket
import struct
import threading
import time
from collections.abc import Iterator
from typing import Any

import psutil
import pytest

from raftkv import AsyncClient, Client, errors
from raftkv.cluster import launcher
from raftkv.protocol.codec import (
    DEFAULT_MAX_FRAME,
    MAX_REQUEST_ID_CHARS,
    NEED_DATA,
    FrameDecoder,
    check_object_count,
    check_request_id,
    encode,
    pack,
)
from raftkv.server.node import CLIENT_LIMITS_ENV

from ..helpers import recv_message, wait_until
from ..replication.test_peer_hardening import assert_serves_clients, launched, node_log
from .conftest import RunningCluster
from .test_metrics import scrape, total

pytestmark = pytest.mark.timeout(240)

# the small-limits cluster: timeouts short enough to wait for, caps small enough to reach
LIMITS = {"frame_seconds": 4.0, "idle_seconds": 4.0, "max_connections": 6, "max_partial_bytes": 10 << 20,
          "max_request_bytes": 3 << 20}


def _connect(addr: str, timeout: float = 30.0) -> socket.socket:
    host, port = addr.rsplit(":", 1)
    return socket.create_connection((host, int(port)), timeout=timeout)


def _call(s: socket.socket, msg: Any) -> Any:
    s.sendall(encode(msg))
    return recv_message(s)


class _Replies:
    """Successive frames from one socket (``recv_message`` drops what follows the first)."""

    def __init__(self, s: socket.socket) -> None:
        self.s = s
        self.dec = FrameDecoder()

    def next(self) -> Any:
        while (msg := self.dec.next_message()) is NEED_DATA:
            data = self.s.recv(1 << 20)
            if not data:
                return None
            self.dec.receive_data(data)
        return msg


def _closed(s: socket.socket) -> bool:
    """Whether the node hung up: EOF (or a reset) before any further frame."""
    try:
        return recv_message(s) is None
    except ConnectionError:
        return True


@pytest.fixture(scope="module")
def small_limits_cluster(tmp_path_factory) -> Iterator[RunningCluster]:
    """One cluster for the module whose nodes start with LIMITS (through the node's environment)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv(CLIENT_LIMITS_ENV, json.dumps(LIMITS))
        c = RunningCluster(str(tmp_path_factory.mktemp("limits") / "cluster"))
    try:
        yield c
    finally:
        c.close()


# --- 1. every request gets exactly one reply ------------------------------------------------------


def test_request_id_check_is_pure_and_strict():
    for ok in (None, 0, -5, 2**64 - 1, -(2**63), "", "x" * MAX_REQUEST_ID_CHARS):
        assert check_request_id(ok) == ok
    for bad in (True, 1.5, b"id", [1], {"a": 1}, "x" * (MAX_REQUEST_ID_CHARS + 1)):
        with pytest.raises(errors.InvalidArgument) as info:
            check_request_id(bad)
        assert "xxxxxxxx" not in info.value.message  # names the type, never echoes the id


def test_unhashable_ops_are_answered(small_limits_cluster):
    """An op that is a list or a map used to go unanswered: the client waited for ever."""
    addr = small_limits_cluster.info.addresses[0]
    with _connect(addr) as s:
        for op in ([], {}, [1, [2]], {"op": "map"}):
            reply = _call(s, {"id": 1, "op": op})
            assert reply["id"] == 1 and reply["err"]["code"] == "unknown_operation"
        assert "ok" in _call(s, {"id": 2, "op": "map"})


def test_outsize_and_odd_ids_are_refused_without_being_echoed(small_limits_cluster):
    """An echoed id of nearly 8 MiB made the reply too big to send: that request went unanswered."""
    addr = small_limits_cluster.info.addresses[0]
    with _connect(addr) as s:
        # an id that would make the reply exceed the frame limit if echoed
        huge = "x" * (DEFAULT_MAX_FRAME - 100)
        reply = _call(s, {"id": huge, "op": "map"})
        assert reply["id"] is None and reply["err"]["code"] == "invalid_argument"
        assert len(encode(reply)) < 1000
        for bad in (1.5, True, b"raw", [1], {"k": 1}, "y" * 65):
            reply = _call(s, {"id": bad, "op": "map"})
            assert reply["id"] is None and reply["err"]["code"] == "invalid_argument", bad
        # the stream is still in step: good requests on the same connection work
        for rid in (7, "req-7", None):
            reply = _call(s, {"id": rid, "op": "map"})
            assert reply["id"] == rid and "ok" in reply


def test_pipelined_mixed_requests_each_get_one_reply(small_limits_cluster):
    addr = small_limits_cluster.info.addresses[0]
    reqs = []
    for i in range(300):
        kind = i % 5
        if kind == 0:
            reqs.append({"id": i, "op": "map"})
        elif kind == 1:
            reqs.append({"id": i, "op": [i]})
        elif kind == 2:
            reqs.append({"id": i, "op": "get", "shard": "nope", "key": 1})
        elif kind == 3:
            reqs.append({"id": i, "op": "status"})
        else:
            reqs.append({"id": i, "op": "get"})
    with _connect(addr) as s:
        s.sendall(b"".join(encode(r) for r in reqs))
        replies = _Replies(s)
        ids = [replies.next()["id"] for _ in reqs]
    assert sorted(ids) == list(range(300))


def test_pipelined_puts_are_each_answered_once_even_after_the_client_half_closes(small_limits_cluster):
    """Puts are answered from their commit's callback, not a task: each still gets exactly one
    reply, refused ones at once and committed ones once durable, though the client sent its last
    byte (and shut its side) before any commit."""
    c = small_limits_cluster
    with Client(c.seeds) as db:
        shard = db.shard_map().shards[2]
    leader = c.leader_of(shard.id)
    node = next(n for n in c.info.nodes if n.id == leader)
    reqs = []
    for i in range(200):
        if i % 4 == 3:  # refused: not a list of pairs, or a shard this node does not host
            reqs.append({"id": i, "op": "put", "shard": shard.id, "pairs": "no"} if i % 8 == 3 else
                        {"id": i, "op": "put", "shard": "s9999", "pairs": [[shard.start, b"x"]]})
        else:
            reqs.append({"id": i, "op": "put", "shard": shard.id, "pairs": [[shard.start + i, b"v%d" % i]]})
    with socket.create_connection(node.client, timeout=30) as s:
        s.sendall(b"".join(encode(r) for r in reqs))
        s.shutdown(socket.SHUT_WR)
        replies = _Replies(s)
        got = {}
        while (reply := replies.next()) is not None:
            assert reply["id"] not in got, reply
            got[reply["id"]] = reply
    assert sorted(got) == list(range(200))
    for i, reply in got.items():
        if i % 4 == 3:
            assert reply["err"]["code"] == ("invalid_argument" if i % 8 == 3 else "shard_not_here"), reply
        else:
            assert reply == {"id": i, "ok": 1}, reply
    with Client(c.seeds) as db:
        assert db.get(shard.start + 4) == b"v4" and db.get(shard.start + 3) is None


def test_pipelined_gets_answered_without_a_task_each_get_their_own_reply(small_limits_cluster):
    """Gets the node may serve at once (serializable, or linearizable under the leader's lease) are
    answered on arrival, without a task, in bursts: each still gets exactly one reply, with its
    own value, and bad ones their error."""
    c = small_limits_cluster
    with Client(c.seeds) as db:
        shard = db.shard_map().shards[3]
        db.put_many([(shard.start + i, b"g%d" % i) for i in range(0, 400, 2)])  # odd keys stay missing
    node = next(n for n in c.info.nodes if n.id == c.leader_of(shard.id))
    reqs = []
    for i in range(400):
        req: dict[str, Any] = {"id": i, "op": "get", "shard": shard.id, "key": shard.start + i,
                               "consistency": ("serializable", "linearizable")[i % 2]}
        if i % 10 == 9:
            req["key"] = "nine"  # not a key
        elif i % 10 == 7:
            req["shard"] = "s9999"  # not hosted here
        elif i % 10 == 5:
            req["consistency"] = "eventual"
        reqs.append(req)
    with socket.create_connection(node.client, timeout=30) as s:
        s.sendall(b"".join(encode(r) for r in reqs))
        replies = _Replies(s)
        got: dict[int, Any] = {}
        while len(got) < len(reqs):
            reply = replies.next()
            assert reply is not None and reply["id"] not in got, reply
            got[reply["id"]] = reply
    for i, reply in got.items():
        if i % 10 == 9:
            assert reply["err"]["code"] == "invalid_key", reply
        elif i % 10 == 5:
            assert reply["err"]["code"] == "invalid_argument", reply
        elif i % 10 == 7:
            assert reply["err"]["code"] == "shard_not_here", reply
        else:
            assert reply == {"id": i, "ok": b"g%d" % i if i % 2 == 0 else None}, reply


# --- 2. what a client can pin ---------------------------------------------------------------------


def test_pipelined_big_puts_over_the_request_byte_budget_are_each_answered(small_limits_cluster):
    """Twelve 1 MiB puts sent at once against a 3 MiB budget of request bytes: the node takes them
    a few at a time (the rest wait in the socket), answers each once, and holds nothing after."""
    c = small_limits_cluster
    with Client(c.seeds) as db:
        shard = db.shard_map().shards[1]
    leader = c.leader_of(shard.id)
    node = next(n for n in c.info.nodes if n.id == leader)
    metrics = next(n["metrics"] for n in launcher.status(c.root)["nodes"] if n["id"] == leader)
    values = {shard.start + i: os.urandom(1 << 20) for i in range(12)}
    frames = b"".join(encode({"id": i, "op": "put", "shard": shard.id, "pairs": [[k, v]], "timeout": 30})
                      for i, (k, v) in enumerate(values.items()))
    with socket.create_connection(node.client, timeout=60) as s:
        sender = threading.Thread(target=s.sendall, args=(frames,), daemon=True)
        sender.start()  # 12 MiB: more than the socket buffers hold while the node reads slowly
        replies = _Replies(s)
        got = [replies.next() for _ in range(len(values))]
        sender.join(30)
    assert sorted(r["id"] for r in got) == list(range(12)), got
    assert all(r.get("ok") == 1 for r in got), got

    def idle() -> bool:
        # every connection counts, the other nodes' too: a heartbeat or a map poll of theirs may be
        # in progress at the moment of one scrape (144 bytes were, once), never for long
        samples = scrape(metrics)
        return (total(samples, "raftkv_client_request_bytes_in_progress") == 0
                and total(samples, "raftkv_client_requests_in_progress") == 0)

    wait_until(idle, 10, "no request bytes held once every put was answered", interval=0.05)
    with Client(c.seeds) as db:
        assert all(db.get(k) == v for k, v in values.items())


def test_a_half_sent_frame_is_cut_off_after_the_read_timeout(small_limits_cluster):
    addr = small_limits_cluster.info.addresses[1]
    with _connect(addr) as s:
        s.sendall(struct.pack(">I", 1000) + b"\x81" + b"\xa2id")  # 1,000 bytes promised, 4 sent
        reply = recv_message(s)
        assert reply["err"]["code"] == "timeout" and "frame" in reply["err"]["message"]
        assert _closed(s)


def test_an_idle_connection_is_closed_and_a_busy_one_is_not(small_limits_cluster):
    addr = small_limits_cluster.info.addresses[1]
    with _connect(addr) as idle, Client(addr) as db:
        db.put(1, b"one")
        reply = recv_message(idle)  # we sent nothing at all
        assert reply["err"]["code"] == "timeout" and "idle" in reply["err"]["message"]
        assert _closed(idle)
        assert db.get(1) == b"one"  # the client reconnects if its own connection idled out


def test_the_partial_frame_budget_refuses_new_large_frames_only(small_limits_cluster):
    """Budget 10 MiB: a 6 MiB frame in progress leaves no room for another, but small frames pass."""
    addr = small_limits_cluster.info.addresses[2]
    body = encode({"id": 1, "op": "map", "pad": b"p" * (6 << 20)})
    with _connect(addr) as a, _connect(addr) as b, _connect(addr) as c:
        a.sendall(body[:1000])  # header and a little: 6 MiB reserved
        assert _call(c, {"id": 5, "op": "map"})["id"] == 5  # small frames are never refused
        b.sendall(body[:1000])
        reply = recv_message(b)
        assert reply["err"]["code"] == "overloaded"
        assert _closed(b)
        a.sendall(body[1000:])
        assert "ok" in recv_message(a)  # the frame in progress completes and is answered
        with _connect(addr) as d:  # its reservation was returned
            assert "ok" in _call(d, {"id": 1, "op": "map", "pad": b"p" * (6 << 20)})


def test_half_sent_large_frames_cannot_pin_node_memory(cluster):
    """24 frames of 8 MiB, each sent but for its last bytes: the node held 210 MB, for ever."""
    addr = cluster.info.addresses[0]
    proc = psutil.Process(cluster.info.pids[cluster.info.nodes[0].id])
    before = proc.memory_info().rss
    almost = struct.pack(">I", DEFAULT_MAX_FRAME) + b"\x00" * (DEFAULT_MAX_FRAME - 1000)
    socks, refused = [], 0
    try:
        for _ in range(24):
            s = _connect(addr)
            socks.append(s)
            try:
                s.sendall(almost)
            except OSError:
                pass  # refused while we were sending: its reply is still readable
            s.settimeout(0.5)
            try:
                reply = recv_message(s)
            except (TimeoutError, ConnectionError):
                continue  # being received: its 8 MiB count against the node's budget
            assert reply is None or reply["err"]["code"] == "overloaded"
            refused += 1
        time.sleep(1)
        grown = (proc.memory_info().rss - before) >> 20
    finally:
        for s in socks:
            s.close()
    print(f"node RSS grew {grown} MiB; {refused} of 24 frames refused")
    assert refused >= 24 - (64 // 8)  # the 64 MiB budget holds 8 frames of 8 MiB at most
    assert grown < 120, f"node grew by {grown} MiB"
    with Client(addr) as db:
        db.put(1, b"fine")


def test_at_the_connection_cap_the_longest_idle_connection_makes_room(small_limits_cluster):
    addr = small_limits_cluster.info.addresses[0]
    cap = LIMITS["max_connections"]
    socks = [_connect(addr) for _ in range(cap)]
    try:
        for i, s in enumerate(socks):  # served in order: socks[0] is idle the longest
            assert _call(s, {"id": i, "op": "map"})["id"] == i
        with _connect(addr) as newcomer:
            assert _call(newcomer, {"id": 99, "op": "map"})["id"] == 99
            reply = recv_message(socks[0])
            assert reply["err"]["code"] == "overloaded" and "idle" in reply["err"]["message"]
            assert _closed(socks[0])
            assert _call(socks[1], {"id": 1, "op": "map"})["id"] == 1  # the others were left alone
    finally:
        for s in socks:
            s.close()


def test_object_count_check_is_exact():
    req = {"id": 1, "op": "put", "pairs": [[k, b"v"] for k in range(1000)]}
    objects = 1 + 2 + 2 + 2 + 1000 * 3  # the map, three keys and values, three per pair
    check_object_count(pack(req), objects)
    with pytest.raises(errors.RemoteProtocolError):
        check_object_count(pack(req), objects - 1)


def test_a_frame_of_millions_of_tiny_objects_is_refused_before_decoding(small_limits_cluster):
    """8 MiB of empty maps would decode to 8 million dicts: over 500 MB, the GIL held a second."""
    addr = small_limits_cluster.info.addresses[2]
    proc = psutil.Process(small_limits_cluster.info.pids[small_limits_cluster.info.nodes[2].id])
    before = proc.memory_info().rss
    n = DEFAULT_MAX_FRAME - 5
    bomb = b"\xdd" + struct.pack(">I", n) + b"\x80" * n
    for _ in range(3):
        with _connect(addr) as s:
            s.sendall(struct.pack(">I", len(bomb)) + bomb)
            reply = recv_message(s)
            assert reply["err"]["code"] == "remote_protocol_error" and "objects" in reply["err"]["message"]
            assert _closed(s)
    grown = (proc.memory_info().rss - before) >> 20
    assert grown < 100, f"node grew by {grown} MiB"


# --- 3. replies computed but not read -------------------------------------------------------------


def test_pipelined_big_gets_without_reading_keep_node_memory_flat(cluster):
    """2,000 gets of a 1 MiB value, replies unread: the node computes only what fits the reply budget."""
    with Client(cluster.seeds) as db:
        db.put(42, os.urandom(1 << 20))
        sid = db.shard_map().shard_for_key(42).id
        leader = cluster.leader_of(sid)
    proc = psutil.Process(cluster.info.pids[leader])
    before = proc.memory_info().rss
    n = 2000
    # serializable: leadership may move meanwhile (balancing), which must not turn a reply into an error
    frames = b"".join(encode({"id": i, "op": "get", "shard": sid, "key": 42, "consistency": "serializable"})
                      for i in range(n))
    with _connect(cluster.address(leader), timeout=60) as s:
        s.sendall(frames)  # small: the node takes it all in its socket buffer
        peak = before
        for _ in range(40):  # the node computes what it may; we read nothing for a while
            time.sleep(0.1)
            peak = max(peak, proc.memory_info().rss)
        got = 0
        replies = _Replies(s)
        while got < n:  # then every reply arrives, once, in full
            reply = replies.next()
            assert reply is not None and len(reply.get("ok") or b"") == 1 << 20, reply
            got += 1
            if got % 250 == 0:
                peak = max(peak, proc.memory_info().rss)
    grown = (peak - before) >> 20
    print(f"leader RSS before {before >> 20} MiB, peak {peak >> 20} MiB, grown {grown} MiB")
    assert grown < 100, f"leader grew by {grown} MiB"


# --- 4. a failed scan leaves no unretrieved task exceptions --------------------------------------


def test_a_failed_scan_leaves_no_unretrieved_task_exception(cluster, caplog):
    with Client(cluster.seeds) as db:
        db.put_many([(s.start + i, b"v") for s in db.shard_map().shards for i in range(5)])

    async def scenario() -> None:
        async with AsyncClient(cluster.seeds, timeout=1.5, attempt_timeout=0.5, page_keys=2) as adb:
            await adb.shard_map()  # the map is cached: the scan itself will be what fails
            for node in cluster.info.nodes:
                cluster.kill(node.id)
            with pytest.raises(errors.Unavailable):
                async for _ in adb.scan():
                    pass
            await asyncio.sleep(0.2)  # let prefetches still retrying fail (or be cancelled)
        gc.collect()  # unretrieved failures are reported when their task is collected
        await asyncio.sleep(0.1)

    with caplog.at_level(logging.ERROR, logger="asyncio"):
        asyncio.run(scenario())
        gc.collect()
    assert not [r for r in caplog.records if "never retrieved" in r.getMessage()]


def test_running_out_of_descriptors_on_the_client_port_logs_a_line_not_a_traceback_per_accept(tmp_path):
    """Past the process's descriptor limit asyncio fails every accept and logs a traceback each time;
    the node says it in one line per interval, and serves again once the connections are gone."""
    limit = 160
    with launched(tmp_path / "cluster", nofile=limit, nodes=1, shards=1, replication=1) as info:
        host, port = info.node("n1").client
        idle: list[socket.socket] = []
        try:
            for _ in range(2 * limit):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex((host, port))  # accepted until the node runs out, then waits in the backlog
                idle.append(s)
            # asyncio's own words for it, or ours
            wait_until(lambda: any(w in node_log(info, "n1") for w in ("cannot accept", "out of system resource")),
                       60, "the node to run out of descriptors")
        finally:
            for s in idle:
                s.close()
        assert_serves_clients(info, range(3, 2**64, 2**62))
        text = node_log(info, "n1")
        assert "Traceback" not in text
        assert text.count("cannot accept") <= 3  # one line per 10 s at most

"""The peer port: authenticated, msgpack only, robust against garbage."""

import pickle
import socket
import struct

import pytest

from raftkv.protocol.codec import encode

from ..helpers import recv_message, wait_until
from .harness import LocalCluster

pytestmark = pytest.mark.timeout(60)


def test_cluster_with_secret_replicates(tmp_path):
    c = LocalCluster(str(tmp_path), secret=b"s3cret")
    try:
        c.put(1, b"a")
        c.assert_replicated({1: b"a"})
    finally:
        c.close()


def test_wrong_secret_is_refused(tmp_path):
    c = LocalCluster(str(tmp_path), secret=b"right")
    try:
        c.leader()
        addr = c.peers["n1"]
        with socket.create_connection(addr, timeout=5) as s:
            hello = recv_message(s)
            assert isinstance(hello["nonce"], bytes) and len(hello["nonce"]) == 16
            s.sendall(encode({"id": "n2", "mac": b"\x00" * 32}))
            s.sendall(encode([["g1", {"type": "request_vote", "term": 10**6, "last_log_index": 10**9,
                                      "last_log_term": 10**6}]]))
            assert s.recv(10) == b""  # hung up on us
        # Peer frames are read and handed to Raft on the loop thread, inside one iteration; once two
        # more iterations have completed, a forged request that got through would have moved the term.
        loop = c.loops["n1"]
        seen = loop.iterations
        wait_until(lambda: loop.iterations >= seen + 2, 30, "two Raft loop iterations after the hang-up")
        assert loop.groups["g1"].term < 10**6  # the forged vote request never reached Raft
    finally:
        c.close()


@pytest.mark.parametrize("payload", [
    b"\xff\xff\xff\xff",  # a 4 GiB frame header
    struct.pack(">I", 3) + b"\xc1\xc1\xc1",  # invalid msgpack
    encode("just a string"),  # not a hello
    pickle.dumps({"type": "append_entries"}),  # pickle is not our encoding
])
def test_garbage_on_peer_port_is_dropped_and_node_keeps_working(cluster, payload):
    cluster.leader()
    for addr in cluster.peers.values():
        with socket.create_connection(addr, timeout=5) as s:
            recv_message(s)
            s.sendall(payload)
            s.settimeout(5)
            assert s.recv(10) == b""
    cluster.put(7, b"still fine")
    cluster.assert_replicated({7: b"still fine"})


def test_unknown_peer_and_malformed_batches_rejected(cluster):
    cluster.leader()
    with socket.create_connection(cluster.peers["n1"], timeout=5) as s:
        recv_message(s)
        s.sendall(encode({"id": "intruder", "mac": b""}))
        assert s.recv(10) == b""
    with socket.create_connection(cluster.peers["n1"], timeout=5) as s:
        recv_message(s)
        s.sendall(encode({"id": "n2", "mac": b""}) + encode([["g1", "not a dict"]]))
        assert s.recv(10) == b""
    cluster.put(8, b"ok")


def test_pending_messages_split_into_bounded_frames():
    from raftkv.protocol.codec import NEED_DATA, FrameDecoder
    from raftkv.replication.transport import frames

    items = [[f"g{i % 3}", {"type": "append_entries", "entries": [[b"x" * (i * 1000), i, 1]]}]
             for i in range(200)]
    out = frames(items, target=64 * 1024)
    assert len(out) > 10
    dec = FrameDecoder(8 << 20)
    got = []
    for f in out:
        assert len(f) - 4 <= 64 * 1024 + 200 * 1000 + 100  # about the target, or one big item
        dec.receive_data(f)
        while (m := dec.next_message()) is not NEED_DATA:
            got.extend(m)
    assert got == items


def test_unauthenticated_dialer_cannot_make_us_buffer_a_big_frame(cluster):
    import struct as _struct

    cluster.leader()
    with socket.create_connection(cluster.peers["n1"], timeout=5) as s:
        recv_message(s)
        s.sendall(_struct.pack(">I", 1 << 20))  # announce a 1 MiB "hello"
        assert s.recv(10) == b""  # refused on the header alone
    cluster.put(3, b"fine")

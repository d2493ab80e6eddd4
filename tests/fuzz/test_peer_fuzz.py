"""Fuzz a live node's peer port: hellos, frames and Raft-looking messages from a hostile dialer.

The node is a real process of a launcher cluster (3 nodes, real sockets on 127.0.0.1, the
launcher's cluster secret).  Every example opens a connection to n1's peer port, sends its bytes,
half-closes and waits for the node to close in turn -- so the node has read all of it before the
next example starts.  Afterwards the node must still be alive, serve a put and a get through the
client, and no node's log may hold a traceback.

Campaigns are derandomized (the same examples every run) and bounded; the long one is ``slow``.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from typing import Any

import msgpack
import psutil
import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from raftkv.cluster import launcher
from raftkv.protocol.codec import encode

from ..helpers import recv_message
from ..replication.test_peer_hardening import (
    assert_serves_clients,
    cluster_secret,
    dial_as,
    launched,
    node_log,
    node_status,
)

pytestmark = pytest.mark.timeout(600)

# --- strategies -------------------------------------------------------------------------------------

# numbers a Raft field must never take: outside 0..2**63-1, or not an int at all
out_of_range = st.one_of(st.integers(-(2**63), -1), st.integers(2**63, 2**64 - 1),
                         st.sampled_from([-1, 2**63, 2**64 - 1, -(2**63)]))
scalar = st.one_of(st.none(), st.booleans(), st.integers(-(2**63), 2**64 - 1), st.floats(),
                   st.text(max_size=12), st.binary(max_size=24))
keys = st.one_of(st.text(max_size=10), st.binary(max_size=6))
garbage = st.recursive(scalar, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(keys, inner, max_size=4),
                       max_leaves=24)
wrong_value = st.one_of(out_of_range, st.none(), st.booleans(), st.floats(), st.text(max_size=12),
                        st.binary(max_size=24), garbage)

# Well-formed messages with term 0: if a mutation happens to leave one valid, Raft ignores it as stale.
TEMPLATES: dict[str, dict[str, Any]] = {
    "request_vote": {"term": 0, "last_log_index": 0, "last_log_term": 0},
    "response_vote": {"term": 0},
    "timeout_now": {"term": 0},
    "append_entries": {"term": 0, "commit_index": 0, "prevLogIdx": 1, "prevLogTerm": 0,
                       "entries": [[b"\x01", 2, 0]], "rs": 1},
    "next_node_idx": {"next_node_idx": 1, "reset": False, "success": False, "ra": 1},
    "apply_command": {"command": b"\x01", "request_id": 1},
    "apply_command_response": {"request_id": 1, "error": 1},
}
FIELDS = sorted({f for t in TEMPLATES.values() for f in t} | {"serialized", "transmission", "data", "type"})


@st.composite
def mutated_message(draw: st.DrawFn) -> Any:
    """A Raft message template with one to three things wrong."""
    kind = draw(st.sampled_from(sorted(TEMPLATES)))
    msg: dict[Any, Any] = {"type": kind, **TEMPLATES[kind]}
    for _ in range(draw(st.integers(1, 3))):
        how = draw(st.sampled_from(["drop", "wrong", "type", "extra", "entries", "serialized"]))
        if how == "drop" and msg:
            del msg[list(msg)[draw(st.integers(0, len(msg) - 1))]]
        elif how == "wrong":
            msg[draw(st.sampled_from(FIELDS))] = draw(wrong_value)
        elif how == "type":
            msg["type"] = draw(st.one_of(st.text(max_size=16), garbage))
        elif how == "extra":
            msg[draw(keys)] = draw(garbage)
        elif how == "entries":
            entry = st.lists(st.one_of(st.binary(max_size=8), st.integers(-(2**63), 2**64 - 1), garbage),
                             max_size=4)
            msg["entries"] = draw(st.one_of(st.lists(entry, max_size=4), garbage))
        else:
            msg["serialized"] = draw(st.one_of(st.lists(st.one_of(st.binary(max_size=8), st.booleans(), garbage),
                                                        max_size=4), garbage))
    return msg


raft_message = st.one_of(mutated_message(), mutated_message(), garbage)


def frame(obj: Any) -> bytes:
    body = msgpack.packb(obj, use_bin_type=True)
    return struct.pack(">I", len(body)) + body


hello_payload = st.one_of(
    st.binary(max_size=64),  # not even a frame
    st.builds(frame, garbage),  # a frame, not a hello
    st.builds(lambda i, m: frame({"id": i, "mac": m}),
              st.one_of(st.sampled_from(["n1", "n2", "n3", "", "n2\x00"]), garbage),
              st.one_of(st.binary(max_size=40), garbage)),  # a hello with a wrong id or MAC
    st.builds(lambda n, rest: struct.pack(">I", n) + rest,
              st.integers(0, 2**32 - 1), st.binary(max_size=16)),  # a length header, any length
)

after_hello = st.one_of(
    st.binary(max_size=64),
    st.builds(frame, garbage),  # a frame that is not a batch of [group, message] pairs
    st.builds(lambda n, rest: struct.pack(">I", n) + rest, st.integers(0, 2**32 - 1), st.binary(max_size=16)),
)


# --- the target ---------------------------------------------------------------------------------------


class Target:
    """n1 of a running cluster, and how to talk to its peer port."""

    def __init__(self, info: launcher.ClusterInfo) -> None:
        self.info = info
        self.peer = info.node("n1").peer
        self.secret = cluster_secret(info)
        self.groups = [g["id"] for g in node_status(info, "n1")["groups"]]
        self.pid = info.pids["n1"]
        self.examples = 0

    def finish(self, s: socket.socket) -> None:
        """Half-close and wait for the node to close too: it has then read everything we sent."""
        try:
            s.shutdown(socket.SHUT_WR)
            s.settimeout(30)  # a node that never closes fails the example (TimeoutError)
            while s.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass  # reset by the node: it refused us, which is fine
        finally:
            s.close()
        self.examples += 1
        assert psutil.Process(self.pid).status() != psutil.STATUS_ZOMBIE

    def raw(self, payload: bytes) -> None:
        s = socket.create_connection(self.peer, timeout=30)
        assert recv_message(s) is not None  # the nonce: the node still accepts us
        try:
            s.sendall(payload)
        except (ConnectionResetError, BrokenPipeError):
            pass  # the node refused us before we were done
        self.finish(s)

    def as_peer(self, payload: bytes) -> None:
        s = dial_as(self.peer, "n2", self.secret, timeout=30)
        try:
            s.sendall(payload)
        except (ConnectionResetError, BrokenPipeError):
            pass
        self.finish(s)


@pytest.fixture(scope="module")
def target(tmp_path_factory) -> Iterator[Target]:
    with launched(tmp_path_factory.mktemp("fuzz") / "cluster", nodes=3, shards=2) as info:
        t = Target(info)
        yield t
        # the campaign is over: the node is alive, serves clients, and logged no traceback
        assert psutil.Process(t.pid).status() != psutil.STATUS_ZOMBIE
        assert_serves_clients(info)
        for node in info.nodes:
            text = node_log(info, node.id)
            assert "Traceback" not in text, f"{node.id}: {text[text.index('Traceback') - 300:][:3000]}"


def campaign(max_examples: int) -> Any:
    return settings(max_examples=max_examples, deadline=None, derandomize=True, database=None,
                    phases=[Phase.explicit, Phase.generate],  # a node's state does not shrink well
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def _hellos(target: Target, payload: bytes) -> None:
    target.raw(payload)


def _frames(target: Target, payload: bytes) -> None:
    target.as_peer(payload)


def _messages(target: Target, data: st.DataObject) -> None:
    group = st.one_of(st.sampled_from(target.groups), st.text(max_size=8))
    batch = data.draw(st.lists(st.tuples(group, raft_message).map(list), min_size=1, max_size=6))
    target.as_peer(encode(batch, max_frame=1 << 20))


# --- quick campaigns (every run) ----------------------------------------------------------------------


@campaign(60)
@given(payload=hello_payload)
def test_fuzz_hellos(target, payload):
    _hellos(target, payload)


@campaign(60)
@given(payload=after_hello)
def test_fuzz_frames_after_a_good_hello(target, payload):
    _frames(target, payload)


@campaign(120)
@given(data=st.data())
def test_fuzz_raft_messages(target, data):
    _messages(target, data)


def test_node_serves_clients_after_the_quick_campaigns(target):
    assert target.examples > 0
    assert_serves_clients(target.info, range(11, 2**64, 2**61))


# --- the long campaign (-m slow) ----------------------------------------------------------------------


@pytest.mark.slow
@campaign(300)
@given(payload=st.one_of(hello_payload, hello_payload.map(lambda p: p * 3)))
def test_fuzz_hellos_long(target, payload):
    _hellos(target, payload)


@pytest.mark.slow
@campaign(300)
@given(data=st.data())
def test_fuzz_raft_messages_long(target, data):
    _messages(target, data)


@pytest.mark.slow
def test_node_serves_clients_after_the_long_campaigns(target):
    assert_serves_clients(target.info, range(13, 2**64, 2**61))

"""The peer port against hostile or broken dialers: forged numbers, malformed messages, idle and slow
connections, descriptor exhaustion; and the launcher's cluster secret.

Node processes are real (started by the launcher, on free 127.0.0.1 ports, killed by PID after);
the hub-level tests drive a real PeerHub on real sockets from the test thread.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import hmac
import io
import logging
import os
import resource
import select
import selectors
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

from raftkv import Client
from raftkv.client.rpc import call
from raftkv.cluster import launcher
from raftkv.errors import StorageError
from raftkv.logs import LogLimiter
from raftkv.protocol.codec import encode
from raftkv.replication.snapshot import MAX_INT, encode_stream, read_stream
from raftkv.replication.transport import (
    HANDSHAKE_TIMEOUT,
    MAX_LINKS_PER_PEER,
    MAX_PENDING_HANDSHAKES,
    PeerHub,
    check_peer_message,
)

from ..helpers import recv_message, signal_ours, wait_until
from .harness import LocalCluster

pytestmark = pytest.mark.timeout(180)

HUGE = 2**64 - 1


# --- helpers shared with tests/fuzz ---------------------------------------------------------------


@contextlib.contextmanager
def launched(root: Path, nofile: int | None = None, **kwargs: Any) -> Iterator[launcher.ClusterInfo]:
    """A launcher cluster in ``root``, stopped afterwards and every process naming ``root`` killed.

    ``nofile`` lowers the nodes' descriptor limit: children inherit it from us, so ours is lowered
    only while they are spawned.
    """
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        if nofile is not None:
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, saved[1]))
        try:
            info = launcher.start(root, wait=60.0, **kwargs)
        finally:
            resource.setrlimit(resource.RLIMIT_NOFILE, saved)
        yield info
    finally:
        with contextlib.suppress(Exception):
            launcher.stop(root, timeout=5.0)
        signal_ours(None, root)  # every process naming our directory: also one whose start failed


def cluster_secret(info: launcher.ClusterInfo) -> bytes:
    """The secret the launcher gave the cluster, as the nodes read it."""
    with open(os.path.join(info.data_dir, launcher.SECRET_FILE), "rb") as f:
        return f.read().strip()


def dial_as(address: tuple[str, int], node_id: str, secret: bytes | None, timeout: float = 10.0) -> socket.socket:
    """Connect to a peer port and complete the hello as ``node_id`` (a correct MAC if ``secret``)."""
    s = socket.create_connection(address, timeout=timeout)
    challenge = recv_message(s)
    mac = hmac.new(secret, challenge["nonce"] + node_id.encode(), hashlib.sha256).digest() if secret else b""
    s.sendall(encode({"id": node_id, "mac": mac}))
    return s


def node_log(info: launcher.ClusterInfo, node_id: str) -> str:
    with open(os.path.join(info.node_dir(node_id), launcher.LOG_FILE), "rb") as f:
        return f.read().decode(errors="replace")


def node_status(info: launcher.ClusterInfo, node_id: str) -> dict[str, Any]:
    return call(launcher.format_hostport(info.node(node_id).client), "status", timeout=2.0)


def assert_serves_clients(info: launcher.ClusterInfo, keys: range = range(0, 2**64, 2**60)) -> None:
    """A put and a get through the client for keys spread over every shard."""
    with Client(info.seeds, timeout=30.0) as db:
        for k in keys:
            db.put(k, f"v{k}".encode())
        for k in keys:
            assert db.get(k) == f"v{k}".encode()


def wait_loop_turns(info: launcher.ClusterInfo, node_id: str, turns: int = 3) -> None:
    """Wait until the node's Raft loop has completed a few more iterations (so it read what we sent)."""
    start = node_status(info, node_id)["raft_iterations"]
    wait_until(lambda: node_status(info, node_id)["raft_iterations"] >= start + turns, 30, "raft loop turns")


# --- check_peer_message (pure) ----------------------------------------------------------------------

GOOD = [
    {"type": "request_vote", "term": 3, "last_log_index": 10, "last_log_term": 2},
    {"type": "response_vote", "term": 3},
    {"type": "timeout_now", "term": 3},
    {"type": "append_entries", "term": 3, "commit_index": 5, "prevLogIdx": 4, "prevLogTerm": 2,
     "entries": [[b"\x00a", 5, 2], [b"\x00b", 6, 3]], "rs": 17},
    {"type": "append_entries", "term": 3, "commit_index": 5, "prevLogIdx": 4, "prevLogTerm": 2},
    {"type": "append_entries", "term": 3, "commit_index": 5, "prevLogIdx": None, "prevLogTerm": None,
     "entries": []},
    {"type": "append_entries", "term": 3, "commit_index": 5, "serialized": [b"chunk", True, False]},
    {"type": "append_entries", "term": 3, "commit_index": 5, "serialized": None},
    {"type": "next_node_idx", "next_node_idx": 7, "reset": False, "success": True, "ra": 17},
    {"type": "response_vote", "term": MAX_INT, "someday": [{"new": "field"}]},  # unknown fields are ignored
]

BAD = [
    ("forged vote", {"type": "request_vote", "term": HUGE, "last_log_index": 1, "last_log_term": 1}),
    ("just past int64", {"type": "response_vote", "term": MAX_INT + 1}),
    ("negative", {"type": "timeout_now", "term": -1}),
    ("bool term", {"type": "response_vote", "term": True}),
    ("float term", {"type": "response_vote", "term": 3.0}),
    ("str term", {"type": "response_vote", "term": "3"}),
    ("missing term", {"type": "request_vote", "last_log_index": 1, "last_log_term": 1}),
    ("missing field", {"type": "request_vote", "term": 1, "last_log_term": 1}),
    ("unknown type", {"type": "install_snapshot", "term": 1}),
    ("type not a str", {"type": ["request_vote"], "term": 1}),
    ("no type", {"term": 1}),
    ("not a map", ["request_vote", 1]),
    ("pickle path", {"type": "append_entries", "term": 3, "commit_index": 1, "prevLogIdx": 1,
                     "prevLogTerm": 1, "transmission": "start", "data": b"\x80\x04"}),
    ("neither form", {"type": "append_entries", "term": 3, "commit_index": 1}),
    ("huge commit", {"type": "append_entries", "term": 3, "commit_index": HUGE, "prevLogIdx": 1, "prevLogTerm": 1}),
    ("entries not a list", {"type": "append_entries", "term": 3, "commit_index": 1, "prevLogIdx": 1,
                            "prevLogTerm": 1, "entries": {"a": 1}}),
    ("entry not a triple", {"type": "append_entries", "term": 3, "commit_index": 1, "prevLogIdx": 1,
                            "prevLogTerm": 1, "entries": [[b"x", 2]]}),
    ("entry command not bytes", {"type": "append_entries", "term": 3, "commit_index": 1, "prevLogIdx": 1,
                                 "prevLogTerm": 1, "entries": [[10**9, 2, 1]]}),
    ("entry index gap", {"type": "append_entries", "term": 3, "commit_index": 1, "prevLogIdx": 1,
                         "prevLogTerm": 1, "entries": [[b"x", 3, 1]]}),
    ("entry huge index", {"type": "append_entries", "term": 3, "commit_index": 1, "prevLogIdx": MAX_INT,
                          "prevLogTerm": 1, "entries": [[b"x", MAX_INT + 1, 1]]}),
    ("entry term above message term", {"type": "append_entries", "term": 3, "commit_index": 1, "prevLogIdx": 1,
                                       "prevLogTerm": 1, "entries": [[b"x", 2, 4]]}),
    ("entry terms go down", {"type": "append_entries", "term": 3, "commit_index": 1, "prevLogIdx": 1,
                             "prevLogTerm": 2, "entries": [[b"x", 2, 1]]}),
    ("prev term above term", {"type": "append_entries", "term": 3, "commit_index": 1, "prevLogIdx": 1,
                              "prevLogTerm": 4}),
    ("prev None with entries", {"type": "append_entries", "term": 3, "commit_index": 1, "prevLogIdx": None,
                                "prevLogTerm": None, "entries": [[b"x", 2, 1]]}),
    ("bad snapshot chunk", {"type": "append_entries", "term": 3, "commit_index": 1, "serialized": [b"x", 1, 0]}),
    ("bad reset", {"type": "next_node_idx", "next_node_idx": 3, "reset": 0, "success": True}),
    ("huge next index", {"type": "next_node_idx", "next_node_idx": HUGE, "reset": True, "success": True}),
    ("bad stamp", {"type": "append_entries", "term": 3, "commit_index": 1, "prevLogIdx": 1, "prevLogTerm": 1,
                   "rs": -5}),
    # replicas never forward commands (a forwarded copy could commit after its client's retry)
    ("forwarded command", {"type": "apply_command", "command": b"\x00x", "request_id": 1}),
    ("forwarded command's answer", {"type": "apply_command_response", "request_id": 1, "log_idx": 9,
                                    "log_term": 3}),
]


@pytest.mark.parametrize("msg", GOOD, ids=[f"{m['type']}-{i}" for i, m in enumerate(GOOD)])
def test_well_formed_messages_pass(msg):
    assert check_peer_message(msg) is None


@pytest.mark.parametrize("msg", [m for _, m in BAD], ids=[name for name, _ in BAD])
def test_malformed_messages_are_named(msg):
    reason = check_peer_message(msg)
    assert isinstance(reason, str) and 0 < len(reason) < 200


@pytest.mark.parametrize("prev", [[b"", 2**64 - 1, 1], [b"", 5, -1], [7, 5, 1], [b"", 5], None])
def test_a_snapshot_header_with_unstorable_entries_is_refused_before_install(prev):
    """A snapshot's header entries become the journal's first entries: range-checked like messages."""
    blob = b"".join(encode_stream({"index": 3, "last": [b"", 6, 1], "prev": prev}, iter([(b"k", b"v")])))
    with pytest.raises(StorageError):
        read_stream(io.BytesIO(blob))


def test_log_limiter_says_one_line_per_key_per_interval(caplog):
    now = [0.0]
    limiter = LogLimiter(logging.getLogger("test.limiter"), interval=10.0, clock=lambda: now[0])
    with caplog.at_level("WARNING", logger="test.limiter"):
        assert limiter.log("peer n2", 30, "bad %s", 1)
        assert not any(limiter.log("peer n2", 30, "bad %s", i) for i in range(100))
        assert limiter.log("peer n3", 30, "bad %s", 2)  # another peer has its own budget
        now[0] = 11.0
        assert limiter.log("peer n2", 30, "bad %s", 3)
        assert not limiter.log("peer n2", 30, "bad %s", 4)
        limiter.flush()  # n2's interval is not over: nothing yet
        limiter.flush(final=True)  # closing: say what was held back
    assert [r.getMessage() for r in caplog.records] == [
        "bad 1", "bad 2", "bad 3 (and 100 more like it since the last such line)",
        "peer n2: 1 more like the last line about it"]


# --- forged numbers and malformed messages against a node process -------------------------------------


@pytest.fixture(scope="module")
def three_nodes(tmp_path_factory) -> Iterator[launcher.ClusterInfo]:
    with launched(tmp_path_factory.mktemp("hardening") / "cluster", nodes=3, shards=2) as info:
        yield info


def test_a_forged_vote_with_a_huge_term_is_dropped_and_the_node_keeps_working(three_nodes):
    """The fuzzer's wedge: a term of 2**64-1 made every fsync of n1 fail (OverflowError) for ever."""
    info = three_nodes
    groups = [g["id"] for g in node_status(info, "n1")["groups"]]
    with dial_as(info.node("n1").peer, "n2", cluster_secret(info)) as s:
        s.sendall(encode([[g, {"type": "request_vote", "term": HUGE, "last_log_index": HUGE,
                               "last_log_term": HUGE}] for g in groups]))
        s.sendall(encode([[g, {"type": "append_entries", "term": HUGE, "commit_index": HUGE,
                               "prevLogIdx": HUGE, "prevLogTerm": HUGE, "entries": []}] for g in groups]))
        # storable, but no honest term is ever that far ahead: adopting it would leave the groups at
        # a term whose successor (2**63) no node accepts, leaderless for good
        s.sendall(encode([[g, {"type": "request_vote", "term": MAX_INT, "last_log_index": MAX_INT,
                               "last_log_term": MAX_INT}] for g in groups]))
        wait_loop_turns(info, "n1")
        assert_serves_clients(info)

        def n1_healthy() -> bool:
            st = node_status(info, "n1")
            return all(g["term"] <= 10**6 and g["leader"] is not None and g["applied"] >= g["commit"] - 5
                       for g in st["groups"])

        wait_until(n1_healthy, 60, "n1 to keep sane terms and follow a leader in every group")
    assert psutil.Process(info.pids["n1"]).status() != psutil.STATUS_ZOMBIE
    assert "Traceback" not in node_log(info, "n1")


def test_malformed_messages_log_one_concise_line_per_peer(three_nodes):
    info = three_nodes
    groups = [g["id"] for g in node_status(info, "n1")["groups"]]
    missing_term = {"type": "request_vote", "last_log_index": 1, "last_log_term": 1}
    batch = [[groups[i % len(groups)], missing_term] for i in range(300)]
    batch += [[groups[0], {"type": "next_node_idx", "next_node_idx": "x"}], [groups[0], {"type": 7}]]
    with dial_as(info.node("n1").peer, "n3", cluster_secret(info)) as s:
        s.sendall(encode(batch))  # one frame: the node handles all of it in one go
        wait_loop_turns(info, "n1", 5)
        wait_until(lambda: any("n3" in line and "dropped" in line for line in node_log(info, "n1").splitlines()),
                   30, "a complaint about n3")
    text = node_log(info, "n1")
    lines = [line for line in text.splitlines() if "n3" in line and "dropped" in line]
    assert len(lines) == 1, lines[:3]
    assert "peer n3" in lines[0] and "dropped a malformed message" in lines[0] and "without 'term'" in lines[0]
    assert "Traceback" not in text
    assert_serves_clients(info, range(5, 2**64, 2**61))


# --- idle, slow and too many connections --------------------------------------------------------------


def test_idle_connections_neither_exhaust_descriptors_nor_stop_the_node(tmp_path):
    """The fuzzer's freeze: ~1,000 silent dialers made accept() fail with EMFILE on every iteration."""
    limit = 160  # a node uses ~25 descriptors; the rest must suffice for the hub's caps and clients
    with launched(tmp_path / "cluster", nofile=limit, nodes=1, shards=1, replication=1) as info:
        peer = info.node("n1").peer
        idle = []
        try:
            for _ in range(2 * limit):
                s = socket.socket()
                s.setblocking(False)
                s.connect_ex(peer)  # completes in the kernel's backlog, or waits there: either way silent
                idle.append(s)
            assert_serves_clients(info, range(1, 2**64, 2**62))
            # the node made room by closing the oldest silent dialers
            wait_until(lambda: _closed_by_peer(idle[0]), 30, "the oldest idle connection to be closed")
            assert_serves_clients(info, range(2, 2**64, 2**62))
        finally:
            for s in idle:
                s.close()
        assert "Traceback" not in node_log(info, "n1")


def _closed_by_peer(s: socket.socket) -> bool:
    """Whether the node closed this (non-blocking) connection; reads and discards its nonce."""
    try:
        while data := s.recv(4096):
            del data
        return True
    except (BlockingIOError, InterruptedError):
        return False
    except OSError as exc:
        return exc.errno != errno.ENOTCONN  # ENOTCONN: still connecting


def test_a_hello_trickled_byte_by_byte_is_cut_off(tmp_path):
    with launched(tmp_path / "cluster", nodes=1, shards=1, replication=1) as info:
        hello = encode({"id": "n9", "mac": b"", "pad": b"p" * 400})  # a long hello, sent 1 byte at a time
        with socket.create_connection(info.node("n1").peer, timeout=10) as s:
            assert recv_message(s) is not None  # the nonce
            cut = False
            for i in range(len(hello) - 1):  # never the last byte: a complete hello would be refused anyway
                try:
                    s.sendall(hello[i:i + 1])
                except OSError:
                    cut = True
                    break
                if _readable_eof(s):
                    cut = True
                    break
                time.sleep(0.05)
            assert cut, "the node waited for the whole trickled hello"
        assert_serves_clients(info, range(3, 2**64, 2**62))


def _readable_eof(s: socket.socket) -> bool:
    if not select.select([s], [], [], 0)[0]:
        return False
    try:
        return s.recv(1) == b""
    except OSError:
        return True


class _Hub:
    """A real PeerHub on 127.0.0.1, driven from the test thread as the Raft loop would drive it."""

    def __init__(self, peers: tuple[str, ...] = ("n2", "n3")) -> None:
        self.sel = selectors.DefaultSelector()
        self.delivered: list[tuple[str, str, dict]] = []
        addresses = {"n1": ("127.0.0.1", 0), **{p: ("127.0.0.1", 9) for p in peers}}
        self.hub = PeerHub("n1", ("127.0.0.1", 0), addresses, self.sel,
                           lambda *m: self.delivered.append(m), lambda *a: None)

    def turn(self, rounds: int = 5, now: float | None = None) -> None:
        for _ in range(rounds):
            for key, mask in self.sel.select(0.05):
                key.data(mask)
            if now is not None:
                self.hub.maintain(now)

    def connect(self) -> socket.socket:
        """A connection the hub has accepted (its nonce is waiting for us)."""
        s = socket.create_connection(self.hub.address, timeout=5)
        for _ in range(200):
            if select.select([s], [], [], 0)[0]:
                return s
            self.turn(1)
        raise AssertionError("the hub did not accept the connection")

    def dial_as(self, node_id: str) -> socket.socket:
        s = self.connect()
        challenge = recv_message(s)
        assert challenge is not None
        s.sendall(encode({"id": node_id, "mac": b""}))  # this hub runs without a secret
        self.turn(1)
        return s

    def close(self) -> None:
        self.hub.close()
        self.sel.close()


@pytest.fixture
def hub() -> Iterator[_Hub]:
    h = _Hub()
    yield h
    h.close()


def test_pending_handshakes_are_capped_oldest_closed_first(hub):
    socks = [hub.connect() for _ in range(MAX_PENDING_HANDSHAKES + 6)]
    try:
        pending, authenticated = hub.hub.inbound_count
        assert pending == MAX_PENDING_HANDSHAKES and authenticated == 0
        for s in socks[:6]:  # the oldest: nonce, then closed
            assert recv_message(s) is not None and s.recv(10) == b""
        socks[-1].settimeout(1)
        assert recv_message(socks[-1]) is not None  # the newest is open, awaiting its hello
    finally:
        for s in socks:
            s.close()


def test_handshake_timeout_closes_silent_dialers(hub):
    socks = [hub.connect() for _ in range(3)]
    try:
        hub.turn(2, now=time.monotonic())
        assert hub.hub.inbound_count == (3, 0)
        hub.turn(2, now=time.monotonic() + HANDSHAKE_TIMEOUT + 1)
        assert hub.hub.inbound_count == (0, 0)
        for s in socks:
            assert recv_message(s) is not None and s.recv(10) == b""
    finally:
        for s in socks:
            s.close()


def test_authenticated_links_per_peer_are_capped(hub):
    socks = [hub.dial_as("n2") for _ in range(MAX_LINKS_PER_PEER + 2)]
    try:
        hub.turn(5)
        assert hub.hub.inbound_count == (0, MAX_LINKS_PER_PEER)
        for s in socks[:2]:
            assert s.recv(10) == b""
        socks[-1].sendall(encode([["g1", {"type": "response_vote", "term": 1}],
                                  ["g1", {"type": "response_vote", "term": HUGE}]]))
        hub.turn(5)
        assert hub.delivered == [("n2", "g1", {"type": "response_vote", "term": 1})]
        assert hub.hub.dropped_messages == 1
    finally:
        for s in socks:
            s.close()


def test_running_out_of_descriptors_pauses_accepting_instead_of_raising(hub, caplog):
    clients = [socket.create_connection(hub.hub.address, timeout=5) for _ in range(10)]  # in the backlog
    saved = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        with caplog.at_level("WARNING", logger="raftkv.replication.transport"):
            resource.setrlimit(resource.RLIMIT_NOFILE, (_limit_leaving_free(2), saved[1]))
            try:
                hub.turn(20)  # accept() hits EMFILE: must not raise, must not spin on the listener
            finally:
                resource.setrlimit(resource.RLIMIT_NOFILE, saved)
        starved = [r for r in caplog.records if "cannot accept" in r.getMessage()]
        assert len(starved) == 1
        hub.turn(40, now=time.monotonic() + 1)  # descriptors are back: it listens again
        answered = 0
        for c in clients:
            msg = recv_message(c)  # a nonce, or EOF for the one closed to free a descriptor
            answered += msg is not None
        assert answered >= len(clients) - 1
    finally:
        for c in clients:
            c.close()


def _limit_leaving_free(free: int) -> int:
    """An RLIMIT_NOFILE under which exactly ``free`` more descriptors can be opened (it bounds fd numbers)."""
    top = max(int(fd) for fd in os.listdir("/proc/self/fd"))

    def is_open(fd: int) -> bool:
        try:
            os.fstat(fd)
        except OSError:
            return False
        return True

    limit = available = 0
    while available < free:
        available += not is_open(limit) and limit <= top + free
        limit += 1
    return limit


# --- a journal that cannot serialise its state stops the node -----------------------------------------


def test_a_journal_that_cannot_serialise_its_state_stops_the_node_loudly(tmp_path):
    """A bug that made the journal hold an unstorable term must not leave the loop spinning."""
    script = textwrap.dedent(f"""
        import logging, os, time
        from raftkv.replication.group import RaftGroup, RaftOptions
        from raftkv.replication.loop import RaftLoop
        from raftkv.storage.leveldb import NodeStore
        logging.basicConfig(level=logging.INFO)
        root = {str(tmp_path)!r}
        loop = RaftLoop("n1", ("127.0.0.1", 0), {{"n1": ("127.0.0.1", 0)}})
        kv = NodeStore(os.path.join(root, "store"))
        loop.before_release(kv.flush_durable)
        g = RaftGroup("g1", "n1", ["n1"], kv.replica("g1"), kv.raft_log("g1"), os.path.join(root, "g1"),
                      loop.hub, RaftOptions(heartbeat=0.05, election_min=0.2, election_max=0.4))
        loop.add_group(g)
        loop.start()
        while not g.leader_ready:
            time.sleep(0.01)
        print("term", g.term, flush=True)
        loop.call_soon(lambda: g.journal.setCurrentTerm(2**64, None))  # the bug: unstorable in 64 bits
        time.sleep(30)
        print("still running", flush=True)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60,
                          cwd=os.getcwd())
    assert proc.returncode == 70, proc.stdout + proc.stderr
    assert "still running" not in proc.stdout
    assert "cannot serialise its state" in proc.stderr
    # the term on disk is still the last one that could be stored: a restart recovers
    term = int(proc.stdout.split()[1])
    import msgpack

    from raftkv.storage.leveldb import NodeStore

    kv = NodeStore(str(tmp_path / "store"))
    try:
        assert msgpack.unpackb(kv.raft_log("g1").hard_state())["term"] == term
    finally:
        kv.close()


# --- the launcher's cluster secret --------------------------------------------------------------------


def test_launcher_gives_a_new_cluster_a_private_secret(tmp_path):
    with launched(tmp_path / "cluster", nodes=3, shards=1) as info:
        path = os.path.join(info.data_dir, launcher.SECRET_FILE)
        assert os.stat(path).st_mode & 0o777 == 0o600
        assert len(cluster_secret(info)) >= 32
        for pid in info.pids.values():
            argv = psutil.Process(pid).cmdline()
            assert argv[argv.index("--secret-file") + 1] == path
        # a local process that merely names a peer is no longer a peer
        with socket.create_connection(info.node("n1").peer, timeout=10) as s:
            recv_message(s)
            s.sendall(encode({"id": "n2", "mac": b""}))
            assert s.recv(10) == b""
        assert_serves_clients(info, range(4, 2**64, 2**62))


def test_a_running_cluster_without_a_secret_gets_one_only_once_all_nodes_are_down(tmp_path):
    root = tmp_path / "cluster"
    with launched(root, nodes=3, shards=1) as info:
        launcher.stop(root)
        os.remove(os.path.join(info.data_dir, launcher.SECRET_FILE))  # as made by an older launcher
        for nid in ("n2", "n3"):
            launcher._spawn(info, nid)  # two nodes run without a secret
        again = launcher.start(root, nodes=None, shards=None, replication=None, wait=60.0)  # starts n1: it must be able to join them
        assert not os.path.exists(os.path.join(info.data_dir, launcher.SECRET_FILE))
        assert all("--secret-file" not in psutil.Process(p).cmdline() for p in again.pids.values())
        assert_serves_clients(again, range(6, 2**64, 2**62))
        launcher.stop(root)
        third = launcher.start(root, nodes=None, shards=None, replication=None, wait=60.0)  # everything was down: now it gets one
        assert os.path.exists(os.path.join(info.data_dir, launcher.SECRET_FILE))
        assert all("--secret-file" in psutil.Process(p).cmdline() for p in third.pids.values())
        assert_serves_clients(third, range(7, 2**64, 2**62))


def _on_loop(cluster, nid: str, fn):
    """Run ``fn`` on node ``nid``'s Raft thread (the serializer's only thread) and return its result."""
    done, box = threading.Event(), []
    cluster.loops[nid].call_soon(lambda: (box.append(fn()), done.set()))
    assert done.wait(10)
    return box[0]


@pytest.mark.parametrize("stream", [b"garbage", b"\x00\x00\x00\x05\x93\x01\x02", b""])
def test_a_forged_snapshot_is_refused_in_one_line_and_changes_nothing(tmp_path, caplog, stream):
    """A peer's snapshot chunk that is not a valid stream: the replica keeps its state, and the log
    says so in one line (no traceback)."""
    c = LocalCluster(str(tmp_path))
    try:
        c.put(1, b"kept")
        leader_id, _ = c.leader()
        follower = next(n for n in c.ids if n != leader_id)
        c.wait_applied(c.loops[leader_id].groups["g1"].store.applied_index, nodes=[follower])
        serializer = c.loops[follower].groups["g1"].serializer
        with caplog.at_level("WARNING", logger="raftkv.replication.group"):
            assert _on_loop(c, follower, lambda: serializer.setTransmissionData((stream, True, True))) is False
            deadline = time.monotonic() + 10  # it is read off the Raft thread; the group's tick ends it
            while serializer.installing and time.monotonic() < deadline:
                time.sleep(0.02)
            assert not serializer.installing
        refusals = [r for r in caplog.records if r.name == "raftkv.replication.group"]
        assert [r.getMessage().startswith("snapshot refused") for r in refusals] == [True]
        assert refusals[0].exc_info is None
        assert dict(c.rows(follower)) == {1: b"kept"}
    finally:
        c.close()


def test_a_leader_that_never_compacted_has_no_snapshot_to_send(cluster):
    """Only a forged next_node_idx makes a leader that never compacted look for a snapshot."""
    leader_id, leader = cluster.leader()
    peer = leader.transport.nodes[next(n for n in cluster.ids if n != leader_id)]
    assert _on_loop(cluster, leader_id, lambda: leader.serializer.getTransmissionData(peer)) is None

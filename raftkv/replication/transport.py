"""One peer port per node, multiplexing every Raft group's traffic.

pysyncobj gives each Raft group its own port, threads and pickled, zlib'd
messages.  Instead, each node runs one :class:`PeerHub`: one listening socket,
one outbound connection to each peer node, and frames that carry a batch of
``[group_id, message]`` pairs encoded with msgpack -- never pickle, so nothing
that arrives on the peer port can build an arbitrary object.

Connections are one-way: a node *sends* on the connection it opened and
*receives* on the connections it accepted; this removes any who-dials-whom
tie-break.  A connection starts with a handshake: the acceptor sends a random
nonce, the dialer answers with its node id and, when a cluster secret is
configured, ``HMAC-SHA256(secret, nonce || id)``; the acceptor checks it before
taking any Raft message from that socket.

**Mutual TLS** (optional, :meth:`PeerHub.use_tls`): each connection first completes a TLS
handshake in which both sides present a certificate signed by the cluster's CA; the handshake
above then runs inside it.  The sockets stay non-blocking: the TLS handshake advances on
whichever readiness it asks for (``SSLWantReadError``/``SSLWantWriteError``), and reads drain
what the TLS layer has already decrypted, which the selector cannot see.

**Hostile input.**  Every Raft message is checked by :func:`check_peer_message`
before pysyncobj sees it (types, and every term and index an int in
``0..2**63-1``, so nothing a peer sends can make the journal unable to
serialise its state); a malformed one is dropped with one log line per peer
per interval.  The port holds at most ``MAX_PENDING_HANDSHAKES`` connections
that have not said hello and ``MAX_LINKS_PER_PEER`` per authenticated peer; a
dialer that has not completed its hello within ``HANDSHAKE_TIMEOUT`` is
closed; running out of file descriptors pauses accepting instead of raising
into the Raft loop.

**Durability contract.**  ``send`` only *stages* a message.  Replies, votes and
vote requests leave the process at :meth:`PeerHub.release`, which the Raft loop
calls only after fsyncing every journal; a writable-socket event only continues
writing bytes that were already released.  A leader's AppendEntries may leave
earlier (:meth:`PeerHub.release_early`): a leader's disk write may run in
parallel with replication, because the leader counts its own copy toward a
commit only after the fsync.

Everything here runs on the Raft loop thread.
"""

from __future__ import annotations

import errno
import hashlib
import hmac
import logging
import math
import os
import reprlib
import selectors
import socket
import ssl
import struct
import time
from collections.abc import Callable
from typing import Any

from ..errors import ACCEPT_STARVED, LocalProtocolError, ProtocolError
from ..logs import LogLimiter
from ..protocol.codec import NEED_DATA, FrameDecoder, array_header, encode, pack
from .snapshot import is_index

log = logging.getLogger(__name__)

PEER_MAX_FRAME = 64 * 1024 * 1024
FRAME_TARGET = 8 * 1024 * 1024  # split a peer's pending messages into frames of about this size
HELLO_MAX_FRAME = 4096  # what an unauthenticated dialer may send before we know who it is
RECONNECT_INTERVAL = 0.2
# Node-level liveness, one per pair of nodes rather than one per Raft group: a link that carried
# nothing for PING_INTERVAL gets an empty frame, so a peer silent for much longer is down or cut
# off even while its TCP connection looks open (a quiesced group relies on this, loop.py).
PING_INTERVAL = 0.5
_PING = struct.pack(">I", 1) + b"\x90"  # a frame holding an empty batch
_READ_CHUNK = 256 * 1024
MAX_PENDING_HANDSHAKES = 64  # accepted connections that have not authenticated yet
MAX_LINKS_PER_PEER = 4  # authenticated inbound connections per peer (one is normal; a reconnect overlaps)
HANDSHAKE_TIMEOUT = 3.0  # seconds a dialer has to complete its hello, however it trickles the bytes
ACCEPT_PAUSE = 0.5  # seconds to stop accepting after the process ran out of descriptors

Deliver = Callable[[str, str, dict[str, Any]], None]  # (peer_id, group_id, message)
LinkChange = Callable[[str, bool], None]  # (peer_id, up)


_WANT = (ssl.SSLWantReadError, ssl.SSLWantWriteError)


def peer_tls_contexts(cert: str, key: str, ca: str) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts for mutual TLS between peers: each side presents ``cert`` and
    wants the other's signed by ``ca``.  Host names are not checked: a peer may be dialled through
    a proxy (``--peer-via``), and which node it is, the HMAC hello tells."""
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    client = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client.check_hostname = False
    for ctx in (server, client):
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(cert, key)
        ctx.load_verify_locations(ca)
        ctx.verify_mode = ssl.CERT_REQUIRED
    return server, client


def _recv(sock: socket.socket, size: int) -> bytes | None:
    """What ``sock`` has (b"" at EOF or on an error, None if nothing yet), TLS-buffered bytes included."""
    try:
        data = sock.recv(size)
    except (BlockingIOError, InterruptedError, *_WANT):
        return None
    except OSError:
        return b""
    if data and isinstance(sock, ssl.SSLSocket):
        # decrypted bytes left in the TLS layer: the selector will not report them
        chunks = [data]
        while sock.pending():
            try:
                more = sock.recv(size)
            except (BlockingIOError, InterruptedError, *_WANT):
                break
            except OSError:
                break  # the next read reports it
            if not more:
                break
            chunks.append(more)
        data = b"".join(chunks)
    return data


def _handshake(sock: ssl.SSLSocket) -> int:
    """Advance a TLS handshake: 0 once done, else the selector events it waits for.

    Raises ``ssl.SSLError`` (or ``OSError``) if it failed."""
    try:
        sock.do_handshake()
    except ssl.SSLWantReadError:
        return selectors.EVENT_READ
    except ssl.SSLWantWriteError:
        return selectors.EVENT_WRITE
    return 0


def _mac(secret: bytes | None, nonce: bytes, node_id: str) -> bytes:
    if not secret:
        return b""
    return hmac.new(secret, nonce + node_id.encode(), hashlib.sha256).digest()


def frames(items: list[list[Any]], target: int = FRAME_TARGET) -> list[bytes]:
    """Encode ``items`` as frames of at most about ``target`` bytes each (one item may exceed it).

    A frame is a msgpack array; packing each item once and prefixing a count is the same bytes
    as packing the array, so splitting costs nothing extra.
    """
    out: list[bytes] = []
    packed: list[bytes] = []
    size = 0
    for item in items:
        body = pack(item)
        if packed and size + len(body) > target:
            out.append(_frame(packed))
            packed, size = [], 0
        packed.append(body)
        size += len(body)
    if packed:
        out.append(_frame(packed))
    return out


def _frame(packed: list[bytes]) -> bytes:
    body = array_header(len(packed)) + b"".join(packed)
    if len(body) > PEER_MAX_FRAME:
        raise LocalProtocolError(f"one peer message of {len(body)} bytes exceeds the frame limit")
    return struct.pack(">I", len(body)) + body


# --- what a peer may send ----------------------------------------------------------------------------



# Required fields per message type (pysyncobj reads them with message[...]) and their checks.
_REQUIRED: dict[str, dict[str, Callable[[Any], bool]]] = {
    "request_vote": {"term": is_index, "last_log_index": is_index, "last_log_term": is_index},
    "response_vote": {"term": is_index},
    "timeout_now": {"term": is_index},
    # pre-vote (prevote.py) and a follower's "your term is stale" (group.py), ours, not pysyncobj's
    "pre_vote": {"term": is_index, "last_log_index": is_index, "last_log_term": is_index},
    "pre_vote_ok": {"term": is_index},
    "pre_vote_no": {"term": is_index},
    "stale_term": {"term": is_index},
    "append_entries": {"term": is_index, "commit_index": is_index},
    "next_node_idx": {"next_node_idx": is_index, "reset": lambda v: type(v) is bool,
                      "success": lambda v: type(v) is bool},
    # No "apply_command" / "apply_command_response": our replicas never forward commands (a forwarded
    # copy could commit after its client's retry -- see RaftGroup._checkCommandsToApply), so a peer
    # that sends one is refused at the door rather than allowed to append any command it likes.
}
# Optional fields: checked when present.  rs/ra are GroupTransport's ReadIndex stamps.
_OPTIONAL: dict[str, Callable[[Any], bool]] = {
    "rs": is_index, "ra": is_index, "rq": lambda v: v is True,
}


def check_peer_message(msg: Any) -> str | None:
    """Why ``msg`` (one decoded Raft message from a peer) must be dropped, or None if it is well-formed.

    Pure.  Checks what pysyncobj and our journal rely on: the type is known; required fields are
    present with the right types; every term and index is an int in ``0..2**63-1`` (a bigger one
    would reach the journal, whose fsync could then never succeed); AppendEntries entries are
    ``[bytes, index, term]`` with consecutive indices after ``prevLogIdx`` and terms that never go
    down nor exceed the message's term; the pickled "transmission" path is refused.  Unknown extra
    fields are allowed: pysyncobj never reads them.
    """
    if not isinstance(msg, dict):
        return "not a map"
    kind = msg.get("type")
    required = _REQUIRED.get(kind) if isinstance(kind, str) else None
    if required is None:
        return f"unknown message type {_short(kind)}"
    for name, ok in required.items():
        if name not in msg:
            return f"{kind} without {name!r}"
        if not ok(msg[name]):
            return f"{kind} with a bad {name!r}: {_short(msg[name])}"
    for name, ok in _OPTIONAL.items():
        if name in msg and not ok(msg[name]):
            return f"{kind} with a bad {name!r}: {_short(msg[name])}"
    if kind == "append_entries":
        return _check_append_entries(msg)
    return None


def _check_append_entries(msg: dict[str, Any]) -> str | None:
    if "transmission" in msg:
        return "append_entries on the pickled transmission path"
    term = msg["term"]
    if "prevLogIdx" in msg:
        prev_idx, prev_term = msg["prevLogIdx"], msg.get("prevLogTerm", "missing")
        entries = msg.get("entries", [])
        if not isinstance(entries, list):
            return f"append_entries with bad entries: {_short(entries)}"
        if prev_idx is None:
            # pysyncobj's leader sends None when the follower's next index lies past its log end;
            # then it has nothing to send, and the follower answers with its own log end
            if prev_term is not None or entries:
                return "append_entries with prevLogIdx None but a prevLogTerm or entries"
            return None
        if not (is_index(prev_idx) and is_index(prev_term)):
            return f"append_entries with a bad prevLogIdx/prevLogTerm: {_short(prev_idx)}/{_short(prev_term)}"
        if prev_term > term:
            return "append_entries whose prevLogTerm exceeds its term"
        last_term = prev_term
        for i, entry in enumerate(entries):
            if not (isinstance(entry, list) and len(entry) == 3 and type(entry[0]) is bytes
                    and is_index(entry[1]) and is_index(entry[2])):
                return f"append_entries with a malformed entry: {_short(entry)}"
            if entry[1] != prev_idx + 1 + i:
                return "append_entries whose entry indices do not follow prevLogIdx"
            if not last_term <= entry[2] <= term:
                return "append_entries whose entry terms go down or exceed its term"
            last_term = entry[2]
        return None
    if "serialized" in msg:
        data = msg["serialized"]
        if data is None or (isinstance(data, list) and len(data) == 3 and type(data[0]) is bytes
                            and type(data[1]) is bool and type(data[2]) is bool):
            return None
        return f"append_entries with a malformed snapshot chunk: {_short(data)}"
    return "append_entries with neither prevLogIdx nor serialized"


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxstring, _REPR.maxother, _REPR.maxlist, _REPR.maxdict = 2, 40, 40, 4, 4


def _short(value: Any) -> str:
    """A bounded repr for log lines: hostile values can be megabytes, or nested deep."""
    if isinstance(value, bytes):
        return f"<{len(value)} bytes>" if len(value) > 16 else repr(value)
    return _REPR.repr(value)


class _Outbound:
    """Our connection to one peer; we only send on it."""

    def __init__(self, peer_id: str, address: tuple[str, int]) -> None:
        self.peer_id = peer_id
        self.address = address
        self.sock: socket.socket | None = None
        self.state = "down"  # down -> connecting -> handshake -> up
        self.decoder = FrameDecoder(4096)
        self.staged: list[list[Any]] = []
        self.early: list[list[Any]] = []  # leader AppendEntries: may leave before the fsync
        self.out = bytearray()
        self.next_attempt = 0.0
        self.last_sent = 0.0


class _Inbound:
    """A connection a peer opened to us; we only receive on it."""

    def __init__(self, sock: socket.socket, nonce: bytes, deadline: float) -> None:
        self.sock = sock
        self.nonce = nonce
        self.deadline = deadline  # the hello must be complete by then (the TLS handshake too)
        self.peer_id: str | None = None
        self.tls_done = not isinstance(sock, ssl.SSLSocket)
        self.decoder = FrameDecoder(HELLO_MAX_FRAME)  # raised to PEER_MAX_FRAME once authenticated


class PeerHub:
    """The node's peer endpoint.  Owns sockets; of Raft it knows group ids and message shapes only."""

    def __init__(self, self_id: str, bind: tuple[str, int], peers: dict[str, tuple[str, int]],
                 selector: selectors.BaseSelector, deliver: Deliver, link_change: LinkChange,
                 secret: bytes | None = None) -> None:
        self.self_id = self_id
        self._sel = selector
        self._deliver = deliver
        self._link_change = link_change
        self._secret = secret
        self._out = {pid: _Outbound(pid, addr) for pid, addr in peers.items() if pid != self_id}
        self._in: dict[socket.socket, _Inbound] = {}  # in accept order: the oldest come first
        self._complaints = LogLimiter(log)
        self._listener = socket.create_server(bind, reuse_port=False, backlog=64)
        self._listener.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, self._on_accept)
        self._accepting = True
        self._accept_resume = 0.0  # when to listen again after running out of descriptors
        self._starved: str | None = None  # why accept() last failed for want of resources, until one succeeds
        self.dropped_messages = 0  # malformed Raft messages dropped (for tests and status)
        self._tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None  # (server, client): use_tls
        self._heard: dict[str, float] = {}  # peer -> when its last frame arrived

    def use_tls(self, server: ssl.SSLContext, client: ssl.SSLContext) -> None:
        """Speak TLS on every peer connection from now on (:func:`peer_tls_contexts`): accepted
        ones with ``server``, dialled ones with ``client``.  Call before the loop starts."""
        self._tls = (server, client)

    @property
    def address(self) -> tuple[str, int]:
        """The bound peer address."""
        return self._listener.getsockname()[:2]

    def silent_for(self, peer_id: str, now: float) -> float:
        """Seconds since anything arrived from ``peer_id`` (inf if nothing ever did)."""
        return now - self._heard.get(peer_id, -math.inf)

    def is_up(self, peer_id: str) -> bool:
        """Whether our outbound link to ``peer_id`` is established and authenticated."""
        ob = self._out.get(peer_id)
        return ob is not None and ob.state == "up"

    def up_peers(self) -> list[str]:
        """Peers we can currently send to."""
        return [pid for pid, ob in self._out.items() if ob.state == "up"]

    def send(self, peer_id: str, group_id: str, message: dict[str, Any]) -> bool:
        """Stage ``message`` for ``peer_id``; False if the link is down (pysyncobj then treats it as lost)."""
        ob = self._out.get(peer_id)
        if ob is None or ob.state != "up":
            return False
        (ob.early if message.get("type") == "append_entries" else ob.staged).append([group_id, message])
        return True

    def backlog(self, peer_id: str) -> int:
        """Bytes released or staged but not yet written to ``peer_id`` (staged counted as messages)."""
        ob = self._out.get(peer_id)
        return 0 if ob is None else len(ob.out) + 1024 * (len(ob.staged) + len(ob.early))

    # --- the loop's entry points -------------------------------------------------------------

    def release_early(self) -> None:
        """Let leaders' AppendEntries go before the journals are synced.

        Safe because a leader's own copy counts toward a commit only at its next tick,
        after the loop's fsync; replicating while the leader writes its disk (Raft thesis
        10.2.1) takes the leader's fsync off the write path.  Replies and votes still wait.
        """
        self._flush(early=True)

    def release(self) -> None:
        """Let every staged message go: encode one frame per peer and write what the socket takes."""
        self._flush(early=True)
        self._flush(early=False)

    def _flush(self, early: bool) -> None:
        for ob in self._out.values():
            pending = ob.early if early else ob.staged
            if pending and ob.state == "up":
                batch = pending[:]
                pending.clear()
                for frame in frames(batch):
                    ob.out += frame
                ob.last_sent = time.monotonic()
                self._write(ob)
            elif pending:
                pending.clear()

    def maintain(self, now: float) -> None:
        """Periodic upkeep: dial peers whose link is down (rate-limited), close dialers that are too
        slow to say hello, listen again after a pause, and report suppressed complaints."""
        for ob in self._out.values():
            if ob.state == "down" and now >= ob.next_attempt:
                ob.next_attempt = now + RECONNECT_INTERVAL
                self._dial(ob)
            elif ob.state == "up" and now - ob.last_sent >= PING_INTERVAL:
                ob.out += _PING
                ob.last_sent = now
                self._write(ob)
        for conn in [c for c in self._in.values() if c.peer_id is None and now >= c.deadline]:
            self._complaints.log("handshake", logging.WARNING,
                                 "peer port: closed a connection that did not complete its hello in %g s",
                                 HANDSHAKE_TIMEOUT)
            self._drop_in(conn.sock)
        if not self._accepting and now >= self._accept_resume:
            self._sel.register(self._listener, selectors.EVENT_READ, self._on_accept)
            self._accepting = True
        self._complaints.flush()

    def set_peers(self, peers: dict[str, tuple[str, int]]) -> None:
        """Make ``peers`` (id -> address to dial) the node's peers, at run time: a node that joined
        is dialed and its hello accepted from now on; one that left is hung up on and refused; one
        whose address changed is dialed again there."""
        peers = {pid: addr for pid, addr in peers.items() if pid != self.self_id}
        for pid in [p for p in self._out if p not in peers or self._out[p].address != peers[p]]:
            self._drop_out(self._out.pop(pid))
            for sock in [c.sock for c in self._in.values() if c.peer_id == pid and pid not in peers]:
                self._drop_in(sock)
        for pid, addr in peers.items():
            if pid not in self._out:
                self._out[pid] = _Outbound(pid, addr)

    @property
    def peer_ids(self) -> list[str]:
        """The peers this hub knows (it dials them and accepts their hello)."""
        return sorted(self._out)

    @property
    def inbound_count(self) -> tuple[int, int]:
        """(connections still in their handshake, authenticated inbound connections)."""
        pending = sum(1 for c in self._in.values() if c.peer_id is None)
        return pending, len(self._in) - pending

    def close(self) -> None:
        """Close every socket."""
        for ob in self._out.values():
            self._drop_out(ob, notify=False)
        for sock in list(self._in):
            self._drop_in(sock)
        if self._accepting:
            self._sel.unregister(self._listener)
        self._listener.close()
        self._complaints.flush(final=True)

    # --- outbound -----------------------------------------------------------------------------

    def _dial(self, ob: _Outbound) -> None:
        try:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        except OSError as exc:  # out of descriptors: retry at the next attempt, never raise into the loop
            self._complaints.log("dial", logging.WARNING, "cannot open a socket to peer %s: %s", ob.peer_id, exc)
            return
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            err = sock.connect_ex(ob.address)
        except OSError:
            err = -1
        if err not in (0, errno.EINPROGRESS):
            sock.close()
            return
        ob.sock, ob.state = sock, "connecting"
        ob.decoder = FrameDecoder(4096)
        self._sel.register(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, lambda m: self._on_out_event(ob, m))

    def _on_out_event(self, ob: _Outbound, mask: int) -> None:
        if ob.sock is None:
            return
        if ob.state == "connecting" and mask & selectors.EVENT_WRITE:
            if ob.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR):
                self._drop_out(ob)
                return
            if self._tls is not None:
                self._start_out_tls(ob)
                return
            ob.state = "handshake"
            self._sel.modify(ob.sock, selectors.EVENT_READ, lambda m: self._on_out_event(ob, m))
            return
        if ob.state == "tls":
            self._continue_out_tls(ob)
            return
        if mask & selectors.EVENT_READ:
            data = _recv(ob.sock, 4096)
            if data == b"":
                self._drop_out(ob)
                return
            if data:
                self._on_out_data(ob, data)
        if mask & selectors.EVENT_WRITE and ob.state == "up":
            self._write(ob)

    def _start_out_tls(self, ob: _Outbound) -> None:
        """The TCP connection is up: wrap it in TLS (a new socket object, so registered anew)."""
        assert self._tls is not None and ob.sock is not None
        self._sel.unregister(ob.sock)
        try:
            ob.sock = self._tls[1].wrap_socket(ob.sock, server_side=False, do_handshake_on_connect=False)
        except OSError as exc:
            ob.sock = None
            self._complaints.log(f"peer {ob.peer_id} tls", logging.WARNING, "peer %s: TLS failed: %s",
                                 ob.peer_id, exc)
            self._drop_out(ob)
            return
        ob.state = "tls"
        self._sel.register(ob.sock, selectors.EVENT_READ | selectors.EVENT_WRITE, lambda m: self._on_out_event(ob, m))

    def _continue_out_tls(self, ob: _Outbound) -> None:
        assert isinstance(ob.sock, ssl.SSLSocket)
        try:
            wants = _handshake(ob.sock)
        except OSError as exc:
            self._complaints.log(f"peer {ob.peer_id} tls", logging.WARNING,
                                 "peer %s: TLS handshake failed: %s", ob.peer_id, exc)
            self._drop_out(ob)
            return
        if wants:
            self._sel.modify(ob.sock, wants, lambda m: self._on_out_event(ob, m))
            return
        ob.state = "handshake"  # now the nonce and the HMAC hello, inside TLS
        self._sel.modify(ob.sock, selectors.EVENT_READ, lambda m: self._on_out_event(ob, m))
        data = _recv(ob.sock, 4096)  # the nonce may have come with the handshake's last flight
        if data == b"":
            self._drop_out(ob)
        elif data:
            self._on_out_data(ob, data)

    def _on_out_data(self, ob: _Outbound, data: bytes) -> None:
        ob.decoder.receive_data(data)
        try:
            while (msg := ob.decoder.next_message()) is not NEED_DATA:
                if ob.state == "handshake" and isinstance(msg, dict) and isinstance(msg.get("nonce"), bytes):
                    hello = {"id": self.self_id, "mac": _mac(self._secret, msg["nonce"], self.self_id)}
                    ob.out += encode(hello)
                    ob.state = "up"
                    self._write(ob)
                    if ob.sock is not None:
                        self._link_change(ob.peer_id, True)
                else:
                    raise ProtocolError("unexpected data on an outbound peer link")
        except ProtocolError as exc:
            log.warning("peer %s: %s", ob.peer_id, exc)
            self._drop_out(ob)

    def _write(self, ob: _Outbound) -> None:
        if not ob.out or ob.sock is None:
            return
        try:
            n = ob.sock.send(ob.out)
        except (BlockingIOError, InterruptedError, *_WANT):
            n = 0  # (TLS: sent again with the same bytes in front, as it requires)
        except OSError:
            self._drop_out(ob)
            return
        del ob.out[:n]
        events = selectors.EVENT_READ | (selectors.EVENT_WRITE if ob.out else 0)
        self._sel.modify(ob.sock, events, lambda m: self._on_out_event(ob, m))

    def _drop_out(self, ob: _Outbound, notify: bool = True) -> None:
        was_up = ob.state == "up"
        if ob.sock is not None:
            try:
                self._sel.unregister(ob.sock)
            except (KeyError, ValueError):
                pass
            ob.sock.close()
        ob.sock, ob.state = None, "down"
        ob.out.clear()
        ob.staged.clear()
        ob.early.clear()
        ob.next_attempt = time.monotonic() + RECONNECT_INTERVAL
        if was_up and notify:
            self._link_change(ob.peer_id, False)

    # --- inbound ------------------------------------------------------------------------------

    def _on_accept(self, mask: int) -> None:
        try:
            sock, _ = self._listener.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in ACCEPT_STARVED:
                self._accept_starved(exc)
            # else (ECONNABORTED, EPROTO...): that one connection died in the backlog; nothing to do
            return
        if self._starved is not None:
            log.info("peer port: accepting connections again")
            self._starved = None
        pending = [c for c in self._in.values() if c.peer_id is None]
        if len(pending) >= MAX_PENDING_HANDSHAKES:
            # make room by closing the oldest: a real peer says hello within a round trip, so the
            # connections that linger are the idle ones, and the listener keeps draining
            self._complaints.log("handshake", logging.WARNING,
                                 "peer port: %d connections awaiting their hello; closing the oldest",
                                 len(pending))
            self._drop_in(pending[0].sock)
        try:
            sock.setblocking(False)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if self._tls is not None:
                sock = self._tls[0].wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        except OSError:
            sock.close()
            return
        conn = _Inbound(sock, os.urandom(16), time.monotonic() + HANDSHAKE_TIMEOUT)
        self._in[sock] = conn
        if not conn.tls_done:
            self._sel.register(sock, selectors.EVENT_READ, lambda m: self._on_in_event(conn))
            return
        try:
            sock.send(encode({"nonce": conn.nonce}))
        except OSError:
            self._drop_in(sock)
            return
        self._sel.register(sock, selectors.EVENT_READ, lambda m: self._on_in_event(conn))

    def _accept_starved(self, exc: OSError) -> None:
        """accept() failed for want of descriptors or memory: stop listening for a moment.

        The connection stays in the kernel's backlog, so a level-triggered poller would report the
        listener ready again at once, and the loop would do nothing else.  Closing the oldest
        handshake frees a descriptor for the next peer.
        """
        if self._starved is None:
            log.warning("peer port: cannot accept connections (%s); pausing accepts for %g s at a time "
                        "until descriptors are free", exc.strerror or exc, ACCEPT_PAUSE)
        self._starved = str(exc)
        self._sel.unregister(self._listener)
        self._accepting = False
        self._accept_resume = time.monotonic() + ACCEPT_PAUSE
        pending = [c for c in self._in.values() if c.peer_id is None]
        if pending:
            self._drop_in(pending[0].sock)

    def _in_tls(self, conn: _Inbound) -> None:
        """Advance an accepted connection's TLS handshake; once done, send the nonce."""
        assert isinstance(conn.sock, ssl.SSLSocket)
        try:
            wants = _handshake(conn.sock)
            if wants:
                self._sel.modify(conn.sock, wants, lambda m: self._on_in_event(conn))
                return
            conn.tls_done = True
            # a TLS record this small always fits an empty send buffer
            conn.sock.send(encode({"nonce": conn.nonce}))
        except OSError as exc:
            self._complaints.log("unauthenticated dialers", logging.WARNING,
                                 "peer port: TLS handshake with a dialer failed: %s", exc)
            self._drop_in(conn.sock)
            return
        self._sel.modify(conn.sock, selectors.EVENT_READ, lambda m: self._on_in_event(conn))

    def _on_in_event(self, conn: _Inbound) -> None:
        if not conn.tls_done:
            self._in_tls(conn)
            if not conn.tls_done or conn.sock not in self._in:
                return
        data = _recv(conn.sock, _READ_CHUNK)
        if data is None:
            return
        if not data:
            self._drop_in(conn.sock)
            return
        conn.decoder.receive_data(data)
        try:
            while conn.sock in self._in and (msg := conn.decoder.next_message()) is not NEED_DATA:
                if conn.peer_id is None:
                    self._authenticate(conn, msg)  # may close this link (too many from that peer)
                    continue
                if not isinstance(msg, list):
                    raise ProtocolError("peer frame is not a batch")
                self._heard[conn.peer_id] = time.monotonic()
                for item in msg:
                    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                            and isinstance(item[1], dict)):
                        raise ProtocolError("malformed peer message")
                    reason = check_peer_message(item[1])
                    if reason is not None:
                        # drop the message, keep the link: the frame itself was sound
                        self.dropped_messages += 1
                        self._complaints.log(f"peer {conn.peer_id} messages", logging.WARNING,
                                             "peer %s, group %s: dropped a malformed message: %s",
                                             conn.peer_id, _short(item[0]), reason)
                        continue
                    self._deliver(conn.peer_id, item[0], item[1])
        except ProtocolError as exc:
            self._complaints.log(f"peer {conn.peer_id} links" if conn.peer_id else "unauthenticated dialers",
                                 logging.WARNING,
                                 "inbound peer link from %s dropped: %s", conn.peer_id or "an unauthenticated dialer",
                                 exc)
            self._drop_in(conn.sock)

    def _authenticate(self, conn: _Inbound, msg: Any) -> None:
        if not (isinstance(msg, dict) and isinstance(msg.get("id"), str) and isinstance(msg.get("mac"), bytes)):
            raise ProtocolError("malformed peer hello")
        peer_id = msg["id"]
        if peer_id not in self._out:
            raise ProtocolError(f"unknown peer {_short(peer_id)}")
        if not hmac.compare_digest(msg["mac"], _mac(self._secret, conn.nonce, peer_id)):
            raise ProtocolError(f"peer {_short(peer_id)} failed authentication")
        conn.peer_id = peer_id
        conn.decoder.max_frame = PEER_MAX_FRAME
        links = [c for c in self._in.values() if c.peer_id == peer_id]
        if len(links) > MAX_LINKS_PER_PEER:
            # the newest link is the one the peer uses now; older ones are half-open leftovers
            self._drop_in(links[0].sock)

    def _drop_in(self, sock: socket.socket) -> None:
        self._in.pop(sock, None)
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

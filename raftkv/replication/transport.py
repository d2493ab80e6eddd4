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
import os
import selectors
import socket
import struct
import time
from collections.abc import Callable
from typing import Any

import msgpack

from ..errors import LocalProtocolError, ProtocolError
from ..protocol.codec import NEED_DATA, FrameDecoder, encode, pack

log = logging.getLogger(__name__)

PEER_MAX_FRAME = 64 * 1024 * 1024
FRAME_TARGET = 8 * 1024 * 1024  # split a peer's pending messages into frames of about this size
HELLO_MAX_FRAME = 4096  # what an unauthenticated dialer may send before we know who it is
RECONNECT_INTERVAL = 0.2
_READ_CHUNK = 256 * 1024

Deliver = Callable[[str, str, dict[str, Any]], None]  # (peer_id, group_id, message)
LinkChange = Callable[[str, bool], None]  # (peer_id, up)


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
    body = msgpack.Packer().pack_array_header(len(packed)) + b"".join(packed)
    if len(body) > PEER_MAX_FRAME:
        raise LocalProtocolError(f"one peer message of {len(body)} bytes exceeds the frame limit")
    return struct.pack(">I", len(body)) + body


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


class _Inbound:
    """A connection a peer opened to us; we only receive on it."""

    def __init__(self, sock: socket.socket, nonce: bytes) -> None:
        self.sock = sock
        self.nonce = nonce
        self.peer_id: str | None = None
        self.decoder = FrameDecoder(HELLO_MAX_FRAME)  # raised to PEER_MAX_FRAME once authenticated


class PeerHub:
    """The node's peer endpoint.  Owns sockets; knows nothing of Raft beyond group ids."""

    def __init__(self, self_id: str, bind: tuple[str, int], peers: dict[str, tuple[str, int]],
                 selector: selectors.BaseSelector, deliver: Deliver, link_change: LinkChange,
                 secret: bytes | None = None) -> None:
        self.self_id = self_id
        self._sel = selector
        self._deliver = deliver
        self._link_change = link_change
        self._secret = secret
        self._out = {pid: _Outbound(pid, addr) for pid, addr in peers.items() if pid != self_id}
        self._in: dict[socket.socket, _Inbound] = {}
        self._listener = socket.create_server(bind, reuse_port=False, backlog=64)
        self._listener.setblocking(False)
        self._sel.register(self._listener, selectors.EVENT_READ, self._on_accept)

    @property
    def address(self) -> tuple[str, int]:
        """The bound peer address."""
        return self._listener.getsockname()[:2]

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
                self._write(ob)
            elif pending:
                pending.clear()

    def maintain(self, now: float) -> None:
        """Dial peers whose link is down (rate-limited)."""
        for ob in self._out.values():
            if ob.state == "down" and now >= ob.next_attempt:
                ob.next_attempt = now + RECONNECT_INTERVAL
                self._dial(ob)

    def close(self) -> None:
        """Close every socket."""
        for ob in self._out.values():
            self._drop_out(ob, notify=False)
        for sock in list(self._in):
            self._drop_in(sock)
        self._sel.unregister(self._listener)
        self._listener.close()

    # --- outbound -----------------------------------------------------------------------------

    def _dial(self, ob: _Outbound) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        err = sock.connect_ex(ob.address)
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
            ob.state = "handshake"
            self._sel.modify(ob.sock, selectors.EVENT_READ, lambda m: self._on_out_event(ob, m))
            return
        if mask & selectors.EVENT_READ:
            try:
                data = ob.sock.recv(4096)
            except (BlockingIOError, InterruptedError):
                data = None
            except OSError:
                data = b""
            if data == b"":
                self._drop_out(ob)
                return
            if data:
                self._on_out_data(ob, data)
        if mask & selectors.EVENT_WRITE and ob.state == "up":
            self._write(ob)

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
        except (BlockingIOError, InterruptedError):
            n = 0
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
        sock.setblocking(False)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Inbound(sock, os.urandom(16))
        self._in[sock] = conn
        try:
            sock.send(encode({"nonce": conn.nonce}))
        except OSError:
            self._drop_in(sock)
            return
        self._sel.register(sock, selectors.EVENT_READ, lambda m: self._on_in_event(conn))

    def _on_in_event(self, conn: _Inbound) -> None:
        try:
            data = conn.sock.recv(_READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data = b""
        if not data:
            self._drop_in(conn.sock)
            return
        conn.decoder.receive_data(data)
        try:
            while (msg := conn.decoder.next_message()) is not NEED_DATA:
                if conn.peer_id is None:
                    self._authenticate(conn, msg)
                    continue
                if not isinstance(msg, list):
                    raise ProtocolError("peer frame is not a batch")
                for item in msg:
                    if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str)
                            and isinstance(item[1], dict)):
                        raise ProtocolError("malformed peer message")
                    self._deliver(conn.peer_id, item[0], item[1])
        except ProtocolError as exc:
            log.warning("inbound peer link from %s dropped: %s", conn.peer_id or "?", exc)
            self._drop_in(conn.sock)

    def _authenticate(self, conn: _Inbound, msg: Any) -> None:
        if not (isinstance(msg, dict) and isinstance(msg.get("id"), str) and isinstance(msg.get("mac"), bytes)):
            raise ProtocolError("malformed peer hello")
        peer_id = msg["id"]
        if peer_id not in self._out:
            raise ProtocolError(f"unknown peer {peer_id!r}")
        if not hmac.compare_digest(msg["mac"], _mac(self._secret, conn.nonce, peer_id)):
            raise ProtocolError(f"peer {peer_id!r} failed authentication")
        conn.peer_id = peer_id
        conn.decoder.max_frame = PEER_MAX_FRAME

    def _drop_in(self, sock: socket.socket) -> None:
        self._in.pop(sock, None)
        try:
            self._sel.unregister(sock)
        except (KeyError, ValueError):
            pass
        sock.close()

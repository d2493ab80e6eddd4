"""The asyncio client.

It caches the shard map, sends each request straight to the shard's leader
(one hop), and on a cluster condition -- not leader, stale route, lost
connection, election in progress -- follows the hint or refreshes the map and
retries with jittered backoff until the operation's deadline, then raises
:class:`raftkv.errors.Unavailable`.  Caller mistakes are refused before
anything is sent.

Scans stream: each shard is read in pages bounded by keys *and* bytes; the
next page of the current shard and the first pages of the next few shards are
fetched while the caller consumes the current one, so a scan spanning many
shards proceeds in parallel while rows still come out in key order and at most
a few pages sit in memory.  A striped segment's stripes are merged in key order.

Range operations (scans, :meth:`AsyncClient.range_steps`, ``delete_range``,
``put_many``) route by *key range*, never by a shard captured earlier: shards
split at run time, and a node answers a request routed with an old map with
``StaleRoute`` (carrying the current shards of the range, which patch the
cached map).  The part of the range not yet read is then routed again through
the patched map, so a split in the middle of a scan loses no row and repeats
none.

Failures are told apart by whether a node *answered*.  A node that sent an
error (not leader, stale route, overloaded, its own timeout) was reached; one
that could not be resolved, refused the connection, did not connect or answer
in time, or dropped the connection was not.  Before any shard map is known, a
seed list that only refuses or cannot be resolved fails at once (see
:class:`AsyncClient`); otherwise what the retries saw -- shards no replica
would lead, nodes that did not answer -- makes the message of the
:class:`~raftkv.errors.Unavailable` raised at the deadline.
"""

from __future__ import annotations

import asyncio
import bisect
import collections
import contextlib
import contextvars
import itertools
import operator
import os
import random
import socket
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from .. import errors
from ..errors import InvalidArgument, NotLeader, RaftKVError, StaleRoute, Unavailable
from ..keys import (
    KEY_SPACE_END,
    MAX_KEY,
    MAX_VALUE_BYTES,
    KeyLike,
    check_limit,
    check_value,
    coerce_key,
    coerce_range,
)
from ..protocol.codec import DEFAULT_MAX_FRAME, NEED_DATA, FrameDecoder, encode
from ..protocol.pages import decode_raw_keys
from ..routing.nodes import check_advertised
from ..routing.ranges import end_to_wire, inclusive_to_half_open
from ..routing.shardmap import Shard, ShardMap
from ..server.config import Credentials, parse_hostport
from . import spread
from .addresses import after_failure, candidates, is_loopback, pin_cluster, preferred_order, same_cluster
from .params import Param, bind

T = TypeVar("T")
Row = tuple[int, bytes]

# The client's options, shared with the sync Client so both document the same defaults.
DEFAULT_TIMEOUT = 10.0
DEFAULT_ATTEMPT_TIMEOUT = 3.0
DEFAULT_CONSISTENCY = "linearizable"
DEFAULT_PAGE_KEYS = 4000
DEFAULT_PAGE_BYTES = 1 << 20

BATCH_KEYS = 5000
BATCH_BYTES = 2 << 20
SCAN_PREFETCH_SHARDS = 4
STEP_PARALLEL = 4  # shards a range_steps walk asks at once, by default
MAX_RETRY_PAUSE = 0.1  # seconds: the longest backoff between two attempts (before jitter)
# how long asking a port that hung up whether it speaks TLS may take: short, since a node that
# hangs up for another reason (going down) waits this long before the client tries elsewhere
TLS_PROBE_SECONDS = 0.5
# what OpenSSL says when the other side answered a ClientHello with something that is not TLS
_NOT_TLS = frozenset({"WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG"})
_FIRST_REQUEST = 1  # a connection's request ids count from here (NodeConnection._ids)


@dataclass(frozen=True)
class RangeStep:
    """One event of :meth:`AsyncClient.range_steps`: ``kind`` is ``"reply"``, ``"discard"`` or ``"done"``.

    ``part`` names the sub-range the event is about; ``reply`` is the node's reply (``reply`` events only).
    """

    kind: str
    part: int
    reply: Any = None


def put_batches(pairs: list[tuple[int, bytes]]) -> Iterator[list[tuple[int, bytes]]]:
    """``pairs`` (of one shard) cut, in order, into put requests of at most :data:`BATCH_KEYS`
    pairs and :data:`BATCH_BYTES` (values plus 16 a pair) each, never empty.

    A run of :data:`BATCH_KEYS` pairs that fits goes whole, as small values' runs do: a bulk load
    sums its values' sizes once per run instead of testing the limits pair by pair.
    """
    i, n = 0, len(pairs)
    while i < n:
        run = pairs[i:i + BATCH_KEYS]
        if sum(len(p[1]) for p in run) + 16 * len(run) <= BATCH_BYTES:
            yield run
            i += len(run)
            continue
        j, size = i, 0
        while j < n and j - i < BATCH_KEYS and (j == i or size + len(pairs[j][1]) + 16 <= BATCH_BYTES):
            size += len(pairs[j][1]) + 16
            j += 1
        yield pairs[i:j]
        i = j


def patched_map(current: ShardMap | None, details: dict[str, Any]) -> ShardMap | None:
    """``current`` patched with the shards a StaleRoute's ``details`` carry (``epoch``, ``shards``).

    None when they cannot patch it -- no shards, a node behind the cache, malformed, nothing
    new, or not a valid map once put in -- and the whole map must be fetched instead.
    """
    epoch, wire = details.get("epoch"), details.get("shards")
    if current is None or type(epoch) is not int or not isinstance(wire, list) or not wire:
        return None
    if epoch < current.epoch:
        return None  # the node knows less than we do: never let its view replace ours
    try:
        shards = [Shard.from_dict(d) for d in wire]
        for s in shards:
            known = current.shard_by_id(s.id)
            if known is not None and known.generation > s.generation:
                return None  # an older record of a shard we know (a lagging node): fetch instead
        patched = current.with_shards(shards, epoch)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError):
        return None
    return None if patched == current else patched


def _split_seeds(seeds: str | Iterable[str]) -> list[str]:
    items = seeds.split(",") if isinstance(seeds, str) else list(seeds)
    out = [s.strip() for s in items if s and s.strip()]
    if not out:
        raise InvalidArgument("at least one seed address (host:port) is needed")
    for s in out:
        parse_hostport(s)
    return out


async def _dial(address: str, tls: ssl.SSLContext | None = None) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A stream pair connected to ``address``, trying each address its host resolves to in turn.

    This is what ``asyncio.open_connection`` does, done here because when several addresses fail
    it folds their errors into one plain OSError: a host refused on every address (nothing
    listens there) must be told apart from one that is slow or unreachable.  Raises
    :class:`_NoAnswer` (``kind`` "unresolvable", "refused" or "error").
    """
    host, port = parse_hostport(address)
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]  # "[::1]:7401"
    loop = asyncio.get_running_loop()
    try:
        # a literal IP resolves without a lookup, so without a trip to the executor's thread
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_NUMERICHOST)
    except socket.gaierror:
        try:
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            plain = exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", socket.EAI_NONAME))
            raise _NoAnswer(f"cannot resolve {host}" + ("" if plain else f" ({exc.strerror})"),
                            address, "unresolvable") from None
    failures: list[OSError] = []
    for family, kind, proto, _, sockaddr in infos:
        sock = socket.socket(family, kind, proto)
        try:
            sock.setblocking(False)
            await loop.sock_connect(sock, sockaddr)
        except OSError as exc:
            sock.close()
            failures.append(exc)
            continue
        except BaseException:
            sock.close()
            raise
        try:
            return await asyncio.open_connection(sock=sock, limit=DEFAULT_MAX_FRAME, ssl=tls,
                                                 server_hostname=host if tls is not None else None)
        except BaseException:
            sock.close()
            raise
    if failures and all(isinstance(exc, ConnectionRefusedError) for exc in failures):
        raise _NoAnswer(f"{address} refused the connection", address, "refused")
    why = (failures[-1].strerror or str(failures[-1])) if failures else "its host has no address"
    raise _NoAnswer(f"cannot connect to {address}: {why}", address, "error")


async def _speaks_tls(address: str, timeout: float) -> bool:
    """Whether ``address`` completes a TLS handshake.  Its certificate is not checked: this only
    asks which language the port speaks, and nothing is sent over the connection."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    try:
        _, writer = await asyncio.wait_for(_dial(address, ctx), timeout)
    except (OSError, TimeoutError, Unavailable):  # ssl.SSLError is an OSError: not TLS either
        return False
    writer.close()
    with contextlib.suppress(OSError, ssl.SSLError):  # the TLS close_notify exchange may fail: it answered
        await writer.wait_closed()
    return True


class _RequestTimedOut(Exception):
    """A request's own deadline passed (``NodeConnection.request``)."""


# A connection checks its requests' deadlines in one sweep every SWEEP_SECONDS while any is
# outstanding, rather than with a timer per request: making, heaping and cancelling a TimerHandle
# per request (asyncio orders its heap in Python) cost more of a busy client's CPU than the
# request's encoding.  So a request times out up to SWEEP_SECONDS after its deadline.
SWEEP_SECONDS = 0.05


class NodeConnection:
    """One TCP connection to one node's client port, with pipelined requests matched by id.

    The client's connections, and a node's own to the meta replicas (``server/maplink.py``):
    TLS, the ``hello`` and its token, and the check of who answers are done once, here.
    """

    def __init__(self, address: str, credentials: Credentials | None = None, expect: str | None = None,
                 pinned: str | None = None) -> None:
        self.address = address
        self.credentials = credentials or Credentials()
        # the node this address was chosen for, among several it advertises: its hello must say so
        self.expect = expect
        # the cluster the client is pinned to (client/addresses.py): a hello naming another is refused
        self.pinned = pinned
        self.node: str | None = None  # the node at the other end, once it named itself
        self.cluster: str | None = None  # the cluster that node named, once it did
        self._ids = itertools.count(_FIRST_REQUEST)
        self._pending: dict[int, asyncio.Future] = {}
        self._due: dict[int, float] = {}  # request id -> its deadline (loop time), swept by _sweep
        self._sweeping = False
        self._writer: asyncio.StreamWriter | None = None
        self._out: list[bytes] = []  # requests of this event-loop turn, written in one go (_flush)
        self._reader_task: asyncio.Task | None = None
        self.closed = False

    async def open(self, timeout: float) -> None:
        """Connect within ``timeout`` seconds; raises :class:`_NoAnswer` saying why not, or
        :class:`~raftkv.errors.Unauthenticated` if the TLS handshake or the ``hello`` is refused."""
        loop = asyncio.get_running_loop()
        end = loop.time() + timeout  # the dial and the hello share one budget
        try:
            reader, self._writer = await asyncio.wait_for(
                _dial(self.address, self.credentials.ssl_context()), timeout)
        except TimeoutError:
            raise _NoAnswerInTime(f"{self.address} did not accept a connection within {timeout:.1f} s",
                                  self.address, "timeout") from None
        except ssl.SSLError as exc:  # not retried: the same certificates fail the same way
            hint = (" (it does not speak TLS: connect to it without tls and tls_ca)"
                    if exc.reason in _NOT_TLS else "")
            raise errors.Unauthenticated(f"TLS handshake with {self.address} failed: {exc}{hint}") from None
        except OSError as exc:  # after the connect itself (setting up the stream): rare
            raise _NoAnswer(f"cannot connect to {self.address}: {exc}", self.address, "error") from None
        self._reader_task = asyncio.create_task(self._read_loop(reader))
        hello = self.credentials.hello()
        if hello is None and (self.expect is not None or self.pinned is not None):
            hello = {"op": "hello"}  # a node names itself and its cluster in its hello, with or without a token
        if hello is not None:  # before any other request: a node with a token refuses anything else
            try:
                reply = await self.request(hello, max(0.05, end - loop.time()))
            except BaseException:
                await self.close()
                raise
            who = reply.get("node") if isinstance(reply, dict) else None
            self.node = who if isinstance(who, str) else None
            named = reply.get("cluster") if isinstance(reply, dict) else None
            self.cluster = named if isinstance(named, str) else None
            if not same_cluster(self.pinned, named):
                # another cluster's node (one at the same address from here, say a loopback port
                # another cluster on this machine uses): right id or not, never this cluster's node
                await self.close()
                raise _NoAnswer(f"{self.address} is node {who} of another cluster ({named}, not {self.pinned})",
                                self.address, "wrong node")
            if self.expect is not None and who != self.expect:
                # one of another node's addresses leads here from where this client runs (say a
                # loopback address inside a container): not an address of the node wanted
                await self.close()
                raise _NoAnswer(f"{self.address} is node {who}, not {self.expect}", self.address, "wrong node")

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder(DEFAULT_MAX_FRAME)
        error: Exception = _NoAnswer(f"connection to {self.address} closed", self.address, "lost")
        heard = False
        try:
            while data := await reader.read(1 << 20):
                heard = True
                decoder.receive_data(data)
                while (msg := decoder.next_message()) is not NEED_DATA:
                    rid = msg.get("id") if isinstance(msg, dict) else None
                    # ours are ints; anything else (a connection-level error has None) matches no request
                    fut = self._pending.pop(rid, None) if type(rid) is int else None
                    if fut is None or fut.done():
                        continue
                    if "err" in msg:
                        fut.set_exception(errors.from_wire(msg["err"]))
                    else:
                        fut.set_result(msg.get("ok"))
            # Only a connection that never heard a word, with its first request (its hello or
            # first call) still waiting, may be a TLS port: one that answered before, or whose
            # first request timed out, is a node going down or busy, not to be held up asking.
            if not heard and _FIRST_REQUEST in self._pending and not self.credentials.tls \
                    and await _speaks_tls(self.address, TLS_PROBE_SECONDS):
                # A TLS port hangs up on plaintext without a word (the handshake just fails), which
                # looks like a node going down; asked in TLS, it answers: a setting to fix, not a
                # node to wait for, so it is not retried.
                error = errors.Unauthenticated(
                    f"{self.address} expects TLS: it closed the plaintext connection and answers a TLS "
                    "handshake; connect with tls=True or tls_ca=FILE (the shell: --tls-ca)")
        except (OSError, errors.ProtocolError) as exc:
            error = _NoAnswer(f"connection to {self.address} failed: {exc}", self.address, "lost")
        finally:
            self.closed = True
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(error)
            self._pending.clear()

    async def request(self, msg: dict[str, Any], timeout: float) -> Any:
        if self.closed or self._writer is None:
            raise _NoAnswer(f"connection to {self.address} is closed", self.address, "lost")
        rid = next(self._ids)
        loop = asyncio.get_running_loop()
        fut = loop.create_future()
        self._pending[rid] = fut
        # failed by _sweep once late, not by wait_for (a second future and its callbacks per request
        # were a fifth of a busy client's CPU) nor by a timer per request (see SWEEP_SECONDS)
        self._due[rid] = loop.time() + timeout
        if not self._sweeping:
            self._sweeping = True
            loop.call_later(SWEEP_SECONDS, self._sweep)
        if not self._out:
            loop.call_soon(self._flush)
        self._out.append(encode({**msg, "id": rid}))
        try:
            return await fut
        except _RequestTimedOut:
            raise _NoAnswerInTime(f"{self.address} did not answer within {timeout:.1f} s",
                                  self.address, "timeout") from None
        finally:
            self._pending.pop(rid, None)
            self._due.pop(rid, None)

    def _sweep(self) -> None:
        """Fail the requests whose deadline has passed; runs again while any request is outstanding."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        for rid in [rid for rid, due in self._due.items() if due <= now]:
            fut = self._pending.get(rid)
            if fut is not None and not fut.done():
                fut.set_exception(_RequestTimedOut())
        if self._due:
            loop.call_later(SWEEP_SECONDS, self._sweep)
        else:
            self._sweeping = False

    def _flush(self) -> None:
        """Write the requests made in this turn of the event loop with one call (one send, not one
        per request, when many are made at once)."""
        out, self._out = self._out, []
        if out and self._writer is not None and not self._writer.is_closing():
            self._writer.write(out[0] if len(out) == 1 else b"".join(out))

    def abort(self) -> None:
        """Close at once, from code that cannot wait (the reader task ends by itself)."""
        self.closed = True
        if self._writer is not None:
            self._writer.close()

    async def close(self) -> None:
        """Close and wait for the reader task to end."""
        self.abort()
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)


# The client's own source of jitter (seed choice, retry pauses): drawing from the random module's
# shared state would shift the sequence of an application that seeds it for reproducible runs.
_JITTER = random.Random()

# A session's numbers in flight, newest minus oldest awaited: a shard remembers at most
# replication.sessions.MAX_REMEMBERED of them (a unit test keeps the two equal).
WRITE_WINDOW = 4096


class _WriteSession:
    """This client's session: what makes a retried write take effect at most once.

    Every write gets a sequence number it keeps through all its retries; the
    shard's state machine remembers the numbers it applied (replication/sessions.py).
    The low-water mark sent along -- the oldest number still awaiting an outcome --
    lets the shard forget the rest.
    """

    def __init__(self) -> None:
        self.id = os.urandom(16)
        self._next = 1
        self._open: dict[int, None] = {}  # numbers awaiting an outcome, oldest first (insertion order)
        self._moved = asyncio.Event()  # set whenever a number ends: the window may have room again

    async def room(self) -> None:
        """Wait until a new number stays within :data:`WRITE_WINDOW` of the oldest one awaiting an
        outcome.  A shard remembers at most that many of a session's numbers above the mark; past
        it, it would forget replies this client may still retry for, and answer such a retry
        "outcome unknown".  So a client with more writes in flight waits here instead: behind its
        oldest write, for at most that write's deadline."""
        while self._full():
            self._moved.clear()
            await self._moved.wait()

    def begin(self) -> list[Any]:
        """A new write's ``session`` field, ``[client id, seq, low-water mark]``; hand it to :meth:`end`."""
        seq = self._next
        self._next += 1
        self._open[seq] = None
        return [self.id, seq, next(iter(self._open))]

    async def open(self) -> list[Any]:
        """:meth:`begin` once the window has :meth:`room`: how every write of the client starts."""
        await self.room()
        return self.begin()

    def try_begin(self) -> list[Any] | None:
        """:meth:`begin` if the window has room now, else None (then :meth:`open` waits for it)."""
        return None if self._full() else self.begin()

    def _full(self) -> bool:
        """Whether a new number would be :data:`WRITE_WINDOW` or more past the oldest one awaited."""
        return bool(self._open) and self._next - next(iter(self._open)) >= WRITE_WINDOW

    def end(self, session: list[Any]) -> None:
        """The write ``session`` was opened for has its outcome: its number stops holding the mark down."""
        self._open.pop(session[1], None)
        self._moved.set()

    @contextlib.asynccontextmanager
    async def write(self, fields: dict[str, Any]) -> AsyncIterator[dict[str, Any]]:
        """``fields`` plus this write's ``session`` (:meth:`open`), its number held open until the
        block exits."""
        session = self.try_begin() or await self.open()
        try:
            yield {**fields, "session": session}
        finally:
            self.end(session)


class AsyncClient:
    """raftkv client for asyncio code.  All methods are coroutines (``scan`` is an async iterator).

    Keys are ints in [0, 2**64-1] or timezone-aware ``datetime`` objects (their nanoseconds
    since the Unix epoch, the unit of the query language's ``TIMESTAMP`` and ``now()``).

    Arguments (all but ``seeds`` keyword-only; :class:`raftkv.Client` takes the same):

    * ``seeds``: any live node(s), ``"host:port,host:port"`` or a list of ``"host:port"``.
    * ``timeout=10.0``: seconds an operation may take, retries included, before
      :class:`~raftkv.errors.Unavailable`.
    * ``attempt_timeout=3.0``: seconds one attempt at one node may take before the client
      tries another replica (a frozen or partitioned leader keeps its socket open).
    * ``consistency="linearizable"``: reads see every write acknowledged before they
      started; ``"serializable"`` reads the leader's local state with no ReadIndex round:
      faster, may miss the very latest writes after a failover.
    * ``page_keys=4000``: rows per scan page asked of a shard (1..10000).
    * ``page_bytes=1048576``: bytes per scan page asked of a shard (1 B..4 MiB).
    * ``spread_scans=True``: read a scan of many pages of one shard from all its replicas at once,
      in chunks that all show the state of the scan's first page (:mod:`raftkv.client.spread`).
    * ``token=None``: the cluster's client token (nodes started with ``--client-token-file``); sent
      in a ``hello`` that opens every connection.  A wrong or missing token raises
      :class:`~raftkv.errors.Unauthenticated` at once (not retried).
    * ``tls=False``: speak TLS to the nodes (started with ``--tls-cert``/``--tls-key``), checking
      that each node's certificate names the host it is dialled at.
    * ``tls_ca=None``: a PEM file of the CA(s) that signed the nodes' certificates (implies
      ``tls=True``; without it, the system's CAs).  A failed handshake raises
      :class:`~raftkv.errors.Unauthenticated` at once.

    When the cluster cannot be reached, the rule is:

    * **No cluster known yet** (no shard map fetched): if every seed refuses the connection or
      does not resolve, the first call (or :meth:`connect`) raises
      :class:`~raftkv.errors.Unavailable` at once, naming each --
      ``cannot reach any seed: 127.0.0.1:1 refused the connection``,
      ``cannot reach any seed: cannot resolve nosuchhost.invalid``.  That is a wrong address or
      a cluster not started, and waiting would only hide it (a SQL driver, CockroachDB's
      included, fails at once the same way; etcd's client instead waits out its dial timeout
      and reports only that the deadline passed).  A seed that is slow, unreachable or answers
      with an error is retried until the deadline, as a node still starting may be.
    * **Cluster known**: a node that refuses or does not answer is a node restarting or down.
      Like CockroachDB's range routing, the client tries the shard's other replicas and retries
      until the deadline; nothing fails early.  The :class:`~raftkv.errors.Unavailable` raised
      then names what the retries saw: ``shard s0003 has no leader within 10.0 s; nodes not
      answering: n2 (127.0.0.1:40002), n3 (127.0.0.1:40003)``.  Its ``details`` hold
      ``leaderless`` (shard ids) and ``not_answering`` (those nodes).
    """

    def __init__(self, seeds: str | Iterable[str], *, timeout: float = DEFAULT_TIMEOUT,
                 attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT, consistency: str = DEFAULT_CONSISTENCY,
                 page_keys: int = DEFAULT_PAGE_KEYS, page_bytes: int = DEFAULT_PAGE_BYTES,
                 spread_scans: bool = True,
                 token: str | None = None, tls: bool = False, tls_ca: str | None = None) -> None:
        """Check the options and remember the seeds; nothing is contacted before the first call."""
        self._seeds = _split_seeds(seeds)
        self._credentials = Credentials(token=token, tls=tls, tls_ca=tls_ca)
        self._credentials.ssl_context()  # a CA file that cannot be read fails here, not at the first call
        if consistency not in ("linearizable", "serializable"):
            raise InvalidArgument("consistency must be 'linearizable' or 'serializable'")
        if not 0 < page_keys <= 10_000 or not 0 < page_bytes <= 4 << 20:
            raise InvalidArgument("page_keys must be 1..10000 and page_bytes 1..4 MiB")
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.consistency = consistency
        self.page_keys = page_keys
        self.page_bytes = page_bytes
        self.spread_scans = bool(spread_scans)
        self._conns: dict[str, NodeConnection] = {}
        self._connecting: dict[str, asyncio.Task] = {}
        self._map: ShardMap | None = None
        self._leaders: dict[str, str] = {}
        self._nodes: dict[str, str] = {}  # node id -> the client address used for it (one of its advertised)
        self._advertised: dict[str, tuple[str, ...]] = {}  # node id -> every client address it advertises
        self._reached: dict[str, str] = {}  # node id -> the address it last answered at, as that node
        self._failed: set[str] = set()  # advertised addresses that gave no answer since they last did
        self._expect_at: dict[str, str] = {}  # address -> the node it was chosen for (several advertised)
        self._cluster: str | None = None  # the cluster the first answer named: others' nodes are refused
        self._via_loopback = False  # reached through a loopback seed: loopback addresses may be tried
        self._refreshing: asyncio.Task | None = None
        self._background: set[asyncio.Task] = set()  # requests nobody awaits (spread scans' releases)
        self._session = _WriteSession()

    # --- lifecycle ----------------------------------------------------------------------------

    async def __aenter__(self) -> AsyncClient:
        await self.connect()
        return self

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def connect(self) -> None:
        """Fetch the shard map from a seed (done lazily by every call if not done here)."""
        await self._refresh_map(time.monotonic() + self.timeout)

    async def close(self) -> None:
        """Close every connection, those still opening too."""
        # an opening connection already runs its read loop while its hello is under way: cancelled,
        # its open closes it (left alone, an unclosed client's exit found that loop still pending)
        opening, self._connecting = list(self._connecting.values()), {}
        opening += self._background
        for task in opening:
            task.cancel()
        conns, self._conns = list(self._conns.values()), {}
        await asyncio.gather(*opening, *(c.close() for c in conns), return_exceptions=True)

    # --- the API ------------------------------------------------------------------------------

    async def put(self, key: KeyLike, value: bytes | str) -> None:
        """Store ``value`` under ``key``; returns once committed (fsynced) on a majority."""
        key, value = coerce_key(key), check_value(value)
        # begun and ended by hand, not with ``_session.write``: an async context manager per put was
        # a tenth of a busy client's CPU
        session = self._session.try_begin() or await self._session.open()
        try:
            await self._on_key(key, "put", {"pairs": [[key, value]], "session": session})
        finally:
            self._session.end(session)

    async def get(self, key: KeyLike) -> bytes | None:
        """The value under ``key``, or None."""
        key = coerce_key(key)
        return await self._on_key(key, "get", {"key": key, "consistency": self.consistency})

    async def delete(self, key: KeyLike) -> bool:
        """Delete ``key``; True if it existed."""
        key = coerce_key(key)
        async with self._session.write({"keys": [key]}) as fields:
            return bool(await self._on_key(key, "delete", fields))

    async def put_many(self, pairs: Iterable[tuple[KeyLike, bytes | str]] | Mapping[KeyLike, bytes | str]) -> int:
        """Store many pairs -- ``(key, value)`` tuples, or a dict of key -> value: batched per
        shard, shards written in parallel.

        Each batch (same shard, up to a few thousand keys / 2 MiB) is atomic; the whole
        call is not.  Every pair is validated before anything is sent.  Returns the count.
        """
        clean = []
        for pair in pairs.items() if isinstance(pairs, Mapping) else pairs:
            if not isinstance(pair, tuple | list) or len(pair) != 2:
                raise InvalidArgument(f"put_many takes (key, value) pairs or a dict of key -> value, "
                                      f"not {type(pair).__name__} items")
            key, value = pair
            # the common case tested inline (a bulk load checks a million pairs); the rest converts or raises
            if type(key) is not int or not 0 <= key <= MAX_KEY:
                key = coerce_key(key)
            if type(value) is not bytes or len(value) > MAX_VALUE_BYTES:
                value = check_value(value)
            clean.append((key, value))
        if not clean:
            return 0
        await self._put_batches(clean, time.monotonic() + self.timeout)
        return len(clean)

    async def range_query(self, start: KeyLike, end: KeyLike) -> list[Row]:
        """Every ``(key, value)`` with ``start <= key <= end``, ascending (``start > end``: [])."""
        return [row async for row in self.scan(start, end)]

    async def scan(self, start: KeyLike = 0, end: KeyLike = KEY_SPACE_END - 1, *, limit: int | None = None,
                   reverse: bool = False, filter: Any = None) -> AsyncIterator[Row]:
        """Stream rows with ``start <= key <= end`` in key order (descending if ``reverse``)."""
        async for page in self.scan_pages(start, end, limit=limit, reverse=reverse, filter=filter):
            for row in page:
                yield row

    async def scan_pages(self, start: KeyLike = 0, end: KeyLike = KEY_SPACE_END - 1, *, limit: int | None = None,
                         reverse: bool = False, filter: Any = None,
                         page_keys: int | None = None) -> AsyncIterator[list[Row]]:
        """Like :meth:`scan`, a page (list of rows) at a time.

        ``filter`` is a query-language filter in wire form, evaluated on the shards;
        ``page_keys`` overrides the page size (the query executor shrinks it to a LIMIT).
        """
        start, end = coerce_range(start, end)
        limit = check_limit(limit)
        span = inclusive_to_half_open(start, end)
        if span is None or limit == 0:
            return
        remaining = limit
        # closed on the way out, so a LIMIT reached drops the prefetches at once, not when collected
        page_keys = page_keys or self.page_keys
        # spread only a scan that may run to many pages: a LIMIT of a few pages is read at the
        # leader alone, without the cuts and the shared snapshot a spread scan costs the node
        spreads = self.spread_scans and (limit is None or limit > 2 * spread.CHUNK_PAGES * page_keys)
        async with contextlib.aclosing(self._pages(span[0], span[1], reverse, filter, page_keys,
                                                   spreads)) as pages:
            async for page in pages:
                if remaining is not None:
                    page = page[:remaining]
                    remaining -= len(page)
                if page:
                    yield page
                if remaining == 0:
                    return

    async def delete_range(self, start: KeyLike, end: KeyLike, *, filter: Any = None) -> int:
        """Delete every key in ``[start, end]`` (matching ``filter``); returns how many went."""
        start, end = coerce_range(start, end)
        span = inclusive_to_half_open(start, end)
        if span is None:
            return 0
        deadline = time.monotonic() + self.timeout
        total = 0
        cursor = span[0]
        session: list[Any] | None = None  # the step in progress (kept while it is re-routed)
        try:
            while cursor < span[1]:
                shards, _, stop = first_segment(await self._shard_map(deadline), cursor, span[1])
                if len(shards) > 1:
                    if session is not None:
                        # a step re-routed onto stripes: each stripe has steps of its own
                        self._session.end(session)
                        session = None
                    try:
                        for shard in shards:
                            done = cursor
                            while done < stop:
                                async with self._session.write({"start": done, "end": end_to_wire(stop),
                                                          "filter": filter}) as fields:
                                    reply = await self._with_retry(
                                        lambda s=shard, f=fields, lo=done, hi=stop: self._send_routed(
                                            s, "delete_range", f, deadline, lo, hi), deadline)
                                total += reply["deleted"]
                                done = reply["resume"] if reply["resume"] is not None else stop
                    except _Reroute:
                        continue  # deleting the stripes again from ``cursor`` deletes only what is left
                    cursor = stop
                    continue
                if session is None:
                    session = await self._session.open()
                fields = {"start": cursor, "end": end_to_wire(stop), "filter": filter, "session": session}
                try:
                    reply = await self._with_retry(
                        lambda s=shards[0], f=fields, lo=cursor, hi=stop: self._send_routed(
                            s, "delete_range", f, deadline, lo, hi), deadline)
                except _Reroute:
                    # The shard split under this step.  Its number stays: if the shard applied the step
                    # before splitting, both halves remember it, and the re-routed step gets the reply
                    # of what was done (its count and where it stopped) instead of being lost.
                    continue
                self._session.end(session)
                session = None
                total += reply["deleted"]
                cursor = reply["resume"] if reply["resume"] is not None else stop
        finally:
            if session is not None:
                self._session.end(session)
        return total

    async def query(self, statement: Any, params: Sequence[Param] | None = None, *,
                    now_ns: int | None = None) -> AsyncQueryResult:
        """Run one query-language statement (text or parsed); returns an :class:`AsyncQueryResult`.

        ``params`` fill the statement's ``?`` placeholders in order, bound here as literals
        (see :mod:`raftkv.client.params` for the rule per type): a value is never spliced in as
        query text.  ``now_ns`` (keyword-only) fixes what ``now()`` means, in nanoseconds
        since the Unix epoch; by default it is this machine's clock.

        >>> res = await db.query("SELECT count(*) FROM kv WHERE key >= now() - ?", [timedelta(minutes=5)])
        ... # doctest: +SKIP
        """
        from ..query.executor import execute

        if now_ns is not None and type(now_ns) is not int:
            raise InvalidArgument(f"now_ns must be an int (nanoseconds since the Unix epoch), "
                                  f"not {type(now_ns).__name__}")
        if params is not None or isinstance(statement, str):
            statement = bind(statement, params)
        return AsyncQueryResult(await execute(self, statement, now_ns))

    async def range_steps(self, op: str, lo: KeyLike, hi: KeyLike, fields: dict[str, Any], *,
                          parallel: int = STEP_PARALLEL, restart_on_expiry: bool = False) -> AsyncIterator[RangeStep]:
        """Run the paged, range-keyed read ``op`` (such as ``"aggregate"``) over the keys ``[lo, hi]``.

        The range is routed by key through the shard map of the moment into *parts*: one
        range shard's sub-range, or a striped segment's (all its stripes).  Each request
        carries ``fields`` plus ``start``, ``end``, ``cursor`` and ``consistency``; a reply's
        ``resume`` and ``cursor`` continue its shard on the same snapshot.  ``parallel``
        shards are asked at once (a striped part is started whole).  Each request, retries
        included, has ``timeout`` seconds.

        Yields :class:`RangeStep` events, interleaved across parts as replies arrive:

        * ``reply``: a reply for ``part``;
        * ``discard``: forget every reply of ``part`` so far;
        * ``done``: ``part`` is complete; no event names it again.

        The replies kept (not discarded) cover every key of ``[lo, hi]`` exactly once.  When a
        shard splits under a part, the part is done with what it read, and what it had not
        read comes back as new parts routed by the new map (a striped part is discarded and
        its whole range comes back: its stripes stopped at different keys).  A lost cursor
        continues from ``resume`` on a fresh snapshot, or with ``restart_on_expiry`` (an
        aggregate must not mix two snapshots of one shard) discards the part, which starts over.
        """
        lo, hi = coerce_range(lo, hi)
        span = inclusive_to_half_open(lo, hi)
        if type(parallel) is not int or parallel < 1:
            raise InvalidArgument("parallel must be a positive int")
        if span is None:
            return
        ids = itertools.count(1)
        todo: collections.deque[tuple[int, int]] = collections.deque([span])  # not routed yet, ascending
        running: dict[asyncio.Task, tuple[_Part, _Stream]] = {}  # each request in flight, and its stream
        stalled: float | None = None  # when re-routing began with no reply since

        def new_streams(part: _Part, shards: Iterable[Shard]) -> None:
            part.streams = [_Stream(self, s, op, part.lo, part.hi, fields, False, restart_on_expiry) for s in shards]
            for stream in part.streams:
                running[stream.launch()] = (part, stream)

        def drop(part: _Part) -> None:
            for stream in part.streams:
                if stream.task is not None:
                    running.pop(stream.task, None)
                stream.close()

        try:
            while todo or running:
                while todo and (not running or len(running) < parallel):
                    smap = await self._shard_map(time.monotonic() + self.timeout)
                    t_lo, t_hi = todo.popleft()
                    shards, p_lo, p_hi = first_segment(smap, t_lo, t_hi)
                    if p_hi < t_hi:
                        todo.appendleft((p_hi, t_hi))
                    part = _Part(next(ids), p_lo, p_hi)
                    new_streams(part, shards)
                done, _ = await asyncio.wait(set(running), return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    entry = running.pop(task, None)
                    if entry is None:
                        continue  # its part was dropped meanwhile
                    part, stream = entry
                    try:
                        reply = await stream.next()
                    except _Reroute:
                        stalled = _check_stall(stalled, self.timeout)
                        drop(part)
                        if len(part.streams) == 1:
                            todo.appendleft((stream.lo, stream.hi))  # what it has not read
                        else:
                            todo.appendleft((part.lo, part.hi))
                            yield RangeStep("discard", part.id)
                        yield RangeStep("done", part.id)
                        continue
                    except _RestartPart:
                        drop(part)
                        new_streams(part, [s.shard for s in part.streams])
                        yield RangeStep("discard", part.id)
                        continue
                    stalled = None
                    if stream.task is not None:
                        running[stream.task] = (part, stream)
                    yield RangeStep("reply", part.id, reply)
                    if all(s.finished for s in part.streams):
                        yield RangeStep("done", part.id)
        finally:
            for _, stream in running.values():
                stream.close()

    async def shard_map(self) -> ShardMap:
        """The cached shard map (fetched if needed)."""
        return await self._shard_map(time.monotonic() + self.timeout)

    def leader_hints(self) -> dict[str, str]:
        """Cached shard leaders (shard id -> node id)."""
        return dict(self._leaders)

    def node_addresses(self) -> dict[str, str]:
        """Client addresses of the cluster's nodes (node id -> host:port): for a node that advertises
        several (``--advertise-client``), the one this client uses, the one that works from here."""
        return dict(self._nodes)

    async def node_status(self, address: str) -> dict[str, Any]:
        """One node's own view of its replicas (the ``status`` operation)."""
        conn = await self._conn(address, time.monotonic() + self.timeout)
        return await conn.request({"op": "status"}, self.timeout)

    # --- routing and retries -----------------------------------------------------------------

    async def _shard_map(self, deadline: float) -> ShardMap:
        if self._map is None:
            await self._refresh_map(deadline)
        assert self._map is not None
        return self._map

    async def _refresh_map(self, deadline: float) -> None:
        if self._refreshing is None or self._refreshing.done():
            self._refreshing = asyncio.create_task(self._fetch_map(deadline))
        await asyncio.shield(self._refreshing)

    async def _fetch_map(self, deadline: float) -> None:
        failures: dict[str, BaseException] = {}  # address -> its latest failure
        for attempt in itertools.count():
            # the known nodes in id order, then the seeds: the order failures are reported in
            ordered = list(dict.fromkeys([*(a for _, a in sorted(self._nodes.items(), key=_node_order)),
                                          *self._seeds]))
            candidates = _JITTER.sample(ordered, len(ordered))
            for address in candidates:
                try:
                    conn = await self._conn(address, deadline)
                    reply = await conn.request({"op": "map"}, max(0.05, min(2.0, deadline - time.monotonic())))
                except (Unavailable, OSError) as exc:
                    failures[address] = exc
                    if isinstance(exc, _NoAnswer):
                        self._address_failed(address)
                    continue
                if not same_cluster(self._cluster, reply.get("cluster")):
                    # another cluster's node at this address: its map (whatever its epoch) and its
                    # addresses are not this cluster's, and nothing more is sent to it
                    failures[address] = _NoAnswer(f"{address} is node {reply.get('node')} of another cluster",
                                                  address, "wrong node")
                    self._conns.pop(address, None)
                    await conn.close()
                    self._address_failed(address)
                    continue
                self._cluster = pin_cluster(self._cluster, reply.get("cluster"))
                self._via_loopback |= address in self._seeds and is_loopback(address)
                fresh = ShardMap.from_dict(reply["map"])
                if self._map is None or fresh.epoch >= self._map.epoch:
                    self._map = fresh
                if isinstance(reply.get("node"), str):
                    conn.node = reply["node"]
                if isinstance(reply.get("cluster"), str):
                    conn.cluster = reply["cluster"]
                self._learn_nodes(reply, address)
                self._leaders.update({k: v for k, v in reply["leaders"].items() if v})
                return
            if self._map is None and all(_definite(failures.get(a)) for a in ordered):
                # No cluster known yet, and every seed is refused or unresolvable: most likely a wrong
                # address or nothing started, which waiting out the deadline would only hide (as a
                # SQL driver fails at once on a refused connection).  Once a map is known, a refused
                # node is a node restarting: it is retried elsewhere within the deadline instead.
                raise Unavailable(f"cannot reach any seed: {_describe_failures(ordered, failures)}",
                                  unreachable=list(ordered))
            if time.monotonic() >= deadline:
                what = "any seed" if self._map is None else "any node"
                raise Unavailable(f"cannot reach {what} within {self.timeout:.1f} s: "
                                  f"{_describe_failures(ordered, failures)}", unreachable=list(ordered))
            await asyncio.sleep(min(0.05 * 2**attempt, 0.5, max(0.0, deadline - time.monotonic())))

    async def _conn(self, address: str, deadline: float) -> NodeConnection:
        conn = self._open_conn(address)
        if conn is not None:
            return conn
        task = self._connecting.get(address)
        if task is None or task.done():
            task = self._connecting[address] = asyncio.create_task(self._open(address, deadline))
        return await asyncio.shield(task)

    def _open_conn(self, address: str) -> NodeConnection | None:
        """The open connection to ``address``, or None; raises :class:`_NoAnswer` if it leads to
        another node than the one wanted there.  (Not a coroutine: the common case of every
        request, where awaiting one cost as much as the check.)"""
        conn = self._conns.get(address)
        if conn is None or conn.closed:
            return None
        expect = self._expected(address)
        if expect is not None and conn.node is not None and conn.node != expect:
            # open already, to another node (a seed, say): that is no address of this one from here
            raise _NoAnswer(f"{address} is node {conn.node}, not {expect}", address, "wrong node")
        if not same_cluster(self._cluster, conn.cluster):
            raise _NoAnswer(f"{address} is node {conn.node} of another cluster", address, "wrong node")
        return conn

    async def _open(self, address: str, deadline: float) -> NodeConnection:
        expect = self._expected(address)
        conn = NodeConnection(address, self._credentials, expect, self._cluster)
        await conn.open(max(0.05, min(2.0, deadline - time.monotonic())))  # _NoAnswer says why not
        self._conns[address] = conn
        self._cluster = pin_cluster(self._cluster, conn.cluster)
        if expect is not None:
            self._reached[expect] = address  # its hello named it: this address works from here
            self._failed.discard(address)
            self._choose_addresses()
        return conn

    # --- which of its advertised client addresses each node is reached at ----------------------

    def _learn_nodes(self, reply: Mapping[str, Any], address: str) -> None:
        """Take in the node addresses of a ``map`` reply that came from ``address``."""
        listed = reply.get("clients")
        listed = listed if isinstance(listed, dict) else {}  # nodes that predate --advertise-client
        self._advertised.update({
            nid: _advertised_or(listed.get(nid), addr) for nid, addr in reply["nodes"].items()})
        answered = reply.get("node")
        if isinstance(answered, str) and answered in self._advertised:
            self._reached[answered] = address  # the answer named its node: it is reached there from here
            self._failed.discard(address)
        self._choose_addresses()

    def _choose_addresses(self) -> None:
        """Use, for each node, the first of its addresses in :func:`~raftkv.client.addresses.preferred_order`."""
        for nid, order in preferred_order(self._advertised, self._reached, self._failed,
                                          self._via_loopback).items():
            self._nodes[nid] = order[0]
        # computed here, when the choice changes, not per request (see _expected)
        self._expect_at = {addr: nid for nid, addr in self._nodes.items() if len(self._advertised.get(nid, ())) > 1}

    def _expected(self, address: str) -> str | None:
        """The node ``address`` was chosen for, if that node advertises more than one address (its
        hello is then checked to name it; a node with one address is used as before, unchecked)."""
        return self._expect_at.get(address)

    def _address_failed(self, address: str) -> None:
        """``address`` gave no answer: each node it was chosen for is tried at its next address."""
        changed = False
        for nid, current in list(self._nodes.items()):
            addrs = self._advertised.get(nid, ())
            if current != address or len(addrs) < 2:
                continue
            if self._reached.get(nid) == address:
                del self._reached[nid]  # it worked once; now it does not: rank it as any other
            # forgiven once all those it may try failed (loopback ones it never tries do not count)
            self._failed = after_failure(candidates(addrs, self._via_loopback), self._failed, address)
            changed = True
        if changed:
            self._choose_addresses()  # once, however many nodes the address was chosen for

    def _target(self, shard: Shard) -> str:
        """Where to send: the believed leader (``_forget_leader`` rotates it through the replicas)."""
        leader = self._leaders.get(shard.id)
        if leader is None or leader not in shard.replicas:
            leader = shard.replicas[0]
        return self._nodes.get(leader) or self._seeds[0]

    async def _send(self, shard: Shard, op: str, fields: dict[str, Any], deadline: float) -> Any:
        """One attempt at the shard's believed leader (noted in the call's :class:`_Seen`, if any)."""
        address = self._target(shard)
        remaining = min(deadline - time.monotonic(), self.attempt_timeout)
        if remaining <= 0:
            raise _OutOfTime("deadline passed")
        try:
            # connecting is part of the attempt: a node that refuses (restarting, or dead) is left for
            # the next replica, as a node that does not answer is
            conn = self._open_conn(address) or await self._conn(address, deadline)
            return await conn.request({"op": op, "shard": shard.id, "timeout": remaining, **fields}, remaining + 0.5)
        except NotLeader as exc:
            seen = _seen()
            hint = exc.leader if exc.leader in shard.replicas else None
            seen.answered(address, shard.id, None if hint else "no leader")
            if hint and hint != self._leaders.get(shard.id):
                self._leaders[shard.id] = hint
                raise _Redirect() from None
            self._forget_leader(shard)
            raise
        except _NoAnswer as exc:
            _seen().no_answer(exc, shard.id)
            self._address_failed(address)
            self._forget_leader(shard)
            raise
        except StaleRoute:
            _seen().reached(address)  # about the map, not about who leads
            raise
        except errors.CursorExpired:
            _seen().answered(address, shard.id, "acted")  # about a snapshot, not about who leads
            raise
        except Unavailable:
            _seen().answered(address, shard.id, "acted")  # e.g. its own Timeout: a leader that cannot commit
            self._forget_leader(shard)
            raise

    async def _ask_replica(self, shard: Shard, node: str, op: str, fields: dict[str, Any], deadline: float) -> Any:
        """One attempt at replica ``node`` of ``shard``, whoever leads it; no retries, no redirects."""
        address = self._nodes.get(node)
        remaining = min(deadline - time.monotonic(), self.attempt_timeout)
        if address is None or remaining <= 0:
            raise Unavailable(f"no address for node {node}, or no time left")
        conn = self._open_conn(address) or await self._conn(address, deadline)
        return await conn.request({"op": op, "shard": shard.id, "timeout": remaining, **fields}, remaining + 0.5)

    def _release_snapshot(self, shard: Shard, handle: list[Any]) -> None:
        """Let go of a spread scan's shared snapshot at the node that holds it: one request, not
        awaited, and only on a connection already open (the snapshot expires anyway)."""
        address = self._nodes.get(handle[0]) if isinstance(handle[0], str) else None
        conn = self._conns.get(address) if address is not None else None
        if conn is None or conn.closed:
            return
        task = asyncio.get_running_loop().create_task(
            conn.request({"op": "release", "shard": shard.id, "snapshot": handle}, 1.0))
        self._background.add(task)  # cancelled by close()
        task.add_done_callback(self._background.discard)
        task.add_done_callback(_retrieve)

    async def _repair_map(self, exc: StaleRoute, deadline: float) -> bool:
        """Bring the cached map up to what a StaleRoute said; True if the cache changed.

        The shards the error carries patch the cache when they can (one round trip saved on
        every split); otherwise the whole map is fetched.  Neither ever puts an older map in.
        """
        before = self._map
        patched = patched_map(before, exc.details)
        if patched is not None:
            self._map = patched
            return True
        await self._refresh_map(deadline)
        return self._map != before

    async def _send_routed(self, shard: Shard, op: str, fields: dict[str, Any], deadline: float,
                           lo: int, hi: int) -> Any:
        """:meth:`_send` a request about keys ``[lo, hi)`` that was routed to ``shard``.

        It goes to that shard as the cached map has it now (its replicas may have changed), or
        raises :class:`_Reroute` when the map no longer puts ``[lo, hi)`` in it (it split), so
        the caller routes the keys again instead of retrying a request no node will take.
        """
        current = (await self._shard_map(deadline)).shard_by_id(shard.id)
        if current is None or current.stripe != shard.stripe or not current.start <= lo < hi <= current.end:
            raise _Reroute()
        return await self._send(current, op, fields, deadline)

    def _forget_leader(self, shard: Shard) -> None:
        """Try the next replica next time (rotate through them while no one knows the leader)."""
        current = self._leaders.get(shard.id)
        idx = shard.replicas.index(current) if current in shard.replicas else -1
        self._leaders[shard.id] = shard.replicas[(idx + 1) % len(shard.replicas)]

    async def _with_retry(self, attempt: Callable[[], Awaitable[T]], deadline: float) -> T:
        if self._map is None:
            # fetched before the retries, not by them: a client that cannot reach any seed says so
            # at once, in words of its own, rather than retry that until the deadline
            await self._refresh_map(deadline)
        seen = _Seen()
        token = _SEEN.set(seen)
        try:
            return await self._retrying(attempt, deadline, seen)
        finally:
            _SEEN.reset(token)

    async def _retrying(self, attempt: Callable[[], Awaitable[T]], deadline: float, seen: _Seen) -> T:
        last: Exception | None = None
        redirects = repaired = 0
        for n in itertools.count():
            try:
                return await attempt()
            except _Redirect as exc:
                redirects += 1
                if redirects <= 2:
                    continue  # a named leader: go there at once ...
                last = exc  # ... but replicas naming each other (mid-election) get the backoff
            except StaleRoute as exc:
                last = exc
                if await self._repair_map(exc, deadline):
                    repaired += 1
                    if repaired <= 2:
                        continue  # the map changed: the attempt routes by the new one at once
            except _OutOfTime as exc:
                last = last or exc  # "deadline passed" says less than what failed before it
            except Unavailable as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise self._deadline_error(seen, last)
            # capped low, as etcd's client does (25 ms): through an election a client mostly waits,
            # and a long pause would outlast the election it waits for (0.5 s added ~0.4 s to the
            # write stall after a leader's kill)
            pause = min(MAX_RETRY_PAUSE, 0.01 * 2 ** min(n, 6)) * (0.5 + _JITTER.random())
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            if n % 4 == 3:
                try:
                    await self._refresh_map(deadline)  # leaders may have moved while we backed off
                except Unavailable as exc:
                    # no node sent the map either; at the deadline what the attempts saw is the
                    # better story, so the loop goes on to tell it
                    last = last or exc
        raise AssertionError("unreachable")

    def _deadline_error(self, seen: _Seen, last: Exception | None) -> Unavailable:
        """:func:`deadline_error` for what one call saw, naming nodes by id where the map knows them."""
        ids = {address: nid for nid, addrs in self._advertised.items() for address in addrs}
        ids.update({address: nid for nid, address in self._nodes.items()})
        silent = sorted(seen.silent, key=lambda a: (a not in ids, _node_order((ids.get(a, ""), a))))
        named = [f"{ids[a]} ({a})" if a in ids else a for a in silent]
        return deadline_error(self.timeout, seen.leaderless(), named, last)

    async def _on_key(self, key: int, op: str, fields: dict[str, Any]) -> Any:
        deadline = time.monotonic() + self.timeout

        async def attempt() -> Any:
            smap = self._map if self._map is not None else await self._shard_map(deadline)
            return await self._send(smap.shard_for_key(key), op, fields, deadline)

        return await self._with_retry(attempt, deadline)

    async def _put_batches(self, pairs: list[tuple[int, bytes]], deadline: float,
                           session: list[Any] | None = None) -> None:
        """Write ``pairs`` in batches of one shard each, shards in parallel.

        ``session`` is given when ``pairs`` are a batch whose keys no longer fall in one shard
        (it split): each piece carries that batch's own session fields, not new ones.  The
        batch may have been applied before the split, and a split copies the shard's
        sessions to both halves, so each half applies its piece only if the batch was not
        applied -- a new number would apply it a second time.  The caller keeps that number
        open until every piece has its outcome.
        """
        smap = await self._shard_map(deadline)
        # (key, value) tuples go out as they are: msgpack sends a tuple as an array, as a list
        batches: list[tuple[Shard, list[tuple[int, bytes]]]] = []
        for shard_id, shard_pairs in smap.group_by_shard(pairs).items():
            grouped_by = smap.shard_by_id(shard_id)
            assert grouped_by is not None
            if session is not None:
                # One piece per shard: a piece fits the limits (its batch did), and two pieces with one
                # number on one shard would have the second taken for a duplicate and dropped.  (Shards
                # only split, never merge, so pieces of one batch never meet on one shard again.)
                batches.append((grouped_by, shard_pairs))
                continue
            batches.extend((grouped_by, batch) for batch in put_batches(shard_pairs))
        sem = asyncio.Semaphore(8)

        async def attempt(grouped_by: Shard, batch: list[tuple[int, bytes]], fields: dict[str, Any]) -> Any:
            shard = (await self._shard_map(deadline)).shard_for_key(batch[0][0])
            # every key was routed to ``grouped_by``: while the map keeps those bounds they all still
            # belong, and hashing each key of a striped batch again was a sixth of a bulk load's
            # client CPU; once the bounds changed (a split), each key is checked
            if not shard.owns_as(grouped_by) and shard.first_foreign(k for k, _ in batch) is not None:
                raise _Resplit()
            return await self._send(shard, "put", fields, deadline)

        async def one(grouped_by: Shard, batch: list[tuple[int, bytes]]) -> None:
            async with sem:
                own = await self._session.open() if session is None else None
                fields = {"pairs": batch, "session": own if own is not None else session}
                try:
                    try:
                        await self._with_retry(lambda: attempt(grouped_by, batch, fields), deadline)
                    except _Resplit:
                        await self._put_batches(batch, deadline, fields["session"])
                finally:
                    if own is not None:
                        self._session.end(own)

        results = await asyncio.gather(*(one(shard, b) for shard, b in batches), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _step(self, shard: Shard, op: str, lo: int, hi: int, fields: dict[str, Any], cursor: Any,
                    restart_on_expiry: bool, deadline: float) -> Any:
        """One request of a paged read of ``[lo, hi)`` routed to ``shard``, retries included.

        Raises :class:`_Reroute` once the map no longer puts ``[lo, hi)`` in ``shard``, and
        :class:`_RestartPart` on a lost cursor if ``restart_on_expiry``.
        """
        req = {**fields, "start": lo, "end": end_to_wire(hi), "cursor": cursor, "consistency": self.consistency}

        async def attempt() -> Any:
            try:
                return await self._send_routed(shard, op, req, deadline, lo, hi)
            except errors.CursorExpired:
                if restart_on_expiry:
                    raise _RestartPart() from None
                req["cursor"] = None  # a fresh (linearizable) snapshot from where we are
                raise

        return await self._with_retry(attempt, deadline)

    async def _pages(self, lo: int, hi: int, reverse: bool, filter: Any,
                     page_keys: int, spreads: bool = False) -> AsyncIterator[list[Row]]:
        """Pages of ``[lo, hi)`` in key order (descending if ``reverse``), prefetching ahead; bounded memory.

        The range is a work list, in visiting order, of key intervals not routed yet and of
        units (one segment each) routed by the map of the moment they came near the head.  A
        unit whose shard no longer holds its range (it split) gives back the interval it has
        not returned yet; that goes back to the head of the list and is routed again, maybe
        onto several shards now.  Later units that were prefetched meet the same fate when
        their turn comes.
        """
        fields = {"reverse": reverse, "limit": page_keys, "max_bytes": self.page_bytes, "filter": filter}
        work: collections.deque[_ScanUnit | tuple[int, int]] = collections.deque([(lo, hi)])
        stalled: float | None = None  # when re-routing began with no page since
        try:
            while work:
                smap = await self._shard_map(time.monotonic() + self.timeout)
                unit = route_ahead(work, smap, reverse, lambda shards, u_lo, u_hi: _ScanUnit(
                    self, shards, u_lo, u_hi, reverse, fields, spreads))
                try:
                    while (rows := await unit.next_page()) is not None:
                        stalled = None
                        if rows:
                            yield rows
                except _Reroute:
                    stalled = _check_stall(stalled, self.timeout)
                    work.popleft()
                    unit.close()
                    rest = unit.remainder()
                    if rest is not None:
                        work.appendleft(rest)
                    continue
                work.popleft()
        finally:
            # A prefetch that failed while we awaited another is nobody's error now: retrieve it, or
            # asyncio prints "Task exception was never retrieved" when the task is collected.
            for item in work:
                if isinstance(item, _ScanUnit):
                    item.close()

    async def split_shard(self, shard_id: str, at: KeyLike | None = None) -> dict[str, Any]:
        """Split range shard ``shard_id`` in two at key ``at`` (None: its leader picks a key near the median).

        Returns ``{"epoch": int, "shards": [left, right]}`` with the two shards in wire form
        (``end`` None for 2**64): ``left`` keeps the id and ``[start, at)``, ``right`` is a new
        shard owning ``[at, end)``.  Raises :class:`InvalidArgument` for an unknown shard, a
        stripe, an ``at`` not strictly inside the shard or a shard too small to split, and
        :class:`Unavailable` if the cluster cannot do it before the deadline.
        """
        if not isinstance(shard_id, str) or not shard_id:
            raise InvalidArgument(f"a shard id is a non-empty string, not {shard_id!r:.40}")
        if at is not None:
            at = coerce_key(at, "split key")
        deadline = time.monotonic() + self.timeout
        first = (await self._shard_map(deadline)).shard_by_id(shard_id)
        if first is None:
            await self._refresh_map(deadline)  # the cached map may predate the shard
            first = (await self._shard_map(deadline)).shard_by_id(shard_id)
        smap = await self._shard_map(deadline)
        if first is None:
            ids = smap.group_ids()
            shown = ", ".join(ids[:12]) + (f", ... ({len(ids)} shards)" if len(ids) > 12 else "")
            raise InvalidArgument(f"no shard {shard_id!r} in the shard map; the shards are {shown}")
        if first.stripe is not None:
            raise InvalidArgument(f"shard {shard_id} is stripe {first.stripe[0]} of {first.stripe[1]} of a "
                                  "striped segment; only range shards can be split")
        base: Shard = first
        unsure = False  # an attempt failed in a way that leaves its outcome unknown

        def found_in_map(m: ShardMap) -> dict[str, Any]:
            """The split an earlier attempt made, as the map records it (its reply was lost)."""
            left = m.shard_by_id(shard_id)
            right = None if left is None else next(
                (s for s in m.shards if s.start == left.end and s.stripe is None), None)
            if (left is None or right is None or left.start != base.start or right.end > base.end
                    or (at is not None and left.end != at)):
                # not a split we can call ours: say so rather than split the changed shard again
                raise RaftKVError(f"shard {shard_id} changed while the split request was in flight and "
                                  "its outcome is unknown; check the shard map before retrying")
            return {"epoch": m.epoch, "shards": [left.to_dict(), right.to_dict()]}

        async def attempt() -> Any:
            nonlocal unsure
            if unsure:
                # A split is not idempotent, and a failed attempt (timeout, lost connection, leadership
                # lost mid-commit) may still have split the shard: resending could split it twice.  A
                # split raises the shard's generation, so the map says whether it happened.
                await self._refresh_map(deadline)
            m = await self._shard_map(deadline)
            shard = m.shard_by_id(shard_id)
            if unsure and (shard is None or shard.generation != base.generation):
                return found_in_map(m)
            if shard is None:
                raise InvalidArgument(f"shard {shard_id} is no longer in the shard map")
            try:
                return await self._send(shard, "split", {"at": at}, deadline)
            except StaleRoute:
                raise  # refused at the door (wrong node or shard): nothing happened
            except RaftKVError:
                unsure = True
                raise

        reply = await self._with_retry(attempt, deadline)
        # Patch the cached map when this split is its only change since, so the next request routes
        # right without a StaleRoute round trip; otherwise (or if the reply does not fit) the cache
        # heals that way.
        with contextlib.suppress(KeyError, TypeError, ValueError):
            current = self._map
            if current is not None and int(reply["epoch"]) == current.epoch + 1:
                self._map = current.with_shards([Shard.from_dict(d) for d in reply["shards"]],
                                                epoch=int(reply["epoch"]))
        return reply


class AsyncQueryResult:
    """A statement's result for asyncio code: ``columns``, ``status``, and rows streamed by ``async for``.

    The rows can be read once -- by ``async for row in result``, :meth:`pages` or
    :meth:`rows` -- because they stream from the shards as they are read; starting a second
    read, or a read after :meth:`close`, raises :class:`~raftkv.errors.InvalidArgument`
    (run the query again instead).  :attr:`rowcount` is the number of rows the read
    yielded, known once it has run to the end (None until then).
    """

    def __init__(self, result: Any) -> None:
        """Wrap the executor's result (``raftkv.query.executor.QueryResult``; not imported here: the
        executor imports this module)."""
        self._result = result
        self.columns: tuple[str, ...] = result.columns
        self.status: str = result.status
        self._state = "unread"  # -> "reading" -> "complete", or "closed" if stopped before the end
        self._fetched = 0  # rows handed out so far
        self._started = False  # a read began (it may have failed or been closed since)

    @property
    def rowcount(self) -> int | None:
        """Rows yielded, once every row was read; None before that (and if closed early)."""
        return self._fetched if self._state == "complete" else None

    def __repr__(self) -> str:
        return self._repr_as(type(self).__name__)

    def _repr_as(self, kind: str) -> str:
        """``<QueryResult SELECT columns=('key', 'value') rows=3 complete>``: what a REPL shows.

        ``rows`` counts the rows fetched so far; the state is ``unread``, ``reading``,
        ``complete`` (every row was read) or ``closed`` (stopped before the end).
        """
        return f"<{kind} {self.status} columns={self.columns!r} rows={self._fetched} {self._state}>"

    def _start(self) -> None:
        """Claim the one read of the rows (raises on a second)."""
        if self._state != "unread":
            how = "was already read" if self._started else "was closed"
            raise InvalidArgument(f"this {self.status} result {how}: its rows stream from the cluster and "
                                  "can be read once; run the query again to read them again")
        self._state, self._started = "reading", True

    def pages(self) -> AsyncIterator[list[tuple[Any, ...]]]:
        """Rows, a page (list of tuples) at a time; a result is read once."""
        self._start()
        return self._pages()

    async def _pages(self) -> AsyncIterator[list[tuple[Any, ...]]]:
        try:
            # closed on the way out, so a read abandoned here drops the shards' prefetches at once
            async with contextlib.aclosing(self._result.pages()) as pages:
                async for page in pages:
                    self._fetched += len(page)
                    yield page
            if self._state == "reading":  # not if close() stopped it: then the count is not final
                self._state = "complete"
        finally:
            if self._state != "complete":
                self._state = "closed"  # abandoned or failed part way: the count is not final

    def __aiter__(self) -> AsyncIterator[tuple[Any, ...]]:
        self._start()
        return self._each_row()

    async def _each_row(self) -> AsyncIterator[tuple[Any, ...]]:
        async with contextlib.aclosing(self._pages()) as pages:
            async for page in pages:
                for row in page:
                    yield row

    async def rows(self) -> list[tuple[Any, ...]]:
        """Every row, in memory: for small results only."""
        return [row async for row in self]

    async def close(self) -> None:
        """Stop fetching rows (idempotent); a result not read to the end cannot be read any more."""
        if self._state in ("unread", "reading"):
            self._state = "closed"
        await self._result.close()


def _node_order(item: tuple[str, str]) -> tuple[int, str, str]:
    """Sort key of a (node id, address) pair: n2 before n10."""
    nid = item[0]
    digits = nid.lstrip("abcdefghijklmnopqrstuvwxyz")
    return (int(digits) if digits.isdigit() else -1, nid, item[1])


def _retrieve(task: asyncio.Task) -> None:
    """Mark ``task``'s outcome as seen (scans drop the pages of prefetches they no longer need)."""
    if not task.cancelled():
        task.exception()


class _Redirect(RaftKVError):
    """Internal: the leader moved and we know where."""


class _NoAnswer(Unavailable):
    """Internal: ``address`` gave no answer at all, as opposed to an error a node sent.

    ``kind`` says how: "unresolvable", "refused", "timeout" (no connection or no reply in
    time), "lost" (the connection closed or broke) or "error" (another connect failure).
    """

    def __init__(self, message: str, address: str, kind: str) -> None:
        super().__init__(message)
        self.address = address
        self.kind = kind


class _NoAnswerInTime(_NoAnswer, errors.Timeout):
    """Internal: no connection or no reply in time (still a :class:`~raftkv.errors.Timeout`:
    a write's outcome is unknown)."""


class _OutOfTime(errors.Timeout):
    """Internal: the call's deadline passed before an attempt could start (says nothing about the cluster)."""


def _advertised_or(value: Any, client: str) -> tuple[str, ...]:
    """A node's advertised client addresses from a ``map`` reply, checked as the meta group checks
    them; a node that advertises none, or a list that does not pass, gives its one ``client``."""
    try:
        return check_advertised(value)
    except ValueError:
        return (client,)


def _definite(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a failure to reach a node that waiting will not cure, as far as a client
    with no cluster yet can tell: the name does not resolve, or nothing listens at the address."""
    return isinstance(exc, _NoAnswer) and exc.kind in ("unresolvable", "refused")


@dataclass
class _Seen:
    """What the attempts of one call saw: the raw material of its error if its deadline passes.

    ``shards``: shard id -> "acted" (a replica answered as its leader would: a reply, or an
    error other than NotLeader), "no leader" (the last replica to answer knew of no leader) or
    "unknown" (only redirects, or no replica answered).  ``silent``: address -> why, for each
    node whose latest attempt got no answer (a node that answers again leaves it).
    """

    shards: dict[str, str] = field(default_factory=dict)
    silent: dict[str, str] = field(default_factory=dict)

    def reached(self, address: str) -> None:
        """``address`` answered (so it is not silent any more)."""
        self.silent.pop(address, None)

    def answered(self, address: str, shard_id: str, outcome: str | None) -> None:
        """``address`` answered an attempt at ``shard_id``; ``outcome`` is the shard's new state
        (None: the answer does not say whether the shard has a leader, e.g. a redirect)."""
        self.reached(address)
        if outcome is None:
            self.shards.setdefault(shard_id, "unknown")
        else:
            self.shards[shard_id] = outcome

    def no_answer(self, exc: _NoAnswer, shard_id: str) -> None:
        """An attempt at ``shard_id`` got no answer from ``exc.address``."""
        self.silent[exc.address] = exc.message
        self.shards.setdefault(shard_id, "unknown")

    def leaderless(self) -> list[str]:
        """The shards no replica acted as leader for, as far as the attempts saw."""
        return sorted(sid for sid, state in self.shards.items() if state != "acted")


# the _Seen of the _with_retry call running in this task (a context variable, so that concurrent
# calls on one client -- each in its own task -- keep their observations apart)
_SEEN: contextvars.ContextVar[_Seen | None] = contextvars.ContextVar("raftkv_client_seen", default=None)


def _seen() -> _Seen:
    """The running call's :class:`_Seen` (a throwaway one outside ``_with_retry``): read only when an
    attempt fails, not on every request."""
    return _SEEN.get() or _Seen()


def deadline_error(timeout: float, leaderless: Sequence[str], silent: Sequence[str],
                   last: BaseException | None) -> Unavailable:
    """The :class:`~raftkv.errors.Unavailable` a call raises when its ``timeout`` passes.

    ``leaderless`` are the ids of shards no replica led during the call, ``silent`` the nodes
    that did not answer (already written as "n2 (127.0.0.1:40002)", or an address), ``last``
    the last error seen, used only when no shard is known to be leaderless:

    >>> deadline_error(10.0, ["s0003"], ["n2 (127.0.0.1:40002)"], None).message
    'shard s0003 has no leader within 10.0 s; node not answering: n2 (127.0.0.1:40002)'
    """
    if leaderless:
        many = len(leaderless) > 1
        message = (f"shard{'s' if many else ''} {', '.join(leaderless)} {'have' if many else 'has'} "
                   f"no leader within {timeout:.1f} s")
    else:
        detail = last.message if isinstance(last, RaftKVError) else str(last or "no attempt finished")
        message = f"cluster could not serve the request in {timeout:.1f}s: {detail}"
    if silent:
        message += f"; node{'s' if len(silent) > 1 else ''} not answering: {', '.join(silent)}"
    return Unavailable(message, leaderless=list(leaderless), not_answering=list(silent))


def _describe_failures(addresses: Iterable[str], failures: Mapping[str, BaseException]) -> str:
    """Why each of ``addresses`` failed, in their order, each reason once ("a refused the connection; ...")."""
    texts = []
    for address in addresses:
        exc = failures.get(address)
        if exc is None:
            continue
        if isinstance(exc, _NoAnswer):
            texts.append(exc.message)  # names the address, or the host that did not resolve
        else:
            texts.append(f"{address}: {exc.message if isinstance(exc, RaftKVError) else exc}")
    return "; ".join(dict.fromkeys(texts)) or "no address was tried"


class _Reroute(RaftKVError):
    """Internal: the map no longer puts a request's key range in the shard it was routed to."""


class _RestartPart(RaftKVError):
    """Internal: a read that must see one snapshot per shard lost it (cursor expired): start the part over."""


class _Resplit(RaftKVError):
    """Internal: a batch no longer falls in one shard after a map change."""


def _check_stall(since: float | None, timeout: float) -> float:
    """When re-routing with no reply in between began (now if it just did); Unavailable after ``timeout``.

    Each re-route follows a change of the map, so this only stops a map that never settles.
    """
    now = time.monotonic()
    if since is None:
        return now
    if now - since > timeout:
        raise Unavailable(f"the shard map kept changing under the request for {timeout:.1f}s")
    return since


def _rows(reply: dict[str, Any]) -> list[Row]:
    """The rows of a ``scan`` reply (keys come as one blob, decoded in C); RemoteProtocolError if
    the page is not one, rather than rows made up from whatever a broken node sent."""
    keys, values = reply.get("keys"), reply.get("values")
    if type(keys) is not bytes or type(values) is not list:
        raise errors.RemoteProtocolError(f"a scan page needs a bytes blob of keys and a list of values, "
                                         f"not {type(keys).__name__} and {type(values).__name__}")
    try:
        return list(zip(decode_raw_keys(keys), values, strict=True))
    except ValueError as exc:
        raise errors.RemoteProtocolError(f"malformed scan page: {exc}") from None


def _past_page(lo: int, hi: int, resume: Any, reverse: bool) -> tuple[int, int]:
    """What is left of ``[lo, hi)`` after a page that says where to ``resume`` (a node's reply)."""
    if type(resume) is not int or not lo < resume < hi:
        # every page moves on (a node examines at least one row): anything else would loop forever
        raise errors.RemoteProtocolError(f"resume {resume!r:.40} is not inside [{lo}, {hi})")
    return (lo, resume) if reverse else (resume, hi)


class _Stream:
    """One shard's share of ``[lo, hi)``, read a request at a time (``resume``/``cursor``).

    The next request goes out as soon as a reply is taken (prefetch).  ``lo``/``hi`` narrow
    with every reply taken: they are always exactly what this stream has not returned yet.
    """

    def __init__(self, client: AsyncClient, shard: Shard, op: str, lo: int, hi: int, fields: dict[str, Any],
                 reverse: bool, restart_on_expiry: bool) -> None:
        self.client = client
        self.shard = shard
        self.op = op
        self.lo, self.hi = lo, hi
        self.fields = fields
        self.reverse = reverse
        self.restart_on_expiry = restart_on_expiry
        self.cursor: Any = None
        self.task: asyncio.Task | None = None
        self.finished = False
        # a spread scan's plan, from the first reply: the chunks past this stream's (narrowed) range,
        # in visiting order, the snapshot's index and the leader's handle on it (client/spread.py)
        self.chunks: tuple[list[tuple[int, int]], int, Any] | None = None

    def launch(self) -> asyncio.Task:
        """Send the request for what is left."""
        self.task = asyncio.create_task(self.client._step(
            self.shard, self.op, self.lo, self.hi, self.fields, self.cursor, self.restart_on_expiry,
            time.monotonic() + self.client.timeout))
        return self.task

    async def next(self) -> Any:
        """The reply of the request in flight (its error, if it failed); launches the next one."""
        assert self.task is not None
        reply = await self.task
        self.task = None
        resume = reply["resume"]
        if resume is None:
            self.finished = True
            return reply
        self.lo, self.hi = _past_page(self.lo, self.hi, resume, self.reverse)
        if "spread" in self.fields:  # asked on the first request only
            self.fields = {k: v for k, v in self.fields.items() if k != "spread"}
            self._plan(reply)
        self.cursor = reply.get("cursor")
        self.launch()
        return reply

    def _plan(self, reply: dict[str, Any]) -> None:
        """Take a spread scan's plan from the first reply, if it has one: this stream goes on to
        the first cut only, the chunks past it are read by :class:`_ChunkReader`."""
        cuts, index = reply.get("chunks"), reply.get("index")
        if cuts is None:
            return
        handle = reply.get("snapshot")
        if type(index) is not int or index < 0 or not (isinstance(handle, list) and len(handle) == 2):
            raise errors.RemoteProtocolError(f"a spread scan's plan needs its index and snapshot, not "
                                             f"{index!r:.40} and {handle!r:.40}")
        bounds = spread.chunk_bounds(cuts, self.lo, self.hi, self.reverse)
        self.lo, self.hi = bounds[0]
        self.chunks = (bounds[1:], index, handle)

    def close(self) -> None:
        """Drop the request in flight, if any."""
        task, self.task = self.task, None
        if task is None:
            return
        if task.done():
            _retrieve(task)
        else:
            task.cancel()
            task.add_done_callback(_retrieve)  # in case it fails before the cancellation lands


class _Part:
    """A part of a :meth:`AsyncClient.range_steps` walk: one segment's ``[lo, hi)`` and a stream per shard."""

    def __init__(self, pid: int, lo: int, hi: int) -> None:
        self.id = pid
        self.lo, self.hi = lo, hi
        self.streams: list[_Stream] = []


class KeyMerge:
    """K-way merge of K key-ordered row streams, fed a page at a time (pure: no I/O).

    The streams are the stripes of a striped segment: each holds the keys of its stripe, so
    no key is in two streams.  A row can go out once every stream that is not finished has a
    row buffered (its next key is known); :meth:`hungry` says which need a page first.
    ``last`` is the last key that went out: everything before it (after it, ``reverse``) is out.
    """

    def __init__(self, k: int, reverse: bool = False) -> None:
        self._pages: list[list[Row]] = [[] for _ in range(k)]
        self._pos = [0] * k
        self._finished = [False] * k
        self._reverse = reverse
        # a row's place in visiting order: ascending keys, or descending ones as ascending negatives
        self._order: Callable[[Row], int] = (lambda row: -row[0]) if reverse else _row_key
        self.last: int | None = None

    def hungry(self) -> list[int]:
        """The streams that need their next page before any row can go out."""
        return [i for i, page in enumerate(self._pages) if not self._finished[i] and self._pos[i] >= len(page)]

    def feed(self, i: int, rows: list[Row], finished: bool) -> None:
        """Stream ``i``'s next page (its buffer must be empty); ``finished``: it has no more."""
        if self._pos[i] < len(self._pages[i]) or self._finished[i]:
            raise ValueError(f"stream {i} was fed before it ran dry")
        self._pages[i], self._pos[i], self._finished[i] = rows, 0, finished

    def exhausted(self) -> bool:
        """Every stream finished and every row went out."""
        return all(self._finished) and all(p >= len(page) for p, page in zip(self._pos, self._pages, strict=True))

    def take(self) -> list[Row]:
        """Every row that can go out now, in order (none while a stream is hungry).

        That is every buffered row up to the smallest last buffered key of the streams not
        finished: past it, such a stream's next page may hold a smaller key.  The rows are cut
        out of each page by bisection and put in order by one sort, which finds the K sorted runs
        (a merge row by row through a heap in Python cost five times as much).
        """
        if self.hungry():
            return []
        order, pages, pos = self._order, self._pages, self._pos
        live = [i for i in range(len(pages)) if pos[i] < len(pages[i])]
        ends = [order(pages[i][-1]) for i in live if not self._finished[i]]
        bound = min(ends) if ends else None
        out: list[Row] = []
        for i in live:
            page = pages[i]
            cut = len(page) if bound is None else bisect.bisect_right(page, bound, pos[i], key=order)
            out += page[pos[i]:cut]
            if cut >= len(page):
                pages[i], pos[i] = [], 0
            else:
                pos[i] = cut
        out.sort(key=_row_key, reverse=self._reverse)
        if out:
            self.last = out[-1][0]
        return out


_row_key = operator.itemgetter(0)  # a row's key (its first field), in C: a sort calls it per row


class _ScanUnit:
    """One segment of a scan, ``[lo, hi)``: one shard's pages, or a striped segment's stripes merged."""

    def __init__(self, client: AsyncClient, shards: tuple[Shard, ...], lo: int, hi: int, reverse: bool,
                 fields: dict[str, Any], spreads: bool = False) -> None:
        self.client = client
        self.shards = shards
        self.lo, self.hi = lo, hi
        self.reverse = reverse
        if spreads and len(shards) == 1 and len(shards[0].replicas) > 1:
            fields = {**fields, "spread": fields["limit"] * spread.CHUNK_PAGES}
        self.streams = [_Stream(client, s, "scan", lo, hi, fields, reverse, False) for s in shards]
        self.merge = KeyMerge(len(shards), reverse) if len(shards) > 1 else None
        self.started = False
        # a spread scan's chunks past the first stream's range: those not started, those reading
        self.waiting: collections.deque[_ChunkReader] = collections.deque()
        self.reading: collections.deque[_ChunkReader] = collections.deque()
        self.unreachable: set[str] = set()  # replicas that did not answer: their chunks go to the leader
        self.planned = False  # the chunks of the plan are made
        self.handle: Any = None  # the leader's shared snapshot, until the chunks are done with it

    def start(self) -> None:
        """Ask for the first page of every shard."""
        for stream in self.streams:
            stream.launch()
        self.started = True

    async def next_page(self) -> list[Row] | None:
        """The next rows in key order (maybe none: a filter kept none), or None when the segment is done.

        Raises :class:`_Reroute` if a shard no longer holds its part of the segment.
        """
        if not self.started:
            self.start()
        if self.merge is None:
            stream = self.streams[0]
            if not stream.finished:
                rows = _rows(await stream.next())
                if stream.chunks is not None and not self.planned:
                    self._plan_chunks(stream)
                return rows
            return await self._chunk_page()
        merge = self.merge
        while True:
            for i in merge.hungry():
                stream = self.streams[i]
                rows = _rows(await stream.next())
                merge.feed(i, rows, stream.finished)
            if merge.exhausted():
                return None
            rows = merge.take()
            if rows:
                return rows

    def _plan_chunks(self, stream: _Stream) -> None:
        """Make a reader per chunk of the plan the first page brought, and start the first few."""
        assert stream.chunks is not None
        bounds, index, handle = stream.chunks
        self.planned = True
        self.handle = handle
        shard = self.shards[0]
        order = spread.replica_order(shard.replicas, self.client._leaders.get(shard.id))
        for i, (lo, hi) in enumerate(bounds):
            self.waiting.append(_ChunkReader(self, lo, hi, index, handle, order[i % len(order)]))
        self._fill()

    def _fill(self) -> None:
        while self.waiting and len(self.reading) < spread.CHUNKS_AHEAD + 1:
            reader = self.waiting.popleft()
            reader.start()
            self.reading.append(reader)

    async def _chunk_page(self) -> list[Row] | None:
        """The next page of the spread scan's chunks, in order; None when the last is out."""
        while self.reading:
            reader = self.reading[0]
            rows, _ = await reader.next()
            if rows is None:
                self.reading.popleft()
                self._fill()
                continue
            return rows
        self._release()
        return None

    def _release(self) -> None:
        """Tell the leader the chunks are done with its snapshot (not awaited; it expires anyway)."""
        handle, self.handle = self.handle, None
        if handle is None:
            return
        with contextlib.suppress(RuntimeError):  # no running loop: the client is going away
            self.client._release_snapshot(self.shards[0], handle)

    def remainder(self) -> tuple[int, int] | None:
        """The interval this unit has not returned yet (None if nothing is left)."""
        if self.merge is None and self.planned and self.streams[0].finished:
            # a spread scan whose first stream is done: from where the chunks' rows got to
            at = self.reading[0].position if self.reading else (self.lo if self.reverse else self.hi)
            lo, hi = (self.lo, at) if self.reverse else (at, self.hi)
        elif self.merge is None:
            lo, hi = self.streams[0].lo, self.streams[0].hi
            if self.streams[0].chunks is not None:  # narrowed to the first chunk: the rest is left too
                lo, hi = (self.lo, hi) if self.reverse else (lo, self.hi)
        else:
            # the stripes stopped at different keys: go on from the last key the merge let out
            lo, hi, last = self.lo, self.hi, self.merge.last
            if last is not None:
                lo, hi = (lo, last) if self.reverse else (last + 1, hi)
        return (lo, hi) if lo < hi else None

    def close(self) -> None:
        """Drop every request in flight."""
        for stream in self.streams:
            stream.close()
        for reader in self.reading:
            reader.close()
        self._release()


class _ChunkReader:
    """One chunk ``[lo, hi)`` of a spread scan, read ahead (a few pages, bounded) on one replica at
    the snapshot's ``index``, or from the leader's snapshot (``handle``) if that replica cannot.  If
    the leader lost that snapshot too, the chunk raises :class:`_Reroute` when its turn comes: the
    rest of the scan starts over from a fresh first page, as after a lost cursor."""

    def __init__(self, unit: _ScanUnit, lo: int, hi: int, index: int, handle: Any, node: str) -> None:
        self.unit = unit
        self.lo, self.hi = lo, hi
        self.index, self.handle, self.node = index, handle, node
        self.position = hi if unit.reverse else lo  # the next row out is on this side of it
        self.pages: asyncio.Queue[tuple[list[Row] | None, int] | BaseException] = asyncio.Queue(spread.PAGES_AHEAD)
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        """Begin reading."""
        self.task = asyncio.create_task(self._run())

    async def next(self) -> tuple[list[Row] | None, int]:
        """The next page and where the chunk goes on after it; ``(None, end)`` when the chunk is done."""
        item = await self.pages.get()
        if isinstance(item, BaseException):
            raise item
        self.position = item[1]
        return item

    def close(self) -> None:
        """Stop reading."""
        if self.task is not None and not self.task.done():
            self.task.cancel()

    async def _run(self) -> None:
        try:
            await self._read()
        except Exception as exc:  # noqa: BLE001 -- handed to whoever takes this chunk's pages
            await self.pages.put(exc)

    async def _read(self) -> None:
        unit, client = self.unit, self.unit.client
        shard, reverse = unit.shards[0], unit.reverse
        fields = {k: v for k, v in unit.streams[0].fields.items() if k != "spread"}
        lo, hi, cursor = self.lo, self.hi, None
        at_replica = self.node not in unit.unreachable
        while True:
            deadline = time.monotonic() + client.timeout
            if at_replica:
                try:
                    reply = await client._ask_replica(shard, self.node, "scan", {
                        **fields, "start": lo, "end": end_to_wire(hi), "at": self.index, "cursor": cursor}, deadline)
                    if reply.get("index") != self.index:  # e.g. a node that does not know ``at``
                        raise errors.RemoteProtocolError(f"chunk read at index {reply.get('index')!r:.40}, "
                                                         f"not the scan's {self.index}")
                except Exception as exc:  # noqa: BLE001 -- whatever failed, the leader's snapshot will do
                    if isinstance(exc, _NoAnswer):
                        unit.unreachable.add(self.node)
                    at_replica, cursor = False, None  # the leader's snapshot has the same state
                    continue
            else:
                try:
                    reply = await client._step(shard, "scan", lo, hi, {**fields, "snapshot": self.handle}, cursor,
                                               True, deadline)
                except _RestartPart:
                    if cursor is not None:
                        cursor = None  # the cursor went (evicted, idle): the snapshot may still be held
                        continue
                    raise _Reroute() from None  # the snapshot went too: the rest starts over afresh
                if reply.get("index") != self.index:
                    # not the scan's state (a node that ignored ``snapshot``): the rest starts over,
                    # as a scan that lost its cursor goes on from a fresh snapshot
                    raise _Reroute()
            resume = reply["resume"]
            rows = _rows(reply)
            if resume is None:
                await self.pages.put((rows, lo if reverse else hi))
                await self.pages.put((None, lo if reverse else hi))
                return
            lo, hi = _past_page(lo, hi, resume, reverse)
            cursor = reply.get("cursor")
            await self.pages.put((rows, resume))


def first_segment(smap: ShardMap, lo: int, hi: int, reverse: bool = False) -> tuple[tuple[Shard, ...], int, int]:
    """The segment holding the first key of ``[lo, hi)`` in visiting order (the last if ``reverse``):
    its shards, and its bounds clipped to ``[lo, hi)``.  A lookup, not a walk over the range."""
    key = hi - 1 if reverse else lo
    shards = smap.segments_for_range(key, key + 1)[0][0]
    return shards, max(lo, shards[0].start), min(hi, shards[0].end)


def route_ahead(work: collections.deque[Any], smap: ShardMap, reverse: bool,
                make: Callable[[tuple[Shard, ...], int, int], Any]) -> Any:
    """Route the head of a scan's work list and start it and the units behind it; returns the head.

    ``work`` holds, in visiting order, key intervals ``(lo, hi)`` not routed yet and units
    (made by ``make(shards, lo, hi)`` for one segment; they have ``shards``, ``started``
    and ``start()``).  An interval is routed one segment at a time, only when it comes near
    the head, so by the newest map.  Units behind the head are started (their first pages
    fetched in parallel) up to :data:`SCAN_PREFETCH_SHARDS` shards.
    """
    ahead = 0
    i = 0
    while i < len(work):
        item = work[i]
        if isinstance(item, tuple):
            lo, hi = item
            shards, s_lo, s_hi = first_segment(smap, lo, hi, reverse)
            item = work[i] = make(shards, s_lo, s_hi)
            rest = (lo, s_lo) if reverse else (s_hi, hi)
            if rest[0] < rest[1]:
                work.insert(i + 1, rest)
        if i > 0:
            ahead += len(item.shards)
            if ahead > SCAN_PREFETCH_SHARDS:
                break
        if not item.started:
            item.start()
        if ahead >= SCAN_PREFETCH_SHARDS:
            break
        i += 1
    return work[0]

"""A raftkv node: its Raft groups, the Raft loop thread, and the asyncio client server.

Threads: the asyncio loop (client connections, request validation, LevelDB
reads) and the Raft loop (``replication/loop.py``: peers, ticks, applies,
fsyncs).  They meet in three places only: ``RaftGroup.submit`` (a locked
queue), ``RaftLoop.call_soon`` / ``read_index``, and :class:`Mailbox`, which
carries completions back to asyncio with one wake-up per Raft iteration rather
than one per request.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import contextvars
import faulthandler
import gc
import hmac
import json
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterable, Iterator
from dataclasses import dataclass, fields
from typing import Any

from .. import errors, logs
from ..errors import (
    CursorExpired,
    InvalidArgument,
    NotLeader,
    OutcomeUnknown,
    Overloaded,
    RaftKVError,
    ShardNotHere,
    StaleRoute,
    Timeout,
    Unauthenticated,
    UnknownOperation,
)
from ..keys import MAX_KEY, MAX_VALUE_BYTES, check_key, check_value
from ..logs import LogLimiter, event
from ..protocol.codec import DEFAULT_MAX_FRAME, NEED_DATA, FrameDecoder, check_request_id, encode
from ..replication import commands, sessions
from ..replication.balance import pick_transfer
from ..replication.group import FAIL_REASON, RaftGroup, RaftOptions
from ..replication.loop import RaftLoop
from ..replication.split_policy import (
    ShardStats,
    SplitSettings,
    StripePlan,
    WriteTracker,
    maybe_load_split,
    maybe_split,
    plan_segment,
    stripe_replicas,
)
from ..replication.transport import peer_tls_contexts
from ..routing import records
from ..routing.ranges import end_from_wire, end_to_wire
from ..routing.shardmap import META_GROUP, Shard, ShardMap, initial_map, meta_replicas, shard_name
from ..routing.stripes import MAX_STRIPES
from ..stats import OpStats
from ..storage.leveldb import StoreView
from . import maplink
from .config import NodeConfig, check_data_dir, format_hostport, is_loopback, server_tls_context
from .cursors import CURSOR_IDLE_SECONDS, Cursors, Page
from .members import Members
from .metrics import MetricsServer
from .pending import PendingWrites
from .registry import GroupRegistry

log = logging.getLogger(__name__)

MAX_PAGE_KEYS = 10_000
MAX_PAGE_BYTES = 4 << 20
MAX_BATCH_KEYS = 10_000
# client-port limits (design §6); ClientLimits lets a node override most of them
# Requests in progress per connection, by count and by bytes. 1,024 as TiKV's gRPC server allows
# concurrent streams per connection: 256 capped one client at 256 puts per node, which left a
# 6-node cluster half fed where a 3-node one was full (design §6). The bytes bound what those
# requests hold: 1,024 frames of up to 8 MiB would be 8 GiB.
MAX_INFLIGHT_PER_CONN = 1024
MAX_REQUEST_BYTES_PER_CONN = 64 << 20
MAX_HEAVY_PER_CONN = 8  # scans and aggregates: each reply may be a few MiB
HEAVY_OPS = frozenset({"scan", "aggregate"})
MAX_CONNECTIONS = 1024  # at the cap, the longest-idle connection with nothing in progress makes room
WRITE_BUFFER_HIGH = 4 << 20
READ_CHUNK = 256 * 1024  # also the StreamReader limit: it stops reading the socket at twice this
MAX_UNSENT_REPLY_BYTES = 16 << 20  # per connection: replies computed but not yet written out
MAX_PARTIAL_FRAME_BYTES = 64 << 20  # per node: declared sizes of the large frames being received
SMALL_FRAME = 64 << 10  # frames up to this size never count against (nor are refused by) that budget
# Gets answered on arrival leave in writes of at most this many replies: with 64 gets in flight a
# loop turn's replies in one write made the client and the node take turns (each about half idle);
# in bursts, the client decodes one while the node reads the next (one client: 48-51k -> 80k
# gets/s at the same node CPU per get).  Put replies, which a commit releases all at once, keep
# one write per turn: bursts of them measured 5 % slower (15.7k against 16.5k puts/s, 3 runs each).
REPLY_BURST = 32
# msgpack objects in one request: a filter may weigh 2**20 (query.predicate.MAX_FILTER_COST) and
# every other field together holds far fewer than 2**16
MAX_REQUEST_OBJECTS = (1 << 20) + (1 << 16)
FRAME_READ_SECONDS = 20.0  # a frame must be whole this long (of waiting for the peer) after its first byte
IDLE_SECONDS = 300.0  # a connection with nothing in progress and no traffic this long is closed
SEND_STALL_SECONDS = 60.0  # a reply the peer takes nothing of for this long closes the connection
CLOSE_LINGER_SECONDS = 5.0  # a closing connection's last frame gets this long to flush, then it is cut
SCAN_PAGE_SECONDS = 0.05  # a page returns early (with 'resume') rather than hold the node longer
MAX_CHUNK_CUTS = 64  # keys cutting a spread scan's rest into chunks, per first page
AT_WAIT_SECONDS = 1.0  # a chunk read at an index waits this long at most for its replica to apply it
DEFAULT_OP_TIMEOUT = 10.0
MAX_OP_TIMEOUT = 60.0
AGG_STEP_ROWS = 50_000
MAX_GROUPS = 100_000
BALANCE_INTERVAL = 3.0
BALANCE_RETRY_AFTER = 30.0  # seconds before a group whose hand-off did not happen is tried again
# ... and before a stripe is handed to its preferred node again: two stripes of a segment led by
# one node make that node the bottleneck of every write to the segment, so failing costs more
PREFERRED_RETRY_AFTER = 3.0
PUBLISH_INTERVAL = 1.0  # shard leaders check that the map shows their latest split this often
SPLIT_CHECK_INTERVAL = 1.0  # shard leaders weigh their shards this often
LOAD_SAMPLE = 256  # recent write requests whose keys a shard leader keeps, to split on load
WRITE_SWEEP_SECONDS = 0.1  # how late past its deadline a put's timeout may be answered
APPEND_LAG = 2.0  # seconds: a write past the shard's largest key of this long ago is an append


_FAIL_TO_ERROR = {
    FAIL_REASON.QUEUE_FULL: Overloaded,
    FAIL_REASON.MISSING_LEADER: NotLeader,
    FAIL_REASON.DISCARDED: NotLeader,
    FAIL_REASON.NOT_LEADER: NotLeader,
    FAIL_REASON.LEADER_CHANGED: NotLeader,
    FAIL_REASON.REQUEST_DENIED: NotLeader,
    FAIL_REASON.UNKNOWN_OUTCOME: Timeout,
}


class Mailbox:
    """Callables posted from the Raft thread, run on the asyncio loop in one batch per Raft iteration."""

    def __init__(self, aloop: asyncio.AbstractEventLoop) -> None:
        self._aloop = aloop
        self._items: list[Callable[[], None]] = []

    def post(self, fn: Callable[[], None]) -> None:
        """Queue ``fn`` (Raft thread)."""
        self._items.append(fn)

    def flush(self) -> None:
        """Hand what was posted to asyncio with a single wake-up (Raft thread, end of iteration)."""
        if self._items:
            items, self._items = self._items, []
            self._aloop.call_soon_threadsafe(_run_all, items)


def _run_all(items: list[Callable[[], None]]) -> None:
    for fn in items:
        fn()


def _resolve(fut: asyncio.Future, result: Any = None, error: BaseException | None = None) -> None:
    if not fut.done():
        if error is not None:
            fut.set_exception(error)
        else:
            fut.set_result(result)


CLIENT_LIMITS_ENV = "RAFTKV_CLIENT_LIMITS"


@dataclass(frozen=True)
class ClientLimits:
    """One node's client-port limits (design §6).

    The module constants are the defaults.  ``raftkv node`` reads overrides from the JSON object in
    ``$RAFTKV_CLIENT_LIMITS`` (tests shrink the timeouts and caps that way, before the node starts).
    """

    max_connections: int = MAX_CONNECTIONS
    max_inflight: int = MAX_INFLIGHT_PER_CONN
    max_request_bytes: int = MAX_REQUEST_BYTES_PER_CONN
    max_unsent_bytes: int = MAX_UNSENT_REPLY_BYTES
    max_partial_bytes: int = MAX_PARTIAL_FRAME_BYTES
    frame_seconds: float = FRAME_READ_SECONDS
    idle_seconds: float = IDLE_SECONDS
    send_stall_seconds: float = SEND_STALL_SECONDS

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            ok_type = (int,) if f.type == "int" else (int, float)
            if type(v) not in ok_type or not 0 < v < math.inf:
                raise InvalidArgument(f"client limit {f.name} must be a positive {f.type}, not {v!r}")

    @classmethod
    def from_json(cls, text: str | None) -> ClientLimits:
        """The defaults, overridden by the JSON object ``text`` (None or empty: no overrides)."""
        if not text:
            return cls()
        try:
            raw = json.loads(text)
        except ValueError as exc:
            raise InvalidArgument(f"{CLIENT_LIMITS_ENV} is not JSON: {exc}") from None
        known = {f.name for f in fields(cls)}
        if not isinstance(raw, dict) or set(raw) - known:
            raise InvalidArgument(f"{CLIENT_LIMITS_ENV} must be a JSON object with keys among {sorted(known)}")
        return cls(**raw)


class _ConnectionClosing(ConnectionError):
    """Internal: the connection is being closed, so whatever waited for it gives up."""


class _ClientConnection:
    """One client connection's limits and state, and its orderly, back-pressured writer."""

    def __init__(self, writer: asyncio.StreamWriter, limits: ClientLimits, authenticated: bool = True) -> None:
        self.writer = writer
        self.limits = limits
        self.authenticated = authenticated  # False until a ``hello`` with the node's client token
        self.inflight = asyncio.Semaphore(limits.max_inflight)
        self.inflight_count = 0  # requests in progress (take_slot, free_slot)
        self.request_bytes = 0  # and their frame bytes
        self._request_room = asyncio.Event()  # set when request_bytes last fell (or on close)
        self.heavy = asyncio.Semaphore(MAX_HEAVY_PER_CONN)
        self.tasks: set[asyncio.Task] = set()  # requests being answered
        self.pending = 0  # puts handed to Raft and not answered yet (they have no task: PendingWrites)
        self._settled = asyncio.Event()  # set while ``pending`` is 0
        self._settled.set()
        self.unsent = 0  # bytes of replies computed and not yet written out
        self.partial_reserved = 0  # this connection's share of the node's partial-frame budget
        self.last_active = time.monotonic()  # last byte received, reply written or request finished
        self.closing = False
        self._room = asyncio.Event()  # set while ``unsent`` is under budget (or the connection closes)
        self._room.set()
        self._write_lock = asyncio.Lock()
        self._batch: list[bytes] = []  # replies of this loop turn, written in one go: _flush_batch
        self._batch_bytes = 0

    async def room(self) -> None:
        """Wait until the replies this connection has computed but not sent are under budget.

        Reads call this (through ``Node._reply_room``) right before they materialise their result,
        and nothing awaits between that and :meth:`charge`: so however many requests are in flight,
        at most one reply overshoots the budget.  Raises if the connection closes meanwhile.
        """
        while True:
            if self.closing:
                raise _ConnectionClosing()
            if self.unsent < self.limits.max_unsent_bytes:
                return
            await self._room.wait()

    def charge(self, frame: bytes) -> None:
        """Count a computed reply until :meth:`send` has written it."""
        self.unsent += len(frame)
        if self.unsent >= self.limits.max_unsent_bytes:
            self._room.clear()

    def _discharge(self, frame: bytes) -> None:
        self.unsent -= len(frame)
        if self.unsent < self.limits.max_unsent_bytes:
            self._room.set()

    async def take_slot(self, size: int) -> None:
        """Wait for a request slot and for room for a request of ``size`` frame bytes; the reader
        waits here, so a client over either bound only stalls itself.  A request larger than the
        byte budget is taken once nothing else is in progress.  Raises if the connection closes."""
        await self.inflight.acquire()
        try:
            while self.request_bytes and self.request_bytes + size > self.limits.max_request_bytes:
                if self.closing:
                    raise _ConnectionClosing()
                self._request_room.clear()
                await self._request_room.wait()
        except BaseException:  # closing, or the reader cancelled: the slot goes back
            self.inflight.release()
            raise
        self.request_bytes += size
        self.inflight_count += 1

    def free_slot(self, size: int) -> None:
        """A request of ``size`` frame bytes is answered: free its slot and its bytes."""
        self.inflight.release()
        self.request_bytes -= size
        self.inflight_count -= 1
        self._request_room.set()
        self.last_active = time.monotonic()

    def finished(self, task: asyncio.Task, size: int) -> None:
        """Done-callback of a request's task: free its slot."""
        self.tasks.discard(task)
        self.free_slot(size)

    @property
    def busy(self) -> bool:
        """Whether a request of this connection is still being answered."""
        return bool(self.tasks) or self.pending > 0

    def began_pending(self) -> None:
        """A request is now answered from a callback rather than a task (:meth:`ended_pending`)."""
        self.pending += 1
        self._settled.clear()

    def ended_pending(self, size: int) -> None:
        """The callback-answered request of ``size`` frame bytes is answered: free its slot."""
        self.pending -= 1
        if not self.pending:
            self._settled.set()
        self.free_slot(size)

    async def settle(self, timeout: float) -> None:
        """Wait (at most ``timeout``) until every request received so far is answered."""
        deadline = time.monotonic() + timeout
        while self.busy and (left := deadline - time.monotonic()) > 0:
            waiters = {*self.tasks, asyncio.ensure_future(self._settled.wait())}
            try:
                await asyncio.wait(waiters, timeout=left, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for w in waiters - self.tasks:
                    w.cancel()

    def queue(self, frame: bytes, burst: bool = False) -> bool:
        """Add a charged reply to this loop turn's batch if the socket buffer has room (no wait);
        False when it must go through :meth:`send`.  With ``burst``, the batch is written as soon
        as it holds :data:`REPLY_BURST` replies."""
        if self._write_lock.locked() or self.writer.is_closing():
            return False
        transport = self.writer.transport
        if transport.get_write_buffer_size() + self._batch_bytes + len(frame) >= \
                transport.get_write_buffer_limits()[1]:
            return False
        if not self._batch:
            asyncio.get_running_loop().call_soon(self._flush_batch)
        self._batch.append(frame)
        self._batch_bytes += len(frame)
        self.last_active = time.monotonic()
        if burst and len(self._batch) >= REPLY_BURST:
            self._flush_batch()
        return True

    async def send(self, frame: bytes) -> None:
        """Write one charged reply once the socket buffer is below its high-water mark.

        A peer that takes nothing for ``send_stall_seconds`` is hung up on: otherwise its unread
        replies would hold memory for as long as it likes.

        Fast path: while the socket buffer has room and no slow write waits, the replies finished
        in one turn of the event loop are joined and written with one call (a batch of Raft
        commits resolves many requests at once; a write each was 8 % of a node's CPU).
        """
        if self.queue(frame):
            return
        try:
            async with self._write_lock:
                self._flush_batch()  # what the fast path queued goes first
                if self.writer.is_closing():
                    return
                try:
                    async with asyncio.timeout(self.limits.send_stall_seconds):
                        await self.writer.drain()
                        if self.writer.is_closing():
                            return
                        self.writer.write(frame)
                        await self.writer.drain()
                except TimeoutError:
                    log.info("closing a client connection that read nothing for %gs", self.limits.send_stall_seconds)
                    self.close()
                except (ConnectionError, OSError):
                    pass
        finally:
            self._discharge(frame)
        self.last_active = time.monotonic()

    def _flush_batch(self) -> None:
        frames, self._batch, self._batch_bytes = self._batch, [], 0
        if not frames:
            return
        try:
            if not self.writer.is_closing():
                self.writer.write(frames[0] if len(frames) == 1 else b"".join(frames))
        except (ConnectionError, OSError):
            pass
        finally:
            for frame in frames:
                self._discharge(frame)

    def close(self, error: RaftKVError | None = None, rid: int | str | None = None) -> None:
        """Hang up, after ``error`` as a last frame if given (the reply to request ``rid``, if it is
        about one); a peer that won't take it is cut off."""
        if self.closing:
            return
        self._flush_batch()  # replies already computed leave before the hang-up
        self.closing = True
        self._room.set()  # wake whatever waits for room: it sees ``closing`` and gives up
        self._request_room.set()
        transport = self.writer.transport
        if error is not None and not transport.is_closing():
            with contextlib.suppress(RuntimeError, OSError):
                transport.write(encode({"id": rid, "err": errors.to_wire(error)}))
        transport.close()  # flushes what is buffered first ...
        asyncio.get_running_loop().call_later(CLOSE_LINGER_SECONDS, transport.abort)  # ... for so long


_REPLY_CONN: contextvars.ContextVar[_ClientConnection | None] = contextvars.ContextVar("raftkv_reply_conn",
                                                                                       default=None)


class _Page:
    """Where a paged read stopped, and the cursor that continues it."""

    resume: int | None = None
    cursor: list[Any] | None = None


class Node:
    """One node process's state."""

    def __init__(self, config: NodeConfig, limits: ClientLimits | None = None) -> None:
        self.config = config
        self.cluster = config.cluster_name()  # named in hello and map replies (client/addresses.py)
        self.limits = limits or ClientLimits()
        self._pending = PendingWrites()  # puts answered by their commit's callback (_put_now)
        self.me = config.me()
        check_data_dir(config)
        ids = config.founder_ids()
        self.initial_map = initial_map(ids, config.shards, replication=config.replication, scheme=config.placement)
        self.meta_nodes = meta_replicas(ids, config.replication)
        self.options = RaftOptions(**config.raft)
        # loaded now, so that a bad certificate or key stops the node before it starts anything
        self._client_tls = (server_tls_context(config.tls_cert, config.tls_key)
                            if config.tls_cert is not None and config.tls_key is not None else None)
        bind_host = config.bind_host or self.me.peer[0]
        self.loop = RaftLoop(self.me.id, (bind_host, self.me.peer[1]),
                             config.peer_dial_addresses(), config.secret)
        if config.peer_tls and config.tls_cert and config.tls_key and config.tls_ca:
            try:
                self.loop.hub.use_tls(*peer_tls_contexts(config.tls_cert, config.tls_key, config.tls_ca))
            except OSError as exc:  # ssl.SSLError included
                self.loop.hub.close()
                raise InvalidArgument(f"cannot set up TLS for the peer port: {exc}") from None
        self.registry = GroupRegistry(self.me.id, config.data_dir, self.loop, self.options)
        self.stores = self.registry.stores
        self.maplink = maplink.MapLink({n.id: format_hostport(n.client) for n in config.nodes
                                        if n.id in self.meta_nodes}, config.secret, config.credentials())
        self._followed: ShardMap | None = None  # the map as last fetched, on nodes without a meta replica
        self.split_settings = SplitSettings(split_bytes=config.split_bytes, tail_stripes=config.tail_stripes,
                                            tail_stripe_writes_per_s=config.stripe_writes_per_s,
                                            load_split_requests_per_s=config.load_split_per_s)
        self._load: dict[str, _ShardLoad] = {}  # shard -> recent writes seen while leading it
        self._meta_bootstrapping = False
        self._meta_bootstrapped = False
        self._reconciled_epoch = 0
        self._map_cache: tuple[tuple[int, int], ShardMap] | None = None
        self._next_balance = time.monotonic() + BALANCE_INTERVAL
        self._balance_tried: dict[str, float] = {}  # group -> when we last asked to hand it away
        self._cursors = Cursors(self.me.id)  # scans' snapshots, and the pages read ahead for them
        # spread scans' chunks begun here, by how: at the scan's index, refused, from the leader's snapshot
        self.chunk_reads = {"at_index": 0, "refused": 0, "from_snapshot": 0}
        self.stats = OpStats(self.OPS)  # requests by operation, for the metrics endpoint
        self._metrics: MetricsServer | None = None
        self._clients: set[_ClientConnection] = set()
        self._partial_bytes = 0  # declared sizes of large frames being received, all connections
        self.mailbox: Mailbox | None = None
        self.started = time.time()
        self._complaints = LogLimiter(log)
        self.members = Members(self)

    # --- groups -------------------------------------------------------------------------------

    def open_groups(self) -> None:
        """Open every replica this node hosts (``registry.py``): the meta group if placed here, the
        replicas on disk, and a new node's initial shards."""
        self.registry.open_all(self.initial_map, self.meta_nodes)
        self.loop.every_tick(self._bootstrap_meta)
        self.loop.every_tick(self.members.bootstrap)
        if self.options.balance_leaders:
            self.loop.every_tick(self._balance_leaders)

    def current_map(self) -> ShardMap:
        """The shard map: the meta replica's records if one is here, else the map last fetched from
        one (``maplink.py``), else the deterministic initial map."""
        store = self.stores.get(META_GROUP)
        if store is None:
            return self._followed or self.initial_map
        # the map can only change when the meta store applies an entry or installs a snapshot
        version = (store.generation, store.applied_index)
        if self._map_cache is None or self._map_cache[0] != version:
            stored = commands.stored_shard_map(store)
            # a meta replica still waiting for its first snapshot (it just moved here) knows nothing
            self._map_cache = (version, stored or self._followed or self.initial_map)
        return self._map_cache[1]

    def _bootstrap_meta(self) -> None:
        """Meta leader, on the Raft thread: write the initial map once, through the log."""
        meta = self.loop.groups.get(META_GROUP)
        if meta is None or self._meta_bootstrapping or not meta.leader_ready:
            return
        if self._meta_bootstrapped or commands.stored_shard_map(meta.store) is not None:
            self._meta_bootstrapped = True
            return
        self._meta_bootstrapping = True

        def done(result: Any, err: int) -> None:
            self._meta_bootstrapping = False

        meta.submit(commands.change_records(records.initial_changes(self.initial_map)), done)

    def _balance_leaders(self) -> None:
        """Raft thread, every few seconds: hand one group to a less loaded replica if we lead too many."""
        now = time.monotonic()
        if now < self._next_balance:
            return
        self._next_balance = now + BALANCE_INTERVAL
        groups = dict(self.loop.groups)
        preferred = {}
        for gid, g in groups.items():
            state = commands.shard_state(g.store) if gid != META_GROUP else None
            if state is not None and state.shard.stripe is not None:
                preferred[gid] = state.shard.replicas[0]  # stripes' leaders spread over nodes
        tried = self._balance_tried = {
            g: t for g, t in self._balance_tried.items()
            if now - t < (PREFERRED_RETRY_AFTER if g in preferred else BALANCE_RETRY_AFTER)}
        # a decommissioning node leads nothing new (its groups are leaving it); while it still
        # leads, the mover's steps hand its leadership away
        leaving = self.members.leaving_ids()
        if self.me.id in leaving:
            return
        choice = pick_transfer(self.me.id, {gid: g.leader_id for gid, g in groups.items()},
                               {gid: [self.me.id, *(p for p in g.peer_ids if p not in leaving)]
                                for gid, g in groups.items()}, preferred, tried)
        if choice is not None:
            gid, target = choice
            tried[gid] = now
            log.info("handing leadership of %s to %s (balancing)", gid, target,
                 extra=event("leader_transfer", shard=gid, to=target, why="balancing"))
            groups[gid].transfer_to(target)

    def leaders(self) -> dict[str, str | None]:
        """The leader each local group believes in."""
        return {gid: g.leader_id for gid, g in dict(self.loop.groups).items()}

    # --- request handling ---------------------------------------------------------------------

    def _stale(self, message: str, req: dict[str, Any], cls: type[StaleRoute] = StaleRoute) -> StaleRoute:
        """A StaleRoute carrying this node's current shards for the request's keys, so the client
        repairs its cache in one round trip (TiKV's EpochNotMatch carries the regions alike)."""
        smap = self.current_map()
        lo, hi = _span(req)
        shards = [s.to_dict() for s, _, _ in smap.shards_for_range(lo, hi)][:64] if lo < hi else []
        return cls(message, epoch=smap.epoch, shards=shards)

    def _group(self, req: dict[str, Any]) -> RaftGroup:
        sid = req.get("shard")
        if not isinstance(sid, str):
            raise InvalidArgument("request needs a 'shard' id")
        g = self.loop.groups.get(sid)
        if g is None or sid == META_GROUP:
            raise self._stale(f"node {self.me.id} hosts no replica of shard {sid!r}", req, ShardNotHere)
        return g

    def _shard(self, g: RaftGroup, req: dict[str, Any]) -> Shard:
        """The shard ``g`` replicates, as its replica's own durable state says (not the map)."""
        state = commands.shard_state(g.store)
        if state is None:  # a replica made empty, still waiting for its first snapshot
            raise self._stale(f"node {self.me.id}'s replica of {g.group_id} holds no data yet", req, ShardNotHere)
        return state.shard

    def _require_in(self, shard: Shard, key: int, req: dict[str, Any]) -> int:
        """``key`` if ``shard`` owns it; otherwise the client routed with a stale map."""
        self._require_all_in(shard, (key,), req)
        return key

    def _require_all_in(self, shard: Shard, keys: Iterable[int], req: dict[str, Any]) -> None:
        """Raise StaleRoute unless ``shard`` owns every one of ``keys`` (a batch: one loop)."""
        foreign = shard.first_foreign(keys)
        if foreign is not None:
            raise self._stale(f"key {foreign} is not in shard {shard.id}", req)

    def _leader(self, g: RaftGroup) -> None:
        if not g.is_leader:
            raise NotLeader(f"shard {g.group_id}: node {self.me.id} is not the leader", leader=g.leader_id)

    @staticmethod
    def _timeout(req: dict[str, Any]) -> float:
        t = req.get("timeout", DEFAULT_OP_TIMEOUT)
        if not isinstance(t, (int, float)) or not math.isfinite(t) or t <= 0:
            raise InvalidArgument("timeout must be a positive number of seconds")
        return min(float(t), MAX_OP_TIMEOUT)

    def _raft_future(self) -> tuple[asyncio.Future, Callable[..., None]]:
        """A future, and ``complete(result=..., error=...)`` for the Raft thread to resolve it with."""
        fut = asyncio.get_running_loop().create_future()
        mailbox = self.mailbox
        assert mailbox is not None
        return fut, lambda result=None, error=None: mailbox.post(lambda: _resolve(fut, result, error))

    async def on_raft(self, fn: Callable[[], Any], timeout: float = 5.0) -> Any:
        """Run ``fn()`` on the Raft thread (where group state may be read and changed); its result."""
        fut, complete = self._raft_future()

        def run() -> None:
            try:
                complete(fn())
            except Exception as exc:  # noqa: BLE001 -- handed to the awaiting request
                complete(error=exc)

        self.loop.call_soon(run)
        return await asyncio.wait_for(fut, timeout)

    async def _replicate(self, g: RaftGroup, command: bytes, timeout: float,
                         req: dict[str, Any] | None = None) -> Any:
        self._leader(g)
        fut, complete = self._raft_future()
        g.submit(command, lambda result, err: complete((result, err)))
        self.loop.poke(g.group_id)
        try:
            result, err = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            result, err = None, None
        return self._write_outcome(g, result, err, timeout, req)

    def _write_outcome(self, g: RaftGroup, result: Any, err: int | None, timeout: float,
                       req: dict[str, Any] | None) -> Any:
        """A replicated write's result from what its commit callback got (``err`` None: it timed
        out); raises what the client must see."""
        if err is None:
            raise Timeout(f"shard {g.group_id}: write not acknowledged within {timeout:.1f}s; "
                          "its outcome is unknown", leader=g.leader_id)
        if err != FAIL_REASON.SUCCESS:
            raise _FAIL_TO_ERROR.get(err, Timeout)(
                f"shard {g.group_id}: write not committed (pysyncobj code {err})", leader=g.leader_id)
        if isinstance(result, dict) and "error" in result:
            if result.get("outcome_unknown"):
                raise OutcomeUnknown(str(result["error"]))
            if result.get("stale"):  # routed before a split, committed after it: not applied
                raise self._stale(str(result["error"]), req or {})
            if result.get("conflict"):
                return result  # a map change lost its compare-and-set: the caller decides
            raise InvalidArgument(str(result["error"]))
        return result

    @staticmethod
    def _session(req: dict[str, Any]) -> commands.Session:
        """The write's client session, stamped with this leader's clock (which the log then carries,
        so every replica expires idle sessions alike)."""
        session = sessions.check_wire(req.get("session"))
        return None if session is None else [*session, int(time.time() * 1000)]

    async def _readable(self, g: RaftGroup, req: dict[str, Any]) -> None:
        """Wait until a local read of ``g`` is allowed at the requested consistency."""
        if self._readable_now(g, req):
            await self._reply_room()
            return
        fut, complete = self._raft_future()
        timeout = self._timeout(req)
        self.loop.read_index(g.group_id, lambda err: complete(error=err), timeout)
        await asyncio.wait_for(fut, timeout + 1.0)
        await self._reply_room()  # last: the caller reads its result with no await in between

    def _readable_now(self, g: RaftGroup, req: dict[str, Any]) -> bool:
        """Whether a local read of ``g`` at the requested consistency is allowed right now, with no
        ReadIndex round: at ``serializable`` always (any replica's applied state, possibly stale,
        never torn), at ``linearizable`` while this node leads ``g`` under its lease
        (RaftGroup.lease_deadline: no other leader exists until then, and every write acknowledged
        so far was applied before its acknowledgement left).  Raises if this node cannot serve it."""
        level = req.get("consistency", "linearizable")
        if level == "serializable":
            return True
        if level != "linearizable":
            raise InvalidArgument("consistency must be 'linearizable' or 'serializable'")
        self._leader(g)
        return time.monotonic() < g.lease_until

    async def op_map(self, req: dict[str, Any]) -> Any:
        """The shard map, this node's leader hints, and every node's client address.

        With ``if_newer`` (an epoch), ``map`` is None unless this node's map is newer: nodes that
        follow the map poll that way.
        """
        smap = self.current_map()
        newer = req.get("if_newer")
        if newer is not None and type(newer) is not int:
            raise InvalidArgument("if_newer must be an epoch (int)")
        shown = smap.to_dict() if newer is None or smap.epoch > newer else None
        return {"map": shown, "leaders": self.leaders(), "node": self.me.id, "cluster": self.cluster,
                "nodes": {r.id: r.client for r in self.members.records().values()},
                # a node's client addresses where it advertises its own (--advertise-client)
                "clients": self.members.advertised_clients()}

    async def op_get(self, req: dict[str, Any]) -> Any:
        g, key = self._get_target(req)
        await self._readable(g, req)
        value = g.store.get(key)
        # Checked again *after* the read: a split applied while the read waited for its ReadIndex
        # round moves the row away.  Bounds change before rows move (commands._write_state), so
        # bounds that still own the key now owned it when the value was read.
        self._require_in(self._shard(g, req), key, req)
        return value

    def _get_target(self, req: dict[str, Any]) -> tuple[RaftGroup, int]:
        """A get request checked: its group and its key (which the group's shard owns)."""
        g = self._group(req)
        return g, self._require_in(self._shard(g, req), check_key(req.get("key")), req)

    def _get_now(self, msg: dict[str, Any], conn: _ClientConnection, size: int) -> bool:
        """Answer a get without a task if its read is allowed now (:meth:`_readable_now`); False
        (nothing done) if it must wait for a ReadIndex round, as :meth:`op_get` does.

        The caller awaited reply room just before, and nothing awaits between the read and the
        reply's charge, as :meth:`_ClientConnection.room` requires.
        """
        started = time.perf_counter()
        rid = None
        try:
            rid = check_request_id(msg.get("id"))
            g, key = self._get_target(msg)
            if not self._readable_now(g, msg):
                return False
            value = g.store.get(key)
        except Exception as exc:  # noqa: BLE001 -- answered, as _reply answers it
            self._answer_now(conn, "get", msg, rid, started, None, exc, burst=True)
        else:
            self._answer_now(conn, "get", msg, rid, started, value, None, burst=True)
        conn.free_slot(size)
        return True

    async def op_put(self, req: dict[str, Any]) -> Any:
        g, command, count, timeout = self._put_command(req)
        await self._replicate(g, command, timeout, req)
        return count

    def _put_now(self, msg: dict[str, Any], conn: _ClientConnection, size: int) -> None:
        """Answer a put without a task: checked and handed to Raft now, answered by its commit's
        callback (or, if that is late, by the sweep of :attr:`_pending`): ``_reply`` in callbacks."""
        started = time.perf_counter()
        rid = None
        try:
            rid = check_request_id(msg.get("id"))
            g, command, count, timeout = self._put_command(msg)
        except Exception as exc:  # noqa: BLE001 -- answered, as _reply answers it
            self._answer_now(conn, "put", msg, rid, started, None, exc)
            conn.free_slot(size)
            return
        conn.began_pending()

        def finish(result: Any, err: int | None) -> None:  # event loop, exactly once
            try:
                self._write_outcome(g, result, err, timeout, msg)
            except Exception as exc:  # noqa: BLE001 -- the client's answer
                self._answer_now(conn, "put", msg, rid, started, None, exc)
            else:
                self._answer_now(conn, "put", msg, rid, started, count, None)
            finally:
                conn.ended_pending(size)

        token = self._pending.add(time.monotonic() + timeout, finish)
        mailbox, pending = self.mailbox, self._pending
        assert mailbox is not None
        g.submit(command, lambda result, err: mailbox.post(lambda: pending.settle(token, result, err)))
        self.loop.poke(g.group_id)

    def _answer_now(self, conn: _ClientConnection, op: str, msg: dict[str, Any], rid: Any, started: float,
                    result: Any, error: BaseException | None, burst: bool = False) -> None:
        """Send the reply of a request answered without a task (a put, a get), recorded as
        ``_reply`` records every request's; ``burst``: see :meth:`_ClientConnection.queue`."""
        reply = {"id": rid, "ok": result} if error is None else _error_reply(op, rid, error)
        self._record(op, msg, started, reply.get("err"))
        frame = encode(reply)
        conn.charge(frame)
        if not conn.queue(frame, burst):
            task = asyncio.ensure_future(conn.send(frame))  # a slow reader: wait for room, in order
            conn.tasks.add(task)
            task.add_done_callback(conn.tasks.discard)

    def _put_command(self, req: dict[str, Any]) -> tuple[RaftGroup, bytes, int, float]:
        """A put request checked: its group, its command, how many pairs, and its timeout."""
        g = self._group(req)
        pairs = req.get("pairs")
        if not isinstance(pairs, list) or not 0 < len(pairs) <= MAX_BATCH_KEYS:
            raise InvalidArgument(f"'pairs' must be a list of 1..{MAX_BATCH_KEYS} [key, value] pairs")
        shard = self._shard(g, req)
        keys = []
        size = 16 * len(pairs)
        # one loop, the common case tested inline: a bulk load sends 5,000 pairs a request
        for pair in pairs:
            if type(pair) is not list or len(pair) != 2:
                raise InvalidArgument("each pair must be [key, value]")
            key, value = pair
            if type(key) is not int or not 0 <= key <= MAX_KEY:
                check_key(key)  # raises, saying why
            if type(value) is not bytes or len(value) > MAX_VALUE_BYTES:
                pair[1] = value = check_value(value)  # a str becomes its UTF-8, too long raises
            keys.append(key)
            size += len(value)
        self._require_all_in(shard, keys, req)
        if size > commands.MAX_COMMAND_BYTES:
            raise InvalidArgument(f"a batch of {size} bytes exceeds the {commands.MAX_COMMAND_BYTES >> 20} MiB "
                                  "limit of one replicated command; send fewer pairs per request")
        timeout = self._timeout(req)
        command = commands.put(pairs, self._session(req))
        # Only a leader counts the write toward the shard's load: a follower refusing misrouted
        # writes while clients learn the leaders counted them, and they read as load once
        # leadership moved to it.
        self._leader(g)
        self._observe(g, shard, keys)
        return g, command, len(pairs), timeout

    async def op_delete(self, req: dict[str, Any]) -> Any:
        g = self._group(req)
        keys = req.get("keys")
        if not isinstance(keys, list) or not 0 < len(keys) <= MAX_BATCH_KEYS:
            raise InvalidArgument(f"'keys' must be a list of 1..{MAX_BATCH_KEYS} keys")
        shard = self._shard(g, req)
        for k in keys:
            check_key(k)
        self._require_all_in(shard, keys, req)
        return await self._replicate(g, commands.delete(keys, self._session(req)), self._timeout(req), req)

    def _bounds(self, g: RaftGroup, req: dict[str, Any]) -> tuple[int, int]:
        shard = self._shard(g, req)
        start = check_key(req.get("start", shard.start), "start")
        end = req.get("end", end_to_wire(shard.end))
        end = end_from_wire(None if end is None else check_key(end, "end"))
        if start < shard.start or end > shard.end:
            raise self._stale(f"range is not inside shard {g.group_id}", req)
        return start, end

    @staticmethod
    def _filter(req: dict[str, Any]) -> Any:
        wire = req.get("filter")
        if wire is None:
            return None, None
        from ..query.predicate import compile_filter

        return wire, compile_filter(wire)

    async def op_scan(self, req: dict[str, Any]) -> Any:
        """One page of ``[start, end)`` in one shard; ``resume`` and ``cursor`` continue it.

        The first page of a scan waits for the read to be allowed (ReadIndex when
        linearizable) and, if more pages follow, opens a LevelDB snapshot kept under a
        cursor: later pages read that frozen state, so a scan of one shard sees one
        consistent state and pays the ReadIndex round once, not once per page.

        A *spread* scan reads the rest on every replica at once.  Its first page, asked with
        ``spread`` (rows per chunk), also returns ``chunks``: keys cutting what is left past
        this page into chunks (this page's ``cursor`` goes on to the first cut only), the
        snapshot's Raft ``index``, and a ``snapshot`` handle on it.  Any replica reads a chunk's
        first page asked with ``at`` (that index) if its rows of the chunk are exactly those of
        the state at ``at`` (``ShardStore.open_view_at``), else it answers
        :class:`~raftkv.errors.CursorExpired`; the leader reads any chunk from the snapshot
        itself when asked with ``snapshot``.  Every chunk thus shows the same state as the first page.
        """
        g = self._group(req)
        start, end = self._bounds(g, req)
        limit = req.get("limit", 1000)
        max_bytes = req.get("max_bytes", 1 << 20)
        if type(limit) is not int or not 0 < limit <= MAX_PAGE_KEYS:
            raise InvalidArgument(f"page limit must be 1..{MAX_PAGE_KEYS}")
        if type(max_bytes) is not int or not 0 < max_bytes <= MAX_PAGE_BYTES:
            raise InvalidArgument(f"page max_bytes must be 1..{MAX_PAGE_BYTES}")
        wire, match = self._filter(req)
        reverse = bool(req.get("reverse"))
        spread = req.get("spread")
        if spread is not None and (type(spread) is not int or not 0 < spread <= 1 << 40):
            raise InvalidArgument("spread must be rows per chunk, 1..2**40")
        if spread is not None and (req.get("at") is not None or req.get("snapshot") is not None):
            raise InvalidArgument("spread is asked on a scan's first page, not on a chunk's (at, snapshot)")

        def read(view: StoreView, start: int, end: int) -> Page:
            return view.scan_raw(start, end, reverse=reverse, limit=limit, max_bytes=max_bytes, filter=match,
                                 deadline=time.monotonic() + SCAN_PAGE_SECONDS)

        def request(start: int, end: int) -> tuple[Any, ...]:  # what a read-ahead page must answer
            return start, end, reverse, limit, max_bytes, wire

        view, ready = await self._view(g, req, request(start, end), chunks=True)
        index = view.index
        with self._paging(g, view) as page:
            keys, values, page.resume = ready if ready is not None else read(view, start, end)
        # ``index``: the Raft index of the state read (a chunk's reader checks it is the scan's)
        reply = {"keys": keys, "values": values, "resume": page.resume, "cursor": page.cursor, "index": index}
        if page.cursor is not None:
            # what the client asks next: the rest of the range, past what this page returned
            lo, hi = (start, page.resume) if reverse else (page.resume, end)
            if spread is not None and req.get("cursor") is None:
                cuts = self._chunk_cuts(g, start, end, lo, hi, len(keys) // 9, spread, reverse)
                handle = self._cursors.share(g.group_id, view, time.monotonic()) if cuts else None
                if handle is not None:
                    # the cursor goes on to the first cut; the chunks past it are read on every replica
                    lo, hi = (cuts[0], hi) if reverse else (lo, cuts[0])
                    reply.update(chunks=cuts, snapshot=handle)
            # in two turns of the event loop, so that this reply's write (queued in one turn, once
            # the handler returns: _ClientConnection.queue) goes out before the node reads on
            aloop = asyncio.get_running_loop()
            aloop.call_soon(aloop.call_soon, self._cursors.read_ahead, page.cursor, request(lo, hi),
                            lambda v: read(v, lo, hi))
        # keys: one blob of 9-byte raw store keys, decoded by the client in C (decode_raw_keys)
        return reply

    @staticmethod
    def _chunk_cuts(g: RaftGroup, start: int, end: int, lo: int, hi: int, rows: int,
                    spread: int, reverse: bool) -> list[int]:
        """Keys cutting the rest ``[lo, hi)`` of a first page into chunks of about ``spread`` rows,
        in visiting order (descending if ``reverse``); the page read ``rows`` rows of ``[start, end)``."""
        if rows <= 0:
            return []
        sample = (hi, end, rows) if reverse else (start, lo, rows)  # what the page itself covered
        cuts = g.store.chunk_cuts(lo, hi, spread, sample, MAX_CHUNK_CUTS)
        return cuts[::-1] if reverse else cuts

    async def op_release(self, req: dict[str, Any]) -> Any:
        """Let go of the snapshot a spread scan shared (its ``snapshot`` handle): the scan is done."""
        g = self._group(req)
        return self._cursors.release(req.get("snapshot"), g.group_id)

    async def op_aggregate(self, req: dict[str, Any]) -> Any:
        """Partial aggregates of the rows of ``[start, end)`` passing ``filter``, a bounded step at a time.

        Only the partials cross the network.  Each call folds at most ``AGG_STEP_ROWS``
        rows and says where to ``resume`` (with a ``cursor`` on the same snapshot).
        """
        from ..query.aggregate import Aggregates

        g = self._group(req)
        start, end = self._bounds(g, req)
        aggs = Aggregates(req.get("aggs"), req.get("bucket_ns"))
        _, match = self._filter(req)
        view, _ = await self._view(g, req)
        partials = aggs.new()
        with self._paging(g, view) as page:
            rows, page.resume = view.scan(start, end, limit=AGG_STEP_ROWS, max_bytes=1 << 62, filter=match,
                                          max_examined=AGG_STEP_ROWS,
                                          deadline=time.monotonic() + SCAN_PAGE_SECONDS)
            for key, value in rows:
                aggs.update(partials, key, value)
        if aggs.bucket_ns and len(partials) > MAX_GROUPS:
            raise InvalidArgument(f"more than {MAX_GROUPS} groups in one step: use a wider time bucket")
        return {"partials": partials, "resume": page.resume, "cursor": page.cursor}

    async def _view(self, g: RaftGroup, req: dict[str, Any], request: tuple[Any, ...] | None = None,
                    chunks: bool = False) -> tuple[StoreView, Page | None]:
        """The snapshot a paged read continues (``cursor``), or a new one once the read is allowed;
        and the page read ahead on that cursor if it answers ``request`` (:mod:`.cursors`).
        With ``chunks`` (scans), a spread scan's chunk: the view ``at`` an index, or a fork of the
        scan's ``snapshot``.  A view at an index holds only for the range it was opened for, so a
        cursor on it continues only inside that range.

        A new one is checked against the shard's bounds again *after* it is taken: a split applied
        while the read waited for its ReadIndex round has already moved rows out of the store,
        and a page of the old range would silently miss them.  (Bounds change before rows move,
        see ``commands._apply_split``, so a bound that still holds now held for the snapshot.)
        """
        cursor = req.get("cursor")
        if cursor is not None:
            await self._reply_room()
            view, page = self._cursors.take(cursor, g.group_id, request)
            if view.bounds is not None:
                try:
                    start, end = self._bounds(g, req)
                except BaseException:
                    view.close()
                    raise
                if not view.bounds[0] <= start <= end <= view.bounds[1]:
                    view.close()
                    raise CursorExpired("this cursor continues only inside the chunk it was opened for")
            return view, page
        handle, at = (req.get("snapshot"), req.get("at")) if chunks else (None, None)
        if handle is not None:
            if not (isinstance(handle, list) and len(handle) == 2 and isinstance(handle[0], str)
                    and type(handle[1]) is int):
                raise InvalidArgument("snapshot must be the handle a scan's first page returned")
            await self._reply_room()
            view = self._cursors.fork(handle, g.group_id, time.monotonic())
            self.chunk_reads["from_snapshot"] += 1
        elif at is not None:
            view = await self._view_at(g, req, at)
        else:
            await self._readable(g, req)
            view = g.store.open_view()
        try:
            self._bounds(g, req)
        except BaseException:
            view.close()
            raise
        return view, None

    async def _view_at(self, g: RaftGroup, req: dict[str, Any], at: Any) -> StoreView:
        """A view of this replica showing the state at index ``at`` within the request's range, on any
        replica, leader or not: waits a moment for the replica to apply that far."""
        if type(at) is not int or at < 0:
            raise InvalidArgument("at must be a Raft index (int >= 0)")
        start, end = self._bounds(g, req)
        give_up = time.monotonic() + min(AT_WAIT_SECONDS, self._timeout(req))
        while g.store.applied_index < at and time.monotonic() < give_up:
            await asyncio.sleep(0.005)
        await self._reply_room()
        view = g.store.open_view_at(at, start, end)
        self.chunk_reads["refused" if view is None else "at_index"] += 1
        if view is None:
            raise CursorExpired(f"node {self.me.id} cannot show shard {g.group_id}'s keys "
                                f"[{start}, {end}) as of index {at}; ask its leader with the scan's snapshot")
        return view

    @contextlib.contextmanager
    def _paging(self, g: RaftGroup, view: StoreView) -> Iterator[_Page]:
        """Close ``view`` when the page ends the range (or fails); otherwise keep it under a new cursor."""
        page = _Page()
        try:
            yield page
        except BaseException:
            view.close()
            raise
        if page.resume is None:
            view.close()
        else:
            page.cursor = self._cursors.keep(g.group_id, view, time.monotonic())

    async def _expire_writes(self) -> None:
        """Time out the puts whose commit is late (:meth:`_put_now`)."""
        while True:
            await asyncio.sleep(WRITE_SWEEP_SECONDS)
            self._pending.expire(time.monotonic())

    async def _expire_cursors(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            self._cursors.expire(time.monotonic() - CURSOR_IDLE_SECONDS)

    async def op_delete_range(self, req: dict[str, Any]) -> Any:
        """Delete one bounded step of ``[start, end)`` (matching ``filter``); ``resume`` continues it."""
        g = self._group(req)
        start, end = self._bounds(g, req)
        wire, _ = self._filter(req)  # compiled here only to refuse a bad filter at the door
        command = commands.delete_range(start, end_to_wire(end), wire, session=self._session(req))
        return await self._replicate(g, command, self._timeout(req), req)

    # --- splits and the map ------------------------------------------------------------------

    async def op_split(self, req: dict[str, Any]) -> Any:
        """Split a shard at ``at`` (default: near its median key); at its leader.

        The split is one command in the shard's own log (``commands.py``); its records then go
        to the meta group.  Returns the two shards and the map's new epoch.
        """
        g = self._group(req)
        self._leader(g)
        shard = self._shard(g, req)
        at = req.get("at")
        if shard.stripe is not None:
            raise InvalidArgument(f"shard {shard.id} is a stripe of a striped segment; stripes are not split")
        if at is None:
            at = await asyncio.to_thread(g.store.median_key, shard.start, shard.end)
            if at is None:
                raise InvalidArgument(f"shard {shard.id} holds fewer than 2 keys: give a split key (AT ...)")
        at = check_key(at, "at")
        state = commands.shard_state(g.store)
        done = next((c for c in state.children if c.start == at), None) if state is not None else None
        if done is not None and at == shard.end:  # a retry of a split that took effect
            return {"epoch": await self._publish(g, self._timeout(req)), "shards": [shard.to_dict(), done.to_dict()]}
        if not shard.start < at < shard.end:
            raise InvalidArgument(f"split key {at} must lie strictly inside shard {shard.id}: "
                                  f"{shard.start + 1} .. {shard.end - 1}")
        return await self._split(g, shard, at, self._timeout(req), "manual", req)

    async def _split(self, g: RaftGroup, shard: Shard, at: int, timeout: float, why: str,
                     req: dict[str, Any] | None = None) -> dict[str, Any]:
        """Split ``g``'s shard at ``at`` through its log, then publish the records."""
        new_id = shard_name(await self.maplink.allocate(timeout))
        done = await self._reshape(g, commands.split(at, new_id, shard.generation), timeout, req)
        log.info("split %s at %d (%s): %s takes [%d, %d)", shard.id, at, why, new_id, at, shard.end,
                 extra=event("split", shard=shard.id, at=at, why=why, new_shard=new_id))
        return done

    async def _reshape(self, g: RaftGroup, command: bytes, timeout: float,
                       req: dict[str, Any] | None) -> dict[str, Any]:
        """Commit a split or stripe command through ``g``'s log, then publish the records it made."""
        result = await self._replicate(g, command, timeout, req)
        self._load.pop(g.group_id, None)  # its bounds changed: weigh it afresh
        return {"epoch": await self._publish(g, timeout), "shards": result["shards"]}

    async def op_stripe(self, req: dict[str, Any]) -> Any:
        """Stripe a range shard from ``at`` (default: just past its largest key) to ``end`` (default:
        its end) over ``stripes`` new groups (default: one per node, at most 16); at its leader."""
        g = self._group(req)
        self._leader(g)
        shard = self._shard(g, req)
        at, end, k = req.get("at"), req.get("end"), req.get("stripes")
        if at is None:
            span = g.store.key_span(shard.start, shard.end)
            at = shard.start + 1 if span is None else span[1] + 1
        at = check_key(at, "at")
        end = shard.end if end is None else check_key(end, "end")
        if k is None:
            k = self.split_settings.tail_stripes or len(self.members.active_ids())
        if type(k) is not int or not 2 <= k <= MAX_STRIPES:
            raise InvalidArgument(f"stripes must be 2..{MAX_STRIPES}")
        if not shard.start < at < end <= shard.end:
            raise InvalidArgument(f"a striped segment [{at}, {end}) must lie inside shard {shard.id} "
                                  f"[{shard.start}, {shard.end}) and leave it keys below")
        return await self._stripe(g, shard, at, end, min(k, MAX_STRIPES), self._timeout(req), "manual", req)

    async def _stripe(self, g: RaftGroup, shard: Shard, at: int, end: int, k: int, timeout: float, why: str,
                      req: dict[str, Any] | None = None) -> dict[str, Any]:
        """Stripe ``[at, end)`` of ``g``'s shard over ``k`` new groups, leaders on different nodes."""
        nodes = self.members.active_ids()
        first = await self.maplink.allocate(timeout, k + 1)
        # rotate which node leads stripe 0, so successive segments do not all start on one node
        nodes = nodes[first % len(nodes):] + nodes[:first % len(nodes)]
        stripes = [Shard(shard_name(first + i), at, end,
                         stripe_replicas(i, k, nodes, self.config.replication, self.config.placement),
                         stripe=(i, k), born_empty=True)
                   for i in range(k)]
        tail = None if end == shard.end else Shard(shard_name(first + k), end, shard.end, shard.replicas,
                                                   born_empty=True)
        done = await self._reshape(g, commands.stripe(at, end, stripes, tail, shard.generation), timeout, req)
        log.info("striped %s [%d, %d) over %d groups (%s)%s", shard.id, at, end, k, why,
                 f"; {tail.id} takes [{end}, {shard.end})" if tail else "",
                 extra=event("stripe", shard=shard.id, at=at, stripes=k, why=why))
        return done

    def _observe(self, g: RaftGroup, shard: Shard, keys: list[int]) -> None:
        """Count a write the leader accepted, for the split policy."""
        load = self._load.get(g.group_id)
        if load is None:
            span = g.store.key_span(shard.start, shard.end)
            load = self._load[g.group_id] = _ShardLoad(None if span is None else span[1])
        now = time.monotonic()
        load.tracker.observe(keys, now, load.tail_mark(now))
        load.recent.append(keys[len(keys) // 2])
        top = max(keys)
        if load.largest is None or top > load.largest:
            load.largest = top
        load.mark(now)

    async def _plan_segment(self, g: RaftGroup, shard: Shard, load: _ShardLoad, rate: float,
                            appends: float) -> StripePlan | None:
        """``split_policy.plan_segment`` for ``g``'s shard, from its leader's figures."""
        size, keys = await asyncio.to_thread(g.store.estimate, shard.start, shard.end)
        stats = ShardStats(shard.id, shard.start, shard.end, size, keys, load.largest, None, rate, appends)
        return plan_segment(stats, self.split_settings, len(self.members.active_ids()), load.key_rate(),
                            size / keys if keys else 100.0)

    async def _split_when_due(self) -> None:
        """Shard leaders: split a shard that outgrew ``split_bytes`` (``split_policy.maybe_split``).

        Only shards written to lately are weighed: the left side of a tail split keeps all the
        data and takes no more writes, and copying half of it away would gain nothing.
        """
        while True:
            await asyncio.sleep(SPLIT_CHECK_INTERVAL)
            for g in list(self.loop.groups.values()):
                try:
                    await self._maybe_split(g)
                except Exception as exc:
                    self._complaints.log(f"split {g.group_id}", logging.WARNING,
                                         "shard %s: automatic split failed: %s", g.group_id, exc)

    async def _maybe_split(self, g: RaftGroup) -> None:
        load = self._load.get(g.group_id)
        state = commands.shard_state(g.store)
        if load is None or state is None or not g.is_leader or state.shard.stripe is not None:
            return
        now = time.monotonic()
        rate = load.tracker.writes_per_s(now)
        settings = self.split_settings
        if rate == 0:
            return
        # sustained, as TiKV's split.detect-times asks: over the threshold in every second of the
        # window, not on average (12 uniform shards just over it on average split into 19)
        requests = load.tracker.sustained_requests_per_s(now)
        busy = bool(settings.load_split_requests_per_s) and requests > settings.load_split_requests_per_s
        outgrown = g.store.approximate_size() + g.store.unflushed_bytes > settings.split_bytes
        hot_tail = settings.stripes_tails and rate > settings.tail_stripe_writes_per_s
        if not hot_tail and not busy and not outgrown:
            return
        shard = state.shard
        appends = load.tracker.append_fraction(now)
        if hot_tail and appends >= settings.tail_append_fraction:
            plan = await self._plan_segment(g, shard, load, rate, appends)
            if plan is not None:
                await self._stripe(g, shard, plan.at, plan.end, plan.stripes, MAX_OP_TIMEOUT,
                                   f"hot tail, {rate:.0f} keys/s")
                return
        # a shard under split_bytes needs only to know it holds enough keys to split on load:
        # counting to that many is cheap, where the full estimate reads 10,000 rows each second
        sample = 10_000 if outgrown else settings.min_keys_to_load_split
        size, keys = await asyncio.to_thread(g.store.estimate, shard.start, shard.end, sample)
        span = g.store.key_span(shard.start, shard.end)
        median = None
        if outgrown and appends < settings.tail_append_fraction:
            median = await asyncio.to_thread(g.store.median_key, shard.start, shard.end)
        stats = ShardStats(shard.id, shard.start, shard.end, size, keys, span and span[1], span and span[0],
                           rate, appends, median, requests, tuple(load.recent), self._sibling_rates(g, now))
        decision = maybe_split(stats, settings) or (maybe_load_split(stats, settings) if busy else None)
        if decision is not None:
            await self._split(g, shard, decision.at, MAX_OP_TIMEOUT, decision.reason)

    def _sibling_rates(self, g: RaftGroup, now: float) -> tuple[float, ...]:
        """Write requests/s of every other shard this node leads (``maybe_load_split`` weighs them)."""
        return tuple(load.tracker.sustained_requests_per_s(now) for gid, load in list(self._load.items())
                     if gid != g.group_id and (other := self.loop.groups.get(gid)) is not None
                     and other.is_leader)

    async def _publish(self, g: RaftGroup, timeout: float = 5.0) -> int:
        """Bring the map up to date with ``g``'s own state (its splits); the map's epoch after.

        A compare-and-set that loses against a map we had not seen yet is retried with a fresh one.
        """
        for _ in range(3):
            state = commands.shard_state(g.store)
            smap = self.current_map()
            changes = records.catch_up(smap, state.shard, state.children) if state is not None else None
            if changes is None:
                return smap.epoch
            reply = await self.maplink.publish(changes, timeout)
            if not reply.get("conflict"):
                self._learn_epoch(int(reply["epoch"]))
                return int(reply["epoch"])
            await self._follow_once()
        raise errors.Unavailable(f"shard {g.group_id}: the map kept changing under the split's records")

    async def op_map_change(self, req: dict[str, Any]) -> Any:
        """Meta leader: change shard records by compare-and-set (sent by shard leaders, maplink.py)."""
        try:
            changes = records.check_changes(req.get("changes"))
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidArgument(f"malformed map change: {exc}") from None
        if not maplink.proof_ok(self.config.secret, changes, req.get("proof")):
            raise InvalidArgument("map change refused: it does not carry the cluster secret's proof")
        meta = self._meta_group()
        return await self._replicate(meta, commands.change_records(changes), self._timeout(req))

    async def op_map_alloc(self, req: dict[str, Any]) -> Any:
        """Meta leader: ``count`` (default 1) new shard numbers; the first is returned."""
        count = req.get("count", 1)
        if type(count) is not int or not 0 < count <= 64:
            raise InvalidArgument("count must be 1..64")
        return await self._replicate(self._meta_group(), commands.allocate_ids(count), self._timeout(req))

    def _meta_group(self) -> RaftGroup:
        meta = self.loop.groups.get(META_GROUP)
        if meta is None:
            raise NotLeader(f"node {self.me.id} hosts no meta replica", leader=None)
        return meta

    def _learn_epoch(self, epoch: int) -> None:
        """A map change we made succeeded: fetch it now rather than at the next poll."""
        if self.stores.get(META_GROUP) is None and self.current_map().epoch < epoch:
            asyncio.get_running_loop().create_task(self._follow_once())

    async def _follow_once(self) -> None:
        """Fetch the map from a meta replica if it is newer than ours (nodes without one)."""
        if self.stores.get(META_GROUP) is not None:
            return
        fresh = await self.maplink.fetch(self.current_map().epoch)
        if fresh is not None:
            smap = ShardMap.from_dict(fresh)
            if smap.epoch > self.current_map().epoch:
                self._followed = smap

    async def _follow_map(self) -> None:
        """Nodes without a meta replica: see every map change within a second.  Every node: start
        the replicas placed here of shards made empty (stripes) that it does not run yet."""
        while True:
            await asyncio.sleep(maplink.FOLLOW_INTERVAL)
            try:
                await self._follow_once()
                smap = self.current_map()
                if smap.epoch != self._reconciled_epoch:
                    self._reconciled_epoch = smap.epoch
                    self.loop.call_soon(lambda m=smap: self.registry.reconcile(m))
            except Exception:  # never let the follower die: the next poll may work
                self._complaints.log("follow", logging.WARNING, "could not fetch the shard map", exc_info=True)

    async def _publish_splits(self) -> None:
        """Shard leaders: publish a split whose records never reached the map (a crash between the
        split and its publication, or a meta leader away at the time)."""
        while True:
            await asyncio.sleep(PUBLISH_INTERVAL)
            for g in list(self.loop.groups.values()):
                if g.group_id == META_GROUP or not g.is_leader:
                    continue
                state = commands.shard_state(g.store)
                if state is None or records.catch_up(self.current_map(), state.shard, state.children) is None:
                    continue
                try:
                    await self._publish(g)
                except Exception as exc:
                    self._complaints.log(f"publish {g.group_id}", logging.WARNING,
                                         "shard %s: map records not published yet: %s", g.group_id, exc)

    async def op_status(self, req: dict[str, Any]) -> Any:
        """This node's view of its groups."""
        groups = []
        names = {0: "follower", 1: "candidate", 2: "leader"}
        for gid, g in sorted(dict(self.loop.groups).items()):
            entry = {"id": gid, "state": names.get(g._SyncObj__raftState, "?"), "leader": g.leader_id,
                     "term": g.term, "commit": g.raftCommitIndex, "applied": g.store.applied_index,
                     "log_entries": len(g.journal), "log_bytes": g.journal.size_bytes,
                     "snapshots_installed": g.serializer.installs}
            entry["quiesced"] = g.quiesced
            state = commands.shard_state(g.store) if gid != META_GROUP else None
            if state is not None:
                shard = state.shard
                # sizes read every store: left out when the caller only asks who leads (``brief``)
                size, keys = (None, None) if req.get("brief") is True else \
                    await asyncio.to_thread(g.store.estimate, shard.start, shard.end)
                load = self._load.get(gid)
                entry.update({"generation": shard.generation, "start": shard.start, "end": end_to_wire(shard.end),
                              "stripe": None if shard.stripe is None else list(shard.stripe),
                              "bytes": size, "keys": keys,
                              # writes this node accepted as the leader, over the last 10 s
                              "writes_per_s": round(load.tracker.writes_per_s(time.monotonic()), 1) if load else 0.0})
            groups.append(entry)
        return {"node": self.me.id, "pid": os.getpid(), "uptime": time.time() - self.started,
                "groups": groups, "raft_iterations": self.loop.iterations, "fsyncs": self.loop.fsyncs,
                "fsync_seconds": round(self.loop.fsync_seconds, 3),
                "loop_cpu_seconds": {k: round(v, 3) for k, v in self.loop.cpu_seconds.items()},
                "peers_up": self.loop.hub.up_peers(), "chunk_reads": dict(self.chunk_reads),
                "shared_snapshots": self._cursors.shared,
                "metrics": None if self._metrics is None else self._metrics.address}

    async def op_compact(self, req: dict[str, Any]) -> Any:
        """Ask a local replica to compact its log now (operations and tests)."""
        g = self._group(req)
        self.loop.call_soon(g.forceLogCompaction)
        self.loop.poke(g.group_id)
        return True

    OPS: dict[str, str] = {"map": "op_map", "get": "op_get", "put": "op_put", "delete": "op_delete",
                           "scan": "op_scan", "aggregate": "op_aggregate", "delete_range": "op_delete_range",
                           "status": "op_status", "compact": "op_compact", "release": "op_release", "split": "op_split",
                           "map_change": "op_map_change", "map_alloc": "op_map_alloc", "stripe": "op_stripe",
                           "nodes": "members.op_nodes", "heartbeat": "members.op_heartbeat",
                           "reconfigure": "members.op_reconfigure", "join": "members.op_join",
                           "decommission": "members.op_decommission", "forget": "members.op_forget",
                           "hello": "op_hello"}

    async def op_hello(self, req: dict[str, Any]) -> Any:
        """Open a connection: ``token`` must be the node's client token if it has one (checked
        before any other request by ``_authenticate``; a later ``hello`` is checked again here)."""
        if not self._token_ok(req.get("token")):
            raise Unauthenticated("wrong client token")
        return {"node": self.me.id, "token_required": self.config.client_token is not None,
                "cluster": self.cluster}

    def _token_ok(self, given: Any) -> bool:
        """Whether ``given`` is the node's client token (always, on a node without one)."""
        expected = self.config.client_token
        if expected is None:
            return True
        # compare_digest: the time taken must not tell how much of a guess was right
        return isinstance(given, str) and hmac.compare_digest(given.encode(), expected.encode())

    def _authenticate(self, msg: Any, conn: _ClientConnection) -> bool:
        """Gate a connection's first request: a ``hello`` with the right token lets it (and what
        follows) through; anything else gets one error frame and the connection closes, with
        nothing executed.  Runs before the request is admitted, so nothing pipelined behind a
        refused one runs either."""
        try:
            rid = check_request_id(msg.get("id")) if isinstance(msg, dict) else None
        except InvalidArgument:
            rid = None
        op = msg.get("op") if isinstance(msg, dict) else None
        if op != "hello":
            error = Unauthenticated(f"node {self.me.id} wants a client token: send a 'hello' request "
                                    "with it first (client option token=..., --token-file)")
        elif not self._token_ok(msg.get("token")):
            error = Unauthenticated(f"wrong client token for node {self.me.id}")
        else:
            conn.authenticated = True
            return True
        self.stats.record(op if isinstance(op, str) else None, 0.0, error.code)
        self._complaints.log("unauthenticated", logging.WARNING, "refused a client connection: %s",
                             error.message)
        conn.close(error, rid)
        return False

    # --- connections --------------------------------------------------------------------------

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection: pipelined requests, answered as they complete.

        Every request gets exactly one reply, or the connection is closed after an error frame
        saying why; a client that half-closes still gets the replies to what it sent.

        What a client can hold is bounded (design §6): requests in progress (``max_inflight``, of
        which MAX_HEAVY_PER_CONN page-sized reads), reply bytes computed but unsent
        (``max_unsent_bytes``; reads wait, and we stop reading, while over it), the node's bytes of
        large frames being received (``max_partial_bytes``), msgpack objects per request, the time a
        frame may take (``frame_seconds``), a connection's idle time (``idle_seconds``), a peer that
        reads nothing (``send_stall_seconds``), and connections (at the cap the longest-idle one
        makes room).
        """
        limits = self.limits
        conn = _ClientConnection(writer, limits, authenticated=self.config.client_token is None)
        if len(self._clients) >= limits.max_connections and not self._evict_idle():
            conn.close(Overloaded(f"node {self.me.id} serves {limits.max_connections} connections, "
                                  "all with requests in progress; retry later"))
            return
        self._clients.add(conn)
        try:
            writer.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
            await self._read_requests(reader, conn)
            if conn.busy and not conn.closing:  # the peer has sent all it will: answer that, then hang up
                await conn.settle(MAX_OP_TIMEOUT + limits.send_stall_seconds)
        except (ConnectionError, OSError):
            pass
        except Exception:  # a bug: keep it out of asyncio's handler, which would only print it
            log.exception("client connection failed")
            conn.close(errors.RaftKVError("internal error; closing the connection"))
        finally:
            self._clients.discard(conn)
            self._release_partial(conn)
            for t in list(conn.tasks):
                t.cancel()
            conn.close()

    async def _read_requests(self, reader: asyncio.StreamReader, conn: _ClientConnection) -> None:
        """Read frames and start answering them until EOF, or until ``conn`` is closed (and why)."""
        limits = conn.limits
        decoder = FrameDecoder(DEFAULT_MAX_FRAME, MAX_REQUEST_OBJECTS)  # decoded size is per object, not byte
        frame_left = limits.frame_seconds  # reading time left to the frame being received
        while not conn.closing:
            partial = decoder.buffered > 0
            if partial:
                wait = frame_left
            elif conn.busy:
                wait = limits.idle_seconds  # busy, so not idle: look again later
            else:
                wait = conn.last_active + limits.idle_seconds - time.monotonic()
            started = time.monotonic()
            try:
                async with asyncio.timeout(max(wait, 0.0)):
                    data = await reader.read(READ_CHUNK)
            except TimeoutError:
                if partial:
                    conn.close(Timeout(f"a frame must arrive whole within {limits.frame_seconds:g}s "
                                       "of its first byte; closing the connection"))
                    return
                if not conn.busy and time.monotonic() - conn.last_active >= limits.idle_seconds:
                    conn.close(Timeout(f"connection idle for {limits.idle_seconds:g}s; closing it"))
                    return
                continue
            if not data:
                return
            conn.last_active = now = time.monotonic()
            if partial:
                frame_left -= now - started  # only time spent waiting for the peer counts
            decoder.receive_data(data)
            began = not partial
            try:
                while (msg := decoder.next_message()) is not NEED_DATA:
                    began = True
                    self._release_partial(conn)  # the frame it was reserved for is whole
                    if not conn.authenticated and not self._authenticate(msg, conn):
                        return
                    await self._admit(msg, conn, decoder.last_size)
                if decoder.buffered and began:
                    frame_left = limits.frame_seconds  # a new frame started in this chunk
                self._reserve_partial(conn, decoder)
            except (errors.ProtocolError, Overloaded) as exc:
                # a malformed frame (the stream can't be resynchronised) or one we have no room for
                conn.close(exc)
                return

    async def _admit(self, msg: Any, conn: _ClientConnection, size: int) -> None:
        """Start answering ``msg`` (a frame of ``size`` bytes) once a slot and room for its bytes
        are free and unsent replies are under budget.

        Until then we read nothing more from this connection: a client that pipelines without
        reading its replies only stalls itself.
        """
        await conn.take_slot(size)
        try:
            await conn.room()
        except BaseException:
            conn.free_slot(size)
            raise
        op = msg.get("op") if type(msg) is dict else None
        if op == "put":
            self._put_now(msg, conn, size)  # answered from its commit's callback: no task
            return
        if op == "get" and self._get_now(msg, conn, size):
            return
        task = asyncio.create_task(self._answer(msg, conn))
        conn.tasks.add(task)
        task.add_done_callback(lambda t: conn.finished(t, size))

    def _evict_idle(self) -> bool:
        """Make room for a new connection: close the longest-idle one with no request in progress."""
        idle = [c for c in self._clients if not c.busy and not c.closing]
        if not idle:
            return False
        victim = min(idle, key=lambda c: c.last_active)
        victim.close(Overloaded(f"node {self.me.id} serves {self.limits.max_connections} connections; "
                                "closing this idle one to make room"))
        self._clients.discard(victim)
        self._release_partial(victim)
        return True

    def _reserve_partial(self, conn: _ClientConnection, decoder: FrameDecoder) -> None:
        """Count a large frame being received against the node's budget, or refuse it (Overloaded)."""
        length = decoder.incomplete_frame
        if length is None or length <= SMALL_FRAME or conn.partial_reserved:
            return
        if self._partial_bytes + length > self.limits.max_partial_bytes:
            raise Overloaded(f"node {self.me.id} is receiving too many large frames at once; retry later")
        conn.partial_reserved = length
        self._partial_bytes += length

    def _release_partial(self, conn: _ClientConnection) -> None:
        self._partial_bytes -= conn.partial_reserved
        conn.partial_reserved = 0

    @staticmethod
    async def _reply_room() -> None:
        """Wait until the requesting connection has room for another reply (_ClientConnection.room)."""
        conn = _REPLY_CONN.get()
        if conn is not None:
            await conn.room()

    async def _answer(self, msg: Any, conn: _ClientConnection) -> None:
        """Answer one request with exactly one reply frame, or close the connection; never raises."""
        try:
            op = msg.get("op") if isinstance(msg, dict) else None
            if isinstance(op, str) and op in HEAVY_OPS:
                async with conn.heavy:
                    await self._answer_one(msg, conn)
            else:
                await self._answer_one(msg, conn)
        except ConnectionError:
            conn.close()  # the connection is going: no reply can reach the client
        except Exception:  # a bug: the reply may be lost, so hang up rather than leave the request hanging
            log.exception("answering a request failed")
            conn.close(errors.RaftKVError("internal error; closing the connection"))

    async def _answer_one(self, msg: Any, conn: _ClientConnection) -> None:
        frame = await self._reply(msg, conn)
        conn.charge(frame)  # nothing awaited since the result was read: see _ClientConnection.room
        await conn.send(frame)

    async def _reply(self, msg: Any, conn: _ClientConnection) -> bytes:
        """The encoded reply to ``msg``: its result or its error, always in one frame."""
        _REPLY_CONN.set(conn)  # this task's own context: lets a read wait for reply room
        rid = None
        op = msg.get("op") if isinstance(msg, dict) else None
        started = time.perf_counter()
        try:
            if not isinstance(msg, dict):
                raise InvalidArgument("a request must be a map")
            rid = check_request_id(msg.get("id"))
            name = self.OPS.get(op) if isinstance(op, str) else None
            if name is None:
                raise UnknownOperation(f"unknown operation {op!r:.40}; known: {', '.join(sorted(self.OPS))}")
            owner, _, attr = name.rpartition(".")  # "members.op_nodes": a handler of a part of the node
            handler: Callable[[dict[str, Any]], Awaitable[Any]] = getattr(getattr(self, owner) if owner else self, attr)
            reply = {"id": rid, "ok": await handler(msg)}
        except TimeoutError:
            reply = {"id": rid, "err": errors.to_wire(Timeout("request timed out"))}
        except ConnectionError:
            raise  # the connection is closing (_ClientConnection.room)
        except Exception as exc:
            reply = _error_reply(op, rid, exc)
        self._record(op, msg, started, reply.get("err"))
        try:
            return encode(reply)
        except Exception as exc:  # e.g. a result too big for one frame: still one reply, an error
            log.warning("the reply to a %.40r request could not be encoded: %s", op, exc)
            return encode({"id": rid, "err": errors.to_wire(errors.RaftKVError(
                f"the reply could not be sent: {str(exc)[:200]}"))})

    def _record(self, op: Any, msg: Any, started: float, err: Any) -> None:
        """Count a request in the node's statistics, and log it if it was slow."""
        took = time.perf_counter() - started
        self.stats.record(op, took, err["code"] if err is not None else None)
        if took > self.config.slow_request_seconds:
            self._slow(op, msg, took, err)

    def _slow(self, op: Any, msg: Any, took: float, err: Any) -> None:
        """Log a slow request, at most once per operation per interval (a stalled shard would
        otherwise log every request queued behind it)."""
        name = op if isinstance(op, str) and op in self.OPS else "unknown"
        shard = msg.get("shard") if isinstance(msg, dict) and isinstance(msg.get("shard"), str) else None
        outcome = err["code"] if err is not None else "ok"
        self._complaints.log(f"slow {name}", logging.WARNING, "slow %s request%s: %.0f ms (%s)", name,
                             f" to {shard:.64}" if shard else "", took * 1000, outcome,
                             extra=event("slow_request", op=name, shard=shard, ms=round(took * 1000, 3),
                                         outcome=outcome))

    # --- lifecycle ----------------------------------------------------------------------------

    def _on_loop_exception(self, aloop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
        """asyncio's own errors; running out of descriptors on accept gets one line per interval.

        asyncio pauses accepting for a second and logs a traceback on every failed accept: a burst
        of connections past the process's descriptor limit would bury the log.
        """
        exc = context.get("exception")
        if isinstance(exc, OSError) and exc.errno in errors.ACCEPT_STARVED:
            self._complaints.log("accept", logging.WARNING, "client port: cannot accept (%s); "
                                 "asyncio pauses accepting for a second", exc)
            return
        if isinstance(exc, asyncio.CancelledError):
            # connection handlers cancelled as the node shuts down (other nodes keep connections
            # open to us for heartbeats and map polls): nothing went wrong
            return
        aloop.default_exception_handler(context)

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Run until SIGTERM/SIGINT, then shut down cleanly (journals fsynced, stores closed)."""
        aloop = asyncio.get_running_loop()
        aloop.set_exception_handler(self._on_loop_exception)
        self.mailbox = Mailbox(aloop)
        self.loop.after_iteration(self.mailbox.flush)
        self.open_groups()
        self.loop.start()
        host = self.config.bind_host or self.me.client[0]
        tls = self._client_tls
        server = await asyncio.start_server(self.handle_connection, host, self.me.client[1],
                                            limit=READ_CHUNK, backlog=256, ssl=tls,
                                            ssl_handshake_timeout=self.limits.frame_seconds if tls else None)
        if tls is not None and self.config.tls_ca is None and len(self.config.nodes) > 1:
            # this node verifies the others' client ports against the system's CAs: a private
            # cluster certificate then fails every map poll, heartbeat and move
            log.warning("TLS without --tls-ca: calls to the other nodes check their certificates "
                        "against the system's CAs; give --tls-ca if the cluster's certificates are private")
        if tls is None and self.config.client_token is None and not is_loopback(host):
            log.warning("serving clients on %s:%d without TLS or a client token: anyone who can reach "
                        "this port can read and write everything", host, self.me.client[1])
        metrics = None
        if self.config.metrics_port is not None:
            metrics = self._metrics = MetricsServer(self, host, self.config.metrics_port)
            log.info("node %s serving metrics on http://%s/metrics", self.me.id, metrics.address)
        expiry = asyncio.create_task(self._expire_cursors())
        background = [asyncio.create_task(self._expire_writes()), asyncio.create_task(self._follow_map()), asyncio.create_task(self._publish_splits()),
                      asyncio.create_task(self._split_when_due()), asyncio.create_task(self.members.run())]
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            aloop.add_signal_handler(sig, stop.set)
        log.info("node %s serving clients on %s (%s), peers on %s%s", self.me.id, format_hostport(self.me.client),
                 ", ".join([*(["TLS"] if tls else []), *(["client token"] if self.config.client_token else [])])
                 or "no TLS, no client token", format_hostport(self.loop.hub.address),
                 " (mutual TLS)" if self.config.peer_tls else "")
        if ready:
            ready()
        try:
            await stop.wait()
        finally:
            expiry.cancel()
            for task in background:
                task.cancel()
            self.maplink.close()
            server.close()
            if metrics is not None:
                metrics.close()
            self.loop.stop()
            self.registry.close()


class _ShardLoad:
    """A leader's recent writes to one shard, and the largest key it knows the shard holds."""

    def __init__(self, largest: int | None) -> None:
        self.tracker = WriteTracker()
        self.largest = largest
        # one key of each recent write request: where the write load's middle is (load splits)
        self.recent: collections.deque[int] = collections.deque(maxlen=LOAD_SAMPLE)
        self._marks: collections.deque[tuple[float, int]] = collections.deque(maxlen=12)  # (t, largest), 1/s

    def mark(self, now: float) -> None:
        """Remember the largest key once a second, to tell how fast appends move through the key space."""
        if self.largest is not None and (not self._marks or now - self._marks[-1][0] >= 1.0):
            self._marks.append((now, self.largest))

    def tail_mark(self, now: float) -> int | None:
        """The largest key of about ``APPEND_LAG`` seconds ago: a key above it counts as an append.

        Many writers of "now" timestamps interleave, so a fresh key is often a little below the
        largest one written; what tells a hot tail from uniform writes is that the new keys
        all lie past where the shard ended a moment ago.
        """
        mark = None
        for t, largest in self._marks:
            if now - t < APPEND_LAG and mark is not None:
                break
            mark = largest
        return mark if mark is not None else self.largest

    def key_rate(self) -> float:
        """Key space the largest key advanced per second, over the last ~10 s (0 if unknown)."""
        if len(self._marks) < 2:
            return 0.0
        (t0, k0), (t1, k1) = self._marks[0], self._marks[-1]
        return max(0.0, (k1 - k0) / (t1 - t0)) if t1 > t0 else 0.0


def _error_reply(op: Any, rid: Any, exc: BaseException) -> dict[str, Any]:
    """The reply to request ``rid`` that failed with ``exc``: our errors as they are, anything
    else a bug, logged, and answered as an internal error (the node keeps serving)."""
    if isinstance(exc, RaftKVError):
        return {"id": rid, "err": errors.to_wire(exc)}
    log.error("request %.40r failed", op, exc_info=exc)
    return {"id": rid, "err": errors.to_wire(errors.RaftKVError(f"internal error: {exc}"))}


def _span(req: dict[str, Any]) -> tuple[int, int]:
    """The half-open key range a request is about (empty if it names none), for StaleRoute."""
    def key(v: Any) -> int | None:
        return v if type(v) is int and 0 <= v < 2**64 else None

    if (k := key(req.get("key"))) is not None:
        return k, k + 1
    for field_name in ("pairs", "keys"):
        items = req.get(field_name)
        if isinstance(items, list) and items:
            found = [key(p[0] if isinstance(p, list) and p else p) for p in items[:MAX_BATCH_KEYS]]
            found = [k for k in found if k is not None]
            if found:
                return min(found), max(found) + 1
    start = key(req.get("start"))
    if start is not None:
        end = req.get("end")
        return start, 2**64 if end is None else (key(end) or start)
    return 0, 0


# The cycle collector's defaults (700, 10, 10) ran it several times per applied batch of 5,000 puts
# (msgpack decodes each pair into a list, a new container), and its older generations then swept
# the long-lived heap: a 1M-key bulk load on 3 local nodes took 124k-134k keys/s with the defaults
# (three runs) and 159k with these (146k-179k with other thresholds of 10,000-100,000), in one
# sitting. Little here makes cycles, so collecting less often holds little garbage back; a full
# collection is considered once every 10M container allocations.
GC_THRESHOLDS = (50_000, 20, 10)


def run_node(config: NodeConfig) -> None:
    """Entry point of ``raftkv node``."""
    logs.configure(config.log_format)
    # a crash in C code (LevelDB, msgpack) or a fatal signal still leaves every thread's stack in the log
    faulthandler.enable()
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # on demand: every thread's stack, to the log
    # Two busy threads share the GIL; the default 5 ms switch interval would add up to 5 ms
    # to every Raft round trip while the client thread serialises a page.
    sys.setswitchinterval(0.0005)
    gc.set_threshold(*GC_THRESHOLDS)
    asyncio.run(Node(config, ClientLimits.from_json(os.environ.get(CLIENT_LIMITS_ENV))).serve())


__all__ = ["Node", "run_node", "MAX_VALUE_BYTES"]

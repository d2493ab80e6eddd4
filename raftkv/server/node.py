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
import itertools
import logging
import math
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from .. import errors
from ..errors import (
    CursorExpired,
    InvalidArgument,
    NotLeader,
    Overloaded,
    RaftKVError,
    ShardNotHere,
    StaleRoute,
    Timeout,
    UnknownOperation,
)
from ..keys import MAX_VALUE_BYTES, check_key, check_value
from ..protocol.codec import DEFAULT_MAX_FRAME, NEED_DATA, FrameDecoder, encode
from ..replication import commands, sessions
from ..replication.balance import pick_transfer
from ..replication.group import FAIL_REASON, RaftGroup, RaftOptions
from ..replication.loop import RaftLoop
from ..routing.ranges import end_from_wire, end_to_wire
from ..routing.shardmap import META_GROUP, Shard, ShardMap, initial_map, meta_replicas
from ..storage.leveldb import ShardStore, StoreView
from .config import NodeConfig, check_data_dir, format_hostport

log = logging.getLogger(__name__)

MAX_PAGE_KEYS = 10_000
MAX_PAGE_BYTES = 4 << 20
MAX_BATCH_KEYS = 10_000
MAX_INFLIGHT_PER_CONN = 256
MAX_HEAVY_PER_CONN = 8  # scans and aggregates: each reply may be a few MiB
HEAVY_OPS = frozenset({"scan", "aggregate"})
MAX_CONNECTIONS = 1024
WRITE_BUFFER_HIGH = 4 << 20
SCAN_PAGE_SECONDS = 0.05  # a page returns early (with 'resume') rather than hold the node longer
DEFAULT_OP_TIMEOUT = 10.0
MAX_OP_TIMEOUT = 60.0
MAX_CURSORS = 256
CURSOR_IDLE_SECONDS = 60.0
AGG_STEP_ROWS = 50_000
MAX_GROUPS = 100_000
BALANCE_INTERVAL = 3.0

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


class _ClientConnection:
    """Per-connection limits and an orderly, back-pressured writer."""

    def __init__(self, writer: asyncio.StreamWriter) -> None:
        self.writer = writer
        self.inflight = asyncio.Semaphore(MAX_INFLIGHT_PER_CONN)
        self.heavy = asyncio.Semaphore(MAX_HEAVY_PER_CONN)
        self._write_lock = asyncio.Lock()

    async def send(self, frame: bytes) -> None:
        """Write one reply once the socket buffer is below its high-water mark."""
        async with self._write_lock:
            if self.writer.is_closing():
                return
            try:
                await self.writer.drain()
                self.writer.write(frame)
                await self.writer.drain()
            except (ConnectionError, OSError):
                pass


class _Page:
    """Where a paged read stopped, and the cursor that continues it."""

    resume: int | None = None
    cursor: list[Any] | None = None


class Node:
    """One node process's state."""

    def __init__(self, config: NodeConfig) -> None:
        self.config = config
        self.me = config.me()
        check_data_dir(config)
        ids = [n.id for n in config.nodes]
        self.initial_map = initial_map(ids, config.shards, replication=config.replication)
        self.meta_nodes = meta_replicas(ids, config.replication)
        self.options = RaftOptions(**config.raft)
        bind_host = config.bind_host or self.me.peer[0]
        self.loop = RaftLoop(self.me.id, (bind_host, self.me.peer[1]),
                             config.peer_dial_addresses(), config.secret)
        self.stores: dict[str, ShardStore] = {}
        self._meta_bootstrapping = False
        self._map_cache: tuple[int, ShardMap] | None = None
        self._next_balance = time.monotonic() + BALANCE_INTERVAL
        self._cursors: collections.OrderedDict[int, tuple[str, StoreView, float]] = collections.OrderedDict()
        self._cursor_ids = itertools.count(1)
        self._connections = 0
        self.mailbox: Mailbox | None = None
        self.started = time.time()

    # --- groups -------------------------------------------------------------------------------

    def _open_group(self, group_id: str, replicas: list[str]) -> None:
        directory = os.path.join(self.config.data_dir, "groups", group_id)
        store = ShardStore(os.path.join(directory, "store"))
        self.stores[group_id] = store
        group = RaftGroup(group_id, self.me.id, list(replicas), store, directory, self.loop.hub, self.options)
        self.loop.add_group(group)

    def open_groups(self) -> None:
        """Open every replica this node hosts: the meta group (if placed here) and its shards."""
        if self.me.id in self.meta_nodes:
            self._open_group(META_GROUP, self.meta_nodes)
        for shard in self.current_map().shards:
            if self.me.id in shard.replicas:
                self._open_group(shard.id, list(shard.replicas))
        self.loop.every_tick(self._bootstrap_meta)
        if self.options.balance_leaders:
            self.loop.every_tick(self._balance_leaders)

    def current_map(self) -> ShardMap:
        """The replicated shard map if the meta group holds one here, else the deterministic initial map."""
        store = self.stores.get(META_GROUP)
        if store is None:
            return self.initial_map
        version = store.applied_index  # the map can only change when the meta store applies an entry
        if self._map_cache is None or self._map_cache[0] != version:
            stored = commands.stored_map(store)
            self._map_cache = (version, ShardMap.from_dict(stored) if stored else self.initial_map)
        return self._map_cache[1]

    def _bootstrap_meta(self) -> None:
        """Meta leader, on the Raft thread: write the initial map once, through the log."""
        meta = self.loop.groups.get(META_GROUP)
        if meta is None or self._meta_bootstrapping or not meta.leader_ready:
            return
        if commands.stored_map(meta.store) is not None:
            return
        self._meta_bootstrapping = True

        def done(result: Any, err: int) -> None:
            self._meta_bootstrapping = False

        meta.submit(commands.set_map(self.initial_map.to_dict(), 0), done)

    def _balance_leaders(self) -> None:
        """Raft thread, every few seconds: hand one group to a less loaded replica if we lead too many."""
        now = time.monotonic()
        if now < self._next_balance:
            return
        self._next_balance = now + BALANCE_INTERVAL
        groups = self.loop.groups
        choice = pick_transfer(self.me.id, {gid: g.leader_id for gid, g in groups.items()},
                               {gid: [self.me.id, *g.peer_ids] for gid, g in groups.items()})
        if choice is not None:
            gid, target = choice
            log.info("handing leadership of %s to %s (balancing)", gid, target)
            groups[gid].transfer_to(target)

    def leaders(self) -> dict[str, str | None]:
        """The leader each local group believes in."""
        return {gid: g.leader_id for gid, g in self.loop.groups.items()}

    # --- request handling ---------------------------------------------------------------------

    def _group(self, req: dict[str, Any]) -> RaftGroup:
        sid = req.get("shard")
        if not isinstance(sid, str):
            raise InvalidArgument("request needs a 'shard' id")
        g = self.loop.groups.get(sid)
        if g is None or sid == META_GROUP:
            raise ShardNotHere(f"node {self.me.id} hosts no replica of shard {sid!r}", epoch=self.current_map().epoch)
        return g

    def _shard(self, g: RaftGroup) -> Shard:
        """The map's entry for the shard ``g`` replicates."""
        shard = self.current_map().shard_by_id(g.group_id)
        if shard is None:
            raise StaleRoute(f"shard {g.group_id} is no longer in the map", epoch=self.current_map().epoch)
        return shard

    def _require_in(self, shard: Shard, key: int) -> int:
        """``key`` if ``shard`` owns it; otherwise the client routed with a stale map."""
        if not shard.start <= key < shard.end:
            raise StaleRoute(f"key {key} is not in shard {shard.id}", epoch=self.current_map().epoch)
        return key

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

    async def _replicate(self, g: RaftGroup, command: bytes, timeout: float) -> Any:
        self._leader(g)
        fut, complete = self._raft_future()

        def done(result: Any, err: int) -> None:
            if err == FAIL_REASON.SUCCESS:
                complete(result)
            else:
                complete(error=_FAIL_TO_ERROR.get(err, Timeout)(
                    f"shard {g.group_id}: write not committed (pysyncobj code {err})", leader=g.leader_id))

        g.submit(command, done)
        self.loop.poke(g.group_id)
        try:
            result = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise Timeout(f"shard {g.group_id}: write not acknowledged within {timeout:.1f}s; "
                          "its outcome is unknown", leader=g.leader_id) from None
        if isinstance(result, dict) and "error" in result:
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
        level = req.get("consistency", "linearizable")
        if level == "serializable":
            return  # any replica's applied state: possibly stale, never torn
        if level != "linearizable":
            raise InvalidArgument("consistency must be 'linearizable' or 'serializable'")
        self._leader(g)
        fut, complete = self._raft_future()
        timeout = self._timeout(req)
        self.loop.read_index(g.group_id, lambda err: complete(error=err), timeout)
        await asyncio.wait_for(fut, timeout + 1.0)

    async def op_map(self, req: dict[str, Any]) -> Any:
        """The shard map, this node's leader hints, and every node's client address."""
        return {"map": self.current_map().to_dict(), "leaders": self.leaders(), "node": self.me.id,
                "nodes": {n.id: format_hostport(n.client) for n in self.config.nodes}}

    async def op_get(self, req: dict[str, Any]) -> Any:
        g = self._group(req)
        key = self._require_in(self._shard(g), check_key(req.get("key")))
        await self._readable(g, req)
        return g.store.get(key)

    async def op_put(self, req: dict[str, Any]) -> Any:
        g = self._group(req)
        pairs = req.get("pairs")
        if not isinstance(pairs, list) or not 0 < len(pairs) <= MAX_BATCH_KEYS:
            raise InvalidArgument(f"'pairs' must be a list of 1..{MAX_BATCH_KEYS} [key, value] pairs")
        shard = self._shard(g)
        clean = []
        for pair in pairs:
            if not isinstance(pair, list) or len(pair) != 2:
                raise InvalidArgument("each pair must be [key, value]")
            clean.append((self._require_in(shard, check_key(pair[0])), check_value(pair[1])))
        size = sum(len(v) + 16 for _, v in clean)
        if size > commands.MAX_COMMAND_BYTES:
            raise InvalidArgument(f"a batch of {size} bytes exceeds the {commands.MAX_COMMAND_BYTES >> 20} MiB "
                                  "limit of one replicated command; send fewer pairs per request")
        await self._replicate(g, commands.put(clean, self._session(req)), self._timeout(req))
        return len(clean)

    async def op_delete(self, req: dict[str, Any]) -> Any:
        g = self._group(req)
        keys = req.get("keys")
        if not isinstance(keys, list) or not 0 < len(keys) <= MAX_BATCH_KEYS:
            raise InvalidArgument(f"'keys' must be a list of 1..{MAX_BATCH_KEYS} keys")
        shard = self._shard(g)
        for k in keys:
            self._require_in(shard, check_key(k))
        return await self._replicate(g, commands.delete(keys, self._session(req)), self._timeout(req))

    def _bounds(self, g: RaftGroup, req: dict[str, Any]) -> tuple[int, int]:
        shard = self._shard(g)
        start = check_key(req.get("start", shard.start), "start")
        end = req.get("end", end_to_wire(shard.end))
        end = end_from_wire(None if end is None else check_key(end, "end"))
        if start < shard.start or end > shard.end:
            raise StaleRoute(f"range is not inside shard {g.group_id}", epoch=self.current_map().epoch)
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
        """
        g = self._group(req)
        start, end = self._bounds(g, req)
        limit = req.get("limit", 1000)
        max_bytes = req.get("max_bytes", 1 << 20)
        if type(limit) is not int or not 0 < limit <= MAX_PAGE_KEYS:
            raise InvalidArgument(f"page limit must be 1..{MAX_PAGE_KEYS}")
        if type(max_bytes) is not int or not 0 < max_bytes <= MAX_PAGE_BYTES:
            raise InvalidArgument(f"page max_bytes must be 1..{MAX_PAGE_BYTES}")
        _, match = self._filter(req)
        view = await self._view(g, req)
        with self._paging(g, view) as page:
            keys, values, page.resume = view.scan_raw(start, end, reverse=bool(req.get("reverse")), limit=limit,
                                                      max_bytes=max_bytes, filter=match,
                                                      deadline=time.monotonic() + SCAN_PAGE_SECONDS)
        # keys: one blob of 9-byte raw store keys, decoded by the client in C (struct.iter_unpack)
        return {"keys": keys, "values": values, "resume": page.resume, "cursor": page.cursor}

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
        view = await self._view(g, req)
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

    async def _view(self, g: RaftGroup, req: dict[str, Any]) -> StoreView:
        """The snapshot a paged read continues (``cursor``), or a new one once the read is allowed."""
        cursor = req.get("cursor")
        if cursor is not None:
            return self._take_cursor(cursor, g.group_id)
        await self._readable(g, req)
        return g.store.open_view()

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
            page.cursor = self._keep_cursor(g.group_id, view)

    def _take_cursor(self, cursor: Any, group_id: str) -> StoreView:
        entry = None
        if isinstance(cursor, list) and len(cursor) == 2 and cursor[0] == self.me.id:
            entry = self._cursors.pop(cursor[1], None) if isinstance(cursor[1], int) else None
        if entry is None or entry[0] != group_id or entry[1].closed:
            raise CursorExpired("scan cursor expired; continue from 'resume' without it")
        return entry[1]

    def _keep_cursor(self, group_id: str, view: StoreView) -> list[Any]:
        cid = next(self._cursor_ids)
        self._cursors[cid] = (group_id, view, time.monotonic())
        while len(self._cursors) > MAX_CURSORS:  # bounded: the oldest scan must restart its page
            _, (_, old, _) = self._cursors.popitem(last=False)
            old.close()
        return [self.me.id, cid]

    async def _expire_cursors(self) -> None:
        while True:
            await asyncio.sleep(5.0)
            cutoff = time.monotonic() - CURSOR_IDLE_SECONDS
            for cid, (_, view, used) in list(self._cursors.items()):
                if used < cutoff:
                    del self._cursors[cid]
                    view.close()

    async def op_delete_range(self, req: dict[str, Any]) -> Any:
        """Delete one bounded step of ``[start, end)`` (matching ``filter``); ``resume`` continues it."""
        g = self._group(req)
        start, end = self._bounds(g, req)
        wire, _ = self._filter(req)  # compiled here only to refuse a bad filter at the door
        command = commands.delete_range(start, end_to_wire(end), wire, session=self._session(req))
        return await self._replicate(g, command, self._timeout(req))

    async def op_status(self, req: dict[str, Any]) -> Any:
        """This node's view of its groups."""
        groups = []
        names = {0: "follower", 1: "candidate", 2: "leader"}
        for gid, g in sorted(self.loop.groups.items()):
            groups.append({"id": gid, "state": names.get(g._SyncObj__raftState, "?"), "leader": g.leader_id,
                           "term": g.term, "commit": g.raftCommitIndex, "applied": g.store.applied_index,
                           "log_entries": len(g.journal), "log_bytes": g.journal.size_bytes,
                           "snapshots_installed": g.serializer.installs})
        return {"node": self.me.id, "pid": os.getpid(), "uptime": time.time() - self.started,
                "groups": groups, "raft_iterations": self.loop.iterations, "fsyncs": self.loop.fsyncs,
                "peers_up": self.loop.hub.up_peers()}

    async def op_compact(self, req: dict[str, Any]) -> Any:
        """Ask a local replica to compact its log now (operations and tests)."""
        g = self._group(req)
        self.loop.call_soon(g.forceLogCompaction)
        self.loop.poke(g.group_id)
        return True

    OPS: dict[str, str] = {"map": "op_map", "get": "op_get", "put": "op_put", "delete": "op_delete",
                           "scan": "op_scan", "aggregate": "op_aggregate", "delete_range": "op_delete_range",
                           "status": "op_status", "compact": "op_compact"}

    # --- connections --------------------------------------------------------------------------

    async def handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """Serve one client connection: pipelined requests, answered as they complete.

        Memory per connection is bounded: at most MAX_INFLIGHT_PER_CONN requests (of which at
        most MAX_HEAVY_PER_CONN page-sized reads) are in progress, a request's slot is held until
        its reply has drained to the socket, and we stop reading while every slot is taken -- so a
        client that never reads its replies only stalls itself.
        """
        if self._connections >= MAX_CONNECTIONS:
            writer.write(encode({"id": None, "err": errors.to_wire(
                Overloaded(f"node {self.me.id} already serves {MAX_CONNECTIONS} connections"))}))
            writer.close()
            return
        self._connections += 1
        writer.transport.set_write_buffer_limits(high=WRITE_BUFFER_HIGH)
        conn = _ClientConnection(writer)
        decoder = FrameDecoder(DEFAULT_MAX_FRAME)
        tasks: set[asyncio.Task] = set()
        try:
            while True:
                data = await reader.read(256 * 1024)
                if not data:
                    break
                decoder.receive_data(data)
                while (msg := decoder.next_message()) is not NEED_DATA:
                    await conn.inflight.acquire()
                    task = asyncio.create_task(self._answer(msg, conn))
                    tasks.add(task)
                    task.add_done_callback(lambda t: (tasks.discard(t), conn.inflight.release()))
        except errors.ProtocolError as exc:
            # a malformed frame: tell the client why, then hang up (the stream can't be resynchronised)
            writer.write(encode({"id": None, "err": errors.to_wire(exc)}))
        except (ConnectionError, OSError):
            pass
        finally:
            self._connections -= 1
            for t in tasks:
                t.cancel()
            writer.close()

    async def _answer(self, msg: Any, conn: _ClientConnection) -> None:
        op = msg.get("op") if isinstance(msg, dict) else None
        if op in HEAVY_OPS:
            async with conn.heavy:
                await self._answer_one(msg, conn)
        else:
            await self._answer_one(msg, conn)

    async def _answer_one(self, msg: Any, conn: _ClientConnection) -> None:
        rid = msg.get("id") if isinstance(msg, dict) else None
        try:
            if not isinstance(msg, dict):
                raise InvalidArgument("a request must be a map")
            op = msg.get("op")
            name = self.OPS.get(op) if isinstance(op, str) else None
            if name is None:
                raise UnknownOperation(f"unknown operation {op!r:.40}; known: {', '.join(sorted(self.OPS))}")
            handler: Callable[[dict[str, Any]], Awaitable[Any]] = getattr(self, name)
            reply = {"id": rid, "ok": await handler(msg)}
        except RaftKVError as exc:
            reply = {"id": rid, "err": errors.to_wire(exc)}
        except TimeoutError:
            reply = {"id": rid, "err": errors.to_wire(Timeout("request timed out"))}
        except Exception as exc:  # a bug: report it, keep serving
            log.exception("request %r failed", msg.get("op") if isinstance(msg, dict) else msg)
            reply = {"id": rid, "err": errors.to_wire(errors.RaftKVError(f"internal error: {exc}"))}
        await conn.send(encode(reply))

    # --- lifecycle ----------------------------------------------------------------------------

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Run until SIGTERM/SIGINT, then shut down cleanly (journals fsynced, stores closed)."""
        aloop = asyncio.get_running_loop()
        self.mailbox = Mailbox(aloop)
        self.loop.after_iteration(self.mailbox.flush)
        self.open_groups()
        self.loop.start()
        host = self.config.bind_host or self.me.client[0]
        server = await asyncio.start_server(self.handle_connection, host, self.me.client[1],
                                            limit=DEFAULT_MAX_FRAME, backlog=256)
        expiry = asyncio.create_task(self._expire_cursors())
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            aloop.add_signal_handler(sig, stop.set)
        log.info("node %s serving clients on %s, peers on %s", self.me.id, format_hostport(self.me.client),
                 format_hostport(self.loop.hub.address))
        if ready:
            ready()
        try:
            await stop.wait()
        finally:
            expiry.cancel()
            server.close()
            self.loop.stop()
            for store in self.stores.values():
                store.close()


def run_node(config: NodeConfig) -> None:
    """Entry point of ``raftkv node``."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # Two busy threads share the GIL; the default 5 ms switch interval would add up to 5 ms
    # to every Raft round trip while the client thread serialises a page.
    sys.setswitchinterval(0.0005)
    asyncio.run(Node(config).serve())


__all__ = ["Node", "run_node", "MAX_VALUE_BYTES"]

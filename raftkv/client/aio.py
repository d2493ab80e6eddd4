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
a few pages sit in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, TypeVar

from .. import errors
from ..errors import InvalidArgument, NotLeader, RaftKVError, StaleRoute, Unavailable
from ..keys import KEY_SPACE_END, check_key, check_limit, check_range, check_value
from ..protocol.codec import DEFAULT_MAX_FRAME, NEED_DATA, FrameDecoder, encode
from ..protocol.pages import decode_raw_keys
from ..routing.ranges import end_to_wire, inclusive_to_half_open
from ..routing.shardmap import Shard, ShardMap
from ..server.config import parse_hostport

T = TypeVar("T")
Row = tuple[int, bytes]

BATCH_KEYS = 5000
BATCH_BYTES = 2 << 20
SCAN_PREFETCH_SHARDS = 4


def _split_seeds(seeds: str | Iterable[str]) -> list[str]:
    items = seeds.split(",") if isinstance(seeds, str) else list(seeds)
    out = [s.strip() for s in items if s and s.strip()]
    if not out:
        raise InvalidArgument("at least one seed address (host:port) is needed")
    for s in out:
        parse_hostport(s)
    return out


class _Connection:
    """One TCP connection to one node, with pipelined requests matched by id."""

    def __init__(self, address: str) -> None:
        self.address = address
        self._ids = itertools.count(1)
        self._pending: dict[int, asyncio.Future] = {}
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task | None = None
        self.closed = False

    async def open(self, timeout: float) -> None:
        host, port = parse_hostport(self.address)
        reader, self._writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, limit=DEFAULT_MAX_FRAME), timeout)
        self._reader_task = asyncio.create_task(self._read_loop(reader))

    async def _read_loop(self, reader: asyncio.StreamReader) -> None:
        decoder = FrameDecoder(DEFAULT_MAX_FRAME)
        error: Exception = Unavailable(f"connection to {self.address} closed")
        try:
            while data := await reader.read(1 << 20):
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
        except (OSError, errors.ProtocolError) as exc:
            error = Unavailable(f"connection to {self.address} failed: {exc}")
        finally:
            self.closed = True
            for fut in self._pending.values():
                if not fut.done():
                    fut.set_exception(error)
            self._pending.clear()

    async def request(self, msg: dict[str, Any], timeout: float) -> Any:
        if self.closed or self._writer is None:
            raise Unavailable(f"connection to {self.address} is closed")
        rid = next(self._ids)
        fut = asyncio.get_running_loop().create_future()
        self._pending[rid] = fut
        self._writer.write(encode({**msg, "id": rid}))
        try:
            return await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            raise errors.Timeout(f"{self.address} did not answer within {timeout:.1f}s") from None
        finally:
            self._pending.pop(rid, None)

    async def close(self) -> None:
        self.closed = True
        if self._writer is not None:
            self._writer.close()
        if self._reader_task is not None:
            self._reader_task.cancel()
            await asyncio.gather(self._reader_task, return_exceptions=True)


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

    @contextlib.contextmanager
    def write(self, fields: dict[str, Any]) -> Iterator[dict[str, Any]]:
        """``fields`` plus this write's ``session``, its number held open until the block exits."""
        seq = self._next
        self._next += 1
        self._open[seq] = None
        try:
            yield {**fields, "session": [self.id, seq, next(iter(self._open))]}
        finally:
            del self._open[seq]


class AsyncClient:
    """raftkv client for asyncio code.  All methods are coroutines (``scan`` is an async iterator).

    ``seeds``: any live node(s), ``"host:port,host:port"`` or a list.  ``timeout``:
    seconds an operation may take, retries included, before :class:`Unavailable`;
    ``attempt_timeout``: seconds one attempt at one node may take before the client
    tries another replica (a frozen or partitioned leader keeps its socket open).
    ``consistency``: ``"linearizable"`` (default: a read sees every write
    acknowledged before it started) or ``"serializable"`` (the leader's local state,
    no ReadIndex round: faster, may miss the very latest writes after a failover).
    """

    def __init__(self, seeds: str | Iterable[str], *, timeout: float = 10.0, attempt_timeout: float = 3.0,
                 consistency: str = "linearizable", page_keys: int = 4000, page_bytes: int = 1 << 20) -> None:
        self._seeds = _split_seeds(seeds)
        if consistency not in ("linearizable", "serializable"):
            raise InvalidArgument("consistency must be 'linearizable' or 'serializable'")
        if not 0 < page_keys <= 10_000 or not 0 < page_bytes <= 4 << 20:
            raise InvalidArgument("page_keys must be 1..10000 and page_bytes 1..4 MiB")
        self.timeout = timeout
        self.attempt_timeout = attempt_timeout
        self.consistency = consistency
        self.page_keys = page_keys
        self.page_bytes = page_bytes
        self._conns: dict[str, _Connection] = {}
        self._connecting: dict[str, asyncio.Task] = {}
        self._map: ShardMap | None = None
        self._leaders: dict[str, str] = {}
        self._nodes: dict[str, str] = {}
        self._refreshing: asyncio.Task | None = None
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
        """Close every connection."""
        conns, self._conns = list(self._conns.values()), {}
        await asyncio.gather(*(c.close() for c in conns), return_exceptions=True)

    # --- the API ------------------------------------------------------------------------------

    async def put(self, key: int, value: bytes | str) -> None:
        """Store ``value`` under ``key``; returns once committed (fsynced) on a majority."""
        key, value = check_key(key), check_value(value)
        with self._session.write({"pairs": [[key, value]]}) as fields:
            await self._on_key(key, "put", fields)

    async def get(self, key: int) -> bytes | None:
        """The value under ``key``, or None."""
        key = check_key(key)
        return await self._on_key(key, "get", {"key": key, "consistency": self.consistency})

    async def delete(self, key: int) -> bool:
        """Delete ``key``; True if it existed."""
        key = check_key(key)
        with self._session.write({"keys": [key]}) as fields:
            return bool(await self._on_key(key, "delete", fields))

    async def put_many(self, pairs: Iterable[tuple[int, bytes | str]]) -> int:
        """Store many pairs: batched per shard, shards written in parallel.

        Each batch (same shard, up to a few thousand keys / 2 MiB) is atomic; the whole
        call is not.  Every pair is validated before anything is sent.  Returns the count.
        """
        clean = [(check_key(k), check_value(v)) for k, v in pairs]
        if not clean:
            return 0
        await self._put_batches(clean, time.monotonic() + self.timeout)
        return len(clean)

    async def range_query(self, start: int, end: int) -> list[Row]:
        """Every ``(key, value)`` with ``start <= key <= end``, ascending (``start > end``: [])."""
        return [row async for row in self.scan(start, end)]

    async def scan(self, start: int = 0, end: int = KEY_SPACE_END - 1, *, limit: int | None = None,
                   reverse: bool = False, filter: Any = None) -> AsyncIterator[Row]:
        """Stream rows with ``start <= key <= end`` in key order (descending if ``reverse``)."""
        async for page in self.scan_pages(start, end, limit=limit, reverse=reverse, filter=filter):
            for row in page:
                yield row

    async def scan_pages(self, start: int = 0, end: int = KEY_SPACE_END - 1, *, limit: int | None = None,
                         reverse: bool = False, filter: Any = None,
                         page_keys: int | None = None) -> AsyncIterator[list[Row]]:
        """Like :meth:`scan`, a page (list of rows) at a time.

        ``filter`` is a query-language filter in wire form, evaluated on the shards;
        ``page_keys`` overrides the page size (the query executor shrinks it to a LIMIT).
        """
        start, end = check_range(start, end)
        limit = check_limit(limit)
        span = inclusive_to_half_open(start, end)
        if span is None or limit == 0:
            return
        remaining = limit
        async for page in self._pages(span[0], span[1], reverse, filter, page_keys or self.page_keys):
            if remaining is not None:
                page = page[:remaining]
                remaining -= len(page)
            if page:
                yield page
            if remaining == 0:
                return

    async def delete_range(self, start: int, end: int, *, filter: Any = None) -> int:
        """Delete every key in ``[start, end]`` (matching ``filter``); returns how many went."""
        start, end = check_range(start, end)
        span = inclusive_to_half_open(start, end)
        if span is None:
            return 0
        deadline = time.monotonic() + self.timeout
        total = 0
        cursor = span[0]
        while cursor < span[1]:
            shard = (await self._shard_map(deadline)).shard_for_key(cursor)
            stop = min(shard.end, span[1])
            with self._session.write({"start": cursor, "end": end_to_wire(stop), "filter": filter}) as fields:
                reply = await self._with_retry(
                    lambda s=shard, f=fields: self._send(s, "delete_range", f, deadline), deadline)
            total += reply["deleted"]
            cursor = reply["resume"] if reply["resume"] is not None else stop
        return total

    async def query(self, statement: Any, now_ns: int | None = None) -> Any:
        """Run one query-language statement (text or parsed); returns a :class:`QueryResult`.

        >>> res = await db.query("SELECT count(*) FROM kv WHERE key >= now() - INTERVAL '5 minutes'")
        ... # doctest: +SKIP
        """
        from ..query.executor import execute

        return await execute(self, statement, now_ns)

    async def aggregate_shard(self, shard_id: str, lo: int, hi: int, aggs: Any, bucket_ns: int | None,
                              filter: Any) -> Any:
        """Partial aggregates of one shard's rows in ``[lo, hi]``, fetched in bounded steps on one snapshot."""
        from ..query.aggregate import Aggregates

        deadline = time.monotonic() + self.timeout
        merger = Aggregates(aggs, bucket_ns)
        total = merger.new()
        cursor = None
        cursor_lo, end = lo, hi + 1
        while True:
            shard = (await self._shard_map(deadline)).shard_by_id(shard_id)
            if shard is None:
                raise StaleRoute(f"shard {shard_id} is gone")
            fields = {"start": cursor_lo, "end": end_to_wire(end), "aggs": aggs,
                      "bucket_ns": bucket_ns, "filter": filter, "consistency": self.consistency, "cursor": cursor}

            async def attempt(s: Shard = shard, f: dict[str, Any] = fields) -> Any:
                try:
                    return await self._send(s, "aggregate", f, deadline)
                except errors.CursorExpired:
                    # a fresh snapshot would count rows twice with what we merged: start this shard over
                    f["cursor"], f["start"] = None, lo
                    raise _RestartShard() from None

            try:
                reply = await self._with_retry(attempt, deadline)
            except _RestartShard:
                total, cursor, cursor_lo = merger.new(), None, lo
                continue
            total = merger.merge(total, reply["partials"])
            if reply["resume"] is None:
                return total
            cursor_lo, cursor = reply["resume"], reply["cursor"]

    async def shard_map(self) -> ShardMap:
        """The cached shard map (fetched if needed)."""
        return await self._shard_map(time.monotonic() + self.timeout)

    def leader_hints(self) -> dict[str, str]:
        """Cached shard leaders (shard id -> node id)."""
        return dict(self._leaders)

    def node_addresses(self) -> dict[str, str]:
        """Client addresses of the cluster's nodes (node id -> host:port)."""
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
        last: Exception | None = None
        for attempt in itertools.count():
            candidates = list(dict.fromkeys([*self._nodes.values(), *self._seeds]))
            random.shuffle(candidates)
            for address in candidates:
                try:
                    conn = await self._conn(address, deadline)
                    reply = await conn.request({"op": "map"}, max(0.05, min(2.0, deadline - time.monotonic())))
                except (Unavailable, OSError) as exc:
                    last = exc
                    continue
                fresh = ShardMap.from_dict(reply["map"])
                if self._map is None or fresh.epoch >= self._map.epoch:
                    self._map = fresh
                self._nodes.update(reply["nodes"])
                self._leaders.update({k: v for k, v in reply["leaders"].items() if v})
                return
            if time.monotonic() >= deadline:
                raise Unavailable(f"no node answered among {candidates}: {last}")
            await asyncio.sleep(min(0.05 * 2**attempt, 0.5, max(0.0, deadline - time.monotonic())))

    async def _conn(self, address: str, deadline: float) -> _Connection:
        conn = self._conns.get(address)
        if conn is not None and not conn.closed:
            return conn
        task = self._connecting.get(address)
        if task is None or task.done():
            task = self._connecting[address] = asyncio.create_task(self._open(address, deadline))
        return await asyncio.shield(task)

    async def _open(self, address: str, deadline: float) -> _Connection:
        conn = _Connection(address)
        try:
            await conn.open(max(0.05, min(2.0, deadline - time.monotonic())))
        except (OSError, TimeoutError) as exc:
            raise Unavailable(f"cannot connect to {address}: {exc}") from None
        self._conns[address] = conn
        return conn

    def _target(self, shard: Shard) -> str:
        """Where to send: the believed leader (``_forget_leader`` rotates it through the replicas)."""
        leader = self._leaders.get(shard.id)
        if leader is None or leader not in shard.replicas:
            leader = shard.replicas[0]
        return self._nodes.get(leader) or self._seeds[0]

    async def _send(self, shard: Shard, op: str, fields: dict[str, Any], deadline: float) -> Any:
        """One attempt at the shard's believed leader."""
        address = self._target(shard)
        remaining = min(deadline - time.monotonic(), self.attempt_timeout)
        if remaining <= 0:
            raise errors.Timeout("deadline passed")
        conn = await self._conn(address, deadline)
        try:
            return await conn.request({"op": op, "shard": shard.id, "timeout": remaining, **fields}, remaining + 0.5)
        except NotLeader as exc:
            if exc.leader and exc.leader in shard.replicas and exc.leader != self._leaders.get(shard.id):
                self._leaders[shard.id] = exc.leader
                raise _Redirect() from None
            self._forget_leader(shard)
            raise
        except Unavailable:
            self._forget_leader(shard)
            raise

    def _forget_leader(self, shard: Shard) -> None:
        """Try the next replica next time (rotate through them while no one knows the leader)."""
        current = self._leaders.get(shard.id)
        idx = shard.replicas.index(current) if current in shard.replicas else -1
        self._leaders[shard.id] = shard.replicas[(idx + 1) % len(shard.replicas)]

    async def _with_retry(self, attempt: Callable[[], Awaitable[T]], deadline: float) -> T:
        last: Exception | None = None
        redirects = 0
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
                await self._refresh_map(deadline)
            except Unavailable as exc:
                last = exc
            if time.monotonic() >= deadline:
                raise Unavailable(f"cluster could not serve the request in {self.timeout:.1f}s: {last}")
            pause = min(0.5, 0.01 * 2 ** min(n, 6)) * (0.5 + random.random())
            await asyncio.sleep(min(pause, max(0.0, deadline - time.monotonic())))
            if n % 4 == 3:
                await self._refresh_map(deadline)  # leaders may have moved while we backed off
        raise AssertionError("unreachable")

    async def _on_key(self, key: int, op: str, fields: dict[str, Any]) -> Any:
        deadline = time.monotonic() + self.timeout

        async def attempt() -> Any:
            shard = (await self._shard_map(deadline)).shard_for_key(key)
            return await self._send(shard, op, fields, deadline)

        return await self._with_retry(attempt, deadline)

    async def _put_batches(self, pairs: list[tuple[int, bytes]], deadline: float) -> None:
        smap = await self._shard_map(deadline)
        by_shard: dict[str, list[list[Any]]] = {}
        for k, v in pairs:
            by_shard.setdefault(smap.shard_for_key(k).id, []).append([k, v])
        batches = []
        for shard_pairs in by_shard.values():
            batch: list[list[Any]] = []
            size = 0
            for pair in shard_pairs:
                if batch and (len(batch) >= BATCH_KEYS or size + len(pair[1]) > BATCH_BYTES):
                    batches.append(batch)
                    batch, size = [], 0
                batch.append(pair)
                size += len(pair[1]) + 16
            batches.append(batch)
        sem = asyncio.Semaphore(8)

        async def one(batch: list[list[Any]]) -> None:
            async with sem:
                async def attempt(fields: dict[str, Any]) -> Any:
                    m = await self._shard_map(deadline)
                    shard = m.shard_for_key(batch[0][0])
                    if any(not shard.start <= k < shard.end for k, _ in batch):
                        raise _Resplit()
                    return await self._send(shard, "put", fields, deadline)

                try:
                    with self._session.write({"pairs": batch}) as fields:
                        await self._with_retry(lambda: attempt(fields), deadline)
                except _Resplit:
                    await self._put_batches([(k, v) for k, v in batch], deadline)

        results = await asyncio.gather(*(one(b) for b in batches), return_exceptions=True)
        for r in results:
            if isinstance(r, BaseException):
                raise r

    async def _page(self, shard: Shard, lo: int, hi: int, reverse: bool, filter: Any, deadline: float,
                    cursor: Any, page_keys: int) -> tuple[list[Row], int | None, Any]:
        fields = {"start": lo, "end": end_to_wire(hi), "reverse": reverse,
                  "limit": page_keys, "max_bytes": self.page_bytes, "filter": filter,
                  "consistency": self.consistency, "cursor": cursor}

        async def attempt() -> Any:
            try:
                return await self._send(shard, "scan", fields, deadline)
            except errors.CursorExpired:
                fields["cursor"] = None  # a fresh (linearizable) snapshot from where we are
                raise

        reply = await self._with_retry(attempt, deadline)
        rows = list(zip(decode_raw_keys(reply["keys"]), reply["values"], strict=True))
        return rows, reply["resume"], reply.get("cursor")

    async def _pages(self, lo: int, hi: int, reverse: bool, filter: Any,
                     page_keys: int) -> AsyncIterator[list[Row]]:
        """Pages of ``[lo, hi)`` in order, prefetching ahead; bounded memory."""
        smap = await self._shard_map(time.monotonic() + self.timeout)
        segments = smap.shards_for_range(lo, hi)
        if reverse:
            segments.reverse()
        pending: list[tuple[Shard, int, int, asyncio.Task]] = []

        def launch(seg: tuple[Shard, int, int]) -> None:
            shard, s_lo, s_hi = seg
            task = asyncio.create_task(self._page(shard, s_lo, s_hi, reverse, filter,
                                                  time.monotonic() + self.timeout, None, page_keys))
            pending.append((shard, s_lo, s_hi, task))

        queue = list(segments)
        task: asyncio.Task | None = None
        try:
            while queue or pending:
                while queue and len(pending) < SCAN_PREFETCH_SHARDS:
                    launch(queue.pop(0))
                shard, s_lo, s_hi, task = pending.pop(0)
                while True:
                    rows, resume, cursor = await task
                    if resume is not None:
                        s_lo, s_hi = (s_lo, resume) if reverse else (resume, s_hi)
                        task = asyncio.create_task(self._page(shard, s_lo, s_hi, reverse, filter,
                                                              time.monotonic() + self.timeout, cursor, page_keys))
                    if rows:
                        yield rows
                    if resume is None:
                        break
        finally:
            # A prefetch that failed while we awaited another is nobody's error now: retrieve it, or
            # asyncio prints "Task exception was never retrieved" when the task is collected.
            for t in [task, *(p[3] for p in pending)]:
                if t is None:
                    continue
                if t.done():
                    _retrieve(t)
                else:
                    t.cancel()
                    t.add_done_callback(_retrieve)  # in case it fails before the cancellation lands


def _retrieve(task: asyncio.Task) -> None:
    """Mark ``task``'s outcome as seen (scans drop the pages of prefetches they no longer need)."""
    if not task.cancelled():
        task.exception()


class _Redirect(RaftKVError):
    """Internal: the leader moved and we know where."""


class _RestartShard(RaftKVError):
    """Internal: an aggregate lost its snapshot mid-shard and must recount that shard."""


class _Resplit(RaftKVError):
    """Internal: a batch no longer falls in one shard after a map change."""

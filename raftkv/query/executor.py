"""Running plans against the cluster (the only part of ``query/`` that does I/O).

The planner already decided everything: which key ranges, which shards, what
to push down.  This module only walks the plan with an :class:`AsyncClient`:

* plain SELECTs stream pages from :meth:`AsyncClient.scan_pages`, which reads
  the shards of each range in key order with parallel prefetch, the filter
  evaluated on the shards and LIMIT shrinking the pages it asks for; runs of
  single-key ranges (``key IN (...)``) are read as concurrent GETs instead;
* aggregates walk each key range with :meth:`AsyncClient.range_steps`
  (``aggregate`` op: shards in parallel, each in bounded steps on one
  snapshot, re-routed by key when a shard splits) and merge the partials here,
  dropping a part's partials when the client says it starts over;
* INSERT is ``put_many`` (atomic per shard), DELETE is ``delete_range`` with
  the pushed-down filter, GET is ``get``; EXPLAIN, SHOW and a SELECT without
  FROM answer from the plan and cluster state;
* a plain SELECT ordered by anything but key (``ORDER BY value->'temp' DESC LIMIT 10``) reads
  every matching row and keeps only the first LIMIT + OFFSET in order (:class:`TopN`);
* ``to_timestamp()`` columns become :class:`~raftkv.query.timestamps.Timestamp`
  values here, on the client, after the rows or aggregates arrive.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import QueryError, Unavailable
from ..keys import KEY_SPACE_END
from . import ast
from .aggregate import Aggregates, sort_key, sort_rows
from .parser import parse
from .planner import (
    ConstantPlan,
    DeletePlan,
    ExplainPlan,
    GetPlan,
    InsertPlan,
    SelectPlan,
    ShowPlan,
    SplitPlan,
    explain,
    plan,
)
from .predicate import compile_exprs, compile_filter, compile_value
from .timestamps import to_timestamp_value

if TYPE_CHECKING:
    from ..client.aio import AsyncClient

Row = tuple[Any, ...]
T = TypeVar("T")
PagesFactory = Callable[[], AsyncIterator[list[Row]]]
AGG_PARALLEL_SHARDS = 4
POINT_WINDOW = 64  # single-key ranges (key IN (...)) read concurrently by a plain SELECT


class QueryResult:
    """The outcome of one statement: ``columns``, a ``status`` line, and rows streamed page by page."""

    def __init__(self, columns: tuple[str, ...], status: str, pages: PagesFactory | None = None) -> None:
        self.columns = columns
        self.status = status
        self._factory = pages
        self._active: AsyncIterator[list[Row]] | None = None

    async def pages(self) -> AsyncIterator[list[Row]]:
        """Rows, a page (list of tuples) at a time; can be consumed once."""
        if self._factory is None:
            return
        factory, self._factory = self._factory, None
        self._active = factory()
        try:
            async for page in self._active:
                if page:
                    yield page
        finally:
            await self.close()

    async def __aiter__(self) -> AsyncIterator[Row]:
        async for page in self.pages():
            for row in page:
                yield row

    async def rows(self) -> list[Row]:
        """Every row, in memory: for small results only."""
        return [row async for row in self]

    async def close(self) -> None:
        """Stop fetching (releases the scans' server cursors on their own timeout)."""
        self._factory = None
        active, self._active = self._active, None
        if active is not None and hasattr(active, "aclose"):
            await active.aclose()


def _one_page(rows: list[Row]) -> PagesFactory:
    async def gen() -> AsyncIterator[list[Row]]:
        yield rows

    return gen


async def execute(client: AsyncClient, statement: str | ast.Statement, now_ns: int | None = None) -> QueryResult:
    """Parse (if needed), plan and start running ``statement``; rows stream as the result is read."""
    stmt = parse(statement) if isinstance(statement, str) else statement
    smap = await client.shard_map()
    p = plan(stmt, smap, now_ns if now_ns is not None else time.time_ns())
    if isinstance(p, SelectPlan):
        if p.aggregates is not None:
            return QueryResult(p.columns, "SELECT", lambda: _aggregate_pages(client, p))
        if p.sort_field is not None:
            return QueryResult(p.columns, "SELECT", lambda: _top_n_pages(client, p))
        return QueryResult(p.columns, "SELECT", lambda: _select_pages(client, p))
    if isinstance(p, ConstantPlan):
        return QueryResult(p.columns, "SELECT", _one_page([p.row]))
    if isinstance(p, InsertPlan):
        n = await client.put_many(list(p.rows))
        return QueryResult((), f"INSERT {n}")
    if isinstance(p, DeletePlan):
        total = 0
        if p.scans:
            for lo, hi in p.ranges:
                total += await client.delete_range(lo, hi, filter=p.filter)
        return QueryResult((), f"DELETE {total}")
    if isinstance(p, GetPlan):
        value = await client.get(p.key)
        return QueryResult(("key", "value"), "GET", _one_page([] if value is None else [(p.key, value)]))
    if isinstance(p, ExplainPlan):
        lines = explain(p, leaders=client.leader_hints())
        return QueryResult(("plan",), "EXPLAIN", _one_page([(line,) for line in lines]))
    if isinstance(p, ShowPlan):
        return await _show(client, p.what)
    if isinstance(p, SplitPlan):
        return await _split(client, p)
    raise QueryError(f"cannot execute {type(p).__name__}")


async def _select_pages(client: AsyncClient, p: SelectPlan) -> AsyncIterator[list[Row]]:
    """The projected rows: OFFSET skipped here, on the client, before anything is computed."""
    skip = p.offset or 0
    project = _projector(p.fields, p.timestamps)
    total = None if p.limit is None else p.limit + skip
    async for page in _scanned_pages(client, p, total if total is None or total < 2**63 else None):
        if skip:
            dropped, page = page[:skip], page[skip:]
            skip -= len(dropped)
        if page:
            yield [project(row) for row in page]


class TopN:
    """The first ``n`` of a stream of ``(key, value)`` rows in the order of a sort value, in memory
    proportional to ``n`` (at most 2n + 64 rows plus the page being added), whatever the stream's
    length.

    Order: :func:`~raftkv.query.aggregate.sort_key` of ``value_of(row)``, reversed when
    ``descending`` (so NULL is last ascending and first descending), ties by key ascending either
    way, so the result does not depend on the order rows arrive in.
    """

    def __init__(self, n: int, value_of: Callable[[tuple[int, bytes]], Any], descending: bool = False) -> None:
        self.n = n
        self._value_of = value_of
        self._descending = descending
        self._kept: list[tuple[tuple, tuple[int, bytes]]] = []
        # Pruning sorts the kept rows, so do it only once they are twice n: O(log n) per row
        # overall. A small n still waits for a few dozen rows, to sort less often.
        self._prune_at = 2 * n + 64

    def add(self, rows: Iterable[tuple[int, bytes]]) -> None:
        """Consider ``rows`` (a page of the scan)."""
        if self.n <= 0:
            return
        value_of, kept = self._value_of, self._kept
        # Reversing the whole sort for DESC reverses the tie-break too: -key keeps ties ascending.
        sign = -1 if self._descending else 1
        for row in rows:
            kept.append(((*sort_key(value_of(row)), sign * row[0]), row))
        if len(kept) >= self._prune_at:
            self._prune()

    def _prune(self) -> None:
        self._kept.sort(key=_first, reverse=self._descending)
        del self._kept[self.n:]

    def rows(self) -> list[tuple[int, bytes]]:
        """The first ``n`` rows considered, in order."""
        self._prune()
        return [row for _, row in self._kept]


def _first(entry: tuple[tuple, tuple[int, bytes]]) -> tuple:
    return entry[0]


async def _top_n_pages(client: AsyncClient, p: SelectPlan) -> AsyncIterator[list[Row]]:
    """A top-N: every matching row read (no limit: the last one scanned may come first), only the
    first LIMIT + OFFSET kept; then OFFSET skipped and the rest projected, in one page."""
    skip = p.offset or 0
    top = TopN(p.limit + skip, _getter(p.sort_field), p.descending)
    async for page in _scanned_pages(client, p, None):
        top.add(page)
    project = _projector(p.fields, p.timestamps)
    rows = top.rows()[skip:]
    if rows:
        yield [project(row) for row in rows]


async def _scanned_pages(client: AsyncClient, p: SelectPlan, limit: int | None) -> AsyncIterator[list[Row]]:
    """The ``(key, value)`` rows of a plain SELECT in output order, at most ``limit`` of them."""
    if not p.scans:
        return
    remaining = limit
    ranges = list(reversed(p.ranges)) if p.reverse_scan else list(p.ranges)
    match: Callable[[int, bytes], bool] | None = None
    i = 0
    while i < len(ranges):
        lo, hi = ranges[i]
        if lo == hi:
            # A run of single keys, as from key IN (...): one round trip each, so fetch a window of
            # them concurrently (each holds at most one row, so the window's memory is bounded) and
            # yield them in order.
            j = i
            while j < len(ranges) and j - i < POINT_WINDOW and ranges[j][0] == ranges[j][1]:
                j += 1
            if match is None:
                match = compile_filter(p.filter)
            page = await _points(client, [k for k, _ in ranges[i:j]], match)
            i = j
            if remaining is not None:
                page = page[:remaining]
            if page:
                yield page
            if remaining is not None:
                remaining -= len(page)
                if remaining <= 0:
                    return
            continue
        i += 1
        async for page in client.scan_pages(lo, hi, limit=remaining, reverse=p.reverse_scan, filter=p.filter,
                                            page_keys=None if remaining is None else min(remaining, 10_000)):
            yield page
            if remaining is not None:
                remaining -= len(page)
                if remaining <= 0:
                    return


async def _points(client: AsyncClient, keys: list[int], match: Callable[[int, bytes], bool]) -> list[tuple[int, bytes]]:
    """The rows of ``keys`` that pass ``match``, in the order of ``keys``, read concurrently.

    A GET is the cheapest read of one key (no scan cursor); the filter is the shards' own
    compiled filter, run here on the one value instead of there.
    """
    tasks = [asyncio.ensure_future(client.get(k)) for k in keys]
    try:
        values = await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:  # one failed (or we were cancelled): do not leave the others running
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise
    return [(k, v) for k, v in zip(keys, values, strict=True) if v is not None and match(k, v)]


def _projector(fields: tuple[str | list, ...], timestamps: tuple[int, ...] = ()) -> Callable[[tuple[int, bytes]], Row]:
    """The output row of a ``(key, value)`` row: ``fields`` picked or computed, ``timestamps`` converted."""
    if fields == ("key", "value") and not timestamps:
        return lambda row: row
    if all(isinstance(f, str) for f in fields) and not timestamps:
        index = [0 if f == "key" else 1 for f in fields]
        return lambda row: tuple(row[i] for i in index)
    # every computed column in one compiled function, so a row's JSON is parsed once for all of them
    computed = [f[1] for f in fields if not isinstance(f, str)]
    calc = compile_exprs(computed, values=frozenset(range(len(computed)))) if computed else None
    slots, j = [], 2  # per column: where it is in (key, value, *computed)
    for f in fields:
        slots.append(0 if f == "key" else 1 if f == "value" else j)
        j += not isinstance(f, str)
    stamped = frozenset(timestamps)

    def project(row: tuple[int, bytes]) -> Row:
        have = (row[0], row[1], *calc(row[0], row[1])) if calc is not None else row
        return tuple(to_timestamp_value(have[k]) if i in stamped else have[k] for i, k in enumerate(slots))

    return project


def _getter(field: str | list) -> Callable[[tuple[int, bytes]], Any]:
    """What one field of a plan (``"key"``, ``"value"`` or ``["expr", x]``) gives for a row."""
    if field == "key":
        return _key_of
    if field == "value":
        return _value_of
    return _computed(compile_value(field[1]))  # any operand of the row, such as value->'temp' * 1.8 + 32


def _key_of(row: tuple[int, bytes]) -> Any:
    return row[0]


def _value_of(row: tuple[int, bytes]) -> Any:
    return row[1]


def _computed(fn: Callable[[int, bytes], Any]) -> Callable[[tuple[int, bytes]], Any]:
    return lambda row: fn(row[0], row[1])


async def _aggregate_pages(client: AsyncClient, p: SelectPlan) -> AsyncIterator[list[Row]]:
    aggs = Aggregates(p.aggregates, p.bucket_ns)
    fields = {"aggs": p.aggregates, "bucket_ns": p.bucket_ns, "filter": p.filter}
    ranges = list(p.ranges) if p.scans else []  # no scans: LIMIT 0, or no key can match
    total = aggs.new()
    if ranges:
        # AGG_PARALLEL_SHARDS requests in flight in all: one wide range gets them all, many ranges
        # (key IN (...)) one each
        width = max(1, AGG_PARALLEL_SHARDS // len(ranges))
        sem = asyncio.Semaphore(max(1, AGG_PARALLEL_SHARDS // width))

        async def one(lo: int, hi: int) -> list:
            async with sem:
                return await _aggregate_range(client, aggs, fields, lo, hi, width)

        for partials in await _all(one(lo, hi) for lo, hi in ranges):
            total = aggs.merge(total, partials)
    # [:n] drops the entries of JSON fields grouped by but not selected (they come last)
    n = len(p.columns)
    if p.sort_column is None:
        rows = [tuple(r[:n]) for r in aggs.finalize(total, p.descending)]
    else:  # ORDER BY an aggregate or a later field: sort before the unselected entries go
        rows = [tuple(r[:n]) for r in sort_rows(aggs.finalize(total), p.sort_column, p.descending)]
    if p.offset:
        rows = rows[p.offset:]
    if p.limit is not None:
        rows = rows[: p.limit]
    if p.timestamps:
        rows = [tuple(to_timestamp_value(x) if i in p.timestamps else x for i, x in enumerate(r)) for r in rows]
    yield rows


async def _aggregate_range(client: AsyncClient, aggs: Aggregates, fields: dict[str, Any], lo: int, hi: int,
                           parallel: int) -> list:
    """The merged partials of the rows in ``[lo, hi]``.

    Partials are kept per part until the part is done, because the client may say a part
    starts over (its shard lost the snapshot it was read on, and counting on from a fresh
    one could count a row twice): its partials so far are then dropped.
    """
    total = aggs.new()
    parts: dict[int, list] = {}
    steps = client.range_steps("aggregate", lo, hi, fields, parallel=parallel, restart_on_expiry=True)
    try:
        async for step in steps:
            if step.kind == "reply":
                # merge() also checks the partials' shape: they come from the network
                parts[step.part] = aggs.merge(parts.get(step.part, aggs.new()), step.reply["partials"])
            elif step.kind == "discard":
                parts.pop(step.part, None)
            elif step.kind == "done":
                total = aggs.merge(total, parts.pop(step.part, aggs.new()))
    finally:
        await steps.aclose()
    return total


async def _all(coros: Iterable[Awaitable[T]]) -> list[T]:
    """Run ``coros`` concurrently and return their results; if one fails, stop the others first."""
    tasks = [asyncio.ensure_future(c) for c in coros]
    try:
        return await asyncio.gather(*tasks)
    except BaseException:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        raise


async def _show(client: AsyncClient, what: str) -> QueryResult:
    smap = await client.shard_map()
    leaders = client.leader_hints()
    nodes = client.node_addresses()
    statuses = await asyncio.gather(*(_status(client, addr) for addr in nodes.values()))
    if what == "shards":
        # node id -> group id -> that node's status entry for the group (unreachable nodes: none)
        reports = {nid: {g["id"]: g for g in st.get("groups", [])}
                   for nid, st in zip(nodes, statuses, strict=True) if st is not None}
        # A node's own claim to lead beats the client's hint, which may be old (a new shard's first
        # election, a leadership transfer).  The figures come from the leader, whose are the
        # freshest, else from any replica.
        claimed = {gid: nid for nid, groups in reports.items() for gid, g in groups.items()
                   if g.get("state") == "leader"}
        rows = []
        for s in smap.shards:
            leader = claimed.get(s.id) or leaders.get(s.id)
            load = _shard_load(reports, s.id, [leader, *s.replicas])
            rows.append((s.id, s.start, s.end - 1, ",".join(s.replicas), leader, s.generation,
                         *load, None if s.stripe is None else f"{s.stripe[0]}/{s.stripe[1]}"))
        return QueryResult(("id", "first_key", "last_key", "replicas", "leader", "generation", "bytes", "keys",
                            "writes_per_s", "stripe"), "SHOW", _one_page(rows))
    if what == "nodes":
        rows = [(nid, addr, st is not None, None if st is None else st["pid"],
                 None if st is None else sum(g["state"] == "leader" for g in st["groups"]))
                for (nid, addr), st in zip(nodes.items(), statuses, strict=True)]
        return QueryResult(("id", "address", "up", "pid", "leading"), "SHOW", _one_page(rows))
    rows = []
    for nid, st in zip(nodes, statuses, strict=True):
        if st is None:  # did not answer: listed as such, not left out
            rows.append((nid, None, "unreachable", None, None, None, None, None))
            continue
        for g in st["groups"]:
            rows.append((nid, g["id"], g["state"], g["leader"], g["term"], g["commit"], g["applied"],
                         g["log_entries"]))
    return QueryResult(("node", "group", "state", "leader", "term", "commit", "applied", "log_entries"),
                       "SHOW", _one_page(rows))


def _shard_load(reports: dict[str, dict[str, Any]], shard_id: str,
                nodes: list[str | None]) -> tuple[int | None, int | None, float | None]:
    """``bytes``, ``keys`` and ``writes_per_s`` of a shard as the first of ``nodes`` reports them.

    The leader's replica comes first; any replica's figures are close.  A node that predates these
    fields, or none answering, gives NULLs rather than a guess.
    """
    for nid in nodes:
        entry = reports.get(nid or "", {}).get(shard_id)
        if entry is not None and any(k in entry for k in ("bytes", "keys", "writes_per_s")):
            rate = entry.get("writes_per_s")
            return (_count(entry.get("bytes")), _count(entry.get("keys")),
                    float(rate) if type(rate) in (int, float) else None)
    return None, None, None


def _count(value: Any) -> int | None:
    return value if type(value) is int else None  # bool is an int subclass, and no count


async def _split(client: AsyncClient, p: SplitPlan) -> QueryResult:
    """SPLIT SHARD: the two shards the split left, each with the map's new epoch."""
    reply = await client.split_shard(p.shard_id, p.at)
    epoch = int(reply["epoch"])
    rows = [(str(d["id"]), int(d["start"]), (KEY_SPACE_END if d["end"] is None else int(d["end"])) - 1,
             ",".join(d["replicas"]), int(d.get("generation", 1)), epoch) for d in reply["shards"]]
    return QueryResult(("id", "first_key", "last_key", "replicas", "generation", "epoch"), "SPLIT",
                       _one_page(rows))


async def _status(client: AsyncClient, address: str) -> dict[str, Any] | None:
    try:
        return await client.node_status(address)
    except Unavailable:
        return None


__all__ = ["QueryResult", "execute", "KEY_SPACE_END"]

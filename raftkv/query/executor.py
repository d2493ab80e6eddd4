"""Running plans against the cluster (the only part of ``query/`` that does I/O).

The planner already decided everything: which key ranges, which shards, what
to push down.  This module only walks the plan with an :class:`AsyncClient`:

* plain SELECTs stream pages from :meth:`AsyncClient.scan_pages`, which reads
  the shards of each range in key order with parallel prefetch, the filter
  evaluated on the shards and LIMIT shrinking the pages it asks for; runs of
  single-key ranges (``key IN (...)``) are read as concurrent GETs instead;
* aggregates ask each shard for partials (``aggregate`` op, shards in
  parallel, each in bounded steps on one snapshot) and merge them here;
* INSERT is ``put_many`` (atomic per shard), DELETE is ``delete_range`` with
  the pushed-down filter, GET is ``get``; EXPLAIN and SHOW answer from the plan
  and cluster state.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from ..errors import QueryError, Unavailable
from ..keys import KEY_SPACE_END
from . import ast
from .aggregate import Aggregates
from .parser import parse
from .planner import DeletePlan, ExplainPlan, GetPlan, InsertPlan, SelectPlan, ShowPlan, explain, plan
from .predicate import compile_filter

if TYPE_CHECKING:
    from ..client.aio import AsyncClient

Row = tuple[Any, ...]
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
        return QueryResult(p.columns, "SELECT", lambda: _select_pages(client, p))
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
    raise QueryError(f"cannot execute {type(p).__name__}")


async def _select_pages(client: AsyncClient, p: SelectPlan) -> AsyncIterator[list[Row]]:
    if not p.scans:
        return
    remaining = p.limit
    ranges = list(reversed(p.ranges)) if p.reverse_scan else list(p.ranges)
    project = _projector(p.fields)
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
                yield [project(row) for row in page]
            if remaining is not None:
                remaining -= len(page)
                if remaining <= 0:
                    return
            continue
        i += 1
        async for page in client.scan_pages(lo, hi, limit=remaining, reverse=p.reverse_scan, filter=p.filter,
                                            page_keys=None if remaining is None else min(remaining, 10_000)):
            yield [project(row) for row in page]
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


def _projector(fields: tuple[str, ...]) -> Callable[[tuple[int, bytes]], Row]:
    if fields == ("key", "value"):
        return lambda row: row
    index = [0 if f == "key" else 1 for f in fields]
    return lambda row: tuple(row[i] for i in index)


async def _aggregate_pages(client: AsyncClient, p: SelectPlan) -> AsyncIterator[list[Row]]:
    aggs = Aggregates(p.aggregates, p.bucket_ns)
    total = aggs.new()
    sem = asyncio.Semaphore(AGG_PARALLEL_SHARDS)

    async def one(shard_id: str, lo: int, hi: int) -> list:
        async with sem:
            return await client.aggregate_shard(shard_id, lo, hi, p.aggregates, p.bucket_ns, p.filter)

    jobs = [one(scan.shard_id, lo, hi) for scan in p.scans for lo, hi in scan.ranges]
    for partials in await asyncio.gather(*jobs):
        total = aggs.merge(total, partials)
    rows = [tuple(r) for r in aggs.finalize(total, p.descending)]
    if p.limit is not None:
        rows = rows[: p.limit]
    yield rows


async def _show(client: AsyncClient, what: str) -> QueryResult:
    smap = await client.shard_map()
    leaders = client.leader_hints()
    nodes = client.node_addresses()
    if what == "shards":
        rows = [(s.id, s.start, s.end - 1, ",".join(s.replicas), leaders.get(s.id)) for s in smap.shards]
        return QueryResult(("id", "first_key", "last_key", "replicas", "leader"), "SHOW", _one_page(rows))
    statuses = await asyncio.gather(*(_status(client, addr) for addr in nodes.values()))
    if what == "nodes":
        rows = [(nid, addr, st is not None, None if st is None else st["pid"],
                 None if st is None else sum(g["state"] == "leader" for g in st["groups"]))
                for (nid, addr), st in zip(nodes.items(), statuses, strict=True)]
        return QueryResult(("id", "address", "up", "pid", "leading"), "SHOW", _one_page(rows))
    rows = []
    for nid, st in zip(nodes, statuses, strict=True):
        for g in [] if st is None else st["groups"]:
            rows.append((nid, g["id"], g["state"], g["leader"], g["term"], g["commit"], g["applied"],
                         g["log_entries"]))
    return QueryResult(("node", "group", "state", "leader", "term", "commit", "applied", "log_entries"),
                       "SHOW", _one_page(rows))


async def _status(client: AsyncClient, address: str) -> dict[str, Any] | None:
    try:
        return await client.node_status(address)
    except Unavailable:
        return None


__all__ = ["QueryResult", "execute", "KEY_SPACE_END"]

"""The blocking, thread-safe client: an :class:`AsyncClient` on a private event-loop thread.

Every method hands a coroutine to that loop and waits for it, so any number of
threads may share one :class:`Client`; their requests are pipelined over the
same connections.  ``scan`` moves a page (not a row) per thread hop.
"""

from __future__ import annotations

import asyncio
import atexit
import functools
import itertools
import threading
import weakref
from collections.abc import Coroutine, Iterable, Iterator, Mapping, Sequence
from typing import Any, TypeVar

from ..errors import InvalidArgument
from ..keys import KEY_SPACE_END, KeyLike
from ..routing.shardmap import ShardMap
from .aio import (
    DEFAULT_ATTEMPT_TIMEOUT,
    DEFAULT_CONSISTENCY,
    DEFAULT_PAGE_BYTES,
    DEFAULT_PAGE_KEYS,
    DEFAULT_TIMEOUT,
    AsyncClient,
    AsyncQueryResult,
    Row,
)
from .params import Param

T = TypeVar("T")


class Client:
    """raftkv client for ordinary (threaded) code; same arguments and methods as :class:`AsyncClient`.

    Keys are ints in [0, 2**64-1] or timezone-aware ``datetime`` objects (their nanoseconds
    since the Unix epoch, the unit of the query language's ``TIMESTAMP`` and ``now()``);
    a naive ``datetime`` is refused rather than guessed to be local time or UTC.

    Arguments (all but ``seeds`` keyword-only):

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
    * ``spread_scans=True``: read a scan of many pages of one shard from all its replicas at once.
    * ``token=None``: the cluster's client token (nodes started with ``--client-token-file``).
    * ``tls=False``: speak TLS to the nodes; ``tls_ca=None``: the CA file that signed their
      certificates (implies ``tls=True``).  A wrong token or a failed TLS handshake raises
      :class:`~raftkv.errors.Unauthenticated` at once.

    Failures follow :class:`AsyncClient`'s rule: before a cluster is known, seeds that all refuse
    the connection or do not resolve fail the first call at once (``cannot reach any seed:
    127.0.0.1:1 refused the connection``); once it is known, unreachable nodes are retried
    around until the deadline, and the error then names the shards left without a leader and
    the nodes that did not answer.

    >>> with Client("127.0.0.1:7401") as db:          # doctest: +SKIP
    ...     db.put(42, b"reading"); db.get(42)
    b'reading'
    """

    def __init__(self, seeds: str | Iterable[str], *, timeout: float = DEFAULT_TIMEOUT,
                 attempt_timeout: float = DEFAULT_ATTEMPT_TIMEOUT, consistency: str = DEFAULT_CONSISTENCY,
                 page_keys: int = DEFAULT_PAGE_KEYS, page_bytes: int = DEFAULT_PAGE_BYTES,
                 spread_scans: bool = True,
                 token: str | None = None, tls: bool = False, tls_ca: str | None = None) -> None:
        """Check the options and start the client's thread; nothing is contacted before the first call."""
        self._aio = AsyncClient(seeds, timeout=timeout, attempt_timeout=attempt_timeout, consistency=consistency,
                                page_keys=page_keys, page_bytes=page_bytes, spread_scans=spread_scans, token=token,
                                tls=tls, tls_ca=tls_ca)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="raftkv-client", daemon=True)
        self._thread.start()
        self._closed = False
        # A client left open (or a scan left half-read) must not hang the interpreter's exit:
        # close it while its loop thread still runs, before generators are finalised.
        self._at_exit = functools.partial(_close_at_exit, weakref.ref(self))
        atexit.register(self._at_exit)

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if self._closed or not self._thread.is_alive():
            coro.close()
            raise RuntimeError("client is closed")
        fut = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return fut.result(timeout)
        except BaseException:
            # Ctrl-C or a timeout here must stop the work too, not leave it running on the
            # client's thread (a cancelled aggregate would go on fanning out to every shard)
            fut.cancel()
            raise

    def __enter__(self) -> Client:
        self.connect()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def connect(self) -> None:
        """Fetch the shard map now (otherwise the first call does)."""
        self._run(self._aio.connect())

    def close(self) -> None:
        """Close connections and stop the client's thread."""
        if self._closed:
            return
        atexit.unregister(self._at_exit)
        try:
            self._run(self._aio.close(), timeout=10)
            # whatever is still pending (a half-read scan, a connection's reader) ends here, so
            # that closing the loop destroys no pending task
            self._run(_cancel_the_rest(), timeout=10)
            self._run(self._loop.shutdown_asyncgens(), timeout=10)
            # finalising a half-read scan's generator may have started work again (a connection
            # opening, with its read loop): a second sweep ends that too
            self._run(_cancel_the_rest(), timeout=10)
        except (RuntimeError, TimeoutError):
            pass
        finally:
            self._closed = True
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=5)
            if not self._thread.is_alive():
                self._loop.close()

    @property
    def timeout(self) -> float:
        """Per-operation deadline in seconds."""
        return self._aio.timeout

    def put(self, key: KeyLike, value: bytes | str) -> None:
        """Store ``value`` under ``key``; returns once committed on a majority."""
        self._run(self._aio.put(key, value))

    def get(self, key: KeyLike) -> bytes | None:
        """The value under ``key``, or None."""
        return self._run(self._aio.get(key))

    def delete(self, key: KeyLike) -> bool:
        """Delete ``key``; True if it existed."""
        return self._run(self._aio.delete(key))

    def put_many(self, pairs: Iterable[tuple[KeyLike, bytes | str]] | Mapping[KeyLike, bytes | str]) -> int:
        """Store many pairs -- ``(key, value)`` tuples, or a dict of key -> value -- batched per
        shard and sent in parallel; returns the count."""
        return self._run(self._aio.put_many(dict(pairs) if isinstance(pairs, Mapping) else list(pairs)))

    def range_query(self, start: KeyLike, end: KeyLike) -> list[Row]:
        """Every ``(key, value)`` with ``start <= key <= end``, ascending."""
        return [row for page in self.scan_pages(start, end) for row in page]

    def scan(self, start: KeyLike = 0, end: KeyLike = KEY_SPACE_END - 1, *, limit: int | None = None,
             reverse: bool = False, filter: Any = None) -> Iterator[Row]:
        """Stream rows in key order; pages are bounded by keys and bytes."""
        for page in self.scan_pages(start, end, limit=limit, reverse=reverse, filter=filter):
            yield from page

    def scan_pages(self, start: KeyLike = 0, end: KeyLike = KEY_SPACE_END - 1, *, limit: int | None = None,
                   reverse: bool = False, filter: Any = None) -> Iterator[list[Row]]:
        """Like :meth:`scan`, a page at a time."""
        return self._iterate(self._aio.scan_pages(start, end, limit=limit, reverse=reverse, filter=filter))

    def _iterate(self, agen: Any) -> Iterator[Any]:
        """Drive an async generator from this thread, one item per hop; closes it if abandoned."""
        try:
            while True:
                try:
                    yield self._run(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            if not self._closed:
                try:
                    self._run(agen.aclose(), timeout=10)
                except (RuntimeError, TimeoutError):
                    pass  # the client closed meanwhile, or the generator is still busy: nothing to free

    def query(self, statement: Any, params: Sequence[Param] | None = None, *,
              now_ns: int | None = None) -> QueryResult:
        """Run one query-language statement (text or parsed); iterate the result for its rows.

        ``params`` fill the statement's ``?`` placeholders in order, bound as literals on this
        side (see :mod:`raftkv.client.params`): ``None``, ``bool``, ``int``, ``float``, ``str``,
        ``bytes``, timezone-aware ``datetime`` (nanoseconds since the epoch) and ``timedelta``
        (nanoseconds).  ``now_ns`` (keyword-only) fixes what ``now()`` means, in nanoseconds
        since the Unix epoch; by default it is this machine's clock.

        >>> for key, value in db.query("SELECT * FROM kv WHERE value->'temp' > ? LIMIT 10", [30]):
        ...     print(key, value)                                    # doctest: +SKIP
        """
        return QueryResult(self, self._run(self._aio.query(statement, params, now_ns=now_ns)))

    def delete_range(self, start: KeyLike, end: KeyLike, *, filter: Any = None) -> int:
        """Delete every key in ``[start, end]``; returns how many went."""
        return self._run(self._aio.delete_range(start, end, filter=filter))

    def shard_map(self) -> ShardMap:
        """The cached shard map."""
        return self._run(self._aio.shard_map())

    def node_status(self, address: str) -> dict[str, Any]:
        """One node's view of its replicas."""
        return self._run(self._aio.node_status(address))

    def split_shard(self, shard_id: str, at: KeyLike | None = None) -> dict[str, Any]:
        """Split range shard ``shard_id`` at key ``at`` (None: near its median); returns
        ``{"epoch", "shards": [left, right]}`` (see :meth:`AsyncClient.split_shard`)."""
        return self._run(self._aio.split_shard(shard_id, at))


def _close_at_exit(ref: weakref.ReferenceType[Client]) -> None:
    client = ref()
    if client is not None:
        client.close()


async def _cancel_the_rest() -> None:
    current = asyncio.current_task()
    rest = [t for t in asyncio.all_tasks() if t is not current]
    for task in rest:
        task.cancel()
    await asyncio.gather(*rest, return_exceptions=True)


class QueryResult:
    """A statement's result for threaded code: ``columns``, ``status``, rows streamed by iteration.

    The rows can be read once -- by iterating the result or through :meth:`pages` --
    because they stream from the shards as they are read; starting a second read, or a read
    after :meth:`close`, raises :class:`~raftkv.errors.InvalidArgument` (run the query again
    instead).  :attr:`rowcount` is the number of rows the read yielded, known once it has run
    to the end (None until then); the ``repr`` shows the rows fetched so far.
    """

    def __init__(self, client: Client, result: AsyncQueryResult) -> None:
        self._client = client
        self._result = result
        self.columns: tuple[str, ...] = result.columns
        self.status: str = result.status
        self._pages: Iterator[list[tuple[Any, ...]]] | None = None

    @property
    def rowcount(self) -> int | None:
        """Rows yielded, once every row was read; None before that (and if closed early)."""
        return self._result.rowcount

    def __repr__(self) -> str:
        return self._result._repr_as(type(self).__name__)

    def pages(self) -> Iterator[list[tuple[Any, ...]]]:
        """Rows a page (list of tuples) at a time; a result is read once."""
        if self._pages is not None:
            raise InvalidArgument(f"this {self.status} result was already read: its rows stream from the "
                                  "cluster and can be read once; run the query again to read them again")
        self._pages = self._client._iterate(self._result.pages())
        return self._pages

    def __iter__(self) -> Iterator[tuple[Any, ...]]:
        # not a generator function, so a second read fails at iter(), not at the first next()
        return itertools.chain.from_iterable(self.pages())

    def close(self) -> None:
        """Stop fetching rows (idempotent)."""
        if self._pages is not None:
            self._pages.close()
        elif not self._client._closed:
            self._client._run(self._result.close())

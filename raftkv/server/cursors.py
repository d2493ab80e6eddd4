"""Scan cursors: the LevelDB snapshots that paged reads continue, and the page read ahead for each.

A scan's first page opens a snapshot of the shard's store; when more pages follow, the node keeps
it under a cursor, and the client's next request names the cursor and where to resume.  Between
the two the client receives and decodes the page, and the node would sit idle, then read the next
page while the client waits: the two halves of every page ran one after the other.  So once a
page is answered the node reads the next one ahead (:meth:`Cursors.read_ahead`), from the same
snapshot and with the same request, and the next request takes it ready-made if it asks exactly
for it.  Pages read ahead are bounded by bytes across all cursors (:data:`READ_AHEAD_BYTES`);
a cursor holds at most one.  Cursors themselves are bounded in number (the oldest is dropped, its
scan restarts its page) and in idle time.

A scan spread over a shard's replicas reads its chunks at the index of the leader's first snapshot;
a replica that cannot show that state for a chunk sends the client back to the leader, which reads
the chunk from that very snapshot: the scan's first page *shares* it (:meth:`Cursors.share`) and a
chunk *forks* a cursor from it (:meth:`Cursors.fork`).  Shared snapshots have a bound of their own.
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import CursorExpired, StorageError
from ..storage.leveldb import StoreView

MAX_CURSORS = 256
MAX_SHARED = 64  # snapshots shared by spread scans (each pins old versions in LevelDB until it goes)
CURSOR_IDLE_SECONDS = 60.0
READ_AHEAD_BYTES = 64 << 20  # pages read ahead, all cursors together

Page = tuple[bytes, list[bytes], "int | None"]  # raw keys blob, values, where to resume (StoreView.scan_raw)


@dataclass
class _Cursor:
    group_id: str
    view: StoreView
    used: float
    # the page read ahead: the request it answers (what a fresh read would be given) and the page
    ahead: tuple[tuple[Any, ...], Page] | None = None
    ahead_bytes: int = 0


class Cursors:
    """The cursors of one node (used from its event loop thread only)."""

    def __init__(self, node_id: str, max_cursors: int = MAX_CURSORS, read_ahead_bytes: int = READ_AHEAD_BYTES) -> None:
        self._node_id = node_id
        self._max = max_cursors
        self._budget = read_ahead_bytes
        self._open: collections.OrderedDict[int, _Cursor] = collections.OrderedDict()
        self._shared: collections.OrderedDict[int, _Cursor] = collections.OrderedDict()
        self._ids = itertools.count(1)
        self.ahead_bytes = 0  # held by pages read ahead, all cursors
        # pages read ahead, by what became of them: taken by the request they answer, or not
        self.ahead_pages = {"used": 0, "unused": 0}

    def __len__(self) -> int:
        return len(self._open)

    @property
    def shared(self) -> int:
        """Snapshots held for spread scans."""
        return len(self._shared)

    def _mine(self, handle: Any) -> int | None:
        """The id in ``handle`` (a cursor or a shared snapshot's) if this node issued it."""
        if isinstance(handle, list) and len(handle) == 2 and handle[0] == self._node_id and type(handle[1]) is int:
            return handle[1]
        return None

    def keep(self, group_id: str, view: StoreView, now: float) -> list[Any]:
        """Keep ``view`` for the next page of a read of ``group_id``; returns the cursor to hand out."""
        cid = next(self._ids)
        self._open[cid] = _Cursor(group_id, view, now)
        while len(self._open) > self._max:  # bounded: the oldest scan must restart its page
            self._close(self._open.popitem(last=False)[1])
        return [self._node_id, cid]

    def share(self, group_id: str, view: StoreView, now: float) -> list[Any] | None:
        """Keep a hold on ``view`` for the chunks of a spread scan; returns the handle to hand out
        (None if the view was just closed under us: an installed snapshot replaced the state)."""
        try:
            held = view.share()
        except StorageError:
            return None
        cid = next(self._ids)
        self._shared[cid] = _Cursor(group_id, held, now)
        while len(self._shared) > MAX_SHARED:
            self._close(self._shared.popitem(last=False)[1])
        return [self._node_id, cid]

    def fork(self, handle: Any, group_id: str, now: float) -> StoreView:
        """A new hold on the view ``handle`` shares (close it when done).  Raises
        :class:`CursorExpired` for a handle that is not (or no longer) ours."""
        cid = self._mine(handle)
        entry = None if cid is None else self._shared.get(cid)
        if entry is not None and entry.group_id == group_id:
            entry.used = now
            self._shared.move_to_end(cid)
            try:
                return entry.view.share()
            except StorageError:
                pass  # closed under us (the state was replaced): as good as expired
        raise CursorExpired("the scan's snapshot expired; read on from 'resume' without it")

    def release(self, handle: Any, group_id: str) -> bool:
        """Let go of the shared snapshot ``handle`` (its scan is done); False if it was not held."""
        cid = self._mine(handle)
        entry = None if cid is None else self._shared.get(cid)
        if entry is None or entry.group_id != group_id:
            return False
        del self._shared[cid]
        self._close(entry)
        return True

    def take(self, cursor: Any, group_id: str, request: tuple[Any, ...] | None = None) -> tuple[StoreView, Page | None]:
        """The view ``cursor`` holds, and the page read ahead for it if that page answers ``request``
        exactly (else None: read it).  The cursor is used up; :meth:`keep` makes the next one.
        Raises :class:`CursorExpired` for a cursor that is not (or no longer) ours."""
        cid = self._mine(cursor)
        entry = None if cid is None else self._open.pop(cid, None)
        if entry is None or entry.group_id != group_id or entry.view.closed:
            if entry is not None:
                self._close(entry)
            raise CursorExpired("scan cursor expired; continue from 'resume' without it")
        page = None
        if entry.ahead is not None and request is not None and entry.ahead[0] == request:
            page = entry.ahead[1]
        self._forget_ahead(entry, used=page is not None)
        return entry.view, page

    def read_ahead(self, cursor: list[Any], request: tuple[Any, ...], read: Callable[[StoreView], Page]) -> None:
        """Read the page ``request`` asks for from ``cursor``'s view now (``read``), if the cursor is
        still open and the budget has room; the next :meth:`take` of that request gets it."""
        entry = self._open.get(cursor[1])
        if entry is None or entry.ahead is not None or entry.view.closed or self.ahead_bytes >= self._budget:
            return
        try:
            page = read(entry.view)
        except Exception:  # noqa: BLE001 -- the request itself will read, and report what fails
            return
        entry.ahead = (request, page)
        entry.ahead_bytes = len(page[0]) + sum(map(len, page[1]))
        self.ahead_bytes += entry.ahead_bytes

    def expire(self, cutoff: float) -> None:
        """Close the cursors last used before ``cutoff``."""
        for table in (self._open, self._shared):
            for cid, entry in list(table.items()):
                if entry.used < cutoff:
                    del table[cid]
                    self._close(entry)

    def _forget_ahead(self, entry: _Cursor, used: bool = False) -> None:
        if entry.ahead is not None:
            self.ahead_pages["used" if used else "unused"] += 1
        self.ahead_bytes -= entry.ahead_bytes
        entry.ahead, entry.ahead_bytes = None, 0

    def _close(self, entry: _Cursor) -> None:
        self._forget_ahead(entry)
        entry.view.close()

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
"""

from __future__ import annotations

import collections
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import CursorExpired
from ..storage.leveldb import StoreView

MAX_CURSORS = 256
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
        self._ids = itertools.count(1)
        self.ahead_bytes = 0  # held by pages read ahead, all cursors
        # pages read ahead, by what became of them: taken by the request they answer, or not
        self.ahead_pages = {"used": 0, "unused": 0}

    def __len__(self) -> int:
        return len(self._open)

    def keep(self, group_id: str, view: StoreView, now: float) -> list[Any]:
        """Keep ``view`` for the next page of a read of ``group_id``; returns the cursor to hand out."""
        cid = next(self._ids)
        self._open[cid] = _Cursor(group_id, view, now)
        while len(self._open) > self._max:  # bounded: the oldest scan must restart its page
            self._close(self._open.popitem(last=False)[1])
        return [self._node_id, cid]

    def take(self, cursor: Any, group_id: str, request: tuple[Any, ...] | None = None) -> tuple[StoreView, Page | None]:
        """The view ``cursor`` holds, and the page read ahead for it if that page answers ``request``
        exactly (else None: read it).  The cursor is used up; :meth:`keep` makes the next one.
        Raises :class:`CursorExpired` for a cursor that is not (or no longer) ours."""
        entry = None
        if isinstance(cursor, list) and len(cursor) == 2 and cursor[0] == self._node_id and type(cursor[1]) is int:
            entry = self._open.pop(cursor[1], None)
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
        for cid, entry in list(self._open.items()):
            if entry.used < cutoff:
                del self._open[cid]
                self._close(entry)

    def _forget_ahead(self, entry: _Cursor, used: bool = False) -> None:
        if entry.ahead is not None:
            self.ahead_pages["used" if used else "unused"] += 1
        self.ahead_bytes -= entry.ahead_bytes
        entry.ahead, entry.ahead_bytes = None, 0

    def _close(self, entry: _Cursor) -> None:
        self._forget_ahead(entry)
        entry.view.close()

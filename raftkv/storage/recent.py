"""Which keys a replica's recent log entries wrote: can a state that moved on still stand for an older one?

A scan spread over a shard's replicas (``server/node.py``, ``op_scan``) reads each chunk of the
range at the Raft index ``A`` of the leader's snapshot.  A replica whose applied index is ``B >= A``
holds exactly the state at ``A`` within a key range when no entry in ``(A, B]`` wrote a key of it.
:class:`RecentWrites` remembers what the last entries wrote, bounded by keys and bytes, and answers
that question; when it no longer remembers as far back as ``A`` it says no (the reader falls back
to the leader's own snapshot).

Pure bookkeeping, no I/O.  The store records an entry as it applies it (Raft thread) and asks from
the event loop, both under the store's lock.  Recording costs a tuple per entry: an entry's keys are
kept by reference and their bounds computed only when a question needs them, because a bulk load's
entries hold thousands of keys and their writer must not pay per key for a question rarely asked.
"""

from __future__ import annotations

import collections
from collections.abc import Sequence
from typing import Any

# Per replica, and a node may host many: small.  Under a heavy load of writes into the same shard
# they cover a fraction of a second, and chunks asked later are read from the leader instead.
RECENT_KEYS = 8_192  # keys remembered per replica (puts and deletes together)
RECENT_BYTES = 1 << 20  # bytes of values the remembered entries hold alive


class _Entry:
    __slots__ = ("index", "puts", "deletes", "span", "keys", "size", "bounds")

    def __init__(self, index: int, puts: Sequence[Any], deletes: Sequence[int], span: tuple[int, int] | None,
                 size: int) -> None:
        self.index = index
        self.puts, self.deletes, self.span = puts, deletes, span
        self.keys = len(puts) + len(deletes)
        self.size = size
        self.bounds: tuple[int, int] | None = None  # (smallest, largest) key written, once asked

    def touches(self, lo: int, hi: int) -> bool:
        """Whether this entry wrote a key of half-open ``[lo, hi)``."""
        if self.span is not None and self.span[0] < hi and lo < self.span[1]:
            return True
        if not self.keys:
            return False
        if self.bounds is None:
            keys = [p[0] for p in self.puts]
            keys += self.deletes
            self.bounds = (min(keys), max(keys))
        if self.bounds[1] < lo or self.bounds[0] >= hi:
            return False
        # the bounds straddle the range: a key may still fall between its edges or not
        return any(lo <= p[0] < hi for p in self.puts) or any(lo <= k < hi for k in self.deletes)


class RecentWrites:
    """The data keys written by a replica's latest entries (those with index ``>= known_from``)."""

    def __init__(self, applied: int, max_keys: int = RECENT_KEYS, max_bytes: int = RECENT_BYTES) -> None:
        self._entries: collections.deque[_Entry] = collections.deque()
        self._max_keys, self._max_bytes = max_keys, max_bytes
        self._keys = self._bytes = 0
        # every entry from this index on that wrote data is remembered (nothing before a restart is)
        self.known_from = applied + 1

    def record(self, index: int, puts: Sequence[Any] = (), deletes: Sequence[int] = (),
               span: tuple[int, int] | None = None, size: int = 0) -> None:
        """Entry ``index`` (the next applied) put ``puts`` (``[key, value]`` pairs of ``size`` bytes),
        deleted ``deletes`` and every key of half-open ``span``."""
        if not puts and not deletes and span is None:
            return  # wrote no data: nothing to remember, and the known range stays whole
        entry = _Entry(index, puts, deletes, span, size)
        self._entries.append(entry)
        self._keys += entry.keys
        self._bytes += size
        while self._entries and (self._keys > self._max_keys or self._bytes > self._max_bytes):
            old = self._entries.popleft()
            self._keys -= old.keys
            self._bytes -= old.size
            self.known_from = old.index + 1

    def reset(self, applied: int) -> None:
        """Forget everything: the state was replaced wholesale at index ``applied`` (a snapshot)."""
        self._entries.clear()
        self._keys = self._bytes = 0
        self.known_from = applied + 1

    def unchanged(self, since: int, upto: int, lo: int, hi: int) -> bool:
        """Whether no entry in ``(since, upto]`` wrote a key of ``[lo, hi)``, as far as is known:
        False also when entries that far back are forgotten."""
        if upto <= since:
            return upto == since
        if since + 1 < self.known_from:
            return False
        return not any(since < e.index <= upto and e.touches(lo, hi) for e in self._entries)

"""Writes in flight that are answered without an asyncio task of their own.

A put is checked on the event loop, handed to its Raft group, and left alone until its entry
commits, when the Raft thread's callback answers it.  A task and a ``wait_for`` timer per put cost
a node more CPU than the put's own checks when many small writes are in flight, so the deadlines of
all of them live here instead, and one sweep a few times a second times out the late ones.

Pure bookkeeping, no I/O: the node decides what an answer or a timeout means.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any

Finish = Callable[[Any, int | None], None]  # (result, pysyncobj error code), or (None, None) on timeout


class PendingWrites:
    """Writes waiting for their commit, each finished exactly once: by its commit or by its deadline."""

    def __init__(self) -> None:
        self._items: dict[int, tuple[float, Finish]] = {}
        self._tokens = itertools.count()

    def __len__(self) -> int:
        return len(self._items)

    def add(self, deadline: float, finish: Finish) -> int:
        """Track a write until ``deadline`` (monotonic seconds); the token :meth:`settle` takes."""
        token = next(self._tokens)
        self._items[token] = (deadline, finish)
        return token

    def settle(self, token: int, result: Any, err: int) -> None:
        """The write committed (or failed): finish it, unless its deadline already did."""
        item = self._items.pop(token, None)
        if item is not None:
            item[1](result, err)

    def expire(self, now: float) -> int:
        """Finish every write whose deadline has passed as timed out; how many there were."""
        late = [token for token, (deadline, _) in self._items.items() if deadline <= now]
        for token in late:
            self._items.pop(token)[1](None, None)
        return len(late)

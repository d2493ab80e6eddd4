"""Writer threads that remember exactly which writes were acknowledged, and the check that none was lost."""

from __future__ import annotations

import threading
from collections.abc import Callable

from raftkv import Client, errors
from raftkv.keys import MAX_KEY

Batch = Callable[[int, int], list[tuple[int, bytes]]]  # (lane, i) -> the pairs of that lane's i-th write


class Appenders:
    """``lanes`` threads sharing one client, each writing ``batch(lane, i)`` for i = 0, 1, ...

    A write that fails with ``Unavailable`` has an unknown outcome: the lane writes the same
    batch again, which makes it known.  ``acked`` holds every pair acknowledged so far.
    """

    def __init__(self, seeds: str, lanes: int, batch: Batch) -> None:
        self.db = Client(seeds, timeout=30.0)
        self.acked: dict[int, bytes] = {}
        self._batch = batch
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._run, args=(lane,)) for lane in range(lanes)]

    def _run(self, lane: int) -> None:
        i = 0
        while not self._stop.is_set():
            pairs = self._batch(lane, i)
            try:
                self.db.put_many(pairs)
            except errors.Unavailable:
                continue
            self.acked.update(pairs)
            i += 1

    def __enter__(self) -> Appenders:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=60)
        self.db.close()


def assert_none_lost(seeds: str, acked: dict[int, bytes]) -> dict[int, bytes]:
    """Every acknowledged pair is there, read by a fresh client; returns everything stored."""
    with Client(seeds, timeout=30.0) as fresh:
        got = dict(fresh.range_query(0, MAX_KEY))
    missing = [k for k, v in acked.items() if got.get(k) != v]
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {missing[:5]}"
    return got

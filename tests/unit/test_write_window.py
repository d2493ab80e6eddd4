"""The client's write window: a session never has more numbers in flight than a shard remembers.

A shard remembers at most ``sessions.MAX_REMEMBERED`` of a session's numbers above its mark and
forgets the oldest past that, so a retry of a forgotten write would be answered "outcome unknown".
The client keeps newest minus oldest awaited below that bound, waiting for its oldest write.
"""

from __future__ import annotations

import asyncio
import random

import pytest

from raftkv.client.aio import WRITE_WINDOW, _WriteSession
from raftkv.replication import sessions

pytestmark = pytest.mark.timeout(60)


async def _turns(n: int = 20) -> None:
    for _ in range(n):
        await asyncio.sleep(0)


def test_the_window_is_what_a_shard_remembers() -> None:
    assert WRITE_WINDOW == sessions.MAX_REMEMBERED


def test_a_write_past_the_window_waits_for_the_oldest() -> None:
    async def main() -> None:
        s = _WriteSession()
        oldest = s.begin()  # a slow write: its number stays open
        for _ in range(WRITE_WINDOW - 1):  # later writes come and go
            await s.room()
            s.end(s.begin())
        waiter = asyncio.ensure_future(s.room())
        await _turns()
        assert not waiter.done()  # its number would be WRITE_WINDOW past the oldest awaited
        s.end(oldest)
        await _turns()
        assert waiter.done()
        assert s.begin()[2] == s._next - 1  # the mark is the new number itself now

    asyncio.run(main())


def test_many_writers_never_outrun_the_window_and_all_finish() -> None:
    async def main() -> None:
        rng = random.Random(7)
        s = _WriteSession()
        widest = done = 0
        stuck = s.begin()  # a write that takes long: the others fill the window behind it

        async def writer(n: int) -> None:
            nonlocal widest, done
            for _ in range(n):
                await s.room()
                session = s.begin()
                widest = max(widest, session[1] - session[2])
                await _turns(rng.choice((0, 1, 2, 5)))
                s.end(session)
                done += 1

        writers = asyncio.gather(*(writer(300) for _ in range(20)))  # 6,000 writes in all
        await _turns(2000)
        assert done == WRITE_WINDOW - 1  # every writer waits behind the stuck write now
        s.end(stuck)
        await asyncio.wait_for(writers, 50)
        assert done == 6000 and widest == WRITE_WINDOW - 1  # the window was reached, never passed
        assert not s._open

    asyncio.run(main())

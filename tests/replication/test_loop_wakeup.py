"""The Raft loop's cross-thread wake-up must never be lost."""

import select

import pytest

from raftkv.replication.loop import RaftLoop

pytestmark = pytest.mark.timeout(30)


def _readable(sock) -> bool:
    return bool(select.select([sock], [], [], 0)[0])


def test_a_wake_arriving_while_the_loop_drains_is_not_lost():
    """Replays the interleaving: another thread calls wake() in the middle of the loop's drain.

    If the loop cleared its "wake pending" flag before draining, that wake's byte would be
    swallowed while the flag stayed set, and every later wake() would be suppressed: calls
    from other threads would then wait for the next periodic tick (seen as 10x slower reads).
    """
    loop = RaftLoop("n1", ("127.0.0.1", 0), {"n1": ("127.0.0.1", 0)})
    real = loop._wake_r
    try:

        class RacingSocket:
            fired = False

            def recv(self, n):
                data = real.recv(n)
                if not self.fired:
                    self.fired = True
                    loop.wake()  # "another thread", exactly between two reads of the drain
                return data

        loop.wake()
        loop._wake_r = RacingSocket()
        loop._on_wake(0)
        loop._wake_r = real
        assert not loop._wake_pending or _readable(real)  # a pending flag is always backed by a byte
        loop.wake()
        assert _readable(real)  # and the next wake-up really wakes the loop
    finally:
        loop._wake_r = real
        loop.hub.close()
        real.close()
        loop._wake_w.close()

"""The mover gives up on a learner whose catch-up stopped moving (server/members.py)."""

from __future__ import annotations

from types import SimpleNamespace

from raftkv.server.members import LEARNER_STALL_SECONDS, Members


def tracker() -> SimpleNamespace:
    return SimpleNamespace(_catch_up={})


def test_a_learner_that_catches_up_is_never_stalled_and_one_that_stops_is_after_the_timeout():
    m = tracker()
    t = 1000.0
    assert not Members.stalled(m, "s1", "n4", t)  # never waited for: nothing to judge
    for i in range(10):  # progress every 20 s: never stalled, however long it takes
        t += 20
        Members.progress(m, "s1", "n4", 100 * (i + 1), t)
        assert not Members.stalled(m, "s1", "n4", t + LEARNER_STALL_SECONDS - 1)
    # now it stops moving: the same match index again and again
    for _ in range(5):
        Members.progress(m, "s1", "n4", 1000, t + 10)
    assert not Members.stalled(m, "s1", "n4", t + LEARNER_STALL_SECONDS - 1)
    assert Members.stalled(m, "s1", "n4", t + LEARNER_STALL_SECONDS + 1)
    # judged once: the move is undone and a new learner starts with a clean slate
    assert not Members.stalled(m, "s1", "n4", t + 10 * LEARNER_STALL_SECONDS)

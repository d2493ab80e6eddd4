"""PendingWrites: each put waiting for its commit is finished exactly once, by its commit or its deadline."""

from raftkv.server.pending import PendingWrites


def test_a_commit_finishes_its_write_once_and_a_late_deadline_does_nothing():
    pending = PendingWrites()
    seen = []
    token = pending.add(10.0, lambda result, err: seen.append((result, err)))
    assert len(pending) == 1
    pending.settle(token, "r", 0)
    pending.settle(token, "again", 0)  # a second callback for the same entry is ignored
    assert pending.expire(100.0) == 0
    assert seen == [("r", 0)] and len(pending) == 0


def test_the_sweep_times_out_only_what_is_late_and_the_commit_after_it_is_ignored():
    pending = PendingWrites()
    seen = []
    early = pending.add(1.0, lambda result, err: seen.append(("early", result, err)))
    late = pending.add(5.0, lambda result, err: seen.append(("late", result, err)))
    assert pending.expire(0.5) == 0
    assert pending.expire(1.0) == 1  # due at 1.0: timed out (None, None)
    pending.settle(early, "committed after its timeout", 0)
    pending.settle(late, None, 3)
    assert seen == [("early", None, None), ("late", None, 3)]
    assert len(pending) == 0

"""Pre-vote and stale terms: a replica that could not hear its leader rejoins it.

Before pre-vote, a follower cut off from its leader alone campaigned with ever higher terms, all
refused; once the cut healed it ignored the leader (whose appends carry a lower term) and nobody
granted its votes while the leader held: it stayed out of the group for good.  These run three
in-process nodes (real Raft loops, real peer sockets on 127.0.0.1, real LevelDB) and cut links by
dropping one group's messages.
"""

import time

import pytest

from raftkv.replication import prevote

from ..helpers import wait_until
from .test_lease import _cut, _on_loop

pytestmark = pytest.mark.timeout(120)


def _heal(cluster, a, b, gid="g1"):
    """Undo :func:`_cut` between ``a`` and ``b``: the transports' own methods again."""
    for me in (a, b):
        t = cluster.loops[me].groups[gid].transport
        del t.send, t.deliver  # the instance attributes _cut set; the class's methods show again


def _state(cluster, nid, gid="g1"):
    g = cluster.loops[nid].groups[gid]
    return _on_loop(cluster, nid, lambda: (g.term, g.leader_id, g.is_leader))


def test_a_follower_cut_off_alone_keeps_its_term_and_follows_again_once_healed(cluster):
    cluster.put(1, b"v")
    leader, g = cluster.leader()
    cut_off = next(n for n in cluster.ids if n != leader)
    cg = cluster.loops[cut_off].groups["g1"]
    start_term = _on_loop(cluster, leader, lambda: g.term)
    _cut(cluster, leader, cut_off)
    # it asks, round after round (each round is a new Round object), and is never granted
    first = wait_until(lambda: _on_loop(cluster, cut_off, lambda: cg._prevote), 30, "a first pre-vote round")
    wait_until(lambda: _on_loop(cluster, cut_off, lambda: cg._prevote is not first and cg._prevote is not None),
               30, "a second pre-vote round")
    for i in range(10):
        cluster.put(100 + i, b"w")
    assert _state(cluster, cut_off)[0] == start_term
    _heal(cluster, leader, cut_off)
    # it hears the leader again, at the same term: no election, and it catches up
    wait_until(lambda: _state(cluster, cut_off)[1] == leader, 30, f"{cut_off} following {leader} again")
    cluster.put(200, b"after")
    cluster.wait_applied(_on_loop(cluster, leader, lambda: g.raftCommitIndex), nodes=[cut_off])
    assert _state(cluster, leader) == (start_term, leader, True)
    assert dict(cluster.rows(cut_off))[200] == b"after"


def test_a_follower_whose_term_ran_ahead_is_brought_back_by_one_election(cluster):
    """A term that climbed anyway (an older version's campaigns, say): the leader's appends carry
    a lower term, so the follower tells it (stale_term), the leader steps down, and one election
    at the higher term brings the whole group together again."""
    cluster.put(1, b"v")
    leader, g = cluster.leader()
    behind = next(n for n in cluster.ids if n != leader)
    bg = cluster.loops[behind].groups["g1"]
    start_term = _on_loop(cluster, leader, lambda: g.term)
    _on_loop(cluster, behind, lambda: bg._SyncObj__setCurrentTerm(start_term + 40, None))
    cluster.put(2, b"w")  # committed by the leader and the other follower meanwhile

    def together():
        states = [_state(cluster, n) for n in cluster.ids]
        leaders = {s[1] for s in states}
        return len(leaders) == 1 and None not in leaders and all(s[0] > start_term + 40 for s in states)

    wait_until(together, 60, "one leader for all three, above the term that ran ahead")
    cluster.put(3, b"x")
    new_leader, ng = cluster.leader()
    cluster.wait_applied(_on_loop(cluster, new_leader, lambda: ng.raftCommitIndex))
    assert {k for k, _ in cluster.rows(behind)} >= {1, 2, 3}


def test_a_follower_that_does_not_know_its_leader_as_a_member_still_follows_it(cluster):
    """Raft answers a leader whatever the replica's own configuration says: one that restarted
    behind the change that added the leader learns of it only from the leader's entries."""
    cluster.put(1, b"v")
    leader, g = cluster.leader()
    stale = next(n for n in cluster.ids if n != leader)
    sg = cluster.loops[stale].groups["g1"]
    _on_loop(cluster, stale, lambda: sg.transport.nodes.pop(leader))  # as if its config predated the leader
    for i in range(5):
        cluster.put(10 + i, b"w")
    cluster.wait_applied(_on_loop(cluster, leader, lambda: g.raftCommitIndex), nodes=[stale])
    assert {k for k, _ in cluster.rows(stale)} >= set(range(10, 15))
    assert _state(cluster, stale)[1] == leader


@pytest.mark.parametrize(("ours", "heard", "asked", "theirs", "granted"), [
    (5, False, 6, (5, 10), True),    # the next term, an equal log: yes
    (5, True, 6, (5, 10), False),    # heard from a live leader lately: no
    (5, False, 5, (5, 10), False),   # not a term above ours
    (5, False, 6, (4, 99), False),   # an older last term, however long the log
    (5, False, 6, (5, 9), False),    # same last term, shorter log
    (5, False, 6, (6, 1), True),     # a newer last term wins over length
])
def test_grants(ours, heard, asked, theirs, granted):
    assert prevote.grants(ours, (5, 10), heard, asked, theirs) is granted


def test_a_round_needs_a_majority_of_the_voters_and_ignores_others():
    r = prevote.Round(7, frozenset({"a", "b", "c", "d", "e"}), "a", 0.0)
    assert not r.won
    r.answer("b", 7)
    r.answer("x", 7)  # not a voter
    r.answer("c", 6)  # an answer to an older round
    assert not r.won
    r.answer("c", 7)
    assert r.won
    assert prevote.Round(3, frozenset({"a"}), "a", 0.0).won  # alone: nobody to ask


def _follower_hearing_its_leader(cluster):
    """A settled group: its leader and term, a follower that heard the leader lately (its group
    too), and the other follower."""
    cluster.put(1, b"v")
    leader, g = cluster.leader()
    f, other = [n for n in cluster.ids if n != leader]
    fg = cluster.loops[f].groups["g1"]
    term = _on_loop(cluster, leader, lambda: g.term)
    wait_until(lambda: _on_loop(cluster, f, fg.sticky), 10, f"{f} hearing {leader}")
    return leader, term, f, fg, other


def test_a_round_won_after_the_leader_was_heard_again_starts_no_election(cluster):
    """A follower's timer fires while its leader's heartbeats are late (a loaded machine), so it
    starts a pre-vote round; the heartbeats resume, and only then does a voter's yes arrive.  The
    round is stale: campaigning on it would unseat, within election_min of this follower's last
    answer, a leader whose lease counts that answer (the cut-off leader of test_lease served reads
    after another leader's write this way, once, in CI)."""
    leader, term, f, fg, other = _follower_hearing_its_leader(cluster)

    def stale_round_won() -> tuple[bool, float]:
        fg._prevote = prevote.Round(fg.term + 1, frozenset(fg.config.voters), f, 0.0)
        fg.on_election_message(other, prevote.YES, {"type": prevote.YES, "term": fg.term + 1})
        return fg._prevote is None, fg._SyncObj__raftElectionDeadline

    dropped, deadline = _on_loop(cluster, f, stale_round_won)
    assert dropped and deadline > 0.0
    time.sleep(0.3)  # less than election_min: no timer of a follower hearing its leader fires
    assert _state(cluster, f)[:2] == (term, leader) and _state(cluster, leader) == (term, leader, True)


def test_a_follower_hearing_its_leader_keeps_its_term_when_a_voter_answers_with_a_higher_one(cluster):
    """A voter whose term ran ahead answers a pre-vote ask with its term.  The asker catches up
    with it -- but not while it hears a live leader: that would drop its leader, and the
    stickiness the leader's lease counts on, and let it vote at once in the higher term."""
    leader, term, f, fg, other = _follower_hearing_its_leader(cluster)
    _on_loop(cluster, f, lambda: fg.on_election_message(other, prevote.NO, {"type": prevote.NO, "term": term + 5}))
    assert _state(cluster, f)[:2] == (term, leader)
    assert _on_loop(cluster, f, fg.sticky)

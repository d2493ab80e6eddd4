"""Pre-vote (Raft thesis §9.6): ask whether an election could be won before starting one.

pysyncobj campaigns as soon as its election timer fires, with a new term each time.  A replica
that cannot hear its leader while the others still can (a one-sided partition, a pause, a replica
that restarted behind a membership change) then campaigns alone, over and over: every other voter
refuses it (``RaftGroup.sticky``), and its term climbs far past the leader's.  Once the cut heals
it ignores the leader's messages, which carry a lower term, and nobody grants its votes: it stays
out of the group for good, and the group runs on one replica less without anyone noticing.

With pre-vote, a replica whose timer fires first asks the voters whether they *would* vote for
it in the next term, changing nothing anywhere.  Only once a majority says yes does it start a
real election.  A voter says yes if it has not heard from a live leader lately (the same rule as
a real vote), the term asked for is above its own, and the asker's log is at least as up to date
as its own.  So a cut-off replica keeps its term, and follows the leader again as soon as it
hears it.  A voter whose own term is not below the one asked for says so, with its term, so that
an asker left behind catches up instead of asking in vain.

Pure: :class:`Round` counts one round's answers, :func:`grants` is a voter's decision.  The I/O
(sending the asks and answers, holding pysyncobj's election timer) is in ``group.py``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

ASK = "pre_vote"  # message type: {"term": the asker's term + 1, "last_log_index", "last_log_term"}
YES = "pre_vote_ok"  # message type: {"term": the term of the ask it answers}
# message type: {"term": the voter's own term}, sent when that term is not below the one asked
# for: an asker whose term fell behind (its campaigns stopped while others' went on) catches up
# with it, or it could never ask for a term that anyone grants
NO = "pre_vote_no"


def grants(our_term: int, our_last: tuple[int, int], heard_leader_lately: bool,
           asked_term: int, their_last: tuple[int, int]) -> bool:
    """Whether a voter would vote for the asker in ``asked_term``.

    ``our_last`` and ``their_last`` are ``(last log term, last log index)``: the asker's log must
    be at least as up to date as ours (Raft's election restriction).  A voter that heard from a
    live leader lately would refuse the real vote, so it refuses here too.  An ask for a term not
    above ours could not become a real election that we would join.
    """
    return asked_term > our_term and not heard_leader_lately and their_last >= our_last


@dataclass
class Round:
    """One pre-vote round of a replica: the term it asks for, the voters, who said yes."""

    term: int
    voters: frozenset[str]  # every voter of the configuration, the asker included
    me: str
    started: float
    yes: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        if self.me in self.voters:
            self.yes.add(self.me)

    def answer(self, peer: str, term: int) -> None:
        """Count ``peer``'s yes to the ask for ``term`` (answers to older rounds are ignored)."""
        if term == self.term and peer in self.voters:
            self.yes.add(peer)

    @property
    def won(self) -> bool:
        """Whether a majority of the voters said yes: a real election may start."""
        return len(self.yes) * 2 > len(self.voters)

"""The durable journal against a list model, driven the way pysyncobj drives it.

A hypothesis state machine runs a real :class:`DurableJournal` in a real node LevelDB on a temp
directory: leader appends, follower AppendEntries (``deleteEntriesFrom`` + ``add`` ... +
``end_message``), snapshot installs (``clear`` + two entries), compaction, term/vote changes, the
commit hint, ``sync`` (staging), the node's flush, and crashes (reopen after dropping what was
staged but not flushed).  The model is plain lists kept by Raft's own rules, not by the journal's
mechanics:

* ``log``: what the journal must report now;
* ``on_file``: what a crashed process leaves (the log as of the last flush);
* ``synced_meta``: the term and vote as of the last flush -- nothing newer may survive a crash.

After every step the journal must equal the model and pass ``DurableJournal._check()``.
Derandomized: CI runs the same examples every time.
"""

from __future__ import annotations

import shutil
import tempfile
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from raftkv.replication.journal import DurableJournal, Entry
from raftkv.storage.leveldb import NodeStore

pytestmark = pytest.mark.timeout(300)

COMMANDS = st.binary(max_size=24)


class JournalMachine(RuleBasedStateMachine):
    """One journal, its Raft-level model, and crashes in between."""

    def __init__(self) -> None:
        super().__init__()
        self.dir: str | None = None
        self.j: DurableJournal | None = None
        self.kv: NodeStore | None = None

    @initialize()
    def open_journal(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="journal-model-")
        self.kv = NodeStore(f"{self.dir}/store")
        self.j = DurableJournal(self.kv.raft_log("g"))
        self.log: list[Entry] = []
        self.on_file: list[Entry] = []
        self.term, self.vote = 0, None
        self.synced_meta: tuple[int, Any] = (0, None)

    def teardown(self) -> None:
        if self.kv is not None:
            self.kv.close()
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --- helpers ------------------------------------------------------------------------------

    def _next_index(self) -> int:
        return self.log[-1][1] + 1 if self.log else 1

    def _last_term(self) -> int:
        return self.log[-1][2] if self.log else 0

    def _truncated_at(self, pos: int) -> None:
        """The journal cut its log at list position ``pos`` (durable at the next flush)."""
        del self.log[pos:]

    # --- what a leader does -------------------------------------------------------------------

    @rule(commands=st.lists(COMMANDS, min_size=1, max_size=5), bump=st.booleans())
    def leader_appends(self, commands: list[bytes], bump: bool) -> None:
        """Client writes appended at the end, in the current term (a new term after an election)."""
        if bump or self.term < self._last_term():  # won an election: a new term, its own vote
            self.term, self.vote = max(self.term, self._last_term()) + 1, "me"
            self.j.setCurrentTerm(self.term, self.vote)
        for c in commands:
            e = (c, self._next_index(), self.term)
            self.j.add(*e)
            self.log.append(e)

    # --- what a follower does -----------------------------------------------------------------

    @rule(data=st.data())
    def follower_receives_append_entries(self, data: st.DataObject) -> None:
        """AppendEntries(prev, entries): pysyncobj calls deleteEntriesFrom(prev+1), add() each entry,
        and our transport ends the message.  Raft: keep every matching entry, cut only from the
        first conflict, keep a matching suffix beyond the message."""
        pos = data.draw(st.integers(0, len(self.log)), label="first position")  # prev = pos - 1
        first_index = (self.log[0][1] if self.log else 1) + pos
        term = self.log[pos - 1][2] if pos else max(1, self._last_term())
        new: list[Entry] = []
        diverged = False
        for i in range(data.draw(st.integers(0, 6), label="entries")):
            p = pos + i
            if not diverged and p < len(self.log) and data.draw(st.booleans(), label="resend"):
                new.append(self.log[p])  # a duplicate or re-sent entry: must not cut anything
                term = self.log[p][2]
                continue
            if p < len(self.log):
                term = max(term, self.log[p][2]) + 1  # a conflict: the new leader's later term
            diverged = True
            new.append((data.draw(COMMANDS, label="command"), first_index + i, term))
        if pos < len(self.log):
            self.j.deleteEntriesFrom(pos)
        for e in new:
            self.j.add(*e)
        self.j.end_message()
        for i, e in enumerate(new):  # Raft's rule, stated independently of the journal's lazy mark
            p = pos + i
            if p < len(self.log) and self.log[p] == e:
                continue
            self._truncated_at(p)
            self.log.extend(new[i:])
            break

    @rule(data=st.data())
    def follower_installs_snapshot(self, data: st.DataObject) -> None:
        """pysyncobj clears the log and adds the snapshot's (prev, last) entries."""
        index = self._next_index() + data.draw(st.integers(0, 5), label="skip")
        term = max(1, self._last_term()) + data.draw(st.integers(0, 1), label="term bump")
        entries = [(b"prev", index, term), (b"last", index + 1, term)]
        self.j.clear()
        self._truncated_at(0)
        for e in entries:
            self.j.add(*e)
        self.log.extend(entries)

    # --- both ---------------------------------------------------------------------------------

    @rule(term_step=st.integers(0, 2), vote=st.sampled_from([None, "n1", "n2", "n3"]))
    def set_term(self, term_step: int, vote: Any) -> None:
        """Raft never lowers its term; a vote is recorded with the term."""
        self.term += term_step
        self.vote = vote
        self.j.setCurrentTerm(self.term, self.vote)

    @rule()
    def sync(self) -> None:
        """What the Raft loop does each iteration: stage, then one flush for the node."""
        self.j.sync()
        self.kv.flush_durable()
        self.on_file = list(self.log)
        self.synced_meta = (self.term, self.vote)

    @rule()
    def stage_only(self) -> None:
        """Staged but not flushed: still lost in a crash."""
        self.j.sync()

    @precondition(lambda self: len(self.log) >= 2)
    @rule(data=st.data())
    def compact(self, data: st.DataObject) -> None:
        """Compaction: the serializer's compact_to(prev), or pysyncobj's deleteEntriesTo(n)."""
        pos = data.draw(st.integers(0, len(self.log) - 1), label="new first position")
        if data.draw(st.booleans(), label="compact_to"):
            assert self.j.compact_to(self.log[pos])
            assert not self.j.compact_to((b"x" * 40, self.log[pos][1], self.log[pos][2]))  # not in the log
        else:
            self.j.deleteEntriesTo(pos)
        del self.log[:pos]  # durable at the next flush; a crash before it brings the prefix back

    @rule(data=st.data())
    def commit_hint(self, data: st.DataObject) -> None:
        """The commit index is saved lazily (and not durably) by the one-second timer."""
        if self.log:
            self.j.setRaftCommitIndex(data.draw(st.integers(self.log[0][1], self.log[-1][1]), label="commit"))
        if data.draw(st.booleans(), label="timer"):
            self.j.onOneSecondTimer()

    @rule()
    def crash_and_reopen(self) -> None:
        """kill -9: what was staged but not flushed is gone, and so is the journal's memory.
        Nothing unflushed may come back."""
        self.kv._pending.clear()  # no flush: the process just dies
        self.j = DurableJournal(self.kv.raft_log("g"))
        self.log = list(self.on_file)
        # term and vote never go back past what a flush made durable (and so what others heard)
        assert self.j.getCurrentTerm() >= self.synced_meta[0]
        self.term, self.vote = self.synced_meta

    # --- invariants ---------------------------------------------------------------------------

    @invariant()
    def matches_model(self) -> None:
        if self.j is None:
            return
        self.j._check()
        assert self.j[:] == self.log
        assert len(self.j) == len(self.log)
        assert (self.j.getCurrentTerm(), self.j.getVotedForNodeId()) == (self.term, self.vote)
        assert self.j.size_bytes == sum(len(e[0]) for e in self.log)
        # the commit hint never names an entry the log does not hold (after a crash included)
        commit = self.j.getRaftCommitIndex()
        assert commit == 1 if not self.log else commit <= self.log[-1][1]

    @invariant()
    def database_holds_what_a_crash_leaves(self) -> None:
        """A restart right now would load exactly ``on_file``."""
        if self.kv is None:
            return
        assert self.kv.raft_log("g").entries(flush=False) == self.on_file


JournalMachine.TestCase.settings = settings(derandomize=True, max_examples=150, stateful_step_count=40,
                                            deadline=None)
test_journal_against_model = JournalMachine.TestCase

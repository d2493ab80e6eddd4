"""A Raft log that is on disk before anyone hears of it.

pysyncobj's own ``FileJournal`` writes into an mmap and never flushes it, and
writes the term/vote file without fsync.  This journal keeps the same duck
interface (``add``, ``clear``, ``deleteEntriesFrom``, ``deleteEntriesTo``,
indexing, term/vote/commit accessors) and keeps the log in memory, but only
*stages* its changes: :meth:`DurableJournal.sync` hands them to the node's
database (:class:`~raftkv.storage.leveldb.RaftLogSlot`), and the Raft loop makes
everything every group staged durable in **one** synced write
(:meth:`~raftkv.storage.leveldb.NodeStore.flush_durable`) **before** it lets any
message out of the process.  So:

* a follower's ``success`` reply to AppendEntries leaves only after the
  entries it acknowledges are on disk;
* a vote, or any reply carrying a new term, leaves only after term and vote
  are on disk;
* the leader's own entries are on disk before the next tick counts the
  leader's copy toward a majority (the commit check runs at the start of the
  next tick, after the flush).

All the client writes appended in one loop iteration, to every group of the
node, share one fsync (group commit across groups).  Before, each group had a
log file of its own and each cost an fdatasync per iteration: profiled on six
nodes ingesting into a striped tail, 41 % of the Raft thread's time sat in
them.  A thousand groups also no longer hold a thousand open files.

**Truncate only on conflict.**  pysyncobj's follower deletes every entry after
``prevLogIdx`` whenever it holds more, even when they match the leader's -- so
a duplicate or re-sent AppendEntries can drop entries the follower already
acknowledged (and the leader already counted toward a commit).  Raft deletes
only from the first *conflicting* entry.  So :meth:`deleteEntriesFrom` is
lazy: it only marks a position, each following :meth:`add` that repeats the
entry already there just moves the mark on, and the first differing entry
truncates for real.  The transport calls :meth:`end_message` after each
delivered message, so a mark never outlives the message that set it.

A log file of the layout before (one per group: records of ``len(cmd) u32 |
crc32 u32 | index u64 | term u64 | cmd``, a torn tail cut at the first bad
record, term and vote in ``.meta``, the commit hint in ``.commit``) is moved
into the node's database when its group first opens.

Invariant: the stored log (the database, once flushed) plus the staged changes
equals ``_entries``; nothing staged is visible to anyone before the flush.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Any

from ..errors import StorageError
from ..protocol.codec import load, pack
from ..storage.leveldb import RaftLogSlot

_REC = struct.Struct(">IIQQ")
Entry = tuple[bytes, int, int]  # (command, index, term) -- pysyncobj's entry shape


def _crc(index: int, term: int, command: bytes) -> int:
    return zlib.crc32(command, zlib.crc32(struct.pack(">QQ", index, term)))


def encode_record(command: bytes, index: int, term: int) -> bytes:
    """One record of a legacy log file."""
    return _REC.pack(len(command), _crc(index, term, command), index, term) + command


def decode_records(data: bytes) -> tuple[list[Entry], list[int], int]:
    """A legacy log file's entries, their offsets, and the length of the valid prefix of ``data``."""
    entries: list[Entry] = []
    offsets: list[int] = []
    pos = 0
    while pos + _REC.size <= len(data):
        length, crc, index, term = _REC.unpack_from(data, pos)
        end = pos + _REC.size + length
        if end > len(data):
            break
        command = bytes(data[pos + _REC.size:end])
        if _crc(index, term, command) != crc:
            break
        entries.append((command, index, term))
        offsets.append(pos)
        pos = end
    return entries, offsets, pos


def _decode_meta(raw: bytes, where: str) -> dict[str, Any]:
    try:
        meta = load(raw)
    except Exception as exc:
        raise StorageError(f"{where} (term and vote) is corrupt: {exc}") from None
    if not isinstance(meta, dict):
        raise StorageError(f"{where} (term and vote) is corrupt")
    return meta


class DurableJournal:
    """pysyncobj-compatible journal whose changes are staged, then flushed node-wide."""

    def __init__(self, slot: RaftLogSlot, legacy_path: str | None = None) -> None:
        self._slot = slot
        if legacy_path is not None:
            _migrate_legacy(slot, legacy_path)
        self._entries: list[Entry] = slot.entries()
        self._bytes = sum(len(e[0]) for e in self._entries)
        self._changes: dict[int, bytes | None] = {}  # index -> entry value (None: delete), unstaged
        raw = slot.hard_state()
        self._meta: dict[str, Any] = _decode_meta(raw, "the node's term/vote record") if raw else {}
        commit = slot.commit_hint()
        if commit is not None:
            self._meta["commit"] = commit
        self._meta_dirty = False
        self._commit_dirty = False
        self._lazy_from: int | None = None  # position marked by deleteEntriesFrom, see module doc

    # --- the pysyncobj Journal interface -----------------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        """Stage an entry; it reaches disk at the node's next flush."""
        command = bytes(command)
        if self._lazy_from is not None:
            pos = self._lazy_from
            if pos < len(self._entries) and self._entries[pos] == (command, idx, term):
                self._lazy_from = pos + 1  # the entry is already here: keep it, keep what follows
                return
            self._lazy_from = None
            if pos < len(self._entries):
                self._truncate_to(pos)  # first conflicting entry: now, and only now, truncate
        self._entries.append((command, idx, term))
        self._changes[idx] = RaftLogSlot.entry_value(command, term)
        self._bytes += len(command)

    def clear(self) -> None:
        """Drop every entry (pysyncobj does this before installing a snapshot's two entries)."""
        self._lazy_from = None
        self._truncate_to(0)

    def deleteEntriesFrom(self, entryFrom: int) -> None:  # noqa: N802 (pysyncobj's name)
        """Mark entries at list position >= ``entryFrom`` for deletion on the first conflict (lazy)."""
        if entryFrom < len(self._entries):
            self._lazy_from = entryFrom

    def end_message(self) -> None:
        """Forget a lazy truncation mark: the message that set it has been handled."""
        self._lazy_from = None

    def compact_to(self, first: Entry) -> bool:
        """Make ``first`` the log's first entry, if the log holds it; True if the log starts there now."""
        if not self._entries:
            return False
        pos = first[1] - self._entries[0][1]
        if not 0 <= pos < len(self._entries) or self._entries[pos] != first:
            return False
        self.deleteEntriesTo(pos)
        return True

    def deleteEntriesTo(self, entryTo: int) -> None:  # noqa: N802
        """Drop entries at list position < ``entryTo`` (compaction).

        Durable with the node's next flush; a crash before it brings the prefix back, and
        start-up compacts again from the snapshot marker (``SnapshotSerializer.recover_journal``).
        """
        if entryTo <= 0:
            return  # nothing to drop (our compaction already dropped it: see SnapshotSerializer)
        self._lazy_from = None
        for command, idx, _term in self._entries[:entryTo]:
            self._changes[idx] = None
            self._bytes -= len(command)
        del self._entries[:entryTo]

    def __getitem__(self, item: Any) -> Any:
        return self._entries[item]

    def __len__(self) -> int:
        return len(self._entries)

    def setRaftCommitIndex(self, raftCommitIndex: int) -> None:  # noqa: N802
        """Remember the commit index; it is saved lazily (only a restart hint, never needed for safety)."""
        if self._meta.get("commit") != raftCommitIndex:
            self._meta["commit"] = raftCommitIndex
            self._commit_dirty = True

    def getRaftCommitIndex(self) -> int:  # noqa: N802
        """The saved commit index, never past the last entry on disk.

        The hint is saved lazily, so after a crash it may name entries that were staged but never
        flushed; pysyncobj would then wait for entries that do not exist (cf. its PR #197).
        """
        saved = int(self._meta.get("commit", 1))
        return min(saved, self._entries[-1][1]) if self._entries else 1

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:  # noqa: N802
        """Record term and vote; durable with the node's next flush, before any reply leaves."""
        self._meta["term"] = term
        self._meta["vote"] = votedForNodeId
        self._meta_dirty = True

    def getCurrentTerm(self) -> int:  # noqa: N802
        return int(self._meta.get("term", 0))

    def getVotedForNodeId(self) -> Any:  # noqa: N802
        return self._meta.get("vote")

    def onOneSecondTimer(self) -> None:  # noqa: N802
        """Save a changed commit index, unsynced: it is a replay hint only."""
        if self._commit_dirty:
            self._slot.set_commit_hint(self._meta["commit"])
            self._commit_dirty = False

    def flush(self) -> None:
        """pysyncobj's name for handing the log to disk."""
        self.sync()

    def _destroy(self) -> None:
        self.sync()  # the node store flushes it when it closes

    # --- durability ---------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Whether something changed that :meth:`sync` has not staged yet."""
        return bool(self._changes) or self._meta_dirty

    @property
    def size_bytes(self) -> int:
        """Total command bytes held (the log lives in RAM too; compaction keeps this bounded)."""
        return self._bytes

    def sync(self) -> None:
        """Stage every change (entries, truncations, term/vote) for the node's next durable flush.

        Raises on a term that cannot be encoded (a bug): the caller must not release a single
        message after that (the Raft loop stops the process).
        """
        if not self.dirty:
            return
        staged: dict[bytes, bytes | None] = {self._slot.entry_key(i): v for i, v in self._changes.items()}
        if self._meta_dirty:
            staged[self._slot.hard_state_key()] = pack({"term": self._meta.get("term", 0),
                                                        "vote": self._meta.get("vote")})
        self._slot.stage(staged)
        self._changes.clear()
        self._meta_dirty = False

    def _truncate_to(self, position: int) -> None:
        for command, idx, _term in self._entries[position:]:
            self._changes[idx] = None
            self._bytes -= len(command)
        del self._entries[position:]

    # --- self-check (tests) -------------------------------------------------------------------

    def _check(self) -> None:
        """Assert the module docstring's invariant and what follows from it; read-only (tests call
        it after every step of a model-based workload).

        In memory: indices are contiguous, the byte count and lazy mark are consistent.  Against
        the database: once everything is staged, it and the node's staged writes hold exactly
        these entries and, when term/vote are not dirty, this term and vote.
        """
        entries = self._entries
        for prev, cur in zip(entries, entries[1:], strict=False):
            assert cur[1] == prev[1] + 1, f"indices not contiguous: {prev[1]} then {cur[1]}"
        assert self._bytes == sum(len(e[0]) for e in entries), "size_bytes out of step"
        assert self._lazy_from is None or 0 <= self._lazy_from <= len(entries), self._lazy_from
        if self._changes:
            return  # unstaged changes: the database is behind by design
        stored = self._slot.entries(flush=False, staged=True)
        assert stored == entries, "the stored log (with what is staged) differs from the journal's"
        if not self._meta_dirty:
            raw = self._slot.hard_state(flush=False, staged=True)
            term_vote = (self._meta.get("term", 0), self._meta.get("vote"))
            if raw is None:
                assert term_vote == (0, None), f"term/vote {term_vote} clean but never saved"
            else:
                saved = load(raw)
                assert (saved.get("term", 0), saved.get("vote")) == term_vote, (saved, term_vote)


def _migrate_legacy(slot: RaftLogSlot, path: str) -> None:
    """Move a legacy log file (and its ``.meta``, ``.commit``) into ``slot``, then delete them.

    Only when the slot holds nothing yet; made durable before the files go, so a crash in
    between moves them again.
    """
    files = [path, path + ".meta", path + ".commit"]
    if not any(os.path.exists(f) for f in files):
        return
    if not slot.entries() and slot.hard_state() is None:
        try:
            with open(path, "rb") as f:
                entries, _, _ = decode_records(f.read())  # a torn tail is cut, as before
        except FileNotFoundError:
            entries = []
        changes: dict[bytes, bytes | None] = {slot.entry_key(i): RaftLogSlot.entry_value(c, t)
                                              for c, i, t in entries}
        try:
            with open(path + ".meta", "rb") as f:
                meta = _decode_meta(f.read(), path + ".meta")
            changes[slot.hard_state_key()] = pack({"term": meta.get("term", 0), "vote": meta.get("vote")})
        except FileNotFoundError:
            pass
        slot.stage(changes)
        try:
            with open(path + ".commit", "rb") as f:
                slot.set_commit_hint(int(f.read().strip()))
        except (FileNotFoundError, ValueError):
            pass
        slot.entries()  # flushes: durable before the files go
    for f in files:
        try:
            os.unlink(f)
        except FileNotFoundError:
            pass

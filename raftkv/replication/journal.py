"""A Raft log that is on disk before anyone hears of it.

pysyncobj's own ``FileJournal`` writes into an mmap and never flushes it, and
writes the term/vote file without fsync.  This journal keeps the same duck
interface (``add``, ``clear``, ``deleteEntriesFrom``, ``deleteEntriesTo``,
indexing, term/vote/commit accessors) but only *stages* changes; the Raft loop
calls :meth:`DurableJournal.sync` -- one ``write`` + ``fdatasync`` for every
entry staged since the last call, plus the term and vote when they changed --
**before** it lets any message out of the process.  Term and vote go to the
node's database (:class:`~raftkv.storage.leveldb.HardStateSlot`), where one
synced write per loop iteration covers every group; a journal without one
(tests, tools) replaces a ``.meta`` file atomically instead.  So:

* a follower's ``success`` reply to AppendEntries leaves only after the
  entries it acknowledges are on disk;
* a vote, or any reply carrying a new term, leaves only after term and vote
  are on disk;
* the leader's own entries are on disk before the next tick counts the
  leader's copy toward a majority (the commit check runs at the start of the
  next tick, after the sync).

Many client writes appended in one loop iteration share one fdatasync (group
commit).

**Truncate only on conflict.**  pysyncobj's follower deletes every entry after
``prevLogIdx`` whenever it holds more, even when they match the leader's -- so
a duplicate or re-sent AppendEntries can drop entries the follower already
acknowledged (and the leader already counted toward a commit).  Raft deletes
only from the first *conflicting* entry.  So :meth:`deleteEntriesFrom` is
lazy: it only marks a position, each following :meth:`add` that repeats the
entry already there just moves the mark on, and the first differing entry
truncates for real.  The transport calls :meth:`end_message` after each
delivered message, so a mark never outlives the message that set it.

Record format: ``len(cmd) u32 | crc32 u32 | index u64 | term u64 | cmd``.  On
load, the first record that is short or fails its checksum ends the log (a torn
write from a crash); the file is truncated there.

Invariant: ``_offsets[i]`` is the file offset of ``_entries[i]``; ``_written``
<= offset of the first staged record; every entry below ``_written`` is on disk
once :meth:`sync` has returned.
"""

from __future__ import annotations

import os
import struct
import zlib
from typing import Any

from ..errors import StorageError
from ..protocol.codec import load, pack
from ..storage.leveldb import HardStateSlot, write_file_atomic

_REC = struct.Struct(">IIQQ")
Entry = tuple[bytes, int, int]  # (command, index, term) -- pysyncobj's entry shape


def _crc(index: int, term: int, command: bytes) -> int:
    return zlib.crc32(command, zlib.crc32(struct.pack(">QQ", index, term)))


def encode_record(command: bytes, index: int, term: int) -> bytes:
    """One on-disk record."""
    return _REC.pack(len(command), _crc(index, term, command), index, term) + command


def decode_records(data: bytes) -> tuple[list[Entry], list[int], int]:
    """Entries, their offsets, and the length of the valid prefix of ``data``."""
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


class DurableJournal:
    """pysyncobj-compatible journal with staged writes and explicit :meth:`sync`."""

    def __init__(self, path: str, hard: HardStateSlot | None = None) -> None:
        self._path = path
        self._meta_path = path + ".meta"  # term and vote without ``hard``: replaced atomically, fsynced
        self._hard = hard
        self._commit_path = path + ".commit"  # the commit hint: written lazily, never fsynced
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        with os.fdopen(os.dup(fd), "rb") as f:
            data = f.read()
        self._entries, self._offsets, valid = decode_records(data)
        if valid < len(data):
            os.ftruncate(fd, valid)
            os.fsync(fd)
        self._fd = fd
        self._end = valid  # offset after the last (staged or written) record
        self._written = valid
        self._staged: list[bytes] = []
        self._bytes = sum(len(e[0]) for e in self._entries)
        self._meta_dirty = False
        self._meta = self._load_meta()
        self._commit_dirty = False
        self._truncated = False  # an ftruncate awaits its fsync
        self._lazy_from: int | None = None  # position marked by deleteEntriesFrom, see module doc

    def _load_meta(self) -> dict[str, Any]:
        """Term and vote (fsynced, must be whole) plus the commit hint (best effort, own file)."""
        meta: dict[str, Any] = {}
        raw = where = None
        if self._hard is not None:
            raw, where = self._hard.load(), "the node's term/vote record"
        if raw is None:
            try:
                with open(self._meta_path, "rb") as f:
                    raw, where = f.read(), self._meta_path
            except FileNotFoundError:
                pass
            else:
                # a journal from before term and vote moved to the node's database: move them
                self._meta_dirty = self._hard is not None
        if raw is not None:
            try:
                meta = load(raw)
            except Exception as exc:
                raise StorageError(f"{where} (term and vote) is corrupt: {exc}") from None
            if not isinstance(meta, dict):
                raise StorageError(f"{where} (term and vote) is corrupt")
        try:
            with open(self._commit_path, "rb") as f:
                meta["commit"] = int(f.read().strip())
        except (FileNotFoundError, ValueError):
            pass
        return meta

    # --- the pysyncobj Journal interface -----------------------------------------------------

    def add(self, command: bytes, idx: int, term: int) -> None:
        """Stage an entry; it reaches disk at the next :meth:`sync`."""
        command = bytes(command)
        if self._lazy_from is not None:
            pos = self._lazy_from
            if pos < len(self._entries) and self._entries[pos] == (command, idx, term):
                self._lazy_from = pos + 1  # the entry is already here: keep it, keep what follows
                return
            self._lazy_from = None
            if pos < len(self._entries):
                self._truncate_to(pos)  # first conflicting entry: now, and only now, truncate
        rec = encode_record(command, idx, term)
        self._entries.append((command, idx, term))
        self._offsets.append(self._end)
        self._staged.append(rec)
        self._end += len(rec)
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
        """Drop entries at list position < ``entryTo`` (compaction), rewriting the file durably."""
        if entryTo <= 0:
            return  # nothing to drop (our compaction already dropped it: see SnapshotSerializer)
        keep = self._entries[entryTo:]
        self._lazy_from = None
        self.sync()
        blob = bytearray()
        offsets = []
        for command, idx, term in keep:
            offsets.append(len(blob))
            blob += encode_record(command, idx, term)
        os.close(self._fd)
        write_file_atomic(self._path, bytes(blob))
        self._fd = os.open(self._path, os.O_RDWR)
        self._entries, self._offsets = keep, offsets
        self._end = self._written = len(blob)
        self._bytes = sum(len(e[0]) for e in keep)

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
        synced; pysyncobj would then wait for entries that do not exist (cf. its PR #197).
        """
        saved = int(self._meta.get("commit", 1))
        return min(saved, self._entries[-1][1]) if self._entries else 1

    def setCurrentTerm(self, term: int, votedForNodeId: Any) -> None:  # noqa: N802
        """Record term and vote; they are fsynced by the next :meth:`sync`, before any reply leaves."""
        self._meta["term"] = term
        self._meta["vote"] = votedForNodeId
        self._meta_dirty = True

    def getCurrentTerm(self) -> int:  # noqa: N802
        return int(self._meta.get("term", 0))

    def getVotedForNodeId(self) -> Any:  # noqa: N802
        return self._meta.get("vote")

    def onOneSecondTimer(self) -> None:  # noqa: N802
        """Persist a changed commit index in its own file (not fsynced: it is a replay hint only,
        and keeping it apart means the term/vote file is only ever replaced durably)."""
        if self._commit_dirty:
            tmp = self._commit_path + ".tmp"
            with open(tmp, "wb") as f:
                f.write(str(self._meta["commit"]).encode())
            os.replace(tmp, self._commit_path)
            self._commit_dirty = False

    def flush(self) -> None:
        """pysyncobj's name for making the log durable."""
        self.sync()

    def _destroy(self) -> None:
        self.sync()
        os.close(self._fd)
        self._fd = -1

    # --- durability ---------------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """Whether something staged still needs :meth:`sync`."""
        return bool(self._staged) or self._meta_dirty or self._truncated

    @property
    def size_bytes(self) -> int:
        """Total command bytes held (the log lives in RAM too; compaction keeps this bounded)."""
        return self._bytes

    def sync(self) -> None:
        """Write staged records and fdatasync; save term/vote if they changed (fsynced here, or
        staged in the node's database for the loop's one flush).

        Raises OSError on any I/O failure, leaving everything staged: the caller must not
        release a single message after that (the Raft loop stops the process).
        """
        if self._staged:
            view = memoryview(b"".join(self._staged))
            pos = self._written
            while view:
                n = os.pwrite(self._fd, view, pos)
                view = view[n:]
                pos += n
            os.fdatasync(self._fd)
            self._staged.clear()
            self._written = pos
            self._truncated = False
        elif self._truncated:
            os.fsync(self._fd)
            self._truncated = False
        if self._meta_dirty:
            term_vote = pack({"term": self._meta.get("term", 0), "vote": self._meta.get("vote")})
            if self._hard is not None:
                self._hard.stage(term_vote)
            else:
                write_file_atomic(self._meta_path, term_vote)
            self._meta_dirty = False

    def _truncate_to(self, position: int) -> None:
        new_end = self._offsets[position] if position < len(self._offsets) else self._end
        for command, _, _ in self._entries[position:]:
            self._bytes -= len(command)
        del self._entries[position:]
        del self._offsets[position:]
        if new_end >= self._written:
            # only staged records go: rebuild the staged list from what remains staged
            self._staged = [encode_record(c, i, t) for (c, i, t), off
                            in zip(self._entries, self._offsets, strict=True) if off >= self._written]
        else:
            self._staged.clear()
            os.ftruncate(self._fd, new_end)
            self._written = new_end
            self._truncated = True
        self._end = new_end

    # --- self-check (tests) -------------------------------------------------------------------

    def _check(self) -> None:
        """Assert the module docstring's invariant and what follows from it; read-only (tests call
        it after every step of a model-based workload).

        In memory: entries and offsets pair up, indices are contiguous, each offset is where the
        previous record ends, staged records are exactly the entries at or past ``_written``, and
        the byte count and lazy mark are consistent.  Against the file: the bytes below
        ``_written`` decode to exactly the entries there (nothing staged is on the file, nothing
        written is missing), and when term/vote are not dirty the term/vote file holds them.
        """
        entries, offsets = self._entries, self._offsets
        assert len(entries) == len(offsets), (len(entries), len(offsets))
        for prev, cur in zip(entries, entries[1:], strict=False):
            assert cur[1] == prev[1] + 1, f"indices not contiguous: {prev[1]} then {cur[1]}"
        pos = 0
        for (command, idx, _term), off in zip(entries, offsets, strict=True):
            assert off == pos, f"entry {idx} at offset {off}, previous record ends at {pos}"
            pos += _REC.size + len(command)
        assert self._end == pos, f"_end {self._end} != end of the last record {pos}"
        assert 0 <= self._written <= self._end, (self._written, self._end)
        assert self._written == self._end or self._written in offsets, "_written is not a record boundary"
        staged = [encode_record(c, i, t) for (c, i, t), off in zip(entries, offsets, strict=True)
                  if off >= self._written]
        assert self._staged == staged, "staged records differ from the entries past _written"
        assert self._bytes == sum(len(e[0]) for e in entries), "size_bytes out of step"
        assert self._lazy_from is None or 0 <= self._lazy_from <= len(entries), self._lazy_from
        if self._fd < 0:
            return  # destroyed: nothing more to compare against
        size = os.fstat(self._fd).st_size
        assert size >= self._written, f"file holds {size} bytes, {self._written} claimed written"
        on_file, _, valid = decode_records(os.pread(self._fd, self._written, 0))
        assert valid == self._written, f"only {valid} of {self._written} written bytes decode"
        written = [e for e, off in zip(entries, offsets, strict=True) if off < self._written]
        assert on_file == written, "the file's records differ from the entries below _written"
        if not self._meta_dirty:
            term_vote = (self._meta.get("term", 0), self._meta.get("vote"))
            raw = self._hard.load() if self._hard is not None else None
            if raw is None:
                try:
                    with open(self._meta_path, "rb") as f:
                        raw = f.read()
                except FileNotFoundError:
                    pass
            if raw is None:
                assert term_vote == (0, None), f"term/vote {term_vote} clean but never saved"
            else:
                saved = load(raw)
                assert (saved.get("term", 0), saved.get("vote")) == term_vote, (saved, term_vote)

"""Replica state in LevelDB: one database per node, one keyspace per replica.

Rules this module keeps:

* **One state LevelDB per node, and one for its Raft logs.**  Every replica a node
  hosts keeps its state in the node's state database (:class:`NodeStore`) under
  its own key prefix, so its cache, write buffer and open files are node-wide
  budgets, and a thousand replicas cost a handful of descriptors, not four
  thousand.  Every replica's Raft log, term, vote and commit hint live in a
  second database beside it (``<path>-raft``), so one fsync makes every
  replica's journal writes durable.  The logs are kept out of the state
  database because its compactions are its largest cost: log entries (as big
  as the rows they carry, deleted soon after) written beside increasing keys
  made every flushed table span the log's keys as well as the new rows, so
  tables overlapped and LevelDB rewrote the rows again and again instead of
  moving them down a level (design §9 has the figures).
* **Applied index in the same batch.**  Every write carries the Raft index it
  applies, stored under a system key in the *same* ``WriteBatch`` as the data,
  so after any crash LevelDB holds a prefix of the applied log and says exactly
  how long that prefix is.  Re-applying an entry at or below it is a no-op,
  which makes log replay idempotent.
* **Writes are not fsynced one by one.**  The Raft journal is the durable
  record; LevelDB state can always be rebuilt from it down to the last
  snapshot.  :meth:`ShardStore.make_durable` (a ``sync=True`` write, which
  LevelDB turns into an fsync of its log after all earlier writes) is called
  before the journal is compacted past what LevelDB holds.  That is the one
  order between the two databases that durability needs, and both paths keep
  it: the journal deletes entries only after the state database has synced
  their effect (``make_durable`` before a compaction; a snapshot install's
  synced switch before the journal is reset to the snapshot).
* **Snapshots install atomically.**  A replica's keys carry a *generation*; a
  snapshot is written under the next one, then one synced write points the
  replica at it.  A crash leaves either the old state or the new one, never a
  mixture; the generation that lost is deleted in the background (and found
  again at the next open if a crash came first).
* **One open per directory, and per keyspace, per process.**  LevelDB 1.22
  drops its lock file descriptor after a failed second open in the same
  process, which silently lets another process in.  A process-wide registry
  refuses the second open before LevelDB sees it.

Keys, in the node's state database:

* ``b"c" + name`` -> the replica's current generation (8 bytes, big-endian);
* ``b"g" + name + b"/" + generation`` + a replica key, where a replica key is
  ``b"k" + 8-byte big-endian key`` for user data, ``b"s" + name`` for system
  entries.  ``/`` never occurs in a name, so no name's keys are a prefix of
  another's; the ``k``/``s`` split keeps system keys out of every user scan.

In the node's Raft database (:class:`RaftLogSlot`):

* ``b"j" + name + b"/" + index`` -> a Raft log entry: 8-byte term + command;
* ``b"m" + name`` -> the replica's commit hint; ``b"r" + name`` -> its Raft term and vote.

Before the Raft database existed these keys lived in the state database; the
first open moves them (:meth:`NodeStore._move_raft_keys`).

Snapshots and pages carry replica keys (``b"k" + 8 bytes``), not the prefix:
the wire format does not depend on where a replica lives.
"""

from __future__ import annotations

import itertools
import os
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import plyvel

from ..errors import StorageError
from ..protocol.pages import decode_raw_keys
from ..stats import FSYNC_BUCKETS, Histogram
from .recent import RecentWrites

DATA = b"k"  # replica key prefix of user data
SYSTEM = b"s"  # replica key prefix of system entries
_DATA_END = b"l"  # first prefix after DATA
_APPLIED = b"applied"  # system entry: the applied index
_CURRENT = b"c"  # node key prefix: a replica's current generation
_HARD = b"r"  # node key prefix: a replica's Raft term and vote
_LOG = b"j"  # node key prefix: a replica's Raft log entries
_COMMIT = b"m"  # node key prefix: a replica's commit hint
_REPLICAS = b"g"  # node key prefix: replica keyspaces
_REPLICAS_END = b"h"
_SEP = b"/"
_KEY = struct.Struct(">Q")
_PURGE_BATCH = 5_000  # keys deleted per batch when a dropped generation is cleared

# Node-wide budgets (one database per node): what a thousand tiny per-replica databases used to
# multiply.  LevelDB keeps two memtables at most, so memory is about cache + 2 x write buffer.
CACHE_BYTES = 64 << 20
WRITE_BUFFER_BYTES = 16 << 20
MAX_OPEN_FILES = 256
# The Raft database is read only when a journal opens: a small cache.  Its memtable is larger than
# the state database's because LevelDB flushes every database of a process on one background
# thread: a Raft memtable that fills while that thread runs a long state compaction stalls every
# write of the node until the flush gets its turn.  With 8 MiB, 1 MiB puts right after a bulk
# load ran at 25 MB/s; with 32 MiB at 71 (and 59 with the logs in the state database).
RAFT_CACHE_BYTES = 4 << 20
RAFT_WRITE_BUFFER_BYTES = 32 << 20
RAFT_SUFFIX = "-raft"  # the Raft database's directory: the state database's path + this
_RAFT_PREFIXES = (_LOG, _COMMIT, _HARD)  # what the Raft database holds (and the state one once did)
_MOVE_BATCH = 2_000  # keys per batch when moving them from the state database to the Raft one

_open_paths: set[str] = set()
_open_lock = threading.Lock()

Row = tuple[int, bytes]
Filter = Callable[[int, bytes], bool]


def _open_db(path: str, **options: Any) -> plyvel.DB:
    """Open (creating) the LevelDB at ``path``; StorageError if LevelDB refuses."""
    try:
        os.makedirs(path, exist_ok=True)
        return plyvel.DB(path, create_if_missing=True, **options)
    except plyvel.Error as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc


def _sync(db: plyvel.DB) -> None:
    """Make every earlier write to ``db`` durable: a synced write of a key nothing uses (LevelDB
    fsyncs its log, which holds every earlier write)."""
    db.delete(b"\x00sync", sync=True)


def _chunks(db: plyvel.DB, prefixes: Iterable[bytes], include_value: bool = True) -> Iterator[list[Any]]:
    """The items (or keys) under each of ``prefixes`` in ``db``, in lists of at most :data:`_MOVE_BATCH`."""
    for prefix in prefixes:
        it = db.iterator(prefix=prefix, include_value=include_value)
        try:
            while chunk := list(itertools.islice(it, _MOVE_BATCH)):
                yield chunk
        finally:
            it.close()


def fsync_dir(path: str) -> None:
    """fsync a directory so a rename or create inside it survives power loss."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_file_atomic(path: str, data: bytes) -> None:
    """Replace ``path`` with ``data`` durably: temp file, fsync, rename, fsync the directory."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(os.path.abspath(path)))


def _check_name(name: str) -> bytes:
    raw = name.encode()
    if not raw or _SEP in raw or len(raw) > 200:
        raise StorageError(f"bad replica name {name!r}: 1..200 bytes, no '/'")
    return raw


def _space(raw_name: bytes) -> bytes:
    return _REPLICAS + raw_name + _SEP


def _prefix(raw_name: bytes, gen: int) -> bytes:
    return _space(raw_name) + _KEY.pack(gen)


class NodeStore:
    """The LevelDBs of a node: state, with a keyspace per replica (:meth:`replica`), generations
    and purging; and Raft logs (:meth:`raft_log`), flushed durably together (:meth:`flush_durable`).

    Thread-safe.  A background thread deletes the keys of generations no replica uses any more
    (replaced by a snapshot, or of a replica dropped); work left over by a crash is found again
    when the database opens.
    """

    def __init__(self, path: str, *, cache_bytes: int = CACHE_BYTES,
                 write_buffer_bytes: int = WRITE_BUFFER_BYTES, max_open_files: int = MAX_OPEN_FILES) -> None:
        self.path = os.path.realpath(path)
        with _open_lock:
            if self.path in _open_paths:
                raise StorageError(f"{self.path} is already open in this process")
            _open_paths.add(self.path)
        self._db: Any = None
        self._raft_db: Any = None
        try:
            self._db = _open_db(self.path, bloom_filter_bits=10, max_open_files=max_open_files,
                                lru_cache_size=cache_bytes, write_buffer_size=write_buffer_bytes)
            if not os.path.isdir(self.path + RAFT_SUFFIX):
                self._check_raft_db_not_lost()
            self._raft_db = _open_db(self.path + RAFT_SUFFIX, max_open_files=64,
                                     lru_cache_size=RAFT_CACHE_BYTES, write_buffer_size=RAFT_WRITE_BUFFER_BYTES)
            self._move_raft_keys()
        except BaseException:
            for db in (self._db, self._raft_db):
                if db is not None:
                    db.close()
            self._release()
            raise
        self._lock = threading.Lock()
        self._open: set[bytes] = set()  # names of the replicas open now
        self._purge: list[bytes] = []  # prefixes whose keys are to be deleted
        self._purging = threading.Condition(self._lock)
        self._closing = False
        self._purger: threading.Thread | None = None
        self._pending: dict[bytes, bytes | None] = {}  # key -> value (None: delete) for the next flush
        self.fsync_seconds = Histogram(FSYNC_BUCKETS)  # each synced flush, as the metrics endpoint shows it
        for prefix in self._stale_prefixes():
            self._schedule_purge(prefix)

    def _release(self) -> None:
        with _open_lock:
            _open_paths.discard(self.path)

    def _check_raft_db_not_lost(self) -> None:
        """Refuse to start over the Raft database missing beside a state database that has
        replicas and no Raft keys of an older layout to move: it was deleted, or the state
        database was copied without it.  Started anyway, every replica would come up with no term,
        no vote and no log, and could vote twice in a term it already voted in."""
        if not self._has_prefix(_CURRENT) or any(self._has_prefix(p) for p in _RAFT_PREFIXES):
            return  # a new node, or one of the layout that kept the logs in the state database
        raise StorageError(
            f"{self.path}{RAFT_SUFFIX} is missing, but {self.path} holds replicas: their Raft terms, "
            f"votes and logs are gone with it. Put the Raft database back, or clear this node's data "
            f"directory and add it to the cluster again as a new node")

    def _has_prefix(self, prefix: bytes) -> bool:
        it = self._db.iterator(prefix=prefix, include_value=False)
        try:
            return next(it, None) is not None
        finally:
            it.close()

    def _move_raft_keys(self) -> None:
        """Move Raft logs, terms, votes and commit hints that an older version kept in the state
        database into the Raft database.

        Safe to repeat after a crash at any point: every key is copied (overwriting the same value)
        and the copies synced before any original is deleted, and nothing else writes the Raft
        database before this returns.
        """
        moved = 0
        for chunk in _chunks(self._db, _RAFT_PREFIXES):
            with self._raft_db.write_batch() as wb:
                for key, value in chunk:
                    wb.put(key, value)
            moved += len(chunk)
        if not moved:
            return
        _sync(self._raft_db)  # every copy is durable before an original goes
        for chunk in _chunks(self._db, _RAFT_PREFIXES, include_value=False):
            with self._db.write_batch() as wb:
                for key in chunk:
                    wb.delete(key)
        _sync(self._db)

    # --- replicas -----------------------------------------------------------------------------

    def replica(self, name: str) -> ShardStore:
        """Open replica ``name``'s keyspace (empty at first); one open per name at a time."""
        return ShardStore(node=self, name=name)

    def names(self) -> list[str]:
        """Every replica that has a keyspace here, open or not."""
        it = self._db.iterator(prefix=_CURRENT, include_value=False)
        try:
            return [k[len(_CURRENT):].decode() for k in it]
        finally:
            it.close()

    def drop(self, name: str) -> None:
        """Delete replica ``name``'s state (it must not be open): durably forgotten now, its keys
        deleted in the background.

        The Raft database first: a crash before the state database's write leaves the replica
        listed by :meth:`names`, and what lists it drops it again.
        """
        raw = _check_name(name)
        with self._lock:
            if raw in self._open:
                raise StorageError(f"replica {name} is open; close it before dropping it")
        log = _LOG + raw + _SEP
        with self._lock:
            self._pending = {k: v for k, v in self._pending.items() if not k.startswith(log)}
            for key in (_HARD + raw, _COMMIT + raw):
                self._pending.pop(key, None)
        gen = self.current(raw)
        it = self._raft_db.iterator(prefix=log, include_value=False)
        try:
            with self._raft_db.write_batch(sync=True) as wb:  # a log is bounded by compaction: gone now
                for key in it:
                    wb.delete(key)
                wb.delete(_HARD + raw)
                wb.delete(_COMMIT + raw)
        finally:
            it.close()
        self._db.delete(_CURRENT + raw, sync=True)
        if gen is not None:
            self._schedule_purge(_prefix(raw, gen))

    def current(self, raw_name: bytes) -> int | None:
        """The generation replica ``raw_name`` uses now (None: it has no keyspace)."""
        got = self._db.get(_CURRENT + raw_name)
        return None if got is None else _KEY.unpack(got)[0]

    def next_generation(self, raw_name: bytes) -> int:
        """A generation above every one that still has keys for ``raw_name`` (purged or not)."""
        space = _space(raw_name)
        it = self._db.iterator(prefix=space, include_value=False, reverse=True)
        try:
            last = next(it, None)
        finally:
            it.close()
        newest = _KEY.unpack_from(last, len(space))[0] if last is not None else 0
        return max(newest, self.current(raw_name) or 0) + 1

    def claim(self, raw_name: bytes) -> None:
        """Mark ``raw_name`` open (StorageError if it already is)."""
        with self._lock:
            if self._closing:
                raise StorageError(f"{self.path} is closed")
            if raw_name in self._open:
                raise StorageError(f"replica {raw_name.decode()} is already open in this process")
            self._open.add(raw_name)

    def unclaim(self, raw_name: bytes) -> None:
        """Mark ``raw_name`` closed."""
        with self._lock:
            self._open.discard(raw_name)

    # --- Raft logs ---------------------------------------------------------------------------------

    def raft_log(self, name: str) -> RaftLogSlot:
        """Where replica ``name``'s Raft journal keeps its entries, term, vote and commit hint."""
        return RaftLogSlot(self, _check_name(name))

    def stage(self, changes: dict[bytes, bytes | None]) -> None:
        """Add writes (None: delete) to the batch the next :meth:`flush_durable` makes durable."""
        with self._lock:
            self._pending.update(changes)

    def flush_durable(self) -> int:
        """Make every staged write durable in one synced write; how many keys it held.

        The Raft loop calls this once per iteration, before any message leaves: every group's
        new log entries, truncations, terms and votes cost one fsync together -- not one (or,
        for a term, two) per group.  A staged write is visible to nothing before it: the
        journals keep what they staged in memory.
        """
        with self._lock:
            pending, self._pending = self._pending, {}
        if pending:
            started = time.perf_counter()
            with self._raft_db.write_batch(sync=True) as wb:
                for key, value in pending.items():
                    if value is None:
                        wb.delete(key)
                    else:
                        wb.put(key, value)
            self.fsync_seconds.observe(time.perf_counter() - started)
        return len(pending)

    # --- purging old generations ----------------------------------------------------------------

    def _stale_prefixes(self) -> list[bytes]:
        """Every (name, generation) with keys that is not a replica's current generation: a snapshot
        install or a drop that a crash interrupted.  One seek per generation, not a full scan."""
        stale = []
        it = self._db.iterator(start=_REPLICAS, stop=_REPLICAS_END, include_value=False)
        try:
            it.seek(_REPLICAS)
            while (key := next(it, None)) is not None:
                cut = key.index(_SEP, len(_REPLICAS))
                raw_name = key[len(_REPLICAS):cut]
                gen = _KEY.unpack_from(key, cut + 1)[0]
                if self.current(raw_name) != gen:
                    stale.append(_prefix(raw_name, gen))
                if gen == 2**64 - 1:
                    it.seek(_REPLICAS + raw_name + bytes([_SEP[0] + 1]))
                else:
                    it.seek(_prefix(raw_name, gen + 1))
        finally:
            it.close()
        return stale

    def _schedule_purge(self, prefix: bytes) -> None:
        with self._lock:
            self._purge.append(prefix)
            if self._purger is None:
                self._purger = threading.Thread(target=self._run_purger, name="leveldb-purge", daemon=True)
                self._purger.start()
            self._purging.notify()

    def _run_purger(self) -> None:
        while True:
            with self._lock:
                while not self._purge and not self._closing:
                    self._purging.wait()
                if self._closing:
                    return
                prefix = self._purge[0]
            if self._purge_some(prefix):
                with self._lock:
                    self._purge.remove(prefix)
                    self._purging.notify_all()

    def _purge_some(self, prefix: bytes) -> bool:
        """Delete one batch of ``prefix``'s keys; True once none is left."""
        it = self._db.iterator(prefix=prefix, include_value=False)
        try:
            with self._db.write_batch() as wb:
                n = 0
                for key in it:
                    wb.delete(key)
                    n += 1
                    if n >= _PURGE_BATCH:
                        return False
        finally:
            it.close()
        return True

    def wait_purged(self, timeout: float = 30.0) -> bool:
        """Wait until no purge is pending (tests, and a tidy close); False on timeout."""
        deadline = time.monotonic() + timeout
        with self._lock:
            while self._purge and not self._closing:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._purging.wait(left)
            return not self._purge

    # --- node-wide ------------------------------------------------------------------------------

    @property
    def db(self) -> plyvel.DB:
        """The state database (the replicas' stores use it; nothing else should)."""
        return self._db

    @property
    def raft_db(self) -> plyvel.DB:
        """The Raft database (:class:`RaftLogSlot` uses it; nothing else should)."""
        return self._raft_db

    def close(self) -> None:
        """Close the database (every replica should be closed first); pending purges resume at the
        next open."""
        with self._lock:
            self._closing = True
            self._purging.notify_all()
            purger = self._purger
        if purger is not None:
            purger.join()
        if not self._raft_db.closed:
            self.flush_durable()  # journals closing after the loop's last flush staged these
            self._raft_db.close()
        if not self._db.closed:
            self._db.close()
        self._release()


class RaftLogSlot:
    """One replica's Raft log, term, vote and commit hint in its node's Raft database.

    The journal (``replication/journal.py``) keeps the log in memory and stages its changes
    here; :meth:`NodeStore.flush_durable` makes them durable, for every replica at once.
    """

    def __init__(self, node: NodeStore, raw_name: bytes) -> None:
        self._node, self._raw_name = node, raw_name
        self._log = _LOG + raw_name + _SEP

    def entries(self, flush: bool = True, staged: bool = False) -> list[tuple[bytes, int, int]]:
        """The stored log, ``(command, index, term)`` in index order.

        ``flush`` first makes what the node staged durable; without it, this is what a crash now
        would leave; ``staged`` (without flushing) adds what is staged (tests check both).
        """
        if flush:
            self._node.flush_durable()  # nothing staged may hide from a reader
        cut = len(self._log)
        it = self._node.raft_db.iterator(prefix=self._log)
        try:
            found = {key: value for key, value in it}
        finally:
            it.close()
        if staged:
            with self._node._lock:
                for key, value in self._node._pending.items():
                    if key.startswith(self._log):
                        found[key] = value
        out: list[tuple[bytes, int, int]] = []
        for key in sorted(k for k, v in found.items() if v is not None):
            index, value = _KEY.unpack_from(key, cut)[0], found[key]
            if out and index != out[-1][1] + 1:
                raise StorageError(f"the Raft log of {self._raw_name.decode()} has a gap after index {out[-1][1]}")
            out.append((value[_KEY.size:], index, _KEY.unpack_from(value)[0]))
        return out

    def entry_key(self, index: int) -> bytes:
        """The Raft-database key of log entry ``index``."""
        return self._log + _KEY.pack(index)

    @staticmethod
    def entry_value(command: bytes, term: int) -> bytes:
        """What is stored for an entry."""
        return _KEY.pack(term) + command

    def hard_state_key(self) -> bytes:
        """The Raft-database key of the term and vote."""
        return _HARD + self._raw_name

    def hard_state(self, flush: bool = True, staged: bool = False) -> bytes | None:
        """The stored term and vote (None: never saved); ``flush`` and ``staged`` as for :meth:`entries`."""
        if flush:
            self._node.flush_durable()
        if staged:
            with self._node._lock:
                if _HARD + self._raw_name in self._node._pending:
                    return self._node._pending[_HARD + self._raw_name]
        return self._node.raft_db.get(_HARD + self._raw_name)

    def stage(self, changes: dict[bytes, bytes | None]) -> None:
        """Hand writes to the node's next durable flush."""
        self._node.stage(changes)

    def commit_hint(self) -> int | None:
        """The saved commit index (a replay hint; not synced, may be behind or missing)."""
        raw = self._node.raft_db.get(_COMMIT + self._raw_name)
        return _KEY.unpack(raw)[0] if raw else None

    def set_commit_hint(self, index: int) -> None:
        """Save the commit hint without syncing: it only ever helps a restart replay sooner."""
        self._node.raft_db.put(_COMMIT + self._raw_name, _KEY.pack(index))


class ShardStore:
    """The state of one replica: a keyspace of its node's :class:`NodeStore`.

    ``ShardStore(path)`` opens a store with a database of its own (tests and tools);
    a node opens its replicas with :meth:`NodeStore.replica`.  Writes come from the Raft thread
    only; reads from anywhere.
    """

    def __init__(self, path: str | None = None, *, node: NodeStore | None = None, name: str = "replica") -> None:
        if (path is None) == (node is None):
            raise StorageError("a store needs a path or a node store, not both")
        self._owned = node is None
        if node is None:
            self.path = os.path.realpath(path)
            node = NodeStore(os.path.join(self.path, "kv"))
        else:
            self.path = os.path.join(node.path, name)
        self._node = node
        self.name = name
        self._raw_name = _check_name(name)
        try:
            node.claim(self._raw_name)
        except BaseException:
            if self._owned:
                node.close()
            raise
        self._db = node.db
        self._lock = threading.RLock()  # guards the key prefix against a snapshot swap
        self._views: set[StoreView] = set()
        gen = node.current(self._raw_name)
        if gen is None:  # a new replica: name its first generation (ordered before any of its writes)
            gen = node.next_generation(self._raw_name)
            self._db.put(_CURRENT + self._raw_name, _KEY.pack(gen))
        self._use(gen)
        raw = self._db.get(self._applied_key)
        self._applied = _KEY.unpack(raw)[0] if raw else 0
        self._recent = RecentWrites(self._applied)  # what the latest entries wrote (open_view_at)
        self.unflushed_bytes = 0  # written since open: may still be in the memtable (see estimate())
        self._last_on_disk = 0
        self._closed = False

    def _use(self, gen: int) -> None:
        """Point this store at generation ``gen``'s keys."""
        self._gen = gen
        self._prefix = _prefix(self._raw_name, gen)
        self._data = self._prefix + DATA
        self._system = self._prefix + SYSTEM
        self._data_end = self._prefix + _DATA_END
        self._applied_key = self._system + _APPLIED

    def _dkey(self, key: int) -> bytes:
        return self._data + _KEY.pack(key)

    def _bound(self, key: int) -> bytes:
        """Encoded lower/upper bound for a half-open key range end; 2**64 maps past all data."""
        return self._data_end if key >= 2**64 else self._data + _KEY.pack(key)

    def _reverse_start(self, key: int) -> bytes:
        """Lower bound for a *reverse* iterator over keys ``>= key``: never itself a stored key.

        plyvel 1.5.1's reverse iterator ends at once when the greatest key in range equals ``start``
        (its first step tests ``Compare(start, key) >= 0``, ignoring ``include_start``): a reverse
        page whose only row was the range's first key came back empty, so a reverse scan lost its
        last row.  A bound just below the key that no stored key can equal sidesteps that.
        """
        if key >= 2**64:
            return self._data_end
        return self._data if key == 0 else self._data + _KEY.pack(key - 1) + b"\x00"

    # --- reads --------------------------------------------------------------------------------

    @property
    def applied_index(self) -> int:
        """Raft index of the last entry reflected in this store (0 when empty)."""
        return self._applied

    def get(self, key: int) -> bytes | None:
        """The value under ``key``, or None."""
        with self._lock:
            return self._db.get(self._dkey(key))

    def scan(self, start: int, end: int, *, reverse: bool = False, limit: int = 1000,
             max_bytes: int = 1 << 20, filter: Filter | None = None,
             max_examined: int = 200_000) -> tuple[list[Row], int | None]:
        """Rows with ``start <= key < end`` in key order (descending if ``reverse``).

        Stops after ``limit`` rows or once ``max_bytes`` of keys+values are collected
        (at least one row is always returned when one exists, so a 1 MiB value still
        moves), or after examining ``max_examined`` rows, so a selective ``filter``
        cannot pin the store for a whole shard (such a page may hold no rows).  Returns
        ``(rows, resume)``: ``resume`` is the ``start`` (or, reversed, the exclusive
        ``end``) to pass for the next page, or None when the range is done.
        """
        with self._lock:
            return _rows(_scan_page(self, self._db, start, end, reverse, limit, max_bytes, filter, max_examined))

    def open_view(self) -> StoreView:
        """A frozen, consistent view of the store for paging through a large scan."""
        with self._lock:
            view = StoreView(self, self._db.snapshot(), self._applied)
            self._views.add(view)
            return view

    def open_view_at(self, index: int, start: int, end: int) -> StoreView | None:
        """A view whose rows in ``[start, end)`` are exactly those of the state at Raft index ``index``.

        The store may have applied entries past ``index``: the view stands for that state within
        the range when none of them wrote a key of it (:class:`~raftkv.storage.recent.RecentWrites`).
        None when it cannot: the store is behind ``index``, or an entry since wrote into the range,
        or entries that far back are no longer remembered.
        """
        with self._lock:
            if not self._recent.unchanged(index, self._applied, start, end):
                return None
            view = StoreView(self, self._db.snapshot(), index, (start, end))
            self._views.add(view)
            return view

    # --- writes (Raft thread only) ----------------------------------------------------------

    def apply(self, index: int, puts: Sequence[tuple[int, bytes] | list[Any]] = (), deletes: list[int] = (),
              system: dict[bytes, bytes | None] | None = None, delete_span: tuple[int, int] | None = None,
              sync: bool = False) -> bool:
        """Apply one Raft entry's effect atomically with its index; False if already applied.

        ``system`` sets (bytes) or deletes (None) system entries in the same batch, e.g. the
        client-session records that make the entry's effect happen at most once.
        ``delete_span`` ``(start, end)`` deletes every key of that half-open range in the same
        batch (a split hands them to the new shard).  ``sync`` makes this write, and every one
        before it, durable before returning.
        """
        if index <= self._applied:
            return False
        with self._lock:
            data, pack = self._data, _KEY.pack
            with self._db.write_batch(sync=sync) as wb:
                put, size = wb.put, 9 * len(puts)
                for key, value in puts:
                    size += len(value)
                    put(data + pack(key), value)
                self.unflushed_bytes += size
                for key in deletes:
                    wb.delete(data + pack(key))
                if delete_span is not None:
                    self.unflushed_bytes = 0  # an under-estimate is harmless; counting twice splits again
                    it = self._db.iterator(start=self._bound(delete_span[0]), stop=self._bound(delete_span[1]),
                                           include_value=False)
                    try:
                        for raw in it:
                            wb.delete(raw)
                    finally:
                        it.close()
                for name, raw in (system or {}).items():
                    if raw is None:
                        wb.delete(self._system + name)
                    else:
                        wb.put(self._system + name, raw)
                wb.put(self._applied_key, _KEY.pack(index))
            # under the lock, with the batch: a view opened now sees rows and index agree
            self._applied = index
            self._recent.record(index, puts, deletes, delete_span, size)
        return True

    def put_system(self, name: bytes, value: bytes) -> None:
        """Set a system entry outside any Raft entry: only for values every replica derives alike
        (a shard's initial bounds, from the deterministic initial map)."""
        with self._lock:
            self._db.put(self._system + name, value)

    def get_system(self, name: bytes) -> bytes | None:
        """A system entry (e.g. the meta group's shard map)."""
        with self._lock:
            return self._db.get(self._system + name)

    @property
    def generation(self) -> int:
        """Changes whenever an installed snapshot replaces the whole state (caches of it are stale)."""
        return self._gen

    def system_items(self, start: bytes, stop: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` system entries ``(name, value)`` with names in ``[start, stop)``, in order."""
        with self._lock:
            cut = len(self._system)
            it = self._db.iterator(start=self._system + start, stop=self._system + stop)
            try:
                return [(k[cut:], v) for (k, v), _ in zip(it, range(limit), strict=False)]
            finally:
                it.close()

    def system_names(self, start: bytes, stop: bytes, limit: int) -> list[bytes]:
        """Up to ``limit`` names of system entries in ``[start, stop)``, in order."""
        with self._lock:
            cut = len(self._system)
            it = self._db.iterator(start=self._system + start, stop=self._system + stop, include_value=False)
            try:
                return [k[cut:] for k, _ in zip(it, range(limit), strict=False)]
            finally:
                it.close()

    def apply_system(self, index: int, name: bytes, value: bytes) -> bool:
        """Set a system entry as the effect of Raft entry ``index``; False if already applied."""
        if index <= self._applied:
            return False
        with self._lock:
            with self._db.write_batch() as wb:
                wb.put(self._system + name, value)
                wb.put(self._applied_key, _KEY.pack(index))
            self._applied = index
        return True

    def make_durable(self) -> None:
        """fsync everything written so far (LevelDB syncs its log, which holds all earlier writes)."""
        with self._lock:
            self._db.put(self._applied_key, _KEY.pack(self._applied), sync=True)

    # --- snapshots ----------------------------------------------------------------------------

    def snapshot_items(self) -> tuple[int, Iterator[tuple[bytes, bytes]]]:
        """A consistent view: its applied index and an iterator of every (replica key, value),
        system entries included."""
        with self._lock:
            snap = self._db.snapshot()
            prefix, applied_key = self._prefix, self._applied_key
        applied = snap.get(applied_key)
        index = _KEY.unpack(applied)[0] if applied else 0

        def items() -> Iterator[tuple[bytes, bytes]]:
            cut = len(prefix)
            it = snap.iterator(prefix=prefix)
            try:
                for k, v in it:
                    if k != applied_key:
                        yield k[cut:], v
            finally:
                it.close()
                snap.close()

        return index, items()

    def install(self, items: Iterator[tuple[bytes, bytes]], index: int) -> None:
        """Replace the whole state with ``items`` (pairs from :meth:`snapshot_items`) at ``index``."""
        gen = self._node.next_generation(self._raw_name)
        prefix = _prefix(self._raw_name, gen)
        applied_key = prefix + SYSTEM + _APPLIED
        db = self._db
        try:
            wb = db.write_batch()
            n = 0
            for k, v in items:
                if not (k.startswith(DATA) or k.startswith(SYSTEM)) or k == SYSTEM + _APPLIED:
                    raise StorageError("snapshot holds a key outside the known prefixes")
                wb.put(prefix + k, v)
                n += 1
                if n % 10000 == 0:
                    wb.write()
                    wb = db.write_batch()
            wb.write()
            # the switch: the new generation's index and the pointer to it, in one synced write
            with db.write_batch(sync=True) as last:
                last.put(applied_key, _KEY.pack(index))
                last.put(_CURRENT + self._raw_name, _KEY.pack(gen))
        except BaseException:
            self._node._schedule_purge(prefix)  # what was written of it is garbage
            raise
        with self._lock:
            for view in list(self._views):  # they read the replaced state; a reader starts over
                view.release()
            old = self._prefix
            self._use(gen)
            self._applied = index
            self._recent.reset(index)
            self.unflushed_bytes = 0
        self._node._schedule_purge(old)

    def raw_items(self, data: tuple[int, int], system_prefixes: tuple[bytes, ...]) -> Iterator[tuple[bytes, bytes]]:
        """Pairs (replica key, value), from one consistent view, of the data keys in half-open
        ``data`` and of the system entries under ``system_prefixes``: what a split hands to the new
        shard (fed to :meth:`install` of its store)."""
        with self._lock:
            snap = self._db.snapshot()
            cut, system = len(self._prefix), self._system
            ranges = [(self._bound(data[0]), self._bound(data[1])),
                      *((system + p, system + p + b"\xff" * 64) for p in system_prefixes)]
        try:
            for lo, hi in ranges:
                it = snap.iterator(start=lo, stop=hi)
                try:
                    for k, v in it:
                        yield k[cut:], v
                finally:
                    it.close()
        finally:
            snap.close()

    def key_span(self, start: int, end: int) -> tuple[int, int] | None:
        """The smallest and the largest key in ``[start, end)``, or None if it holds none."""
        with self._lock:
            lo_b, hi_b, cut = self._bound(start), self._bound(end), len(self._data)
            first = self._db.iterator(start=lo_b, stop=hi_b, include_value=False)
            # not lo_b: with one key, at ``start``, plyvel's reverse iterator would yield nothing,
            # and a stripe would take a segment that holds a row (found by the fault lab, seed 26)
            last = self._db.iterator(start=self._reverse_start(start), stop=hi_b, include_value=False,
                                     reverse=True)
            try:
                lo, hi = next(first, None), next(last, None)
            finally:
                first.close()
                last.close()
        if lo is None or hi is None:
            return None
        return _KEY.unpack_from(lo, cut)[0], _KEY.unpack_from(hi, cut)[0]

    def estimate(self, start: int, end: int, sample: int = 10_000) -> tuple[int, int]:
        """Approximate ``(bytes, keys)`` of the rows in ``[start, end)``, cheaply.

        Exact when the range holds at most ``sample`` rows.  Otherwise bytes are LevelDB's
        on-disk estimate plus what was written since this store opened and may still sit in
        the memtable (which LevelDB does not count), and keys are bytes over the mean row
        size of the first ``sample`` rows.  Sizes count replica keys (9 bytes), not the prefix.
        """
        size = count = 0
        overhead = len(self._prefix)
        with self._lock:
            it = self._db.iterator(start=self._bound(start), stop=self._bound(end))
            try:
                for k, v in it:
                    size += len(k) - overhead + len(v)
                    count += 1
                    if count > sample:
                        break
                else:
                    return size, count
            finally:
                it.close()
            on_disk = self._db.approximate_size(self._bound(start), self._bound(end))
            if on_disk != self._last_on_disk:  # LevelDB flushed (or compacted): start counting afresh
                self._last_on_disk, self.unflushed_bytes = on_disk, 0
        total = max(on_disk + self.unflushed_bytes, size)
        return total, max(count, total * count // max(size, 1))

    def median_key(self, start: int, end: int, exact_up_to: int = 200_000) -> int | None:
        """A key near the middle of ``[start, end)`` by bytes (None if it holds under 2 keys).

        Counts keys exactly while the range is small; beyond ``exact_up_to`` keys, bisects the
        key space on LevelDB's size estimates (about 64 cheap calls).
        """
        span = self.key_span(start, end)
        if span is None or span[0] == span[1]:
            return None
        with self._lock:
            cut = len(self._data)
            it = self._db.iterator(start=self._bound(start), stop=self._bound(end), include_value=False)
            try:
                keys = [k for k, _ in zip(it, range(exact_up_to + 1), strict=False)]
            finally:
                it.close()
            if len(keys) <= exact_up_to:
                return _KEY.unpack_from(keys[len(keys) // 2], cut)[0]
            lo, hi = span
            whole = self._db.approximate_size(self._bound(lo), self._bound(hi + 1))
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if self._db.approximate_size(self._bound(span[0]), self._bound(mid)) * 2 < whole:
                    lo = mid
                else:
                    hi = mid
        return hi if span[0] < hi <= span[1] else None

    def chunk_cuts(self, start: int, end: int, rows_per_chunk: int, sample: tuple[int, int, int],
                   max_cuts: int = 64, cells: int = 256) -> list[int]:
        """Keys cutting ``[start, end)`` into chunks of about ``rows_per_chunk`` rows, ascending
        (empty: too small to cut, or no estimate).

        ``sample`` ``(lo, hi, rows)``: a page just read held ``rows`` rows in ``[lo, hi)``; with
        LevelDB's on-disk size of that range it turns on-disk bytes (compressed) into rows.  The
        range's key span is divided into ``cells`` equal key intervals whose on-disk sizes come
        from one LevelDB call, and the cuts fall on cell edges.  Data still in the memtable counts
        as nothing there: when LevelDB can size none of the range or none of the page (all of it
        recent, say, as a time series' newest rows are), the cuts divide the key span evenly at
        the page's own density instead (:meth:`_cuts_by_span`).  Cheap (a few seeks and one size
        call), and only an estimate: a chunk may hold many more or fewer rows than asked.
        """
        span = self.key_span(start, end)
        if span is None or span[0] == span[1] or rows_per_chunk <= 0 or max_cuts <= 0 or sample[2] <= 0:
            return []
        lo, hi = span[0], span[1] + 1
        step = max(1, -(-(hi - lo) // cells))
        edges = list(range(lo, hi, step)) + [hi]
        with self._lock:
            sampled = self._db.approximate_size(self._bound(sample[0]), self._bound(sample[1]))
            sizes = self._db.approximate_sizes(*((self._bound(a), self._bound(b))
                                                 for a, b in itertools.pairwise(edges)))
        total = sum(sizes)
        if sampled <= 0 or total <= 0:
            return self._cuts_by_span(lo, hi, rows_per_chunk, sample, max_cuts)
        chunk_bytes = max(1.0, rows_per_chunk * sampled / sample[2])
        parts = min(max_cuts + 1, int(total // chunk_bytes))
        if parts < 2:
            return []
        cuts: list[int] = []
        done = 0
        for edge, size in zip(edges[1:-1], sizes, strict=False):
            done += size
            if done * parts >= total * (len(cuts) + 1) and start < edge < end:
                cuts.append(edge)
                if len(cuts) == parts - 1:
                    break
        return cuts

    def _cuts_by_span(self, lo: int, hi: int, rows_per_chunk: int, sample: tuple[int, int, int],
                      max_cuts: int) -> list[int]:
        """:meth:`chunk_cuts` for keys LevelDB cannot size yet: ``[lo, hi)`` (the span of the keys
        to cut) in equal key intervals, as many as the page's density of rows per key gives."""
        page = self.key_span(sample[0], sample[1])
        if page is None or sample[2] < 2 or page[1] <= page[0]:
            return []  # one row, or one key: no density to go by
        rows = (sample[2] - 1) * (hi - lo) // (page[1] - page[0])
        parts = min(max_cuts + 1, rows // rows_per_chunk)
        if parts < 2:
            return []
        return sorted({lo + (hi - lo) * i // parts for i in range(1, parts)} - {lo})

    def approximate_size(self) -> int:
        """LevelDB's on-disk size estimate of the user data (0 for data still in the memtable)."""
        with self._lock:
            return self._db.approximate_size(self._data, self._data_end)

    def _check(self) -> None:
        """Assert the module's rules on the current state; read-only (tests call it after every step).

        The applied index in memory is the one stored in the database (the same batch wrote
        both); every key of this replica's generation is a data key (prefix + ``b"k"`` + 8 bytes)
        or a system key, so no write escaped the key layout; the node's pointer names the
        generation in use; open views are tracked, closed ones are not; this store holds its name.
        """
        with self._lock:
            assert not self._closed, "store is closed"
            raw = self._db.get(self._applied_key)
            stored = _KEY.unpack(raw)[0] if raw is not None else 0
            assert stored == self._applied, f"applied index {self._applied} in memory, {stored} stored"
            it = self._db.iterator(prefix=self._prefix, include_value=False)
            try:
                for key in it:
                    if key.startswith(self._data):
                        assert len(key) == len(self._data) + _KEY.size, f"malformed data key {key!r}"
                    else:
                        assert key.startswith(self._system), f"key {key!r} outside the known prefixes"
            finally:
                it.close()
            assert self._node.current(self._raw_name) == self._gen, "the node's pointer names another generation"
            assert all(not v.closed for v in self._views), "a closed view is still tracked"
        assert self._raw_name in self._node._open, "replica not registered as open"

    def close(self) -> None:
        """Close this replica (and the database, if it is the store's own)."""
        with self._lock:
            for view in list(self._views):
                view.release()
            if self._closed:
                return
            self._closed = True
        self._node.unclaim(self._raw_name)
        if self._owned:
            self._node.close()


def migrate_legacy(store: ShardStore, path: str) -> bool:
    """Move a replica kept in a LevelDB of its own at ``path`` (the layout before one database per
    node: ``CURRENT`` naming a ``db-<gen>`` directory) into ``store``, then delete ``path``.

    Safe to repeat: the install is atomic and the old directory goes only after it, so a crash in
    between migrates again at the next start.  False if ``path`` holds no such replica.
    """
    try:
        with open(os.path.join(path, "CURRENT"), "rb") as f:
            gen = int(f.read().strip() or b"0")
    except FileNotFoundError:
        return False
    except ValueError as exc:
        raise StorageError(f"{path}: unreadable CURRENT file: {exc}") from exc
    old = os.path.join(path, f"db-{gen}")
    if os.path.isdir(old):
        try:
            db = plyvel.DB(old, create_if_missing=False)
        except plyvel.Error as exc:
            raise StorageError(f"cannot open {old} to migrate it: {exc}") from exc
        try:
            applied = db.get(SYSTEM + _APPLIED)
            it = db.iterator()
            try:
                store.install(((k, v) for k, v in it if k != SYSTEM + _APPLIED),
                              _KEY.unpack(applied)[0] if applied else 0)
            finally:
                it.close()
        finally:
            db.close()
    shutil.rmtree(path)
    fsync_dir(os.path.dirname(path))
    return True


class StoreView:
    """A LevelDB snapshot of one store: pages of a long scan all see the same state.

    ``index`` is the Raft index of the state it shows: within ``bounds`` only, if not None (a view
    opened by :meth:`ShardStore.open_view_at`).  Several readers may hold one view (:meth:`share`);
    the snapshot goes when the last of them closes it.
    """

    def __init__(self, store: ShardStore, snapshot: Any, index: int, bounds: tuple[int, int] | None = None) -> None:
        self._store = store
        self._snap = snapshot
        self.index = index
        self.bounds = bounds
        self._holders = 1
        # Its own lock, not the store's: a long page must not stall the Raft thread's writes.
        self._lock = threading.Lock()

    def share(self) -> StoreView:
        """One more holder of this view (each holder closes it once); returns the view."""
        with self._lock:
            if self._snap is None:
                raise StorageError("this view of the store was closed")
            self._holders += 1
        return self

    @property
    def closed(self) -> bool:
        """True once closed (explicitly, or because the store installed a snapshot or closed)."""
        return self._snap is None

    def scan(self, start: int, end: int, *, reverse: bool = False, limit: int = 1000, max_bytes: int = 1 << 20,
             filter: Filter | None = None, max_examined: int = 200_000,
             deadline: float | None = None) -> tuple[list[Row], int | None]:
        """Same contract as :meth:`ShardStore.scan`, against the frozen state; ``deadline``
        (``time.monotonic()``) ends the page early, with a ``resume``."""
        return _rows(self.scan_raw(start, end, reverse=reverse, limit=limit, max_bytes=max_bytes, filter=filter,
                                   max_examined=max_examined, deadline=deadline))

    def scan_raw(self, start: int, end: int, *, reverse: bool = False, limit: int = 1000,
                 max_bytes: int = 1 << 20, filter: Filter | None = None, max_examined: int = 200_000,
                 deadline: float | None = None) -> tuple[bytes, list[bytes], int | None]:
        """Like :meth:`scan`, but keys come as one blob of raw 9-byte store keys (:func:`decode_raw_keys`).

        The wire format of a scan page: no per-row work on the server beyond reading.
        """
        with self._lock:
            if self._snap is None:
                raise StorageError("this view of the store was closed")
            return _scan_page(self._store, self._snap, start, end, reverse, limit, max_bytes, filter, max_examined,
                              deadline)

    def close(self) -> None:
        """Let go of the view; the last holder's close releases the snapshot (waits for a page
        being read from it)."""
        with self._lock:
            self._holders -= 1
            if self._holders > 0:
                return
        self.release()

    def release(self) -> None:
        """Release the snapshot now, whoever still holds the view (the store replaced or closed)."""
        with self._lock:
            self._holders = 0
            if self._snap is not None:
                self._snap.close()
                self._snap = None
        self._store._views.discard(self)


def _scan_page(store: ShardStore, source: Any, start: int, end: int, reverse: bool, limit: int, max_bytes: int,
               filter: Filter | None, max_examined: int,
               deadline: float | None = None) -> tuple[bytes, list[bytes], int | None]:
    """One page of ``store`` read from ``source`` (its database or a snapshot of it): its replica
    keys (``b"k"`` + 8 bytes, the wire form) joined in one blob, their values, and where to resume.

    See :meth:`ShardStore.scan` for the bounds.
    """
    if filter is None:
        return _plain_page(store, source, start, end, reverse, min(limit, max_examined), max_bytes, deadline)
    keys: list[bytes] = []
    values: list[bytes] = []
    size = examined = 0
    cut = len(store._prefix)
    at = cut + len(DATA)
    unpack = _KEY.unpack_from
    # How often to read the clock: every 256 rows when a row costs only a read, but after every
    # row under a filter, whose per-row cost the caller chooses (a long LIKE over a 1 MiB value
    # costs milliseconds); a clock read is cheap next to any filter call. At least one row is
    # always examined, so every page makes progress.
    clock_mask = 0 if filter is not None else 255
    lower = store._reverse_start(start) if reverse else store._bound(start)
    it = source.iterator(start=lower, stop=store._bound(end), reverse=reverse)
    try:
        for raw, value in it:
            if (len(keys) >= limit or (keys and size + len(value) + 8 > max_bytes) or examined >= max_examined
                    or (deadline is not None and examined and examined & clock_mask == clock_mask
                        and time.monotonic() > deadline)):
                key = unpack(raw, at)[0]
                return b"".join(keys), values, key + 1 if reverse else key
            examined += 1
            if filter is not None and not filter(unpack(raw, at)[0], value):
                continue
            keys.append(raw[cut:])
            values.append(value)
            size += len(value) + 8
    finally:
        it.close()
    return b"".join(keys), values, None


_PLAIN_CHUNK = 256  # rows of a plain page read between two looks at the clock


def _plain_page(store: ShardStore, source: Any, start: int, end: int, reverse: bool, limit: int, max_bytes: int,
                deadline: float | None) -> tuple[bytes, list[bytes], int | None]:
    """:func:`_scan_page` without a filter, where every row read is a row returned: the row count
    is bounded by ``islice``, the loop keeps only the byte count, and the keys are cut out of the
    joined store keys by :func:`_wire_keys`.  A scan's node spent a fifth of its time on the
    general loop's per-row tests and slices.
    """
    raws: list[bytes] = []
    values: list[bytes] = []
    size = 0
    lower = store._reverse_start(start) if reverse else store._bound(start)
    it = source.iterator(start=lower, stop=store._bound(end), reverse=reverse)
    try:
        while len(raws) < limit:
            before = len(raws)
            asked = min(limit - before, _PLAIN_CHUNK)
            for raw, value in itertools.islice(it, asked):
                size += len(value) + 8
                if size > max_bytes and raws:
                    return _wire_keys(store, raws), values, _resume(store, raw, reverse)
                raws.append(raw)
                values.append(value)
            if len(raws) - before < asked:
                return _wire_keys(store, raws), values, None  # the range ran out
            if deadline is not None and time.monotonic() > deadline:
                break
        following = next(it, None)
    finally:
        it.close()
    return _wire_keys(store, raws), values, None if following is None else _resume(store, following[0], reverse)


def _resume(store: ShardStore, raw: bytes, reverse: bool) -> int:
    """Where a page that stops before store key ``raw`` resumes (an exclusive end if ``reverse``)."""
    key = _KEY.unpack_from(raw, len(store._prefix) + len(DATA))[0]
    return key + 1 if reverse else key


def _wire_keys(store: ShardStore, raws: list[bytes]) -> bytes:
    """The wire blob of a page's keys: each store key without its replica prefix, joined.

    Every data key of a replica has the same length, so the blob is built column by column (one
    strided copy per byte of a wire key) rather than by slicing each key.
    """
    if not raws:
        return b""
    cut = len(store._prefix)
    stride = cut + len(DATA) + _KEY.size
    width = stride - cut
    joined = b"".join(raws)
    if len(joined) != stride * len(raws):  # not one length: cannot happen in a replica's data keys
        return b"".join(raw[cut:] for raw in raws)
    out = bytearray(width * len(raws))
    for j in range(width):
        out[j::width] = joined[cut + j::stride]
    return bytes(out)


def _rows(page: tuple[bytes, list[bytes], int | None]) -> tuple[list[Row], int | None]:
    blob, values, resume = page
    return list(zip(decode_raw_keys(blob), values, strict=True)), resume

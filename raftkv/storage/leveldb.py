"""A shard replica's state, kept in LevelDB.

Rules this module keeps:

* **Applied index in the same batch.**  Every write carries the Raft index it
  applies, stored under a system key in the *same* ``WriteBatch`` as the data,
  so after any crash LevelDB holds a prefix of the applied log and says exactly
  how long that prefix is.  Re-applying an entry at or below it is a no-op,
  which makes log replay idempotent.
* **Writes are not fsynced one by one.**  The Raft journal is the durable
  record; LevelDB state can always be rebuilt from it down to the last
  snapshot.  :meth:`ShardStore.make_durable` (a ``sync=True`` write, which
  LevelDB turns into an fsync of its log after all earlier writes) is called
  before the journal is compacted past what LevelDB holds.
* **Snapshots install atomically.**  A snapshot is loaded into a fresh
  ``db-<gen>`` directory; a fsynced ``CURRENT`` file then names it.  A crash
  leaves either the old state or the new one, never a mixture.
* **One open per directory per process.**  LevelDB 1.22 drops its lock file
  descriptor after a failed second open in the same process, which silently
  lets another process in.  A process-wide registry refuses the second open
  before LevelDB sees it.

Keys: user data under ``b"k" + 8-byte big-endian key``; system entries under
``b"s" + name``.  The prefix keeps system keys out of every user scan.
"""

from __future__ import annotations

import os
import shutil
import struct
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import plyvel

from ..errors import StorageError
from ..protocol.pages import KEY_RECORD, decode_raw_keys

DATA = b"k"
SYSTEM = b"s"
_DATA_END = b"l"  # first prefix after DATA
_APPLIED = SYSTEM + b"applied"
_KEY = struct.Struct(">Q")
_PREFIXED = KEY_RECORD  # b"k" + big-endian u64: the stored form is also the wire form of a page

_open_paths: set[str] = set()
_open_lock = threading.Lock()

Row = tuple[int, bytes]
Filter = Callable[[int, bytes], bool]


def _dkey(key: int) -> bytes:
    return DATA + _KEY.pack(key)


def _bound(key: int) -> bytes:
    """Encoded lower/upper bound for a half-open key range end; 2**64 maps past all data."""
    return _DATA_END if key >= 2**64 else _dkey(key)


def _reverse_start(key: int) -> bytes:
    """Lower bound for a *reverse* iterator over keys ``>= key``: never itself a stored key.

    plyvel 1.5.1's reverse iterator ends at once when the greatest key in range equals ``start``
    (its first step tests ``Compare(start, key) >= 0``, ignoring ``include_start``): a reverse
    page whose only row was the range's first key came back empty, so a reverse scan lost its
    last row.  A bound just below ``_dkey(key)`` that no stored key can equal sidesteps that.
    """
    if key >= 2**64:
        return _DATA_END
    return DATA if key == 0 else _dkey(key - 1) + b"\x00"  # 10 bytes: above key - 1, below key


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


def _open_db(path: str) -> plyvel.DB:
    return plyvel.DB(path, create_if_missing=True, bloom_filter_bits=10, max_open_files=256,
                     lru_cache_size=8 << 20, write_buffer_size=4 << 20)


class ShardStore:
    """The LevelDB state of one replica.  Writes come from the Raft thread only; reads from anywhere."""

    def __init__(self, path: str) -> None:
        self.path = os.path.realpath(path)
        with _open_lock:
            if self.path in _open_paths:
                raise StorageError(f"{self.path} is already open in this process")
            _open_paths.add(self.path)
        try:
            os.makedirs(self.path, exist_ok=True)
            self._gen = self._read_current()
            self._db = _open_db(self._gen_dir(self._gen))
        except plyvel.Error as exc:
            self._release()
            raise StorageError(f"cannot open {self.path}: {exc}") from exc
        except BaseException:
            self._release()
            raise
        self._lock = threading.RLock()  # guards self._db against a snapshot swap
        self._views: set[StoreView] = set()
        self._applied = self._load_applied()
        self.unflushed_bytes = 0  # written since open: may still be in the memtable (see estimate())
        self._last_on_disk = 0
        self._drop_stale_generations()

    # --- layout -------------------------------------------------------------------------------

    def _gen_dir(self, gen: int) -> str:
        return os.path.join(self.path, f"db-{gen}")

    def _read_current(self) -> int:
        try:
            with open(os.path.join(self.path, "CURRENT"), "rb") as f:
                return int(f.read().strip() or b"0")
        except FileNotFoundError:
            return 0

    def _drop_stale_generations(self) -> None:
        for name in os.listdir(self.path):
            if name.startswith("db-") and name != f"db-{self._gen}":
                shutil.rmtree(os.path.join(self.path, name), ignore_errors=True)

    def _load_applied(self) -> int:
        raw = self._db.get(_APPLIED)
        return _KEY.unpack(raw)[0] if raw else 0

    def _release(self) -> None:
        with _open_lock:
            _open_paths.discard(self.path)

    # --- reads --------------------------------------------------------------------------------

    @property
    def applied_index(self) -> int:
        """Raft index of the last entry reflected in this store (0 when empty)."""
        return self._applied

    def get(self, key: int) -> bytes | None:
        """The value under ``key``, or None."""
        with self._lock:
            return self._db.get(_dkey(key))

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
            return _rows(_scan_page(self._db, start, end, reverse, limit, max_bytes, filter, max_examined))

    def open_view(self) -> StoreView:
        """A frozen, consistent view of the store for paging through a large scan."""
        with self._lock:
            view = StoreView(self, self._db.snapshot())
            self._views.add(view)
            return view

    # --- writes (Raft thread only) ----------------------------------------------------------

    def apply(self, index: int, puts: list[tuple[int, bytes]] = (), deletes: list[int] = (),
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
            with self._db.write_batch(sync=sync) as wb:
                for key, value in puts:
                    self.unflushed_bytes += len(value) + 9
                    wb.put(_dkey(key), value)
                for key in deletes:
                    wb.delete(_dkey(key))
                if delete_span is not None:
                    self.unflushed_bytes = 0  # an under-estimate is harmless; counting twice splits again
                    it = self._db.iterator(start=_bound(delete_span[0]), stop=_bound(delete_span[1]),
                                           include_value=False)
                    try:
                        for raw in it:
                            wb.delete(raw)
                    finally:
                        it.close()
                for name, raw in (system or {}).items():
                    if raw is None:
                        wb.delete(SYSTEM + name)
                    else:
                        wb.put(SYSTEM + name, raw)
                wb.put(_APPLIED, _KEY.pack(index))
        self._applied = index
        return True

    def put_system(self, name: bytes, value: bytes) -> None:
        """Set a system entry outside any Raft entry: only for values every replica derives alike
        (a shard's initial bounds, from the deterministic initial map)."""
        with self._lock:
            self._db.put(SYSTEM + name, value)

    def get_system(self, name: bytes) -> bytes | None:
        """A system entry (e.g. the meta group's shard map)."""
        with self._lock:
            return self._db.get(SYSTEM + name)

    @property
    def generation(self) -> int:
        """Changes whenever an installed snapshot replaces the whole state (caches of it are stale)."""
        return self._gen

    def system_items(self, start: bytes, stop: bytes, limit: int) -> list[tuple[bytes, bytes]]:
        """Up to ``limit`` system entries ``(name, value)`` with names in ``[start, stop)``, in order."""
        with self._lock:
            it = self._db.iterator(start=SYSTEM + start, stop=SYSTEM + stop)
            try:
                return [(k[len(SYSTEM):], v) for (k, v), _ in zip(it, range(limit), strict=False)]
            finally:
                it.close()

    def system_names(self, start: bytes, stop: bytes, limit: int) -> list[bytes]:
        """Up to ``limit`` names of system entries in ``[start, stop)``, in order."""
        with self._lock:
            it = self._db.iterator(start=SYSTEM + start, stop=SYSTEM + stop, include_value=False)
            try:
                return [k[len(SYSTEM):] for k, _ in zip(it, range(limit), strict=False)]
            finally:
                it.close()

    def apply_system(self, index: int, name: bytes, value: bytes) -> bool:
        """Set a system entry as the effect of Raft entry ``index``; False if already applied."""
        if index <= self._applied:
            return False
        with self._lock:
            with self._db.write_batch() as wb:
                wb.put(SYSTEM + name, value)
                wb.put(_APPLIED, _KEY.pack(index))
        self._applied = index
        return True

    def make_durable(self) -> None:
        """fsync everything written so far (LevelDB syncs its log, which holds all earlier writes)."""
        with self._lock:
            self._db.put(_APPLIED, _KEY.pack(self._applied), sync=True)

    # --- snapshots ----------------------------------------------------------------------------

    def snapshot_items(self) -> tuple[int, Iterator[tuple[bytes, bytes]]]:
        """A consistent view: its applied index and an iterator of every raw (key, value), system keys included."""
        with self._lock:
            snap = self._db.snapshot()
            applied = snap.get(_APPLIED)
        index = _KEY.unpack(applied)[0] if applied else 0

        def items() -> Iterator[tuple[bytes, bytes]]:
            it = snap.iterator()
            try:
                for k, v in it:
                    if k != _APPLIED:
                        yield k, v
            finally:
                it.close()
                snap.close()

        return index, items()

    def install(self, items: Iterator[tuple[bytes, bytes]], index: int) -> None:
        """Replace the whole state with ``items`` (raw pairs from :meth:`snapshot_items`) at ``index``."""
        gen = self._gen + 1
        new_dir = self._gen_dir(gen)
        shutil.rmtree(new_dir, ignore_errors=True)
        db = _open_db(new_dir)
        try:
            wb = db.write_batch()
            n = 0
            for k, v in items:
                if not (k.startswith(DATA) or k.startswith(SYSTEM)) or k == _APPLIED:
                    raise StorageError("snapshot holds a key outside the known prefixes")
                wb.put(k, v)
                n += 1
                if n % 10000 == 0:
                    wb.write()
                    wb = db.write_batch()
            wb.put(_APPLIED, _KEY.pack(index))
            wb.write()
            db.put(_APPLIED, _KEY.pack(index), sync=True)
        except BaseException:
            db.close()
            shutil.rmtree(new_dir, ignore_errors=True)
            raise
        write_file_atomic(os.path.join(self.path, "CURRENT"), str(gen).encode())
        with self._lock:
            for view in list(self._views):  # they read the old database, which is going away
                view.close()
            old, self._db, self._gen = self._db, db, gen
            self._applied = index
            old.close()
        self._drop_stale_generations()

    def raw_items(self, data: tuple[int, int], system_prefixes: tuple[bytes, ...]) -> Iterator[tuple[bytes, bytes]]:
        """Raw pairs, from one consistent view, of the data keys in half-open ``data`` and of the
        system entries under ``system_prefixes``: what a split hands to the new shard (fed to
        :meth:`install` of its store)."""
        with self._lock:
            snap = self._db.snapshot()
        try:
            for lo, hi in [(_bound(data[0]), _bound(data[1])),
                           *((SYSTEM + p, SYSTEM + p + b"\xff" * 64) for p in system_prefixes)]:
                it = snap.iterator(start=lo, stop=hi)
                try:
                    yield from it
                finally:
                    it.close()
        finally:
            snap.close()

    def key_span(self, start: int, end: int) -> tuple[int, int] | None:
        """The smallest and the largest key in ``[start, end)``, or None if it holds none."""
        with self._lock:
            first = self._db.iterator(start=_bound(start), stop=_bound(end), include_value=False)
            last = self._db.iterator(start=_bound(start), stop=_bound(end), include_value=False, reverse=True)
            try:
                lo, hi = next(first, None), next(last, None)
            finally:
                first.close()
                last.close()
        if lo is None or hi is None:
            return None
        return _KEY.unpack(lo[1:])[0], _KEY.unpack(hi[1:])[0]

    def estimate(self, start: int, end: int, sample: int = 10_000) -> tuple[int, int]:
        """Approximate ``(bytes, keys)`` of the rows in ``[start, end)``, cheaply.

        Exact when the range holds at most ``sample`` rows.  Otherwise bytes are LevelDB's
        on-disk estimate plus what was written since this store opened and may still sit in
        the memtable (which LevelDB does not count), and keys are bytes over the mean row
        size of the first ``sample`` rows.
        """
        size = count = 0
        with self._lock:
            it = self._db.iterator(start=_bound(start), stop=_bound(end))
            try:
                for k, v in it:
                    size += len(k) + len(v)
                    count += 1
                    if count > sample:
                        break
                else:
                    return size, count
            finally:
                it.close()
            on_disk = self._db.approximate_size(_bound(start), _bound(end))
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
            it = self._db.iterator(start=_bound(start), stop=_bound(end), include_value=False)
            try:
                keys = [k for k, _ in zip(it, range(exact_up_to + 1), strict=False)]
            finally:
                it.close()
            if len(keys) <= exact_up_to:
                return _KEY.unpack(keys[len(keys) // 2][1:])[0]
            lo, hi = span
            whole = self._db.approximate_size(_bound(lo), _bound(hi + 1))
            while hi - lo > 1:
                mid = (lo + hi) // 2
                if self._db.approximate_size(_bound(span[0]), _bound(mid)) * 2 < whole:
                    lo = mid
                else:
                    hi = mid
        return hi if span[0] < hi <= span[1] else None

    def approximate_size(self) -> int:
        """LevelDB's on-disk size estimate of the user data (0 for data still in the memtable)."""
        with self._lock:
            return self._db.approximate_size(DATA, _DATA_END)

    def _check(self) -> None:
        """Assert the module's rules on the current state; read-only (tests call it after every step).

        The applied index in memory is the one stored in the database (the same batch wrote
        both); every stored key is a data key (``b"k"`` + 8 bytes) or a system key, so no write
        escaped the key layout; ``CURRENT`` names the one live generation, and no other
        generation directory is left; open views are tracked, closed ones are not; this process
        holds the directory's registry entry.
        """
        with self._lock:
            assert self._db is not None, "store is closed"
            raw = self._db.get(_APPLIED)
            stored = _KEY.unpack(raw)[0] if raw is not None else 0
            assert stored == self._applied, f"applied index {self._applied} in memory, {stored} stored"
            it = self._db.iterator(include_value=False)
            try:
                for key in it:
                    if key.startswith(DATA):
                        assert len(key) == len(DATA) + _KEY.size, f"malformed data key {key!r}"
                    else:
                        assert key.startswith(SYSTEM), f"key {key!r} outside the known prefixes"
            finally:
                it.close()
            assert self._read_current() == self._gen, f"CURRENT names {self._read_current()}, open is {self._gen}"
            generations = sorted(n for n in os.listdir(self.path) if n.startswith("db-"))
            assert generations == [f"db-{self._gen}"], f"generation directories {generations}"
            assert all(not v.closed for v in self._views), "a closed view is still tracked"
        with _open_lock:
            assert self.path in _open_paths, "directory not registered as open"

    def close(self) -> None:
        """Close the database and release the directory for another open."""
        with self._lock:
            for view in list(self._views):
                view.close()
            if self._db is not None:
                self._db.close()
                self._db = None
        self._release()


class StoreView:
    """A LevelDB snapshot of one store: pages of a long scan all see the same state."""

    def __init__(self, store: ShardStore, snapshot: Any) -> None:
        self._store = store
        self._snap = snapshot
        # Its own lock, not the store's: a long page must not stall the Raft thread's writes.
        self._lock = threading.Lock()

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
            return _scan_page(self._snap, start, end, reverse, limit, max_bytes, filter, max_examined, deadline)

    def close(self) -> None:
        """Release the snapshot (waits for a page being read from it)."""
        with self._lock:
            if self._snap is not None:
                self._snap.close()
                self._snap = None
        self._store._views.discard(self)


def _scan_page(source: Any, start: int, end: int, reverse: bool, limit: int, max_bytes: int,
               filter: Filter | None, max_examined: int,
               deadline: float | None = None) -> tuple[bytes, list[bytes], int | None]:
    """One page: its raw store keys joined in one blob, their values, and where to resume.

    See :meth:`ShardStore.scan` for the bounds.
    """
    keys: list[bytes] = []
    values: list[bytes] = []
    size = examined = 0
    unpack = _PREFIXED.unpack
    # How often to read the clock: every 256 rows when a row costs only a read, but after every
    # row under a filter, whose per-row cost the caller chooses (a long LIKE over a 1 MiB value
    # costs milliseconds); a clock read is cheap next to any filter call. At least one row is
    # always examined, so every page makes progress.
    clock_mask = 0 if filter is not None else 255
    lower = _reverse_start(start) if reverse else _bound(start)
    it = source.iterator(start=lower, stop=_bound(end), reverse=reverse)
    try:
        for raw, value in it:
            if (len(keys) >= limit or (keys and size + len(value) + 8 > max_bytes) or examined >= max_examined
                    or (deadline is not None and examined and examined & clock_mask == clock_mask
                        and time.monotonic() > deadline)):
                key = unpack(raw)[1]
                return b"".join(keys), values, key + 1 if reverse else key
            examined += 1
            if filter is not None and not filter(unpack(raw)[1], value):
                continue
            keys.append(raw)
            values.append(value)
            size += len(value) + 8
    finally:
        it.close()
    return b"".join(keys), values, None


def _rows(page: tuple[bytes, list[bytes], int | None]) -> tuple[list[Row], int | None]:
    blob, values, resume = page
    return list(zip(decode_raw_keys(blob), values, strict=True)), resume

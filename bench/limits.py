"""What this machine allows, measured in one run: the ceilings raftkv's own figures are put beside.

    python bench/limits.py [--quick] [--only NAME[,NAME]] [--iter-keys N]

Prints JSON lines, one per figure: ``{"bench": "limits", "what": ..., "value": ..., "unit": ...}``
plus a few fields saying how it was measured.  ``--quick`` makes everything small (a few seconds in
all); the default run takes well under a minute.  Temporary files live in a ``tempfile`` directory
that is removed at the end.  ``NAME`` is one of the groups below.

``leveldb_batch`` -- ``leveldb_sync_batch_keys`` (keys/s) and ``leveldb_sync_batches`` (batches/s):
    ``write_batch(sync=True)`` of 1,000 keys (8-byte big-endian, 100-byte values) into a LevelDB
    opened with raftkv's options.  This is how a node makes its Raft log durable (one synced batch
    per loop iteration).  It bounds **bulk load**: with 3 replicas on one machine every key is
    written, and fsynced, three times by the same cores and disk, so ingest cannot pass a third of
    this (and applying each entry to the state machine costs a second, unsynced, write on top).

``leveldb_iterate`` -- ``leveldb_iterate_keys`` (keys/s): a plain iterator, keys and values, over a
    LevelDB pre-filled with ``--iter-keys`` keys (1M by default), best of two passes (the second runs
    from a warm cache, as a scan right after a load does).  It bounds a **scan** on the node side:
    every row a scan returns is first read this way, with nothing else done to it.

``msgpack`` -- ``msgpack_pack_rows`` and ``msgpack_unpack_rows`` (rows/s): ``packb``/``unpackb`` of
    pages of 4,000 rows ``[key, value]`` (u64 keys, 100-byte values), as raftkv's codec calls them.
    A single-client scan is bounded by **decoding**: one client process, so one core, has to decode
    every row the nodes send, whatever the number of shards.  (Scan pages send keys as one blob
    and values as an array, which decodes faster than rows: the row figure is the conservative one.)

``tcp`` -- ``tcp_loopback_throughput`` (MB/s, 1 MiB sends) and ``tcp_loopback_roundtrips``
    (round trips/s of 100-byte ping-pong, TCP_NODELAY), between this process and a child process on
    127.0.0.1.  Large values (**put_1MiB**) cross loopback three times (client to leader, leader to
    two followers), so MB/s of 1 MiB puts is bounded by a third of the throughput.  A request with
    one in flight (**put, 1 in flight**) costs at least two round trips (client-leader,
    leader-follower).

``fdatasync`` -- ``fdatasync_p50``, ``fdatasync_p99``, ``fdatasync_mean`` (µs, written ``us``):
    append 100 bytes to a small file and ``os.fdatasync`` it, as a journal does.  A put with one
    request in flight waits for at least one of these (leader and follower fsync in parallel), so
    **put, 1 in flight** cannot beat ``1 / (fdatasync_p50 + 2 round trips)``.

Figures from one run only: absolute numbers drift by up to 30 % between runs on these shared
machines, so compare a raftkv figure with the limits measured next to it.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import shutil
import socket
import struct
import sys
import tempfile
import time
from collections.abc import Callable
from typing import Any

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

import msgpack  # noqa: E402
import plyvel  # noqa: E402

from raftkv.storage.leveldb import CACHE_BYTES, MAX_OPEN_FILES, WRITE_BUFFER_BYTES  # noqa: E402

T0 = 1_763_700_000_000_000_000  # keys look like the nanosecond timestamps the other benches write
VALUE = b"v" * 100  # the value bench/quick.py and bench/compare_etcd.py write
BATCH_KEYS = 1000
PAGE_ROWS = 4000  # AsyncClient's default page_keys
PING_BYTES = 100
SEND_CHUNK = 1 << 20


@dataclasses.dataclass(frozen=True)
class Budget:
    """How much work each measurement does: seconds for the timed loops, counts for the others."""

    batch_seconds: float
    iter_keys: int
    msgpack_seconds: float
    tcp_seconds: float
    fsync_samples: int
    fsync_max_seconds: float


QUICK = Budget(batch_seconds=0.5, iter_keys=50_000, msgpack_seconds=0.3, tcp_seconds=0.4,
               fsync_samples=200, fsync_max_seconds=2.0)
DEFAULT = Budget(batch_seconds=5.0, iter_keys=1_000_000, msgpack_seconds=2.0, tcp_seconds=3.0,
                 fsync_samples=2000, fsync_max_seconds=10.0)


def line(what: str, value: float, unit: str, **how: Any) -> dict[str, Any]:
    """One output record: the figure's name, its value and unit, and how it was measured."""
    return {"bench": "limits", "what": what, "value": value, "unit": unit, **how}


def percentile(samples: list[float], p: float) -> float:
    """The nearest-rank ``p``-th percentile of ``samples`` (not empty)."""
    s = sorted(samples)
    return s[min(len(s) - 1, max(0, math.ceil(p / 100 * len(s)) - 1))]


def _open(path: str) -> plyvel.DB:
    # The options of raftkv's NodeStore, so that the ceiling is that of the database a node runs.
    return plyvel.DB(path, create_if_missing=True, bloom_filter_bits=10, max_open_files=MAX_OPEN_FILES,
                     lru_cache_size=CACHE_BYTES, write_buffer_size=WRITE_BUFFER_BYTES)


def leveldb_batch(tmp: str, budget: Budget) -> list[dict[str, Any]]:
    """fsync'd write batches of 1,000 keys, for ``budget.batch_seconds``."""
    db = _open(os.path.join(tmp, "batch"))
    try:
        batches, key = 0, T0
        t0 = time.perf_counter()
        deadline = t0 + budget.batch_seconds
        while True:
            # Building the batch is timed too: a node pays for it on every flush.
            with db.write_batch(sync=True) as wb:
                for k in range(key, key + BATCH_KEYS):
                    wb.put(k.to_bytes(8, "big"), VALUE)
            key += BATCH_KEYS
            batches += 1
            if time.perf_counter() >= deadline:
                break
        secs = time.perf_counter() - t0
    finally:
        db.close()
    how = {"batch_keys": BATCH_KEYS, "value_bytes": len(VALUE), "batches": batches, "seconds": round(secs, 3)}
    return [line("leveldb_sync_batch_keys", round(batches * BATCH_KEYS / secs), "keys/s", **how),
            line("leveldb_sync_batches", round(batches / secs, 1), "batches/s", **how)]


def leveldb_iterate(tmp: str, budget: Budget) -> list[dict[str, Any]]:
    """Iterate, keys and values, over ``budget.iter_keys`` keys; the best of two passes."""
    path = os.path.join(tmp, "iterate")
    db = _open(path)
    try:
        for off in range(0, budget.iter_keys, 10_000):
            with db.write_batch() as wb:
                for k in range(T0 + off, T0 + min(budget.iter_keys, off + 10_000)):
                    wb.put(k.to_bytes(8, "big"), VALUE)
    finally:
        db.close()
    # Reopening moves the write-ahead log into a table file: the scan reads tables, as it would
    # on a node some time after the load, not only the memtable.
    db = _open(path)
    try:
        passes = []
        for _ in range(2):
            n = 0
            t0 = time.perf_counter()
            for _k, _v in db.iterator():
                n += 1
            passes.append(time.perf_counter() - t0)
            if n != budget.iter_keys:
                raise RuntimeError(f"iterated {n} keys, wrote {budget.iter_keys}")
    finally:
        db.close()
    best = min(passes)
    return [line("leveldb_iterate_keys", round(budget.iter_keys / best), "keys/s", keys=budget.iter_keys,
                 value_bytes=len(VALUE), passes_s=[round(p, 3) for p in passes])]


def _rate(fn: Callable[[], object], seconds: float) -> tuple[int, float]:
    """Call ``fn`` until ``seconds`` have passed (at least once); (calls, elapsed seconds)."""
    calls = 0
    t0 = time.perf_counter()
    deadline = t0 + seconds
    while True:
        fn()
        calls += 1
        now = time.perf_counter()
        if now >= deadline:
            return calls, now - t0


def msgpack_rows(tmp: str, budget: Budget) -> list[dict[str, Any]]:
    """Pack and unpack pages of ``[key, value]`` rows, each for ``budget.msgpack_seconds``."""
    page = [[T0 + i, VALUE] for i in range(PAGE_ROWS)]
    blob = msgpack.packb(page, use_bin_type=True)
    calls, secs = _rate(lambda: msgpack.packb(page, use_bin_type=True), budget.msgpack_seconds)
    pack = line("msgpack_pack_rows", round(calls * PAGE_ROWS / secs), "rows/s", page_rows=PAGE_ROWS,
                page_bytes=len(blob), seconds=round(secs, 3))
    calls, secs = _rate(lambda: msgpack.unpackb(blob, raw=False), budget.msgpack_seconds)
    unpack = line("msgpack_unpack_rows", round(calls * PAGE_ROWS / secs), "rows/s", page_rows=PAGE_ROWS,
                  page_bytes=len(blob), seconds=round(secs, 3))
    return [pack, unpack]


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    buf = bytearray()
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return bytes(buf)


def _peer(port: int, mode: str) -> None:
    """The child process's side: ``sink`` counts bytes to EOF and answers the count; ``echo`` pings back."""
    with socket.create_connection(("127.0.0.1", port), timeout=60) as sock:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if mode == "sink":
            buf = memoryview(bytearray(SEND_CHUNK))
            total = 0
            while n := sock.recv_into(buf):
                total += n
            sock.sendall(struct.pack(">Q", total))
        else:
            while True:
                try:
                    msg = _recv_exactly(sock, PING_BYTES)
                except ConnectionError:
                    return
                sock.sendall(msg)


def _with_peer(mode: str, body: Callable[[socket.socket], dict[str, Any]]) -> dict[str, Any]:
    """Run ``body`` on a connection accepted from a child process running :func:`_peer`."""
    # A process, not a thread: raftkv's client and nodes are separate processes, and a thread
    # would share this interpreter's lock with the measuring loop.
    ctx = multiprocessing.get_context("spawn")
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.settimeout(60)
        child = ctx.Process(target=_peer, args=(server.getsockname()[1], mode), daemon=True)
        child.start()
        try:
            conn, _ = server.accept()
            with conn:
                conn.settimeout(60)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                return body(conn)
        finally:
            child.join(10)
            if child.is_alive():
                child.kill()
                child.join()


def tcp(tmp: str, budget: Budget) -> list[dict[str, Any]]:
    """Loopback throughput (1 MiB sends) and 100-byte round trips, each for ``budget.tcp_seconds``."""

    def stream(conn: socket.socket) -> dict[str, Any]:
        chunk = memoryview(os.urandom(SEND_CHUNK))
        sent = 0
        t0 = time.perf_counter()
        deadline = t0 + budget.tcp_seconds
        while time.perf_counter() < deadline:
            conn.sendall(chunk)
            sent += SEND_CHUNK
        conn.shutdown(socket.SHUT_WR)
        # The clock stops when the child has received everything, not when the kernel took it.
        (got,) = struct.unpack(">Q", _recv_exactly(conn, 8))
        secs = time.perf_counter() - t0
        if got != sent:
            raise RuntimeError(f"sent {sent} bytes, the peer got {got}")
        return line("tcp_loopback_throughput", round(sent / secs / 1e6, 1), "MB/s", send_bytes=SEND_CHUNK,
                    bytes=sent, seconds=round(secs, 3))

    def ping(conn: socket.socket) -> dict[str, Any]:
        msg = b"p" * PING_BYTES
        n = 0
        t0 = time.perf_counter()
        deadline = t0 + budget.tcp_seconds
        while time.perf_counter() < deadline:
            conn.sendall(msg)
            _recv_exactly(conn, PING_BYTES)
            n += 1
        secs = time.perf_counter() - t0
        return line("tcp_loopback_roundtrips", round(n / secs), "round trips/s", message_bytes=PING_BYTES,
                    round_trips=n, mean_us=round(secs / n * 1e6, 1), seconds=round(secs, 3))

    return [_with_peer("sink", stream), _with_peer("echo", ping)]


def fdatasync(tmp: str, budget: Budget) -> list[dict[str, Any]]:
    """Latency of appending 100 bytes and ``os.fdatasync``, ``budget.fsync_samples`` times."""
    fd = os.open(os.path.join(tmp, "journal"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    samples: list[float] = []
    try:
        record = b"j" * 100
        deadline = time.perf_counter() + budget.fsync_max_seconds
        while len(samples) < budget.fsync_samples and time.perf_counter() < deadline:
            os.write(fd, record)
            t0 = time.perf_counter()
            os.fdatasync(fd)
            samples.append((time.perf_counter() - t0) * 1e6)
    finally:
        os.close(fd)
    how = {"samples": len(samples), "append_bytes": 100}
    return [line("fdatasync_p50", round(percentile(samples, 50), 1), "us", **how),
            line("fdatasync_p99", round(percentile(samples, 99), 1), "us", **how),
            line("fdatasync_mean", round(sum(samples) / len(samples), 1), "us", **how)]


MEASURES: dict[str, Callable[[str, Budget], list[dict[str, Any]]]] = {
    "leveldb_batch": leveldb_batch,
    "leveldb_iterate": leveldb_iterate,
    "msgpack": msgpack_rows,
    "tcp": tcp,
    "fdatasync": fdatasync,
}


def main(argv: list[str] | None = None) -> int:
    """Measure the chosen groups and print their figures as JSON lines."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="small measurements, a few seconds in all")
    ap.add_argument("--only", default="", help=f"comma-separated groups out of {','.join(MEASURES)}")
    ap.add_argument("--iter-keys", type=int, help="keys in the iterated LevelDB (default 1M, 50k with --quick)")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(MEASURES)
    unknown = [n for n in names if n not in MEASURES]
    if unknown:
        ap.error(f"unknown group(s) {','.join(unknown)}; choose from {','.join(MEASURES)}")
    budget = QUICK if args.quick else DEFAULT
    if args.iter_keys is not None:
        if args.iter_keys <= 0:
            ap.error("--iter-keys must be positive")
        budget = dataclasses.replace(budget, iter_keys=args.iter_keys)
    tmp = tempfile.mkdtemp(prefix="raftkv-limits-")
    try:
        for name in names:
            for record in MEASURES[name](tmp, budget):
                print(json.dumps(record), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""The LevelDB state machine: applied index atomic with data, scans, snapshots, the lock trap."""

import io
import random

import pytest

from raftkv.errors import StorageError
from raftkv.replication import commands
from raftkv.replication.snapshot import encode_stream, read_stream
from raftkv.storage.leveldb import ShardStore

pytestmark = pytest.mark.timeout(60)


def test_applied_index_makes_replay_idempotent(tmp_path):
    path = str(tmp_path / "s")
    s = ShardStore(path)
    assert commands.apply(s, 3, commands.put([(1, b"a")])[1:]) is None
    assert commands.apply(s, 4, commands.put([(1, b"b")])[1:]) is None
    s.close()
    s = ShardStore(path)  # restart: replaying entries 3 and 4 must change nothing
    assert s.applied_index == 4
    commands.apply(s, 3, commands.put([(1, b"OLD")])[1:])
    assert s.get(1) == b"b"
    s.close()


def test_second_open_in_process_refused_without_touching_leveldb_lock(tmp_path):
    path = str(tmp_path / "s")
    s = ShardStore(path)
    with pytest.raises(StorageError):
        ShardStore(path)
    s.apply(1, puts=[(5, b"x")])  # the first handle still works and still holds the lock
    assert s.get(5) == b"x"
    s.close()
    ShardStore(path).close()  # released on close


def test_scan_pages_by_keys_and_bytes(store):
    store.apply(1, puts=[(k, bytes(100)) for k in range(1000)])
    rows, resume = store.scan(0, 2**64, limit=10)
    assert [k for k, _ in rows] == list(range(10)) and resume == 10
    rows, resume = store.scan(0, 2**64, limit=1000, max_bytes=1080)
    assert len(rows) == 10 and resume == 10
    rows, resume = store.scan(0, 1000, reverse=True, limit=3)
    assert [k for k, _ in rows] == [999, 998, 997] and resume == 997
    rows, resume = store.scan(0, 997, reverse=True, limit=1000)
    assert len(rows) == 997 and resume is None
    big = bytes(1 << 20)
    store.apply(2, puts=[(5000, big)])
    rows, _ = store.scan(5000, 5001, max_bytes=10)  # one oversized row still moves
    assert rows == [(5000, big)]


def test_plain_pages_are_what_the_general_loop_reads(store):
    """A page without a filter (the fast path) is exactly the page the general per-row loop reads
    when every row passes: same keys, values and resume, forward and reverse, by keys and bytes,
    across the chunks between clock reads and at the range's edges."""
    rng = random.Random(11)
    keys = sorted({rng.randrange(2**64) for _ in range(3000)} | {0, 1, 2**64 - 1})
    store.apply(1, puts=[(k, rng.randbytes(rng.choice((0, 1, 50, 300, 5000)))) for k in keys])
    everything = lambda k, v: True  # noqa: E731 -- takes the general loop
    cases = 0
    for _ in range(300):
        lo, hi = sorted(rng.choice(keys + [rng.randrange(2**64)]) for _ in range(2))
        hi = rng.choice((hi, hi + 1, 2**64))
        kw = {"reverse": rng.random() < 0.5, "limit": rng.choice((1, 2, 255, 256, 257, 1000, 4000)),
              "max_bytes": rng.choice((1, 100, 5000, 64 << 10, 1 << 20))}
        plain = store.scan(lo, hi, **kw)
        assert plain == store.scan(lo, hi, filter=everything, **kw), (lo, hi, kw)
        cases += bool(plain[0])
    assert cases > 100  # most cases returned rows
    view = store.open_view()
    try:
        assert view.scan_raw(0, 2**64, limit=700) == view.scan_raw(0, 2**64, limit=700, filter=everything)
        # a deadline already past still moves one chunk, and says where to go on
        blob, values, resume = view.scan_raw(0, 2**64, limit=4000, deadline=0.0)
        assert len(values) == 256 and resume == keys[256]
    finally:
        view.close()


def test_selective_filter_is_bounded_per_page(store):
    store.apply(1, puts=[(k, b"x") for k in range(5000)])
    rows, resume = store.scan(0, 2**64, filter=lambda k, v: k == 4999, max_examined=1000)
    assert rows == [] and resume == 1000  # gave up after 1000 rows examined, says where to go on


def test_delete_range_command_steps(store):
    store.apply(1, puts=[(k, b"odd" if k % 2 else b"even") for k in range(100)])
    reply = commands.apply(store, 2, commands.delete_range(0, None, None, max_keys=30)[1:])
    assert reply == {"deleted": 30, "resume": 30}
    assert store.scan(0, 2**64)[0][0][0] == 30


def test_snapshot_stream_round_trip_and_atomic_install(tmp_path):
    src = ShardStore(str(tmp_path / "src"))
    rng = random.Random(3)
    data = {rng.randrange(2**64): rng.randbytes(rng.randrange(0, 3000)) for _ in range(3000)}
    src.apply(7, puts=list(data.items()))
    index, items = src.snapshot_items()
    src.apply(8, puts=[(1, b"after snapshot")])  # isolated from the snapshot
    header = {"index": index, "last": [b"", 7, 1], "prev": [b"", 6, 1]}
    blob = b"".join(encode_stream(header, items, chunk_size=4096))
    dst = ShardStore(str(tmp_path / "dst"))
    dst.apply(1, puts=[(2, b"stale")])
    hdr, rows = read_stream(io.BytesIO(blob))
    dst.install(rows, hdr["index"])
    assert dst.applied_index == 7
    got, _ = dst.scan(0, 2**64, limit=10_000, max_bytes=1 << 40)
    assert dict(got) == data
    # a truncated stream must not install, and must leave the old state whole
    hdr, rows = read_stream(io.BytesIO(blob[: len(blob) // 2]))
    with pytest.raises(StorageError):
        dst.install(rows, hdr["index"])
    assert dst.applied_index == 7 and len(dst.scan(0, 2**64, limit=10_000, max_bytes=1 << 40)[0]) == len(data)
    path = dst.path
    dst.close()
    reopened = ShardStore(path)
    assert reopened.applied_index == 7
    reopened.close()
    src.close()


def test_malformed_commands_do_not_break_the_replica(store):
    assert "error" in commands.apply(store, 1, b"\xc1")
    assert "error" in commands.apply(store, 2, commands.encode(["put", [[-1, b"x"]]])[1:])
    assert "error" in commands.apply(store, 3, commands.encode(["drop_everything"])[1:])
    assert store.applied_index == 3  # indexes stay contiguous


def test_meta_map_compare_and_set(store):
    assert commands.stored_map(store) is None
    assert commands.apply(store, 1, commands.set_map({"epoch": 1, "shards": []}, 0)[1:]) == 1
    assert commands.apply(store, 2, commands.set_map({"epoch": 2, "shards": []}, 0)[1:]) == 1  # lost the race
    assert commands.stored_map(store)["epoch"] == 1


def test_view_is_frozen_and_closed_by_install(tmp_path):
    s = ShardStore(str(tmp_path / "s"))
    s.apply(1, puts=[(k, b"a") for k in range(10)])
    view = s.open_view()
    s.apply(2, puts=[(k, b"b") for k in range(10)], deletes=[])
    s.apply(3, deletes=[0, 1])
    rows, resume = view.scan(0, 2**64, limit=5)
    assert rows == [(k, b"a") for k in range(5)] and resume == 5  # the state when the view opened
    rows, _ = view.scan(resume, 2**64)
    assert rows == [(k, b"a") for k in range(5, 10)]
    assert s.scan(0, 2**64)[0][0] == (2, b"b")
    index, items = s.snapshot_items()
    s.install(items, index)  # replaces the database the view reads
    assert view.closed
    with pytest.raises(StorageError):
        view.scan(0, 2**64)
    s.close()


def test_a_slow_page_stops_at_its_deadline_and_says_where_to_resume(store):
    import time

    store.apply(1, puts=[(k, b"x") for k in range(2000)])
    view = store.open_view()

    def slow(key, value):
        time.sleep(0.001)
        return True

    rows, resume = view.scan(0, 2**64, limit=10_000, filter=slow, deadline=time.monotonic() + 0.05)
    assert resume is not None and len(rows) < 2000 and resume == rows[-1][0] + 1
    view.close()


def test_a_long_page_on_a_view_does_not_block_writes(store):
    """Raft-thread writes must not wait for a client's scan page (they share no lock)."""
    import threading
    import time

    store.apply(1, puts=[(k, b"x") for k in range(300)])
    view = store.open_view()
    started, order = threading.Event(), []

    def slow(key, value):
        started.set()
        time.sleep(0.002)
        return True

    def scan():
        view.scan(0, 2**64, filter=slow)
        order.append("scan done")

    t = threading.Thread(target=scan)
    t.start()
    started.wait(5)
    store.apply(2, puts=[(5000, b"y")])
    order.append("write done")
    t.join()
    assert order == ["write done", "scan done"]
    view.close()


def test_a_page_with_a_costly_filter_reads_the_clock_after_every_row(store):
    """An expensive (but allowed) filter must not run 256 rows past the page deadline."""
    from raftkv.query.like import MAX_UNDERSCORE_SEGMENT
    from raftkv.query.predicate import compile_filter

    store.apply(1, puts=[(k, b"a" * 20_000) for k in range(600)])
    # Every position of every value is a candidate for this segment, and fails only at its end.
    costly = compile_filter(["like", ["value"], "%" + "a_" * (MAX_UNDERSCORE_SEGMENT // 2 - 1) + "ab%"])
    examined = []

    def counting(key: int, value: bytes) -> bool:
        examined.append(key)
        return costly(key, value)

    view = store.open_view()
    try:
        # A deadline already passed: the page stops after the one row every page examines.
        rows, resume = view.scan(0, 2**64, limit=10_000, filter=counting, deadline=0.0)
        assert rows == [] and examined == [0] and resume == 1
        rows, resume = view.scan(0, 500, reverse=True, limit=10_000, filter=counting, deadline=0.0)
        assert rows == [] and examined == [0, 499] and resume == 499
        # Without a filter rows are cheap: the clock is read after every chunk of 256 rows.
        rows, resume = view.scan(0, 2**64, limit=10_000, max_bytes=1 << 30, deadline=0.0)
        assert len(rows) == 256 and resume == 256
    finally:
        view.close()


def test_a_range_delete_step_budget_counts_pattern_length(store):
    """commands._size weighs a long pattern by its length: a step examines fewer rows for it."""
    from raftkv.query.predicate import filter_cost

    store.apply(1, puts=[(k, b"v") for k in range(3000)])
    wire = ["contains", ["value"], "z" * 4000]  # matches nothing; costs ~4000 per row
    reply = commands.apply(store, 2, commands.delete_range(0, None, wire, max_keys=1000)[1:])
    budget = commands.FILTER_WORK_PER_STEP // filter_cost(wire)
    assert reply == {"deleted": 0, "resume": budget} and budget < 3000
    reply = commands.apply(store, 3, commands.delete_range(0, None, ["contains", ["value"], "z"], max_keys=1000)[1:])
    assert reply == {"deleted": 0, "resume": None}  # a cheap filter gets through the whole range in one step

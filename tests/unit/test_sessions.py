"""At-most-once writes: the session rules (pure) and their effect on a real store through ``commands.apply``."""

import msgpack
import pytest

from raftkv.replication import commands, sessions
from raftkv.storage.leveldb import ShardStore

CID = b"client-a-0123456"
OTHER = b"client-b-0123456"


@pytest.fixture
def store(tmp_path):
    s = ShardStore(str(tmp_path / "store"))
    yield s
    s.close()


class Log:
    """Feeds commands to ``commands.apply`` at consecutive indices, as a replica's apply loop does."""

    def __init__(self, store: ShardStore) -> None:
        self.store = store
        self.index = store.applied_index

    def apply(self, command: bytes):
        self.index += 1
        return commands.apply(self.store, self.index, command[1:])


def sess(cid: bytes, seq: int, low: int | None = None, now_ms: int = 1_000) -> list:
    return [cid, seq, seq if low is None else low, now_ms]


def test_decide_applies_new_numbers_repeats_replies_and_refuses_late_copies():
    s = sessions.Session()
    assert sessions.decide(s, 5) == sessions.APPLY
    s.remember(5, 3, 10, {"deleted": 1})
    assert sessions.decide(s, 5) == sessions.DUPLICATE
    assert sessions.decide(s, 6) == sessions.APPLY
    assert sessions.decide(s, 2) == sessions.STALE  # below the mark and unknown: given up on by its client
    s.remember(7, 7, 11, None)
    assert 5 not in s.replies and s.low == 7  # the client no longer awaits 5: forgotten
    back = sessions.Session.decode(s.encode(), [(sessions.reply_key(CID, q), sessions.pack_reply(r))
                                                for q, r in s.replies.items()])
    assert back == s


def test_a_session_remembers_a_bounded_number_of_replies_and_refuses_what_it_forgot():
    s = sessions.Session()
    for seq in range(1, sessions.MAX_REMEMBERED + 11):
        s.remember(seq, 1, 0, None)  # a client with very many writes outstanding
    assert len(s.replies) == sessions.MAX_REMEMBERED
    assert s.low == 11
    assert sessions.decide(s, 3) == sessions.STALE  # forgotten: refused, never applied twice
    assert sessions.decide(s, 11) == sessions.DUPLICATE


def _remember_by_scan(model: dict, seq: int, low: int, reply) -> list[int]:
    """The rule ``Session.remember`` keeps, written the plain way: scan every reply (one window)."""
    forgotten = []
    if low > model["low"]:
        model["low"] = low
        forgotten = [s for s in model["replies"] if s < low]
    model["replies"][seq] = reply
    if len(model["replies"]) - len(forgotten) > sessions.MAX_REMEMBERED:
        kept = sorted(s for s in model["replies"] if s >= model["low"])
        forgotten += kept[: len(kept) - sessions.MAX_REMEMBERED]
        model["low"] = kept[len(kept) - sessions.MAX_REMEMBERED]
    for s in forgotten:
        del model["replies"][s]
    return forgotten


@pytest.mark.parametrize("seed", range(6))
def test_remember_forgets_exactly_what_a_full_scan_would(seed, monkeypatch):
    """Writes arrive out of order and marks jump; the heap must forget what a scan of every reply
    forgets, through the overflow cut too (a small bound so that the cut happens often)."""
    import random

    monkeypatch.setattr(sessions, "MAX_REMEMBERED", 40)
    rnd = random.Random(seed)
    s = sessions.Session()
    model = {"low": 0, "replies": {}}
    top = 0
    for step in range(4000):
        top += rnd.choice((0, 1, 1, 2))
        seq = max(1, top - rnd.randrange(0, 60))  # concurrent writes: applied out of order
        low = max(0, top - rnd.randrange(0, 80))
        if sessions.decide(s, seq) != sessions.APPLY:
            continue
        assert sorted(s.remember(seq, low, step, step)) == sorted(_remember_by_scan(model, seq, low, step))
        assert (s.low, s.replies) == (model["low"], model["replies"])
    if seed == 0:  # a session read back from the store orders what it reads
        again = sessions.Session(s.low, 0, dict(s.replies))
        assert again.remember(top + 1, top, 0, None) == sorted(r for r in s.replies if r < top)


def test_wire_session_is_validated():
    assert sessions.check_wire(None) is None
    assert sessions.check_wire([CID, 3, 1]) == [CID, 3, 1]
    for bad in ([CID, 0, 0], [CID, 3, 4], [b"short", 3, 1], [CID, 2**64, 1], ["text-id-12345678", 3, 1],
                [CID, 3], [CID, 3, -1], "x", [CID, True, 0]):
        with pytest.raises(commands.InvalidArgument):
            sessions.check_wire(bad)


def test_a_retried_put_is_applied_once_even_after_a_newer_write(store):
    """The anomaly the fault lab found: a retry put an old value back over a newer acknowledged one."""
    log = Log(store)
    log.apply(commands.put([(7, b"old")], sess(CID, 1)))
    log.apply(commands.put([(7, b"new")], sess(OTHER, 1)))
    assert log.apply(commands.put([(7, b"old")], sess(CID, 1))) is None  # the retry: same number
    assert store.get(7) == b"new"
    assert store.applied_index == 3  # the duplicate still occupies its log index


def test_a_repeated_delete_replies_what_the_first_one_did(store):
    log = Log(store)
    log.apply(commands.put([(1, b"a"), (2, b"b")]))
    assert log.apply(commands.delete([1, 2, 3], sess(CID, 4))) == 2
    log.apply(commands.put([(1, b"again")], sess(OTHER, 1)))
    assert log.apply(commands.delete([1, 2, 3], sess(CID, 4))) == 2  # not 1: nothing is deleted again
    assert store.get(1) == b"again"


def test_a_repeated_range_delete_step_replies_the_same_resume_point(store):
    log = Log(store)
    log.apply(commands.put([(k, b"v") for k in range(10)]))
    first = log.apply(commands.delete_range(0, None, None, 4, session=sess(CID, 1)))
    assert first == {"deleted": 4, "resume": 4}
    log.apply(commands.put([(0, b"back")], sess(OTHER, 1)))
    assert log.apply(commands.delete_range(0, None, None, 4, session=sess(CID, 1))) == first
    assert store.get(0) == b"back"


def test_a_late_copy_below_the_clients_mark_is_refused(store):
    log = Log(store)
    log.apply(commands.put([(1, b"x")], sess(CID, 5, low=5)))
    reply = log.apply(commands.put([(1, b"late")], sess(CID, 2, low=2)))  # unknown and below the mark
    assert isinstance(reply, dict) and "error" in reply and reply["outcome_unknown"] is True
    assert store.get(1) == b"x"


def _advance(log: Log, entries: int) -> None:
    """Plain entries (no session) until ``entries`` more are in the log."""
    for _ in range(entries):
        log.apply(commands.put([(2, b"b")]))


def test_idle_sessions_are_collected_at_the_same_index_on_every_replica(store):
    log = Log(store)
    log.apply(commands.put([(1, b"a")], sess(CID, 1, now_ms=0)))
    later = sessions.SESSION_TTL_MS + 5_000
    _advance(log, sessions.MIN_IDLE_ENTRIES)
    _advance(log, -(log.index + 1) % sessions.GC_EVERY)  # the next entry is a collection point
    assert store.get_system(sessions.record_key(CID)) is not None
    log.apply(commands.put([(3, b"c")], sess(OTHER, 1, now_ms=later)))
    assert store.get_system(sessions.record_key(CID)) is None  # idle past the TTL and the distance: dropped
    assert store.get_system(sessions.record_key(OTHER)) is not None
    index = store.system_names(sessions.BY_TIME, sessions.BY_TIME + b"\xff" * 9, 10)
    assert [name.endswith(OTHER) for name in index] == [True]  # the time index follows the records
    prefix = sessions.replies_prefix(CID)
    assert store.system_names(prefix, prefix + b"\xff" * 8, 10) == []  # and so do the replies


def test_a_leader_clock_jump_does_not_drop_a_session_its_client_still_uses(store):
    """A retry that arrives after a leader with a clock an hour fast wrote an entry is still refused."""
    log = Log(store)
    log.apply(commands.put([(1, b"a")], sess(CID, 1, low=1, now_ms=0)))
    log.apply(commands.put([(1, b"b")], sess(CID, 2, low=2, now_ms=1)))
    jumped = sessions.SESSION_TTL_MS + 60_000
    for _ in range(2 * sessions.GC_EVERY):  # collection points pass, stamped with the fast clock
        log.apply(commands.put([(5, b"x")], sess(OTHER, log.index + 1, now_ms=jumped)))
    late = log.apply(commands.put([(1, b"a")], sess(CID, 1, low=1, now_ms=jumped)))
    assert isinstance(late, dict) and late.get("outcome_unknown")  # refused: the session is still known
    assert store.get(1) == b"b"


def test_collection_outpaces_clients_that_write_once(store):
    """Short-lived clients (one session each) must not pile up faster than they are collected."""
    log = Log(store)
    for i in range(500):
        log.apply(commands.put([(1, b"v")], sess(b"once-%012d" % i, 1, now_ms=0)))
    _advance(log, sessions.MIN_IDLE_ENTRIES)
    later = sessions.SESSION_TTL_MS + 5_000
    for i in range(500):  # as many new clients again, now much later
        log.apply(commands.put([(1, b"v")], sess(b"late-%012d" % i, 1, now_ms=later)))
    old = store.system_names(sessions.record_key(b"once-"), sessions.record_key(b"once."), 1000)
    assert old == []


def test_the_time_index_moves_when_a_session_is_touched_again(store):
    log = Log(store)
    log.apply(commands.put([(1, b"a")], sess(CID, 1, now_ms=1_000)))
    log.apply(commands.put([(1, b"b")], sess(CID, 2, now_ms=9_000)))
    index = store.system_names(sessions.BY_TIME, sessions.BY_TIME + b"\xff" * 9, 10)
    assert index == [sessions.BY_TIME + (9).to_bytes(8, "big") + CID]


def _stored_replies(store: ShardStore, cid: bytes) -> list[int]:
    prefix = sessions.replies_prefix(cid)
    return [int.from_bytes(n[-8:], "big") for n in store.system_names(prefix, prefix + b"\xff" * 8, 10_000)]


def test_a_write_stores_its_reply_and_deletes_what_its_client_no_longer_awaits(store):
    log = Log(store)
    for seq in range(1, 6):
        log.apply(commands.put([(seq, b"v")], sess(CID, seq, low=1)))  # five writes in flight at once
    assert _stored_replies(store, CID) == [1, 2, 3, 4, 5]
    log.apply(commands.put([(6, b"v")], sess(CID, 6, low=5)))  # 1..4 have their outcome now
    assert _stored_replies(store, CID) == [5, 6]


def test_a_reopened_store_still_knows_its_sessions(tmp_path):
    path = str(tmp_path / "s")
    first = ShardStore(path)
    Log(first).apply(commands.put([(1, b"old")], sess(CID, 1)))
    first.close()
    again = ShardStore(path)  # as after a restart: nothing cached
    try:
        log = Log(again)
        log.apply(commands.put([(1, b"new")], sess(OTHER, 1)))
        log.apply(commands.put([(1, b"old")], sess(CID, 1)))  # the retry
        assert again.get(1) == b"new"
    finally:
        again.close()


def test_an_installed_snapshot_replaces_the_sessions_a_replica_knew(store, tmp_path):
    """A replica that installs a snapshot must forget what it remembered before (its cache too)."""
    log = Log(store)
    log.apply(commands.put([(1, b"a")], sess(CID, 1, low=1)))
    log.apply(commands.put([(1, b"a")], sess(CID, 2, low=1)))  # remembered (and cached) here ...
    other = ShardStore(str(tmp_path / "other"))
    try:
        index, items = other.snapshot_items()  # ... but not in the state that replaces it
        store.install(items, log.index + 10)
        log.index = store.applied_index
        log.apply(commands.put([(1, b"b")], sess(CID, 2, low=1)))  # unknown to the new state: applied
        assert store.get(1) == b"b"
    finally:
        other.close()


def test_session_records_travel_in_snapshots(store, tmp_path):
    log = Log(store)
    log.apply(commands.put([(1, b"a")], sess(CID, 1)))
    index, items = store.snapshot_items()
    other = ShardStore(str(tmp_path / "other"))
    try:
        other.install(items, index)
        again = Log(other)
        again.apply(commands.put([(1, b"b")], sess(OTHER, 1)))
        again.apply(commands.put([(1, b"a")], sess(CID, 1)))  # a retry reaching the replica that installed it
        assert other.get(1) == b"b"
    finally:
        other.close()


def test_entries_written_before_sessions_still_apply(store):
    log = Log(store)
    old_put = commands.REGULAR + msgpack.packb(["put", [[1, b"a"]]], use_bin_type=True)
    old_del = commands.REGULAR + msgpack.packb(["del", [2]], use_bin_type=True)
    old_delr = commands.REGULAR + msgpack.packb(["delr", 5, None, None, 10], use_bin_type=True)
    assert log.apply(old_put) is None
    assert log.apply(old_del) == 0
    assert log.apply(old_delr) == {"deleted": 0, "resume": None}
    assert store.get(1) == b"a"


def test_malformed_sessions_in_a_log_entry_are_refused_without_effect(store):
    log = Log(store)
    for bad in ([CID, 1, 1], [CID, 1, 1, -5], [b"x", 1, 1, 0], "nope"):
        raw = commands.REGULAR + msgpack.packb(["put", [[1, b"a"]], bad], use_bin_type=True)
        assert "error" in log.apply(raw)
    assert store.get(1) is None


def _writes_with_repeats(draw_seed: int) -> list[bytes]:
    """Puts of three clients, with retries of earlier writes mixed in (as a client retrying
    through an election sends), the same key often written again."""
    import random

    rnd = random.Random(draw_seed)
    seqs = {c: 0 for c in (CID, OTHER, b"client-c-0123456")}
    sent: list[bytes] = []
    for _ in range(60):
        if sent and rnd.random() < 0.3:
            sent.append(rnd.choice(sent))  # a retry: the very same command again
            continue
        cid = rnd.choice(list(seqs))
        seqs[cid] += 1
        pairs = [(rnd.randrange(20), b"v%d" % rnd.randrange(1000)) for _ in range(rnd.randrange(1, 4))]
        sent.append(commands.put(pairs, sess(cid, seqs[cid], low=max(1, seqs[cid] - 3))))
    return sent


@pytest.mark.parametrize("seed", range(8))
def test_merged_puts_have_the_effect_and_replies_of_one_entry_each(tmp_path, seed):
    """A leader merges concurrent puts into one entry (commands.merge_puts): each must be applied
    as if alone -- the same rows, the same replies, the same retries recognised -- also when one
    entry holds a write and its own retry, or two writes of one new session."""
    import random

    sent = _writes_with_repeats(seed)
    one, merged = ShardStore(str(tmp_path / "one")), ShardStore(str(tmp_path / "merged"))
    try:
        log_one, log_merged = Log(one), Log(merged)
        alone = [log_one.apply(c) for c in sent]
        together: list = []
        rnd = random.Random(seed)
        i = 0
        while i < len(sent):
            n = rnd.randrange(1, 12)
            batch = sent[i:i + n]
            i += n
            together.extend(log_merged.apply(commands.merge_puts(batch)))
        assert together == alone
        assert one.scan(0, 2**64, limit=10**6) == merged.scan(0, 2**64, limit=10**6)
        # what is stored alike too (a merged entry writes each session's record once): the same
        # replies, the same index by time, and records alike but for the log index they name
        for prefix in (sessions.REPLIES, sessions.BY_TIME):
            assert one.system_items(prefix, prefix + b"\xff", 10**6) == \
                merged.system_items(prefix, prefix + b"\xff", 10**6)
        records = [[(name, sessions.Session.decode(raw).low, sessions.Session.decode(raw).touched_ms)
                    for name, raw in store.system_items(sessions.PREFIX, sessions.PREFIX + b"\xff", 10**6)]
                   for store in (one, merged)]
        assert records[0] == records[1] and records[0]
        # every write is remembered alike: a late retry of any of them changes nothing on either
        for c in rnd.sample(sent, 10):
            assert [log_one.apply(c)] == log_merged.apply(commands.merge_puts([c]))
        assert one.scan(0, 2**64, limit=10**6) == merged.scan(0, 2**64, limit=10**6)
    finally:
        one.close()
        merged.close()


def test_a_merged_entry_refuses_only_the_put_outside_the_shard_and_holds_puts_only():
    with pytest.raises(commands.InvalidArgument):
        commands.decode(msgpack.packb(["multi", [["del", [1]]]]))
    with pytest.raises(commands.InvalidArgument):
        commands.decode(msgpack.packb(["multi", []]))
    with pytest.raises(ValueError):
        commands.merge_puts([commands.delete([1])])


def test_a_new_session_written_twice_in_one_merged_entry_remembers_both_writes(store):
    """Its first write is not in the store until the entry is written: the second must still find
    it, or a late retry of the first would overwrite the second."""
    log = Log(store)
    first = commands.put([(1, b"a")], sess(CID, 1, low=1))
    second = commands.put([(1, b"b")], sess(CID, 2, low=1))
    assert log.apply(commands.merge_puts([first, second])) == [None, None]
    assert log.apply(first) is None  # a retry of the first: recognised, not applied again
    assert store.get(1) == b"b"

"""The scripting side of the client against real node processes: ``?`` parameters, datetime keys and
query results (repr, rowcount, read once).  One cluster for the module; each test keeps to its own keys."""

import asyncio
import json
from datetime import UTC, datetime, timedelta, timezone

import pytest

from raftkv import AsyncClient, Client, errors

from .conftest import RunningCluster

pytestmark = pytest.mark.timeout(120)

HOSTILE = "x' OR 1=1 --"
CET = timezone(timedelta(hours=1))


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    c = RunningCluster(str(tmp_path_factory.mktemp("api") / "cluster"), shards=4)
    yield c
    c.close()


def test_params_bind_safely_end_to_end(shared):
    with Client(shared.seeds) as db:
        assert db.query("PUT ? ?", [1001, HOSTILE]).status == "INSERT 1"
        assert db.query("INSERT INTO kv VALUES (?, ?), (?, ?)", [1002, b"\x00'\xff", 1003, "other"]).status == "INSERT 2"
        assert db.get(1001) == HOSTILE.encode() and db.get(1002) == b"\x00'\xff"

        # spliced in unquoted, the string would read "value = 'x' OR 1=1" and match all three rows
        assert list(db.query("SELECT * FROM kv WHERE key BETWEEN ? AND ? AND value = ?",
                             [1000, 1099, HOSTILE])) == [(1001, HOSTILE.encode())]
        assert list(db.query("SELECT key FROM kv WHERE key BETWEEN ? AND ? AND value = ?",
                             [1000, 1099, b"\x00'\xff"])) == [(1002,)]
        # a ? in a string or a comment is text, not a placeholder
        db.put(1004, "a?b")
        assert list(db.query("SELECT key FROM kv WHERE key >= ? AND value = 'a?b' -- really?", [1000])) == [(1004,)]

        # numbers, booleans and JSON
        db.put(1010, json.dumps({"t": -1.5, "ok": True, "n": 7}))
        rows = db.query("SELECT key FROM kv WHERE key BETWEEN ? AND ? AND value->'t' = ? AND value->'ok' = ? "
                        "AND value->'n' > ?", [1000, 1099, -1.5, True, -3])
        assert list(rows) == [(1010,)]
        assert list(db.query("GET ?", [1010])) == [(1010, db.get(1010))]

        # now() set by keyword: the window [now - 1 h, now] around a datetime key
        when = datetime(2026, 5, 1, 12, tzinfo=UTC)
        db.put(when, b"noon")
        got = db.query("SELECT key FROM kv WHERE key BETWEEN now() - ? AND now()", [timedelta(hours=1)],
                       now_ns=(int(when.timestamp()) + 1800) * 10**9)
        assert list(got) == [(int(when.timestamp()) * 10**9,)]

        with pytest.raises(errors.InvalidArgument, match="outside"):  # the planner's key check still holds
            db.query("PUT ? ?", [-1, b"x"])
        with pytest.raises(errors.InvalidArgument, match="placeholder"):
            db.query("PUT ? ?", [1, b"x", b"y"])
        with pytest.raises(errors.InvalidArgument, match="now_ns"):
            db.query("SELECT * FROM kv WHERE key > now()", 1)
        assert db.get(1) is None


def test_datetime_keys(shared):
    t0 = datetime(2026, 11, 21, 10, 0, 0, 1, tzinfo=UTC)
    ns0 = 1_795_255_200_000_001_000  # TIMESTAMP '2026-11-21T10:00:00.000001Z'
    with Client(shared.seeds) as db:
        db.put(t0, b"first")
        assert db.get(t0) == b"first" and db.get(ns0) == b"first"
        assert db.get(t0.astimezone(CET)) == b"first"  # the same instant in another zone: the same key
        assert list(db.query("SELECT key FROM kv WHERE key = TIMESTAMP '2026-11-21T10:00:00.000001Z'")) == [(ns0,)]

        later = {t0 + timedelta(seconds=s): b"s%d" % s for s in range(1, 6)}
        assert db.put_many(later) == 5
        assert db.put_many([(t0 + timedelta(seconds=10), b"pair")]) == 1
        window = db.range_query(t0, t0 + timedelta(seconds=3))
        assert window == [(ns0 + s * 10**9, v) for s, v in [(0, b"first"), (1, b"s1"), (2, b"s2"), (3, b"s3")]]
        assert [k for k, _ in db.scan(t0 + timedelta(seconds=4), t0 + timedelta(minutes=1))] == \
            [ns0 + 4 * 10**9, ns0 + 5 * 10**9, ns0 + 10 * 10**9]
        assert db.delete(t0 + timedelta(seconds=10)) is True
        assert db.delete_range(t0 + timedelta(seconds=4), t0 + timedelta(seconds=5)) == 2
        assert len(db.range_query(t0, t0 + timedelta(minutes=1))) == 4

        naive = datetime(2026, 11, 21, 10)
        for call in (lambda: db.put(naive, b"x"), lambda: db.get(naive), lambda: db.put_many({naive: b"x"}),
                     lambda: list(db.scan(naive, t0)), lambda: db.delete_range(t0, naive)):
            with pytest.raises(errors.InvalidKey, match="tzinfo"):
                call()
        with pytest.raises(errors.InvalidKey, match="outside"):
            db.put(datetime(1969, 7, 20, 20, 17, tzinfo=UTC), b"x")
        assert len(db.range_query(t0 - timedelta(days=1), t0 + timedelta(days=1))) == 4  # nothing written

    async def run():
        async with AsyncClient(shared.seeds) as adb:
            await adb.put(t0 - timedelta(hours=1), b"async")
            return await adb.get((t0 - timedelta(hours=1)).astimezone(CET)), [k async for k, _ in adb.scan(t0, t0)]

    assert asyncio.run(run()) == (b"async", [ns0])


def test_results_count_rows_and_are_read_once(shared):
    keys = list(range(2001, 2006))
    with Client(shared.seeds, page_keys=2) as db:  # two rows a page, so a read can stop half way
        ins = db.query("INSERT INTO kv VALUES " + ", ".join(["(?, ?)"] * len(keys)),
                       [x for k in keys for x in (k, f"v{k}")])
        assert ins.status == "INSERT 5" and ins.rowcount is None
        assert repr(ins) == "<QueryResult INSERT 5 columns=() rows=0 unread>"

        res = db.query("SELECT * FROM kv WHERE key BETWEEN ? AND ?", [2000, 2099])
        assert res.rowcount is None and repr(res) == "<QueryResult SELECT columns=('key', 'value') rows=0 unread>"
        assert [k for k, _ in res] == keys
        assert res.rowcount == 5 and repr(res) == "<QueryResult SELECT columns=('key', 'value') rows=5 complete>"
        with pytest.raises(errors.InvalidArgument, match="already read"):
            iter(res)
        with pytest.raises(errors.InvalidArgument, match="already read"):
            res.pages()
        res.close()  # harmless after the end

        half = db.query("SELECT key FROM kv WHERE key BETWEEN ? AND ?", [2000, 2099])
        pages = half.pages()
        assert next(pages) == [(2001,), (2002,)]
        assert repr(half) == "<QueryResult SELECT columns=('key',) rows=2 reading>" and half.rowcount is None
        half.close()
        assert repr(half) == "<QueryResult SELECT columns=('key',) rows=2 closed>" and half.rowcount is None
        with pytest.raises(errors.InvalidArgument, match="already read"):
            list(half)

        unread = db.query("SELECT key FROM kv WHERE key BETWEEN ? AND ?", [2000, 2099])
        unread.close()
        with pytest.raises(errors.InvalidArgument, match="closed"):
            list(unread)

    async def run():
        async with AsyncClient(shared.seeds) as adb:
            res = await adb.query("SELECT count(*) FROM kv WHERE key BETWEEN ? AND ?", [2000, 2099])
            assert res.rowcount is None
            rows = await res.rows()
            with pytest.raises(errors.InvalidArgument, match="already read"):
                await res.rows()
            return rows, res.rowcount, repr(res)

    assert asyncio.run(run()) == ([(5,)], 1, "<AsyncQueryResult SELECT columns=('count(*)',) rows=1 complete>")

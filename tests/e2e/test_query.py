"""The query language end to end: results from a real cluster compared with a Python model."""

import asyncio
import json
import random

import pytest

from raftkv import AsyncClient, Client, errors
from raftkv.keys import MAX_KEY

pytestmark = pytest.mark.timeout(180)


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from .conftest import RunningCluster

    c = RunningCluster(str(tmp_path_factory.mktemp("q") / "cluster"))
    rng = random.Random(11)
    model = {}
    for i in range(3000):
        k = rng.randrange(2**64) if i % 2 else 1_763_700_000_000_000_000 + i * 10**9
        if i % 10 == 0:
            v = b"\xff\xfe not json"
        elif i % 10 == 1:
            v = json.dumps({"dev": f"a{i % 3}"}).encode()  # no temp
        else:
            v = json.dumps({"temp": rng.randrange(0, 50), "dev": f"a{i % 3}"}).encode()
        model[k] = v
    with Client(c.seeds) as db:
        db.put_many(model.items())
    yield c, model
    c.close()


def _temp(v):
    try:
        t = json.loads(v).get("temp")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None
    return t if isinstance(t, int) else None


def _dev(v):
    try:
        return json.loads(v).get("dev")
    except (ValueError, UnicodeDecodeError, AttributeError):
        return None


def test_selects_match_the_model(loaded):
    c, model = loaded
    keys = sorted(model)
    lo, hi = keys[500], keys[2500]
    with Client(c.seeds) as db:
        got = list(db.query(f"SELECT * FROM kv WHERE key BETWEEN {lo} AND {hi}"))
        assert got == [(k, model[k]) for k in keys if lo <= k <= hi]

        got = list(db.query("SELECT key FROM kv WHERE value->'temp' > 30 ORDER BY key DESC LIMIT 7"))
        assert got == [(k,) for k in sorted(keys, reverse=True) if (_temp(model[k]) or -1) > 30][:7]

        picks = keys[::300]
        hexed = ", ".join(hex(k) for k in picks)
        got = list(db.query(f"SELECT key, value FROM kv WHERE key IN ({hexed}, 12345)"))
        assert got == [(k, model[k]) for k in picks]

        got = list(db.query("SELECT key FROM kv WHERE value LIKE '%\"dev\": \"a2\"%' AND NOT key < 0x8000000000000000"))
        assert got == [(k,) for k in keys if b'"dev": "a2"' in model[k] and k >= 2**63]

        got = list(db.query("SELECT key FROM kv WHERE value->'temp' IS NULL"))
        assert got == [(k,) for k in keys if _temp(model[k]) is None]

        assert list(db.query(f"SELECT * FROM kv WHERE key > {MAX_KEY - 1} AND key < 5")) == []


def test_aggregates_are_pushed_down_and_merged(loaded):
    c, model = loaded
    with Client(c.seeds) as db:
        [(count, kmin, kmax)] = list(db.query("SELECT count(*), min(key), max(key) FROM kv"))
        assert (count, kmin, kmax) == (len(model), min(model), max(model))
        temps = [_temp(v) for v in model.values() if _dev(v) == "a1" and _temp(v) is not None]
        [(n, avg, tmax)] = list(db.query("SELECT count(*), avg(value->'temp'), max(value->'temp') FROM kv "
                                         "WHERE value->'dev' = 'a1' AND value->'temp' IS NOT NULL"))
        assert n == len(temps) and tmax == max(temps) and avg == pytest.approx(sum(temps) / len(temps))
        [(none_sum,)] = list(db.query("SELECT sum(value->'temp') FROM kv WHERE key = 1"))
        assert none_sum is None


def test_explain_shows_pruning(loaded):
    c, _ = loaded
    with Client(c.seeds) as db:
        res = db.query("EXPLAIN SELECT * FROM kv WHERE key BETWEEN 10 AND 20 AND value->'temp' > 3")
        text = "\n".join(line for (line,) in res)
        assert res.columns == ("plan",)
        assert "[10 .. 20]" in text and "pruned" in text and "value->'temp' > 3" in text


def test_writes_and_errors(loaded):
    c, model = loaded
    with Client(c.seeds) as db:
        res = db.query("INSERT INTO kv VALUES (7, 'seven'), (0x10, x'00ff')")
        assert res.status == "INSERT 2" and list(res) == []
        assert list(db.query("GET 16")) == [(16, b"\x00\xff")]
        with pytest.raises(errors.QueryError) as exc:
            db.query("INSERT INTO kv VALUES (8, 'eight'), (-1, 'bad')")
        assert db.get(8) is None  # nothing written by the failing statement
        with pytest.raises(errors.QueryError) as exc:
            db.query("SELECT * FRM kv")
        assert "^" in str(exc.value) and "line 1" in str(exc.value)
        before = len(list(db.scan()))
        res = db.query("DELETE FROM kv WHERE key <= 16")
        assert res.status == "DELETE 2" and len(list(db.scan())) == before - 2


def test_async_query(loaded):
    c, model = loaded

    async def run():
        async with AsyncClient(c.seeds) as db:
            res = await db.query("SELECT count(*) FROM kv WHERE key >= 0x8000000000000000")
            return await res.rows()

    assert asyncio.run(run()) == [(sum(1 for k in model if k >= 2**63),)]

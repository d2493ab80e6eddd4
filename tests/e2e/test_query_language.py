"""Issue 11's language items against a real cluster: rows written with INSERT (key, value), read
back with projections, ->>, GROUP BY a JSON field with time_bucket, OFFSET and count(expr), and
compared with a Python model; EXPLAIN must still show pruning and pushdown."""

import json
import random

import pytest

from raftkv import Client, errors
from raftkv.keys import MAX_KEY

pytestmark = pytest.mark.timeout(180)

STEP = (MAX_KEY + 1) // 8  # the launcher's 8 shards split the key space evenly
T0 = 1_795_000_000_000_000_000  # shard s0000
T1 = STEP + T0  # shard s0001: the same readings in a second shard, so groups merge across shards
MINUTE = 60 * 10**9


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from .conftest import RunningCluster

    c = RunningCluster(str(tmp_path_factory.mktemp("ql") / "cluster"))
    rng = random.Random(5)
    model = {}
    for base in (T0, T1):
        for i in range(240):
            doc = {"temp": rng.randrange(-5, 45), "site": f"s{i % 3}"}
            if i % 4:
                doc["sensor"] = "abc"[i % 4 - 1]
            model[base + i * 7 * 10**9] = json.dumps(doc).encode()
    items = sorted(model.items())
    with Client(c.seeds) as db:
        for n, chunk in enumerate(items[i:i + 60] for i in range(0, len(items), 60)):
            if n % 2:  # both orders of the column list
                rows = ", ".join(f"('{v.decode()}', {k})" for k, v in chunk)
                res = db.query(f"INSERT INTO kv (value, key) VALUES {rows}")
            else:
                rows = ", ".join(f"({k}, '{v.decode()}')" for k, v in chunk)
                res = db.query(f"INSERT INTO kv (key, value) VALUES {rows}")
            assert res.status == f"INSERT {len(chunk)}"
    yield c, model
    c.close()


def _doc(v: bytes) -> dict:
    return json.loads(v)


def _explain(db, text: str) -> list[str]:
    return [line for (line,) in db.query("EXPLAIN " + text)]


def test_projections_and_text_fields(loaded):
    c, model = loaded
    with Client(c.seeds) as db:
        assert db.get(T0) == model[T0]  # the INSERT with a column list wrote key and value the right way
        text = (f"SELECT key, value->'temp' AS t, value->>'site' AS site, value->'temp' * 1.8 + 32 AS f "
                f"FROM kv WHERE key BETWEEN {T0} AND {T0 + 10 * MINUTE} AND value->>'site' = 's1'")
        res = db.query(text)
        assert res.columns == ("key", "t", "site", "f")
        expected = [(k, _doc(v)["temp"], "s1", _doc(v)["temp"] * 1.8 + 32) for k, v in sorted(model.items())
                    if T0 <= k <= T0 + 10 * MINUTE and _doc(v)["site"] == "s1"]
        assert list(res) == expected and expected
        lines = _explain(db, text)
        assert "  filter on shards: value->>'site' = 's1'" in lines
        assert "  computed on the client per row: t, site, f" in lines
        assert any(line.startswith("  shards: 1 of 8 (7 pruned)") for line in lines)


def test_group_by_sensor_and_time_bucket_is_merged_per_group(loaded):
    c, model = loaded
    text = (f"SELECT time_bucket('10m', key) AS bucket, value->'sensor' AS sensor, count(*) AS n, "
            f"max(value->'temp') AS hot FROM kv WHERE key >= {T0} AND key <= {T1 + 3600 * 10**9} "
            f"GROUP BY bucket, sensor ORDER BY bucket DESC")
    groups: dict = {}
    for k, v in model.items():
        g = (k - k % (10 * MINUTE), _doc(v).get("sensor"))
        n, hot = groups.get(g, (0, None))
        groups[g] = (n + 1, max(hot, _doc(v)["temp"]) if hot is not None else _doc(v)["temp"])
    expected = sorted(((b, s, n, hot) for (b, s), (n, hot) in groups.items()),
                      key=lambda r: (r[0], r[1] is None, r[1] or ""), reverse=True)
    with Client(c.seeds) as db:
        assert list(db.query(text)) == expected
        lines = _explain(db, text)
        assert ("  partial aggregates on shards: bucket: group key; sensor: group key; n: count; hot: max"
                in lines)
        assert "  grouped by value->'sensor' on the shards; groups merged on the client" in lines
        assert any(line.startswith("  shards: 2 of 8 (6 pruned)") for line in lines)
        # sorted on the client by an aggregate
        hot: dict = {}
        for v in model.values():
            sensor = _doc(v).get("sensor")
            hot[sensor] = max(hot.get(sensor, -99), _doc(v)["temp"])
        got = list(db.query("SELECT value->'sensor' AS s, max(value->'temp') AS hot FROM kv "
                            "GROUP BY s ORDER BY hot DESC"))
        assert [h for _, h in got] == sorted(hot.values(), reverse=True)
        assert dict(got) == hot
        # a field alone, not selected: one count per sensor, across both shards
        got = sorted(n for (n,) in db.query("SELECT count(*) FROM kv GROUP BY value->>'sensor'"))
        assert got == [120, 120, 120, 120]


def test_offset_and_count_of_an_expression(loaded):
    c, model = loaded
    keys = sorted(model, reverse=True)
    with Client(c.seeds) as db:
        got = list(db.query(f"SELECT key FROM kv WHERE key >= {T0} ORDER BY key DESC LIMIT 5 OFFSET 250"))
        assert got == [(k,) for k in keys[250:255]]
        got = list(db.query(f"SELECT key FROM kv WHERE key >= {T0} OFFSET 478"))
        assert got == [(k,) for k in sorted(model)[478:]]
        [(rows, sensors, n)] = list(db.query("SELECT count(*), count(value->'sensor'), count(1) FROM kv "
                                             f"WHERE key >= {T0}"))
        assert (rows, sensors, n) == (480, 360, 480)


def test_natural_mistakes_are_explained(loaded):
    c, _ = loaded
    with Client(c.seeds) as db:
        with pytest.raises(errors.QueryError) as e:
            db.query("SELECT * FROM kv WHERE time > now() - INTERVAL '1 hour'")
        assert "unknown column 'time'; the columns are key and value" in str(e.value)
        with pytest.raises(errors.QueryError) as e:
            db.query("SELECT * FROM kv WHERE value->'temp' > '30'")
        assert "write 30 without quotes" in str(e.value)

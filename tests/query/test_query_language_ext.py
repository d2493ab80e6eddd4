"""Issue 11's language items, without sockets: projections of expressions, ``->>``, aliases in
GROUP BY / ORDER BY, errors for natural mistakes, GROUP BY JSON fields, OFFSET, count(expr),
short interval units and INSERT with a column list.

Plain SELECTs run through the real executor over an in-memory client; aggregates run the shards'
side (``Aggregates.update`` over each scan, partials through msgpack) and the client's merge.
Results are compared with answers computed independently in plain Python (query_reference.py).
"""

import asyncio
import json
import random

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from raftkv.errors import QueryError
from raftkv.query import Aggregates, SelectPlan, compile_filter, executor, explain, parse, plan
from raftkv.query.aggregate import sort_rows
from raftkv.query.ast import Column, JsonField, Name
from raftkv.query.predicate import compile_value
from raftkv.routing.shardmap import initial_map

from .query_reference import holds, ref_json, ref_text, shown, value_of
from .test_query_executor import MemoryClient
from .test_query_fuzz import FUZZ, conditions
from .test_query_fuzz import ROWS as RANDOM_ROWS

pytestmark = pytest.mark.timeout(60)

MAP = initial_map(["n1", "n2", "n3"], 8)
STEP = 2**64 // 8
NOW = 50
T0 = 1_795_000_000_000_000_000  # in shard s0000 of MAP
MINUTE = 60 * 10**9
SENSORS = ["a", "b", "c", None]


def _rows(n: int = 400, seed: int = 7) -> dict[int, bytes]:
    rng = random.Random(seed)
    rows = {}
    for i in range(n):
        k = T0 + i * 7 * 10**9  # a reading every 7 s: about 47 minutes
        if i % 13 == 0:
            rows[k] = b"\xff not json"
            continue
        doc = {"temp": rng.choice([rng.randrange(-5, 45), rng.uniform(-5, 45)]), "site": f"s{i % 3}"}
        sensor = SENSORS[i % 4]
        if sensor is not None:
            doc["sensor"] = sensor
        if i % 17 == 0:
            doc["temp"] = "n/a"
        if i % 19 == 0:
            doc["site"] = {"room": i % 2}
        rows[k] = json.dumps(doc).encode()
    return rows


ROWS = _rows()


def _plan(text: str) -> SelectPlan:
    p = plan(parse(text), MAP, now_ns=NOW)
    assert isinstance(p, SelectPlan)
    return p


def _run(text: str, rows: dict[int, bytes] = ROWS) -> list[tuple]:
    """The rows of a plain SELECT through the real executor, over an in-memory client."""
    async def go():
        result = await executor.execute(MemoryClient(rows), text, now_ns=NOW)
        return await result.rows()
    return asyncio.run(go())


def _aggregate(text: str, rows: dict[int, bytes] = ROWS) -> list[tuple]:
    """An aggregate SELECT the way the cluster runs it: per-shard partials, merged on the client."""
    p = _plan(text)
    aggs = Aggregates(p.aggregates, p.bucket_ns)
    match = compile_filter(p.filter)
    total = aggs.new()
    for scan in p.scans:
        shard = Aggregates(msgpack.unpackb(msgpack.packb(p.aggregates)), p.bucket_ns)
        part = shard.new()
        for lo, hi in scan.ranges:
            for k in sorted(k for k in rows if lo <= k <= hi):
                if match(k, rows[k]):
                    shard.update(part, k, rows[k])
        total = aggs.merge(total, msgpack.unpackb(msgpack.packb(part), raw=False))
    if p.sort_column is None:  # as the executor does
        rows = aggs.finalize(total, p.descending)
    else:
        rows = sort_rows(aggs.finalize(total), p.sort_column, p.descending)
    out = [tuple(r[:len(p.columns)]) for r in rows]
    out = out[p.offset or 0:]
    return out if p.limit is None else out[:p.limit]


def _error(text: str) -> str:
    with pytest.raises(QueryError) as e:
        plan(parse(text), MAP, now_ns=NOW)
    return e.value.message


def _temp(v: bytes):
    t = ref_json(v, ["temp"])
    return t if isinstance(t, (int, float)) and not isinstance(t, bool) else None


# --- 1. projections of expressions, and ->> -------------------------------------------------------


def test_projections_are_computed_per_row_on_the_client_and_the_filter_still_goes_to_the_shards():
    text = (f"SELECT key, value->'temp' AS t, value->>'site' AS site, value->'temp' * 1.8 + 32 AS f "
            f"FROM kv WHERE key BETWEEN {T0} AND {T0 + 10 * MINUTE} AND value->'temp' > 20")
    p = _plan(text)
    assert p.columns == ("key", "t", "site", "f")
    assert p.fields[0] == "key" and [f[0] for f in p.fields[1:]] == ["expr"] * 3
    lines = explain(p)
    assert "  filter on shards: value->'temp' > 20" in lines
    assert "  computed on the client per row: t, site, f" in lines
    assert any(line.startswith("  shards: 1 of 8 (7 pruned)") for line in lines)
    expected = []
    for k in sorted(ROWS):
        v = ROWS[k]
        t = _temp(v)
        if T0 <= k <= T0 + 10 * MINUTE and t is not None and t > 20:
            expected.append((k, t, ref_text(ref_json(v, ["site"])), t * 1.8 + 32))
    got = _run(text)
    assert got == expected and len(got) > 10
    sites = {site for _, site in _run(f"SELECT key, value->>'site' FROM kv WHERE key >= {T0}")}
    assert {"s0", "s1", "s2", '{"room": 0}', '{"room": 1}', None} == sites


def test_projected_values_follow_the_documented_shapes():
    value = json.dumps({"n": 30, "f": 31.5, "s": "a7", "b": True, "o": {"x": [1, 2]}, "z": None,
                        "a": [1, "x"]}).encode()
    rows = {5: value, 6: b"\xffnot json"}
    got = _run("SELECT value->'n', value->'f', value->'s', value->'b', value->'o', value->'z', value->'q', "
               "value->>'n', value->>'f', value->>'s', value->>'b', value->>'o', value->'a'->>1, "
               "length(value), key * 2, 'c', value FROM kv WHERE key = 5 OR key = 6", rows)
    assert got[0] == (30, 31.5, "a7", True, '{"x": [1, 2]}', None, None,
                      "30", "31.5", "a7", "true", '{"x": [1, 2]}', "x", len(value), 10, "c", value)
    assert got[1][:13] == (None,) * 13
    # the reference model agrees with the compiled closures
    for path in (["n"], ["o"], ["s"], ["a"]):
        assert compile_value(["json", path])(5, value) == shown(ref_json(value, path))
        assert compile_value(["jsontext", path])(5, value) == ref_text(ref_json(value, path))


def test_arrow_text_is_accepted_in_where_and_matches_the_reference_model():
    for cond in ("value->>'site' = 's1'", "value->>'site' LIKE 's%'", "value->>'temp' STARTS WITH '2'",
                 "value->>'sensor' IS NULL", "value->>'site' IN ('s0', 's2')", "value->>'temp' > '3'",
                 "value->>'site' != value->'site'", "NOT value->>'sensor' CONTAINS 'b'"):
        text = f"SELECT key FROM kv WHERE {cond}"
        where = parse(text).where
        expected = [(k,) for k in sorted(ROWS) if holds(where, k, ROWS[k], NOW)]
        assert _run(text) == expected, cond
        assert "jsontext" in json.dumps(_plan(text).filter)
    assert len(_run("SELECT key FROM kv WHERE value->>'site' = 's1'")) > 50


@pytest.mark.parametrize(("text", "fragment"), [
    ("SELECT * FROM kv WHERE value->>'temp' > 30",
     "cannot compare value->>'temp' (text) with 30 (a number): ->> reads the field as text; use -> to compare"),
    ("SELECT * FROM kv WHERE value->>'ok' = TRUE", "cannot compare value->>'ok' (text) with TRUE (a boolean)"),
    ("SELECT value->>'t' + 1 FROM kv", "arithmetic needs numbers, but value->>'t' (text) is not one; ->> reads"),
    ("SELECT avg(value->>'t') FROM kv", "avg() needs numbers, but value->>'t' (text) is not one"),
    ("SELECT key > 5 FROM kv", "cannot select the condition key > 5"),
    ("SELECT NULL FROM kv", "cannot select NULL"),
    ("SELECT count(*) + 1 FROM kv", "aggregate count() is not allowed inside an expression of the SELECT list"),
])
def test_projection_and_text_errors(text, fragment):
    assert fragment in _error(text)


def test_arrow_text_renders_and_parses_back():
    s = parse("SELECT value->'a'->>'b' FROM kv WHERE value->>0 IS NOT NULL")
    assert s.items[0].expr == JsonField(("a", "b"), True)
    assert s.where.operand == JsonField((0,), True)
    assert _plan("SELECT key FROM kv WHERE value->'a'->>'b' = 'x'").filter_text == "value->'a'->>'b' = 'x'"


# --- 2. aliases in GROUP BY and ORDER BY ------------------------------------------------------------


def test_aliases_in_group_by_and_order_by_mean_their_expressions():
    aliased = parse("SELECT time_bucket('1 minute', key) AS minute, count(*) AS n FROM kv "
                    "GROUP BY minute ORDER BY minute DESC LIMIT 3")
    spelled = parse("SELECT time_bucket(INTERVAL '1 minute', key) AS minute, count(*) AS n FROM kv "
                    "GROUP BY time_bucket(INTERVAL '1 minute', key) ORDER BY key DESC LIMIT 3")
    assert aliased == spelled
    p = plan(aliased, MAP, now_ns=NOW)
    assert p.descending and p.bucket_ns == MINUTE and p.aggregates == [["bucket"], ["count"]]
    got = _aggregate("SELECT time_bucket('1 minute', key) AS minute, count(*) AS n FROM kv "
                     "GROUP BY minute ORDER BY minute DESC LIMIT 3")
    buckets: dict[int, int] = {}
    for k in ROWS:
        buckets[k - k % MINUTE] = buckets.get(k - k % MINUTE, 0) + 1
    assert got == sorted(buckets.items(), reverse=True)[:3]
    # an alias of to_timestamp(time_bucket(...)) groups by the bucket
    stamped = _plan("SELECT to_timestamp(time_bucket('1m', key)) AS m, count(*) FROM kv GROUP BY m ORDER BY m DESC")
    assert (stamped.bucket_ns, stamped.timestamps, stamped.descending, stamped.sort_column) == (MINUTE, (0,), True, None)
    # ORDER BY an alias of key, or of to_timestamp(key), in a plain SELECT
    assert parse("SELECT key AS k FROM kv ORDER BY k DESC").order == "desc"
    assert _plan("SELECT to_timestamp(key) AS t, value FROM kv ORDER BY t DESC").reverse_scan


@pytest.mark.parametrize(("text", "fragment", "column"), [
    ("SELECT * FROM kv WHERE time > now() - INTERVAL '1 hour'",
     "unknown column 'time'; the columns are key and value; a JSON field is written value->'time'", 24),
    ("SELECT temp FROM kv", "unknown column 'temp'; the columns are key and value", 8),
    ("SELECT count(*) FROM kv GROUP BY sensor", "unknown column 'sensor'", 34),
    ("SELECT key FROM kv ORDER BY ts", "unknown column 'ts'", 29),
    ("SELECT value->'t' AS t FROM kv WHERE t > 5", "the alias t cannot be used in WHERE", 38),
    ("SELECT value AS v FROM kv ORDER BY v", "ORDER BY value needs a LIMIT", 36),
    ("SELECT key AS a, value AS a FROM kv ORDER BY a", "ORDER BY a is ambiguous", 46),
    ("SELECT * FROM kv WHERE value->'temp' > '30'",
     "value->'temp' > '30' compares the JSON field value->'temp' with the string '30', and a number is never "
     "ordered against a string, so no row would match: write 30 without quotes to compare numbers, or "
     "value->>'temp' to compare text", 24),
    ("SELECT * FROM kv WHERE value->'temp' BETWEEN '1.5' AND 30", "write 1.5 without quotes", 24),
    ("SELECT count(*) FROM kv GROUP BY time_bucket('1 fortnight', key)", "unknown unit 'fortnight'", 46),
])
def test_natural_mistakes_get_located_messages(text, fragment, column):
    with pytest.raises(QueryError) as e:
        parse(text)
    assert fragment in e.value.message
    assert e.value.details["column"] == column
    assert "^" in e.value.message


def test_string_comparisons_that_are_meant_stay_allowed():
    for cond in ("value->'dev' > 'a7'", "value->'temp' = '30'", "value->>'temp' > '30'", "value->'dev' IN ('30')"):
        parse(f"SELECT * FROM kv WHERE {cond}")


def test_a_bare_name_no_longer_reports_a_missing_parenthesis():
    with pytest.raises(QueryError) as e:
        parse("SELECT * FROM kv WHERE time > 5")
    assert "expected '('" not in e.value.message
    assert parse("SELECT key AS k FROM kv ORDER BY k").order_by == Column("key")
    assert isinstance(parse("SELECT key AS k FROM kv").items[0].expr, Column)
    assert Name("x").name == "x"


# --- 4. GROUP BY JSON fields -----------------------------------------------------------------------


def _sensor_groups(rows, bucket_ns=None):
    """{(bucket?, sensor): [count, temps]} computed directly."""
    groups: dict = {}
    for k, v in rows.items():
        sensor = ref_json(v, ["sensor"])
        g = (k - k % bucket_ns, sensor) if bucket_ns else (sensor,)
        entry = groups.setdefault(g, [0, []])
        entry[0] += 1
        if _temp(v) is not None:
            entry[1].append(_temp(v))
    return groups


def _null_last(x):
    return (x is None, x or "")


def test_group_by_a_json_field_pushes_partials_down_and_merges_per_group():
    text = ("SELECT value->'sensor' AS sensor, count(*), avg(value->'temp') AS avg_t, max(value->'temp') "
            f"FROM kv WHERE key >= {T0} AND key < {T0 + 3600 * 10**9} GROUP BY sensor")
    p = _plan(text)
    assert p.aggregates[0] == ["group", ["json", ["sensor"]]]
    lines = explain(p)
    assert ("  partial aggregates on shards: sensor: group key; count(*): count; avg_t: sum and count; "
            "max(value->'temp'): max") in lines
    assert "  grouped by value->'sensor' on the shards; groups merged on the client" in lines
    assert any(line.startswith("  shards: 1 of 8 (7 pruned)") for line in lines)
    groups = _sensor_groups(ROWS)
    expected = [(g[0], n, sum(ts) / len(ts), max(ts)) for g, (n, ts) in sorted(groups.items(),
                                                                                key=lambda x: _null_last(x[0][0]))]
    got = _aggregate(text)
    assert [r[:2] for r in got] == [r[:2] for r in expected]
    assert [r[0] for r in got] == ["a", "b", "c", None]  # NULL (no sensor, or not JSON) last
    for g, e in zip(got, expected, strict=True):
        assert g[2] == pytest.approx(e[2]) and g[3] == e[3]
    assert [r[0] for r in _aggregate(text + " ORDER BY sensor DESC")] == [None, "c", "b", "a"]
    assert _aggregate(text + " ORDER BY sensor DESC LIMIT 2 OFFSET 1") == _aggregate(text)[::-1][1:3]


def test_group_by_time_bucket_and_a_field_and_unselected_fields():
    text = ("SELECT time_bucket('5 minutes', key) AS t, value->>'sensor' AS s, count(*) FROM kv "
            "GROUP BY t, s ORDER BY t DESC")
    groups = _sensor_groups(ROWS, 5 * MINUTE)
    expected = sorted(((b, s, n) for (b, s), (n, _) in groups.items()),
                      key=lambda r: (r[0], r[1] is None, r[1] or ""))[::-1]
    assert _aggregate(text) == expected
    # grouped by a field that is not selected: one row per group, its column dropped
    hidden = _aggregate("SELECT count(*) AS n FROM kv GROUP BY value->'sensor'")
    assert sorted(hidden) == sorted((n,) for n, _ in _sensor_groups(ROWS).values())
    lines = explain(_plan("SELECT count(*) AS n FROM kv GROUP BY value->'sensor'"))
    assert "  partial aggregates on shards: n: count; value->'sensor' (not selected): group key" in lines


def test_field_groups_keep_kinds_apart_and_survive_the_network():
    rows = {1: b'{"g": 1}', 2: b'{"g": 1.0}', 3: b'{"g": true}', 4: b'{"g": "1"}', 5: b'{"g": null}',
            6: b'{"g": [1]}', 7: b'{"g": 100000000000000000000000}', 8: b"{}", STEP + 1: b'{"g": 1}'}
    got = _aggregate("SELECT value->'g', count(*) FROM kv GROUP BY value->'g'", rows)
    assert got == [(True, 1), (1, 3), (1e23, 1), ("1", 1), ("[1]", 1), (None, 2)]
    aggs = Aggregates([["group", ["json", ["g"]]], ["count"]])
    with pytest.raises(QueryError, match="malformed group"):
        aggs.merge([], [[[float("nan")], [None, 1]]])
    with pytest.raises(QueryError, match="'group' takes a json or jsontext operand"):
        Aggregates([["group", ["key"]], ["count"]])


@pytest.mark.parametrize(("text", "fragment"), [
    ("SELECT count(*) FROM kv GROUP BY value->'a' ORDER BY key",
     "cannot ORDER BY key: a grouped query can be ordered by its GROUP BY expressions and aggregates"),
    ("SELECT count(*) FROM kv GROUP BY time_bucket('1 s', key) ORDER BY value->'a'",
     "a grouped query can be ordered by key, its GROUP BY expressions and aggregates"),
    ("SELECT count(*) FROM kv GROUP BY value->'a' ORDER BY sum(value)", "sum() needs numbers"),
    ("SELECT value->'a', count(*) FROM kv ORDER BY count(*)", "cannot mix aggregates"),
    ("SELECT count(*) FROM kv GROUP BY time_bucket('1 s', key), time_bucket('2 s', key)",
     "only one time_bucket"),
    ("SELECT value->'c', count(*) FROM kv GROUP BY value->'a'", "must be inside an aggregate or be the GROUP BY expression"),
])
def test_group_by_errors(text, fragment):
    assert fragment in _error(text)


def test_groups_can_be_sorted_on_the_client_by_aggregates_and_later_fields():
    groups = _sensor_groups(ROWS)
    avg = {g[0]: sum(ts) / len(ts) for g, (_, ts) in groups.items()}
    text = ("SELECT value->'sensor' AS s, count(*) AS n, avg(value->'temp') AS t FROM kv "
            "GROUP BY s ORDER BY t DESC LIMIT 2")
    p = _plan(text)
    assert (p.sort_column, p.aggregates[p.sort_column]) == (2, ["avg", ["json", ["temp"]]])
    assert "  order: t descending; groups sorted on the client" in explain(p)
    got = _aggregate(text)
    best = sorted(avg, key=avg.get, reverse=True)[:2]
    assert [r[0] for r in got] == best and [r[2] for r in got] == pytest.approx([avg[s] for s in best])
    # by an aggregate that is not selected: its entry is dropped after the sort
    p = _plan("SELECT value->'sensor' AS s FROM kv GROUP BY s ORDER BY count(value->'temp' * 1)")
    assert p.aggregates == [["group", ["json", ["sensor"]]], ["count", ["*", ["json", ["temp"]], 1]]]
    got = _aggregate("SELECT value->'sensor' AS s FROM kv GROUP BY s ORDER BY count(value->'temp' * 1)")
    counts = {g[0]: len(ts) for g, (_, ts) in groups.items()}
    assert got == [(s,) for s in sorted(counts, key=lambda s: (counts[s], _null_last(s)))]
    # by a later field, with a bucket: a stable sort keeps the buckets ascending per sensor
    text = ("SELECT time_bucket('10m', key) AS b, value->'sensor' AS s, count(*) FROM kv "
            "GROUP BY b, s ORDER BY s")
    by_bucket = _sensor_groups(ROWS, 10 * MINUTE)
    expected = sorted(((b, s, n) for (b, s), (n, _) in by_bucket.items()), key=lambda r: (_null_last(r[1]), r[0]))
    assert _aggregate(text) == expected


# --- 5. OFFSET, count(expr), time_bucket without INTERVAL, short units -----------------------------


def test_offset_skips_rows_on_the_client_after_the_shards_return_limit_plus_offset():
    base = f"SELECT key, value FROM kv WHERE key >= {T0} ORDER BY key DESC"
    everything = _run(base)
    p = _plan(base + " LIMIT 5 OFFSET 10")
    assert (p.limit, p.offset, p.shard_limit, p.reverse_scan) == (5, 10, 15, True)
    lines = explain(p)
    assert "  limit: 15 rows per shard, 5 in total" in lines
    assert "  offset: the first 10 rows are skipped on the client" in lines
    assert _run(base + " LIMIT 5 OFFSET 10") == everything[10:15]
    assert _run(base + " OFFSET 10 LIMIT 5") == everything[10:15]
    assert _run(base + " OFFSET 390") == everything[390:]
    assert _run(base + " OFFSET 1000") == []
    keys = sorted(ROWS)[:6]
    assert _run(f"SELECT key FROM kv WHERE key IN ({', '.join(map(str, keys))}) LIMIT 2 OFFSET 3") == [
        (k,) for k in keys[3:5]]
    assert _plan(base + " OFFSET 3").shard_limit is None
    assert "OFFSET must not be negative" in _error(base + " OFFSET -1")
    assert "OFFSET must be a whole number" in _error(base + " OFFSET 1.5")


def test_count_of_an_expression_counts_non_null_values():
    p = _plan("SELECT count(*), count(key), count(1), count(value), count(value->'temp'), "
              "count(value->>'sensor'), count(value->'temp' * 2) FROM kv")
    assert p.aggregates == [["count"]] * 4 + [["count", ["json", ["temp"]]], ["count", ["jsontext", ["sensor"]]],
                                              ["count", ["*", ["json", ["temp"]], 2]]]
    assert any("count(value->'temp'): count of non-NULL" in line for line in explain(p))
    got = _aggregate("SELECT count(*), count(key), count(1), count(value), count(value->'temp'), "
                     "count(value->>'sensor'), count(value->'temp' * 2) FROM kv")
    n = len(ROWS)
    temps = sum(ref_json(v, ["temp"]) is not None for v in ROWS.values())
    numbers = sum(_temp(v) is not None for v in ROWS.values())
    sensors = sum(ref_json(v, ["sensor"]) is not None for v in ROWS.values())
    assert got == [(n, n, n, n, temps, sensors, numbers)]
    assert temps > numbers  # "n/a" counts for count(value->'temp') but is no number
    assert "count(NULL) counts nothing" in _error("SELECT count(NULL) FROM kv")
    assert "count() takes * or one expression" in _error("SELECT count(key, value) FROM kv")


def test_time_bucket_takes_a_string_width_and_intervals_take_short_units():
    a = parse("SELECT time_bucket('90m', key), count(*) FROM kv GROUP BY time_bucket(INTERVAL '1h30m', key)")
    assert a.group_by == a.items[0].expr
    assert _plan("SELECT count(*) FROM kv GROUP BY time_bucket('1h30m', key)").bucket_ns == 90 * MINUTE
    for text, ns in (("90m", 90 * MINUTE), ("1h30m", 90 * MINUTE), ("5s", 5 * 10**9), ("250ms", 250 * 10**6),
                     ("1h 30m", 90 * MINUTE), ("2m30s", 150 * 10**9)):
        assert parse(f"GET INTERVAL '{text}'").key.value == ns


# --- 6. INSERT with a column list --------------------------------------------------------------------


def test_insert_with_a_column_list_in_either_order():
    plain = parse("INSERT INTO kv VALUES (1, 'a'), (2, 'b')")
    assert parse("INSERT INTO kv (key, value) VALUES (1, 'a'), (2, 'b')") == plain
    assert parse("insert into kv (VALUE, Key) values ('a', 1), ('b', 2)") == plain
    for text, fragment in (("INSERT INTO kv (key, ts) VALUES (1, 'a')", "unknown column 'ts'"),
                           ("INSERT INTO kv (key, key) VALUES (1, 'a')", "column key is listed twice"),
                           ("INSERT INTO kv (value, key) VALUES (1, 'a')", "the key to insert must be a constant number")):
        with pytest.raises(QueryError, match=fragment):
            parse(text)


# --- properties against the reference model, over the fuzz tests' random rows ---------------------

_RANK = {bool: 0, int: 1, float: 1, str: 2, type(None): 3}


def _ref_groups(rows: dict[int, bytes], path: list, text: bool) -> list[tuple]:
    """(field, count(*), count(field)) per group, in the documented group order, by brute force."""
    groups: dict = {}
    for v in rows.values():
        x = ref_json(v, path)
        x = ref_text(x) if text else shown(x)
        if isinstance(x, int) and not isinstance(x, bool) and not -(2**63) <= x <= 2**64 - 1:
            x = float(x)
        g = (_RANK[type(x)], x)
        n, nn = groups.get(g, (0, 0))
        groups[g] = (n + 1, nn + (x is not None))
    return [(g[1], n, nn) for g, (n, nn) in sorted(groups.items())]


@FUZZ
@given(rows=RANDOM_ROWS, field=st.sampled_from(["'temp'", "'dev'", "'a'", "'a'->0", "0"]), text=st.booleans(),
       desc=st.booleans())
def test_group_by_a_field_matches_brute_force(rows, field, text, desc):
    arrow = "->>" if text else "->"
    expr = f"value{arrow}{field}" if "->" not in field else f"value->{field.replace('->', arrow)}"
    path = [int(s) if s.isdigit() else s.strip("'") for s in field.split("->")]
    got = _aggregate(f"SELECT {expr} AS g, count(*), count({expr}) FROM kv GROUP BY g"
                     + (" ORDER BY g DESC" if desc else ""), rows)
    expected = _ref_groups(rows, path, text)
    assert got == (expected[::-1] if desc else expected)


@FUZZ
@given(rows=RANDOM_ROWS, where=conditions(1), offset=st.sampled_from(["", " OFFSET 0", " OFFSET 2", " LIMIT 3 OFFSET 1"]))
def test_projections_match_the_reference_model(rows, where, offset):
    items = ["key", "value->'temp'", "value->>'dev'", "value->'temp' * 2 + 1", "value->'a'", "length(value)"]
    text = f"SELECT {', '.join(items)} FROM kv WHERE {where}{offset}"
    try:
        s = parse(text)
    except QueryError:
        return  # e.g. an ordering comparison with '30' (refused) or a key bound out of range
    try:
        plan(s, MAP, now_ns=NOW)
    except QueryError:
        return
    matching = [k for k in sorted(rows) if holds(s.where, k, rows[k], NOW)]
    expected = [tuple(shown(value_of(item.expr, k, rows[k], NOW)) for item in s.items) for k in matching]
    expected = expected[s.offset or 0:]
    expected = expected if s.limit is None else expected[:s.limit]
    assert _run(text, rows) == expected


def test_explain_names_the_group_order_and_huge_offsets_stay_in_range():
    lines = explain(_plan("SELECT value->'sensor', count(*) FROM kv GROUP BY value->'sensor' ORDER BY value->'sensor' DESC"))
    assert "  order: groups descending" in lines
    huge = f"SELECT key FROM kv LIMIT 5 OFFSET {2**63 - 1}"
    assert _plan(huge).shard_limit is None
    assert _run(huge) == []

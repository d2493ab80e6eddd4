"""Parse → plan → simulated shards, checked against the AST reference model.

A tiny in-memory "executor" follows each plan's contract (scan the listed ranges shard by shard,
filter, per-shard limit, merge partial aggregates) so ranges, residual filters and pushdowns are
verified together: whatever the planner drops from the filter must be enforced by the ranges.
"""

import bisect
import json
import random

import msgpack
import pytest

from raftkv.keys import MAX_KEY
from raftkv.query import Aggregates, compile_filter, parse, plan
from raftkv.query.keyset import normalize
from raftkv.routing.shardmap import initial_map

from .query_reference import holds, is_number, value_of

pytestmark = pytest.mark.timeout(60)

MAP = initial_map(["n1", "n2", "n3"], 8)
STEP = 2**64 // 8
NOW = 50
KEY_CONSTANTS = [0, 1, 5, 17, 30, 2.5, STEP - 1, STEP, 5 * STEP + 3, MAX_KEY - 1, MAX_KEY]


def make_rows(seed: int) -> dict[int, bytes]:
    rnd = random.Random(seed)
    keys = {0, 1, 2, 5, 16, 17, 18, 30, 31, 40, 49, 50, STEP - 1, STEP, STEP + 1, 5 * STEP + 3, MAX_KEY - 1, MAX_KEY}
    keys |= {rnd.randint(0, 60) for _ in range(30)} | {rnd.randint(0, MAX_KEY) for _ in range(20)}
    rows = {}
    for k in keys:
        doc = {"temp": rnd.choice([10, 29.5, 30, 31, 45.25, None, "30"]), "dev": rnd.choice(["a7", "b2", "a77", 7])}
        if rnd.random() < 0.2:
            del doc["temp"]
        rows[k] = rnd.choice([json.dumps(doc).encode()] * 5 + [b"raw bytes", b"x", b"\xff"])
    return rows


ATOMS = [
    "value->'temp' > 30", "value->'temp' <= 30", "value->'dev' = 'a7'", "value->'dev' != 'a7'",
    "value LIKE '%a7%'", "value NOT LIKE '{%'", "value STARTS WITH 'raw'", "value CONTAINS 'b2'",
    "value->'temp' IS NULL", "value->'temp' IS NOT NULL", "length(value) < 30", "value = 'x'", "value != x'ff'",
    "key + 1 > 17", "key = value->'temp'", "value->'dev' IN ('a7', 7)", "value->'temp' BETWEEN 29 AND 31",
    "TRUE", "FALSE", "key >= now() - 10", "key < now()", "1 = 1", "now() > 100",
]


def key_atom(rnd: random.Random) -> str:
    c = rnd.choice(KEY_CONSTANTS)
    r = rnd.random()
    if r < 0.5:
        op = rnd.choice(["=", "!=", "<", "<=", ">", ">="])
        return f"key {op} {c}" if rnd.random() < 0.8 else f"{c} {op} key"
    if r < 0.75:
        a, b = sorted(rnd.sample(KEY_CONSTANTS, 2))
        return f"key {rnd.choice(['', 'NOT '])}BETWEEN {a} AND {b}"
    items = ", ".join(str(x) for x in rnd.sample(KEY_CONSTANTS, rnd.randint(1, 4)))
    return f"key {rnd.choice(['', 'NOT '])}IN ({items})"


def gen_where(rnd: random.Random, depth: int = 0) -> str:
    r = rnd.random()
    if depth >= 3 or r < 0.35:
        return key_atom(rnd) if rnd.random() < 0.6 else rnd.choice(ATOMS)
    if r < 0.5:
        return f"NOT ({gen_where(rnd, depth + 1)})"
    joiner = rnd.choice([" AND ", " OR "])
    return "(" + joiner.join(gen_where(rnd, depth + 1) for _ in range(rnd.randint(2, 3))) + ")"


def shard_rows(rows: dict[int, bytes], ranges, reverse: bool):
    """A shard's range scan over the sorted rows."""
    keys = sorted(rows)
    for lo, hi in ranges:
        picked = keys[bisect.bisect_left(keys, lo):bisect.bisect_right(keys, hi)]
        yield from ((k, rows[k]) for k in (reversed(picked) if reverse else picked))


def run_select(p, rows):
    """What an executor does with a plain SelectPlan (filters arrive over msgpack)."""
    f = compile_filter(msgpack.unpackb(msgpack.packb(p.filter), raw=False))
    out = []
    for scan in p.scans:
        got = [(k, v) for k, v in shard_rows(rows, scan.ranges, p.reverse_scan) if f(k, v)]
        out += got[:p.shard_limit] if p.shard_limit is not None else got
    return out[:p.limit] if p.limit is not None else out


def check_plan_shape(p):
    assert normalize(r for s in p.scans for r in s.ranges) == p.ranges
    for scan in p.scans:
        shard = MAP.shard_by_id(scan.shard_id)
        assert all(shard.start <= lo <= hi < shard.end for lo, hi in scan.ranges)


def test_random_where_clauses_select_exactly_the_reference_rows():
    rnd = random.Random(2026)
    rows = make_rows(1)
    for _ in range(400):
        where = gen_where(rnd)
        stmt = parse(f"SELECT * FROM kv WHERE {where}")
        p = plan(stmt, MAP, now_ns=NOW)
        check_plan_shape(p)
        expected = [(k, v) for k, v in sorted(rows.items()) if holds(stmt.where, k, v, NOW)]
        assert run_select(p, rows) == expected, where


@pytest.mark.parametrize("direction", ["ASC", "DESC"])
@pytest.mark.parametrize("limit", [0, 1, 3, 1000])
def test_order_and_limit(direction, limit):
    rows = make_rows(2)
    where = f"key NOT IN (1, {STEP}) AND value->'temp' IS NOT NULL"
    stmt = parse(f"SELECT key FROM kv WHERE {where} ORDER BY key {direction} LIMIT {limit}")
    p = plan(stmt, MAP, now_ns=NOW)
    expected = [(k, v) for k, v in sorted(rows.items(), reverse=direction == "DESC")
                if holds(stmt.where, k, v, NOW)][:limit]
    assert run_select(p, rows) == expected


def run_aggregate(p, rows):
    aggs = Aggregates(p.aggregates, p.bucket_ns)
    f = compile_filter(p.filter)
    merged = aggs.new()
    for scan in p.scans:
        part = aggs.new()
        for k, v in shard_rows(rows, scan.ranges, p.reverse_scan):
            if f(k, v):
                aggs.update(part, k, v)
        merged = aggs.merge(merged, msgpack.unpackb(msgpack.packb(part), raw=False))
    out = aggs.finalize(merged, p.descending)
    return out[:p.limit] if p.limit is not None else out


def numbers(expr, matched):
    vals = [value_of(expr, k, v, NOW) for k, v in matched]
    return [x for x in vals if is_number(x)]


def test_aggregates_match_the_reference():
    rnd = random.Random(7)
    rows = make_rows(3)
    for _ in range(60):
        where = gen_where(rnd)
        stmt = parse(f"SELECT count(*), min(key), max(key), sum(value->'temp'), avg(value->'temp'), "
                     f"max(length(value) * 2) FROM kv WHERE {where}")
        p = plan(stmt, MAP, now_ns=NOW)
        matched = [(k, v) for k, v in sorted(rows.items()) if holds(stmt.where, k, v, NOW)]
        temps = numbers(stmt.items[3].expr.args[0], matched)
        keys = [k for k, _ in matched]
        expected = [len(matched), min(keys, default=None), max(keys, default=None), sum(temps) if temps else None,
                    sum(temps) / len(temps) if temps else None,
                    max((2 * len(v) for _, v in matched), default=None)]
        assert run_aggregate(p, rows) == [pytest.approx(expected)], where


def test_grouped_aggregates_match_the_reference():
    rows = make_rows(4)
    stmt = parse("SELECT time_bucket(10, key) AS b, count(*), avg(value->'temp') FROM kv "
                 "WHERE key < 60 AND value->'dev' != 'b2' GROUP BY time_bucket(10, key) ORDER BY key DESC LIMIT 4")
    p = plan(stmt, MAP, now_ns=NOW)
    groups: dict[int, list] = {}
    for k, v in sorted(rows.items()):
        if holds(stmt.where, k, v, NOW):
            groups.setdefault(k - k % 10, []).append((k, v))
    expected = []
    for bucket in sorted(groups, reverse=True)[:4]:
        temps = numbers(stmt.items[2].expr.args[0], groups[bucket])
        expected.append([bucket, len(groups[bucket]), sum(temps) / len(temps) if temps else None])
    assert run_aggregate(p, rows) == expected


def test_delete_plan_targets_the_same_rows_as_select():
    where = "key BETWEEN 10 AND 40 AND NOT key IN (17, 18) AND value->'dev' LIKE 'a%'"
    d = plan(parse(f"DELETE FROM kv WHERE {where}"), MAP, now_ns=NOW)
    s = plan(parse(f"SELECT * FROM kv WHERE {where}"), MAP, now_ns=NOW)
    assert (d.ranges, d.scans, d.filter) == (s.ranges, s.scans, s.filter)

"""Planner: key ranges from WHERE, shard pruning, pushdowns, writes, EXPLAIN."""

import time

import pytest

from raftkv.errors import QueryError
from raftkv.keys import MAX_KEY
from raftkv.query import (
    DeletePlan,
    ExplainPlan,
    GetPlan,
    InsertPlan,
    SelectPlan,
    ShowPlan,
    explain,
    parse,
    plan,
)
from raftkv.query.ast import Column, InList, JsonField, Literal, Not, Select, SelectItem, Star
from raftkv.query.keyset import FULL
from raftkv.query.planner import SplitPlan
from raftkv.routing.shardmap import initial_map

pytestmark = pytest.mark.timeout(60)

MAP = initial_map(["n1", "n2", "n3"], 8)
STEP = 2**64 // 8  # shard i owns [i * STEP, (i + 1) * STEP), the last one up to 2**64
NOW = 1_795_255_200_000_000_000  # 2026-11-21T10:00:00Z
MIN = 60 * 10**9


def select(where: str, tail: str = "", now: int = NOW) -> SelectPlan:
    return plan(parse(f"SELECT * FROM kv WHERE {where} {tail}"), MAP, now_ns=now)


def ranges(where: str, now: int = NOW) -> tuple:
    return select(where, now=now).ranges


# --- ranges ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("where", "expected"), [
    ("key = 5", ((5, 5),)),
    ("key != 5", ((0, 4), (6, MAX_KEY))),
    ("key < 5", ((0, 4),)),
    ("key <= 5", ((0, 5),)),
    ("key > 5", ((6, MAX_KEY),)),
    ("key >= 5", ((5, MAX_KEY),)),
    ("5 < key", ((6, MAX_KEY),)),
    ("5 >= key", ((0, 5),)),
    ("key BETWEEN 3 AND 7", ((3, 7),)),
    ("key BETWEEN 7 AND 3", ()),
    ("key NOT BETWEEN 3 AND 7", ((0, 2), (8, MAX_KEY))),
    ("key IN (9, 1, 2, 3, 7)", ((1, 3), (7, 7), (9, 9))),
    ("key NOT IN (1, 2)", ((0, 0), (3, MAX_KEY))),
    ("key > 5 AND key < 10", ((6, 9),)),
    ("key > 5 AND key < 6", ()),
    ("key < 5 OR key > 10", ((0, 4), (11, MAX_KEY))),
    ("key < 5 OR key = 5 OR key IN (6, 7)", ((0, 7),)),
    ("NOT key > 5", ((0, 5),)),
    ("NOT (key < 5 OR key > 10)", ((5, 10),)),
    ("NOT (key BETWEEN 1 AND 9 AND NOT key = 5)", ((0, 0), (5, 5), (10, MAX_KEY))),
    ("(key < 10 OR key > 100) AND key BETWEEN 5 AND 200", ((5, 9), (101, 200))),
    ("key = 1.5", ()),
    ("key != 1.5", FULL),
    ("key > 1.5", ((2, MAX_KEY),)),
    ("key >= 1.5", ((2, MAX_KEY),)),
    ("key < 1.5", ((0, 1),)),
    ("key <= 1.5", ((0, 1),)),
    ("key = 2.0", ((2, 2),)),
    ("key IN (1.5, 2)", ((2, 2),)),
    ("key = 0x10 + 1", ((17, 17),)),
])
def test_key_ranges(where, expected):
    assert ranges(where) == expected


@pytest.mark.parametrize(("where", "expected"), [
    ("key = 0", ((0, 0),)),
    ("key < 0", ()),
    ("key <= 0", ((0, 0),)),
    ("key >= 0", FULL),
    ("key != 0", ((1, MAX_KEY),)),
    ("key = 18446744073709551615", ((MAX_KEY, MAX_KEY),)),
    ("key > 18446744073709551615", ()),
    ("key >= 0xffffffffffffffff", ((MAX_KEY, MAX_KEY),)),
    ("key < 0xffffffffffffffff", ((0, MAX_KEY - 1),)),
    ("key NOT IN (0, 18446744073709551615)", ((1, MAX_KEY - 1),)),
    ("key BETWEEN 0 AND 18446744073709551615", FULL),
])
def test_edge_keys(where, expected):
    assert ranges(where) == expected


@pytest.mark.parametrize("where", [
    "value = 'x'", "value->'t' > 3", "length(value) > 2", "key > 5 OR value = 'x'",
    "NOT (key > 5 AND value = 'x')", "key + 0 > 5", "key > value->'t'", "TRUE", "1 = 1", "now() > 0",
])
def test_unconstrained_is_a_full_scan(where):
    assert ranges(where) == FULL
    assert select(where).scans == select("TRUE").scans
    assert len(select(where).scans) == 8


def test_no_where_is_a_full_scan():
    p = plan(parse("SELECT * FROM kv"), MAP, now_ns=NOW)
    assert p.ranges == FULL and p.filter is None and len(p.scans) == 8


@pytest.mark.parametrize("where", ["FALSE", "1 = 2", "key < 5 AND key > 5", "key IN (1) AND key IN (2)",
                                   "key = 3 AND value = 'x' AND key = 4", "'a' > 'b'"])
def test_empty_ranges_contact_no_shard(where):
    p = select(where)
    assert p.ranges == ()
    assert p.scans == ()


def test_value_predicates_keep_key_ranges():
    p = select("key BETWEEN 10 AND 20 AND value->'temp' > 30")
    assert p.ranges == ((10, 20),)
    assert p.filter == ["cmp", ">", ["json", ["temp"]], 30]
    assert p.dropped == ("key BETWEEN 10 AND 20",)


# --- residual filter -------------------------------------------------------------------------------


def test_key_only_where_has_no_residual_filter():
    p = select("key > 5 AND key IN (6, 7, 8) AND NOT key = 7")
    assert p.ranges == ((6, 6), (8, 8))
    assert p.filter is None and p.filter_text is None
    assert p.dropped == ("key > 5", "key IN (6, 7, 8)", "NOT key = 7")


def test_key_predicates_inside_or_stay_in_the_filter():
    p = select("key = 3 OR value = 'x'")
    assert p.filter == ["or", ["cmp", "=", ["key"], 3], ["cmp", "=", ["value"], "x"]]
    assert p.dropped == ()


def test_filter_wire_forms():
    p = select("value LIKE 'a%' AND value->'a'->0 IS NOT NULL AND value->'d' NOT IN ('x', 'y') "
               "AND length(value) * 2 > 4 AND value != x'00' AND value->'ok' = TRUE")
    assert p.filter == ["and",
                        ["like", ["value"], "a%"],
                        ["not", ["isnull", ["json", ["a", 0]]]],
                        ["not", ["in", ["json", ["d"]], ["x", "y"]]],
                        ["cmp", ">", ["*", ["len"], 2], 4],
                        ["cmp", "!=", ["value"], ["bytes", "00"]],
                        ["cmp", "=", ["json", ["ok"]], True]]
    assert "value LIKE 'a%'" in p.filter_text


def test_constants_are_folded_with_the_injected_clock():
    p = select("value->'ts' > now() - INTERVAL '1 minute' AND value->'x' BETWEEN 1 + 1 AND 2 * 3")
    assert p.filter == ["and", ["cmp", ">", ["json", ["ts"]], NOW - MIN],
                        ["and", ["cmp", ">=", ["json", ["x"]], 2], ["cmp", "<=", ["json", ["x"]], 6]]]


def test_now_is_read_once_and_injectable():
    assert ranges("key BETWEEN now() - INTERVAL '5 minutes' AND now()") == ((NOW - 5 * MIN, NOW),)
    assert ranges("key >= now()", now=NOW + 1) == ((NOW + 1, MAX_KEY),)
    assert ranges("key > TIMESTAMP '2026-11-21T10:00:00Z' + INTERVAL '1 hour'") == ((NOW + 60 * MIN + 1, MAX_KEY),)


def test_now_defaults_to_the_system_clock():
    before = time.time_ns()
    (lo, hi), = plan(parse("SELECT * FROM kv WHERE key >= now()"), MAP).ranges
    assert before <= lo <= time.time_ns() and hi == MAX_KEY


# --- errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(("where", "fragment"), [
    ("key > -1", "key bound -1 is outside the key range [0, 2**64-1]"),
    ("key = 18446744073709551616", "key bound 18446744073709551616 is outside"),
    ("key < 1e20", "outside the key range"),
    ("key IN (1, -2)", "key bound -2 is outside"),
    ("key BETWEEN 0 AND 0x10000000000000000", "is outside the key range"),
    ("key > now() - INTERVAL '100 weeks' * 1000", "key bound now() - INTERVAL '100 weeks' * 1000 = "),
    ("key > 1 / 0", "division by zero in 1 / 0"),
    ("value->'x' > 99999999999999999999999", "does not fit in 64 bits"),
])
def test_plan_errors(where, fragment):
    with pytest.raises(QueryError) as e:
        select(where)
    assert fragment in e.value.message
    assert e.value.message.startswith("line 1, column ")


def test_oversized_filter_is_refused_at_plan_time():
    # Built directly: parsing a 10,001-item list is slow and not what is tested here.
    def where_in(operand):
        return Select((SelectItem(Star()),), InList(operand, tuple(Literal(2 * i) for i in range(10_001))))

    with pytest.raises(QueryError, match="too large to send to the shards: more than 10000 nodes"):
        plan(where_in(JsonField(("d",))), MAP, now_ns=NOW)
    # The same list on the key is absorbed by the ranges and needs no filter at all.
    p = plan(where_in(Column("key")), MAP, now_ns=NOW)
    assert len(p.ranges) == 10_001 and p.filter is None


def test_deep_nesting_is_a_query_error():
    with pytest.raises(QueryError, match="too large to send to the shards: nested deeper than 64 levels"):
        select("NOT " * 100 + "value = 'x'")
    assert select("NOT " * 100 + "key = 1").ranges == ((1, 1),)  # key-only: absorbed, nothing sent
    deep = Select((SelectItem(Star()),), Literal(True))
    for _ in range(5000):
        deep = Select(deep.items, Not(deep.where))
    with pytest.raises(QueryError, match="nested too deeply"):
        plan(deep, MAP, now_ns=NOW)


# --- shards ----------------------------------------------------------------------------------------


def test_point_query_touches_one_shard():
    p = select(f"key = {3 * STEP + 7}")
    assert [(s.shard_id, s.ranges) for s in p.scans] == [("s0003", ((3 * STEP + 7, 3 * STEP + 7),))]
    assert p.scans[0].replicas == MAP.shards[3].replicas


def test_range_is_clipped_at_shard_boundaries():
    p = select(f"key BETWEEN {STEP - 10} AND {2 * STEP + 5}")
    assert [(s.shard_id, s.ranges) for s in p.scans] == [
        ("s0000", ((STEP - 10, STEP - 1),)),
        ("s0001", ((STEP, 2 * STEP - 1),)),
        ("s0002", ((2 * STEP, 2 * STEP + 5),)),
    ]
    assert p.total_shards == 8


def test_several_ranges_in_one_shard_and_pruning():
    p = select(f"key IN (1, 5, {5 * STEP}, {MAX_KEY}) OR key BETWEEN 10 AND 20")
    assert [(s.shard_id, s.ranges) for s in p.scans] == [
        ("s0000", ((1, 1), (5, 5), (10, 20))),
        ("s0005", ((5 * STEP, 5 * STEP),)),
        ("s0007", ((MAX_KEY, MAX_KEY),)),
    ]


def test_edge_shards():
    assert [s.shard_id for s in select("key = 0").scans] == ["s0000"]
    assert [s.shard_id for s in select(f"key = {MAX_KEY}").scans] == ["s0007"]
    assert [s.shard_id for s in select(f"key = {STEP}").scans] == ["s0001"]
    assert [s.shard_id for s in select(f"key = {STEP - 1}").scans] == ["s0000"]


def test_scans_cover_exactly_the_ranges():
    p = select(f"key NOT IN (0, {STEP}, {STEP + 1}) AND key < {4 * STEP + 3}")
    covered = [r for s in p.scans for r in s.ranges]
    assert covered == [(1, STEP - 1), (STEP + 2, 2 * STEP - 1), (2 * STEP, 3 * STEP - 1),
                       (3 * STEP, 4 * STEP - 1), (4 * STEP, 4 * STEP + 2)]


def test_descending_visits_shards_and_ranges_in_reverse():
    p = select(f"key IN (1, 5, {5 * STEP})", "ORDER BY key DESC LIMIT 2")
    assert p.reverse_scan and p.descending
    assert [(s.shard_id, s.ranges) for s in p.scans] == [("s0005", ((5 * STEP, 5 * STEP),)),
                                                         ("s0000", ((5, 5), (1, 1)))]


# --- pushdowns -------------------------------------------------------------------------------------


def test_limit_is_pushed_to_each_shard():
    p = select("value = 'x'", "LIMIT 10")
    assert (p.limit, p.shard_limit, p.reverse_scan, p.descending) == (10, 10, False, False)
    p = select("TRUE", "ORDER BY key ASC")
    assert (p.limit, p.shard_limit, p.reverse_scan) == (None, None, False)


def test_limit_zero_contacts_no_shard():
    assert select("TRUE", "LIMIT 0").scans == ()


def test_columns_and_fields():
    p = plan(parse("SELECT value AS v, key, * FROM kv"), MAP, now_ns=NOW)
    assert p.columns == ("v", "key", "key", "value")
    assert p.fields == ("value", "key", "key", "value")
    assert p.aggregates is None


def test_partial_aggregates_are_pushed_down():
    p = plan(parse("SELECT count(*), min(key), max(key) AS last, sum(value->'t'), avg(value->'t' * 2), "
                   "min(length(value)), max(now() - key) FROM kv WHERE key >= 100 LIMIT 5"), MAP, now_ns=NOW)
    assert p.aggregates == [["count"], ["min", ["key"]], ["max", ["key"]], ["sum", ["json", ["t"]]],
                            ["avg", ["*", ["json", ["t"]], 2]], ["min", ["len"]], ["max", ["-", NOW, ["key"]]]]
    assert p.columns == ("count(*)", "min(key)", "last", "sum(value->'t')", "avg(value->'t' * 2)",
                         "min(length(value))", "max(now() - key)")
    assert p.fields == () and p.bucket_ns is None
    assert (p.limit, p.shard_limit) == (5, None)  # LIMIT counts output rows, not scanned ones


def test_grouped_aggregates():
    p = plan(parse("SELECT time_bucket(INTERVAL '1 minute', key) AS minute, avg(value->'t') FROM kv "
                   "WHERE key >= now() - INTERVAL '1 hour' GROUP BY time_bucket(INTERVAL '1 minute', key) "
                   "ORDER BY key DESC LIMIT 10"), MAP, now_ns=NOW)
    assert p.aggregates == [["bucket"], ["avg", ["json", ["t"]]]]
    assert p.bucket_ns == MIN
    assert p.descending and not p.reverse_scan  # groups are reversed at finalize, shards scan forward
    assert (p.limit, p.shard_limit) == (10, None)
    assert p.ranges == ((NOW - 60 * MIN, MAX_KEY),)


def test_bad_bucket_width():
    with pytest.raises(QueryError, match="time_bucket width must be a positive whole number"):
        plan(parse("SELECT count(*) FROM kv GROUP BY time_bucket(0, key)"), MAP, now_ns=NOW)
    with pytest.raises(QueryError, match="time_bucket width"):
        plan(parse("SELECT count(*) FROM kv GROUP BY time_bucket(1.5, key)"), MAP, now_ns=NOW)


# --- DELETE, INSERT, GET, SHOW, EXPLAIN ------------------------------------------------------------


def test_delete_plan():
    p = plan(parse("DELETE FROM kv WHERE key < 100 AND value CONTAINS 'tmp'"), MAP, now_ns=NOW)
    assert isinstance(p, DeletePlan)
    assert p.ranges == ((0, 99),)
    assert p.filter == ["contains", ["value"], "tmp"]
    assert [s.shard_id for s in p.scans] == ["s0000"]
    p = plan(parse("DELETE FROM kv WHERE key = 5"), MAP, now_ns=NOW)
    assert (p.ranges, p.filter) == (((5, 5),), None)


def test_insert_plan_validates_and_groups_rows():
    p = plan(parse(f"INSERT INTO kv VALUES (1, 'héllo'), ({MAX_KEY}, x'00ff'), (2, ''), (now(), 'now'), (1e3, 'f')"),
             MAP, now_ns=NOW)
    assert isinstance(p, InsertPlan)
    assert p.rows == ((1, "héllo".encode()), (MAX_KEY, b"\x00\xff"), (2, b""), (NOW, b"now"), (1000, b"f"))
    assert [(w.shard_id, w.rows) for w in p.writes] == [
        ("s0000", ((1, "héllo".encode()), (2, b""), (NOW, b"now"), (1000, b"f"))),
        ("s0007", ((MAX_KEY, b"\x00\xff"),)),
    ]
    assert p.writes[0].replicas == MAP.shards[0].replicas


@pytest.mark.parametrize(("text", "fragment"), [
    ("INSERT INTO kv VALUES (1, 'a'), (-1, 'b')", "outside [0, 2**64-1]"),
    ("PUT 18446744073709551616 'a'", "outside [0, 2**64-1]"),
    ("PUT 1.5 'a'", "the key to insert must be a whole number, got 1.5"),
    ("PUT (1 / 0) 'a'", "division by zero"),
])
def test_bad_insert_keys(text, fragment):
    with pytest.raises(QueryError) as e:
        plan(parse(text), MAP, now_ns=NOW)
    assert fragment in e.value.message


def test_oversized_value_is_refused():
    big = "a" * (1024 * 1024 + 1)
    with pytest.raises(QueryError, match="exceeds the maximum"):
        plan(parse(f"INSERT INTO kv VALUES (1, 'ok'), (2, '{big}')"), MAP, now_ns=NOW)
    assert plan(parse(f"PUT 1 '{big[:-1]}'"), MAP, now_ns=NOW).rows[0][1] == big[:-1].encode()


def test_get_plan():
    p = plan(parse(f"GET {6 * STEP} + 1"), MAP, now_ns=NOW)
    assert p == GetPlan(6 * STEP + 1, "s0006", MAP.shards[6].replicas)
    with pytest.raises(QueryError, match="outside"):
        plan(parse("GET 0 - 1"), MAP, now_ns=NOW)


def test_show_and_explain_plans():
    assert plan(parse("SHOW NODES"), MAP) == ShowPlan("nodes")
    p = plan(parse("EXPLAIN SELECT * FROM kv WHERE key = 1"), MAP, now_ns=NOW)
    assert isinstance(p, ExplainPlan) and p.plan == select("key = 1")


def test_split_plan():
    assert plan(parse("SPLIT SHARD s0003"), MAP) == SplitPlan("s0003", None)
    assert plan(parse("SPLIT SHARD s0003 AT 0x10"), MAP) == SplitPlan("s0003", 16)
    assert plan(parse(f"SPLIT SHARD s0007 AT {MAX_KEY}"), MAP) == SplitPlan("s0007", MAX_KEY)
    assert plan(parse("SPLIT SHARD s0001 AT 2e3"), MAP) == SplitPlan("s0001", 2000)  # a whole float is fine
    # now() is read once per statement, as for every other constant
    assert plan(parse("SPLIT SHARD s0006 AT now() - INTERVAL '1 minute'"), MAP, now_ns=NOW) == SplitPlan(
        "s0006", NOW - MIN)
    assert plan(parse("SPLIT SHARD s0006 AT TIMESTAMP '2026-11-21T10:00:00Z'"), MAP) == SplitPlan("s0006", NOW)
    # the planner does not judge the shard or the key against its (possibly old) map: the cluster does
    assert plan(parse("SPLIT SHARD s0099 AT 5"), MAP) == SplitPlan("s0099", 5)


@pytest.mark.parametrize(("text", "fragment"), [
    ("SPLIT SHARD s0003 AT 0 - 1", "line 1, column 22: the split key -1 is outside [0, 2**64-1]"),
    ("SPLIT SHARD s0003 AT 18446744073709551616", "outside [0, 2**64-1]"),
    ("SPLIT SHARD s0003 AT 1.5", "the split key must be a whole number, got 1.5"),
    ("SPLIT SHARD s0003 AT 1 / 0", "division by zero"),
    ("SPLIT SHARD s0003 AT 1e300", "outside [0, 2**64-1]"),
])
def test_bad_split_keys(text, fragment):
    with pytest.raises(QueryError) as e:
        plan(parse(text), MAP, now_ns=NOW)
    assert fragment in e.value.message


def test_explain_select():
    p = plan(parse("EXPLAIN SELECT * FROM kv WHERE key >= now() - INTERVAL '5 minutes' AND value->'temp' > 30 "
                   "ORDER BY key DESC LIMIT 10"), MAP, now_ns=NOW)
    leader = MAP.shards[0].replicas[1]
    assert explain(p, leaders={"s0000": leader}) == [
        "SELECT key, value",
        "  key ranges: 1 range, 16651489173709551616 keys",
        f"    [{NOW - 5 * MIN} .. {MAX_KEY}]",
        "  filter on shards: value->'temp' > 30",
        "  dropped from filter (enforced by key ranges): key >= now() - INTERVAL '5 minutes'",
        "  order: key descending; shards scan in reverse",
        "  limit: 10 rows per shard, 10 in total",
        "  shards: 8 of 8 (0 pruned)",
        *[f"    s{i:04d} [{max(i * STEP, NOW - 5 * MIN)} .. {min((i + 1) * STEP - 1, MAX_KEY)}] on "
          f"{', '.join(MAP.shards[i].replicas)}{f', leader {leader}' if i == 0 else ''}" for i in range(7, -1, -1)],
    ]


def test_explain_aggregates_and_pruning():
    lines = explain(plan(parse("SELECT count(*) AS n, avg(value->'t') FROM kv WHERE key BETWEEN 10 AND 20"),
                         MAP, now_ns=NOW))
    assert "  partial aggregates on shards: n: count; avg(value->'t'): sum and count" in lines
    assert "  shards: 1 of 8 (7 pruned)" in lines
    lines = explain(plan(parse("SELECT * FROM kv WHERE key < 0"), MAP, now_ns=NOW))
    assert "  key ranges: none (the WHERE clause matches no key)" in lines
    assert "  shards: none of 8 contacted" in lines


def test_explain_lists_are_capped():
    keys = ", ".join(str(2 * i) for i in range(20))
    lines = explain(plan(parse(f"DELETE FROM kv WHERE key IN ({keys}) OR key > {MAX_KEY - 5 * STEP}"), MAP))
    assert lines[0] == "DELETE"
    assert "    ... and 13 more" in lines
    assert any("... (20 ranges)" in line for line in lines)


def test_explain_refuses_other_plans():
    with pytest.raises(QueryError, match="EXPLAIN describes SELECT and DELETE only"):
        explain(plan(parse("GET 1"), MAP))

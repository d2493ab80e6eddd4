"""Hostile sizes: long LIKE patterns, huge literals, long key chains and IN lists, oversized statements.

Each of these once stalled a node or the client, or escaped as an exception other than QueryError.
The tests assert on outcomes (errors, plans), never on wall time; pytest-timeout bounds them.
"""

import random

import pytest

from raftkv.errors import QueryError
from raftkv.keys import MAX_KEY
from raftkv.query import keyset, parse, parser, plan
from raftkv.query.like import MAX_PATTERN_BYTES, MAX_PERCENT, MAX_UNDERSCORE_SEGMENT, compile_like
from raftkv.query.predicate import MAX_FILTER_COST, compile_filter, filter_cost
from raftkv.routing.shardmap import initial_map

from .query_reference import holds

pytestmark = pytest.mark.timeout(30)

MAP = initial_map(["n1", "n2", "n3"], 8)
NOW = 50
STALL_PATTERN = "%" + "_%" * 300_000  # the fuzzer's pattern: ~1.7 s to compile, per replica


def where(text: str):
    return parse(f"SELECT * FROM kv WHERE {text}")


def select_plan(text: str):
    return plan(where(text), MAP, now_ns=NOW)


# --- 1. LIKE patterns are bounded --------------------------------------------------------------------


@pytest.mark.parametrize("pattern", [STALL_PATTERN, "x" * (MAX_PATTERN_BYTES + 1),
                                     "\u00e9" * (MAX_PATTERN_BYTES // 2 + 1),  # short in characters, not bytes
                                     "%a" * (MAX_PERCENT + 1),
                                     "%" + "a_" * (MAX_UNDERSCORE_SEGMENT // 2) + "b%"],
                         ids=["fuzzer", "long", "long-in-utf8", "many-percent", "long-underscore-run"])
def test_oversized_like_patterns_are_refused_everywhere(pattern):
    with pytest.raises(QueryError):
        compile_like(pattern)
    with pytest.raises(QueryError):
        compile_like(pattern.encode())
    for target in (["value"], ["json", ["d"]]):  # what Node._filter does at the server door
        with pytest.raises(QueryError, match="^bad filter: "):
            compile_filter(["like", target, pattern])
    text = pattern.replace("'", "''")
    with pytest.raises(QueryError) as e:
        where(f"value LIKE '{text}'")
    assert e.value.details["column"] == len("SELECT * FROM kv WHERE value LIKE ") + 1


def test_patterns_at_the_limits_are_accepted():
    at_limit = ["x" * MAX_PATTERN_BYTES, "\u00e9" * (MAX_PATTERN_BYTES // 2), "%a" * MAX_PERCENT,
                "%" + "a_" * (MAX_UNDERSCORE_SEGMENT // 2) + "%",
                "%" + "a" * (MAX_PATTERN_BYTES - 2) + "%"]  # a long run is fine without _
    for pattern in at_limit:
        assert compile_like(pattern)(pattern.replace("%", "").replace("_", "a")) in (True, False)
        compile_filter(["like", ["value"], pattern])
        where(f"value->'d' LIKE '{pattern}'")


def test_starts_with_and_contains_patterns_are_bounded_too():
    long = "y" * (MAX_PATTERN_BYTES + 1)
    for keyword, op in (("STARTS WITH", "starts"), ("CONTAINS", "contains")):
        with pytest.raises(QueryError, match=f"{keyword} pattern is too long"):
            where(f"value {keyword} '{long}'")
        with pytest.raises(QueryError, match="^bad filter: pattern is too long"):
            compile_filter([op, ["value"], long])
        compile_filter([op, ["value"], long[:-1]])


def test_range_delete_with_a_stalling_pattern_is_refused_on_the_replica(tmp_path):
    """The Raft thread compiles a delete's filter on every replica: it must refuse at once."""
    from raftkv.replication import commands
    from raftkv.storage.leveldb import ShardStore

    store = ShardStore(str(tmp_path / "s"))
    try:
        store.apply(1, puts=[(k, b"abc") for k in range(10)])
        wire = ["like", ["value"], STALL_PATTERN]
        reply = commands.apply(store, 2, commands.delete_range(0, None, wire)[1:])
        assert "pattern is too long" in reply["error"]
        assert len(store.scan(0, 2**64)[0]) == 10 and store.applied_index == 2
    finally:
        store.close()


def test_worst_allowed_underscore_segment_still_matches_correctly():
    # Every position of the text is a candidate and fails only at the last character.
    pattern = "%" + "a_" * (MAX_UNDERSCORE_SEGMENT // 2 - 1) + "ab%"
    text = "a" * 100_000
    assert compile_like(pattern)(text) is False
    assert compile_like(pattern)(text + "b") is True
    assert compile_like(pattern.encode())(text.encode() + b"b") is True


# --- 2. filter_cost -----------------------------------------------------------------------------------


def test_filter_cost_weighs_strings_by_length():
    assert filter_cost(None) == 1
    assert filter_cost(["bool", True]) == 1 + 4 + 1
    assert filter_cost(["like", ["value"], "x" * 4000]) == 1 + 4 + (1 + 5) + 4000
    assert filter_cost(["cmp", "=", ["value"], ["bytes", "00ff"]]) == 1 + 3 + 1 + (1 + 5) + (1 + 5 + 4)
    assert filter_cost([[[[[[[[]]]]]]]]) == 8


def test_filter_cost_is_iterative_on_deep_input():
    deep: list = ["bool", True]
    for _ in range(100_000):
        deep = ["not", deep]
    assert filter_cost(deep) == 100_000 * 4 + 6
    with pytest.raises(QueryError, match="nested deeper"):
        compile_filter(deep)


def test_range_delete_budget_uses_filter_cost():
    from raftkv.replication import commands

    wire = ["contains", ["value"], "z" * 4000]
    assert commands._size(wire) == filter_cost(wire) > 4000
    assert commands._size(None) == 1


def test_filters_heavier_than_the_budget_are_refused():
    many = ["or", *(["contains", ["value"], "q" * 4000] for _ in range(MAX_FILTER_COST // 4000 + 1))]
    with pytest.raises(QueryError, match="^bad filter: weighs more than"):
        compile_filter(many)
    with pytest.raises(QueryError, match="too large to send to the shards"):
        select_plan(" OR ".join(["value CONTAINS '" + "q" * 4000 + "'"] * (MAX_FILTER_COST // 4000 + 1)))


# --- 4. literals that explode ---------------------------------------------------------------------


@pytest.mark.parametrize(("text", "message"), [
    ("key = " + "1" * 4301, "too long"),
    ("key = " + "1" * 81, "too long"),
    ("key = 0x" + "f" * 3600, "too long"),
    ("key > now() - INTERVAL '" + "1" * 4301 + " ns'", "too long"),
    ("key > now() - INTERVAL '0." + "0" * 5000 + "1 s'", "too long"),
    ("value->" + "9" * 4301 + " = 1", "too long"),
    ("value->" + str(2**64) + " = 1", "JSON array index"),
    ("value = 'a\ud800b'", "not valid Unicode"),
], ids=["4301-digits", "81-digits", "hex-3600", "interval-4301-digits", "interval-5000-decimals",
        "path-4301-digits", "path-index-2**64", "lone-surrogate"])
def test_exploding_literals_give_a_located_query_error(text, message):
    with pytest.raises(QueryError, match=message) as e:
        where(text)
    assert e.value.details.get("line") == 1 and "column" in e.value.details
    assert "^" in str(e.value)


def test_constant_arithmetic_that_grows_without_bound_is_refused():
    big = "9" * 80
    with pytest.raises(QueryError, match="too large"):
        select_plan("key < " + " * ".join([big] * 200))
    with pytest.raises(QueryError, match="too large"):
        select_plan("key < 1e308 * 10")
    with pytest.raises(QueryError, match="too large"):
        select_plan("value->'t' < 1e308 * 1e308")
    assert select_plan(f"key < {big} - {big} + 5").ranges == ((0, 4),)  # big intermediates are fine


def test_leading_zeros_do_not_count_against_the_digit_limit():
    assert where("key = " + "0" * 5000 + "17").where.right.value == 17
    assert where("key = " + "0" * 5000).where.right.value == 0
    assert where("key = 0x" + "0" * 5000 + "11").where.right.value == 17


def test_limit_and_insert_literals_are_bounded():
    with pytest.raises(QueryError, match="too long"):
        parse("SELECT * FROM kv LIMIT " + "9" * 5000)
    with pytest.raises(QueryError, match="too long"):
        parse("PUT " + "9" * 5000 + " 'x'")


def test_a_builder_bug_surfaces_as_a_located_query_error(monkeypatch):
    def broken(self, *args):
        raise ValueError("boom")

    monkeypatch.setattr(parser._Builder, "string", broken)
    with pytest.raises(QueryError, match="internal error while reading the query: ValueError: boom") as e:
        parse("SELECT * FROM kv WHERE value = 'x'")
    assert e.value.details == {"line": 1, "column": 32}


def test_statement_size_is_bounded(monkeypatch):
    with pytest.raises(QueryError, match="the query is too long"):
        parse("SELECT * FROM kv WHERE " + " " * parser.MAX_QUERY_CHARS)
    monkeypatch.setattr(parser, "MAX_IN_ITEMS", 10)
    where("key IN (" + ", ".join(map(str, range(10))) + ")")
    with pytest.raises(QueryError, match="IN list has 11 items; at most 10") as e:
        where("key IN (" + ", ".join(map(str, range(11))) + ")")
    assert e.value.details["column"] == len("SELECT * FROM kv WHERE ") + 1


def test_a_max_size_value_still_fits_in_an_insert():
    value = "a" * (1 << 20)
    assert plan(parse(f"PUT 1 x'{value.encode().hex()}'"), MAP).rows == ((1, value.encode()),)


# --- 5. long key chains and IN lists plan in n log n --------------------------------------------------


def agrees_with_reference(text: str, ranges: keyset.KeySet, keys: list[int]) -> None:
    e = where(text).where
    for k in keys:
        in_ranges = any(lo <= k <= hi for lo, hi in ranges)
        assert in_ranges == holds(e, k, b"", NOW), (k, text[:80])


def test_a_long_and_chain_of_key_conditions_plans_exactly():
    n = 10_000
    excluded = [3 * i + 1 for i in range(n)]
    p = select_plan(" AND ".join(f"key != {c}" for c in excluded))
    assert p.filter is None and len(p.ranges) == n + 1
    assert p.ranges == keyset.complement(keyset.normalize((c, c) for c in excluded))
    # The reference model on a smaller chain of mixed conditions.
    rnd = random.Random(5)
    terms = [f"key != {rnd.randint(0, 400)}" for _ in range(150)] + ["key >= 20", "key <= 380", "NOT key IN (7, 99)"]
    rnd.shuffle(terms)
    text = " AND ".join(terms)
    agrees_with_reference(text, select_plan(text).ranges, list(range(0, 420)) + [MAX_KEY])


def test_a_long_or_chain_of_key_conditions_plans_exactly():
    n = 10_000
    p = select_plan(" OR ".join(f"key BETWEEN {10 * i} AND {10 * i + 2 + i % 9}" for i in range(n)))
    assert p.filter is None
    assert p.ranges == keyset.normalize((10 * i, 10 * i + 2 + i % 9) for i in range(n))
    rnd = random.Random(6)
    terms = [rnd.choice([f"key = {rnd.randint(0, 300)}", f"key BETWEEN {(a := rnd.randint(0, 300))} AND {a + 5}",
                         f"key > {rnd.randint(250, 320)}", f"NOT key >= {rnd.randint(0, 30)}"]) for _ in range(200)]
    text = " OR ".join(terms)
    agrees_with_reference(text, select_plan(text).ranges, list(range(0, 340)) + [MAX_KEY])


def test_intersect_all_agrees_with_pairwise_intersection():
    rnd = random.Random(7)
    for _ in range(300):
        sets = [keyset.normalize((a := rnd.randint(0, 60), a + rnd.randint(-2, 8)) for _ in range(rnd.randint(0, 5)))
                for _ in range(rnd.randint(0, 5))]
        expected = keyset.FULL
        for s in sets:
            expected = keyset.intersect(expected, s)
        assert keyset.intersect_all(sets) == expected
        union = keyset.EMPTY
        for s in sets:
            union = keyset.union(union, s)
        assert keyset.union_all(sets) == union


@pytest.mark.timeout(60)  # parsing 100,000 items is ~3 s on an idle machine; this box is shared
def test_a_100000_item_in_list_plans_exactly():
    rnd = random.Random(8)
    items = [rnd.randint(0, MAX_KEY) for _ in range(100_000)]
    p = select_plan("key IN (" + ", ".join(map(str, items)) + ")")
    assert p.filter is None and p.ranges == keyset.normalize((k, k) for k in items)
    assert sum(len(s.ranges) for s in p.scans) == len(p.ranges)
    small = [rnd.randint(0, 200) for _ in range(300)]
    text = "key NOT IN (" + ", ".join(map(str, small)) + ") AND key < 250"
    agrees_with_reference(text, select_plan(text).ranges, list(range(0, 260)))


def test_many_small_like_patterns_cannot_add_up_to_a_stall():
    from raftkv.query.predicate import MAX_FILTER_LIKE_SEGMENTS

    patterns = [f"%{i}_%" for i in range(MAX_FILTER_LIKE_SEGMENTS // 3 + 1)]  # 3 segments each, all distinct
    with pytest.raises(QueryError, match="^bad filter: more than .* LIKE segments"):
        compile_filter(["or", *(["like", ["value"], p] for p in patterns)])
    compile_filter(["or", *(["like", ["value"], p] for p in patterns[:-1])])

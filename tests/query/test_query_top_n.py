"""ORDER BY a value of the row with LIMIT on plain rows (a bounded top-N), without a cluster.

check.py refuses it without LIMIT or beyond MAX_TOP_N; the planner drops the per-shard limit and
the reverse scan; the executor's TopN keeps at most about 2 * (LIMIT + OFFSET) rows and must give
exactly what sorting every matching row would (the model below, written independently: kinds
booleans < numbers < strings < NULL, DESC reversing that, ties by key ascending).
"""

import json
import math
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from raftkv.errors import QueryError
from raftkv.query import ast, parse, plan
from raftkv.query.aggregate import sort_key, sort_rows
from raftkv.query.check import MAX_TOP_N
from raftkv.query.executor import TopN
from raftkv.query.planner import explain
from raftkv.routing.shardmap import initial_map

from .query_reference import holds, model_order, shown, value_of
from .test_query_executor import MemoryClient, run

pytestmark = pytest.mark.timeout(120)

MAP = initial_map(["n1", "n2", "n3"], 8)
STEP = 2**64 // 8
NOW = 50


def _plan(text: str):
    return plan(parse(text), MAP, now_ns=NOW)


# --- check.py ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "fragment"), [
    ("SELECT key, value->'temp' AS t FROM kv ORDER BY t DESC",
     "ORDER BY value->'temp' needs a LIMIT: rows are stored in key order"),
    ("SELECT * FROM kv ORDER BY value->'temp' OFFSET 5", "needs a LIMIT"),
    (f"SELECT * FROM kv ORDER BY value->'temp' LIMIT {MAX_TOP_N + 1}",
     f"LIMIT + OFFSET = {MAX_TOP_N + 1:,} would keep that many rows in the client's memory"),
    (f"SELECT * FROM kv ORDER BY value->'temp' LIMIT {MAX_TOP_N} OFFSET 1", "the most is 100,000"),
    ("SELECT * FROM kv ORDER BY value->'temp' LIMIT 9223372036854775807", "use a smaller LIMIT or OFFSET"),
    ("SELECT * FROM kv ORDER BY value->>'site' * 2 LIMIT 5", "arithmetic needs numbers, but value->>'site' (text)"),
    ("SELECT * FROM kv ORDER BY temp LIMIT 5", "unknown column 'temp'"),
    ("SELECT * FROM kv ORDER BY max(value->'temp') LIMIT 5", "aggregate max() is not allowed in ORDER BY"),
    ("SELECT * FROM kv ORDER BY value->'temp' > 3 LIMIT 5", "cannot ORDER BY the condition value->'temp' > 3"),
    ("SELECT * FROM kv ORDER BY 1 LIMIT 5", "cannot ORDER BY the constant 1"),
    ("SELECT * FROM kv ORDER BY now() LIMIT 5", "cannot ORDER BY the constant now()"),
    ("SELECT * FROM kv ORDER BY time_bucket('1 s', key) LIMIT 5", "time_bucket() can only be used in GROUP BY"),
    ("SELECT count(*) FROM kv ORDER BY value->'t' LIMIT 5", "ORDER BY cannot be used with aggregates"),
])
def test_refused_orders_say_why(text, fragment):
    with pytest.raises(QueryError) as e:
        parse(text)
    assert fragment in e.value.message


def test_the_error_without_limit_points_at_the_order_expression_even_through_an_alias():
    with pytest.raises(QueryError) as e:
        parse("SELECT value->'temp' AS t FROM kv ORDER BY t")
    assert (e.value.details["line"], e.value.details["column"]) == (1, 44)
    assert "add LIMIT n (LIMIT + OFFSET at most 100,000)" in e.value.message


@pytest.mark.parametrize("text", [
    "SELECT key, value->'temp' AS t FROM kv WHERE key >= 5 ORDER BY t DESC LIMIT 10",
    "SELECT * FROM kv ORDER BY value->>'site' LIMIT 3 OFFSET 2",
    "SELECT key FROM kv ORDER BY value->'temp' * 1.8 + 32 ASC LIMIT 1",
    "SELECT key FROM kv ORDER BY value LIMIT 1",
    "SELECT key FROM kv ORDER BY -key LIMIT 1",
    "SELECT key FROM kv ORDER BY length(value) DESC LIMIT 0",
    "SELECT to_timestamp(value->'ts') AS ts FROM kv ORDER BY ts LIMIT 3",
    f"SELECT key FROM kv ORDER BY value->'temp' LIMIT {MAX_TOP_N - 10} OFFSET 10",
])
def test_any_row_value_can_order_plain_rows_with_a_limit(text):
    parse(text)


# --- planner.py -------------------------------------------------------------------------------------


def test_a_top_n_plan_reads_everything_forward_and_keeps_limit_plus_offset_on_the_client():
    p = _plan("SELECT key, value->'temp' AS t FROM kv WHERE key >= 5 AND value->'site' = 's1' "
              "ORDER BY t DESC LIMIT 10 OFFSET 3")
    assert p.sort_field == ["expr", ["json", ["temp"]]]
    assert (p.sort_text, p.descending, p.limit, p.offset) == ("t", True, 10, 3)
    assert p.shard_limit is None and not p.reverse_scan and p.aggregates is None
    assert p.filter == ["cmp", "=", ["json", ["site"]], "s1"]  # predicates still go to the shards
    lines = explain(p)
    assert ("  order: t descending, ties by key ascending; top 13 rows kept on the client while every "
            "matching row is read (no per-shard limit)") in lines
    assert "  limit: 10 in total" in lines
    assert "  offset: the first 3 rows are skipped on the client" in lines
    assert "  filter on shards: value->'site' = 's1'" in lines


@pytest.mark.parametrize(("text", "field", "shown_as"), [
    ("SELECT * FROM kv ORDER BY value LIMIT 2", "value", "value"),
    ("SELECT value FROM kv ORDER BY key * 2 LIMIT 2", ["expr", ["*", ["key"], 2]], "key * 2"),
    ("SELECT to_timestamp(value->'ts') AS ts FROM kv ORDER BY ts LIMIT 2", ["expr", ["json", ["ts"]]], "ts"),
    ("SELECT key FROM kv ORDER BY value->>'site' LIMIT 2", ["expr", ["jsontext", ["site"]]], "value->>'site'"),
])
def test_the_sort_field_is_planned_like_a_select_item(text, field, shown_as):
    p = _plan(text)
    assert (p.sort_field, p.sort_text) == (field, shown_as)


@pytest.mark.parametrize("text", [
    "SELECT key FROM kv ORDER BY key DESC LIMIT 3 OFFSET 1",
    "SELECT to_timestamp(key) AS t FROM kv ORDER BY t DESC LIMIT 3 OFFSET 1",
])
def test_key_order_still_streams_with_a_per_shard_limit(text):
    p = _plan(text)
    assert (p.sort_field, p.shard_limit, p.reverse_scan) == (None, 4, True)
    assert "  order: key descending; shards scan in reverse" in explain(p)


def test_grouped_sorting_is_unchanged():
    p = _plan("SELECT value->'s' AS s, avg(value->'t') AS a FROM kv GROUP BY s ORDER BY a DESC LIMIT 2")
    assert p.sort_field is None and p.sort_column == 1


# --- the shared comparator and TopN -----------------------------------------------------------------


def test_sort_key_orders_kinds_and_puts_nan_after_the_numbers():
    values = ["b", None, 2, True, 1.5, float("nan"), "a", False, -math.inf, math.inf]
    ordered = sorted(values, key=sort_key)
    assert ordered[:5] == [False, True, -math.inf, 1.5, 2]
    assert ordered[5] == math.inf and math.isnan(ordered[6])
    assert ordered[7:] == ["a", "b", None]
    assert sort_rows([[None], [3], ["x"]], 0, descending=True) == [[None], ["x"], [3]]


scalars = st.one_of(st.none(), st.booleans(), st.integers(-5, 5), st.sampled_from([0.5, 2.0, -1.25]),
                    st.sampled_from(["", "a", "b", "ab"]))


@settings(max_examples=300, deadline=None)
@given(values=st.lists(scalars, max_size=80), n=st.integers(0, 30), descending=st.booleans(),
       page=st.integers(1, 17), seed=st.integers(0, 1000))
def test_top_n_is_the_head_of_the_full_sort_whatever_the_arrival_order(values, n, descending, page, seed):
    keys = random.Random(seed).sample(range(1000), len(values))  # arrival order is not key order
    rows = [(k, json.dumps({"v": x}).encode()) for k, x in zip(keys, values, strict=True)]
    by_key = dict(zip(keys, values, strict=True))
    top = TopN(n, lambda row: by_key[row[0]], descending)
    most = 0
    for i in range(0, len(rows), page):
        top.add(rows[i:i + page])
        most = max(most, len(top._kept))
        assert most <= 2 * n + 64 + page  # memory bounded by n, not by the number of rows
    got = [k for k, _ in top.rows()]
    assert got == model_order(list(by_key.items()), descending)[:n]


def test_top_n_holds_a_bounded_number_of_rows_over_a_long_stream():
    top = TopN(10, lambda row: row[0] % 1000, descending=True)
    for start in range(0, 200_000, 1000):
        top.add((k, b"") for k in range(start, start + 1000))
        assert len(top._kept) <= 2 * 10 + 64 + 1000
    assert [k for k, _ in top.rows()] == [999, 1999, 2999, 3999, 4999, 5999, 6999, 7999, 8999, 9999]


# --- executor.py over an in-memory cluster ----------------------------------------------------------


class PagingClient(MemoryClient):
    """The executor tests' in-memory client, serving scans in small pages (so TopN prunes several
    times) and recording each scan's limit."""

    def __init__(self, rows: dict[int, bytes]) -> None:
        super().__init__(rows)
        self.limits: list[int | None] = []

    async def scan_pages(self, start, end, *, limit=None, reverse=False, filter=None, page_keys=None):
        self.limits.append(limit)
        async for page in super().scan_pages(start, end, limit=limit, reverse=reverse, filter=filter):
            for i in range(0, len(page), 7):
                yield page[i:i + 7]


def make_rows(seed: int) -> dict[int, bytes]:
    """Rows over several shards: numbers (ties among them), strings, booleans, null, missing, non-JSON."""
    rnd = random.Random(seed)
    rows = {}
    for k in rnd.sample(range(200), 120) + [STEP + i for i in range(40)] + [5 * STEP + i for i in range(40)]:
        doc = {"temp": rnd.choice([10, 20, 20, 20.0, 31.5, -3, "hot", "20", True, False, None, {"x": 1}]),
               "site": rnd.choice(["a", "b", "c"])}
        if rnd.random() < 0.15:
            del doc["temp"]
        rows[k] = rnd.choice([json.dumps(doc).encode()] * 8 + [b"not json", b"\xff"])
    return rows


def project(s, k: int, v: bytes) -> tuple:
    """The model's output row of ``(k, v)`` for the select list of ``s``."""
    out: list = []
    for item in s.items:
        out += [k, v] if isinstance(item.expr, ast.Star) else [shown(value_of(item.expr, k, v, NOW))]
    return tuple(out)


QUERIES = [
    "SELECT key, value->'temp' AS t FROM kv ORDER BY t {d} LIMIT {n}",
    "SELECT key, value->'temp' AS t FROM kv ORDER BY t {d} LIMIT {n} OFFSET 7",
    "SELECT * FROM kv WHERE value->>'site' != 'b' AND key > 3 ORDER BY value->'temp' {d} LIMIT {n}",
    "SELECT key FROM kv ORDER BY value->'temp' * 2 - 1 {d} LIMIT {n} OFFSET 2",
    "SELECT key, value->>'temp' FROM kv ORDER BY value->>'temp' {d} LIMIT {n}",
    "SELECT key FROM kv WHERE key IN (1, 2, 3, 50, 51, 52, 60) OR key >= 199 ORDER BY value {d} LIMIT {n}",
    "SELECT key, length(value) FROM kv ORDER BY length(value) {d} OFFSET 1 LIMIT {n}",
]


@pytest.mark.parametrize("direction", ["ASC", "DESC"])
@pytest.mark.parametrize("n", [0, 1, 5, 1000])
@pytest.mark.parametrize("template", QUERIES)
def test_top_n_results_match_the_model(template, direction, n):
    rows = make_rows(3)
    client = PagingClient(rows)
    text = template.format(d=direction, n=n)
    got = run(client, text)
    s = parse(text)
    matched = [(k, v) for k, v in sorted(rows.items()) if s.where is None or holds(s.where, k, v, NOW)]
    values = {k: shown(value_of(s.order_by, k, v, NOW)) for k, v in matched}
    keys = model_order(list(values.items()), direction == "DESC")[s.offset or 0:][:n]
    expected = [project(s, k, rows[k]) for k in keys]
    assert got == expected
    assert all(limit is None for limit in client.limits)  # no per-shard limit: every row is a candidate

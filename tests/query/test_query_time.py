"""Timestamps in the query language: to_timestamp(), SELECT without FROM, and the Timestamp value."""

import asyncio
import json
import pickle
import re
from datetime import UTC, datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest

from raftkv.errors import QueryError
from raftkv.query import Aggregates, ConstantPlan, SelectPlan, Timestamp, executor, explain, parse, plan
from raftkv.query.ast import Call, ConstantSelect, Literal, SelectItem
from raftkv.query.timestamps import (
    MAX_NS,
    MIN_NS,
    format_timestamp,
    parse_timezone,
    to_timestamp_value,
    zone_name,
)
from raftkv.routing.shardmap import initial_map

pytestmark = pytest.mark.timeout(60)

MAP = initial_map(["n1", "n2", "n3"], 8)
NOW = 1_795_255_200_000_000_000  # 2026-11-21T10:00:00Z
MIN = 60 * 10**9
BERLIN = ZoneInfo("Europe/Berlin")


# --- the Timestamp value and its text --------------------------------------------------------------


@pytest.mark.parametrize(("ns", "tz", "text"), [
    (NOW, None, "2026-11-21T10:00:00.000000000Z"),
    (NOW + 123_456_789, UTC, "2026-11-21T10:00:00.123456789Z"),
    (0, None, "1970-01-01T00:00:00.000000000Z"),
    (-1, None, "1969-12-31T23:59:59.999999999Z"),  # the fraction of a negative ns counts forward
    (2**64 - 1, None, "2554-07-21T23:34:33.709551615Z"),  # the largest key
    (MIN_NS, None, "0001-01-01T00:00:00.000000000Z"),  # the year keeps its four digits
    (MAX_NS, None, "9999-12-31T23:59:59.999999999Z"),
    (NOW, BERLIN, "2026-11-21T11:00:00.000000000+01:00"),  # winter time
    (NOW - 120 * 86400 * 10**9, BERLIN, "2026-07-24T12:00:00.000000000+02:00"),  # summer time
    (NOW + 5, timezone(-timedelta(hours=5, minutes=30)), "2026-11-21T04:30:00.000000005-05:30"),
    (NOW, ZoneInfo("Europe/London"), "2026-11-21T10:00:00.000000000+00:00"),  # a zone, not UTC: its offset
    # local mean time (+00:19:32) has no RFC 3339 offset: the instant is written in UTC instead
    (-2208988800 * 10**9, ZoneInfo("Europe/Amsterdam"), "1900-01-01T00:00:00.000000000Z"),
    (MAX_NS, timezone(timedelta(hours=5)), "9999-12-31T23:59:59.999999999Z"),  # local time past 9999
])
def test_format_timestamp(ns, tz, text):
    assert format_timestamp(ns, tz) == text


def test_format_timestamp_refuses_what_rfc_3339_cannot_write():
    for ns in (MIN_NS - 1, MAX_NS + 1, -(10**30)):
        with pytest.raises(ValueError, match="outside the years 1 to 9999"):
            format_timestamp(ns)


def test_timestamp_is_an_exact_int_with_rfc_3339_text():
    ts = Timestamp(NOW + 1)
    assert isinstance(ts, int) and ts == NOW + 1 and hash(ts) == hash(NOW + 1)
    assert type(ts + 1) is int and ts + 1 == NOW + 2 and int(ts) == NOW + 1
    assert str(ts) == f"{ts}" == "2026-11-21T10:00:00.000000001Z"
    assert repr(ts) == "Timestamp('2026-11-21T10:00:00.000000001Z')"
    assert json.dumps([ts]) == f"[{NOW + 1}]" and f"{ts:d}" == str(NOW + 1)  # digits where ints are expected
    assert ts.isoformat(BERLIN) == "2026-11-21T11:00:00.000000001+01:00"
    assert ts.to_datetime() == datetime(2026, 11, 21, 10, tzinfo=UTC)  # microseconds: the 1 ns is cut
    assert ts.to_datetime(BERLIN).utcoffset() == timedelta(hours=1)
    assert Timestamp("2026-11-21T11:00:00.000000001+01:00") == ts
    back = pickle.loads(pickle.dumps(ts))
    assert type(back) is Timestamp and back == ts


def test_timestamp_refuses_bad_input():
    with pytest.raises(ValueError, match="day is out of range"):
        Timestamp("2026-11-31")
    with pytest.raises(ValueError, match="outside the years"):
        Timestamp(MAX_NS + 1)
    with pytest.raises(TypeError):
        Timestamp(1.5)
    with pytest.raises(TypeError):
        Timestamp(True)


@pytest.mark.parametrize(("x", "expected"), [
    (NOW, NOW),
    (1.5e18, 1_500_000_000_000_000_000),
    (-0.5, -1),  # a fraction is cut towards the past
    (MAX_NS, MAX_NS),
    (MAX_NS + 1, None),
    (MIN_NS - 1, None),
    (float("nan"), None),
    (float("inf"), None),
    (None, None),
    (True, None),
    ("123", None),
    (b"123", None),
])
def test_to_timestamp_value(x, expected):
    got = to_timestamp_value(x)
    assert got == expected
    assert (got is None) == (expected is None) and (got is None or type(got) is Timestamp)


@pytest.mark.parametrize(("text", "name"), [
    ("UTC", "UTC"), ("utc", "UTC"), ("Z", "UTC"), ("+00:00", "UTC"), (" -0000 ", "UTC"),
    ("+02:00", "+02:00"), ("-0530", "-05:30"), ("+09", "+09:00"), ("-23:59", "-23:59"),
    ("Europe/Berlin", "Europe/Berlin"), ("America/New_York", "America/New_York"),
])
def test_parse_timezone(text, name):
    assert zone_name(parse_timezone(text)) == name


@pytest.mark.parametrize("text", ["", "Mars/Olympus", "Europe", "zone.tab", "../etc/passwd", "/etc/localtime",
                                  "+24:00", "+02:60", "UTC+2", "europe/berlin "])
def test_parse_timezone_refuses_unknown_zones(text):
    with pytest.raises(ValueError, match="time zone|UTC offset"):
        parse_timezone(text)


# --- parsing and checking -------------------------------------------------------------------------


def test_select_without_from_parses_as_constants():
    assert parse("SELECT now();") == ConstantSelect((SelectItem(Call("now", ())),))
    assert parse("SELECT 1, to_timestamp(now()) AS t") == ConstantSelect(
        (SelectItem(Literal(1)), SelectItem(Call("to_timestamp", (Call("now", ()),)), "t")))
    assert parse("EXPLAIN SELECT now()").statement == ConstantSelect((SelectItem(Call("now", ())),))


def test_a_misspelt_from_still_says_from():
    with pytest.raises(QueryError) as e:
        parse("SELECT * FORM kv")
    assert e.value.message.splitlines()[0] == "line 1, column 10: unexpected name 'FORM'; expected one of: ',', FROM"


@pytest.mark.parametrize("text", [
    "SELECT to_timestamp(key) FROM kv",
    "SELECT to_timestamp(key) AS t, key, * FROM kv WHERE key > 5 ORDER BY key DESC LIMIT 3",
    "SELECT to_timestamp(value->'ts'), to_timestamp(key + INTERVAL '1 hour') FROM kv",
    "SELECT to_timestamp(min(key)), to_timestamp(avg(key)), count(*) FROM kv",
    "SELECT to_timestamp(time_bucket(INTERVAL '1 minute', key)) AS m, to_timestamp(max(key)) FROM kv "
    "GROUP BY time_bucket(INTERVAL '1 minute', key) ORDER BY key DESC",
    "SELECT to_timestamp(TIMESTAMP '2026-11-21' + INTERVAL '1 hour'), 'text', x'00ff', TRUE, NULL, 1.5 / 2",
])
def test_valid_uses_of_to_timestamp(text):
    parse(text)


@pytest.mark.parametrize(("text", "message"), [
    ("SELECT *", "SELECT * needs FROM kv"),
    ("SELECT key", "a SELECT without FROM can only select constants (such as now(), 1 + 2 or "
                   "to_timestamp(now())); key needs FROM kv"),
    ("SELECT 1 = 1", "1 = 1 needs FROM kv"),
    ("SELECT count(*)", "aggregate count() is not allowed in a SELECT without FROM"),
    ("SELECT to_timestamp('x')", "to_timestamp() needs nanoseconds since the Unix epoch, a number, not 'x' (a string)"),
    ("SELECT now() - to_timestamp(1)", "to_timestamp() can only be a whole item of the SELECT list"),
    ("SELECT * FROM kv WHERE to_timestamp(key) > 5", "to_timestamp() can only be a whole item of the SELECT list"),
    ("SELECT to_timestamp(to_timestamp(key)) FROM kv", "to_timestamp() can only be a whole item"),
    ("SELECT to_timestamp() FROM kv", "to_timestamp() takes one number"),
    ("SELECT to_timestamp(*) FROM kv", "to_timestamp() takes one number"),
    ("SELECT to_timestamp(1, 2)", "to_timestamp() takes one number"),
    ("SELECT to_timestamp(value) FROM kv", "to_timestamp() needs numbers, but value (bytes) is not one"),
    ("SELECT to_timestamp(min(key) + 1) FROM kv",
     "aggregate min() is not allowed inside to_timestamp() except as its whole argument"),
    ("SELECT to_timestamp(key), count(*) FROM kv",
     "cannot mix aggregates (count(*)) and plain columns (to_timestamp(key)) without GROUP BY"),
    ("SELECT to_timestamp(key) FROM kv GROUP BY time_bucket(INTERVAL '1 minute', key)",
     "to_timestamp(key) must be inside an aggregate or be the GROUP BY expression"),
    ("GET to_timestamp(5)", "the key for GET must be a constant number"),
    ("SELECT value->'t' > 1 FROM kv", "cannot select the condition value->'t' > 1: select values such as key, "
                                      "value, value->'temp' or value->'temp' * 1.8 + 32, and filter in WHERE"),
])
def test_misuses_are_errors_with_a_position(text, message):
    with pytest.raises(QueryError) as e:
        parse(text)
    assert message in e.value.message and e.value.details.get("line") == 1


# --- planning -------------------------------------------------------------------------------------


def test_constant_plans_compute_their_row_with_one_now():
    p = plan(parse("SELECT now(), to_timestamp(now()) AS t, now() - INTERVAL '1 minute', 'a', NULL, "
                   "to_timestamp(1.5)"), MAP, now_ns=NOW)
    assert p == ConstantPlan(("now()", "t", "now() - INTERVAL '1 minute'", "'a'", "NULL", "to_timestamp(1.5)"),
                             (NOW, NOW, NOW - MIN, "a", None, 1))
    assert type(p.row[0]) is int and type(p.row[1]) is Timestamp and type(p.row[5]) is Timestamp
    assert explain(plan(parse("EXPLAIN SELECT now()"), MAP, now_ns=NOW)) == [
        "SELECT now()", "  no FROM: the values are computed on the client; no shard is contacted"]


@pytest.mark.parametrize(("text", "message"), [
    ("SELECT to_timestamp(1e30)", "line 1, column 8: to_timestamp(1e30): 1e+30 ns since the Unix epoch is "
                                  "outside the years 1 to 9999"),
    ("SELECT 1 / 0", "division by zero"),
])
def test_constant_errors(text, message):
    with pytest.raises(QueryError, match=re.escape(message)):
        plan(parse(text), MAP, now_ns=NOW)


def test_to_timestamp_keeps_ranges_pruning_and_pushdown():
    where = f"WHERE key >= {NOW} - INTERVAL '1 hour' AND key <= {NOW} AND value->'t' > 3 ORDER BY key DESC LIMIT 5"
    stamped = plan(parse(f"SELECT to_timestamp(key), value, to_timestamp(value->'ts') AS ts FROM kv {where}"), MAP)
    plain = plan(parse(f"SELECT key, value, key AS ts FROM kv {where}"), MAP)
    assert isinstance(stamped, SelectPlan)
    for name in ("ranges", "scans", "filter", "dropped", "reverse_scan", "limit", "shard_limit"):
        assert getattr(stamped, name) == getattr(plain, name), name
    assert stamped.fields == ("key", "value", ["expr", ["json", ["ts"]]]) and stamped.timestamps == (0, 2)
    assert plain.timestamps == ()
    lines = explain(stamped)
    assert "  timestamps made on the client: to_timestamp(key), ts" in lines
    assert "  shards: 1 of 8 (7 pruned)" in lines and "  filter on shards: value->'t' > 3" in lines


def test_aggregate_specs_see_through_to_timestamp():
    p = plan(parse("SELECT count(*), to_timestamp(time_bucket(INTERVAL '1 minute', key)) AS m, "
                   "to_timestamp(min(key)) FROM kv GROUP BY time_bucket(INTERVAL '1 minute', key)"), MAP)
    assert p.aggregates == [["count"], ["bucket"], ["min", ["key"]]]
    assert p.bucket_ns == MIN and p.timestamps == (1, 2)


# --- running (an in-memory client) ----------------------------------------------------------------


class MemoryClient:
    """The slice of AsyncClient that plain SELECTs and aggregates use, over a dict."""

    def __init__(self, rows: dict[int, bytes]) -> None:
        self.rows = rows
        self.calls = 0

    async def shard_map(self):
        return MAP

    async def get(self, key):
        self.calls += 1
        return self.rows.get(key)

    async def scan_pages(self, start, end, *, limit=None, reverse=False, filter=None, page_keys=None):
        self.calls += 1
        page = [(k, self.rows[k]) for k in sorted(self.rows, reverse=reverse) if start <= k <= end]
        if page:
            yield page[:limit]

    async def range_steps(self, op, lo, hi, fields, *, parallel, restart_on_expiry):
        self.calls += 1
        aggs = Aggregates(fields["aggs"], fields["bucket_ns"])
        partials = aggs.new()
        for k in sorted(self.rows):
            if lo <= k <= hi:
                aggs.update(partials, k, self.rows[k])
        yield _Step("reply", {"partials": partials, "resume": None})
        yield _Step("done", None)


class _Step:
    def __init__(self, kind, reply):
        self.kind, self.part, self.reply = kind, 0, reply


ROWS = {NOW: b'{"ts": 1.5e18}', NOW + MIN + 1: b'{"ts": "soon"}', NOW + 2 * MIN: b"\xff"}


def run(text: str, rows: dict[int, bytes] = ROWS) -> tuple[tuple[str, ...], list[tuple]]:
    async def go():
        result = await executor.execute(MemoryClient(rows), text, now_ns=NOW)
        return result.columns, await result.rows()
    return asyncio.run(go())


def test_rows_get_timestamps_computed_on_the_client():
    columns, rows = run("SELECT to_timestamp(key) AS t, key, to_timestamp(value->'ts'), "
                        f"to_timestamp(key - {NOW} - 1) FROM kv ORDER BY key DESC")
    assert columns == ("t", "key", "to_timestamp(value->'ts')", f"to_timestamp(key - {NOW} - 1)")
    assert rows == [(NOW + 2 * MIN, NOW + 2 * MIN, None, 2 * MIN - 1), (NOW + MIN + 1, NOW + MIN + 1, None, MIN),
                    (NOW, NOW, 1_500_000_000_000_000_000, -1)]
    assert [type(x) for x in rows[2]] == [Timestamp, int, Timestamp, Timestamp]
    assert str(rows[2][3]) == "1969-12-31T23:59:59.999999999Z"


def test_point_reads_project_the_same_way():
    _, rows = run(f"SELECT to_timestamp(key), value FROM kv WHERE key IN ({NOW}, {NOW + 7})")
    assert rows == [(NOW, b'{"ts": 1.5e18}')] and type(rows[0][0]) is Timestamp


def test_aggregates_and_groups_become_timestamps():
    _, rows = run("SELECT to_timestamp(min(key)), to_timestamp(avg(key)), max(key), count(*) FROM kv")
    assert rows == [(NOW, NOW + MIN, NOW + 2 * MIN, 3)]
    assert [type(x) for x in rows[0]] == [Timestamp, Timestamp, int, int]
    _, rows = run("SELECT to_timestamp(time_bucket(INTERVAL '1 minute', key)) AS m, count(*) FROM kv "
                  "GROUP BY time_bucket(INTERVAL '1 minute', key) ORDER BY key DESC LIMIT 2")
    assert rows == [(NOW + 2 * MIN, 1), (NOW + MIN, 1)] and type(rows[0][0]) is Timestamp
    _, rows = run("SELECT to_timestamp(min(key)), count(*) FROM kv", rows={})
    assert rows == [(None, 0)]  # NULL stays NULL


def test_select_without_from_contacts_no_shard():
    client = MemoryClient(ROWS)

    async def go():
        result = await executor.execute(client, "SELECT now(), to_timestamp(now()) AS t", now_ns=NOW)
        return result.columns, result.status, await result.rows()

    assert asyncio.run(go()) == (("now()", "t"), "SELECT", [(NOW, NOW)])
    assert client.calls == 0

"""Literal decoding: numbers, strings, byte strings, timestamps, intervals."""

import calendar

import pytest

from raftkv.errors import QueryError
from raftkv.query.literals import parse_bytes, parse_interval, parse_number, parse_string, parse_timestamp

pytestmark = pytest.mark.timeout(60)

S = 10**9
BASE = calendar.timegm((2026, 11, 21, 10, 0, 0)) * S  # 2026-11-21T10:00:00Z


@pytest.mark.parametrize(("text", "value"), [
    ("0", 0), ("42", 42), ("18446744073709551615", 2**64 - 1), ("0x10", 16), ("0XfF", 255),
    ("0xffffffffffffffff", 2**64 - 1), ("1.5", 1.5), (".5", 0.5), ("5.", 5.0), ("1e9", 1e9), ("2.5E-3", 0.0025),
])
def test_numbers(text, value):
    assert parse_number(text) == value
    assert type(parse_number(text)) is type(value)


@pytest.mark.parametrize("text", ["0x", "0xg", "0x1z", "0x_1"])
def test_bad_hex(text):
    with pytest.raises(QueryError, match="bad hex literal"):
        parse_number(text)


def test_float_overflow_is_an_error():
    with pytest.raises(QueryError, match="too large"):
        parse_number("1e999")


def test_strings_and_bytes():
    assert parse_string("'it''s'") == "it's"
    assert parse_string("''") == ""
    assert parse_bytes("x'00ff'") == b"\x00\xff"
    assert parse_bytes("X'AbCd'") == b"\xab\xcd"
    assert parse_bytes("x''") == b""


@pytest.mark.parametrize("text", ["x'0'", "x'0g'", "x'00 11'"])
def test_bad_bytes(text):
    with pytest.raises(QueryError, match="bad byte string"):
        parse_bytes(text)


@pytest.mark.parametrize(("text", "ns"), [
    ("2026-11-21T10:00:00Z", BASE),
    ("2026-11-21t10:00:00z", BASE),
    ("2026-11-21 10:00:00", BASE),
    ("2026-11-21T10:00Z", BASE),
    ("2026-11-21T10:00:00.5Z", BASE + S // 2),
    ("2026-11-21T10:00:00,25Z", BASE + S // 4),
    ("2026-11-21T10:00:00.123456789Z", BASE + 123456789),
    ("2026-11-21T10:00:00.000000001Z", BASE + 1),
    ("2026-11-21T12:00:00+02:00", BASE),
    ("2026-11-21T05:30:00-0430", BASE),
    ("2026-11-21", BASE - 10 * 3600 * S),
    ("1970-01-01T00:00:00Z", 0),
    ("1969-12-31T23:59:59Z", -S),
    (" 2026-11-21T10:00:00Z ", BASE),
])
def test_timestamps(text, ns):
    assert parse_timestamp(text) == ns


@pytest.mark.parametrize(("text", "why"), [
    ("2026-13-01", "month"), ("2026-02-30", "day"), ("2026-11-21T24:00:00Z", "time of day"),
    ("2026-11-21T10:61:00Z", "time of day"), ("2026-11-21T10:00:00+25:00", "offset"),
    ("yesterday", "ISO 8601"), ("2026-11-21T10:00:00.1234567891Z", "ISO 8601"), ("", "ISO 8601"),
    ("21/11/2026", "ISO 8601"),
])
def test_bad_timestamps(text, why):
    with pytest.raises(QueryError, match="bad timestamp") as e:
        parse_timestamp(text)
    assert why in e.value.message


@pytest.mark.parametrize(("text", "ns"), [
    ("1ns", 1), ("5 us", 5000), ("250ms", 250 * 10**6), ("1 s", S), ("2 seconds", 2 * S), ("1 second", S),
    ("5 minutes", 300 * S), ("1 minute", 60 * S), ("2 hours", 7200 * S), ("1 hour", 3600 * S),
    ("1 day", 86400 * S), ("3 days", 3 * 86400 * S), ("1 week", 7 * 86400 * S), ("2 weeks", 14 * 86400 * S),
    ("1 hour 30 minutes", 5400 * S), ("1h30min", 5400 * S), ("1 day, 2 hours", 93600 * S),
    ("1.5 hours", 5400 * S), (".5 s", S // 2), ("5 MINUTES", 300 * S), (" 5 minutes ", 300 * S),
])
def test_intervals(text, ns):
    assert parse_interval(text) == ns


@pytest.mark.parametrize(("text", "why"), [
    ("", "empty"), ("   ", "empty"), ("5", "expected"), ("minutes", "expected"), ("5 fortnights", "unknown unit"),
    ("0.5 ns", "whole number"), ("-5 minutes", "expected"), ("5 minutes ago", "expected"),
])
def test_bad_intervals(text, why):
    with pytest.raises(QueryError, match="bad interval") as e:
        parse_interval(text)
    assert why in e.value.message

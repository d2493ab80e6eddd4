"""Timestamp values: ``to_timestamp()`` results, their RFC 3339 text, and time zone names.

A timestamp travels in query results as :class:`Timestamp`, an ``int`` subclass holding the
nanoseconds since the Unix epoch. It stays an exact int for programs (a ``datetime`` would drop
the nanoseconds), and its type tells the shell to print it as RFC 3339 text. Pure: no I/O, no clock.
"""

from __future__ import annotations

import math
import re
from datetime import UTC, date, datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

from ..errors import QueryError
from ..keys import EPOCH, NS_PER_S
from .literals import EPOCH_DAY, parse_timestamp

# The years RFC 3339 (and datetime) can write: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59.999999999Z.
MIN_NS = (date.min.toordinal() - EPOCH_DAY) * 86400 * NS_PER_S
MAX_NS = (date.max.toordinal() - EPOCH_DAY + 1) * 86400 * NS_PER_S - 1
_OFFSET = re.compile(r"([+-])(\d{2})(?::?(\d{2}))?")
_UTC_NAMES = frozenset({"utc", "z"})


class Timestamp(int):
    """A point in time as exact nanoseconds since the Unix epoch (UTC).

    It is an ``int``: it compares equal to its nanoseconds and arithmetic on it gives plain ints.
    ``str()`` is its RFC 3339 text in UTC with nanoseconds; :meth:`isoformat` takes a time zone
    and :meth:`to_datetime` gives an aware ``datetime`` (microseconds: the nanoseconds are cut).
    ``Timestamp('2026-11-21T10:00:00Z')`` reads the language's TIMESTAMP literal text.
    """

    __slots__ = ()

    def __new__(cls, value: int | str) -> Timestamp:
        """From nanoseconds since the epoch, or from ISO 8601 text such as ``'2026-11-21T10:00Z'``."""
        if isinstance(value, str):
            try:
                ns = parse_timestamp(value)
            except QueryError as e:
                raise ValueError(e.message) from None
        elif isinstance(value, int) and not isinstance(value, bool):
            ns = int(value)
        else:
            raise TypeError(f"a Timestamp is made from int nanoseconds or ISO 8601 text, not {type(value).__name__}")
        if not MIN_NS <= ns <= MAX_NS:
            raise ValueError(f"{ns} ns since the Unix epoch is outside the years 1 to 9999")
        return super().__new__(cls, ns)

    def isoformat(self, tz: tzinfo | None = None) -> str:
        """RFC 3339 with nanoseconds: ``2026-11-21T10:00:00.000000000Z``, or with ``tz``'s offset."""
        return format_timestamp(self, tz)

    def to_datetime(self, tz: tzinfo | None = UTC) -> datetime:
        """An aware ``datetime`` in ``tz`` (default UTC); below a microsecond is cut, towards the past."""
        return (EPOCH + timedelta(microseconds=self // 1000)).astimezone(tz or UTC)

    def __str__(self) -> str:
        return format_timestamp(self)

    def __repr__(self) -> str:
        return f"Timestamp('{format_timestamp(self)}')"


def to_timestamp_value(x: object) -> Timestamp | None:
    """What ``to_timestamp(x)`` gives for a row: a whole or fractional number of nanoseconds
    (a fraction is cut towards the past) inside the years 1 to 9999, else NULL (None)."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    if isinstance(x, float):
        if not math.isfinite(x):
            return None
        x = math.floor(x)
    return Timestamp(x) if MIN_NS <= x <= MAX_NS else None


def format_timestamp(ns: int, tz: tzinfo | None = None) -> str:
    """``ns`` nanoseconds since the epoch as RFC 3339 with nine fraction digits.

    In UTC (``tz`` None or UTC) the text ends in ``Z``; in another zone it is that zone's local
    time and offset, such as ``2026-11-21T11:00:00.000000000+01:00``. An offset that is not whole
    minutes (local mean time before about 1900) or a local time beyond year 9999 cannot be written in
    RFC 3339, so the instant is then written in UTC. Raises ValueError outside the years 1 to 9999.
    """
    seconds, fraction = divmod(int(ns), NS_PER_S)  # floor: a negative ns still gets a 0..999999999 fraction
    try:
        when = EPOCH + timedelta(seconds=seconds)
    except OverflowError:
        raise ValueError(f"{ns} ns since the Unix epoch is outside the years 1 to 9999") from None
    suffix = "Z"
    if tz is not None and tz is not UTC:
        try:
            local = when.astimezone(tz)
        except OverflowError:
            local = None
        offset = None if local is None else local.utcoffset()
        if offset is not None and offset % timedelta(minutes=1) == timedelta(0):
            when, suffix = local, _offset_text(offset)
    return (f"{when.year:04d}-{when.month:02d}-{when.day:02d}T{when.hour:02d}:{when.minute:02d}:"
            f"{when.second:02d}.{fraction:09d}{suffix}")


def _offset_text(offset: timedelta) -> str:
    minutes = int(offset.total_seconds()) // 60
    sign = "-" if minutes < 0 else "+"
    hours, minutes = divmod(abs(minutes), 60)
    return f"{sign}{hours:02d}:{minutes:02d}"


def parse_timezone(text: str) -> tzinfo:
    """A time zone for display: ``UTC`` (or ``Z``), a fixed offset ``+HH:MM`` / ``-HHMM`` / ``+HH``,
    or an IANA name such as ``Europe/Berlin`` (from the system's zoneinfo database).

    Raises ValueError with a sentence saying what is wrong.
    """
    name = text.strip()
    if name.lower() in _UTC_NAMES:
        return UTC
    m = _OFFSET.fullmatch(name)
    if m:
        sign, hours, minutes = m.group(1), int(m.group(2)), int(m.group(3) or 0)
        if hours > 23 or minutes > 59:
            raise ValueError(f"bad UTC offset {name!r}: hours go up to 23 and minutes up to 59")
        if hours == minutes == 0:
            return UTC
        delta = timedelta(hours=hours, minutes=minutes)
        return timezone(-delta if sign == "-" else delta)
    try:
        return ZoneInfo(name)
    except (ValueError, KeyError, OSError):  # not found, not a zone file, or not a valid key at all
        raise ValueError(f"unknown time zone {text!r}: use UTC, an offset such as +02:00, or an IANA "
                         "name such as Europe/Berlin or America/New_York") from None


def zone_name(tz: tzinfo) -> str:
    """How :func:`parse_timezone` would be given ``tz`` back: ``UTC``, ``+05:30`` or ``Europe/Berlin``."""
    if tz is UTC:
        return "UTC"
    if isinstance(tz, ZoneInfo):
        return str(tz.key)
    if isinstance(tz, timezone):
        return _offset_text(tz.utcoffset(None))
    return str(tz)


def zone_argument(text: str) -> str:
    """A ``--timezone`` command-line value, checked and in its canonical spelling; an unknown
    zone is a usage error (argparse.ArgumentTypeError)."""
    import argparse

    try:
        return zone_name(parse_timezone(text))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None

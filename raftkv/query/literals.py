"""Decoding of literal tokens: numbers, strings, byte strings, timestamps and intervals.

Each function takes the token text and returns the Python value or raises :class:`QueryError`
with a sentence saying what is wrong; the parser adds the position.
"""

from __future__ import annotations

import math
import re
from datetime import date
from fractions import Fraction

from ..errors import QueryError
from ..keys import NS_PER_S

_HEX_DIGITS = re.compile(r"[0-9a-fA-F]+")
EPOCH_DAY = date(1970, 1, 1).toordinal()  # the Unix epoch as a proleptic Gregorian day number

_TIMESTAMP = re.compile(
    r"""(\d{4})-(\d{2})-(\d{2})
        (?:[Tt\ ](\d{2}):(\d{2})(?::(\d{2})(?:[.,](\d{1,9}))?)?
           (?:([Zz])|([+-])(\d{2}):?(\d{2}))?
        )?""",
    re.VERBOSE,
)

_UNIT_NS = {
    **dict.fromkeys(("ns", "nanosecond", "nanoseconds"), 1),
    **dict.fromkeys(("us", "microsecond", "microseconds"), 10**3),
    **dict.fromkeys(("ms", "millisecond", "milliseconds"), 10**6),
    **dict.fromkeys(("s", "sec", "secs", "second", "seconds"), NS_PER_S),
    # "m" is minutes, as in PostgreSQL's '90m' and Go's "1h30m" (this language has no months)
    **dict.fromkeys(("m", "min", "mins", "minute", "minutes"), 60 * NS_PER_S),
    **dict.fromkeys(("h", "hour", "hours"), 3600 * NS_PER_S),
    **dict.fromkeys(("d", "day", "days"), 86400 * NS_PER_S),
    **dict.fromkeys(("w", "week", "weeks"), 7 * 86400 * NS_PER_S),
}
_INTERVAL_PART = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-zA-Z]+)\s*,?")

# Python refuses int() of more than 4300 digits with a ValueError, and huge numbers make every
# later step (arithmetic, rendering) slow; no key, limit or interval needs anywhere near this.
MAX_INTEGER_DIGITS = 80
MAX_INTERVAL_AMOUNT = 40  # characters of one amount, such as '1.5' in '1.5 hours'


def shorten(text: str, limit: int = 60) -> str:
    """``text`` shortened for an error message."""
    return text if len(text) <= limit else f"{text[:limit]}..."


def parse_number(text: str) -> int | float:
    """A NUMBER token: decimal int, ``0x`` hex int, or float (``1.5``, ``.5``, ``1e9``)."""
    if text[:2] in ("0x", "0X"):
        digits = text[2:]
        if not _HEX_DIGITS.fullmatch(digits):
            raise QueryError(f"bad hex literal {shorten(text)}: expected hex digits 0-9, a-f after 0x")
        if len(digits.lstrip("0")) > MAX_INTEGER_DIGITS:
            raise QueryError(f"number {shorten(text)} is too long: at most {MAX_INTEGER_DIGITS} hex digits")
        return int(digits, 16)
    if any(c in text for c in ".eE"):
        value = float(text)
        if not math.isfinite(value):
            raise QueryError(f"number {shorten(text)} is too large")
        return value
    digits = text.lstrip("0")  # int() counts leading zeros against its digit limit too
    if len(digits) > MAX_INTEGER_DIGITS:
        raise QueryError(f"number {shorten(text)} is too long: at most {MAX_INTEGER_DIGITS} digits; "
                         "write a float such as 1e100 for a huge value")
    return int(digits or "0")


def parse_string(text: str) -> str:
    """A STRING token ``'...'`` with ``''`` standing for one quote."""
    return text[1:-1].replace("''", "'")


def parse_bytes(text: str) -> bytes:
    """A BYTES token ``x'00ff'``: an even number of hex digits."""
    digits = text[2:-1]
    if len(digits) % 2 or (digits and not _HEX_DIGITS.fullmatch(digits)):
        raise QueryError(f"bad byte string {shorten(text)}: expected an even number of hex digits 0-9, a-f")
    return bytes.fromhex(digits)


def parse_timestamp(text: str) -> int:
    """ISO 8601 date or date-time → nanoseconds since the Unix epoch (UTC when no offset is given).

    Accepts ``2026-11-21``, ``2026-11-21T10:00Z``, ``2026-11-21 10:00:00.123456789+02:00`` and the
    like; nanosecond fractions are kept exactly (``datetime`` would round to microseconds).
    """
    m = _TIMESTAMP.fullmatch(text.strip())
    if not m:
        raise QueryError(f"bad timestamp '{shorten(text)}': expected ISO 8601 such as '2026-11-21T10:00:00Z', "
                         "'2026-11-21 10:00:00.5+02:00' or '2026-11-21'")
    year, month, day, hour, minute, second, frac, _zulu, sign, off_h, off_m = m.groups()
    try:
        day_number = date(int(year), int(month), int(day)).toordinal() - EPOCH_DAY
    except ValueError as e:
        raise QueryError(f"bad timestamp '{shorten(text)}': {e}") from None
    h, mi, s = int(hour or 0), int(minute or 0), int(second or 0)
    if h > 23 or mi > 59 or s > 59:
        raise QueryError(f"bad timestamp '{shorten(text)}': time of day out of range")
    offset = 0
    if sign:
        if int(off_h) > 23 or int(off_m) > 59:
            raise QueryError(f"bad timestamp '{shorten(text)}': UTC offset out of range")
        offset = (int(off_h) * 3600 + int(off_m) * 60) * (-1 if sign == "-" else 1)
    seconds = day_number * 86400 + h * 3600 + mi * 60 + s - offset
    return seconds * NS_PER_S + int((frac or "").ljust(9, "0"))


def parse_interval(text: str) -> int:
    """``'5 minutes'``, ``'1 hour 30 minutes'``, ``'1.5h'``, ``'250ms'`` → nanoseconds (exact)."""
    total = Fraction(0)
    pos, parts = 0, 0
    while pos < len(text):
        m = _INTERVAL_PART.match(text, pos)
        if not m:
            if text[pos:].strip() == "":
                break
            raise QueryError(f"bad interval '{shorten(text)}': expected amounts with units such as '5 minutes' "
                             "or '1 hour 30 minutes'")
        amount, unit = m.groups()
        if len(amount) > MAX_INTERVAL_AMOUNT:
            raise QueryError(f"bad interval '{shorten(text)}': the amount {shorten(amount)} is too long "
                             f"(at most {MAX_INTERVAL_AMOUNT} characters)")
        ns = _UNIT_NS.get(unit.lower())
        if ns is None:
            raise QueryError(f"bad interval '{shorten(text)}': unknown unit '{unit}'; use ns, us, ms, s, "
                             "m (minutes), h, d or w, or their names such as minutes")
        total += Fraction(amount) * ns
        pos, parts = m.end(), parts + 1
    if parts == 0:
        raise QueryError(f"bad interval '{shorten(text)}': it is empty; write e.g. INTERVAL '5 minutes'")
    if total.denominator != 1:
        raise QueryError(f"bad interval '{shorten(text)}': not a whole number of nanoseconds")
    return int(total)

"""Client-side binding of ``?`` placeholders to literals of the query language (pure: no I/O).

:func:`bind` replaces each ``?`` of a statement with the literal that spells its parameter,
so a value never travels as query text a caller pasted together: a string is always one
string literal, whatever quotes or dashes it holds.  The rules, per Python type:

=====================================  ==============================================================
``None``                               ``NULL``
``bool``                               ``TRUE`` / ``FALSE``
``int``                                decimal, ``42``; a negative one in parentheses, ``(-42)``
``float`` (finite)                     ``repr``, ``1.5`` / ``1e+100``; negative: ``(-1.5)``
``str``                                ``'...'`` with each ``'`` doubled (the language's only escape)
``bytes``, ``bytearray``, ``memoryview``  ``x'00ff'`` (hex)
``datetime`` (timezone-aware)          its nanoseconds since the Unix epoch, as an int
``timedelta``                          its nanoseconds, as an int (what ``INTERVAL '...'`` is)
=====================================  ==============================================================

Everything else -- naive datetimes, dates, NaN and infinities, ints of more digits than the
language reads -- is refused with :class:`~raftkv.errors.InvalidArgument` naming the parameter.
Parentheses keep a negative number one operand wherever it lands (``PUT ? ?``, ``key - ?``).

A ``?`` inside a string literal (``'...'``, ``x'...'``), a double-quoted run (not valid in the
language, but left alone so the parser can say so) or a ``--`` comment is not a placeholder;
the scan uses the grammar's own token shapes (``grammar/query.lark``), so it agrees with the
parser about where those end.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from datetime import date, datetime, timedelta

from ..errors import InvalidArgument
from ..keys import datetime_to_ns, timedelta_to_ns
from ..query.literals import MAX_INTEGER_DIGITS

Param = None | bool | int | float | str | bytes | bytearray | memoryview | datetime | timedelta

# One alternative per region a ``?`` may hide in, as the grammar's lexer sees them: STRING (and the
# quoted part of BYTES: an ``x`` before it changes nothing here), a double-quoted run, COMMENT.  An
# unterminated quote runs to the end: the parser reports it, and nothing after it is a placeholder.
_SCAN = re.compile(r"'[^']*(?:'|\Z)|\"[^\"]*(?:\"|\Z)|--[^\n]*|(\?)")
# A neighbour that could fuse with the bound literal into another token (``x?`` + ``'ab'`` is the
# byte string ``x'ab'``, ``?.5`` + ``1`` is ``1.5``, ``'a'?`` + ``'b'`` is ``'a''b'``): a space goes
# between them.
_FUSES = re.compile(r"[\w'\".?]")


def placeholders(sql: str) -> list[int]:
    """Offsets in ``sql`` of its ``?`` placeholders (those outside strings and comments)."""
    return [m.start() for m in _SCAN.finditer(sql) if m.group(1)]


def literal(value: Param, index: int = 1) -> str:
    """The query-language literal that reads back as ``value``; ``index`` (1-based) names it in errors."""
    if value is None:
        return "NULL"
    if isinstance(value, bool):  # before int: bool is an int subclass
        return "TRUE" if value else "FALSE"
    if isinstance(value, int):
        return _number(int(value), index)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidArgument(f"parameter {index} is {value!r}: the query language has no NaN or infinity")
        text = repr(float(value))  # shortest text that float() reads back to the same value
        return f"(-{text[1:]})" if text.startswith("-") else text
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidArgument(f"parameter {index} is not valid Unicode (a lone surrogate): "
                                  "no string in a query can hold it") from None
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, (bytes, bytearray, memoryview)):
        return f"x'{bytes(value).hex()}'"
    if isinstance(value, datetime):  # before date: datetime is a date subclass
        return _number(datetime_to_ns(value, f"parameter {index} ="), index)
    if isinstance(value, date):
        raise InvalidArgument(f"parameter {index} is a date, which has no time zone: pass a timezone-aware "
                              "datetime, such as datetime(2026, 11, 21, tzinfo=timezone.utc)")
    if isinstance(value, timedelta):
        return _number(timedelta_to_ns(value), index)
    raise InvalidArgument(f"parameter {index} has type {type(value).__name__}, which cannot be bound; use "
                          "None, bool, int, float, str, bytes, a timezone-aware datetime or a timedelta")


def bind(sql: str, params: Sequence[Param] | None) -> str:
    """``sql`` with its ``?`` placeholders replaced, in order, by the literals of ``params``.

    ``params=None`` leaves ``sql`` as it is, but a ``?`` in it is then an error (one that says
    params are missing, rather than the parser's "unexpected character").  Raises
    :class:`InvalidArgument` when the counts differ or a parameter cannot be bound.
    """
    if not isinstance(sql, str):
        raise InvalidArgument(f"parameters can only be bound into query text, not {type(sql).__name__}")
    if params is None:
        if "?" in sql and (found := placeholders(sql)):  # the scan only when a ? is there at all
            raise InvalidArgument(f"the query has {_count(len(found))} but no params were given")
        return sql
    if isinstance(params, (str, bytes, bytearray, memoryview, Mapping)) or not isinstance(params, Sequence):
        # a lone string would bind one character per ?, and an int here is the old now_ns argument
        raise InvalidArgument(f"params must be a list or tuple with one value per ?, not {type(params).__name__}"
                              + ("; now() is set with now_ns=... by keyword" if isinstance(params, int) else ""))
    spots = placeholders(sql)
    if len(spots) != len(params):
        given = f"{len(params)} was" if len(params) == 1 else f"{len(params)} were"
        raise InvalidArgument(f"the query has {_count(len(spots))} but {given} given")
    out: list[str] = []
    done = 0
    for index, (spot, value) in enumerate(zip(spots, params, strict=True), start=1):
        text = literal(value, index)
        if spot > 0 and _FUSES.match(sql, spot - 1):
            text = " " + text
        if _FUSES.match(sql, spot + 1):
            text += " "
        out += (sql[done:spot], text)
        done = spot + 1
    out.append(sql[done:])
    return "".join(out)


def _number(value: int, index: int) -> str:
    text = str(abs(value))
    if len(text) > MAX_INTEGER_DIGITS:
        raise InvalidArgument(f"parameter {index} has {len(text)} digits; the query language reads at most "
                              f"{MAX_INTEGER_DIGITS}")
    return f"(-{text})" if value < 0 else text


def _count(n: int) -> str:
    return f"{n} ? placeholder{'' if n == 1 else 's'}"

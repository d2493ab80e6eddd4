"""Keys and values: validation and their byte encoding.

Keys are unsigned 64-bit ints stored as 8-byte big-endian strings, so LevelDB's
bytewise order is numeric order.  Every check a caller can fail lives here and
raises from :mod:`raftkv.errors`; client and server both call these, so bad
input is refused before it reaches the cluster and again at the door.
"""

from __future__ import annotations

import struct
from datetime import UTC, datetime, timedelta

from .errors import InvalidArgument, InvalidKey, InvalidValue

MIN_KEY = 0
MAX_KEY = 2**64 - 1
KEY_SPACE_END = 2**64  # exclusive end of the key space
MAX_VALUE_BYTES = 1024 * 1024

# What the client accepts as a key: an int, or a timezone-aware datetime standing for its
# nanoseconds since the Unix epoch (the unit of the query language's TIMESTAMP and now()).
KeyLike = int | datetime

_PACK = struct.Struct(">Q")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)  # the Unix epoch, which keys count nanoseconds from
NS_PER_S = 10**9
encode_key = _PACK.pack


def decode_key(raw: bytes) -> int:
    """Inverse of :func:`encode_key`."""
    return _PACK.unpack(raw)[0]


def check_key(key: object, what: str = "key") -> int:
    """Return ``key`` if it is an int in [0, 2**64-1], else raise :class:`InvalidKey`."""
    if type(key) is not int:  # bool is an int subclass and is refused on purpose
        raise InvalidKey(f"{what} must be an int in [0, 2**64-1], got {type(key).__name__}")
    if key < MIN_KEY or key > MAX_KEY:
        raise InvalidKey(f"{what} {key} is outside [0, 2**64-1]")
    return key


def datetime_to_ns(when: datetime, what: str = "datetime",
                   error: type[InvalidArgument] = InvalidArgument) -> int:
    """Nanoseconds since the Unix epoch of a timezone-aware ``when``, exactly; a naive one raises ``error``."""
    if when.utcoffset() is None:
        # a naive datetime could be local time or UTC: guessing would shift keys by hours
        raise error(f"{what} {when.isoformat()} is naive (no tzinfo); attach one, e.g. "
                    "datetime(..., tzinfo=timezone.utc) or datetime.now(timezone.utc)")
    return timedelta_to_ns(when - EPOCH)


def timedelta_to_ns(delta: timedelta) -> int:
    """``delta`` in nanoseconds, exactly (integer arithmetic: a float would round past 2**53)."""
    return (delta.days * 86400 + delta.seconds) * NS_PER_S + delta.microseconds * 1000


def coerce_key(key: object, what: str = "key") -> int:
    """Like :func:`check_key`, and a timezone-aware ``datetime`` becomes its nanoseconds since the epoch.

    The client's door: the server only ever sees ints, and checks them with :func:`check_key`.
    """
    if type(key) is int and MIN_KEY <= key <= MAX_KEY:
        return key  # the common case, first: put_many validates every key of a batch
    if isinstance(key, datetime):
        ns = datetime_to_ns(key, what, InvalidKey)
        if not MIN_KEY <= ns <= MAX_KEY:
            raise InvalidKey(f"{what} {key.isoformat()} is {ns} ns since the Unix epoch, outside "
                             "[0, 2**64-1]: datetime keys lie from 1970-01-01T00:00:00Z to 2554-07-21T23:34:33.709551Z")
        return ns
    if isinstance(key, int) and not isinstance(key, bool):
        key = int(key)  # an int subclass (the query language's Timestamp): its value, as a plain int
    if type(key) is not int:
        raise InvalidKey(f"{what} must be an int in [0, 2**64-1] or a timezone-aware datetime, "
                         f"got {type(key).__name__}")
    return check_key(key, what)


def coerce_range(start: object, end: object) -> tuple[int, int]:
    """:func:`check_range` for the client: ``datetime`` bounds allowed (see :func:`coerce_key`)."""
    return coerce_key(start, "start"), coerce_key(end, "end")


def check_value(value: object) -> bytes:
    """Return ``value`` as bytes (``str`` as UTF-8) if it fits in 1 MiB, else raise :class:`InvalidValue`."""
    if isinstance(value, str):
        value = value.encode("utf-8")
    elif isinstance(value, (bytearray, memoryview)):
        value = bytes(value)
    elif not isinstance(value, bytes):
        raise InvalidValue(f"value must be bytes or str, got {type(value).__name__}")
    if len(value) > MAX_VALUE_BYTES:
        raise InvalidValue(f"value of {len(value)} bytes exceeds the maximum of {MAX_VALUE_BYTES} bytes")
    return value


def check_range(start: object, end: object) -> tuple[int, int]:
    """Validate an inclusive key range; ``start > end`` is allowed and means empty."""
    return check_key(start, "start"), check_key(end, "end")


def check_limit(limit: object) -> int | None:
    """Validate a row limit: None (no limit) or an int >= 0."""
    if limit is None:
        return None
    if type(limit) is not int or limit < 0:
        raise InvalidArgument(f"limit must be None or an int >= 0, got {limit!r:.50}")
    return limit

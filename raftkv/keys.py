"""Keys and values: validation and their byte encoding.

Keys are unsigned 64-bit ints stored as 8-byte big-endian strings, so LevelDB's
bytewise order is numeric order.  Every check a caller can fail lives here and
raises from :mod:`raftkv.errors`; client and server both call these, so bad
input is refused before it reaches the cluster and again at the door.
"""

from __future__ import annotations

import struct

from .errors import InvalidArgument, InvalidKey, InvalidValue

MIN_KEY = 0
MAX_KEY = 2**64 - 1
KEY_SPACE_END = 2**64  # exclusive end of the key space
MAX_VALUE_BYTES = 1024 * 1024

_PACK = struct.Struct(">Q")
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

"""The wire form of a scan page's keys (pure).

A page carries its keys as one blob of 9-byte records -- a tag byte then the
key as a big-endian u64, which is exactly how the store keeps them -- and its
values as a list.  The server sends what it read without touching each key;
the client unpacks the blob in one C-level pass.
"""

from __future__ import annotations

import struct

KEY_RECORD = struct.Struct(">cQ")


def decode_raw_keys(blob: bytes) -> list[int]:
    """The keys of a page, in order."""
    if len(blob) % KEY_RECORD.size:
        raise ValueError("key blob is not a whole number of records")
    return [k for _, k in KEY_RECORD.iter_unpack(blob)]

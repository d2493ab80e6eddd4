"""The snapshot stream: a shard's whole state as a sequence of frames.

Sent chunk by chunk from a leader to a follower that fell behind the
leader's compacted log; never held whole in memory on either side.

Frames are ``u32 length | msgpack``: first a header ``{"v": 1, "index": A,
"last": entry, "prev": entry}`` (``A`` is the applied index of the LevelDB
snapshot the rows come from; ``last``/``prev`` are the two log entries the
leader's compacted log starts with), then batches ``[[key, value], ...]`` of raw
store pairs, then ``{"end": true, "count": n}``.  A stream without its end
frame, or with a wrong count, is refused, so a truncated transfer never
installs.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from typing import Any, BinaryIO

from ..errors import StorageError
from ..protocol.codec import pack, unpack

_LEN = struct.Struct(">I")
_MAX_FRAME = 64 * 1024 * 1024


def _frame(obj: Any) -> bytes:
    body = pack(obj)
    return _LEN.pack(len(body)) + body


def encode_stream(header: dict[str, Any], items: Iterator[tuple[bytes, bytes]],
                  chunk_size: int = 256 * 1024) -> Iterator[bytes]:
    """Yield the stream in chunks of roughly ``chunk_size`` bytes."""
    out = bytearray(_frame({"v": 1, **header}))
    batch: list[list[bytes]] = []
    batch_bytes = count = 0
    for k, v in items:
        batch.append([k, v])
        batch_bytes += len(k) + len(v) + 8
        count += 1
        if batch_bytes >= chunk_size // 2:
            out += _frame(batch)
            batch, batch_bytes = [], 0
        if len(out) >= chunk_size:
            yield bytes(out)
            out.clear()
    if batch:
        out += _frame(batch)
    out += _frame({"end": True, "count": count})
    yield bytes(out)


def _read_frame(f: BinaryIO) -> Any:
    head = f.read(_LEN.size)
    if len(head) < _LEN.size:
        raise StorageError("snapshot stream is truncated")
    (length,) = _LEN.unpack(head)
    if length > _MAX_FRAME:
        raise StorageError("snapshot frame is too large")
    body = f.read(length)
    if len(body) < length:
        raise StorageError("snapshot stream is truncated")
    try:
        return unpack(body, max_len=_MAX_FRAME)  # from a peer: the untrusted decoder, with its limits
    except Exception as exc:
        raise StorageError(f"snapshot frame is malformed: {exc}") from None


def read_stream(f: BinaryIO) -> tuple[dict[str, Any], Iterator[tuple[bytes, bytes]]]:
    """The header and a lazy iterator of pairs; the iterator raises if the stream is incomplete."""
    header = _read_frame(f)
    if not (isinstance(header, dict) and header.get("v") == 1 and is_index(header.get("index"))):
        raise StorageError("snapshot header is malformed")
    # the header's entries become the journal's first entries: refuse them before anything installs
    entry_tuple(header.get("last"))
    entry_tuple(header.get("prev"))

    def items() -> Iterator[tuple[bytes, bytes]]:
        count = 0
        while True:
            frame = _read_frame(f)
            if isinstance(frame, dict):
                if frame.get("end") is True and frame.get("count") == count:
                    return
                raise StorageError("snapshot end marker is wrong")
            for pair in frame:
                if not (isinstance(pair, list) and len(pair) == 2
                        and isinstance(pair[0], bytes) and isinstance(pair[1], bytes)):
                    raise StorageError("snapshot row is malformed")
                count += 1
                yield pair[0], pair[1]

    return header, items()


MAX_INT = 2**63 - 1  # every term and index must fit the journal's and msgpack's signed 64-bit range


def is_index(v: Any) -> bool:
    """A term or log index: an int (not a bool) that the journal and msgpack can always store."""
    return type(v) is int and 0 <= v <= MAX_INT


def entry_tuple(entry: Any) -> tuple[bytes, int, int]:
    """A log entry as pysyncobj compares it: ``(command bytes, index, term)``; StorageError if malformed."""
    if not (isinstance(entry, (list, tuple)) and len(entry) == 3 and isinstance(entry[0], bytes)
            and is_index(entry[1]) and is_index(entry[2])):
        raise StorageError("snapshot log entry is malformed")
    return bytes(entry[0]), entry[1], entry[2]

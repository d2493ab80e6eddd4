"""Framing and encoding, with no I/O (in the manner of h11).

A frame is a 4-byte big-endian length followed by that many bytes of msgpack.
:class:`FrameDecoder` is fed bytes as they arrive (``receive_data``) and hands
back whole decoded messages (``next_message``) or :data:`NEED_DATA`; it never
buffers more than one frame's worth beyond ``max_frame`` and refuses a frame
whose declared length exceeds it *before* reading its body, so a hostile peer
cannot make us allocate.  :func:`encode` is the inverse.

msgpack is used with ``raw=False`` and ``strict_map_key`` so bytes stay bytes,
text stays str, and no extension types are accepted: nothing that arrives can
construct an arbitrary object.  A decoder may also cap the number of objects in a
message (:func:`check_object_count`), since decoded size grows per object, not per byte.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgpack

from ..errors import FrameTooLarge, InvalidArgument, LocalProtocolError, RemoteProtocolError

DEFAULT_MAX_FRAME: Final = 8 * 1024 * 1024  # > one page of 1 MiB values + overhead
_HEADER = struct.Struct(">I")
HEADER_SIZE: Final = _HEADER.size
MAX_REQUEST_ID_CHARS: Final = 64  # an id is echoed in every reply: keep it small


def check_request_id(rid: Any) -> int | str | None:
    """``rid`` if it may be echoed back as a request id (an int, a short str, or None).

    Anything else raises :class:`InvalidArgument` whose message names only the id's type, so the
    error reply echoes nothing the client sent (an echoed 8 MiB id would not fit in a reply frame).
    """
    if rid is None or type(rid) is int:  # msgpack ints are 64-bit already; bool is refused
        return rid
    if type(rid) is str and len(rid) <= MAX_REQUEST_ID_CHARS:
        return rid
    what = f"a string of {len(rid)} characters" if type(rid) is str else f"a {type(rid).__name__}"
    raise InvalidArgument(f"request 'id' must be an int, a string of at most {MAX_REQUEST_ID_CHARS} "
                          f"characters, or nil; got {what}")


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


def _ext_refused(code: int, data: bytes) -> Any:
    raise RemoteProtocolError(f"msgpack extension type {code} is not allowed")


def pack(obj: Any) -> bytes:
    """msgpack-encode ``obj`` (bytes as bin, str as str)."""
    return msgpack.packb(obj, use_bin_type=True)


def load(data: bytes) -> Any:
    """Decode what this process wrote itself (a file, a system entry of its store): no limits, any
    map keys.  What arrives from a socket goes through :func:`unpack` instead."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False, ext_hook=_ext_refused)


def array_header(length: int) -> bytes:
    """The msgpack header of an array of ``length`` items (the items follow, packed one by one)."""
    return msgpack.Packer().pack_array_header(length)


def _walk_table() -> list[tuple[int, int, int, int, int] | None]:
    """Per msgpack type byte: (bytes to skip, children, width of a length/count field, extra bytes
    after it, children per count -- 0 if the field is a byte length).  None: an unused byte."""
    t: list[tuple[int, int, int, int, int] | None] = [(0, 0, 0, 0, 0)] * 256  # fixints, nil, bools
    for b in range(0x80, 0x90):
        t[b] = (0, 2 * (b & 0x0F), 0, 0, 0)  # fixmap
    for b in range(0x90, 0xA0):
        t[b] = (0, b & 0x0F, 0, 0, 0)  # fixarray
    for b in range(0xA0, 0xC0):
        t[b] = (b & 0x1F, 0, 0, 0, 0)  # fixstr
    t[0xC1] = None
    for b, n in {0xCA: 4, 0xCB: 8, 0xCC: 1, 0xCD: 2, 0xCE: 4, 0xCF: 8, 0xD0: 1, 0xD1: 2, 0xD2: 4, 0xD3: 8,
                 0xD4: 2, 0xD5: 3, 0xD6: 5, 0xD7: 9, 0xD8: 17}.items():
        t[b] = (n, 0, 0, 0, 0)  # floats, ints, fixext
    for b, w in {0xC4: 1, 0xC5: 2, 0xC6: 4, 0xD9: 1, 0xDA: 2, 0xDB: 4}.items():
        t[b] = (0, 0, w, 0, 0)  # bin, str
    for b, w in {0xC7: 1, 0xC8: 2, 0xC9: 4}.items():
        t[b] = (0, 0, w, 1, 0)  # ext: a type byte after the length
    for b, (w, per) in {0xDC: (2, 1), 0xDD: (4, 1), 0xDE: (2, 2), 0xDF: (4, 2)}.items():
        t[b] = (0, 0, w, 0, per)  # array, map
    return t


_WALK = _walk_table()


def check_object_count(data: bytes, max_objects: int) -> None:
    """Raise :class:`RemoteProtocolError` if ``data`` holds more than ``max_objects`` msgpack objects.

    Decoding costs memory per *object*, not per byte: an 8 MiB frame of empty maps becomes 8 million
    dicts, over 500 MB, and holds the GIL for a second.  This walks the encoding without building
    anything and stops as soon as the count is exceeded, so it costs at most ``max_objects`` steps;
    a body no longer than ``max_objects`` bytes cannot exceed it and is not walked at all.
    """
    if len(data) <= max_objects:
        return
    pos, pending, count, end = 0, 1, 0, len(data)
    while pending:
        if pos >= end:
            return  # truncated: unpack reports it
        step = _WALK[data[pos]]
        if step is None:
            return  # an unused type byte: unpack reports it
        count += 1
        if count > max_objects:
            raise RemoteProtocolError(f"message has more than {max_objects} msgpack objects")
        skip, kids, width, extra, per = step
        pos += 1 + skip
        pending += kids - 1
        if width:
            n = int.from_bytes(data[pos:pos + width], "big")
            pos += width
            if per:
                pending += per * n
            else:
                pos += n + extra


def unpack(data: bytes, max_len: int = DEFAULT_MAX_FRAME, max_objects: int | None = None) -> Any:
    """Decode one msgpack object from untrusted ``data``; raises :class:`RemoteProtocolError`.

    ``max_objects``: refuse (before decoding) a message of more objects than that; see
    :func:`check_object_count`.
    """
    if max_objects is not None:
        check_object_count(data, max_objects)
    try:
        return msgpack.unpackb(data, raw=False, strict_map_key=True, ext_hook=_ext_refused,
                               max_bin_len=max_len, max_str_len=max_len, max_array_len=max_len,
                               max_map_len=max_len)
    except RemoteProtocolError:
        raise
    except Exception as exc:  # msgpack raises several unrelated types
        raise RemoteProtocolError(f"malformed msgpack payload: {exc}") from None


def encode(obj: Any, max_frame: int = DEFAULT_MAX_FRAME) -> bytes:
    """One frame carrying ``obj``; refuses to build a frame the peer would reject."""
    body = pack(obj)
    if len(body) > max_frame:
        raise LocalProtocolError(f"message of {len(body)} bytes exceeds the frame limit of {max_frame}")
    return _HEADER.pack(len(body)) + body


class FrameDecoder:
    """Incremental frame decoder.  Feed with :meth:`receive_data`, drain with :meth:`next_message`."""

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME, max_objects: int | None = None) -> None:
        self.max_frame = max_frame
        self.max_objects = max_objects
        self._buf = bytearray()
        self._pos = 0  # read offset into _buf; compacted lazily so many small frames stay O(n)
        self._need: int | None = None  # body length of the frame being read, once its header is in
        self.last_size = 0  # body length of the frame :meth:`next_message` returned last

    def receive_data(self, data: bytes) -> None:
        """Append bytes read from the transport."""
        if self._pos and self._pos >= len(self._buf) // 2:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def next_message(self) -> Any:
        """The next whole decoded message, or :data:`NEED_DATA`.  Raises on a protocol violation."""
        if self._need is None:
            if len(self._buf) - self._pos < HEADER_SIZE:
                return NEED_DATA
            (length,) = _HEADER.unpack_from(self._buf, self._pos)
            if length > self.max_frame:
                raise FrameTooLarge(f"frame of {length} bytes exceeds the limit of {self.max_frame}")
            self._pos += HEADER_SIZE
            self._need = length
        end = self._pos + self._need
        if len(self._buf) < end:
            return NEED_DATA
        body = bytes(self._buf[self._pos:end])
        self._pos = end
        self._need = None
        self.last_size = len(body)
        return unpack(body, self.max_frame, self.max_objects)

    @property
    def incomplete_frame(self) -> int | None:
        """Declared body length of the frame being received (header read, body not yet whole), else None."""
        return self._need

    @property
    def buffered(self) -> int:
        """Bytes held but not yet returned as messages."""
        return len(self._buf) - self._pos

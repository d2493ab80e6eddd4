"""Framing and encoding, with no I/O (in the manner of h11).

A frame is a 4-byte big-endian length followed by that many bytes of msgpack.
:class:`FrameDecoder` is fed bytes as they arrive (``receive_data``) and hands
back whole decoded messages (``next_message``) or :data:`NEED_DATA`; it never
buffers more than one frame's worth beyond ``max_frame`` and refuses a frame
whose declared length exceeds it *before* reading its body, so a hostile peer
cannot make us allocate.  :func:`encode` is the inverse.

msgpack is used with ``raw=False`` and ``strict_map_key`` so bytes stay bytes,
text stays str, and no extension types are accepted: nothing that arrives can
construct an arbitrary object.
"""

from __future__ import annotations

import struct
from typing import Any, Final

import msgpack

from ..errors import FrameTooLarge, LocalProtocolError, RemoteProtocolError

DEFAULT_MAX_FRAME: Final = 8 * 1024 * 1024  # > one page of 1 MiB values + overhead
_HEADER = struct.Struct(">I")
HEADER_SIZE: Final = _HEADER.size


class _NeedData:
    def __repr__(self) -> str:
        return "NEED_DATA"


NEED_DATA: Final = _NeedData()


def _ext_refused(code: int, data: bytes) -> Any:
    raise RemoteProtocolError(f"msgpack extension type {code} is not allowed")


def pack(obj: Any) -> bytes:
    """msgpack-encode ``obj`` (bytes as bin, str as str)."""
    return msgpack.packb(obj, use_bin_type=True)


def unpack(data: bytes, max_len: int = DEFAULT_MAX_FRAME) -> Any:
    """Decode one msgpack object from untrusted ``data``; raises :class:`RemoteProtocolError`."""
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

    def __init__(self, max_frame: int = DEFAULT_MAX_FRAME) -> None:
        self.max_frame = max_frame
        self._buf = bytearray()
        self._pos = 0  # read offset into _buf; compacted lazily so many small frames stay O(n)
        self._need: int | None = None  # body length of the frame being read, once its header is in

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
        return unpack(body, self.max_frame)

    @property
    def buffered(self) -> int:
        """Bytes held but not yet returned as messages."""
        return len(self._buf) - self._pos

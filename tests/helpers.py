"""Small helpers shared by test packages."""

from __future__ import annotations

import socket
from typing import Any

from raftkv.protocol.codec import NEED_DATA, FrameDecoder


def recv_message(sock: socket.socket) -> Any:
    """Read one framed msgpack message from ``sock``; None if the peer hangs up first."""
    dec = FrameDecoder()
    while (msg := dec.next_message()) is NEED_DATA:
        data = sock.recv(65536)
        if not data:
            return None
        dec.receive_data(data)
    return msg

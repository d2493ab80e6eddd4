"""One blocking request to one node: for tooling (cluster status, health checks), not for data."""

from __future__ import annotations

import socket
from typing import Any

from .. import errors
from ..protocol.codec import NEED_DATA, FrameDecoder, encode
from ..server.config import parse_hostport


def call(address: str, op: str, timeout: float = 2.0, **fields: Any) -> Any:
    """Send ``{"op": op, **fields}`` to ``address`` ("host:port") and return the result.

    Raises :class:`raftkv.errors.Unavailable` if the node cannot be reached in
    ``timeout`` seconds, or the error the node answered with.
    """
    try:
        with socket.create_connection(parse_hostport(address), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(encode({"id": 1, "op": op, **fields}))
            decoder = FrameDecoder()
            while (msg := decoder.next_message()) is NEED_DATA:
                data = sock.recv(1 << 20)
                if not data:
                    raise errors.Unavailable(f"{address} closed the connection")
                decoder.receive_data(data)
    except OSError as exc:
        raise errors.Unavailable(f"cannot reach {address}: {exc}") from None
    if "err" in msg:
        raise errors.from_wire(msg["err"])
    return msg.get("ok")

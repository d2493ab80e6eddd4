"""One blocking request to one node: for tooling (cluster status, health checks), not for data."""

from __future__ import annotations

import socket
from collections.abc import Sequence
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


def call_any(addresses: str | Sequence[str], op: str, timeout: float = 2.0, **fields: Any) -> Any:
    """:func:`call` the nodes at ``addresses`` ("host:port,..." or a list) in turn until one answers.

    For requests any node can serve (``map``, ``status``).  An error a node answers with is raised
    as it is, unless it is a cluster condition (:class:`raftkv.errors.Unavailable`): then the next
    node is tried.  Raises :class:`raftkv.errors.Unavailable` naming every address if none answers,
    and :class:`raftkv.errors.InvalidArgument` for a malformed address before anything is sent.
    """
    items = addresses.split(",") if isinstance(addresses, str) else list(addresses)
    targets = [a.strip() for a in items if a and a.strip()]
    if not targets:
        raise errors.InvalidArgument("at least one address (host:port) is needed")
    for address in targets:
        parse_hostport(address)  # all checked first: a typo in the last one is not hidden by the first
    failures = []
    for address in targets:
        try:
            return call(address, op, timeout=timeout, **fields)
        except errors.Unavailable as exc:
            failures.append(exc.message)
    raise errors.Unavailable("no node answered: " + "; ".join(failures))

"""One blocking request to one node: for tooling (cluster status, health checks), not for data.

Nodes started with a client token or TLS want callers to present them (:class:`Credentials`).
Tooling that works with many nodes registers them once per address with :func:`remember_credentials`
(the launcher does, for the clusters it runs) or for the whole process with
:func:`set_default_credentials` (a node, which calls only its own cluster); ``credentials=`` given to
:func:`call` wins over both.
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Iterable, Sequence
from typing import Any

from .. import errors
from ..protocol.codec import NEED_DATA, FrameDecoder, encode
from ..server.config import Credentials, parse_hostport

_BY_ADDRESS: dict[str, Credentials] = {}
_DEFAULT = Credentials()


def remember_credentials(addresses: Iterable[str], credentials: Credentials) -> None:
    """Present ``credentials`` to the nodes at ``addresses`` ("host:port") from now on."""
    for address in addresses:
        _BY_ADDRESS[address.strip()] = credentials


def set_default_credentials(credentials: Credentials) -> None:
    """Present ``credentials`` to every node no :func:`remember_credentials` names."""
    global _DEFAULT
    _DEFAULT = credentials


def credentials_for(address: str) -> Credentials:
    """What :func:`call` presents to ``address`` when not told."""
    return _BY_ADDRESS.get(address.strip(), _DEFAULT)


def call(address: str, op: str, timeout: float = 2.0, *, credentials: Credentials | None = None,
         **fields: Any) -> Any:
    """Send ``{"op": op, **fields}`` to ``address`` ("host:port") and return the result.

    With a token, a ``hello`` carrying it goes first on the connection; with TLS, the node's
    certificate must be signed by the CA (``credentials``, else :func:`credentials_for`).
    Raises :class:`raftkv.errors.Unavailable` if the node cannot be reached in
    ``timeout`` seconds, :class:`raftkv.errors.Unauthenticated` if it refuses the token or the TLS
    handshake fails, or the error the node answered with.
    """
    creds = credentials if credentials is not None else credentials_for(address)
    host, port = parse_hostport(address)
    tls = creds.ssl_context()
    hello = creds.hello()
    try:
        with socket.create_connection((host, port), timeout=timeout) as raw:
            sock = tls.wrap_socket(raw, server_hostname=host) if tls is not None else raw
            with sock:
                sock.settimeout(timeout)
                # the hello and the request go together: a node that refuses the hello answers it
                # and closes the connection without running the request
                out = [encode({**hello, "id": 0})] if hello is not None else []
                sock.sendall(b"".join([*out, encode({"id": 1, "op": op, **fields})]))
                decoder = FrameDecoder()
                for _ in range(len(out) + 1):
                    while (msg := decoder.next_message()) is NEED_DATA:
                        data = sock.recv(1 << 20)
                        if not data:
                            raise errors.Unavailable(f"{address} closed the connection")
                        decoder.receive_data(data)
                    if "err" in msg:
                        break  # a refused hello: its error is the answer
    except ssl.SSLError as exc:
        raise errors.Unauthenticated(f"TLS handshake with {address} failed: {exc}") from None
    except OSError as exc:
        raise errors.Unavailable(f"cannot reach {address}: {exc}") from None
    if "err" in msg:
        raise errors.from_wire(msg["err"])
    return msg.get("ok")


def call_any(addresses: str | Sequence[str], op: str, timeout: float = 2.0, *,
             credentials: Credentials | None = None, **fields: Any) -> Any:
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
            return call(address, op, timeout=timeout, credentials=credentials, **fields)
        except errors.Unavailable as exc:
            failures.append(exc.message)
    raise errors.Unavailable("no node answered: " + "; ".join(failures))

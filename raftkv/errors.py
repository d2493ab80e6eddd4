"""The one error hierarchy of raftkv.

Every error a caller can see derives from :class:`RaftKVError`.  Errors that
cross the wire are encoded only by :func:`to_wire` and rebuilt by
:func:`from_wire`, so the server never leaks a traceback and the client always
raises a typed exception.

Two families matter to a caller:

* caller mistakes (:class:`InvalidArgument` and friends) -- retrying is useless;
* cluster conditions (:class:`Unavailable`, :class:`NotLeader`, ...) -- the
  client retries these itself until its deadline, then raises
  :class:`Unavailable`.
"""

from __future__ import annotations

import errno
from typing import Any


class RaftKVError(Exception):
    """Base class of every raftkv error."""

    code = "error"
    retryable = False

    def __init__(self, message: str = "", **details: Any) -> None:
        super().__init__(message or self.__class__.__doc__ or self.code)
        self.message = message or (self.__class__.__doc__ or self.code).strip()
        self.details = details


# --- caller mistakes ----------------------------------------------------------------------------


class InvalidArgument(RaftKVError, ValueError):
    """An argument is malformed or out of range."""

    code = "invalid_argument"


class InvalidKey(InvalidArgument):
    """A key is not an int in [0, 2**64 - 1]."""

    code = "invalid_key"


class InvalidValue(InvalidArgument):
    """A value is not bytes/str or is larger than the maximum value size."""

    code = "invalid_value"


class QueryError(InvalidArgument):
    """A query does not parse or is not meaningful."""

    code = "query_error"


# --- protocol ------------------------------------------------------------------------------------


class ProtocolError(RaftKVError):
    """A frame or message broke the wire protocol."""

    code = "protocol_error"


class LocalProtocolError(ProtocolError):
    """We were about to send something the protocol forbids (our bug or our caller's)."""

    code = "local_protocol_error"


class RemoteProtocolError(ProtocolError):
    """The peer sent something the protocol forbids."""

    code = "remote_protocol_error"


class FrameTooLarge(RemoteProtocolError):
    """A frame is larger than the configured maximum."""

    code = "frame_too_large"


class UnknownOperation(InvalidArgument):
    """The request names an operation the server does not know."""

    code = "unknown_operation"


class Unauthenticated(RaftKVError):
    """The connection was refused before any request ran: no or a wrong client token (a node
    started with ``--client-token-file`` wants a ``hello`` with it first), or a TLS handshake
    failed (the node's certificate is not trusted by the CA given, or one side does not speak TLS).
    Not retried: the same credentials get the same answer."""

    code = "unauthenticated"


# --- cluster conditions (retryable) -------------------------------------------------------------


class Unavailable(RaftKVError):
    """The cluster could not serve the request before the deadline."""

    code = "unavailable"
    retryable = True


class NotLeader(Unavailable):
    """This replica is not the shard leader; ``leader`` names the one it believes in, if any."""

    code = "not_leader"

    @property
    def leader(self) -> str | None:
        return self.details.get("leader")


class StaleRoute(Unavailable):
    """The request was routed with an old shard map (wrong shard or epoch)."""

    code = "stale_route"


class ShardNotHere(StaleRoute):
    """This node hosts no replica of the shard named in the request."""

    code = "shard_not_here"


class CursorExpired(Unavailable):
    """The scan cursor is gone (idle too long, evicted, or on another node); restart the page without it."""

    code = "cursor_expired"


class Timeout(Unavailable):
    """The request did not complete in time; a write's outcome is unknown."""

    code = "timeout"


class OutcomeUnknown(RaftKVError):
    """A write older than what its shard still remembers of the client's session: it was applied at
    most once, but whether it was cannot be told any more.  Not retried (a retry would get the same)."""

    code = "outcome_unknown"


class StorageError(RaftKVError):
    """The local storage engine failed."""

    code = "storage_error"


class Overloaded(Unavailable):
    """The server refused the request to protect itself; retry later."""

    code = "overloaded"


# accept() failures that mean "no resources right now" (descriptors, buffers, memory), not "this one
# connection failed": a server pauses accepting and says so once, rather than failing every turn
ACCEPT_STARVED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})

_BY_CODE: dict[str, type[RaftKVError]] = {}


def _register(cls: type[RaftKVError]) -> None:
    _BY_CODE[cls.code] = cls
    for sub in cls.__subclasses__():
        _register(sub)


_register(RaftKVError)


def to_wire(err: RaftKVError) -> dict[str, Any]:
    """Encode an error as a msgpack-safe dict."""
    return {"code": err.code, "message": err.message, "details": _plain(err.details)}


def from_wire(obj: Any) -> RaftKVError:
    """Rebuild an error sent by :func:`to_wire`; unknown codes become :class:`RaftKVError`."""
    if not isinstance(obj, dict):
        return RemoteProtocolError(f"malformed error object: {obj!r:.200}")
    cls = _BY_CODE.get(obj.get("code"), RaftKVError)
    details = obj.get("details") if isinstance(obj.get("details"), dict) else {}
    return cls(str(obj.get("message", "")), **details)


def _plain(details: dict[str, Any]) -> dict[str, Any]:
    return {str(k): v for k, v in details.items() if isinstance(v, (str, int, float, bool, type(None), list))}

"""Client sessions: every write takes effect at most once, whatever the retries.

A client may send the same write twice: it retries after a timeout, a dropped
connection or a leader change, and the first attempt may have been committed
all the same.  Applying it again would put an old value back over a newer one
(a write "reappears" after writes acknowledged later), which no sequential
order explains.  As in the Raft thesis (§6.3), each write carries the client's
session id, a sequence number and the client's *low-water mark* -- the lowest
sequence number it still awaits -- and the state machine remembers, per
session, which sequence numbers it applied and what they replied:

* a number it has applied gets the remembered reply, and changes nothing;
* a number below the low-water mark that it does not remember is a late copy
  of a request the client has given up on: it is refused, and changes nothing;
* anything else is applied, and remembered.

Everything here is pure: :func:`decide` and :meth:`Session.remember` compute,
and ``commands.apply`` writes the session record in the *same* LevelDB batch as
the write's data, so the record is exactly as durable as the effect it guards,
travels in snapshots, and is identical on every replica.

Bounds: a session remembers at most :data:`MAX_REMEMBERED` replies (the
oldest go first, and the low-water mark rises past them, so a late copy of a
forgotten request is refused rather than applied again); a session untouched
for :data:`SESSION_TTL_MS` (by the clock of the leaders that wrote the log, a
value carried *in* the log so every replica agrees) is dropped by the
collection that runs every :data:`GC_EVERY` entries.  Both are far beyond any
client's retry window (an operation's deadline is at most a minute).  An index
of sessions by the second they were last touched lets a collection read only
what it drops, at most :data:`GC_BATCH` of them, so it never stalls the Raft
thread however many sessions there are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import msgpack

from ..errors import InvalidArgument

PREFIX = b"sess/"  # system-key prefix of session records
BY_TIME = b"sesx/"  # system-key prefix of the index: second last touched (8 bytes BE) + client id
GC_BATCH = 1000
MAX_REMEMBERED = 4096
SESSION_TTL_MS = 3_600_000
GC_EVERY = 4096  # log entries between two collections of idle sessions
MAX_ID_BYTES = 32
_MAX_SEQ = 2**63 - 1

# outcomes of decide()
APPLY = "apply"
DUPLICATE = "duplicate"
STALE = "stale"


@dataclass
class Session:
    """What one shard remembers of one client session."""

    low: int = 0
    touched_ms: int = 0
    replies: dict[int, Any] = field(default_factory=dict)

    def remember(self, seq: int, low: int, now_ms: int, reply: Any) -> None:
        """Record that ``seq`` was applied with ``reply``; forget what the client no longer awaits."""
        self.low = max(self.low, low)
        self.touched_ms = max(self.touched_ms, now_ms)
        self.replies[seq] = reply
        for old in [s for s in self.replies if s < self.low]:
            del self.replies[old]
        if len(self.replies) > MAX_REMEMBERED:
            # Forget the oldest, and raise the mark past them: their late copies are then refused
            # (never applied twice) instead of being mistaken for new requests.
            ordered = sorted(self.replies)
            for old in ordered[: len(ordered) - MAX_REMEMBERED]:
                del self.replies[old]
            self.low = max(self.low, ordered[len(ordered) - MAX_REMEMBERED])

    def encode(self) -> bytes:
        """The stored form (msgpack; replies are plain msgpack values)."""
        return msgpack.packb([self.low, self.touched_ms, [[s, r] for s, r in sorted(self.replies.items())]],
                             use_bin_type=True)

    @staticmethod
    def decode(raw: bytes | None) -> Session:
        """A stored record, or a fresh session for None."""
        if raw is None:
            return Session()
        low, touched, replies = msgpack.unpackb(raw, raw=False, strict_map_key=False)
        return Session(low, touched, {s: r for s, r in replies})


def decide(session: Session, seq: int) -> str:
    """What to do with request ``seq`` of ``session``: :data:`APPLY`, :data:`DUPLICATE` or :data:`STALE`."""
    if seq in session.replies:
        return DUPLICATE
    if seq < session.low:
        return STALE
    return APPLY


def record_key(client_id: bytes) -> bytes:
    """The system-key name of a session's record."""
    return PREFIX + client_id


def _index_key(touched_ms: int, client_id: bytes) -> bytes:
    return BY_TIME + (touched_ms // 1000).to_bytes(8, "big") + client_id


def store_writes(client_id: bytes, before: Session | None, after: Session) -> dict[bytes, bytes | None]:
    """System-entry writes that store ``after`` (``before``: the record as read, None if new)."""
    writes: dict[bytes, bytes | None] = {record_key(client_id): after.encode()}
    new_index = _index_key(after.touched_ms, client_id)
    if before is not None:
        old_index = _index_key(before.touched_ms, client_id)
        if old_index == new_index:
            return writes
        writes[old_index] = None
    writes[new_index] = b""
    return writes


def collection_bound(now_ms: int) -> bytes:
    """Index entries below this name belong to sessions idle past the TTL at ``now_ms``."""
    return BY_TIME + (max(0, now_ms - SESSION_TTL_MS) // 1000).to_bytes(8, "big")


def collect(index_names: list[bytes]) -> dict[bytes, None]:
    """Deletions that drop the sessions of these (expired) index entries, records included."""
    writes: dict[bytes, None] = {}
    for name in index_names:
        writes[name] = None
        writes[record_key(name[len(BY_TIME) + 8:])] = None
    return writes


def check_wire(obj: Any) -> list[Any] | None:
    """Validate a request's ``session`` field, ``[client_id, seq, low]`` or None; raises InvalidArgument."""
    if obj is None:
        return None
    if not (isinstance(obj, list) and len(obj) == 3 and isinstance(obj[0], bytes)
            and 8 <= len(obj[0]) <= MAX_ID_BYTES and type(obj[1]) is int and type(obj[2]) is int
            and 0 < obj[1] <= _MAX_SEQ and 0 <= obj[2] <= obj[1]):
        raise InvalidArgument("'session' must be [client id (8..32 bytes), seq (1..2**63-1), low (0..seq)]")
    return list(obj)


def check_command(obj: Any) -> None:
    """Validate the session part of a log entry, ``[client_id, seq, low, now_ms]``; raises InvalidArgument."""
    if not (isinstance(obj, list) and len(obj) == 4 and type(obj[3]) is int and 0 <= obj[3] <= _MAX_SEQ):
        raise InvalidArgument("malformed session in command")
    check_wire(obj[:3])

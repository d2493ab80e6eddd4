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
:func:`reply_writes` and :func:`record_writes` say what to store, and ``commands.apply`` writes it in the
*same* LevelDB batch as the write's data, so a session is exactly as durable as
the effect it guards, travels in snapshots, and is identical on every replica.
A session is stored as a small record (its mark and when it was last touched)
plus one entry per remembered reply, so a write stores what it adds and deletes
what it forgets, not the whole session (a client with 64 writes in flight would
otherwise rewrite 64 replies per write).

Bounds: a session remembers at most :data:`MAX_REMEMBERED` replies (the
oldest go first, and the low-water mark rises past them, so a late copy of a
forgotten request is refused rather than applied again).  A session is dropped
once it is idle for :data:`SESSION_TTL_MS` by the clock of the leaders that
wrote the log (a value carried *in* the log, so every replica agrees) *and* for
:data:`MIN_IDLE_ENTRIES` log entries: a leader whose clock jumps ahead cannot
drop a session its client is still retrying against.  Both are far beyond any
client's retry window (an operation's deadline is at most a minute).
Collection runs every :data:`GC_EVERY` entries and drops up to :data:`GC_BATCH`
sessions, more than clients can create meanwhile (one per entry at most); an
index of sessions by the second they were last touched lets it read only what
it drops, so it never stalls the Raft thread however many sessions there are.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass, field
from typing import Any

from ..errors import InvalidArgument
from ..protocol.codec import load, pack

PREFIX = b"sess/"  # system-key prefix of session records: [low, touched_ms]
REPLIES = b"sesr/"  # + len(client id) (1 byte) + client id + seq (8 bytes BE): one remembered reply
BY_TIME = b"sesx/"  # system-key prefix of the index: second last touched (8 bytes BE) + client id
GC_BATCH = 128
MIN_IDLE_ENTRIES = 100_000
MAX_REMEMBERED = 4096
SESSION_TTL_MS = 3_600_000
# log entries between two collections of idle sessions: each opens a LevelDB iterator, which
# costs tens of microseconds on a busy store (every 8 entries it was 6 % of a node's CPU under ingest)
GC_EVERY = 64
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
    touched_index: int = 0  # the log index of its last write
    # the remembered sequence numbers as a min-heap (possibly with some already forgotten): the mark
    # rises with almost every write, and finding what falls below it by scanning every reply cost a
    # pass over the client's whole in-flight window per write
    _order: list[int] = field(default_factory=list, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self._order = sorted(self.replies)  # a sorted list is a heap

    def remember(self, seq: int, low: int, now_ms: int, reply: Any, index: int = 0) -> list[int]:
        """Record that ``seq`` was applied with ``reply``; forget what the client no longer awaits.

        Returns the sequence numbers forgotten.
        """
        forgotten = []
        order, replies = self._order, self.replies
        if low > self.low:
            self.low = low
            while order and order[0] < low:
                s = heapq.heappop(order)
                if s in replies:
                    forgotten.append(s)
        self.touched_ms = max(self.touched_ms, now_ms)
        self.touched_index = max(self.touched_index, index)
        if seq not in replies:
            heapq.heappush(order, seq)
        replies[seq] = reply
        excess = len(replies) - len(forgotten) - MAX_REMEMBERED
        if excess > 0:
            # Forget the oldest, and raise the mark past them: their late copies are then refused
            # (never applied twice) instead of being mistaken for new requests.  From the heap: a
            # client with more than MAX_REMEMBERED writes in flight reaches this on every write,
            # and sorting the whole window each time made a write cost 150 us more
            # (bench/elastic.py, 8,192 in flight).
            while excess > 0:
                s = heapq.heappop(order)
                if s in replies:  # else forgotten before and left behind
                    forgotten.append(s)
                    excess -= 1
            while order[0] not in replies:
                heapq.heappop(order)
            self.low = order[0]
        for s in forgotten:
            del replies[s]
        if len(order) > 2 * len(replies) + 64:  # forgotten numbers left behind by the cut above
            self._order = sorted(replies)
        return forgotten

    def encode(self) -> bytes:
        """The stored record (msgpack ``[low, touched_ms, touched_index]``; replies are entries of their own)."""
        return pack([self.low, self.touched_ms, self.touched_index])

    @staticmethod
    def decode(raw: bytes | None, replies: list[tuple[bytes, bytes]] = ()) -> Session:
        """A stored record and its reply entries (``(name, value)``), or a fresh session for None."""
        if raw is None:
            return Session()
        low, touched, index = load(raw)
        return Session(low, touched, {_seq_of(name): unpack_reply(value) for name, value in replies}, index)


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


def replies_prefix(client_id: bytes) -> bytes:
    """The system-key names of a session's remembered replies start with this."""
    return REPLIES + bytes([len(client_id)]) + client_id


def reply_key(client_id: bytes, seq: int) -> bytes:
    """The system-key name of the reply remembered for ``seq``."""
    return replies_prefix(client_id) + seq.to_bytes(8, "big")


def _seq_of(name: bytes) -> int:
    return int.from_bytes(name[-8:], "big")


_PACKED_NONE = pack(None)  # what every put replies


def pack_reply(reply: Any) -> bytes:
    """A reply as stored (msgpack)."""
    return _PACKED_NONE if reply is None else pack(reply)


def unpack_reply(raw: bytes) -> Any:
    """A stored reply."""
    return load(raw)


def _index_key(touched_ms: int, client_id: bytes) -> bytes:
    return BY_TIME + (touched_ms // 1000).to_bytes(8, "big") + client_id


def reply_writes(client_id: bytes, session: Session, seq: int, forgotten: list[int]) -> dict[bytes, bytes | None]:
    """System-entry writes of one write after :meth:`Session.remember` of ``seq``: its reply
    stored, the ones forgotten deleted (:func:`record_writes` stores the session itself)."""
    prefix = replies_prefix(client_id)
    out: dict[bytes, bytes | None] = {prefix + seq.to_bytes(8, "big"): pack_reply(session.replies[seq])}
    for s in forgotten:
        out[prefix + s.to_bytes(8, "big")] = None
    return out


def record_writes(client_id: bytes, touched_before: int | None, session: Session) -> dict[bytes, bytes | None]:
    """System-entry writes that store ``session`` after a log entry's writes: the record and its
    place in the index by time, once per entry however many of the session's writes it holds.

    ``touched_before``: the stored record's ``touched_ms`` before the entry (None if it is new).
    """
    out: dict[bytes, bytes | None] = {record_key(client_id): session.encode()}
    new_index = _index_key(session.touched_ms, client_id)
    if touched_before is not None:
        old_index = _index_key(touched_before, client_id)
        if old_index == new_index:
            return out
        out[old_index] = None
    out[new_index] = b""
    return out


def collection_bound(now_ms: int) -> bytes:
    """Index entries below this name belong to sessions idle past the TTL at ``now_ms``."""
    return BY_TIME + (max(0, now_ms - SESSION_TTL_MS) // 1000).to_bytes(8, "big")


def idle_long_enough(record: bytes, index: int) -> bool:
    """Whether a session (its stored record) last written ``MIN_IDLE_ENTRIES`` or more entries before ``index``."""
    return index - Session.decode(record).touched_index >= MIN_IDLE_ENTRIES


def expired_clients(index_names: list[bytes]) -> list[bytes]:
    """The client ids of these (expired) index entries."""
    return [name[len(BY_TIME) + 8:] for name in index_names]


def collect(index_names: list[bytes], reply_names: dict[bytes, list[bytes]]) -> dict[bytes, None]:
    """Deletions that drop the sessions of these (expired) index entries: index, record, replies.

    ``reply_names``: client id -> the names of its stored replies.
    """
    out: dict[bytes, None] = {}
    for name in index_names:
        client_id = name[len(BY_TIME) + 8:]
        out[name] = None
        out[record_key(client_id)] = None
        for reply in reply_names.get(client_id, ()):
            out[reply] = None
    return out


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

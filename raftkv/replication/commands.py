"""Replicated commands: what goes into a Raft log entry, and what applying one does.

A command is msgpack ``[op, ...]``, prefixed in the log by pysyncobj's
"regular command" byte.  Decoding validates everything, because a log entry
can originate from a client request forwarded by any replica.

``apply`` is deterministic: given the same store state and the same entry,
every replica computes the same effect and the same reply.  It is the only
place that turns a command into storage writes.

Ops:

* ``["put", [[key, value], ...], session?]`` -- one or many puts, atomically.
* ``["del", [key, ...], session?]`` -- reply: how many of the keys existed.
* ``["multi", [put, ...]]`` -- puts a leader merged into one entry (``merge_puts``),
  applied in order, each with its own session, in one store batch; reply: the
  list of their replies.
* ``["delr", start, end|None, filter|None, max_keys, session?]`` -- delete up to
  ``max_keys`` keys of ``[start, end)`` matching ``filter`` (a query-language
  wire filter); reply ``{"deleted": n, "resume": key|None}`` so a large range
  is deleted in bounded steps, none of which stalls the Raft loop for long.
* ``["split", at, new_id, expected_generation]`` -- the shard keeps ``[start, at)``
  with the next generation; ``new_id`` gets ``[at, end)`` on the same replicas,
  with a copy of the rows and of the client sessions.  Reply: both shards.
* ``["stripe", at, end, [stripe dicts], tail dict | None, expected_generation]``
  -- the shard keeps ``[start, at)``; ``[at, end)`` becomes a striped segment of
  new, empty groups (``stripe dicts``) and ``[end, old end)`` a new, empty range
  shard (``tail``).  Refused if the shard holds any key at or past ``at``: the
  new groups start empty, so nothing is copied.
* ``["map", shard_map_dict, expected_epoch]`` -- meta group, clusters made before
  map records: compare and set the whole map.  Reply: the epoch now stored.
* ``["mrec", changes]`` -- meta group: change shard records, each by
  compare-and-set on its generation (``routing/records.py``).
* ``["nrec", changes]`` -- meta group: change node records, each by
  compare-and-set on its version (``routing/nodes.py``).  Reply: ``{"nodes": n}``,
  the number of node records now stored.
* ``["alloc", count]`` -- meta group: reserve ``count`` new shard numbers; reply
  the first.
* ``["conf", voters, learners, expected_version]`` -- any group: change its
  membership (``membership.py``) if its configuration is still at
  ``expected_version``; it takes effect on each replica when applied.  A shard's
  own record follows (replicas = voters, learners, next generation), so the map
  catches up with it as it does after a split.  Reply: ``{"members": config}``.

A shard replica keeps its own bounds (its ``Shard`` record and the children its
splits created) in its store, written in the same batch as the split, and
checks every key of every write against them when it applies it: a write that
was routed before a split and committed after it is refused (``stale``), never
applied to the wrong side.

``session`` is ``[client_id, seq, low, now_ms]`` (``sessions.py``): a write
that carries one takes effect at most once, however often it is retried or
copied; a repeat gets the first application's reply.  Entries written before
sessions existed have no such field and still decode.
"""

from __future__ import annotations

import dataclasses
import re
import weakref
from collections import OrderedDict
from collections.abc import Sequence
from typing import Any, Protocol

from ..errors import InvalidArgument
from ..keys import MAX_KEY, MAX_VALUE_BYTES
from ..protocol.codec import load, pack, unpack
from ..routing import nodes, records
from ..routing.ranges import end_from_wire, end_to_wire
from ..routing.shardmap import Shard, ShardMap, shard_name
from ..storage.leveldb import ShardStore
from . import membership, sessions

REGULAR = b"\x00"  # pysyncobj's _COMMAND_TYPE.REGULAR
MAP_KEY = b"shard_map"
MAX_DELETE_STEP = 10_000
# One log entry's ceiling.  Below the AppendEntries batch size (group.py), so pysyncobj never takes
# its pickled "transmission" path, which our followers refuse: a larger entry would never commit.
MAX_COMMAND_BYTES = 3 << 20
FILTER_WORK_PER_STEP = 1_000_000  # filter nodes x rows one range-delete step may evaluate


def encode(op: list[Any]) -> bytes:
    """The log-entry bytes of a command."""
    return REGULAR + pack(op)


Session = list[Any] | None  # [client_id, seq, low, now_ms], see sessions.py


def _with(op: list[Any], session: Session) -> list[Any]:
    # no field at all without a session: the entry is then exactly what it was before sessions
    return op if session is None else [*op, session]


def put(pairs: Sequence[tuple[int, bytes] | list[Any]], session: Session = None) -> bytes:
    """Command putting every ``(key, value)`` pair atomically."""
    return encode(_with(["put", list(pairs)], session))  # msgpack packs a tuple as the array a list is


_PUT_HEADS = (REGULAR + b"\x92\xa3put", REGULAR + b"\x93\xa3put")  # ["put", pairs] or with a session
MAX_MERGED = 1024  # puts in one merged entry


def is_put(command: bytes) -> bool:
    """Whether a command (log-entry bytes) is a put, which a leader may merge (without decoding it)."""
    return command[:6] in _PUT_HEADS


def merge_puts(puts: list[bytes]) -> bytes:
    """One command applying the ``puts`` (from :func:`put`) in order, each as if alone: with its
    own session and its own reply (``["multi", [put, ...]]``, replies as a list).

    Built by joining the encoded puts, without decoding them: a leader under many concurrent
    writers appends one log entry where it would append one per request, which every replica
    then journals, sends and applies as one batch.
    """
    n = len(puts)
    if not 0 < n <= MAX_MERGED or not all(is_put(p) for p in puts):
        raise ValueError("merge_puts takes 1..MAX_MERGED puts")
    head = bytes([0x90 | n]) if n < 16 else b"\xdc" + n.to_bytes(2, "big")
    return REGULAR + b"\x92\xa5multi" + head + b"".join(p[1:] for p in puts)


def delete(keys: list[int], session: Session = None) -> bytes:
    """Command deleting ``keys``."""
    return encode(_with(["del", list(keys)], session))


def delete_range(start: int, end: int | None, filter_wire: Any = None, max_keys: int = MAX_DELETE_STEP,
                 session: Session = None) -> bytes:
    """Command deleting (a bounded step of) ``[start, end)``; ``end`` None means to the end of the key space."""
    return encode(_with(["delr", start, end, filter_wire, max_keys], session))


def set_map(shard_map: dict[str, Any], expected_epoch: int) -> bytes:
    """Meta command: store ``shard_map`` if the stored epoch is ``expected_epoch``."""
    return encode(["map", shard_map, expected_epoch])


def split(at: int, new_id: str, expected_generation: int) -> bytes:
    """Command splitting the shard at ``at``: ``new_id`` takes ``[at, end)``."""
    return encode(["split", at, new_id, expected_generation])


def stripe(at: int, end: int, stripes: list[Shard], tail: Shard | None, expected_generation: int) -> bytes:
    """Command striping ``[at, end)`` of the shard over new, empty groups (``tail`` takes the rest)."""
    return encode(["stripe", at, end_to_wire(end), [s.to_dict() for s in stripes],
                   None if tail is None else tail.to_dict(), expected_generation])


def change_records(changes: list[records.Change]) -> bytes:
    """Meta command: change shard records by compare-and-set (``routing/records.py``)."""
    return encode(["mrec", changes])


def change_nodes(changes: list[nodes.NodeChange]) -> bytes:
    """Meta command: change node records by compare-and-set (``routing/nodes.py``)."""
    return encode(["nrec", changes])


def allocate_ids(count: int = 1) -> bytes:
    """Meta command: reserve ``count`` new shard numbers."""
    return encode(["alloc", count])


def change_members(voters: list[str], learners: list[str], expected_version: int) -> bytes:
    """Command changing the group's membership, decided from configuration ``expected_version``."""
    return encode(["conf", sorted(voters), sorted(learners), expected_version])


_CONF_HEAD = encode(["conf", [], [], 0])[:7]  # type byte, a 4-list, the op name


def is_member_change(entry: bytes) -> bool:
    """Whether a log entry's command changes the group's membership (without decoding it)."""
    return entry[:7] == _CONF_HEAD


def _key(k: Any) -> int:
    if type(k) is not int or not 0 <= k <= MAX_KEY:
        raise InvalidArgument("bad key in command")
    return k


def decode(payload: bytes) -> list[Any]:
    """Validate and decode a command body (without the type byte)."""
    try:
        op = unpack(payload)
    except Exception as exc:
        raise InvalidArgument(f"undecodable command: {exc}") from None
    if isinstance(op, list) and len(op) == 2 and op[0] == "multi":
        if not (isinstance(op[1], list) and 0 < len(op[1]) <= MAX_MERGED):
            raise InvalidArgument("malformed merged command")
        for sub in op[1]:
            if not (isinstance(sub, list) and sub and sub[0] == "put"):
                raise InvalidArgument("a merged command holds puts only")
            _validate(sub)
        return op
    return _validate(op)


def _validate(op: Any) -> list[Any]:
    """``op`` checked field by field (a missing session field added as None)."""
    if not isinstance(op, list) or not op or not isinstance(op[0], str):
        raise InvalidArgument("malformed command")
    name = op[0]
    if name in _SESSION_AT:
        # the session is the optional last field (absent in entries written before sessions)
        if len(op) == _SESSION_AT[name]:
            op.append(None)
        if len(op) == _SESSION_AT[name] + 1 and op[-1] is not None:
            sessions.check_command(op[-1])
    if name == "put" and len(op) == 3 and isinstance(op[1], list):
        for pair in op[1]:  # every replica runs this over every key it applies: kept to one test a pair
            if not (type(pair) is list and len(pair) == 2 and type(pair[0]) is int and 0 <= pair[0] <= MAX_KEY
                    and type(pair[1]) is bytes and len(pair[1]) <= MAX_VALUE_BYTES):
                raise InvalidArgument("malformed put")
    elif name == "del" and len(op) == 3 and isinstance(op[1], list):
        for k in op[1]:
            _key(k)
    elif name == "delr" and len(op) == 6:
        _key(op[1])
        if op[2] is not None:
            _key(op[2])
        if type(op[4]) is not int or not 0 < op[4] <= MAX_DELETE_STEP:
            raise InvalidArgument("bad delete step")
    elif name == "map" and len(op) == 3 and isinstance(op[1], dict) and type(op[2]) is int:
        pass
    elif name == "split" and len(op) == 4 and isinstance(op[2], str) and _SHARD_ID.fullmatch(op[2]) \
            and type(op[3]) is int:
        _key(op[1])
    elif name == "stripe" and len(op) == 6 and isinstance(op[3], list) and type(op[5]) is int:
        _key(op[1])
        if op[2] is not None:
            _key(op[2])
        try:
            op[3] = [Shard.from_dict(d) for d in op[3]]
            op[4] = None if op[4] is None else Shard.from_dict(op[4])
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidArgument(f"malformed stripe command: {exc}") from None
    elif name == "mrec" and len(op) == 2:
        try:
            records.check_changes(op[1])
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidArgument(f"malformed map change: {exc}") from None
    elif name == "nrec" and len(op) == 2:
        try:
            nodes.check_node_changes(op[1])
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidArgument(f"malformed node change: {exc}") from None
    elif name == "alloc" and len(op) == 2 and type(op[1]) is int and 0 < op[1] <= 1024:
        pass
    elif name == "conf" and len(op) == 4 and type(op[3]) is int:
        try:
            membership.Config.from_wire({"voters": op[1], "learners": op[2], "version": op[3]})
        except ValueError as exc:
            raise InvalidArgument(f"malformed membership change: {exc}") from None
    else:
        raise InvalidArgument(f"unknown or malformed command {name!r:.40}")
    return op


_SESSION_AT = {"put": 2, "del": 2, "delr": 5}  # index of the optional session field
_SHARD_ID = re.compile(r"s[0-9]{4,12}")


class SplitHooks(Protocol):
    """What applying a split needs from the node: a durable home for the new shard's replica."""

    def prepare_child(self, child: Shard, parent: ShardStore, index: int) -> None:
        """Build ``child``'s replica durably from ``parent``'s rows and sessions (before the
        parent's own write); a no-op if this node already holds a replica of ``child``."""

    def open_child(self, child: Shard) -> None:
        """Start ``child``'s replica (after the parent's write is durable)."""

    def open_empty(self, shard: Shard) -> None:
        """Start this node's replica of ``shard``, made empty, if this node is among its replicas."""


def apply(store: ShardStore, index: int, payload: bytes, hooks: SplitHooks | None = None) -> Any:
    """Apply the command in log entry ``index`` to ``store``; returns the reply.

    An entry at or below the store's applied index was applied before a restart:
    its effect is already there, so it is skipped (and replies None).
    A malformed command is recorded as applied (so the index stays contiguous)
    and replies with an error dict instead of crashing the replica.
    A write whose session says it was applied already changes nothing and
    replies what its first application replied (``sessions.py``).
    """
    if index <= store.applied_index:
        return None
    try:
        op = decode(payload)
    except InvalidArgument as exc:
        store.apply(index)
        return {"error": str(exc)}
    name = op[0]
    if name == "map":
        return _apply_map(store, index, op)
    if name == "mrec":
        return _apply_records(store, index, op[1])
    if name == "nrec":
        return _apply_nodes(store, index, op[1])
    if name == "alloc":
        return _apply_alloc(store, index, op[1])
    if name == "split":
        return _apply_split(store, index, op, hooks)
    if name == "stripe":
        return _apply_stripe(store, index, op, hooks)
    if name == "conf":
        return _apply_conf(store, index, op)
    if name == "multi":
        return _apply_multi(store, index, op[1])
    writes = _Writes(index, [op])
    reply = _write(store, index, op, writes, shard_state(store))
    writes.commit(store, index)
    return reply


class _Writes:
    """What one log entry writes, gathered so that it goes to the store in one batch."""

    __slots__ = ("puts", "deletes", "system", "gc_keep", "sessions")

    def __init__(self, index: int, ops: list[list[Any]]) -> None:
        self.puts: list[list[Any]] = []  # [key, value], as decoded
        self.deletes: list[int] = []
        self.system: dict[bytes, bytes | None] = {}
        # client id -> (its session, the stored touched_ms before this entry): the record is
        # written once per entry, however many of the client's writes a merged entry holds
        self.sessions: dict[bytes, tuple[sessions.Session, int | None]] = {}
        # every GC_EVERY entries, the first new session write collects idle sessions, keeping every
        # client the entry writes for (None: not this entry, or done)
        self.gc_keep: set[bytes] | None = {op[-1][0] for op in ops if op[-1] is not None} \
            if index % sessions.GC_EVERY == 0 else None

    def commit(self, store: ShardStore, index: int) -> None:
        """Write it all, with the applied index, in one batch."""
        for client_id, (record, touched_before) in self.sessions.items():
            self.system.update(sessions.record_writes(client_id, touched_before, record))
        try:
            store.apply(index, puts=self.puts, deletes=self.deletes, system=self.system)
        except BaseException:
            _SESSIONS.pop(store, None)  # the cached sessions may be ahead of the store now
            raise


def _write(store: ShardStore, index: int, op: list[Any], writes: _Writes, state: ShardState | None) -> Any:
    """A data write's reply (put, del or one delr step), its effect added to ``writes``.

    Refused (nothing added) if a key is outside the replica's bounds (``state``, the store's
    :func:`shard_state`); a repeat of a session's write replies what the first one did and adds
    nothing.
    """
    stale = _outside(state, op)
    if stale is not None:
        return {"error": stale, "stale": True}
    session = op[-1]
    record = None
    if session is not None:
        client_id, seq, low, now_ms = session
        record, touched_before = _session(store, client_id)
        verdict = sessions.decide(record, seq)
        if verdict == sessions.DUPLICATE:
            return record.replies[seq]
        if verdict == sessions.STALE:
            return {"error": "this write is older than what the shard remembers of its client's session: "
                             "this copy was not applied, and whether an earlier one was cannot be told",
                    "outcome_unknown": True}
        if writes.gc_keep is not None:
            writes.system.update(_collect_sessions(store, now_ms, index, keep=writes.gc_keep))
            writes.gc_keep = None
    name = op[0]
    if name == "put":
        writes.puts.extend(op[1])  # [key, value] lists, as decoded
        reply: Any = None
    elif name == "del":
        # only ever alone in its entry (merge_puts merges puts), so the store holds every earlier write
        reply = sum(1 for k in op[1] if store.get(k) is not None)
        writes.deletes.extend(op[1])
    else:
        reply, deleted = _delete_range_step(store, op)
        writes.deletes.extend(deleted)
    if record is not None and not (isinstance(reply, dict) and "error" in reply):
        forgotten = record.remember(seq, low, now_ms, reply, index)
        writes.system.update(sessions.reply_writes(client_id, record, seq, forgotten))
        if client_id not in writes.sessions:
            writes.sessions[client_id] = (record, touched_before)
            _remembered(store, client_id, record)
    return reply


def _apply_multi(store: ShardStore, index: int, ops: list[list[Any]]) -> list[Any]:
    """Apply the puts a leader merged into one entry (``merge_puts``): each as if alone, in order,
    all in one store batch; the reply is the list of their replies."""
    writes = _Writes(index, ops)
    state = shard_state(store)  # a merged entry holds puts only: the bounds stay put throughout
    replies = [_write(store, index, op, writes, state) for op in ops]
    writes.commit(store, index)
    return replies


# Sessions as the state machine last wrote them, per store: a write reads its session from here,
# not from LevelDB (decoding a session with many writes in flight cost more than the write). A
# store's generation changes when a snapshot replaces its state, which empties its cache.
_SESSIONS: weakref.WeakKeyDictionary[ShardStore, tuple[int, OrderedDict[bytes, sessions.Session]]] = \
    weakref.WeakKeyDictionary()
_SESSION_CACHE = 10_000  # sessions per store kept decoded; the rest are read back when they write again


def _session(store: ShardStore, client_id: bytes) -> tuple[sessions.Session, int | None]:
    """The session of ``client_id`` in ``store`` and its stored ``touched_ms`` (None if it is new)."""
    entry = _SESSIONS.get(store)
    if entry is None or entry[0] != store.generation:
        entry = _SESSIONS[store] = (store.generation, OrderedDict())
    cache = entry[1]
    record = cache.get(client_id)
    if record is None:
        raw = store.get_system(sessions.record_key(client_id))
        prefix = sessions.replies_prefix(client_id)
        replies = store.system_items(prefix, prefix + b"\xff" * 8, sessions.MAX_REMEMBERED + 1) if raw else []
        record = sessions.Session.decode(raw, replies)
        if raw is None:
            return record, None  # cached once remembered (a refused request leaves nothing behind)
        cache[client_id] = record
        if len(cache) > _SESSION_CACHE:
            cache.popitem(last=False)
    else:
        cache.move_to_end(client_id)
    return record, record.touched_ms


def _remembered(store: ShardStore, client_id: bytes, record: sessions.Session) -> None:
    """Keep ``record`` cached once it remembered a write: a later write of the same entry (a merged
    batch) must find it, though the store has it only once the entry is written."""
    entry = _SESSIONS.get(store)
    if entry is None or entry[0] != store.generation:
        entry = _SESSIONS[store] = (store.generation, OrderedDict())
    cache = entry[1]
    if client_id not in cache:
        cache[client_id] = record
        if len(cache) > _SESSION_CACHE:
            cache.popitem(last=False)


def _collect_sessions(store: ShardStore, now_ms: int, index: int,
                      keep: set[bytes]) -> dict[bytes, bytes | None]:
    """Deletions of sessions idle past the TTL by the log's clock and by log distance (a batch at most).

    Oldest first by the clock; the first one that is not also far enough behind in the log ends
    the batch (a clock that jumped cannot drop it early; it is collected once the log moves on).
    """
    names = store.system_names(sessions.BY_TIME, sessions.collection_bound(now_ms), sessions.GC_BATCH)
    expired, replies = [], {}
    cache = _SESSIONS.get(store, (None, {}))[1]
    for name, client in zip(names, sessions.expired_clients(names), strict=True):
        if client in keep:
            continue  # this very entry writes it: not idle (its index entry moves in the same batch)
        record = store.get_system(sessions.record_key(client))
        if record is not None and not sessions.idle_long_enough(record, index):
            break
        expired.append(name)
        prefix = sessions.replies_prefix(client)
        replies[client] = store.system_names(prefix, prefix + b"\xff" * 8, sessions.MAX_REMEMBERED + 1)
        cache.pop(client, None)
    return sessions.collect(expired, replies)


def _delete_range_step(store: ShardStore, op: list[Any]) -> tuple[dict[str, Any], list[int]]:
    """The reply and the keys one range-delete step removes (nothing is written here)."""
    _, start, end, filter_wire, max_keys, _session = op
    end_excl = end_from_wire(end)
    match = None
    if filter_wire is not None:
        from ..query.predicate import compile_filter  # the query layer is optional for plain deletes

        try:
            match = compile_filter(filter_wire)
        except Exception as exc:
            return {"error": f"bad filter: {exc}"}, []
    # Deterministic (every replica must delete the same keys), so a row budget, not a clock: it
    # shrinks with the filter's size so one step costs about the same whatever the filter.
    budget = max(100, min(max_keys * 10, FILTER_WORK_PER_STEP // _size(filter_wire)))
    rows, resume = store.scan(start, end_excl, limit=max_keys, max_bytes=1 << 62, filter=match,
                              max_examined=budget)
    return {"deleted": len(rows), "resume": resume}, [k for k, _ in rows]


def _size(wire: Any) -> int:
    """Weight of a filter's wire form (1 for none): nodes plus string lengths, as predicate.filter_cost."""
    if wire is None:
        return 1
    from ..query.predicate import filter_cost  # the query layer is optional for plain deletes

    return filter_cost(wire)


def _apply_map(store: ShardStore, index: int, op: list[Any]) -> int:
    _, new_map, expected = op
    raw = store.get_system(MAP_KEY)
    current = load(raw) if raw else None
    epoch = current["epoch"] if current else 0
    if epoch != expected:
        store.apply(index)
        return epoch
    store.apply_system(index, MAP_KEY, pack(new_map))
    return int(new_map.get("epoch", 0))


def stored_map(store: ShardStore) -> dict[str, Any] | None:
    """The shard map held by a meta-group store, or None before bootstrap."""
    raw = store.get_system(MAP_KEY)
    return load(raw) if raw else None


# --- shard bounds ---------------------------------------------------------------------------

SHARD_KEY = b"shard"  # system entry: {"shard": Shard dict, "children": [Shard dict, ...]}


@dataclasses.dataclass(frozen=True)
class ShardState:
    """What a replica knows of its own shard: its record, and the shards its splits created."""

    shard: Shard
    children: tuple[Shard, ...] = ()

    def encode(self) -> bytes:
        """Stored form."""
        return pack({"shard": self.shard.to_dict(), "children": [c.to_dict() for c in self.children]})

    @classmethod
    def decode(cls, raw: bytes) -> ShardState:
        """Inverse of :meth:`encode`."""
        d = load(raw)
        return cls(Shard.from_dict(d["shard"]), tuple(Shard.from_dict(c) for c in d["children"]))


# A replica's state, per store, as last read or written: checked on every write it applies. A
# store's generation changes when a snapshot replaces its state, which invalidates the entry.
_STATES: weakref.WeakKeyDictionary[ShardStore, tuple[int, ShardState | None]] = weakref.WeakKeyDictionary()


def shard_state(store: ShardStore) -> ShardState | None:
    """The shard ``store`` replicates, as its own durable state says (None: the meta group)."""
    entry = _STATES.get(store)
    if entry is None or entry[0] != store.generation:
        raw = store.get_system(SHARD_KEY)
        entry = _STATES[store] = (store.generation, None if raw is None else ShardState.decode(raw))
    return entry[1]


def init_shard_state(store: ShardStore, shard: Shard) -> ShardState:
    """Give a replica of an initial-map shard its bounds if it has none yet (every replica derives
    the same ones from the deterministic initial map, so this needs no log entry)."""
    state = shard_state(store)
    if state is None:
        state = ShardState(shard)
        store.put_system(SHARD_KEY, state.encode())
        _STATES[store] = (store.generation, state)
    return state


def _write_state(store: ShardStore, after: ShardState, index: int,
                 delete_span: tuple[int, int] | None = None) -> None:
    """Write a replica's new bounds with ``index`` (synced), dropping ``delete_span``'s rows.

    Readers see the new bounds *before* the rows go: a read that checks the bounds after taking
    its snapshot can then never pass the check and miss moved rows (``Node._view``).
    """
    _STATES[store] = (store.generation, after)
    try:
        store.apply(index, delete_span=delete_span, system={SHARD_KEY: after.encode()}, sync=True)
    except BaseException:
        _STATES.pop(store, None)  # read back from the store, whatever it holds now
        raise


def _outside(state: ShardState | None, op: list[Any]) -> str | None:
    """Why a data write falls outside the replica's bounds (``state``; routed before a split), or None."""
    if state is None:
        return None
    shard = state.shard
    name = op[0]
    if name == "put":
        bad = shard.first_foreign(k for k, _ in op[1])
    elif name == "del":
        bad = shard.first_foreign(op[1])
    else:
        start, end = op[1], end_from_wire(op[2])
        return None if shard.start <= start and end <= shard.end else \
            f"range [{start}, {end}) is not inside shard {shard.id} any more"
    return None if bad is None else f"key {bad} is not in shard {shard.id} any more"


def _apply_split(store: ShardStore, index: int, op: list[Any], hooks: SplitHooks | None) -> Any:
    _, at, new_id, expected = op
    state = shard_state(store)
    shard = state.shard if state is not None else None
    why = None
    if shard is None or hooks is None:
        why = "this group is not a shard"
    elif shard.generation != expected:
        why = f"shard {shard.id} is at generation {shard.generation}, not {expected}"
    elif shard.stripe is not None:
        why = f"shard {shard.id} is a stripe; stripes are not split"
    elif not shard.start < at < shard.end:
        why = f"split key {at} is not strictly inside shard {shard.id}"
    elif new_id == shard.id or any(c.id == new_id for c in state.children):
        why = f"shard id {new_id} is taken"
    elif shard.learners:
        # the child starts on the voters only: a joining replica would be left half in
        why = f"shard {shard.id} has replicas joining ({', '.join(shard.learners)}); split once they are in"
    if why is not None or state is None or shard is None or hooks is None:
        store.apply(index)
        return {"error": why, "stale": True}
    left = dataclasses.replace(shard, end=at, generation=shard.generation + 1)
    child = Shard(new_id, at, shard.end, shard.replicas)
    after = ShardState(left, (*state.children, child))
    # The child's replica is durable before the parent forgets its rows, and the parent's write is
    # durable (sync) before the child starts: a crash in between leaves a child directory whose
    # parent has not applied the split, which start-up removes (the replay splits again).
    hooks.prepare_child(child, store, index)
    _write_state(store, after, index, delete_span=(at, shard.end))
    hooks.open_child(child)
    return {"shards": [left.to_dict(), child.to_dict()]}


def _apply_stripe(store: ShardStore, index: int, op: list[Any], hooks: SplitHooks | None) -> Any:
    _, at, end_wire, stripes, tail, expected = op
    end = end_from_wire(end_wire)
    state = shard_state(store)
    shard = state.shard if state is not None else None
    why = None
    if shard is None or state is None:
        why = "this group is not a shard"
    else:
        why = _stripe_refusal(store, state, at, end, stripes, tail, expected)
    if why is not None or shard is None or state is None:
        store.apply(index)
        return {"error": why, "stale": True}
    left = dataclasses.replace(shard, end=at, generation=shard.generation + 1)
    born = [*stripes, *([tail] if tail is not None else [])]
    after = ShardState(left, (*state.children, *born))
    _write_state(store, after, index)
    if hooks is not None:
        for s in born:
            hooks.open_empty(s)
    return {"shards": [left.to_dict(), *(s.to_dict() for s in born)]}


def _stripe_refusal(store: ShardStore, state: ShardState, at: int, end: int, stripes: list[Shard],
                    tail: Shard | None, expected: int) -> str | None:
    """Why a stripe command cannot apply to this replica's shard, or None."""
    shard = state.shard
    taken = {shard.id, *(c.id for c in state.children)}
    k = len(stripes)
    if shard.generation != expected:
        return f"shard {shard.id} is at generation {shard.generation}, not {expected}"
    if shard.stripe is not None:
        return f"shard {shard.id} is a stripe; only a range shard can be striped"
    if not shard.start < at < end <= shard.end:
        return f"a striped segment [{at}, {end}) must lie inside shard {shard.id} and leave it keys below"
    if store.key_span(at, shard.end) is not None:
        return f"shard {shard.id} holds keys at or past {at}: a new segment must start empty"
    if not 2 <= k <= 16 or [s.stripe for s in stripes] != [(i, k) for i in range(k)]:
        return "stripes must be 2..16 shards numbered 0..K-1"
    if any(s.start != at or s.end != end or s.generation != 1 or not s.born_empty for s in stripes):
        return "every stripe must cover the segment, at generation 1, born empty"
    if (tail is None) != (end == shard.end):
        return "the keys past the segment need a tail shard (and only they)"
    if tail is not None and (tail.start != end or tail.end != shard.end or tail.stripe is not None
                             or tail.generation != 1 or not tail.born_empty):
        return "the tail must be a range shard [end, old end), at generation 1, born empty"
    ids = [s.id for s in stripes] + ([tail.id] if tail is not None else [])
    if len(set(ids)) != len(ids) or taken & set(ids) or not all(_SHARD_ID.fullmatch(i) for i in ids):
        return "the new shards need fresh, distinct ids"
    return None


# --- membership ---------------------------------------------------------------------------------

CONF_KEY = b"conf"  # system entry: the group's membership.Config (wire form)


def stored_config(store: ShardStore) -> membership.Config | None:
    """The group's configuration as its replica last applied it (None: never written)."""
    raw = store.get_system(CONF_KEY)
    return None if raw is None else membership.Config.from_wire(load(raw))


def init_config(store: ShardStore, config: membership.Config) -> membership.Config:
    """The stored configuration, or ``config`` written as the first one: the group's creation
    config, which every replica derives alike (the initial map, a split's parent, a record)."""
    stored = stored_config(store)
    if stored is None:
        store.put_system(CONF_KEY, pack(config.to_wire()))
        stored = config
    return stored


def _apply_conf(store: ShardStore, index: int, op: list[Any]) -> Any:
    _, voters, learners, expected = op
    old = stored_config(store)
    new = "the group has no configuration" if old is None else membership.apply(old, voters, learners, expected)
    if isinstance(new, str):
        store.apply(index)
        return {"error": new}
    system = {CONF_KEY: pack(new.to_wire())}
    state = shard_state(store)
    after = None
    if state is not None:
        # the record keeps its replicas' order (best first), the newcomer last
        kept = [r for r in state.shard.replicas if r in new.voters]
        replicas = (*kept, *(v for v in new.voters if v not in kept))
        after = ShardState(dataclasses.replace(state.shard, replicas=replicas, learners=new.learners,
                                               generation=state.shard.generation + 1), state.children)
        system[SHARD_KEY] = after.encode()
    # synced: the configuration counts majorities, and must not roll back behind what it acknowledged
    store.apply(index, system=system, sync=True)
    if after is not None:
        _STATES[store] = (store.generation, after)
    return {"members": new.to_wire()}


# --- the meta group: shard records ------------------------------------------------------------

RECORD = b"mrec/"  # + shard id: its Shard dict
EPOCH = b"mepoch"
NEXT_ID = b"mnext"


def _records(store: ShardStore) -> dict[str, dict[str, Any]]:
    items = store.system_items(RECORD, RECORD + b"\xff", 1 << 30)
    out = {name[len(RECORD):].decode(): load(raw) for name, raw in items}
    if not out:  # a cluster made before records: its whole-map blob
        legacy = store.get_system(MAP_KEY)
        if legacy:
            out = {s["id"]: s for s in load(legacy)["shards"]}
    return out


def _epoch(store: ShardStore) -> int:
    raw = store.get_system(EPOCH)
    if raw is not None:
        return int(load(raw))
    legacy = store.get_system(MAP_KEY)
    return int(load(legacy)["epoch"]) if legacy else 0


def _apply_records(store: ShardStore, index: int, changes: list[Any]) -> Any:
    current = _records(store)
    epoch = _epoch(store)
    writes, why = records.apply_changes(current, epoch, changes)
    if why is not None:
        store.apply(index)
        return {"error": why, "conflict": True, "epoch": epoch}
    system: dict[bytes, bytes | None] = {}
    if not store.system_names(RECORD, RECORD + b"\xff", 1):
        # the first change of a cluster made before records: write the blob's records too
        system.update({RECORD + sid.encode(): pack(r) for sid, r in current.items()})
    for sid, record in writes.items():
        system[RECORD + sid.encode()] = None if record is None else pack(record)
    system[EPOCH] = pack(epoch + 1)
    store.apply(index, system=system)
    return {"epoch": epoch + 1}


def _apply_alloc(store: ShardStore, index: int, count: int) -> Any:
    raw = store.get_system(NEXT_ID)
    if raw is None and not _records(store):
        # before the initial map's records exist, their numbers are not known to be taken
        store.apply(index)
        return {"error": "the shard map is not written yet; retry", "stale": True}
    if raw is not None:
        first = int(load(raw))
    else:  # never allocated: past every shard number in use
        numbers = [int(sid[1:]) for sid in _records(store) if _SHARD_ID.fullmatch(sid)]
        first = max(numbers, default=-1) + 1
    store.apply(index, system={NEXT_ID: pack(first + count)})
    return first


def stored_shard_map(store: ShardStore) -> ShardMap | None:
    """The shard map a meta-group store holds, or None before bootstrap."""
    current = _records(store)
    if not current:
        return None
    return records.map_of(current.values(), _epoch(store))


# --- the meta group: node records ----------------------------------------------------------------

NODE = b"nrec/"  # + node id: its NodeRecord dict


def _node_dicts(store: ShardStore) -> dict[str, dict[str, Any]]:
    items = store.system_items(NODE, NODE + b"\xff", 1 << 30)
    return {name[len(NODE):].decode(): load(raw) for name, raw in items}


def _apply_nodes(store: ShardStore, index: int, changes: list[Any]) -> Any:
    current = _node_dicts(store)
    writes, why = nodes.apply_node_changes(current, changes)
    if why is not None:
        store.apply(index)
        return {"error": why, "conflict": True}
    system: dict[bytes, bytes | None] = {
        NODE + nid.encode(): None if record is None else pack(record) for nid, record in writes.items()}
    store.apply(index, system=system)
    return {"nodes": sum(1 for r in {**current, **writes}.values() if r is not None)}


def stored_nodes(store: ShardStore) -> dict[str, nodes.NodeRecord]:
    """The node records a meta-group store holds, by node id (empty before any was written)."""
    return {nid: nodes.NodeRecord.from_dict(d) for nid, d in _node_dicts(store).items()}


def has_nodes(store: ShardStore) -> bool:
    """Whether a meta-group store holds any node record (reads one name, not every record)."""
    return bool(store.system_names(NODE, NODE + b"\xff", 1))


def new_shard_id(number: int) -> str:
    """The id of the shard numbered ``number`` by ``alloc``."""
    return shard_name(number)

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
* ``["delr", start, end|None, filter|None, max_keys, session?]`` -- delete up to
  ``max_keys`` keys of ``[start, end)`` matching ``filter`` (a query-language
  wire filter); reply ``{"deleted": n, "resume": key|None}`` so a large range
  is deleted in bounded steps, none of which stalls the Raft loop for long.
* ``["map", shard_map_dict, expected_epoch]`` -- meta group only: compare
  and set the shard map.  Reply: the epoch now stored.

``session`` is ``[client_id, seq, low, now_ms]`` (``sessions.py``): a write
that carries one takes effect at most once, however often it is retried or
copied; a repeat gets the first application's reply.  Entries written before
sessions existed have no such field and still decode.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from typing import Any

import msgpack

from ..errors import InvalidArgument
from ..keys import MAX_KEY, MAX_VALUE_BYTES
from ..routing.ranges import end_from_wire
from ..storage.leveldb import ShardStore
from . import sessions

REGULAR = b"\x00"  # pysyncobj's _COMMAND_TYPE.REGULAR
MAP_KEY = b"shard_map"
MAX_DELETE_STEP = 10_000
# One log entry's ceiling.  Below the AppendEntries batch size (group.py), so pysyncobj never takes
# its pickled "transmission" path, which our followers refuse: a larger entry would never commit.
MAX_COMMAND_BYTES = 3 << 20
FILTER_WORK_PER_STEP = 1_000_000  # filter nodes x rows one range-delete step may evaluate


def encode(op: list[Any]) -> bytes:
    """The log-entry bytes of a command."""
    return REGULAR + msgpack.packb(op, use_bin_type=True)


Session = list[Any] | None  # [client_id, seq, low, now_ms], see sessions.py


def _with(op: list[Any], session: Session) -> list[Any]:
    # no field at all without a session: the entry is then exactly what it was before sessions
    return op if session is None else [*op, session]


def put(pairs: list[tuple[int, bytes]], session: Session = None) -> bytes:
    """Command putting every ``(key, value)`` pair atomically."""
    return encode(_with(["put", [[k, v] for k, v in pairs]], session))


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


def _key(k: Any) -> int:
    if type(k) is not int or not 0 <= k <= MAX_KEY:
        raise InvalidArgument("bad key in command")
    return k


def decode(payload: bytes) -> list[Any]:
    """Validate and decode a command body (without the type byte)."""
    try:
        op = msgpack.unpackb(payload, raw=False, strict_map_key=True)
    except Exception as exc:
        raise InvalidArgument(f"undecodable command: {exc}") from None
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
        for pair in op[1]:
            if not (isinstance(pair, list) and len(pair) == 2 and isinstance(pair[1], bytes)
                    and len(pair[1]) <= MAX_VALUE_BYTES):
                raise InvalidArgument("malformed put")
            _key(pair[0])
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
    else:
        raise InvalidArgument(f"unknown or malformed command {name!r:.40}")
    return op


_SESSION_AT = {"put": 2, "del": 2, "delr": 5}  # index of the optional session field


def apply(store: ShardStore, index: int, payload: bytes) -> Any:
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
    session = op[-1]
    system: dict[bytes, bytes | None] = {}
    record = None
    if session is not None:
        client_id, seq, low, now_ms = session
        record, touched_before = _session(store, client_id)
        verdict = sessions.decide(record, seq)
        if verdict == sessions.DUPLICATE:
            store.apply(index)
            return record.replies[seq]
        if verdict == sessions.STALE:
            store.apply(index)
            return {"error": "this write is older than what the shard remembers of its client's session: "
                             "this copy was not applied, and whether an earlier one was cannot be told",
                    "outcome_unknown": True}
        if index % sessions.GC_EVERY == 0:
            system.update(_collect_sessions(store, now_ms, index, keep=client_id))
    puts: list[tuple[int, bytes]] = []
    deletes: list[int] = []
    if name == "put":
        puts = [(k, v) for k, v in op[1]]
        reply: Any = None
    elif name == "del":
        deletes = op[1]
        reply = sum(1 for k in deletes if store.get(k) is not None)
    else:
        reply, deletes = _delete_range_step(store, op)
    if record is not None and not (isinstance(reply, dict) and "error" in reply):
        forgotten = record.remember(seq, low, now_ms, reply, index)
        system.update(sessions.writes(client_id, touched_before, record, seq, forgotten))
    try:
        store.apply(index, puts=puts, deletes=deletes, system=system)
    except BaseException:
        _SESSIONS.pop(store, None)  # the cached sessions may be ahead of the store now
        raise
    return reply


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


def _collect_sessions(store: ShardStore, now_ms: int, index: int, keep: bytes) -> dict[bytes, bytes | None]:
    """Deletions of sessions idle past the TTL by the log's clock and by log distance (a batch at most).

    Oldest first by the clock; the first one that is not also far enough behind in the log ends
    the batch (a clock that jumped cannot drop it early; it is collected once the log moves on).
    """
    names = store.system_names(sessions.BY_TIME, sessions.collection_bound(now_ms), sessions.GC_BATCH)
    expired, replies = [], {}
    cache = _SESSIONS.get(store, (None, {}))[1]
    for name, client in zip(names, sessions.expired_clients(names), strict=True):
        if client == keep:
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
    current = msgpack.unpackb(raw, raw=False) if raw else None
    epoch = current["epoch"] if current else 0
    if epoch != expected:
        store.apply(index)
        return epoch
    store.apply_system(index, MAP_KEY, msgpack.packb(new_map, use_bin_type=True))
    return int(new_map.get("epoch", 0))


def stored_map(store: ShardStore) -> dict[str, Any] | None:
    """The shard map held by a meta-group store, or None before bootstrap."""
    raw = store.get_system(MAP_KEY)
    return msgpack.unpackb(raw, raw=False) if raw else None

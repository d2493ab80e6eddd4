"""One Raft group (a shard's replica set, or the meta group) on pysyncobj.

This is the only module that imports pysyncobj.  It closes the library's gaps:

* **Durable log and term/vote** -- ``createJournal`` is swapped for
  :class:`~raftkv.replication.journal.DurableJournal`, whose writes the Raft
  loop fsyncs before releasing any outgoing message.
* **No pickle** -- commands are msgpack (``commands.py``); the method that
  would unpickle a command is replaced; the chunked "transmission" path for
  large entries (pickle, and buggy for binary values over 64 KiB) is never
  used by our leaders (``appendEntriesBatchSizeBytes`` exceeds any entry) and
  is dropped on receipt; snapshots use our own format.
* **Streaming snapshots** -- :class:`SnapshotSerializer` replaces pysyncobj's
  serializer: compaction just makes LevelDB durable and records where the log
  now starts (no dump of the shard); a lagging follower is sent a stream read
  from a LevelDB snapshot, chunk by chunk, with backpressure; the follower
  installs it atomically (see ``storage/leveldb.py``).
* **Multiplexed transport** -- :class:`GroupTransport` plugs the group into
  the node's single :class:`~raftkv.replication.transport.PeerHub`.
* **Membership at apply time, without pickle** -- a change is our own
  ``["conf", ...]`` command (``membership.py``); applying it reshapes
  pysyncobj's voter and read-only (learner) sets.  Learners never campaign
  nor vote; votes from non-voters are not counted.
* **ReadIndex** -- :class:`GroupTransport` stamps every AppendEntries with a
  sequence number that the follower's reply echoes; :meth:`RaftGroup.confirmed`
  tells whether a majority has answered a message sent after a given point,
  which is what a linearizable read waits for (``loop.py``).
"""

from __future__ import annotations

import logging
import os
import queue
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import pysyncobj.syncobj as _syncobj
from pysyncobj import SyncObj, SyncObjConf
from pysyncobj.config import FAIL_REASON, SERIALIZER_STATE
from pysyncobj.node import Node
from pysyncobj.transport import Transport

from ..errors import StorageError
from ..logs import event
from ..protocol.codec import load, pack
from ..storage.leveldb import RaftLogSlot, ShardStore, write_file_atomic
from . import commands, membership, prevote
from .journal import DurableJournal
from .snapshot import encode_stream, entry_tuple, read_stream
from .transport import PeerHub

log = logging.getLogger(__name__)

# pysyncobj builds its journal through this module-level factory; ours is durable.  Where a group
# keeps its log is handed over by journal path, the only thing the factory is given (the path
# itself only names a legacy log file to move into the node's database).
_RAFT_LOGS: dict[str, RaftLogSlot] = {}
_syncobj.createJournal = lambda path: DurableJournal(_RAFT_LOGS.pop(path), legacy_path=path)


class _QuietTruncation(logging.Filter):
    """pysyncobj logs CRITICAL before *every* suffix delete; ours only truncates on conflict."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "truncating already-applied" not in str(record.msg)


logging.getLogger("pysyncobj.syncobj").addFilter(_QuietTruncation())

SNAPSHOT_BACKLOG_LIMIT = 8 * 1024 * 1024
# snapshot bytes one AppendEntries round may encode on the Raft thread: a round used to go on until
# the heartbeat period (100 ms) was spent, and the node's other groups waited for it
SNAPSHOT_ROUND_BYTES = 1024 * 1024
PEER_BACKLOG_LIMIT = 32 * 1024 * 1024
STREAM_PATIENCE = 120.0  # seconds a snapshot transfer may hold off compaction of the leader's log
# A leader's log may grow to this many times ``compact_bytes`` while a connected follower still needs
# entries a compaction would drop (see RaftGroup.maybe_compact)
COMPACT_HOLD_FACTOR = 4
__all__ = ["FAIL_REASON", "GroupTransport", "RaftGroup", "RaftOptions", "SnapshotSerializer"]


NO_OP = b"\x01"  # pysyncobj's _COMMAND_TYPE.NO_OP entry
SNAPSHOT_MARKER = "snap.meta"


def seed_log(directory: str, index: int) -> None:
    """Make a new replica's log start as if compacted at ``index`` (its store holds that state).

    A shard made by a split starts with data but no log.  Its replicas that applied the split
    begin at this point; a replica created empty starts at index 1, below it, so its leader must
    send it a snapshot rather than entries -- an empty replica can never look caught up.
    """
    marker = {"last": [NO_OP, index, 0], "prev": [NO_OP, index - 1, 0]}
    write_file_atomic(os.path.join(directory, SNAPSHOT_MARKER), pack(marker))


class RaftOptions:
    """Timing and compaction settings shared by every group of a node."""

    def __init__(self, heartbeat: float = 0.1, election_min: float = 0.6, election_max: float = 1.2,
                 compact_entries: int = 20000, compact_bytes: int = 16 << 20, compact_seconds: float = 600.0,
                 snapshot_chunk: int = 256 * 1024, balance_leaders: bool = True,
                 lease_reads: bool = True) -> None:
        self.heartbeat = heartbeat
        self.election_min = election_min
        self.election_max = election_max
        self.compact_entries = compact_entries
        self.compact_bytes = compact_bytes
        self.compact_seconds = compact_seconds
        self.snapshot_chunk = snapshot_chunk
        self.balance_leaders = balance_leaders
        self.lease_reads = lease_reads  # see RaftGroup.lease_valid
        if not heartbeat * 3 < election_min <= election_max:
            raise ValueError("need heartbeat * 3 < election_min <= election_max")


class _NoPoller:
    """Stands in for pysyncobj's poller: no socket of a group is ever registered with it."""

    def poll(self, timeout: float) -> None:
        """Nothing to wait for: the node's loop waits for every socket."""

    def subscribe(self, *args: Any) -> None:
        raise AssertionError("a raftkv group has no pysyncobj sockets")

    unsubscribe = subscribe


_NO_POLLER = _NoPoller()


STALE_TERM = "stale_term"  # message type: "your appends carry a term below mine", with our term
# election messages pysyncobj does not know: handled by RaftGroup.on_election_message
_OURS = frozenset({prevote.ASK, prevote.YES, prevote.NO, STALE_TERM})


class GroupTransport(Transport):
    """pysyncobj's transport interface, backed by the node's shared hub."""

    def __init__(self, hub: PeerHub, group_id: str, syncObj: Any, selfNode: Any, otherNodes: Any) -> None:  # noqa: N803
        super().__init__(syncObj, selfNode, otherNodes)
        self.hub = hub
        self.group_id = group_id
        self.nodes = {n.id: n for n in otherNodes}
        self.journal: DurableJournal | None = None
        self.seq = 0  # stamp of the last AppendEntries sent
        self.acked: dict[str, int] = {}  # peer -> highest stamp it answered
        self.sent_at: OrderedDict[int, tuple[float, int]] = OrderedDict()  # stamp -> (when sent, term): leases
        self.acked_at: dict[str, tuple[float, int]] = {}  # peer -> (when the stamp it answered was sent, term)
        self.campaign_transfer = False  # a campaign started by TimeoutNow is under way: mark its votes
        self._echo: int | None = None
        self.quiescing = False  # the AppendEntries being sent tell followers to stop their timers
        self.group: RaftGroup | None = None

    # pysyncobj's Transport interface
    @property
    def ready(self) -> bool:
        return True

    def tryGetReady(self) -> None:  # noqa: N802
        return None

    def waitReady(self) -> None:  # noqa: N802
        return None

    def addNode(self, node: Any) -> None:  # noqa: N802
        self.nodes[node.id] = node

    def dropNode(self, node: Any) -> None:  # noqa: N802
        self.nodes.pop(node.id, None)

    def destroy(self) -> None:
        return None

    def send(self, node: Any, message: dict[str, Any]) -> bool:
        kind = message.get("type")
        if kind == "append_entries" and self.hub.backlog(node.id) > PEER_BACKLOG_LIMIT:
            # The peer is not draining (stalled, or far behind): shed the message rather than queue
            # without bound.  Raft tolerates the loss: the follower's next reply resets nextIndex.
            return False
        if kind == "append_entries":
            self.seq += 1
            now = time.monotonic()
            sent = self.sent_at
            sent[self.seq] = (now, message.get("term", -1))
            # bounded here, not by a periodic sweep that a quiet group would never get: a lease
            # needs only recent stamps, and one answered later than this is simply not counted
            while len(sent) > self.SENT_KEPT or next(iter(sent.values()))[0] < now - self.SENT_SECONDS:
                sent.popitem(last=False)
            message = {**message, "rs": self.seq, **({"rq": True} if self.quiescing else {})}
        elif kind == "request_vote" and self.campaign_transfer:
            message = {**message, "rt": True}  # asked for by the leader: voters need not stick to it
        elif kind == "next_node_idx" and self._echo is not None:
            message = {**message, "ra": self._echo}
        return self.hub.send(node.id, self.group_id, message)

    SENT_KEPT = 1024  # send times of AppendEntries stamps kept for leases, at most ...
    SENT_SECONDS = 5.0  # ... and for this long (a lease is far shorter)

    # Terms a message may jump ahead of ours (PeerHub already bounds them to 2**63-1).  Honest
    # terms grow by one per election; a forged term near the bound would leave every group at a
    # term whose successor no door accepts, leaderless for good.  Dropping a message is always safe.
    MAX_TERM_JUMP = 2**32

    # called by the node's dispatcher on the Raft thread
    def deliver(self, peer_id: str, message: dict[str, Any]) -> None:
        """Hand a peer's message to pysyncobj, keeping the ReadIndex stamps out of its way.

        ``message`` has passed :func:`~raftkv.replication.transport.check_peer_message`.
        """
        node = self.nodes.get(peer_id)
        term = message.get("term")
        group = self.group
        kind = message.get("type")
        if isinstance(term, int) and self.journal is not None and \
                term - self.journal.getCurrentTerm() > self.MAX_TERM_JUMP:
            # the loop logs this as one line per peer per interval
            raise ValueError(f"{kind} with term {term}, more than 2**32 above ours")
        if group is not None and isinstance(term, int) and kind in _OURS:
            group.on_election_message(peer_id, kind, message)
            return
        if node is None and kind == "append_entries" and group is not None and isinstance(term, int) \
                and term >= group.term:
            # Raft answers a leader whatever its own configuration says: a replica that restarts
            # behind the change that added the leader learns of it only from the leader's entries.
            # Dropping them left such a replica (a meta replica, once) campaigning alone for good.
            node = Node(peer_id)
        if node is None or not isinstance(kind, str) or "transmission" in message:
            return  # not a member, or the pickled large-entry path, which we never use
        if message.get("type") == "append_entries" and isinstance(message.get("prevLogIdx"), int):
            # Raft: commitIndex = min(leaderCommit, index of the last *new* entry).  pysyncobj uses
            # its log's end instead, and our journal keeps a matching suffix beyond the message
            # (truncation only on conflict), which may hold stale entries of an older term.
            newest = message["prevLogIdx"] + len(message.get("entries") or ())
            if isinstance(message.get("commit_index"), int) and message["commit_index"] > newest:
                message = {**message, "commit_index": newest}
        if kind == "append_entries" and group is not None and isinstance(term, int) and term < group.term \
                and peer_id in group.peer_ids:
            # a leader of an older term: pysyncobj ignores it silently, and it would go on leading
            # its followers while this replica, whose higher term nobody hears (votes are refused
            # while a leader holds, see sticky), stayed out of the group for good; say our term
            group.send_to(peer_id, {"type": STALE_TERM, "term": group.term})
            return
        if kind in ("request_vote", "response_vote") and group is not None and \
                (peer_id not in group.peer_ids or not group.votes):
            return  # elections are between voters only: learners and removed replicas sit them out
        if group is not None:
            if kind == "request_vote" and message.pop("rt", None) is not True and group.sticky():
                return  # we heard from a live leader lately: see RaftGroup.sticky
            if kind == "append_entries" and isinstance(term, int) and term >= group.term:
                group.heard_at = time.monotonic()
        stamp = message.pop("rs", None)
        answered = message.pop("ra", None)
        quiesce = message.pop("rq", None) is True
        if group is not None and group.serializer.installing and message.get("type") == "append_entries":
            # installing a snapshot (RaftGroup.doTick): the install's own answer tells the leader
            # where to go on from; an answer now would only make it send the snapshot again
            group.busy_at = time.monotonic()
            return
        if group is not None and group.quiesced and not (
                message.get("type") == "next_node_idx" and message.get("success") is True):
            group.wake()  # anything but a follower's "caught up" answer to our last heartbeat
        if isinstance(answered, int) and answered > self.acked.get(peer_id, 0):
            self.acked[peer_id] = answered
            sent = self.sent_at.get(answered)
            if sent is not None:
                self.acked_at[peer_id] = sent
        self._echo = stamp if isinstance(stamp, int) else None
        try:
            self._onMessageReceived(node, message)
        finally:
            self._echo = None
            if self.journal is not None:
                self.journal.end_message()
        if quiesce and group is not None:
            group.follow_quietly(message)

    def link_changed(self, peer_id: str, up: bool) -> None:
        """Tell pysyncobj a peer became reachable or was lost."""
        node = self.nodes.get(peer_id)
        if node is not None:
            (self._onNodeConnected if up else self._onNodeDisconnected)(node)


def _fan_out(callbacks: list[Callable[[Any, int], None]], result: Any, err: int) -> None:
    """Hand each merged put its own reply (``result`` is their list once applied)."""
    each = result if err == FAIL_REASON.SUCCESS and isinstance(result, list) and len(result) == len(callbacks) \
        else [result] * len(callbacks)  # a failure, or an entry refused whole: the same for all
    for cb, r in zip(callbacks, each, strict=True):
        if cb is not None:
            cb(r, err)


class StreamPaused(Exception):
    """A snapshot stream to ``node`` waits: its link's backlog is full, or this round's share is sent."""

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        self.node = node


class SnapshotSerializer:
    """Stands in for pysyncobj's ``Serializer``: compaction marks, streamed transfers, atomic installs."""

    def __init__(self, store: ShardStore, directory: str, hub: PeerHub, chunk_size: int,
                 on_installed: Callable[[], None] | None = None) -> None:
        self._store = store
        self._on_installed = on_installed
        self._meta_path = os.path.join(directory, SNAPSHOT_MARKER)
        self._incoming_path = os.path.join(directory, "snap.incoming")
        self._hub = hub
        self._chunk = chunk_size
        self._result: str | None = None
        self._id = 0
        self._outgoing: dict[Any, tuple[Iterator[bytes], float]] = {}  # node -> (chunks, started)
        self.journal: DurableJournal | None = None
        self._incoming: Any = None
        self.installs = 0
        self.label = os.path.basename(directory)  # the group's id, for log lines
        # for the metrics endpoint: transfers completed and bytes, each way
        self.sent = self.sent_bytes = self.received_bytes = 0
        self._install: _Install | None = None  # the install running in the background, if any
        self.notify: Callable[[], None] = lambda: None  # thread-safe: have the Raft loop tick us
        self.round_bytes = 0  # snapshot bytes encoded in the current AppendEntries round
        self.more_now = False  # a round stopped at its share with the link not full: go on soon

    # -- compaction (leader and followers alike) --
    def checkSerializing(self) -> tuple[int, Any]:  # noqa: N802
        if self._result is None:
            return SERIALIZER_STATE.NOT_SERIALIZING, None
        state = SERIALIZER_STATE.SUCCESS if self._result == "ok" else SERIALIZER_STATE.FAILED
        self._result = None
        return state, self._id

    def serialize(self, data: Any, id: Any) -> None:  # noqa: A002
        """Compact: make the store durable, record the new log start, and drop the log prefix now.

        pysyncobj would drop the prefix only at its next tick; a crash in between left a marker
        the journal did not start with, and pysyncobj then clears the *whole* journal on restart,
        acknowledged entries included.  So the prefix goes here, right after the marker is durable.
        """
        _, last, prev, _cluster = data
        assert self.journal is not None
        if self._outgoing and time.monotonic() - min(t for _, t in self._outgoing.values()) < STREAM_PATIENCE:
            # a follower is being sent a snapshot that starts at the current log start: moving it
            # would restart the transfer, and a big shard under steady writes would never finish
            self._id = self.journal[0][1]  # pysyncobj's deleteEntriesTo(start) is then a no-op
            self._result = "ok"
            return
        self._id = id
        try:
            self._store.make_durable()  # everything applied so far is on disk ...
            self._write_meta(last, prev)  # ... the new log start is recorded ...
            self.journal.compact_to(entry_tuple(prev))  # ... and only then does the prefix go
            self._outgoing.clear()  # transfers in flight started from the old log start
            self._result = "ok"
        except OSError:
            log.exception("compaction failed")
            self._result = "fail"

    def recover_journal(self) -> None:
        """At start-up: finish a compaction that a crash interrupted after its marker was written."""
        if self.journal is not None and os.path.exists(self._meta_path):
            _, prev = self._read_meta()
            self.journal.compact_to(prev)

    def cancel_streams(self) -> None:
        """Forget outgoing transfers (no longer leader): releases their LevelDB snapshots."""
        self._outgoing.clear()

    @property
    def streaming(self) -> bool:
        """Whether a snapshot is being sent to a follower."""
        return bool(self._outgoing)

    def _write_meta(self, last: Any, prev: Any) -> None:
        write_file_atomic(self._meta_path, pack({"last": list(last), "prev": list(prev)}))

    def _read_meta(self) -> tuple[tuple[bytes, int, int], tuple[bytes, int, int]]:
        with open(self._meta_path, "rb") as f:
            meta = load(f.read())
        return entry_tuple(meta["last"]), entry_tuple(meta["prev"])

    def deserialize(self) -> tuple[Any, ...]:
        last, prev = self._read_meta()
        return None, last, prev, ()

    # -- sending a snapshot to a lagging follower --
    def getTransmissionData(self, node: Any) -> Any:  # noqa: N802
        # Not None when the stream must wait: pysyncobj then sends a heartbeat and asks again, in a
        # loop that ends only when the heartbeat period is spent, flooding the follower with
        # heartbeats while the Raft thread serves nothing else.  RaftGroup ends the round instead.
        if self._hub.backlog(node.id) > SNAPSHOT_BACKLOG_LIMIT:
            raise StreamPaused(node)  # the link drains first; the loop's next round goes on
        if self.round_bytes >= SNAPSHOT_ROUND_BYTES:
            self.more_now = True
            raise StreamPaused(node)
        entry = self._outgoing.get(node)
        first = entry is None
        if entry is None:
            if not os.path.exists(self._meta_path):
                # Never compacted: the log still starts at the beginning, so no honest follower
                # needs a snapshot (only a forged next_node_idx asks for one). Nothing to send.
                return None
            last, prev = self._read_meta()
            index, items = self._store.snapshot_items()
            header = {"index": index, "last": list(last), "prev": list(prev)}
            entry = self._outgoing[node] = (encode_stream(header, items, self._chunk), time.monotonic())
        chunk = next(entry[0], None)
        if chunk is None:
            started = self._outgoing.pop(node)[1]
            self.sent += 1
            log.info("%s: sent a snapshot to %s in %.1f s", self.label, node.id, time.monotonic() - started,
                     extra=event("snapshot_sent", shard=self.label, to=node.id))
            return b"", first, True
        self.sent_bytes += len(chunk)
        self.round_bytes += len(chunk)
        return chunk, first, False

    def cancelTransmisstion(self, node: Any) -> None:  # noqa: N802 (sic, pysyncobj's spelling)
        self._outgoing.pop(node, None)

    def drop_streams_unless(self, needed: Callable[[Any], bool]) -> None:
        """Forget the streams to followers that no longer need one.  A stream left behind (its
        leader lost office mid-way, or the follower caught up otherwise) would read as
        :attr:`streaming` for good, and resume mid-way from an old snapshot."""
        for node in [n for n in self._outgoing if not needed(n)]:
            del self._outgoing[node]

    # -- receiving one --
    @property
    def installing(self) -> bool:
        """Whether a received snapshot is being installed (in the background)."""
        return self._install is not None

    def setTransmissionData(self, data: Any) -> bool:  # noqa: N802
        """Take one chunk; on the last, start installing in the background and return False.

        Installing a big snapshot takes seconds of LevelDB writes: on the Raft thread it would
        stall every other group of the node (their heartbeats, their puts, then elections).  The
        group stands still meanwhile (``RaftGroup.doTick``, ``GroupTransport.deliver``), and
        :meth:`finish_install` completes what pysyncobj does when this returns True.
        """
        if self._install is not None:
            return False  # a leader re-sending while we install: ignore it, the install answers
        if not (isinstance(data, (list, tuple)) and len(data) == 3 and isinstance(data[0], bytes)):
            return False
        chunk, first, last = data
        if first:
            if self._incoming is not None:
                self._incoming.close()
            self._incoming = open(self._incoming_path, "wb")  # noqa: SIM115 (spans many calls)
        elif self._incoming is None:
            return False
        self._incoming.write(chunk)
        self.received_bytes += len(chunk)
        if not last:
            return False
        self._incoming.close()
        self._incoming = None
        job = self._install = _Install(self._store, self._incoming_path, self.notify)
        job.start()
        return False

    def finish_install(self) -> bool | None:
        """Raft thread: complete an install that finished in the background.

        None while one runs (or none was started); True once installed, with the compaction
        marker written; False if it was refused (a malformed or truncated stream leaves the old
        state, and the leader sends the snapshot again).
        """
        job = self._install
        if job is None or not job.done.is_set():
            return None
        self._install = None
        if job.header is None:
            return False
        header = job.header
        self._write_meta(entry_tuple(header["last"]), entry_tuple(header["prev"]))
        self.installs += 1
        log.info("%s: installed a snapshot at index %d in %.1f s", self.label, header["index"], job.seconds,
                 extra=event("snapshot_installed", shard=self.label, index=header["index"],
                             bytes=self.received_bytes, seconds=round(job.seconds, 3)))
        if self._on_installed is not None:
            self._on_installed()
        return True

    def abandon_install(self) -> None:
        """Wait for a background install to end (the group is closing)."""
        if self._install is not None:
            self._install.done.wait()


INSTALL_BYTES_PER_S = 48 << 20  # how fast a received snapshot is written into the node's LevelDB


def _paced(items: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
    """``items``, slowed to ``INSTALL_BYTES_PER_S``.

    Every replica of the node shares one LevelDB (and its write-ahead log).  Written as fast as
    Python decodes it, a 200 MB snapshot fills memtables faster than LevelDB flushes them (about
    150 MB/s here), and LevelDB then makes *every* writer wait ("memtable full; waiting"): the
    Raft log flush of every other group on the node, measured as 250-650 ms stalls of the puts
    of the groups it leads.  The install thread also competes for the GIL with the Raft thread;
    at this rate it rests most of the time.  A 200 MB shard takes about 4 s.
    """
    started = time.monotonic()
    written = 0
    for n, item in enumerate(items):
        yield item
        written += len(item[0]) + len(item[1])
        if n & 63 == 63:
            ahead = written / INSTALL_BYTES_PER_S - (time.monotonic() - started)
            if ahead > 0.002:
                time.sleep(ahead)


class _Install(threading.Thread):
    """Reads a received snapshot file into the store, off the Raft thread; deletes the file."""

    def __init__(self, store: ShardStore, path: str, notify: Callable[[], None]) -> None:
        super().__init__(name="snapshot-install", daemon=True)
        self.store, self.path, self.notify = store, path, notify
        self.header: dict[str, Any] | None = None  # set once installed
        self.seconds = 0.0
        self.done = threading.Event()

    def run(self) -> None:
        started = time.monotonic()
        try:
            with open(self.path, "rb") as f:
                header, items = read_stream(f)
                self.store.install(_paced(items), header["index"])
            self.header = header
        except StorageError as exc:  # a malformed or truncated stream: refused, the old state stays
            log.warning("snapshot refused: %s", exc)
        except Exception:
            log.exception("snapshot install failed")
        finally:
            self.seconds = time.monotonic() - started
            try:
                os.unlink(self.path)
            except OSError:
                pass
            self.done.set()
            self.notify()


class RaftGroup(SyncObj):
    """A replica of one Raft group whose state machine is a :class:`ShardStore`."""

    def __init__(self, group_id: str, self_id: str, peer_ids: list[str], store: ShardStore, raft_log: RaftLogSlot,
                 directory: str, hub: PeerHub, options: RaftOptions,
                 on_state: Callable[[str, int, int], None] | None = None,
                 hooks: commands.SplitHooks | None = None, passive: bool = False,
                 on_installed: Callable[[RaftGroup], None] | None = None,
                 learners: list[str] = ()) -> None:
        os.makedirs(directory, exist_ok=True)
        self.group_id = group_id
        self.self_id = self_id
        self.store = store
        self.options = options
        self.hooks = hooks
        # A replica created empty (it missed the split that made its shard) waits for a snapshot
        # from a replica that has the data: until then it never campaigns, so an empty log can
        # never lead and hand out an empty shard.
        self.passive = passive
        self.on_installed = on_installed
        # Quiescence: an idle group's leader stops heartbeating once every follower holds its last
        # entry, and its followers stop their election timers; the loop stops ticking both. Any
        # message, command or read wakes it; so does a leader's node going silent (loop.py).
        self.quiesced = False
        self.busy_at = time.monotonic()
        self.leader_changes = 0  # leaders this replica has seen take over (the metrics endpoint)
        self._seen_leader: Any = None
        conf = SyncObjConf(
            autoTick=False,
            journalFile=os.path.join(directory, "raft.log"),
            fullDumpFile=os.path.join(directory, SNAPSHOT_MARKER),
            serializer=lambda *a: None,  # any non-None: disables fork and the pickled dump path
            deserializer=lambda *a: None,
            appendEntriesUseBatch=True,
            appendEntriesPeriod=options.heartbeat,
            # > MAX_COMMAND_BYTES: pysyncobj never splits an entry into its pickled "transmission" chunks
            appendEntriesBatchSizeBytes=8 << 20,
            raftMinTimeout=options.election_min,
            raftMaxTimeout=options.election_max,
            leaderFallbackTimeout=options.election_min,
            connectionTimeout=max(3.5, options.election_max),  # unused by our transport; pysyncobj checks it
            logCompactionMinEntries=options.compact_entries,
            logCompactionMinTime=options.compact_seconds,
            logCompactionBatchSize=options.snapshot_chunk,
            commandsQueueSize=200_000,
            dynamicMembershipChange=False,
            onStateChanged=(lambda old, new: on_state(group_id, old, new)) if on_state else None,
        )
        # the durable configuration wins over the one this replica was created with: it is what
        # the group's log says, and ``peer_ids`` is only the creation config (map, parent, record)
        self.config = commands.init_config(store, membership.Config.of(peer_ids, learners))
        peers = [p for p in self.config.voters if p != self_id]

        def make_transport(syncobj: Any, self_node: Any, other_nodes: Any) -> GroupTransport:
            return GroupTransport(hub, group_id, syncobj, self_node, other_nodes)

        _RAFT_LOGS[conf.journalFile] = raft_log
        try:
            super().__init__(Node(self_id), [Node(p) for p in peers], conf, transportClass=make_transport)
        finally:
            _RAFT_LOGS.pop(conf.journalFile, None)
        # pysyncobj polls its own poller at the end of every tick; our sockets live in the node's
        # loop, so that poll only cost a system call per group tick
        self._poller = _NO_POLLER
        self.transport: GroupTransport = self._SyncObj__transport
        self.transport.group = self
        self.journal: DurableJournal = self._SyncObj__raftLog
        self.transport.journal = self.journal
        self.serializer = SnapshotSerializer(store, directory, hub, options.snapshot_chunk, self._installed)
        self.serializer.journal = self.journal
        self.serializer.recover_journal()
        self._SyncObj__serializer = self.serializer
        self.peer_ids = peers
        # hand_over in progress: (give up at, hold new appends until, preferred target, only it,
        # TimeoutNow sent)
        self._handing_over: tuple[float, float, str | None, bool, bool] | None = None
        self._appended_at = 0.0  # when we last appended commands as leader: BATCH_WAIT
        # a restarted replica forgets whom it heard from: it sticks to its unknown leader a while
        self.heard_at = time.monotonic()
        self._no_lease_term = -1  # the term in which we sent TimeoutNow: no lease for its rest
        self._prevote: prevote.Round | None = None  # the pre-vote round under way, if any
        self.lease_until = 0.0  # publish_lease: the lease deadline, for the request threads
        self._set_members(self.config)

    # --- the state machine --------------------------------------------------------------------

    def _SyncObj__doApplyCommand(self, command: bytes) -> Any:  # noqa: N802 -- replaces pysyncobj's (pickle)
        if command[:1] != commands.REGULAR:
            return None  # no-op entries (we never create membership or version entries)
        # pysyncobj bumps its applied index only after this returns: this entry's index is one more.
        result = commands.apply(self.store, self.raftLastApplied + 1, command[1:], self.hooks)
        if isinstance(result, dict) and "members" in result:
            self._set_members(membership.Config.from_wire(result["members"]))
        return result

    def _installed(self) -> None:
        self.passive = False
        config = commands.stored_config(self.store)
        if config is not None:  # the snapshot carries the configuration it was taken under
            self._set_members(config)
        if self.on_installed is not None:
            self.on_installed(self)

    def doTick(self, timeToWait: float = 0.0) -> None:  # noqa: N802 -- wraps pysyncobj's
        """One tick; a passive replica's election timer never fires (see ``passive``).

        While a snapshot installs in the background the group stands still: no entries applied
        (they would land on the state being replaced), no campaign (its log is about to be
        replaced too).  Once it is in, this finishes what pysyncobj does after an install: load
        the new log start, and tell the leader where to go on from.
        """
        if self.serializer.installing:
            done = self.serializer.finish_install()
            self._SyncObj__raftElectionDeadline = time.monotonic() + self._SyncObj__generateRaftTimeout()
            if done is None:
                return
            if done:
                self._SyncObj__loadDumpFile(clearJournal=True)
                leader = self._SyncObj__raftLeader
                if leader is not None:
                    self._SyncObj__sendNextNodeIdx(leader, success=True)
        if self.passive or not self.votes or self._change_committed_unapplied():
            # Never campaign as a learner or a removed replica; nor with a committed membership
            # change not yet applied, which may change the majority we would count in (etcd's
            # rule): a node two configurations behind could win with a stale majority.  (Any
            # other committed, unapplied entry is harmless here: blocking on it would also lose
            # a leadership hand-off, whose TimeoutNow arrives with the entries that commit.)
            self._SyncObj__raftElectionDeadline = time.monotonic() + self.options.election_max
        self._hold_for_prevote()
        self.transport.campaign_transfer = self._SyncObj__transferInProgress
        was = self._SyncObj__raftState
        try:
            super().doTick(timeToWait)
        finally:
            self.transport.campaign_transfer = False
        self._try_hand_over()
        if self._SyncObj__raftState == _syncobj._RAFT_STATE.CANDIDATE and was != _syncobj._RAFT_STATE.CANDIDATE:
            log.info("%s: campaigning in term %d", self.group_id, self.term,
                     extra=event("election", shard=self.group_id, term=self.term))
        leader = self._SyncObj__raftLeader
        if leader is not self._seen_leader:  # counted here, not at scrape time, so none is missed
            self._seen_leader = leader
            if leader is not None:
                self.leader_changes += 1
                log.info("%s: %s leads in term %d", self.group_id, leader.id, self.term,
                         extra=event("leader_change", shard=self.group_id, leader=leader.id, term=self.term))

    # --- membership (Raft thread) -------------------------------------------------------------

    @property
    def votes(self) -> bool:
        """Whether this replica is a voter of the group's current configuration."""
        return self.self_id in self.config.voters

    def _set_members(self, config: membership.Config) -> None:
        """Make pysyncobj's voter and learner sets ``config``'s (it takes effect now: applied)."""
        me = self.self_id
        voters = set(config.voters) - {me}
        learners = set(config.learners) - {me}
        others = self._SyncObj__otherNodes
        readonly = self._SyncObj__readonlyNodes
        next_index, match_index = self._SyncObj__raftNextIndex, self._SyncObj__raftMatchIndex
        connected = self._SyncObj__connectedNodes
        known = {n.id: n for n in others | readonly}
        for nid, node in known.items():
            if nid not in voters and nid not in learners:
                next_index.pop(node, None)
                match_index.pop(node, None)
                connected.discard(node)
                self.transport.dropNode(node)
                self.serializer.cancelTransmisstion(node)
        new_voters, new_learners = set(), set()
        last = self._SyncObj__getCurrentLogIndex()
        now = time.monotonic()
        for nid in voters | learners:
            node = known.get(nid)
            if node is None:
                node = Node(nid)
                self.transport.addNode(node)
                next_index[node] = last + 1
                match_index[node] = 0
                self._SyncObj__lastResponseTime[node] = now
                if self.transport.hub.is_up(nid):
                    connected.add(node)
            (new_voters if nid in voters else new_learners).add(node)
        self._SyncObj__otherNodes = new_voters
        self._SyncObj__readonlyNodes = new_learners
        self.peer_ids = sorted(voters)
        self.config = config
        if me not in config.voters and self._isLeader():
            # removed while leading (a change proposed elsewhere, or forced): step down; the
            # voters elect a leader among themselves
            self._SyncObj__raftState = _syncobj._RAFT_STATE.FOLLOWER
            self._SyncObj__raftLeader = None

    def member_change_refusal(self, voters: list[str], learners: list[str]) -> str | None:
        """Why this replica cannot propose changing the configuration now, or None.

        The replicas apply a change only if it is still one safe step from the configuration
        it was decided on (``membership.apply``); these checks keep a leader from proposing
        one that would then be refused, or one that would strand the group.
        """
        if not self.leader_ready:
            return "not the leader (or its term's first entry is not applied yet)"
        if self._change_unapplied():
            return "a configuration change is still being applied; retry"
        if self.self_id not in voters:
            return "the leader cannot remove itself: transfer leadership first"
        why = membership.refusal(self.config, voters, learners)
        if why is not None:
            return why
        added = set(learners) - set(self.config.learners) - set(self.config.voters)
        if added and self._SyncObj__raftLog[0][1] <= 1:
            # a newcomer must start from a snapshot: replaying the log from entry 1 would run
            # commands (splits, sessions) against bounds that are no longer the ones they met.
            # A compaction keeps the entry before the last applied one, so a group that never
            # took a write (two no-ops) first gets one more entry: an empty batch of puts.
            if self.raftLastApplied < 3:
                self.submit(commands.put([]), lambda _result, _err: None)
            self.forceLogCompaction()
            return "preparing a snapshot for the new replica; retry"
        return None

    def _change_unapplied(self, upto: int | None = None) -> bool:
        # one change at a time: none may sit in the log between what is applied and its end
        # (or ``upto``)
        log_ = self._SyncObj__raftLog
        first = log_[0][1]
        last = self.last_index if upto is None else min(upto, self.last_index)
        return any(commands.is_member_change(log_[i - first][0])
                   for i in range(max(first, self.raftLastApplied + 1), last + 1))

    def _change_committed_unapplied(self) -> bool:
        return self.raftCommitIndex > self.raftLastApplied and self._change_unapplied(self.raftCommitIndex)

    def learner_progress(self) -> dict[str, int]:
        """Leader: each learner's match index (how much of our log it holds)."""
        match = self._SyncObj__raftMatchIndex
        return {n.id: match.get(n, 0) for n in self._SyncObj__readonlyNodes}

    @property
    def last_index(self) -> int:
        """The index of the last entry in our log."""
        return self._SyncObj__getCurrentLogIndex()

    def _checkCommandsToApply(self) -> None:  # noqa: N802 -- wraps pysyncobj's (runs inside its tick)
        """Append queued commands if we lead; otherwise fail them -- never forward them.

        pysyncobj hands the commands queued at a replica that is no longer the leader to the new
        leader.  A leader paused (or cut off) with requests in its queue would then, on waking,
        commit them a second time after their clients had retried them elsewhere and moved on --
        an old value reappearing after newer acknowledged writes.  A client that sees NotLeader
        retries with the same session sequence number, which the state machine deduplicates.
        """
        if not self._isLeader():
            waiting = self._SyncObj__commandsQueue
            while True:
                try:
                    _command, callback = waiting.get_nowait()
                except queue.Empty:
                    break
                if callable(callback):
                    callback(None, FAIL_REASON.NOT_LEADER)
            return
        if self._holding_appends():
            return  # a hand-over waits for its target to catch up: see hand_over
        if self.raftCommitIndex < self.last_index and time.monotonic() - self._appended_at < self.BATCH_WAIT:
            return  # the last batch is still on its way to a majority: see BATCH_WAIT
        if self._append_queued():
            self._appended_at = time.monotonic()

    def _append_queued(self) -> bool:
        """Leader: append the queued commands to the log; whether any were.

        Runs of puts become one entry (``commands.merge_puts``): each entry costs every replica
        a journal write, a place in AppendEntries and an apply of its own, so many concurrent
        writers cost about what one batch does.  Every other command keeps an entry to itself,
        in queue order.  (pysyncobj's own version also serves commands forwarded by followers;
        ours never forward, and the transport drops such messages.)
        """
        waiting = self._SyncObj__commandsQueue
        log_ = self._SyncObj__raftLog
        subscribers = self._SyncObj__commandsWaitingCommit
        term = self._SyncObj__raftCurrentTerm
        appended = False
        run: list[tuple[bytes, Any]] = []
        run_bytes = 0

        def append(command: bytes, callback: Any) -> None:
            idx = self.last_index + 1
            log_.add(command, idx, term)
            if callback is not None:
                subscribers[idx].append((term, callback))

        def flush() -> None:
            if len(run) == 1:
                append(*run[0])
            elif run:
                callbacks = [cb for _, cb in run]
                append(commands.merge_puts([c for c, _ in run]), lambda res, err: _fan_out(callbacks, res, err))
            run.clear()

        for _ in range(self.MAX_APPEND_PER_TICK):
            try:
                command, callback = waiting.get_nowait()
            except queue.Empty:
                break
            appended = True
            if not callable(callback) and callback is not None:
                continue  # a forwarded command's (node, id): never ours, see above
            if isinstance(command, bytes) and commands.is_put(command):
                if len(run) >= commands.MAX_MERGED or run_bytes + len(command) > self.MERGE_BYTES:
                    flush()
                    run_bytes = 0
                run.append((command, callback))
                run_bytes += len(command)
                continue
            flush()
            run_bytes = 0
            append(command, callback)
        flush()
        return appended

    # --- what the loop and the server ask ---------------------------------------------------

    def submit(self, command: bytes, callback: Callable[[Any, int], None]) -> None:
        """Queue a command (thread-safe); ``callback(result, error_code)`` runs on the Raft thread."""
        self._applyCommand(command, callback)

    @property
    def is_leader(self) -> bool:
        """Whether this replica currently believes it leads (reads still need :meth:`confirmed`)."""
        return self._isLeader()

    @property
    def commits_alone(self) -> bool:
        """Leader with uncommitted entries and no other voter: its own durable copy is the majority,
        so its next tick commits them, with no follower's reply to prompt that tick."""
        return self._isLeader() and not self._SyncObj__otherNodes and self.raftCommitIndex < self.last_index

    @property
    def leader_id(self) -> str | None:
        """The last known leader's node id."""
        leader = self._getLeader()
        return None if leader is None else leader.id

    @property
    def term(self) -> int:
        """Current Raft term."""
        return self._SyncObj__raftCurrentTerm

    @property
    def leader_ready(self) -> bool:
        """Leader whose term's no-op entry is applied: its state includes every committed write."""
        noop = self._SyncObj__noopIDx
        return self._isLeader() and noop is not None and self.raftLastApplied >= noop

    def confirmed(self, stamp: int) -> bool:
        """Whether a majority (counting us) answered AppendEntries stamped ``stamp`` or later."""
        votes = 1 + sum(1 for p in self.peer_ids if self.transport.acked.get(p, 0) >= stamp)
        return votes * 2 > len(self.peer_ids) + 1

    def send_now(self) -> None:
        """Send AppendEntries to every follower now, instead of at the next heartbeat."""
        self._SyncObj__sendAppendEntries()

    def _SyncObj__sendAppendEntries(self) -> None:  # noqa: N802 -- wraps pysyncobj's
        """pysyncobj's round of AppendEntries, except that a snapshot stream that must wait
        (:class:`StreamPaused`) ends the round for its follower, and the others are still served.
        pysyncobj would spin on it until the heartbeat period was spent."""
        serializer = self.serializer
        serializer.round_bytes = 0
        serializer.more_now = False
        voters, learners = self._SyncObj__otherNodes, self._SyncObj__readonlyNodes
        if serializer.streaming:
            # pysyncobj streams to a follower exactly while its next index is not past the log's start
            start, next_index = self._SyncObj__raftLog[0][1], self._SyncObj__raftNextIndex
            serializer.drop_streams_unless(
                lambda n: (n in voters or n in learners) and next_index.get(n, start + 1) <= start)
        waiting: set[Any] = set()
        try:
            while True:
                try:
                    # a retry serves again the followers served before the pause: one more
                    # heartbeat to each, from the next index pysyncobj already advanced
                    return super()._SyncObj__sendAppendEntries()
                except StreamPaused as paused:
                    waiting.add(paused.node)
                    self._SyncObj__otherNodes = voters - waiting
                    self._SyncObj__readonlyNodes = learners - waiting
        finally:
            if waiting:
                self._SyncObj__otherNodes, self._SyncObj__readonlyNodes = voters, learners

    # --- quiescence (Raft thread) ---------------------------------------------------------------

    def can_quiesce(self, now: float, idle: float) -> bool:
        """Leader, idle for ``idle`` seconds, everything committed and applied, every follower
        holding the last entry, nothing queued or streaming: it may stop heartbeating."""
        if self.quiesced or not self.leader_ready or now - self.busy_at < idle:
            return False
        last = self._SyncObj__getCurrentLogIndex()
        if self.raftCommitIndex != last or self.raftLastApplied != last or self.journal.dirty:
            return False
        match = self._SyncObj__raftMatchIndex
        if any(match.get(node, 0) != last for node in self._SyncObj__otherNodes | self._SyncObj__readonlyNodes):
            return False
        return not self._SyncObj__commandsQueue._FastQueue__queue and not self.serializer.streaming

    def quiesce(self) -> None:
        """Send the heartbeat that quiesces the followers, and stop (the loop skips us from now)."""
        self.transport.quiescing = True
        try:
            self.send_now()
        finally:
            self.transport.quiescing = False
        self.quiesced = True

    def follow_quietly(self, message: dict[str, Any]) -> None:
        """Follower, told by the leader's heartbeat that the group is idle: quiesce if caught up."""
        if not self.is_leader and self.leader_id is not None and \
                self._SyncObj__getCurrentLogIndex() == message.get("commit_index") == self.raftCommitIndex:
            self.quiesced = True

    def wake(self) -> None:
        """Resume ticking.  Timers restart rather than fire at once: a leader does not step down
        for followers it has not heard from while quiet, a follower waits a full election
        timeout for the leader's next heartbeat before it campaigns."""
        now = time.monotonic()
        self.busy_at = now
        if not self.quiesced:
            return
        self.quiesced = False
        if self._isLeader():
            heard = self._SyncObj__lastResponseTime
            for node in self._SyncObj__otherNodes:
                heard[node] = now
        else:
            self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()

    HAND_OVER_SECONDS = 2.0
    # A leader appends the commands that arrived while its last batch was on its way to a
    # majority only once that batch commits (or after this long): one batch per round trip.
    BATCH_WAIT = 0.005
    # commands appended per tick (the rest wait for the next: other groups get their turn), and
    # the bytes of puts merged into one entry (well below commands.MAX_COMMAND_BYTES)
    MAX_APPEND_PER_TICK = 4096
    MERGE_BYTES = 1 << 20
    # how long a hand-over may hold back new entries: long enough for the target to catch up in
    # a round trip or two, short enough that a target that cannot is a brief stall only
    HOLD_APPENDS_SECONDS = 0.5

    def hand_over(self, preferred: str | None = None, only: bool = False) -> None:
        """Hand leadership away: at the first tick, within ``HAND_OVER_SECONDS``, at which a
        voter holds our whole log -- ``preferred`` if it is one, and no one else if ``only``.

        pysyncobj sends TimeoutNow only to a target whose match index equals our last index at
        that very moment; a group that keeps taking writes is never caught up at that instant
        (least of all when its target is slow), so we keep asking each tick and, as etcd does
        during a transfer, stop appending new commands for up to ``HOLD_APPENDS_SECONDS`` so
        the target can catch up -- and again for as long once TimeoutNow is sent, or the
        entries appended meanwhile would make our log longer than the target's and we would
        refuse it our vote.  The held commands are appended if the hand-over fails, and
        answered NotLeader (their clients retry at the new leader) if it succeeds.
        """
        now = time.monotonic()
        self._handing_over = (now + self.HAND_OVER_SECONDS, now + self.HOLD_APPENDS_SECONDS, preferred, only,
                              False)
        self._try_hand_over()

    def _try_hand_over(self) -> None:
        if self._handing_over is None:
            return
        until, hold, preferred, only, sent = self._handing_over
        now = time.monotonic()
        if not self._isLeader() or now > until or (sent and now > hold):
            self._handing_over = None
            return
        if sent:
            return  # the target is campaigning: keep our log as it is until it wins, or the hold ends
        match, last = self._SyncObj__raftMatchIndex, self.last_index
        connected = self._SyncObj__connectedNodes
        ready = sorted((n for n in self._SyncObj__otherNodes if n in connected and match.get(n, 0) == last
                        and (not only or n.id == preferred)),
                       key=lambda n: (n.id != preferred, n.id))
        if ready:
            self._handing_over = (until, now + self.HOLD_APPENDS_SECONDS, preferred, only, True)
            self.transferLeadership(ready[0])

    def _holding_appends(self) -> bool:
        return self._handing_over is not None and time.monotonic() < self._handing_over[1]

    def transferLeadership(self, node: Any = None, callback: Any = None) -> None:  # noqa: N802 -- pysyncobj's
        """pysyncobj's TimeoutNow, after which this term's lease is void: the target campaigns with
        votes that ignore stickiness (see :meth:`sticky`), possibly long after we sent it."""
        self._no_lease_term = self.term
        self.lease_until = 0.0
        super().transferLeadership(node, callback)

    # --- leases (Raft thread) -----------------------------------------------------------------

    # The share of the election timeout a lease lasts: what is left covers the clock-rate
    # difference between leader and followers (monotonic clocks; far more than any real drift).
    LEASE_FRACTION = 0.8

    def lease_deadline(self) -> float:
        """Until when (``time.monotonic()``) no other leader can exist, so a read may be served
        without a round trip; 0.0 when we hold no lease.

        A majority of voters (counting us) answered AppendEntries that we sent at or after
        ``start`` in this term, and each of them refuses to vote for anyone else for
        ``election_min`` after receiving it (:meth:`sticky`), so no leader can be elected before
        ``start + election_min`` by their clocks; we stop at ``LEASE_FRACTION`` of that by ours.
        Assumption: clock *rates* differ by less than 1 - LEASE_FRACTION; a pause (SIGSTOP, a
        long GC) is harmless, since a monotonic clock keeps running through it.  None after we
        sent TimeoutNow in this term, nor before our term's no-op is applied.
        """
        if not self.options.lease_reads or not self.leader_ready or self._no_lease_term == self.term:
            return 0.0
        term = self.term
        sends = sorted((sent[0] for p in self.peer_ids
                        if (sent := self.transport.acked_at.get(p)) is not None and sent[1] == term), reverse=True)
        need = (len(self.peer_ids) + 1) // 2  # answers besides ours that make a majority
        if need == 0:
            return float("inf")  # a group of one
        if len(sends) < need:
            return 0.0
        return sends[need - 1] + self.options.election_min * self.LEASE_FRACTION

    def lease_valid(self, now: float | None = None) -> bool:
        """Whether our lease holds now (:meth:`lease_deadline`)."""
        return (time.monotonic() if now is None else now) < self.lease_deadline()

    def publish_lease(self) -> None:
        """Raft thread, after each tick: make :meth:`lease_deadline` readable by other threads
        as :attr:`lease_until` (a float: read and written whole)."""
        self.lease_until = self.lease_deadline() if self._isLeader() else 0.0

    def sticky(self) -> bool:
        """Refuse a vote: as a follower, we heard from the current leader less than
        ``election_min`` ago; as a leader, our lease holds.  etcd's CheckQuorum "in lease" rule:
        it is what makes a leader's lease sound, and it keeps a node that was cut off from
        unseating a working leader when it comes back.  A campaign asked for by the leader
        (TimeoutNow) is exempt; so a leader that sent one gives up its lease for the term."""
        if self._isLeader():
            return self.lease_valid()
        return self._getLeader() is not None and time.monotonic() - self.heard_at < self.options.election_min

    # --- pre-vote and stale terms (prevote.py) ------------------------------------------------

    def send_to(self, peer_id: str, message: dict[str, Any]) -> None:
        """Send ``message`` to ``peer_id``, a member or not (answers to whoever asked)."""
        self.transport.send(self.transport.nodes.get(peer_id) or Node(peer_id), message)

    def _last_log(self) -> tuple[int, int]:
        return self._SyncObj__getCurrentLogTerm(), self._SyncObj__getCurrentLogIndex()

    def on_election_message(self, peer_id: str, kind: str, message: dict[str, Any]) -> None:
        """A pre-vote ask or answer, or a follower saying our appends carry a stale term."""
        term = message["term"]
        leader = self._isLeader()
        if kind == prevote.ASK:
            if not self.votes or peer_id not in self.peer_ids:
                return  # elections are between voters only
            theirs = (message["last_log_term"], message["last_log_index"])
            if prevote.grants(self.term, self._last_log(), self.sticky(), term, theirs):
                self.send_to(peer_id, {"type": prevote.YES, "term": term})
            elif term <= self.term:
                self.send_to(peer_id, {"type": prevote.NO, "term": self.term})
        elif kind == prevote.YES:
            r = self._prevote
            if r is not None and not leader and r.term == self.term + 1:  # not a round overtaken
                r.answer(peer_id, term)
                if r.won and self.sticky():
                    # We heard from a live leader since the round began (its answers came late):
                    # the round is stale.  Campaigning on it would unseat, within election_min of
                    # our last answer to it, a leader whose lease counts that answer.
                    self._prevote = None
                elif r.won:
                    self._SyncObj__raftElectionDeadline = 0.0  # campaign at the next tick
        elif term > self.term and peer_id in self.peer_ids and \
                (kind == STALE_TERM or not (leader or self.sticky())):
            # A voter's term is ahead of ours: catch up (Raft's rule for any higher term).  A
            # leader told so by a follower steps down: the follower ignores its appends, and
            # one election at the higher term brings it back (etcd does the same).  A follower
            # that heard a live leader lately keeps its term, as it refuses votes (etcd's rule
            # for a server in lease): catching up would drop its leader, and with it the
            # stickiness that the leader's lease counts on.
            log.info("%s: %s is at term %d, above ours (%d)%s", self.group_id, peer_id, term, self.term,
                     ": stepping down" if leader else "")
            self._SyncObj__setCurrentTerm(term, None)
            self._SyncObj__setState(_syncobj._RAFT_STATE.FOLLOWER)
            self._SyncObj__raftLeader = None
            self._prevote = None

    def _hold_for_prevote(self) -> None:
        """Let pysyncobj campaign only once a pre-vote round is won; a campaign asked for by the
        leader (TimeoutNow) needs none.  Called before each tick: pysyncobj campaigns in its tick
        when the election deadline has passed, so holding means pushing the deadline on."""
        if self._isLeader() or self._SyncObj__transferInProgress:
            self._prevote = None
            return
        now = time.monotonic()
        if self._SyncObj__raftElectionDeadline >= now:
            return
        r = self._prevote
        if r is not None and r.won and r.term == self.term + 1:
            self._prevote = None  # this campaign is the one the round allowed
            return
        r = prevote.Round(self.term + 1, frozenset(self.config.voters), self.self_id, now)
        if r.won:
            return  # the only voter: nobody to ask
        self._prevote = r
        self._SyncObj__raftElectionDeadline = now + self._SyncObj__generateRaftTimeout()
        last_term, last_index = self._last_log()
        ask = {"type": prevote.ASK, "term": r.term, "last_log_index": last_index, "last_log_term": last_term}
        for peer in self.peer_ids:
            self.send_to(peer, ask)

    def transfer_to(self, node_id: str) -> None:
        """Hand leadership to ``node_id`` (Raft TimeoutNow) once it holds our whole log, within
        ``HAND_OVER_SECONDS``: see :meth:`hand_over`."""
        self.hand_over(node_id, only=True)

    def maybe_compact(self) -> None:
        """Periodic upkeep: compact when the in-RAM log outgrows its byte budget (pysyncobj only
        counts entries); drop snapshot transfers a former leader still holds."""
        size = self.journal.size_bytes
        if size > self.options.compact_bytes and not (
                size <= COMPACT_HOLD_FACTOR * self.options.compact_bytes and self._follower_needs_log()):
            self.forceLogCompaction()
        if not self.is_leader:
            self.serializer.cancel_streams()

    def _follower_needs_log(self) -> bool:
        """Leader: whether a connected follower holds our log's start but not yet what a compaction now
        would keep (from the entry before the last applied one).  Compacting would then cost it a
        snapshot of the whole shard where it lacked a few entries: with 1 MiB values a 16 MiB log
        is 16 writes, and a follower a few writes behind was sent 175 MB of snapshots in 120 MiB of
        writes (TiKV's raft log GC waits for the peers' matched index too, up to size limits)."""
        if not self.is_leader or not len(self.journal):
            return False
        match, connected = self._SyncObj__raftMatchIndex, self._SyncObj__connectedNodes
        start, keep_from = self.journal[0][1], self.raftLastApplied - 1
        return any(start <= match.get(n, 0) < keep_from
                   for n in self._SyncObj__otherNodes | self._SyncObj__readonlyNodes if n in connected)

    def close(self) -> None:
        """Stop the group and flush its journal (the store is closed by its owner)."""
        self._SyncObj__destroying = True
        self.serializer.abandon_install()  # the store must not be written after its owner closes it
        try:
            self.journal.sync()
        finally:
            self.journal._destroy()

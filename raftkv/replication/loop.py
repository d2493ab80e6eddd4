"""The Raft loop: one thread that drives every Raft group of a node.

Each iteration, in this order (the order *is* the durability argument):

1. wait for socket events, a wake-up from another thread, or the next tick;
2. read peer messages and hand them to their groups (replies are only staged);
3. run calls queued by other threads (new commands, read requests);
4. tick the groups that have work (all of them every ``TICK`` seconds):
   pysyncobj commits, applies, calls back, appends queued commands;
5. leaders that appended entries, or owe a ReadIndex heartbeat, send now
   rather than at the next heartbeat (so a lone write does not wait ~100 ms);
6. answer reads whose ReadIndex round has completed;
7. release leaders' AppendEntries: the leader's own copy counts toward a
   commit only at its next tick, after step 8, so replication may overlap its
   disk write (Raft thesis 10.2.1);
8. **fsync every journal that changed** -- one fdatasync per group per
   iteration, shared by every write that arrived in it (group commit); a
   leader with no other voter is ticked again at once, since no reply will
   come to prompt the tick that commits its own durable entries;
9. only then release everything else: AppendEntries replies, votes, vote
   requests -- every message that promises something about this node's disk.

Ticking only the groups with work keeps idle groups cheap, and one peer
socket per node pair instead of one per group keeps the poller small.  A group
idle for ``QUIESCE_AFTER`` goes quiet (``RaftGroup.quiesce``): its leader sends
one last heartbeat that tells the followers to stop their election timers, and
the loop stops ticking it on every node, so a thousand idle groups cost almost
nothing.  A message, a command or a read wakes it; so does the hub seeing the
leader's node fall silent (its pings stop), which stands in for the heartbeats
the group no longer sends.
"""

from __future__ import annotations

import collections
import logging
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

from ..errors import NotLeader, Timeout
from ..logs import LogLimiter
from .group import RaftGroup
from .transport import PeerHub

log = logging.getLogger(__name__)

TICK = 0.05  # periodic tick of every group: timers only; commits, applies and reads are event-driven
QUIESCE_AFTER = 2.0  # seconds without new entries, commands or reads before an idle group goes quiet
# a quiet follower whose leader's node sent nothing (not even the hub's pings) for this long wakes
# and, hearing nothing more, campaigns after its election timeout
PEER_SILENT = 1.5
ReadCallback = Callable[[Exception | None], None]
# the phases of an iteration whose CPU the loop counts (RaftLoop.cpu_seconds)
LOOP_PHASES = ("receive", "calls", "tick", "reads", "replicate", "durable", "release")
# one iteration in this many is timed (a thread CPU clock read is a system call, ~0.6 us, and a
# light iteration takes ~50 us): the sums are scaled back up when read
LOOP_SAMPLE = 8


def _no_clock() -> float:
    return 0.0


class _PendingRead:
    __slots__ = ("stamp", "commit", "term", "callback", "deadline")

    def __init__(self, stamp: int, commit: int, term: int, callback: ReadCallback, deadline: float) -> None:
        self.stamp, self.commit, self.term = stamp, commit, term
        self.callback, self.deadline = callback, deadline


class RaftLoop:
    """Owns the selector, the peer hub and the groups; everything here runs on one thread."""

    def __init__(self, self_id: str, peer_bind: tuple[str, int], peers: dict[str, tuple[str, int]],
                 secret: bytes | None = None) -> None:
        self.self_id = self_id
        self.selector = selectors.DefaultSelector()
        self.hub = PeerHub(self_id, peer_bind, peers, self.selector, self._deliver, self._link_changed, secret)
        self.groups: dict[str, RaftGroup] = {}
        self._calls: collections.deque[Callable[[], None]] = collections.deque()
        self._active: set[str] = set()
        self._reads: dict[str, list[_PendingRead]] = {}
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self._wake_pending = False
        self.selector.register(self._wake_r, selectors.EVENT_READ, self._on_wake)
        self._after: list[Callable[[], None]] = []
        self._durable: list[Callable[[], int]] = []
        self._periodic: list[Callable[[], None]] = []
        self._stop = False
        self._thread: threading.Thread | None = None
        self.iterations = 0
        self.fsyncs = 0
        self.fsync_seconds = 0.0  # time the loop waited for its durable flushes
        # the loop thread's CPU seconds per phase (thread_time: user and system, so a flush's kernel
        # work counts, its wait for the disk does not): where a saturated node's CPU goes
        self._cpu_sampled: dict[str, float] = dict.fromkeys(LOOP_PHASES, 0.0)
        self._complaints = LogLimiter(log)

    # --- setup (before start) ----------------------------------------------------------------

    def add_group(self, group: RaftGroup) -> None:
        """Drive ``group`` from this loop."""
        self.groups[group.group_id] = group
        group.serializer.notify = lambda gid=group.group_id: self.poke(gid)  # a background install ended
        for peer in self.hub.up_peers():
            group.transport.link_changed(peer, True)

    def remove_group(self, group_id: str) -> RaftGroup | None:
        """Stop driving ``group_id`` and close it (loop thread); reads waiting on it fail."""
        g = self.groups.pop(group_id, None)
        if g is None:
            return None
        self._active.discard(group_id)
        for r in self._reads.pop(group_id, ()):
            r.callback(NotLeader(f"shard {group_id}: this replica was removed from the node", leader=None))
        g.close()
        return g

    @property
    def cpu_seconds(self) -> dict[str, float]:
        """The loop thread's CPU seconds by phase of the iteration, estimated from the timed ones."""
        return {phase: seconds * LOOP_SAMPLE for phase, seconds in self._cpu_sampled.items()}

    def before_release(self, fn: Callable[[], int]) -> None:
        """Run ``fn`` after the journals' syncs and before any held message leaves: it makes
        durable what the journals staged (``NodeStore.flush_durable``: every group's entries,
        truncations, terms and votes in one synced write) and returns how many keys it wrote.
        A failure stops the node: after a failed fsync nothing may be acknowledged."""
        self._durable.append(fn)

    def after_iteration(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` at the end of every iteration, after messages are released (on the loop thread)."""
        self._after.append(fn)

    def every_tick(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` once per tick period (on the loop thread)."""
        self._periodic.append(fn)

    def start(self) -> None:
        """Start the loop thread."""
        self._thread = threading.Thread(target=self._run, name="raft-loop", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread, fsync and close every group."""
        self._stop = True
        self.wake()
        if self._thread is not None:
            self._thread.join(timeout=10)
        for g in self.groups.values():
            g.close()
        self.hub.close()

    # --- thread-safe entry points ------------------------------------------------------------

    def call_soon(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the loop thread at the next iteration (thread-safe)."""
        self._calls.append(fn)
        self.wake()

    def set_peers(self, peers: dict[str, tuple[str, int]]) -> None:
        """Make ``peers`` (id -> dial address) the node's peers (thread-safe): nodes join and leave."""
        self.call_soon(lambda: self.hub.set_peers(peers))

    def poke(self, group_id: str) -> None:
        """Make sure ``group_id`` is ticked soon (thread-safe), e.g. after :meth:`RaftGroup.submit`."""
        self.call_soon(lambda: self._touch(group_id))

    def _touch(self, group_id: str) -> None:
        g = self.groups.get(group_id)
        if g is not None:
            g.wake()
            self._active.add(group_id)

    def wake(self) -> None:
        """Interrupt the loop's wait (thread-safe, coalesced)."""
        if not self._wake_pending:
            self._wake_pending = True
            try:
                self._wake_w.send(b"x")
            except (BlockingIOError, OSError):
                pass

    def read_index(self, group_id: str, callback: ReadCallback, timeout: float) -> None:
        """Call ``callback(None)`` once a local read of the group is linearizable (thread-safe).

        ReadIndex: we must still lead *after* the read arrived -- a majority must
        answer a heartbeat sent after it -- and our state must include every entry
        committed when it arrived.  ``callback(err)`` on NotLeader or timeout.
        """
        self.call_soon(lambda: self._register_read(group_id, callback, timeout))

    # --- the loop -----------------------------------------------------------------------------

    def _on_wake(self, mask: int) -> None:
        # Drain first, then clear the flag: clearing first lets a concurrent wake() write a byte
        # that this drain swallows while the flag stays set, silencing every later wake-up.
        try:
            while self._wake_r.recv(4096):
                pass
        except (BlockingIOError, OSError):
            pass
        self._wake_pending = False

    def _deliver(self, peer_id: str, group_id: str, message: dict[str, Any]) -> None:
        group = self.groups.get(group_id)
        if group is None:
            return
        was_quiet = group.quiesced
        try:
            group.transport.deliver(peer_id, message)
        except Exception as exc:
            # PeerHub checks every message's shape first, so this is a gap in that check or a
            # pysyncobj bug: one line per peer per interval (a peer may repeat it per packet);
            # the traceback only at debug level
            self._complaints.log(f"peer {peer_id}", logging.WARNING,
                                 "group %s: message from %s dropped: %s: %s", group_id, peer_id,
                                 type(exc).__name__, str(exc)[:200])
            log.debug("group %s: message from %s dropped", group_id, peer_id, exc_info=True)
        if not (was_quiet and group.quiesced):
            # A quiet group that the message did not wake (a follower's "caught up", or anything
            # from a node that is no longer a member) must not be ticked: its timers stood still
            # while it was quiet, and one tick would make its leader step down for followers it
            # has not heard from, or its follower campaign.
            self._active.add(group_id)

    def _link_changed(self, peer_id: str, up: bool) -> None:
        log.info("peer %s link %s", peer_id, "up" if up else "down")
        for g in list(self.groups.values()):
            g.transport.link_changed(peer_id, up)
            if peer_id in g.peer_ids:
                g.wake()  # a peer came back (it must hear its leader) or went away (we may lead now)

    def _register_read(self, group_id: str, callback: ReadCallback, timeout: float) -> None:
        g = self.groups[group_id]
        g.wake()
        if not g.is_leader:
            callback(NotLeader(f"shard {group_id}: this replica is not the leader", leader=g.leader_id))
            return
        read = _PendingRead(g.transport.seq + 1, g.raftCommitIndex, g.term, callback, time.monotonic() + timeout)
        self._reads.setdefault(group_id, []).append(read)
        self._active.add(group_id)  # tick it now: its leader sends the confirming heartbeat this iteration

    def _run(self) -> None:
        next_tick = 0.0
        cpu = self._cpu_sampled
        while not self._stop:
            clock = time.thread_time if self.iterations % LOOP_SAMPLE == 0 else _no_clock
            try:
                timeout = 0.0 if (self._calls or self._active) else max(0.0, next_tick - time.monotonic())
                events = self.selector.select(timeout)
                t0 = clock()
                for key, mask in events:
                    self._dispatch(key.data, mask)
                t1 = clock()
                cpu["receive"] += t1 - t0
                while self._calls:
                    self._calls.popleft()()
                t0 = clock()
                cpu["calls"] += t0 - t1
                now = time.monotonic()
                periodic = now >= next_tick
                if periodic:
                    next_tick = now + TICK
                    self.hub.maintain(now)
                    for fn in self._periodic:
                        fn()
                    self._wake_orphans(now)
                    ticking = [g for g in list(self.groups.values())
                               if not g.quiesced or g.group_id in self._active]
                else:
                    ticking = [self.groups[g] for g in self._active if g in self.groups]
                self._active.clear()
                for g in ticking:
                    before = len(g.journal)
                    g.doTick(0.0)
                    if len(g.journal) != before:
                        g.busy_at = now
                    if g.is_leader and (len(g.journal) != before or self._owes_heartbeat(g)
                                        or g.serializer.streaming):
                        g.send_now()  # a snapshot stream goes on in shares, between other work
                    if g.serializer.more_now:
                        self._active.add(g.group_id)
                    g.publish_lease()
                    if periodic:
                        g.maybe_compact()
                        if g.group_id not in self._reads and g.can_quiesce(now, QUIESCE_AFTER):
                            g.quiesce()
                t1 = clock()
                cpu["tick"] += t1 - t0
                self._serve_reads()
                t0 = clock()
                cpu["reads"] += t0 - t1
                self.hub.release_early()  # leaders replicate while their own disk write runs
                t1 = clock()
                cpu["replicate"] += t1 - t0
                for g in self.groups.values():
                    if g.journal.dirty:
                        self._sync_or_die(g)
                        if g.commits_alone:
                            # no reply will come to tick it: tick now, not at the next period (a
                            # one-replica group's every write waited up to TICK, 50 ms)
                            self._active.add(g.group_id)
                for fn in self._durable:
                    self._durable_or_die(fn)
                t0 = clock()
                cpu["durable"] += t0 - t1
                self.hub.release()
                for fn in self._after:
                    fn()
                cpu["release"] += clock() - t0
                self.iterations += 1
            except Exception as exc:
                # a failure that repeats every iteration must not flood the log: one traceback per
                # interval, with the count of the ones suppressed
                self._complaints.log(f"iteration {type(exc).__name__}", logging.ERROR,
                                     "raft loop iteration failed", exc_info=True)
                time.sleep(0.01)

    def _wake_orphans(self, now: float) -> None:
        """Wake quiet followers whose leader's node went silent: the pings that stand in for its
        heartbeats stopped, so it may be dead, paused or cut off, and someone must campaign."""
        for g in list(self.groups.values()):
            if g.quiesced and not g.is_leader:
                leader = g.leader_id
                if leader is None or self.hub.silent_for(leader, now) > PEER_SILENT:
                    g.wake()

    def _dispatch(self, callback: Callable[[int], None], mask: int) -> None:
        """Run one socket event's handler; its failure must not cost the iteration its ticks and fsyncs."""
        try:
            callback(mask)
        except Exception as exc:
            self._complaints.log(f"event {type(exc).__name__}", logging.ERROR,
                                 "raft loop: socket event handler failed", exc_info=True)

    def _sync_or_die(self, g: RaftGroup) -> None:
        """Stage a journal's changes for the node's flush; if that fails, stop the process before
        anything is acknowledged.

        After a failed fsync the kernel may have dropped the dirty pages, so neither a retry nor
        carrying on is safe (the PostgreSQL "fsyncgate" lesson); etcd panics here too.

        Any other exception means the journal cannot serialise the state it holds (say, a term
        that does not fit in 64 bits).  That is a bug -- PeerHub refuses such numbers at the door --
        and retrying cannot help: the same state fails the same way every iteration, and since
        nothing may leave before the sync, the node would spin forever, silent to its peers and
        with every client request timing out.  The disk still holds the last state that did
        serialise, and no message promised anything beyond it, so stopping loudly is safe and a
        restart recovers.
        """
        try:
            g.journal.sync()
        except OSError:
            log.critical("group %s: journal write failed; stopping the node", g.group_id, exc_info=True)
            logging.shutdown()
            os._exit(70)
        except Exception:
            log.critical("group %s: the journal cannot serialise its state (a bug); stopping the node",
                         g.group_id, exc_info=True)
            logging.shutdown()
            os._exit(70)

    def _durable_or_die(self, fn: Callable[[], int]) -> None:
        """:meth:`before_release` work; a failure is fatal for the reasons :meth:`_sync_or_die` gives."""
        started = time.monotonic()
        try:
            if fn():
                self.fsyncs += 1
                self.fsync_seconds += time.monotonic() - started
        except Exception:
            log.critical("making the Raft logs durable failed; stopping the node", exc_info=True)
            logging.shutdown()
            os._exit(70)

    def _owes_heartbeat(self, g: RaftGroup) -> bool:
        """A read registered since the group last sent AppendEntries needs a fresh round, unless
        the leader's lease answers for it."""
        return any(r.stamp > g.transport.seq for r in self._reads.get(g.group_id, ())) and not g.lease_valid()

    def _serve_reads(self) -> None:
        if not self._reads:
            return
        now = time.monotonic()
        for group_id in list(self._reads):
            g = self.groups[group_id]
            leased = g.lease_valid(now)  # once per group, not per read
            waiting = []
            for r in self._reads[group_id]:
                if g.term != r.term or not g.is_leader:
                    r.callback(NotLeader(f"shard {group_id}: leadership lost", leader=g.leader_id))
                elif (leased or g.confirmed(r.stamp)) and g.leader_ready and \
                        g.raftLastApplied >= r.commit:
                    r.callback(None)
                elif now > r.deadline:
                    r.callback(Timeout(f"shard {group_id}: leadership not confirmed in time"))
                else:
                    waiting.append(r)
            if waiting:
                self._reads[group_id] = waiting
                if self._owes_heartbeat(g):
                    self._active.add(group_id)
            else:
                del self._reads[group_id]

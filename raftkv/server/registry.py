"""The groups a node hosts: found on disk at start-up, created by splits at run time.

Each replica has a directory ``DATA/groups/<id>/`` (its snapshot marker and
membership files), a keyspace of the node's state LevelDB, ``DATA/store/``, and its
Raft log, term and vote in the node's Raft LevelDB, ``DATA/store-raft/``.
The directory says the replica exists: a keyspace without one is left over from a
crash and is dropped at start-up.  A replica made at run time also has a ``members`` file:
the shard it was made for, and -- for the right side of a split -- its parent
and the parent's log index of the split.  So start-up needs no shard map: it
opens what the disk holds, plus the initial map's shards on a new node.

A split is applied by every replica of the parent, each building the new
shard's replica on its own node (``prepare_child``, then ``open_child``): its
rows and client sessions, copied from the parent at that log index, and a log
that starts right there (``group.seed_log``).  The steps are ordered so a crash
anywhere is repaired at start-up:

1. build the child's state in its keyspace and its log in ``<id>.tmp``, fsync
   them, rename the directory to ``<id>``;
2. the parent writes its new bounds (and drops the moved rows) with its
   applied index, synced;
3. the child's group starts.

A child directory whose parent's applied index is below the split (a crash
between 1 and 2) is removed at start-up: the parent's log replays the split.

A replica that missed the split and receives a parent snapshot taken after it
learns its children from the snapshot's bounds, and creates each one empty and
*passive* (it never campaigns) until a replica that has the data sends it a
snapshot.

Every method that changes the set of groups runs on the Raft loop's thread.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable, Iterator

from ..protocol.codec import load, pack
from ..replication import commands, membership, sessions
from ..replication.group import RaftGroup, RaftOptions, seed_log
from ..replication.loop import RaftLoop
from ..routing.shardmap import META_GROUP, Shard, ShardMap
from ..storage.leveldb import SYSTEM, NodeStore, ShardStore, fsync_dir, migrate_legacy, write_file_atomic

log = logging.getLogger(__name__)

MEMBERS = "members"  # msgpack {"shard": Shard dict, "parent": id | None, "split_index": int}
PASSIVE = "passive"  # present while a replica created empty waits for its first snapshot
CHILD_START_INDEX = 3  # a split child's log starts as if compacted here (group.seed_log)
# what a split copies to the new shard besides its rows: client sessions (a write retried after
# the split must still be recognised on either side)
_COPIED_SYSTEM = (sessions.PREFIX, sessions.REPLIES, sessions.BY_TIME)


class GroupRegistry:
    """Opens, creates and tracks this node's replicas; the split hooks of every shard replica."""

    def __init__(self, node_id: str, data_dir: str, loop: RaftLoop, options: RaftOptions) -> None:
        self.me = node_id
        self.root = os.path.join(data_dir, "groups")
        self.loop = loop
        self.options = options
        self.stores: dict[str, ShardStore] = {}
        self.kv = NodeStore(os.path.join(data_dir, "store"))
        loop.before_release(self.kv.flush_durable)  # every group's log entries, term and vote: one fsync

    # --- start-up -----------------------------------------------------------------------------

    def open_all(self, initial: ShardMap, meta_nodes: list[str]) -> None:
        """Open the meta replica (if placed here), every replica on disk, and the initial map's
        shards placed here that have no directory yet (a new node)."""
        os.makedirs(self.root, exist_ok=True)
        made = {}
        for name in sorted(os.listdir(self.root)):
            path = os.path.join(self.root, name)
            if name.endswith(".tmp"):
                shutil.rmtree(path, ignore_errors=True)  # a split that never finished building
            elif name != META_GROUP and os.path.exists(os.path.join(path, MEMBERS)):
                made[name] = _read_members(path)
        for name in self.kv.names():  # state whose directory never came to be, or was removed
            if not os.path.isdir(os.path.join(self.root, name)):
                self.kv.drop(name)
        meta_dir = os.path.join(self.root, META_GROUP)
        if self.me in meta_nodes or os.path.isdir(meta_dir):
            # a meta replica that moved here later has its directory (and its configuration) already
            self._open(META_GROUP, meta_nodes, None, passive=os.path.exists(os.path.join(meta_dir, PASSIVE)))
        for shard in initial.shards:
            if self.me in shard.replicas and shard.id not in made:
                self._open(shard.id, list(shard.replicas), shard, initial=True)
        # parents first: a child is kept only if its parent applied the split that made it
        for name, members in _parents_first(made):
            parent = members.get("parent")
            store = self.stores.get(parent) if parent else None
            if store is not None and store.applied_index < members["split_index"]:
                log.info("removing %s: its parent %s never applied the split (a crash); the log replays it",
                         name, parent)
                shutil.rmtree(os.path.join(self.root, name), ignore_errors=True)
                self.kv.drop(name)
                continue
            shard = Shard.from_dict(members["shard"])
            passive = os.path.exists(os.path.join(self.root, name, PASSIVE))
            # a shard made empty: its bounds at birth, if a crash came before they were written
            self._open(name, list(shard.replicas), shard, initial=shard.born_empty and not passive,
                       passive=passive)

    def _open(self, group_id: str, replicas: list[str], shard: Shard | None, initial: bool = False,
              passive: bool = False, learners: list[str] | None = None) -> RaftGroup:
        directory = os.path.join(self.root, group_id)
        if not os.path.isdir(directory):  # the directory first: it is what says the replica exists
            os.makedirs(directory)
            fsync_dir(self.root)
        store = self.kv.replica(group_id)
        if migrate_legacy(store, os.path.join(directory, "store")):
            log.info("%s: moved its state from its own LevelDB into the node's", group_id)
        if initial and shard is not None:
            commands.init_shard_state(store, shard)
        group = RaftGroup(group_id, self.me, replicas, store, self.kv.raft_log(group_id), directory,
                          self.loop.hub, self.options,
                          hooks=self if shard is not None else None, passive=passive,
                          on_installed=self._installed,
                          learners=learners if learners is not None else list(shard.learners) if shard else [])
        self.stores[group_id] = store
        self.loop.add_group(group)
        return group

    # --- splits (Raft thread, from inside the parent's apply) ------------------------------------

    def prepare_child(self, child: Shard, parent: ShardStore, index: int) -> None:
        """Build ``child``'s replica durably from ``parent`` at log ``index`` (commands.SplitHooks)."""
        final = os.path.join(self.root, child.id)
        if os.path.exists(final):
            return  # made empty from a snapshot's bounds earlier: its leader sends it the data

        def fill(tmp: str) -> None:
            store = self.kv.replica(child.id)
            try:
                state = commands.ShardState(child).encode()
                items = parent.raw_items((child.start, child.end), _COPIED_SYSTEM)
                store.install(_with_first(SYSTEM + commands.SHARD_KEY, state, items), CHILD_START_INDEX)
            finally:
                store.close()
            seed_log(tmp, CHILD_START_INDEX)

        self._make(child, parent=_group_of(parent, self.stores), split_index=index, fill=fill)

    def open_child(self, child: Shard) -> None:
        """Start ``child``'s replica (commands.SplitHooks); already running: nothing to do."""
        if child.id not in self.loop.groups:
            self._open(child.id, list(child.replicas), child,
                       passive=os.path.exists(os.path.join(self.root, child.id, PASSIVE)))
            log.info("opened %s [%d, %d), made by a split", child.id, child.start, child.end)

    def open_empty(self, shard: Shard) -> None:
        """Start this node's replica of a shard made empty (a stripe, or the range after a striped
        segment), if this node is among its replicas and has none yet (commands.SplitHooks).

        Every replica of such a shard starts alike -- no rows, the shard's bounds at birth, a log
        at index 1 -- so each node may make its own.  A record past its first generation has had
        entries applied: a replica made now starts passive and takes a snapshot instead.
        """
        if self.me not in shard.replicas or shard.id in self.loop.groups:
            return
        final = os.path.join(self.root, shard.id)
        if os.path.exists(final):
            return
        born = shard.generation == 1
        self._make(shard, passive=not born)
        self._open(shard.id, list(shard.replicas), shard, initial=born, passive=not born)
        log.info("opened %s [%d, %d)%s, made empty", shard.id, shard.start, shard.end,
                 f" stripe {shard.stripe[0]}/{shard.stripe[1]}" if shard.stripe else "")

    def reconcile(self, shard_map: ShardMap) -> None:
        """Bring the replicas here in line with the map (loop thread):

        * start the replicas placed here of every shard the map says was made empty (a node that
          did not host the shard that striped, or was away then);
        * start an empty, passive replica of every shard that names this node a learner (a
          replica moving here): its leader sends it a snapshot;
        * remove every replica the map has moved away from this node.
        """
        for shard in shard_map.shards:
            if shard.born_empty:
                self.open_empty(shard)
            if self.me in shard.learners and shard.id not in self.loop.groups \
                    and not os.path.exists(os.path.join(self.root, shard.id)):
                self._make(shard, passive=True)
                self._open(shard.id, list(shard.replicas), shard, passive=True)
                log.info("opened %s empty as a learner (a replica moving here); waiting for a snapshot", shard.id)
        for gid in [g for g in self.loop.groups if g != META_GROUP]:
            record = shard_map.shard_by_id(gid)
            if record is not None and self._moved_away(gid, record):
                self.remove(gid)

    def _moved_away(self, gid: str, record: Shard) -> bool:
        """Whether this node's replica of ``gid`` is no longer wanted: the map does not name this
        node, and either the replica applied its own removal, or the map is at a generation past
        the replica's (a replica that missed its removal).  A map that lags behind the replica
        proves nothing: a newer change may have added this node."""
        if self.me in record.replicas or self.me in record.learners:
            return False
        state = commands.shard_state(self.stores[gid])
        local = state.shard.generation if state is not None else 0
        return record.generation > local or self.me not in self.loop.groups[gid].config.members

    def follow_meta(self, config: membership.Config) -> None:
        """Bring this node's meta replica in line with the meta group's configuration as its leader
        last told us (loop thread): open one, empty and passive, when we are named a learner;
        remove ours when a newer configuration no longer names us."""
        group = self.loop.groups.get(META_GROUP)
        if group is None and self.me in config.learners:
            directory = os.path.join(self.root, META_GROUP)
            os.makedirs(directory, exist_ok=True)
            with open(os.path.join(directory, PASSIVE), "wb"):
                pass
            fsync_dir(directory)
            fsync_dir(self.root)
            self._open(META_GROUP, list(config.voters), None, passive=True, learners=list(config.learners))
            log.info("opened a meta replica as a learner (the meta group moves here); waiting for a snapshot")
        elif group is not None and self.me not in config.members and config.version > group.config.version:
            self.remove(META_GROUP)

    def remove(self, gid: str) -> None:
        """Drop this node's replica of ``gid``: its group, its directory, its state (loop thread)."""
        self.loop.remove_group(gid)
        store = self.stores.pop(gid, None)
        if store is not None:
            store.close()
        shutil.rmtree(os.path.join(self.root, gid), ignore_errors=True)
        fsync_dir(self.root)
        self.kv.drop(gid)
        log.info("removed the replica of %s: the map has moved it to other nodes", gid)

    def _installed(self, group: RaftGroup) -> None:
        """After a snapshot install: stop being passive; create the children it names that we lack."""
        marker = os.path.join(self.root, group.group_id, PASSIVE)
        if os.path.exists(marker):
            os.unlink(marker)
        state = commands.shard_state(group.store)
        if state is None:
            return
        for child in state.children:
            if child.id in self.loop.groups or os.path.exists(os.path.join(self.root, child.id)):
                continue
            if child.born_empty:
                self.open_empty(child)
            else:
                self._create_empty(child, parent=group.group_id)

    def _create_empty(self, shard: Shard, parent: str | None) -> None:
        """A passive, empty replica of ``shard`` that waits for a snapshot from one with the data."""
        self._make(shard, passive=True)
        self._open(shard.id, list(shard.replicas), shard, passive=True)
        log.info("created %s empty (it was split from %s while this replica was away); "
                 "waiting for a snapshot", shard.id, parent)

    def _make(self, shard: Shard, *, parent: str | None = None, split_index: int = 0, passive: bool = False,
              fill: Callable[[str], None] | None = None) -> None:
        """Create ``shard``'s replica directory whole or not at all: built in ``<id>.tmp`` (``fill``
        adds a store and log to it), made durable, then renamed into place."""
        final = os.path.join(self.root, shard.id)
        tmp = final + ".tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        self.kv.drop(shard.id)  # nothing of an attempt that a failure cut short
        os.makedirs(tmp)
        if fill is not None:
            fill(tmp)
        _write_members(tmp, shard, parent=parent, split_index=split_index)
        if passive:
            with open(os.path.join(tmp, PASSIVE), "wb"):
                pass
        fsync_dir(tmp)
        os.replace(tmp, final)
        fsync_dir(self.root)

    def close(self) -> None:
        """Close every store and the node's database (the loop has stopped its groups)."""
        for store in self.stores.values():
            store.close()
        self.kv.close()


def _parents_first(made: dict[str, dict]) -> list[tuple[str, dict]]:
    """The replicas made at run time, each after its parent (when the parent was made too)."""
    out: list[tuple[str, dict]] = []
    done: set[str] = set()
    pending = dict(made)
    while pending:
        ready = sorted(n for n, m in pending.items() if m.get("parent") not in pending)
        for name in ready:
            out.append((name, pending.pop(name)))
            done.add(name)
        if not ready:  # a cycle cannot happen (ids are never reused); keep going rather than hang
            out.extend(sorted(pending.items()))
            break
    return out


def _with_first(name: bytes, value: bytes,
                items: Iterator[tuple[bytes, bytes]]) -> Iterator[tuple[bytes, bytes]]:
    yield name, value
    yield from items


def _group_of(store: ShardStore, stores: dict[str, ShardStore]) -> str | None:
    return next((gid for gid, s in stores.items() if s is store), None)


def _write_members(directory: str, shard: Shard, parent: str | None, split_index: int) -> None:
    write_file_atomic(os.path.join(directory, MEMBERS), pack(
        {"shard": shard.to_dict(), "parent": parent, "split_index": split_index}))


def _read_members(directory: str) -> dict:
    with open(os.path.join(directory, MEMBERS), "rb") as f:
        return load(f.read())

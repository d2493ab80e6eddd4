"""Cluster membership on a node: node records, heartbeats, failure detection, the replica mover.

* **Node records** (``routing/nodes.py``) live in the meta group, one per node: its
  addresses and admin state (active or decommissioning).  The meta leader writes the
  founding nodes' records once; every node follows them (``nodes`` op, polled with a
  tag so an unchanged set costs a few bytes), dials the peers they name
  (``PeerHub.set_peers``) and keeps a copy in ``DATA/nodes.json`` for its next start.
* **Heartbeats and liveness.**  Every node reports to the meta leader every
  ``HEARTBEAT_INTERVAL``; the meta leader keeps when it last heard from each
  (``nodes.Liveness``, in memory: a new meta leader gives every node a full
  ``dead_after`` of grace rather than trust what it never saw).
* **The mover** runs on the meta leader, once per ``MOVE_INTERVAL``.  It decides with
  the pure planner (``replication/planner.py``) and acts one safe step at a time by
  asking the shard's leader to take the next step (``op_reconfigure``:
  ``membership.next_step``): a new replica joins as a learner, is promoted once caught
  up, and only then is a replica removed.  The mover keeps no state of its own: a
  shard with a learner, or with more voters than the replication factor, *is* a move
  under way, so a new meta leader resumes every move from the map alone.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from ..errors import InvalidArgument, NotLeader
from ..logs import LogLimiter
from ..replication import commands, membership, planner
from ..routing import nodes, placement
from ..routing.nodes import NodeRecord
from ..routing.shardmap import META_GROUP, Shard
from ..storage.leveldb import write_file_atomic
from . import maplink
from .config import format_hostport

if TYPE_CHECKING:
    from .node import Node

log = logging.getLogger(__name__)

HEARTBEAT_INTERVAL = 1.0
MOVE_INTERVAL = 1.0
MAX_STEPS_PER_ROUND = 8  # shards the mover advances at once: moves are rate-limited, traffic goes on
MAX_MOVES_PER_NODE = 2  # moves touching one node at a time (its disk and links carry the snapshots)
# a learner whose catch-up has not moved for this long is dropped and its move planned afresh (as
# PD's operators time out): a move must never hold a node's move budget for good
LEARNER_STALL_SECONDS = 60.0
NODES_FILE = "nodes.json"
_RANK = {nodes.DEAD: 0, nodes.DECOMMISSIONING: 1, nodes.SUSPECT: 2, nodes.UP: 3}


def records_tag(recs: dict[str, NodeRecord]) -> str:
    """A short tag that changes whenever the node records do (followers poll with it)."""
    return ",".join(f"{r.id}:{r.version}" for r in sorted(recs.values(), key=lambda r: r.id))


class Members:
    """A node's part in cluster membership (see the module docstring); runs on the node's asyncio loop."""

    def __init__(self, node: Node) -> None:
        self.node = node
        self.config = node.config
        self.me = node.me.id
        self.dead_after = node.config.dead_after
        self.liveness = nodes.Liveness(time.monotonic())
        self._watch_term: int | None = None  # the meta term whose liveness self.liveness holds
        self.reports: dict[str, dict[str, int]] = {}  # node -> its last heartbeat's counts
        self._path = os.path.join(node.config.data_dir, NODES_FILE)
        self._followed: dict[str, NodeRecord] | None = self._load()
        self._tag: str | None = None
        self._stored: tuple[tuple[int, int, int], dict[str, NodeRecord]] | None = None  # records() cache
        self._tag_of: tuple[dict[str, NodeRecord], str] | None = None
        self._dialing: dict[str, tuple[str, int]] | None = None
        self._bootstrapping = False
        self._bootstrapped = False  # node records seen in the meta store: they are never all removed
        # to any node's client port, with the node's client token and TLS settings
        self.links = maplink.MapLink({}, node.config.secret, node.config.credentials())
        # (shard, learner) -> (its match index when last seen to move, since when): see stalled()
        self._catch_up: dict[tuple[str, str], tuple[int, float]] = {}
        self._complaints = LogLimiter(log)
        # meta leader: node id -> the task writing that node's advertised client addresses (one at a time)
        self._advertising: dict[str, asyncio.Task] = {}

    # --- node records ---------------------------------------------------------------------------

    def records(self) -> dict[str, NodeRecord]:
        """Every node's record: the meta replica's if one is here, else the copy last followed,
        else the founding nodes of the configuration."""
        store = self.node.stores.get(META_GROUP)
        if store is not None:
            # read back only when the meta store changed: the meta leader answers every node's
            # heartbeat with the records' tag, and reading them all each time is O(nodes) per beat
            version = (id(store), store.generation, store.applied_index)
            if self._stored is None or self._stored[0] != version:
                self._stored = (version, commands.stored_nodes(store))
            if self._stored[1]:
                return self._stored[1]
        if self._followed:
            return self._followed
        mine = self.config.advertise_clients
        return {n.id: NodeRecord(n.id, format_hostport(n.client), format_hostport(n.peer),
                                 # only the --nodes address advertised is none advertised (as in _note_advertised)
                                 clients=mine if n.id == self.me and mine != (format_hostport(n.client),) else ())
                for n in self.config.nodes}

    def advertised_clients(self) -> dict[str, list[str]]:
        """The client addresses of the nodes that advertise their own (``--advertise-client``), by
        node id, for clients (the ``map`` reply).  This node's come from its configuration: they
        are ahead of its record until the meta leader has written them."""
        out = {r.id: list(r.clients) for r in self.records().values() if r.clients}
        if self.config.advertise_clients:
            out[self.me] = list(self.config.advertise_clients)
        return out

    def _records_tag(self) -> str:
        recs = self.records()
        if self._tag_of is None or self._tag_of[0] is not recs:  # records() returns the cached dict
            self._tag_of = (recs, records_tag(recs))
        return self._tag_of[1]

    def active_ids(self) -> list[str]:
        """The nodes new replicas may be placed on (not decommissioning), sorted."""
        return sorted(r.id for r in self.records().values() if r.state == nodes.ACTIVE)

    def leaving_ids(self) -> set[str]:
        """The nodes being decommissioned."""
        return {r.id for r in self.records().values() if r.state == nodes.DECOMMISSIONING}

    def bootstrap(self) -> None:
        """Meta leader, on the Raft thread: write the founding nodes' records once."""
        meta = self.node.loop.groups.get(META_GROUP)
        if self._bootstrapped or meta is None or self._bootstrapping or not meta.leader_ready:
            return
        if commands.has_nodes(meta.store):  # runs every tick until the records exist; never after
            self._bootstrapped = True
            return
        self._bootstrapping = True
        founders = self.records()
        changes = [[r.id, 0, r.to_dict()] for r in founders.values()]

        def done(result: Any, err: int) -> None:
            self._bootstrapping = False

        meta.submit(commands.change_nodes(changes), done)

    def _load(self) -> dict[str, NodeRecord] | None:
        try:
            with open(self._path) as f:
                return {d["id"]: NodeRecord.from_dict(d) for d in json.load(f)}
        except FileNotFoundError:
            return None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("ignoring %s: %s", self._path, exc)
            return None

    def sync(self) -> None:
        """Act on the current records: dial the peers they name, know every client address,
        and keep a copy on disk (a restarted node must find nodes that joined after it began)."""
        recs = self.records()
        dialing = {r.id: self.config.peer_via.get(r.id, r.peer_address) for r in recs.values()}
        if dialing != self._dialing:
            self._dialing = dialing
            self.node.loop.set_peers(dialing)
            self.links.addresses = {r.id: r.client for r in recs.values()}
            self.node.maplink.directory = dict(self.links.addresses)
            write_file_atomic(self._path, json.dumps([r.to_dict() for r in recs.values()]).encode())
            log.info("cluster nodes: %s", ", ".join(sorted(recs)))

    async def follow(self) -> None:
        """Nodes without a meta replica: fetch the records when they changed."""
        if self.node.stores.get(META_GROUP) is not None:
            return
        for node_id in list(self.node.maplink.addresses):
            try:
                reply = await self.node.maplink.call(node_id, {"op": "nodes", "if_tag": self._tag}, 2.0)
            except Exception:  # noqa: BLE001 -- any meta replica will do; the next poll retries
                continue
            if isinstance(reply, dict) and reply.get("records") is not None:
                self._followed = {d["id"]: NodeRecord.from_dict(d) for d in reply["records"]}
                self._tag = reply.get("tag")
            return

    async def op_nodes(self, req: dict[str, Any]) -> Any:
        """Every node's record (None if ``if_tag`` is still current), and at the meta leader each
        node's liveness and its replica and leader counts."""
        recs = self.records()
        tag = self._records_tag()
        out: dict[str, Any] = {"tag": tag, "records": None if req.get("if_tag") == tag else
                               [r.to_dict() for r in recs.values()]}
        meta = self.node.loop.groups.get(META_GROUP)
        if meta is not None and meta.is_leader:
            now = time.monotonic()
            states = self._watching(meta).states(recs, now, self.dead_after)
            counts = self._replica_counts()
            out["states"] = {nid: {"state": st, "replicas": counts.get(nid, 0),
                                   "leaders": self.reports.get(nid, {}).get("leaders")}
                             for nid, st in states.items()}
        return out

    # --- heartbeats -----------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Tell the meta leader we are alive, with how many replicas and leaders we hold."""
        groups = dict(self.node.loop.groups)
        body = {"op": "heartbeat", "node": self.me, "replicas": len(groups),
                "leaders": sum(1 for g in groups.values() if g.is_leader)}
        body["proof"] = maplink.proof(self.config.secret, ["heartbeat", self.me])
        # what this node advertises to clients, so that the meta leader keeps its record in step
        # (as an etcd member publishes its client URLs); a proof of its own, so that a meta leader
        # that predates the field still accepts the heartbeat
        advertised = list(self.config.advertise_clients)
        body["clients"] = advertised
        body["clients_proof"] = maplink.proof(self.config.secret, ["clients", self.me, advertised])
        reply = await self.node.maplink.to_leader(body, timeout=HEARTBEAT_INTERVAL * 2)
        if isinstance(reply, dict) and isinstance(reply.get("meta"), dict):
            self._follow_meta(membership.Config.from_wire(reply["meta"]))

    def _follow_meta(self, config: membership.Config) -> None:
        """The meta group's configuration, as its leader told us: ask the members for the map from
        now on, and open or drop our own meta replica as it says."""
        recs = self.records()
        addresses = {v: recs[v].client for v in config.voters if v in recs}
        if addresses:
            self.node.maplink.addresses = addresses
        local = self.node.loop.groups.get(META_GROUP)
        joining = local is None and self.me in config.learners
        leaving = local is not None and self.me not in config.members and config.version > local.config.version
        if joining or leaving:
            if leaving:
                # keep serving what the replica knew until the followed copies are fresh again
                self.node._followed = self.node.current_map()
                self._followed = recs
            self.node.loop.call_soon(lambda: self.node.registry.follow_meta(config))

    async def op_heartbeat(self, req: dict[str, Any]) -> Any:
        """Meta leader: a node reports it is alive."""
        node_id = req.get("node")
        if not isinstance(node_id, str) or not maplink.proof_ok(self.config.secret, ["heartbeat", node_id],
                                                                 req.get("proof")):
            raise InvalidArgument("malformed or unauthenticated heartbeat")
        meta = self._meta_leader()
        self._watching(meta).observe(node_id, time.monotonic())
        self.reports[node_id] = {k: req[k] for k in ("replicas", "leaders") if type(req.get(k)) is int}
        if "clients" in req:  # nodes that predate --advertise-client do not send it
            self._note_advertised(node_id, req["clients"], req.get("clients_proof"))
        # the answer says where the meta group is now: a node whose meta replica moved away, or
        # that should start one, learns it here
        return {"meta": meta.config.to_wire(), "tag": self._records_tag()}

    def _watching(self, meta: Any) -> nodes.Liveness:
        """Meta leader: its liveness view, begun afresh in each term it leads.

        Keyed by the term, not by "led at the last mover round": a leader that lost the meta group
        and won it back between two rounds would otherwise judge by what it heard in its old term,
        and miss every heartbeat sent to the other leader in between (a live node then reads
        suspect, or dead).  Every reader of liveness (heartbeats, ``nodes``, the mover) goes
        through here, so none of them sees an old term's view.
        """
        term = meta.term
        if term != self._watch_term:
            self._watch_term = term
            self.liveness.reset(time.monotonic())
        return self.liveness

    def _meta_leader(self) -> Any:
        meta = self.node.loop.groups.get(META_GROUP)
        if meta is None or not meta.is_leader:
            raise NotLeader(f"node {self.me} does not lead the meta group",
                            leader=None if meta is None else meta.leader_id)
        return meta

    def _note_advertised(self, node_id: str, raw: Any, given_proof: Any) -> None:
        """Meta leader: bring ``node_id``'s record to the client addresses it reports advertising,
        in a task of its own (the heartbeat is answered at once), one write per node at a time."""
        if node_id in self._advertising:
            return
        try:
            reported = nodes.check_advertised(raw) if raw else ()
        except ValueError as exc:
            self._complaints.log(f"advertised {node_id}", logging.WARNING,
                                 "node %s advertises unusable client addresses: %s", node_id, exc)
            return
        if not maplink.proof_ok(self.config.secret, ["clients", node_id, list(reported)], given_proof):
            self._complaints.log(f"advertised {node_id}", logging.WARNING, "node %s: advertised client "
                                 "addresses without the cluster secret's proof: ignored", node_id)
            return
        known = self.records().get(node_id)
        if known is None:
            return
        # advertising only the --nodes address is the same as advertising none: keep such records
        # exactly as nodes without the option have them
        wanted = () if reported == (known.client,) else reported
        if known.clients == wanted:
            return
        task = asyncio.create_task(self._advertise(known, wanted))
        self._advertising[node_id] = task
        task.add_done_callback(lambda _: self._advertising.pop(node_id, None))

    async def _advertise(self, known: NodeRecord, clients: tuple[str, ...]) -> None:
        meta = self._at_meta_leader()
        if meta is None:
            return
        try:
            await self._change_node(meta, known.id, known.version,
                                    replace(known, clients=clients, version=known.version + 1), {})
        except Exception as exc:  # noqa: BLE001 -- the node's next heartbeat tries again
            self._complaints.log(f"advertised {known.id}", logging.WARNING,
                                 "node %s: advertised client addresses not recorded: %s", known.id, exc)
            return
        log.info("node %s advertises client addresses %s", known.id, ", ".join(clients or (known.client,)))

    # --- joining and leaving (meta leader; any node forwards) ------------------------------------

    def _at_meta_leader(self) -> Any:
        """The meta group if we lead it, else None (the caller forwards the request there)."""
        meta = self.node.loop.groups.get(META_GROUP)
        if meta is not None and meta.is_leader:
            return meta
        return None

    def _admin(self, req: dict[str, Any], op: str) -> tuple[str, Any]:
        """An operator's request about one node: its id (checked, with the secret's proof), and
        the meta group if we lead it (else None: forward it there)."""
        node_id = req.get("node")
        if not isinstance(node_id, str) or not maplink.proof_ok(self.config.secret, [op, node_id],
                                                                 req.get("proof")):
            raise InvalidArgument(f"malformed or unauthenticated {op}")
        return node_id, self._at_meta_leader()

    async def _change_node(self, meta: Any, node_id: str, expected: int, record: NodeRecord | None,
                           req: dict[str, Any]) -> None:
        result = await self.node._replicate(meta, commands.change_nodes(
            [[node_id, expected, None if record is None else record.to_dict()]]), self.node._timeout(req))
        if isinstance(result, dict) and result.get("conflict"):
            raise InvalidArgument(f"node {node_id}: {result.get('error')}")

    async def op_join(self, req: dict[str, Any]) -> Any:
        """A new node asks to be admitted (``raftkv node --join``): its record is written, and it is
        told what it needs to start: the founders (the initial map is theirs) and the layout."""
        raw = req.get("node")
        try:
            record = NodeRecord.from_dict({**raw, "state": nodes.ACTIVE, "version": 1}) \
                if isinstance(raw, dict) else None
        except ValueError as exc:
            raise InvalidArgument(f"malformed join: {exc}") from None
        if record is None or not maplink.proof_ok(self.config.secret, ["join", record.id, record.client,
                                                                        record.peer], req.get("proof")):
            raise InvalidArgument("malformed or unauthenticated join")
        meta = self._at_meta_leader()
        if meta is None:
            return await self.node.maplink.to_leader(req, timeout=self.node._timeout(req))
        known = self.records().get(record.id)
        if known is None:
            await self._change_node(meta, record.id, 0, record, req)
            self._watching(meta).observe(record.id, time.monotonic())  # heard from just now, not dead since we lead
            log.info("node %s joins (client %s, peer %s)", record.id, record.client, record.peer)
        elif (known.client, known.peer) != (record.client, record.peer):
            raise InvalidArgument(f"node id {record.id} is taken by a node at {known.client}")
        recs = self.records()
        # every founder, also one that has left since: their ids fix the initial map on every node
        addresses = {n.id: {"id": n.id, "client": format_hostport(n.client), "peer": format_hostport(n.peer)}
                     for n in self.config.nodes}
        founders = [recs[f].to_dict() if f in recs else addresses[f] for f in self.config.founder_ids()
                    if f in recs or f in addresses]
        return {"records": [r.to_dict() for r in recs.values()], "founders": founders,
                "shards": self.config.shards, "replication": self.config.replication,
                "placement": self.config.placement}

    async def op_decommission(self, req: dict[str, Any]) -> Any:
        """Start draining a node: no new replicas go to it, the mover moves its replicas (and so its
        leadership) away.  Refused when fewer active nodes than the replication factor would remain."""
        node_id, meta = self._admin(req, "decommission")
        if meta is None:
            return await self.node.maplink.to_leader(req, timeout=self.node._timeout(req))
        recs = self.records()
        known = recs.get(node_id)
        if known is None:
            raise InvalidArgument(f"no node {node_id!r} in the cluster (nodes: {', '.join(sorted(recs))})")
        if known.state != nodes.DECOMMISSIONING:
            remaining = [r for r in recs.values() if r.state == nodes.ACTIVE and r.id != node_id]
            if len(remaining) < self.config.replication:
                raise InvalidArgument(
                    f"refusing to remove {node_id}: only {len(remaining)} active nodes would remain, fewer "
                    f"than the replication factor {self.config.replication}; add a node first")
            await self._change_node(meta, node_id, known.version, replace(
                known, state=nodes.DECOMMISSIONING, version=known.version + 1), req)
            log.info("node %s is being decommissioned", node_id)
        return {"state": nodes.DECOMMISSIONING}

    async def op_forget(self, req: dict[str, Any]) -> Any:
        """Delete a node's record once it holds no replica (after decommissioning); its peers then
        hang up on it and refuse it."""
        node_id, meta = self._admin(req, "forget")
        if meta is None:
            return await self.node.maplink.to_leader(req, timeout=self.node._timeout(req))
        known = self.records().get(node_id)
        if known is None:
            return {"forgotten": node_id}
        held = [s.id for s in self.node.current_map().shards if node_id in s.replicas or node_id in s.learners]
        if node_id in meta.config.members:
            held.append(META_GROUP)
        if held:
            raise InvalidArgument(f"node {node_id} still holds replicas of {len(held)} shards "
                                  f"(e.g. {', '.join(held[:3])}): decommission it and wait")
        await self._change_node(meta, node_id, known.version, None, req)
        self.liveness.forget(node_id)
        log.info("node %s left the cluster", node_id)
        return {"forgotten": node_id}

    # --- the mover (meta leader) ------------------------------------------------------------------

    def _replica_counts(self) -> dict[str, int]:
        counts: dict[str, int] = {}
        for s in self.node.current_map().shards:
            for n in (*s.replicas, *s.learners):
                counts[n] = counts.get(n, 0) + 1
        return counts

    async def move_round(self) -> list[tuple[str, str | None, str | None]]:
        """One round of the mover; the steps it asked for, as (shard, add, remove)."""
        meta = self.node.loop.groups.get(META_GROUP)
        now = time.monotonic()
        if meta is None or not meta.leader_ready:
            return []
        self._watching(meta).observe(self.me, now)
        recs = self.records()
        states = self.liveness.states(recs, now, self.dead_after)
        smap = self.node.current_map()
        factor = self.config.replication
        counts = self._replica_counts()
        # nodes the map places replicas on that have no record (cannot happen once records are
        # written, but never let a gap make the planner refuse): count them as up
        for s in smap.shards:
            for n in (*s.replicas, *s.learners):
                states.setdefault(n, nodes.UP)
        steps: dict[str, tuple[Shard, str | None, str | None]] = {}
        learning = {(s.id, s.learners[0]) for s in smap.shards if s.learners}
        self._catch_up = {k: v for k, v in self._catch_up.items() if k in learning}
        for s in smap.shards:
            if s.learners:  # a move under way: promote its learner, or drop it if its node is gone
                x = s.learners[0]
                keep = states.get(x) == nodes.UP and not self.stalled(s.id, x, now)
                steps[s.id] = (s, x, None) if keep else (s, None, x)
            elif len(s.replicas) > factor:  # promoted: now the extra voter leaves
                steps[s.id] = (s, None, self._extra(s.id, s.replicas, states, counts))
        if len(steps) < MAX_STEPS_PER_ROUND:
            by_id = {s.id: s for s in smap.shards}
            for m in planner.plan_moves(smap, states, factor=factor, in_flight=list(steps),
                                        max_per_node=MAX_MOVES_PER_NODE,
                                        max_moves=MAX_STEPS_PER_ROUND - len(steps)):
                # a replacement adds first; its removal is the "extra voter" step once promoted
                steps[m.shard] = (by_id[m.shard], m.add, None if m.add is not None else m.remove)
        chosen = list(steps.values())[:MAX_STEPS_PER_ROUND]
        await asyncio.gather(self._move_meta(meta, states, counts),
                             *(self._step(s, add, remove) for s, add, remove in chosen))
        return [(s.id, add, remove) for s, add, remove in chosen]

    def stalled(self, shard_id: str, learner: str, now: float) -> bool:
        """Whether ``learner``'s catch-up of ``shard_id`` has not moved for LEARNER_STALL_SECONDS
        (as the shard leader's answers to our promote steps told it); the move is then undone."""
        seen = self._catch_up.get((shard_id, learner))
        if seen is None or now - seen[1] < LEARNER_STALL_SECONDS:
            return False
        log.warning("shard %s: learner %s has not caught up any further in %.0f s; dropping it to "
                    "plan the move afresh", shard_id, learner, now - seen[1])
        del self._catch_up[(shard_id, learner)]
        return True

    def progress(self, shard_id: str, learner: str, match: int, now: float) -> None:
        """Note a learner's match index from a promote step that had to wait."""
        seen = self._catch_up.get((shard_id, learner))
        if seen is None or match > seen[0]:
            self._catch_up[(shard_id, learner)] = (match, now)

    def _extra(self, group_id: str, voters: tuple[str, ...], states: dict[str, str], counts: dict[str, int]) -> str:
        """Which voter of an over-replicated group leaves: a dead one, then a decommissioning one,
        then a suspect one, then the one on the fullest node (rendezvous weight breaks ties)."""
        return min(voters, key=lambda n: (_RANK.get(states.get(n, nodes.UP), 3), -counts.get(n, 0),
                                          placement.weight(group_id, n), n))

    async def _move_meta(self, meta: Any, states: dict[str, str], counts: dict[str, int]) -> None:
        """The meta group's own replicas follow the same rules as a shard's: replace a dead or
        decommissioning voter, one safe step at a time, run here (we lead it)."""
        config = meta.config
        factor = self.config.replication
        add = remove = None
        if config.learners:
            learner = config.learners[0]
            add, remove = (learner, None) if states.get(learner) == nodes.UP else (None, learner)
        elif len(config.voters) > factor:
            remove = self._extra(META_GROUP, config.voters, states, counts)
        elif any(states.get(v) in (nodes.DEAD, nodes.DECOMMISSIONING) for v in config.voters):
            spare = [n for n, st in states.items() if st == nodes.UP and n not in config.members]
            if spare:
                add = min(spare, key=lambda n: (counts.get(n, 0), -placement.weight(META_GROUP, n), n))
            elif len(config.voters) > 1 and all(states.get(v) != nodes.DEAD for v in config.voters):
                remove = self._extra(META_GROUP, config.voters, states, counts)
        if add is None and remove is None:
            return
        try:
            reply = await self._take_step(meta, add, remove, timeout=5.0)
        except Exception as exc:  # noqa: BLE001 -- the next round retries
            self._complaints.log("move meta", logging.WARNING, "meta group: move step not taken: %s", exc)
            return
        if reply.get("step") in ("change", "transfer"):
            log.info("meta group: %s (%s)", reply.get("why"), reply.get("step"))

    async def _step(self, shard: Shard, add: str | None, remove: str | None) -> None:
        request = {"op": "reconfigure", "shard": shard.id, "add": add, "remove": remove,
                   "proof": maplink.proof(self.config.secret, ["reconfigure", shard.id, add, remove])}
        try:
            reply = await self.links.to_leader(request, timeout=5.0, candidates=list(shard.replicas))
        except Exception as exc:  # noqa: BLE001 -- the next round retries from the map
            self._complaints.log(f"move {shard.id}", logging.WARNING, "shard %s: move step (add %s, remove %s) "
                                 "not taken: %s", shard.id, add, remove, exc)
            return
        if isinstance(reply, dict) and reply.get("step") in ("change", "transfer"):
            log.info("shard %s: %s (%s)", shard.id, reply.get("why"), reply.get("step"))
        elif isinstance(reply, dict) and add is not None and add in shard.learners:
            match = reply.get("match")
            self.progress(shard.id, add, match if type(match) is int else 0, time.monotonic())
            log.debug("shard %s: promoting %s waits: %s", shard.id, add, reply.get("why"))
        elif isinstance(reply, dict):
            log.debug("shard %s: move step (add %s, remove %s): %s", shard.id, add, remove, reply.get("why"))

    async def run(self) -> None:
        """Every node: heartbeats, and following the records; the meta leader: the mover too.

        The heartbeats go on a loop of their own.  Following the records asks the meta replicas in
        turn, 2 s each that does not answer, and the mover's steps take their time: behind either,
        a live node's heartbeats could fall 3 s apart and the meta leader would call it suspect
        (with ``--dead-after 5``, dead) while one meta replica is merely slow.
        """
        await asyncio.gather(self._beat(), self._tend())

    async def _beat(self) -> None:
        # The first beat goes at once: the meta leader counted a joining node as heard when it
        # admitted it, and the node has 3 s (nodes.DEFAULT_SUSPECT_AFTER) from then to be heard again.  Beats
        # then start HEARTBEAT_INTERVAL apart, start to start: one that takes its whole 2 s
        # timeout is followed at once by the next, not after another interval (3 s: suspect).
        clock = asyncio.get_running_loop().time
        while True:
            started = clock()
            try:
                await self.heartbeat()
            except Exception as exc:  # noqa: BLE001 -- never let this loop die; the next round may work
                self._complaints.log("heartbeat", logging.WARNING, "membership: %s: %s", type(exc).__name__, exc)
            await asyncio.sleep(max(0.0, HEARTBEAT_INTERVAL - (clock() - started)))

    async def _tend(self) -> None:
        next_move = time.monotonic()
        while True:
            await asyncio.sleep(HEARTBEAT_INTERVAL)
            try:
                await self.follow()
                self.sync()
            except Exception as exc:  # noqa: BLE001 -- never let this loop die; the next round may work
                self._complaints.log("follow", logging.WARNING, "membership: %s: %s", type(exc).__name__, exc)
            if time.monotonic() >= next_move:
                next_move = time.monotonic() + MOVE_INTERVAL
                try:
                    await self.move_round()
                except Exception:  # noqa: BLE001
                    self._complaints.log("mover", logging.WARNING, "the replica mover failed a round", exc_info=True)

    # --- a shard leader takes one step ------------------------------------------------------------

    async def op_reconfigure(self, req: dict[str, Any]) -> Any:
        """Shard leader: take the next step of moving a replica to ``add`` and away from ``remove``
        (``membership.next_step``); sent by the meta leader's mover."""
        add, remove = req.get("add"), req.get("remove")
        g = self.node._group(req)
        if not all(x is None or (isinstance(x, str) and 0 < len(x) <= 64) for x in (add, remove)) \
                or (add is None and remove is None) or add == remove:
            raise InvalidArgument("reconfigure needs 'add' and/or 'remove' node ids, different")
        if not maplink.proof_ok(self.config.secret, ["reconfigure", g.group_id, add, remove], req.get("proof")):
            raise InvalidArgument("reconfigure refused: it does not carry the cluster secret's proof")
        if add is not None and add not in self.records():
            raise InvalidArgument(f"node {add} is not a member of the cluster")
        self.node._leader(g)
        reply = await self._take_step(g, add, remove, self.node._timeout(req))
        if reply.get("step") == "change":
            await self.node._publish(g)  # the map shows the new replicas (clients, and the learner's node)
        return reply

    async def _take_step(self, g: Any, add: str | None, remove: str | None, timeout: float) -> dict[str, Any]:
        """Leader of ``g``: the next step of moving a replica to ``add`` and away from ``remove``."""

        def decide() -> tuple[membership.Step, str | None, int, int]:
            progress = g.learner_progress()
            step = membership.next_step(g.config, add=add, remove=remove, me=self.me,
                                        learner_match=progress, last_index=g.last_index)
            why = None
            if step.kind == "change":
                why = g.member_change_refusal(list(step.voters), list(step.learners))
            elif step.kind == "transfer":
                g.hand_over(step.target)
            return step, why, g.config.version, progress.get(add, 0) if add is not None else 0

        step, why, version, match = await self.node.on_raft(decide)
        self.node.loop.poke(g.group_id)  # a quiet group must tick: to compact for the newcomer, to transfer
        if why is not None:
            return {"step": "wait", "why": why, "match": match}
        if step.kind != "change":
            return {"step": step.kind, "why": step.why, "match": match}
        result = await self.node._replicate(
            g, commands.change_members(list(step.voters), list(step.learners), version), timeout)
        return {"step": "change", "why": step.why, "members": result["members"]}

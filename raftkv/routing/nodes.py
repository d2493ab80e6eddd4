"""Node records and node liveness (pure): who is in the cluster, and who seems to be alive.

The meta group stores one record per node (``NodeRecord.to_dict``) next to the shard records
(``records.py``).  A change is a list of ``[node_id, expected_version, record | None]``.  It
applies only if every named node is still at its expected version (0 means "absent"), and only
if each new record's version is exactly ``expected + 1``.  A ``None`` record deletes.  So two
admins changing one node at once cannot both win.  A repeated add is refused, and no two nodes
may claim one address.

A record holds only the *admin* state (``active`` or ``decommissioning``).  Whether a node is
up is not replicated.  The meta leader works it out from when it last heard from each node
(:func:`node_states`, :class:`Liveness`).  A leader that has just taken over has heard from
nobody yet, so it gives every node a full ``dead_after`` of grace before calling it dead.

Versions start again at 1 after a delete.  An admin holding a read taken before the delete
may therefore add the node back with ``expected_version`` 0.  That is harmless because the
add still has to pass every other check.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# --- persisted admin states ---------------------------------------------------------------------

ACTIVE = "active"
DECOMMISSIONING = "decommissioning"
ADMIN_STATES = frozenset({ACTIVE, DECOMMISSIONING})

# --- liveness states (derived by the meta leader, never stored) -----------------------------------

UP = "up"
SUSPECT = "suspect"
DEAD = "dead"
# DECOMMISSIONING doubles as a liveness state: a node being drained that still reports.

MIN_DEAD_AFTER = 5.0  # seconds; below this a GC pause or a leader change would declare nodes dead
DEFAULT_DEAD_AFTER = 60.0
DEFAULT_SUSPECT_AFTER = 3.0
MAX_NODE_CHANGES = 64  # a node change names few nodes; a bound keeps a log entry small
MAX_HOST = 255  # a DNS name's limit

_NODE_ID = re.compile(r"[A-Za-z0-9_.-]{1,64}")
_RECORD_KEYS = ("id", "client", "peer", "state", "version")
# client addresses one node may advertise (``--advertise-client``): one per network it is reached
# from (a container network, the host's published ports, a load balancer...); a few at most
MAX_ADVERTISED = 8

NodeChange = list[Any]  # [node_id, expected_version, record dict | None]


def check_node_id(node_id: Any) -> str:
    """``node_id`` if it is a valid node id: 1..64 characters of ``[A-Za-z0-9_.-]``; else ValueError."""
    if not isinstance(node_id, str) or not _NODE_ID.fullmatch(node_id):
        raise ValueError(f"bad node id {node_id!r:.80}: expected 1..64 characters of A-Z a-z 0-9 _ . -")
    return node_id


def parse_address(text: Any) -> tuple[str, int]:
    """``"host:port"`` as ``(host, port)``, with 0 < port < 65536; ValueError if malformed.

    Like ``server.config.parse_hostport``, but it raises ValueError (records are checked inside
    the state machine, not at the CLI).  It is also stricter.  Port 0 is refused, since nobody
    can dial it.  The port must be written canonically ("80", not "080"), so that equal
    addresses are equal strings and a duplicate address is always caught.
    """
    if not isinstance(text, str):
        raise ValueError(f"bad address {text!r:.80}: expected a 'host:port' string")
    host, _, port = text.rpartition(":")
    if (not host or len(host) > MAX_HOST or any(c.isspace() for c in host) or not port.isascii()
            or not port.isdigit() or str(int(port)) != port or not 0 < int(port) < 65536):
        raise ValueError(f"bad address {text!r:.80}: expected host:port with 0 < port < 65536")
    return host, int(port)


def _same_address(addr: str) -> str:
    """Comparison form of a valid address: host names are case-insensitive."""
    host, port = parse_address(addr)
    return f"{host.lower()}:{port}"


def check_advertised(addresses: Any) -> tuple[str, ...]:
    """The client addresses a node advertises, checked: a list of 1..MAX_ADVERTISED distinct valid
    ``host:port`` strings (ValueError otherwise).  Order matters: clients read position ``i`` of
    every node's list as one network's view (``raftkv.client.addresses``)."""
    if not isinstance(addresses, list | tuple) or not 0 < len(addresses) <= MAX_ADVERTISED:
        raise ValueError(f"advertised client addresses must be a list of 1..{MAX_ADVERTISED} host:port")
    for addr in addresses:
        parse_address(addr)
    if len({_same_address(a) for a in addresses}) != len(addresses):
        raise ValueError("an advertised client address is listed twice")
    return tuple(addresses)


@dataclass(frozen=True)
class NodeRecord:
    """One node as the meta group stores it: its addresses, its admin state and a version.

    ``version`` starts at 1 and goes up by 1 with every change, which is what a change
    compares and sets.
    """

    id: str
    client: str  # "host:port" where clients reach it
    peer: str  # "host:port" where other nodes reach it (Raft)
    state: str = ACTIVE
    version: int = 1
    # where clients may reach it, one address per network it is reached from (``--advertise-client``);
    # empty: just ``client``.  Nodes always reach each other at ``client``.
    clients: tuple[str, ...] = ()

    @property
    def advertised(self) -> tuple[str, ...]:
        """The client addresses this node advertises to clients, in its order."""
        return self.clients or (self.client,)

    @property
    def client_address(self) -> tuple[str, int]:
        """The client address as ``(host, port)``."""
        return parse_address(self.client)

    @property
    def peer_address(self) -> tuple[str, int]:
        """The peer address as ``(host, port)``."""
        return parse_address(self.peer)

    def to_dict(self) -> dict[str, Any]:
        """Wire and stored form (``clients`` only when advertised: a record without them is the
        same as before the field existed)."""
        out: dict[str, Any] = {"id": self.id, "client": self.client, "peer": self.peer, "state": self.state,
                               "version": self.version}
        if self.clients:
            out["clients"] = list(self.clients)
        return out

    @classmethod
    def from_dict(cls, d: Any) -> NodeRecord:
        """Inverse of :meth:`to_dict`.  Every field is checked, and ValueError is raised for
        anything malformed, because records arrive over the network.

        Keys it does not know are ignored, as ``Shard.from_dict`` does.  Suppose a newer node
        adds a field.  An older replica must still accept the record, or the replicas' states
        would diverge.
        """
        if not isinstance(d, dict):
            raise ValueError("a node record must be a map")
        missing = [k for k in _RECORD_KEYS if k not in d]
        if missing:
            raise ValueError(f"a node record needs {', '.join(missing)}")
        node_id = check_node_id(d["id"])
        client, peer, state, version = d["client"], d["peer"], d["state"], d["version"]
        parse_address(client)
        parse_address(peer)
        if _same_address(client) == _same_address(peer):
            # one port cannot serve both clients and Raft peers
            raise ValueError(f"node {node_id}: its client and peer addresses must differ")
        if not isinstance(state, str) or state not in ADMIN_STATES:
            raise ValueError(f"node {node_id}: state must be one of {', '.join(sorted(ADMIN_STATES))}")
        if type(version) is not int or not 1 <= version < 2**63:
            raise ValueError(f"node {node_id}: version must be a positive int")
        clients: tuple[str, ...] = ()
        if d.get("clients") is not None:
            try:
                clients = check_advertised(d["clients"])
            except ValueError as exc:
                raise ValueError(f"node {node_id}: {exc}") from None
            if _same_address(peer) in {_same_address(a) for a in clients}:
                raise ValueError(f"node {node_id}: an advertised client address is its peer address")
        return cls(node_id, client, peer, state, version, clients)


def check_node_changes(raw: Any) -> list[NodeChange]:
    """Validate the wire form of a node change list (ValueError if malformed).

    The list holds 1..64 items of ``[node_id, expected_version, record dict | None]``.
    ``expected_version`` 0 means "absent", and a ``None`` record deletes the node.  Each
    record must name the node its item names, and no node may appear twice.
    """
    if not isinstance(raw, list) or not 0 < len(raw) <= MAX_NODE_CHANGES:
        raise ValueError(f"a node change is a list of 1..{MAX_NODE_CHANGES} "
                         "[node_id, expected_version, record]")
    out: list[NodeChange] = []
    for item in raw:
        if not (isinstance(item, list) and len(item) == 3 and type(item[1]) is int
                and 0 <= item[1] < 2**63 and (item[2] is None or isinstance(item[2], dict))):
            raise ValueError("malformed node change")
        node_id = check_node_id(item[0])
        if item[2] is not None and NodeRecord.from_dict(item[2]).id != node_id:
            raise ValueError("a node change names one node and carries another")
        out.append([node_id, item[1], item[2]])
    if len({c[0] for c in out}) != len(out):
        raise ValueError("a node change names a node twice")
    return out


def apply_node_changes(current: Mapping[str, dict[str, Any]],
                       changes: list[NodeChange]) -> tuple[dict[str, dict[str, Any] | None], str | None]:
    """Decide a node change by compare-and-set.

    Returns ``(writes, None)``, where ``writes`` maps node ids to the records to write (None
    deletes), or ``({}, why)`` if the change is refused.  ``current`` holds the stored
    records by node id, and ``changes`` must already have passed :func:`check_node_changes`.
    """
    writes: dict[str, dict[str, Any] | None] = {}
    for node_id, expected, record in changes:
        stored = current.get(node_id)
        have = int(stored.get("version", 1)) if stored is not None else 0
        if have != expected:
            return {}, f"node {node_id} is at version {have}, not {expected}"
        if record is not None and record["version"] != expected + 1:
            # exactly +1, not merely higher: two changes made from the same read cannot both win,
            # and a version cannot leap ahead and make later expectations meaningless
            return {}, f"node {node_id}'s new record must have version {expected + 1}"
        writes[node_id] = record
    merged = {**current, **writes}
    owner: dict[str, str] = {}  # address -> the node that claims it
    # Records this change leaves alone claim their addresses first, then the records it
    # writes.  The reason then names the record being written as the one that collides.
    ordered = [*(i for i in merged if i not in writes), *(i for i in writes if writes[i] is not None)]
    for node_id in ordered:
        rec = merged[node_id]
        if rec is None:
            continue
        for kind in ("client", "peer"):
            addr = _same_address(rec[kind])
            other = owner.setdefault(addr, node_id)
            if other != node_id:
                return {}, f"address {rec[kind]} ({kind} of node {node_id}) is already used by node {other}"
    return writes, None


# --- liveness -----------------------------------------------------------------------------------

def check_dead_after(dead_after: Any) -> float:
    """``dead_after`` in seconds as a float.  ValueError if it is not a finite number at least
    :data:`MIN_DEAD_AFTER`, since a shorter one would call a merely slow node dead."""
    if isinstance(dead_after, bool) or not isinstance(dead_after, int | float) \
            or not math.isfinite(dead_after) or dead_after < MIN_DEAD_AFTER:
        raise ValueError(f"dead_after must be a number of seconds of at least {MIN_DEAD_AFTER:g}, "
                         f"not {dead_after!r:.40}")
    return float(dead_after)


def node_states(records: Mapping[str, NodeRecord], last_seen: Mapping[str, float], now: float, *,
                since: float, dead_after: float,
                suspect_after: float = DEFAULT_SUSPECT_AFTER) -> dict[str, str]:
    """The liveness of every node in ``records``: UP, SUSPECT, DEAD or DECOMMISSIONING.

    ``last_seen`` maps node ids to when each was last heard from.  ``since`` is when the
    observer began watching.  Nobody is heard from earlier than ``since``: a node never
    heard from counts as heard at ``since``.  A node silent for ``dead_after`` seconds or
    more is DEAD, even while decommissioning.  Short of that, a decommissioning node is
    DECOMMISSIONING.  Any other node is SUSPECT once silent for ``suspect_after``, and UP
    before then.  Ids in ``last_seen`` with no record are ignored.
    """
    dead_after = check_dead_after(dead_after)
    if not suspect_after > 0:
        raise ValueError("suspect_after must be positive")
    out: dict[str, str] = {}
    for node_id, record in records.items():
        # Observations from before `since` are from another term of watching.  A new leader
        # does not judge by them, because it cannot know what it missed in between.
        heard = max(last_seen.get(node_id, since), since)
        silent = now - heard  # negative if the clock moved back: that counts as just heard
        if silent >= dead_after:
            out[node_id] = DEAD
        elif record.state == DECOMMISSIONING:
            out[node_id] = DECOMMISSIONING
        elif silent >= suspect_after:
            out[node_id] = SUSPECT
        else:
            out[node_id] = UP
    return out


class Liveness:
    """When each node was last heard from, as one observer (the meta leader) saw it.

    The clock is passed in to every call, which keeps this pure and testable with a scripted
    clock.  Observations only move forward in time.  :meth:`reset` starts a new term of
    watching, for a new leader.
    """

    def __init__(self, now: float) -> None:
        """Start watching at ``now``: every node gets a full ``dead_after`` of grace from here."""
        self._since = now
        self._seen: dict[str, float] = {}

    @property
    def since(self) -> float:
        """When the current term of watching began."""
        return self._since

    @property
    def last_seen(self) -> Mapping[str, float]:
        """When each node was last heard from in this term (a read-only view)."""
        return dict(self._seen)

    def observe(self, node_id: str, now: float) -> None:
        """Record that ``node_id`` was heard from at ``now``.  A reply that arrives late never
        moves a node's last-seen time backwards."""
        if now > self._seen.get(node_id, -math.inf):
            self._seen[node_id] = now

    def forget(self, node_id: str) -> None:
        """Drop what is known of ``node_id`` (its record was deleted)."""
        self._seen.pop(node_id, None)

    def reset(self, now: float) -> None:
        """Start a new term of watching at ``now``, as a new leader does: forget everything seen."""
        self._since = now
        self._seen.clear()

    def states(self, records: Mapping[str, NodeRecord], now: float, dead_after: float,
               suspect_after: float = DEFAULT_SUSPECT_AFTER) -> dict[str, str]:
        """:func:`node_states` of ``records`` at ``now``, from this observer's view."""
        return node_states(records, self._seen, now, since=self._since, dead_after=dead_after,
                           suspect_after=suspect_after)

"""A node's link to the meta group's replicas, over their client ports: follow the map, publish changes.

Nodes that host no meta replica would otherwise never see a map change; each
asks a meta replica for the map every ``FOLLOW_INTERVAL`` seconds (a tiny reply
when nothing changed) and so sees a change within a second.

A shard leader publishes the records of a split through :meth:`MapLink.publish`
to the meta leader.  That request changes the map, so when the cluster has a
secret it carries ``HMAC-SHA256(secret, "raftkv-map-change" || changes)``
(:func:`proof`): a client that can reach a client port cannot rewrite the map.
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import logging
import random
from typing import Any

from .. import errors
from ..client.aio import NodeConnection
from ..logs import LogLimiter
from ..protocol.codec import pack
from ..routing.records import Change
from .config import Credentials

log = logging.getLogger(__name__)

FOLLOW_INTERVAL = 0.5
_PROOF_LABEL = b"raftkv-map-change"


def proof(secret: bytes | None, changes: list[Change]) -> bytes | None:
    """The authenticator a map change carries (None without a cluster secret)."""
    if secret is None:
        return None
    return hmac.new(secret, _PROOF_LABEL + pack(changes), hashlib.sha256).digest()


def proof_ok(secret: bytes | None, changes: list[Change], given: Any) -> bool:
    """Whether ``given`` authenticates ``changes`` (always, without a cluster secret)."""
    expected = proof(secret, changes)
    return expected is None or (isinstance(given, bytes) and hmac.compare_digest(expected, given))


class MapLink:
    """Requests to the meta replicas' client ports, one small connection per replica."""

    def __init__(self, addresses: dict[str, str], secret: bytes | None,
                 credentials: Credentials | None = None) -> None:
        self.addresses = addresses  # meta node id -> client host:port
        self.directory: dict[str, str] = {}  # every node's client address (node records), for redirects
        self.secret = secret
        # the cluster's client token and TLS: nodes call each other's client ports as clients do
        self.credentials = credentials or Credentials()
        self._conns: dict[str, NodeConnection] = {}
        self._leader: str | None = None
        self._opening: dict[str, asyncio.Lock] = {}  # one connection being opened per node at a time
        self._complaints = LogLimiter(log)

    async def call(self, node_id: str, request: dict[str, Any], timeout: float) -> Any:
        """One request to one meta node; raises what it answered, or Unavailable."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout  # the connect, the hello and the request share it
        async with asyncio.timeout(timeout):
            conn = self._conns.get(node_id)
            if conn is None or conn.closed:
                # single flight: two callers opening at once would leave one connection unclosed
                async with self._opening.setdefault(node_id, asyncio.Lock()):
                    conn = self._conns.get(node_id)
                    if conn is None or conn.closed:
                        conn = NodeConnection(self.addresses[node_id], self.credentials)
                        try:
                            await conn.open(max(0.05, deadline - loop.time()))
                        except BaseException:
                            conn.abort()
                            raise
                        self._conns[node_id] = conn
        try:
            return await conn.request(request, max(0.05, deadline - loop.time()))
        except errors.Timeout:
            conn.abort()  # a node that did not answer may hang: the next call dials afresh
            raise

    async def fetch(self, epoch: int, timeout: float = 2.0) -> dict[str, Any] | None:
        """The map if some meta replica has one newer than ``epoch``, else None."""
        for node_id in random.sample(list(self.addresses), len(self.addresses)):
            try:
                reply = await self.call(node_id, {"op": "map", "if_newer": epoch}, timeout)
            except errors.Unauthenticated as exc:
                # a wrong token or CA is not a node that is down: say so, or the map never updates
                # and nothing tells why
                self._complaints.log(f"auth {node_id}", logging.WARNING, "map poll of %s refused: %s",
                                     node_id, exc.message)
                continue
            except (errors.RaftKVError, OSError, TimeoutError):
                continue
            return reply.get("map") if isinstance(reply, dict) else None
        return None

    async def to_leader(self, request: dict[str, Any], timeout: float = 5.0,
                        candidates: list[str] | None = None) -> Any:
        """Send ``request`` to the meta leader (or to the leader among ``candidates``, in that
        order: a shard's replicas), following redirects; its reply, or raise."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last: Exception | None = None
        if candidates is not None:
            order = [c for c in candidates if c in self.addresses]
            if not order:
                raise errors.Unavailable(f"no address known for any of {candidates}")
        else:
            order = random.sample(list(self.addresses), len(self.addresses))
            if self._leader in self.addresses:
                order.remove(self._leader)
                order.insert(0, self._leader)
        attempt = 0
        while loop.time() < deadline:
            node_id = order[attempt % len(order)]
            attempt += 1
            try:
                reply = await self.call(node_id, request, max(0.1, deadline - loop.time()))
                if candidates is None:
                    self._leader = node_id
                return reply
            except errors.NotLeader as exc:
                last = exc
                if exc.leader not in self.addresses and exc.leader in self.directory:
                    # a leader we did not know to ask (the meta group moved): every node's
                    # address is in the node records, so follow the redirect there
                    self.addresses[exc.leader] = self.directory[exc.leader]
                if exc.leader in self.addresses:
                    order.insert(attempt, exc.leader)
                    continue
            except (errors.Unavailable, OSError, TimeoutError) as exc:
                last = exc
            await asyncio.sleep(min(0.2, max(0.0, deadline - loop.time())))
        raise errors.Unavailable(f"the meta group's leader could not be reached: {last}")

    async def publish(self, changes: list[Change], timeout: float = 5.0) -> Any:
        """Apply a map change at the meta leader: ``{"epoch"}``, or ``{"conflict", "error"}``."""
        return await self.to_leader({"op": "map_change", "changes": changes,
                                     "proof": proof(self.secret, changes)}, timeout)

    async def allocate(self, timeout: float = 5.0, count: int = 1) -> int:
        """The first of ``count`` new shard numbers, never handed out before."""
        return int(await self.to_leader({"op": "map_alloc", "count": count}, timeout))

    def close(self) -> None:
        """Close the connections."""
        for conn in self._conns.values():
            conn.abort()
        self._conns.clear()

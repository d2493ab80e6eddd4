"""A node joining a running cluster (``raftkv node --join ADDRS``): asked once, remembered for good.

On its first start the node asks any node of the cluster (``join``, forwarded to the
meta leader) to admit it.  The meta leader writes its node record and answers with
what the node needs to start like any other: the founders (their ids fix the initial
map and the meta group's first members on every node alike), their addresses, and
the shard count, replication factor and placement scheme.  The answer is kept in ``DATA/joined.json``,
so a restart needs no running cluster to know who it is; from then on the node
follows the node records like every node does (``members.py``).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import replace
from typing import Any

from .. import errors
from ..client import rpc
from ..routing.placement import HRW
from ..storage.leveldb import write_file_atomic
from . import maplink
from .config import NodeAddress, NodeConfig, format_hostport, parse_hostport

log = logging.getLogger(__name__)

JOINED_FILE = "joined.json"
RETRY_SECONDS = 1.0


def ask_to_join(seeds: str, me: NodeAddress, secret: bytes | None, timeout: float = 120.0) -> dict[str, Any]:
    """The cluster's answer to admitting ``me``; retried while the cluster is unavailable (its meta
    leader electing, say).  InvalidArgument as the cluster said it (e.g. the id is taken)."""
    client, peer = format_hostport(me.client), format_hostport(me.peer)
    request = {"node": {"id": me.id, "client": client, "peer": peer},
               "proof": maplink.proof(secret, ["join", me.id, client, peer])}
    deadline = time.monotonic() + timeout
    while True:
        try:
            return rpc.call_any(seeds, "join", timeout=10.0, **request)
        except errors.Unavailable as exc:
            if time.monotonic() >= deadline:
                raise errors.Unavailable(f"could not join the cluster at {seeds}: {exc}") from None
            log.info("waiting for the cluster at %s to admit node %s: %s", seeds, me.id, exc)
            time.sleep(RETRY_SECONDS)


def joined_config(config: NodeConfig, seeds: str) -> NodeConfig:
    """``config`` of a node started with ``--join``: the cluster's layout and founders, from the
    answer kept in the data directory, or asked for now (first start)."""
    os.makedirs(config.data_dir, exist_ok=True)
    path = os.path.join(config.data_dir, JOINED_FILE)
    if os.path.exists(path):
        with open(path) as f:
            answer = json.load(f)
    else:
        answer = ask_to_join(seeds, config.me(), config.secret)
        write_file_atomic(path, json.dumps(answer).encode())
    me = config.me()
    founders = [NodeAddress(d["id"], parse_hostport(d["client"]), parse_hostport(d["peer"]))
                for d in answer["founders"]]
    nodes = [n for n in founders if n.id != me.id] + [me]
    # an answer from a cluster made before copysets names no placement: that cluster's was HRW
    return replace(config, nodes=nodes, founders=[n.id for n in founders], shards=int(answer["shards"]),
                   replication=int(answer["replication"]), placement=str(answer.get("placement", HRW)))

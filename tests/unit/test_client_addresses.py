"""Advertised client addresses: the records that carry them and the client's choice among them.

A node may advertise several client addresses (``--advertise-client``), one per network it is
reached from.  Records carry them (``routing/nodes.py``), and a client picks per node the one that
works from where it runs (``client/addresses.py``, pure): the address the node answered at, else
the same host as an address another node answered at, else the same position, else the node's
order; an address that gave no answer goes last.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from raftkv.client.addresses import (
    after_failure,
    candidates,
    is_loopback,
    pin_cluster,
    preferred_order,
    same_cluster,
)
from raftkv.client.aio import AsyncClient, NodeConnection
from raftkv.errors import InvalidArgument, Unavailable
from raftkv.protocol.codec import NEED_DATA, FrameDecoder, encode
from raftkv.routing.nodes import MAX_ADVERTISED, NodeRecord, check_advertised
from raftkv.routing.shardmap import Shard, ShardMap
from raftkv.server.config import NodeConfig, check_data_dir, parse_nodes, recorded_layout
from raftkv.server.joining import JOINED_FILE, joined_config

pytestmark = pytest.mark.timeout(60)

# the docker-compose cluster: each node inside the compose network, and through the host's published port
COMPOSE = {f"n{i}": [f"n{i}:7400", f"127.0.0.1:740{i}"] for i in (1, 2, 3)}


# --- records ---------------------------------------------------------------------------------------

def test_a_record_without_advertised_addresses_is_unchanged_on_the_wire():
    r = NodeRecord("n1", "n1:7400", "n1:7500")
    assert r.to_dict() == {"id": "n1", "client": "n1:7400", "peer": "n1:7500", "state": "active", "version": 1}
    assert r.advertised == ("n1:7400",)


def test_a_record_carries_its_advertised_addresses_in_order():
    r = NodeRecord("n1", "n1:7400", "n1:7500", clients=("n1:7400", "127.0.0.1:7401"))
    assert r.to_dict()["clients"] == ["n1:7400", "127.0.0.1:7401"]
    assert NodeRecord.from_dict(r.to_dict()) == r
    assert r.advertised == ("n1:7400", "127.0.0.1:7401")
    # older records (no field) and a null read as "just the client address"
    assert NodeRecord.from_dict({**r.to_dict(), "clients": None}).advertised == ("n1:7400",)


@pytest.mark.parametrize("bad", [
    [], "n1:7400", ["n1"], ["n1:0"], ["n1:7400", "N1:7400"], [f"h:{7000 + i}" for i in range(MAX_ADVERTISED + 1)],
    ["n1:7500"],  # its own peer address
])
def test_malformed_advertised_addresses_are_refused(bad):
    d = {**NodeRecord("n1", "n1:7400", "n1:7500").to_dict(), "clients": bad}
    with pytest.raises(ValueError, match="n1"):
        NodeRecord.from_dict(d)


def test_check_advertised_keeps_the_order():
    assert check_advertised(["b:1", "a:2"]) == ("b:1", "a:2")


def test_the_node_option_is_checked_at_start(tmp_path):
    nodes = parse_nodes("n1=127.0.0.1:7401:7501")
    cfg = NodeConfig("n1", str(tmp_path), nodes, advertise_clients=("n1:7400", "127.0.0.1:7401"))
    assert cfg.advertise_clients == ("n1:7400", "127.0.0.1:7401")
    with pytest.raises(InvalidArgument, match="--advertise-client"):
        NodeConfig("n1", str(tmp_path), nodes, advertise_clients=("n1:7400", "n1:7400"))
    with pytest.raises(InvalidArgument, match="--advertise-client"):
        NodeConfig("n1", str(tmp_path), nodes, advertise_clients=("no-port",))


# --- the client's choice ----------------------------------------------------------------------------

def first(order: dict[str, list[str]]) -> dict[str, str]:
    return {nid: addrs[0] for nid, addrs in order.items()}


def test_a_host_client_with_one_published_seed_uses_every_node_published_address():
    # it asked 127.0.0.1:7401 for the map, and n1 answered: position 1 is the host's view
    assert first(preferred_order(COMPOSE, {"n1": "127.0.0.1:7401"})) == {
        "n1": "127.0.0.1:7401", "n2": "127.0.0.1:7402", "n3": "127.0.0.1:7403"}


def test_a_client_inside_the_compose_network_uses_the_service_names():
    assert first(preferred_order(COMPOSE, {"n2": "n2:7400"})) == {"n1": "n1:7400", "n2": "n2:7400", "n3": "n3:7400"}


def test_lists_written_in_different_orders_match_by_host():
    advertised = {"n1": ["n1:7400", "10.0.0.9:7401"], "n2": ["10.0.0.9:7402", "n2:7400"]}
    assert first(preferred_order(advertised, {"n1": "10.0.0.9:7401"}))["n2"] == "10.0.0.9:7402"


def test_nodes_with_hosts_of_their_own_match_by_position():
    # every node has its own public name: no host is shared, so position 1 is the public network
    advertised = {n: [f"{n}.internal:7400", f"{n}.example.com:443"] for n in ("n1", "n2")}
    assert first(preferred_order(advertised, {"n1": "n1.example.com:443"}))["n2"] == "n2.example.com:443"


def test_what_a_node_answered_at_comes_first_even_against_the_position_rule():
    order = preferred_order(COMPOSE, {"n1": "127.0.0.1:7401", "n3": "n3:7400"})
    assert order["n3"][0] == "n3:7400"
    assert order["n2"] == ["127.0.0.1:7402", "n2:7400"]  # both positions were reached: the host then decides


def test_a_seed_no_node_advertises_ranks_by_its_host_then_the_node_order():
    # a seed through a tunnel or a load balancer: nothing matches, so the node's own order
    assert first(preferred_order(COMPOSE, {"n1": "localhost:9000"})) == {n: a[0] for n, a in COMPOSE.items()}
    assert preferred_order({"n1": ["a:1"]}, {}) == {"n1": ["a:1"]}  # one address: nothing to choose


def test_failed_addresses_go_last_and_are_forgiven_when_all_failed():
    failed = after_failure(COMPOSE["n2"], set(), "n2:7400")
    assert failed == {"n2:7400"}
    assert preferred_order(COMPOSE, {}, failed)["n2"] == ["127.0.0.1:7402", "n2:7400"]
    # the other one fails too: it is the latest failure, so the first one is tried again next
    failed = after_failure(COMPOSE["n2"], failed, "127.0.0.1:7402")
    assert failed == {"127.0.0.1:7402"}
    assert preferred_order(COMPOSE, {}, failed)["n2"][0] == "n2:7400"
    # other nodes' failures are left alone
    assert after_failure(COMPOSE["n2"], {"n1:7400"}, "n2:7400") == {"n1:7400", "n2:7400"}


@pytest.mark.parametrize("address, loopback", [
    ("127.0.0.1:7401", True), ("127.9.9.9:1", True), ("localhost:7401", True), ("LocalHost:1", True),
    ("[::1]:7401", True), ("n1:7400", False), ("10.0.0.9:7401", False), ("server:7401", False),
    ("[2001:db8::1]:7401", False),
])
def test_loopback_addresses_are_recognised(address, loopback):
    assert is_loopback(address) is loopback


def test_a_client_that_reached_compose_by_a_remote_name_never_tries_the_loopback_addresses():
    """A client on another machine reached compose as ``server:7401`` (a seed no node advertises):
    127.0.0.1:7402 would lead to whatever that machine runs at 7402, so it is not a candidate."""
    order = preferred_order(COMPOSE, {"n1": "server:7401"}, loopback=False)
    assert order == {n: [f"{n}:7400"] for n in COMPOSE}
    # through a loopback seed the host's published ports are the ones (as before)
    assert first(preferred_order(COMPOSE, {"n1": "127.0.0.1:7401"}, loopback=True))["n2"] == "127.0.0.1:7402"


def test_positions_count_in_the_whole_list_when_loopback_addresses_are_left_out():
    advertised = {"n1": ["127.0.0.1:7401", "n1:7400", "n1.example.com:443"],
                  "n2": ["127.0.0.1:7402", "n2:7400", "n2.example.com:443"]}
    # n1 answered at position 2: n2's position 2, not its second remaining address
    assert preferred_order(advertised, {"n1": "n1.example.com:443"}, loopback=False)["n2"] == [
        "n2.example.com:443", "n2:7400"]


def test_a_node_with_loopback_addresses_only_keeps_them():
    assert candidates(["127.0.0.1:7401", "localhost:7401"], loopback=False) == ["127.0.0.1:7401", "localhost:7401"]
    assert candidates(["127.0.0.1:7401", "n1:7400"], loopback=False) == ["n1:7400"]
    assert candidates(["127.0.0.1:7401", "n1:7400"], loopback=True) == ["127.0.0.1:7401", "n1:7400"]


def test_the_first_cluster_named_is_pinned_and_another_refused():
    pinned = pin_cluster(None, "aaaa")
    assert pinned == "aaaa"
    assert pin_cluster(pinned, "bbbb") == "aaaa"  # the first one stays
    assert same_cluster(pinned, "aaaa")
    assert not same_cluster(pinned, "bbbb")
    assert same_cluster(None, "bbbb")  # nothing heard yet: anything goes (it becomes the pin)
    assert same_cluster(pinned, None)  # a node predating the field cannot be told apart
    assert pin_cluster(None, None) is None


def test_nodes_of_one_cluster_name_it_alike_and_another_layout_differently(tmp_path):
    founders = "n1=127.0.0.1:7401:7501,n2=127.0.0.1:7402:7502,n3=127.0.0.1:7403:7503"
    named = {NodeConfig(n, str(tmp_path), parse_nodes(founders)).cluster_name() for n in ("n1", "n2", "n3")}
    assert len(named) == 1
    # a node that joined later knows the founders' addresses and its own: it names the same cluster
    joined = NodeConfig("n4", str(tmp_path), parse_nodes(founders + ",n4=127.0.0.1:7404:7504"),
                        founders=["n1", "n2", "n3"])
    assert joined.cluster_name() in named
    # the compose cluster: the same ids and layout, other peer addresses
    compose = NodeConfig("n1", str(tmp_path), parse_nodes("n1=n1:7400:7500,n2=n2:7400:7500,n3=n3:7400:7500"))
    assert compose.cluster_name() not in named
    assert NodeConfig("n1", str(tmp_path), parse_nodes(founders), shards=4).cluster_name() not in named


# --- a real client against two stand-in nodes (real sockets on 127.0.0.1) ------------------------------

class StandInNode:
    """Answers ``hello`` (naming itself), ``map`` (one shard, led by n1) and ``get``, as a node does;
    ``advertised`` is filled in once both stand-ins listen."""

    def __init__(self, node_id: str, cluster: str | None = None, epoch: int = 1) -> None:
        self.id = node_id
        self.cluster = cluster  # named in hello and map replies when set (older nodes name none)
        self.epoch = epoch
        self.advertised: dict[str, list[str]] = {}
        self.gets = 0
        self.ops: list[str] = []
        self.server: asyncio.Server | None = None

    async def start(self) -> str:
        self.server = await asyncio.start_server(self.serve, "127.0.0.1", 0)
        return f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    def answer(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        self.ops.append(op)
        named = {} if self.cluster is None else {"cluster": self.cluster}
        if op == "hello":
            return {"ok": {"node": self.id, "token_required": False, **named}}
        if op == "map":
            smap = ShardMap(self.epoch, (Shard("s0", 0, 2**64, ("n1",)),))
            return {"ok": {"map": smap.to_dict(), "leaders": {"s0": "n1"}, "node": self.id, **named,
                           "nodes": {n: a[0] for n, a in self.advertised.items()}, "clients": self.advertised}}
        if op == "get" and self.id == "n1":
            self.gets += 1
            return {"ok": b"from n1"}
        return {"err": {"code": "not_leader", "message": f"{self.id} does not lead", "leader": "n1"}}

    async def serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        decoder = FrameDecoder()
        try:
            while data := await reader.read(65536):
                decoder.receive_data(data)
                while (req := decoder.next_message()) is not NEED_DATA:
                    writer.write(encode({"id": req["id"], **self.answer(req)}))
        finally:
            writer.close()


@pytest.mark.parametrize("wrong_host", ["127.0.0.1", "localhost"], ids=["already-open", "hello"])
def test_an_address_that_leads_to_another_node_is_skipped_for_the_next(wrong_host):
    """n1's first advertised address leads to n2 from here (as a loopback address does inside a
    container).  Either the client already has a connection there that n2 answered on (the seed),
    or the hello of a new one names n2: both ways it moves on to n1's next address and stays."""

    async def scenario() -> tuple[bytes | None, dict[str, str], int]:
        n1, n2 = StandInNode("n1"), StandInNode("n2")
        a1, a2 = await n1.start(), await n2.start()
        n1_by_name = a1.replace("127.0.0.1", "localhost")
        # position 0 is where the client reached n2 (its seed), so n1's position 0 is tried first
        advertised = {"n1": [a2.replace("127.0.0.1", wrong_host), n1_by_name], "n2": [a2]}
        n1.advertised = n2.advertised = advertised
        try:
            async with AsyncClient(a2, timeout=10) as db:  # seeded with n2: 127.0.0.1 ranks first for n1
                value = await db.get(5)
                return value, db.node_addresses(), n1.gets
        finally:
            for n in (n1, n2):
                assert n.server is not None
                n.server.close()

    value, chosen, gets = asyncio.run(scenario())
    assert value == b"from n1" and gets == 1
    assert chosen["n1"].startswith("localhost:")


def test_a_node_whose_addresses_all_fail_is_named_with_each_in_the_deadline_error():
    async def scenario() -> tuple[Unavailable, list[str]]:
        n2 = StandInNode("n2")
        a2 = await n2.start()
        # n1 is down: nothing listens at its addresses (ports of sockets closed at once)
        gone = []
        for _ in range(2):
            srv = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
            gone.append(f"127.0.0.1:{srv.sockets[0].getsockname()[1]}")
            srv.close()
            await srv.wait_closed()
        n2.advertised = {"n1": gone, "n2": [a2]}
        try:
            async with AsyncClient(a2, timeout=2) as db:
                with pytest.raises(Unavailable) as caught:
                    await db.get(5)
                return caught.value, gone
        finally:
            assert n2.server is not None
            n2.server.close()

    err, gone = asyncio.run(scenario())
    assert "shard s0 has no leader" in err.message
    # both of n1's addresses were tried (the client moved on from the first), each named as n1's
    assert all(f"n1 ({a})" in err.message for a in gone), err.message


def test_a_node_of_another_cluster_answering_with_the_right_id_is_refused():
    """n1's first advertised address leads, from here, to another cluster whose node is also called
    n1 (as 127.0.0.1:7402 does on a machine running its own ``raftkv up``), with a newer map.  Its
    hello names another cluster: the client never asks it for its map nor sends it the read; it
    moves on to n1's next address, the real n1, and keeps its own cluster's map."""

    async def scenario() -> tuple[bytes | None, int, dict[str, str], StandInNode]:
        n1, n2 = StandInNode("n1", "cluster-a"), StandInNode("n2", "cluster-a")
        other = StandInNode("n1", "cluster-b", epoch=99)
        a1, a2, elsewhere = await n1.start(), await n2.start(), await other.start()
        advertised = {"n1": [elsewhere, a1.replace("127.0.0.1", "localhost")], "n2": [a2]}
        n1.advertised = n2.advertised = other.advertised = advertised
        try:
            async with AsyncClient(a2, timeout=10) as db:  # seeded with n2: position 0 ranks first for n1
                value = await db.get(5)
                await db.connect()  # a refresh: the other cluster's newer map is still not taken
                assert db._map is not None
                return value, db._map.epoch, db.node_addresses(), other
        finally:
            for n in (n1, n2, other):
                assert n.server is not None
                n.server.close()

    value, epoch, chosen, other = asyncio.run(scenario())
    assert value == b"from n1"
    assert epoch == 1
    assert chosen["n1"].startswith("localhost:")
    assert other.ops == ["hello"] and other.gets == 0


def test_a_map_from_another_cluster_is_not_adopted():
    """A connection opened before the client knew its cluster (a second seed) that turns out to be
    another cluster's node: its map, newer or not, is refused and the client keeps its own."""

    async def scenario() -> tuple[int, StandInNode]:
        n1 = StandInNode("n1", "cluster-a")
        other = StandInNode("n1", "cluster-b", epoch=99)
        a1, elsewhere = await n1.start(), await other.start()
        n1.advertised = {"n1": [a1]}
        other.advertised = {"n1": [elsewhere]}
        try:
            db = AsyncClient(a1, timeout=2)
            try:
                await db.connect()
                # as if the other cluster's node had been a seed reached before the pin, without a hello
                db._conns[elsewhere] = conn = NodeConnection(elsewhere)
                await conn.open(2.0)
                db._nodes = {"n1": elsewhere}
                db._seeds = [elsewhere]
                with pytest.raises(Unavailable):
                    await db.connect()
                assert db._map is not None
                return db._map.epoch, other
            finally:
                await db.close()
        finally:
            for n in (n1, other):
                assert n.server is not None
                n.server.close()

    epoch, other = asyncio.run(scenario())
    assert epoch == 1
    # asked for its map once on the old connection; every later connection is refused at its hello
    assert other.ops[0] == "map" and set(other.ops[1:]) <= {"hello"}, other.ops


SIX = ",".join(f"n{i}=127.0.0.1:{7000 + i}:{7100 + i}" for i in range(1, 7))


def test_a_cluster_placed_by_hrw_keeps_the_identity_and_name_it_had_before_copysets(tmp_path):
    old = NodeConfig("n1", str(tmp_path), parse_nodes(SIX), placement="hrw")
    # what every data dir made before copysets recorded, and the name its clients pinned
    assert old.cluster_identity() == {"nodes": [f"n{i}" for i in range(1, 7)], "shards": 12, "replication": 3}
    assert old.cluster_name() == "d26469a314ffd1ee"
    new = NodeConfig("n1", str(tmp_path), parse_nodes(SIX))
    assert new.cluster_identity()["placement"] == "copysets"
    assert new.cluster_name() != old.cluster_name()
    with pytest.raises(InvalidArgument, match="unknown placement"):
        NodeConfig("n1", str(tmp_path), parse_nodes(SIX), placement="random")


def test_a_node_starts_with_the_layout_its_data_dir_was_made_with(tmp_path):
    assert recorded_layout(str(tmp_path / "new"), None, None) == (12, "copysets")
    assert recorded_layout(str(tmp_path / "new"), 4, "hrw") == (4, "hrw")
    # a data dir made before copysets: its identity names no scheme, so it stays HRW
    old = NodeConfig("n1", str(tmp_path / "old"), parse_nodes(SIX), shards=8, placement="hrw")
    check_data_dir(old)
    assert recorded_layout(old.data_dir, None, None) == (8, "hrw")
    made = NodeConfig("n1", str(tmp_path / "made"), parse_nodes(SIX))
    check_data_dir(made)
    assert recorded_layout(made.data_dir, None, None) == (12, "copysets")
    # a scheme given that contradicts the data dir: refused, the data dir unchanged
    with pytest.raises(InvalidArgument, match="belongs to cluster"):
        check_data_dir(NodeConfig("n1", old.data_dir, parse_nodes(SIX), shards=8, placement="copysets"))
    assert recorded_layout(old.data_dir, None, None) == (8, "hrw")


@pytest.mark.parametrize("scheme", [None, "hrw", "copysets"])
def test_a_node_that_joined_takes_the_placement_the_cluster_answered(tmp_path, scheme):
    # the answer a join kept (DATA/joined.json); a cluster made before copysets named no scheme
    founders = [{"id": f"n{i}", "client": f"127.0.0.1:{7000 + i}", "peer": f"127.0.0.1:{7100 + i}"}
                for i in range(1, 7)]
    answer = {"records": [], "founders": founders, "shards": 12, "replication": 3}
    if scheme is not None:
        answer["placement"] = scheme
    (tmp_path / JOINED_FILE).write_text(json.dumps(answer))
    me = NodeConfig("n7", str(tmp_path), parse_nodes("n7=127.0.0.1:7007:7107"))  # a new dir: copysets
    joined = joined_config(me, "127.0.0.1:1")  # the seeds are not asked: the answer is on disk
    assert joined.placement == (scheme or "hrw")
    founder = NodeConfig("n1", str(tmp_path), parse_nodes(SIX), placement=scheme or "hrw")
    assert joined.cluster_name() == founder.cluster_name()

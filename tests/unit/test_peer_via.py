"""``raftkv node --peer-via``: dial some peers at another address (the fault lab's proxies)."""

from __future__ import annotations

import pytest

from raftkv.cli import build_parser
from raftkv.errors import InvalidArgument
from raftkv.server.config import NodeConfig, format_peer_via, parse_nodes, parse_peer_via

NODES = "n1=127.0.0.1:7401:7501,n2=127.0.0.1:7402:7502,n3=127.0.0.1:7403:7503"


def test_parse_and_format_round_trip() -> None:
    via = parse_peer_via(" n2=127.0.0.1:9002, n3=localhost:9003 ,")
    assert via == {"n2": ("127.0.0.1", 9002), "n3": ("localhost", 9003)}
    assert parse_peer_via(format_peer_via(via)) == via
    assert parse_peer_via("") == {}


@pytest.mark.parametrize("bad", ["n2", "n2=", "=127.0.0.1:1", "n2=127.0.0.1", "n2=h:99999",
                                 "n2=h:1,n2=h:2"])
def test_malformed_peer_via_refused(bad: str) -> None:
    with pytest.raises(InvalidArgument):
        parse_peer_via(bad)


def test_dial_addresses_take_the_override_and_keep_the_rest() -> None:
    config = NodeConfig("n1", "/tmp/x", parse_nodes(NODES), peer_via={"n3": ("127.0.0.1", 9003)})
    assert config.peer_dial_addresses() == {"n1": ("127.0.0.1", 7501), "n2": ("127.0.0.1", 7502),
                                            "n3": ("127.0.0.1", 9003)}
    assert config.me().peer == ("127.0.0.1", 7501)  # where it listens is unchanged


def test_peer_via_naming_an_unknown_node_refused() -> None:
    with pytest.raises(InvalidArgument, match="n9"):
        NodeConfig("n1", "/tmp/x", parse_nodes(NODES), peer_via={"n9": ("127.0.0.1", 1)})


def test_node_command_takes_peer_via() -> None:
    args = build_parser().parse_args(["node", "--id", "n1", "--data-dir", "/tmp/x", "--nodes", NODES,
                                      "--peer-via", "n2=127.0.0.1:9002"])
    assert parse_peer_via(args.peer_via) == {"n2": ("127.0.0.1", 9002)}


def test_launcher_keeps_peer_via_in_cluster_json(tmp_path) -> None:
    import json

    from raftkv.cluster import launcher

    via = {"n1": {"n2": ("127.0.0.1", 9012)}, "n2": {"n1": ("127.0.0.1", 9021)}}
    info = launcher.ClusterInfo(str(tmp_path), tuple(parse_nodes(NODES)), 1, 3, {}, peer_via=via)
    (tmp_path / launcher.CLUSTER_FILE).write_text(json.dumps(info.to_json()))
    assert launcher.load(tmp_path).peer_via == via
    plain = launcher.ClusterInfo(str(tmp_path), tuple(parse_nodes(NODES)), 1, 3, {})
    assert "peer_via" not in plain.to_json()  # clusters without it keep their cluster.json as before

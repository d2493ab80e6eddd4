"""Mutual TLS on the peer port: two real PeerHubs on 127.0.0.1, driven from the test thread.

The hubs' sockets are non-blocking and selector-driven; a multi-megabyte frame makes the TLS
layer hand bytes over in pieces (partial sends, decrypted bytes left pending after a read).
"""

from __future__ import annotations

import selectors
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftkv.replication.transport import PeerHub, peer_tls_contexts

from ..e2e.test_auth_tls import make_ca, make_node_cert

pytestmark = [pytest.mark.timeout(60),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command line")]


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    good, rogue = tmp_path_factory.mktemp("good"), tmp_path_factory.mktemp("rogue")
    make_ca(good, "ca")
    make_node_cert(good, "ca")
    make_ca(rogue, "ca")  # another CA with the same name: its certificates must not pass
    make_node_cert(rogue, "ca")
    return {"good": good, "rogue": rogue}


class _Hub:
    def __init__(self, node_id: str, peers: dict[str, tuple[str, int]], certs: Path, trust: Path) -> None:
        self.sel = selectors.DefaultSelector()
        self.delivered: list[tuple[str, str, dict[str, Any]]] = []
        self.hub = PeerHub(node_id, ("127.0.0.1", 0), {node_id: ("127.0.0.1", 0), **peers}, self.sel,
                           lambda *m: self.delivered.append(m), lambda *a: None, secret=b"cluster-secret")
        self.hub.use_tls(*peer_tls_contexts(str(certs / "node.pem"), str(certs / "node.key"),
                                            str(trust / "ca.pem")))

    def turn(self) -> None:
        for key, mask in self.sel.select(0.01):
            key.data(mask)
        self.hub.maintain(time.monotonic())

    def close(self) -> None:
        self.hub.close()
        self.sel.close()


def pump(hubs: list[_Hub], until: Any, rounds: int = 3000) -> bool:
    for _ in range(rounds):
        for h in hubs:
            h.turn()
        if until():
            return True
    return False


@pytest.fixture
def pair(pki: dict[str, Path]) -> Iterator[tuple[_Hub, _Hub]]:
    good = pki["good"]
    receiver = _Hub("n2", {"n1": ("127.0.0.1", 9)}, good, good)
    sender = _Hub("n1", {"n2": receiver.hub.address}, good, good)
    yield sender, receiver
    sender.close()
    receiver.close()


def test_peers_link_over_mutual_tls_and_carry_large_frames(pair: tuple[_Hub, _Hub]) -> None:
    sender, receiver = pair
    assert pump([sender, receiver], lambda: sender.hub.is_up("n2")), "the TLS link never came up"
    big = {"type": "append_entries", "term": 1, "commit_index": 0, "prevLogIdx": 0, "prevLogTerm": 0,
           "entries": [[b"x" * (3 << 20), 1, 1]]}
    small = [{"type": "request_vote", "term": 2, "last_log_index": i, "last_log_term": 1} for i in range(50)]
    assert sender.hub.send("n2", "g1", big)
    for m in small:
        assert sender.hub.send("n2", "g2", m)
    sender.hub.release()
    assert pump([sender, receiver], lambda: len(receiver.delivered) == 51), \
        f"delivered {len(receiver.delivered)} of 51"
    assert receiver.delivered[0] == ("n1", "g1", big)
    assert [m for _, _, m in receiver.delivered[1:]] == small


def test_a_peer_with_a_certificate_from_another_ca_never_links(pki: dict[str, Path]) -> None:
    good, rogue = pki["good"], pki["rogue"]
    receiver = _Hub("n2", {"n1": ("127.0.0.1", 9)}, good, good)
    # the rogue trusts our CA, so it is the receiver's check of its certificate that stops it
    intruder = _Hub("n1", {"n2": receiver.hub.address}, rogue, good)
    try:
        # the intruder's side of TLS 1.3 may finish first, but the receiver refuses its certificate
        # and never sends the nonce: the intruder's link never comes up, and nothing is delivered
        assert not pump([intruder, receiver], lambda: intruder.hub.is_up("n2"), rounds=100)
        assert receiver.delivered == []
        assert receiver.hub.inbound_count[1] == 0  # no authenticated inbound link
    finally:
        intruder.close()
        receiver.close()

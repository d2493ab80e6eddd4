"""TLS on the client port and the client token, end to end: real node processes on 127.0.0.1.

One cluster (3 nodes, TLS and a token, certificates made here with the ``openssl`` command line)
serves every test of the module but the last, which runs one node with neither, bound to every
interface.  Refused clients must get a clear :class:`~raftkv.errors.Unauthenticated` and change
nothing; node-to-node calls (map polls, heartbeats, a split's map change) must keep working.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import ssl
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from raftkv import cli
from raftkv.client import rpc
from raftkv.client.aio import AsyncClient
from raftkv.client.sync import Client
from raftkv.cluster import launcher
from raftkv.errors import Unauthenticated
from raftkv.protocol.codec import NEED_DATA, FrameDecoder, encode
from raftkv.server.config import Credentials

from ..helpers import recv_message, signal_ours, wait_until

pytestmark = [pytest.mark.timeout(120),
              pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command line")]

TOKEN = "test-token-5b1f0c"


def _openssl(*args: str, cwd: Path) -> None:
    subprocess.run(["openssl", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def make_ca(d: Path, name: str) -> None:
    """A self-signed CA: ``name.pem`` and ``name.key`` in ``d``."""
    _openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", f"{name}.key", "-out", f"{name}.pem", "-days", "2", "-subj", f"/CN={name}",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign",
             cwd=d)


def make_node_cert(d: Path, ca: str) -> None:
    """``node.pem``/``node.key`` in ``d``, for 127.0.0.1 and localhost, signed by CA ``ca``."""
    _openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
             "-keyout", "node.key", "-out", "node.csr", "-subj", "/CN=127.0.0.1", cwd=d)
    (d / "ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n")
    _openssl("x509", "-req", "-in", "node.csr", "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
             "-out", "node.pem", "-days", "2", "-extfile", "ext", cwd=d)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    d = tmp_path_factory.mktemp("certs")
    make_ca(d, "ca")
    make_ca(d, "other-ca")  # trusted by nobody: a client that trusts only it must refuse the nodes
    make_node_cert(d, "ca")
    (d / "token").write_text(TOKEN + "\n")
    os.chmod(d / "token", 0o600)
    return d


@pytest.fixture(scope="module")
def secure(certs: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[launcher.ClusterInfo]:
    root = str(tmp_path_factory.mktemp("secure") / "cluster")
    security = {"tls_cert": str(certs / "node.pem"), "tls_key": str(certs / "node.key"),
                "tls_ca": str(certs / "ca.pem"), "client_token_file": str(certs / "token")}
    try:
        yield launcher.start(root, nodes=3, shards=2, wait=60, security=security)
    finally:
        try:
            launcher.stop(root, timeout=10)
        finally:
            signal_ours(None, root)


def good_client(info: launcher.ClusterInfo, certs: Path, **kw: Any) -> Client:
    return Client(info.seeds, token=TOKEN, tls_ca=str(certs / "ca.pem"), **kw)


def tls_socket(address: str, certs: Path) -> ssl.SSLSocket:
    host, port = address.rsplit(":", 1)
    ctx = ssl.create_default_context(cafile=str(certs / "ca.pem"))
    sock = ctx.wrap_socket(socket.create_connection((host, int(port)), timeout=10), server_hostname=host)
    sock.settimeout(10)
    return sock


def recv_messages(sock: ssl.SSLSocket, count: int) -> list[Any]:
    """The next ``count`` frames (one decoder: two replies may come in one read)."""
    decoder, out = FrameDecoder(), []
    while len(out) < count:
        while (msg := decoder.next_message()) is not NEED_DATA:
            out.append(msg)
        if len(out) < count:
            data = sock.recv(65536)
            assert data, f"the node hung up after {out}"
            decoder.receive_data(data)
    return out


def test_put_get_scan_over_tls_with_token(secure: launcher.ClusterInfo, certs: Path) -> None:
    with good_client(secure, certs) as db:
        db.put(10, b"ten")
        db.put_many([(11, b"eleven"), (2**63 + 5, b"far")])  # both initial shards
        assert db.get(10) == b"ten"
        assert list(db.scan(0, 2**64 - 1)) == [(10, b"ten"), (11, b"eleven"), (2**63 + 5, b"far")]
        assert db.delete(11)

    async def async_side() -> Any:
        async with AsyncClient(secure.seeds, token=TOKEN, tls_ca=str(certs / "ca.pem")) as adb:
            await adb.put(12, "twelve")
            return await adb.range_query(10, 12)

    assert asyncio.run(async_side()) == [(10, b"ten"), (12, b"twelve")]


def test_node_to_node_paths_work_with_tls_and_token(secure: launcher.ClusterInfo, certs: Path,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    # a split allocates a shard number and publishes the new records through the meta leader's
    # client port (maplink): with TLS and the token, node to node
    assert cli.main(["cluster", "split", "--data-dir", secure.data_dir, "--shard", "s0000", "--at", "1000"]) == 0
    assert "s0000" in capsys.readouterr().out
    with good_client(secure, certs) as db:
        db.put(999, b"left")
        db.put(1000, b"right")
        assert db.range_query(999, 1000) == [(999, b"left"), (1000, b"right")]
        assert len(db.shard_map().shards) == 3

    # the launcher's own calls (status, map) present the stored token and TLS ...
    def healthy() -> bool:
        st = launcher.status(secure.data_dir)
        return all(n["state"] == "up" for n in st["nodes"]) and all(s["leader"] for s in st["shards"])

    wait_until(healthy, 30, "every node up and every shard led, as the launcher sees it")
    # ... and so does `raftkv cluster status`; the nodes follow each other's map (map polls)
    assert cli.main(["cluster", "status", "--data-dir", secure.data_dir, "--json"]) == 0
    capsys.readouterr()
    for address in secure.addresses:
        wait_until(lambda a=address: len(rpc.call(a, "map", timeout=5)["map"]["shards"]) == 3, 30,
                   f"{address} to know the split")


def test_shell_connects_with_token_file_and_ca(secure: launcher.ClusterInfo, certs: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    with good_client(secure, certs) as db:
        db.put(77, b"shell")
    code = cli.main(["shell", "--connect", secure.seeds, "--token-file", str(certs / "token"),
                     "--tls-ca", str(certs / "ca.pem"), "--format", "csv", "--no-timing",
                     "-e", "SELECT * FROM kv WHERE key = 77"])
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "77" in out.out and "shell" in out.out


@pytest.mark.parametrize("options, says", [
    ({"tls_ca": "ca"}, "wants a client token"),
    ({"tls_ca": "ca", "token": "not-the-token"}, "wrong client token"),
    ({"tls_ca": "other-ca", "token": TOKEN}, "certificate verify failed"),
], ids=["no-token", "wrong-token", "wrong-ca"])
def test_refused_clients_get_a_clear_error_and_change_nothing(secure: launcher.ClusterInfo, certs: Path,
                                                              options: dict[str, str], says: str) -> None:
    options = {**options, "tls_ca": str(certs / f"{options['tls_ca']}.pem")}
    key = 5000 + len(says)
    db = Client(secure.seeds, timeout=20, **options)
    try:
        with pytest.raises(Unauthenticated) as refused:
            db.put(key, b"must not be written")
    finally:
        db.close()
    assert says in refused.value.message
    assert refused.value.code == "unauthenticated"
    with good_client(secure, certs) as db:
        assert db.get(key) is None
    # the tooling path says the same
    with pytest.raises(Unauthenticated, match=says):
        rpc.call(secure.addresses[0], "put", timeout=10, credentials=Credentials(**options),
                 shard="s0000", pairs=[[key, b"x"]])


@pytest.mark.parametrize("token", [TOKEN, None], ids=["hello-first", "request-first"])
def test_a_plaintext_client_is_told_the_node_expects_tls(secure: launcher.ClusterInfo, certs: Path,
                                                         token: str | None) -> None:
    """A TLS port hangs up on plaintext without a word; the client asks it in TLS and says so,
    naming the address, at once (Unauthenticated is not retried: a setting to fix)."""
    address = secure.addresses[0]
    db = Client(address, timeout=20, token=token)
    try:
        with pytest.raises(Unauthenticated) as refused:
            db.put(7001, b"must not be written")
    finally:
        db.close()
    assert f"{address} expects TLS" in refused.value.message
    assert "tls_ca" in refused.value.message  # and what to do about it
    with good_client(secure, certs) as db:
        assert db.get(7001) is None


def test_request_before_hello_is_refused_and_connection_closed(secure: launcher.ClusterInfo, certs: Path) -> None:
    address = secure.addresses[0]
    with tls_socket(address, certs) as sock:
        sock.sendall(encode({"id": 7, "op": "put", "shard": "s0000", "pairs": [[6001, b"x"]]}))
        reply = recv_message(sock)
        assert reply["id"] == 7 and reply["err"]["code"] == "unauthenticated"
        assert "hello" in reply["err"]["message"]
        assert recv_message(sock) is None  # and the node hung up
    # a wrong hello with a write pipelined behind it: one error frame, and the write never runs
    with tls_socket(address, certs) as sock:
        sock.sendall(encode({"id": 1, "op": "hello", "token": "guess"})
                     + encode({"id": 2, "op": "put", "shard": "s0000", "pairs": [[6002, b"x"]]}))
        reply = recv_message(sock)
        assert reply["id"] == 1 and reply["err"]["code"] == "unauthenticated"
        assert recv_message(sock) is None
    with good_client(secure, certs) as db:
        assert db.get(6001) is None and db.get(6002) is None


def test_hello_then_pipelined_requests(secure: launcher.ClusterInfo, certs: Path) -> None:
    with tls_socket(secure.addresses[1], certs) as sock:
        sock.sendall(encode({"id": 1, "op": "hello", "token": TOKEN}) + encode({"id": 2, "op": "map"}))
        hello, answer = recv_messages(sock, 2)
        named = hello["ok"].pop("cluster")
        assert hello == {"id": 1, "ok": {"node": "n2", "token_required": True}}
        assert answer["id"] == 2 and "map" in answer["ok"]
        # both name the cluster, alike: a hash of its layout (client/addresses.py), nothing secret
        assert answer["ok"]["cluster"] == named and re.fullmatch(r"[0-9a-f]{16}", named)


def _peer_hello(address: tuple[str, int], ctx: ssl.SSLContext | None) -> Any:
    """What a node's peer port says first to a dialer (its nonce), or None if it hangs up or the
    TLS handshake fails."""
    raw = socket.create_connection(address, timeout=10)
    try:
        sock = ctx.wrap_socket(raw) if ctx is not None else raw
        sock.settimeout(10)
        if ctx is None:  # a plain dialer speaks first, so the node's TLS layer has something to refuse
            sock.sendall(encode({"id": "n9", "mac": b""}))
        return recv_message(sock)
    except (ssl.SSLError, ConnectionError):
        return None
    finally:
        raw.close()


def test_peer_port_wants_a_cluster_certificate(secure: launcher.ClusterInfo, certs: Path) -> None:
    """The launcher's TLS clusters run ``--peer-tls``: the peer port is mutual TLS."""
    def context(with_cert: bool) -> ssl.SSLContext:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.load_verify_locations(str(certs / "ca.pem"))
        if with_cert:
            ctx.load_cert_chain(str(certs / "node.pem"), str(certs / "node.key"))
        return ctx

    peer = secure.nodes[0].peer
    hello = _peer_hello(peer, context(with_cert=True))
    assert isinstance(hello, dict) and isinstance(hello.get("nonce"), bytes)  # then the HMAC hello, as ever
    assert _peer_hello(peer, context(with_cert=False)) is None
    assert _peer_hello(peer, None) is None


def test_a_node_joins_with_tls_and_token(secure: launcher.ClusterInfo, certs: Path) -> None:
    """``add-node``: the newcomer asks to join over a node's client port (TLS, token), then takes
    part in heartbeats and map polls like the others."""
    new_id = launcher.add_node(secure.data_dir, wait=60)
    assert new_id in launcher.member_records(secure.seeds)
    address = launcher.load(secure.data_dir).addresses[-1]
    assert rpc.call(address, "status", timeout=10)["node"] == new_id
    with Client(address, token=TOKEN, tls_ca=str(certs / "ca.pem")) as db:
        assert db.get(10) == b"ten"


def test_open_node_warns_and_accepts_hello(tmp_path: Path) -> None:
    """A node without TLS or token, bound to every interface, says so in its log; a client
    configured with a token still works with it (hello succeeds on a node without one)."""
    cport, pport = launcher.free_ports(2)
    log = tmp_path / "node.log"
    argv = [sys.executable, "-m", "raftkv", "node", "--id", "n1", "--data-dir", str(tmp_path / "n1"),
            "--nodes", f"n1=127.0.0.1:{cport}:{pport}", "--shards", "1", "--replication", "1",
            "--bind", "0.0.0.0"]
    with open(log, "wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        address = f"127.0.0.1:{cport}"
        wait_until(lambda: rpc.call(address, "map", timeout=1, credentials=Credentials()), 30, "the node to serve")
        assert "without TLS or a client token" in log.read_text()
        with Client(address, token="any-token-will-do", timeout=20) as db:
            db.put(1, b"one")
            assert db.get(1) == b"one"
        # the other way round: a TLS client at a plaintext port is told the node does not speak TLS
        with pytest.raises(Unauthenticated, match=f"TLS handshake with {address} failed.*does not speak TLS"):
            with Client(address, tls=True, timeout=20) as db:
                db.get(1)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

"""The link proxy with real sockets on loopback: bytes flow; after cut they don't; after heal they do again."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator

import pytest

from tests.lab.proxy import LinkProxy

pytestmark = pytest.mark.timeout(30)


class EchoServer:
    """Echoes every byte back; counts what it received."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.received = 0
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def address(self) -> tuple[str, int]:
        return self.sock.getsockname()[:2]

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self._conns.append(conn)
            threading.Thread(target=self._echo, args=(conn,), daemon=True).start()

    def _echo(self, conn: socket.socket) -> None:
        try:
            while data := conn.recv(4096):
                self.received += len(data)
                conn.sendall(data)
        except OSError:
            pass

    def close(self) -> None:
        # shutdown first: the accept thread, blocked in accept(), keeps a merely closed listener
        # accepting (and echoing), so "target down" would not be down
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()
        for c in self._conns:
            c.close()


@pytest.fixture
def echo() -> Iterator[EchoServer]:
    server = EchoServer()
    yield server
    server.close()


@pytest.fixture
def proxy(echo: EchoServer) -> Iterator[LinkProxy]:
    with LinkProxy(echo.address, name="test") as p:
        yield p


def dial(proxy: LinkProxy) -> socket.socket:
    s = socket.create_connection(proxy.address, timeout=5)
    s.settimeout(5)
    return s


def roundtrip(sock: socket.socket, payload: bytes) -> bytes:
    sock.sendall(payload)
    got = b""
    while len(got) < len(payload):
        chunk = sock.recv(65536)
        if not chunk:
            break
        got += chunk
    return got


def closed_by_peer(sock: socket.socket) -> bool:
    """Whether the other end closed ``sock`` (EOF or reset), waiting up to its timeout."""
    try:
        return sock.recv(1) == b""
    except ConnectionResetError:
        return True
    except TimeoutError:
        return False


def test_bytes_flow_through(proxy: LinkProxy) -> None:
    with dial(proxy) as s:
        assert roundtrip(s, b"hello") == b"hello"
        big = bytes(range(256)) * 4096  # 1 MiB, both ways
        assert roundtrip(s, big) == big


def test_reset_cut_closes_live_links_and_refuses_new_ones_until_healed(proxy: LinkProxy, echo: EchoServer) -> None:
    live = dial(proxy)
    assert roundtrip(live, b"before") == b"before"
    proxy.cut("reset")
    assert proxy.is_cut
    assert closed_by_peer(live)
    live.close()
    with dial(proxy) as again:  # TCP connects (we listen) but the link is closed at once
        assert closed_by_peer(again)
    received = echo.received
    proxy.heal()
    assert not proxy.is_cut
    with dial(proxy) as healed:
        assert roundtrip(healed, b"after") == b"after"
    assert echo.received == received + len(b"after")


def test_blackhole_drops_bytes_silently_and_heal_restarts_the_links(proxy: LinkProxy, echo: EchoServer) -> None:
    live = dial(proxy)
    assert roundtrip(live, b"x") == b"x"
    received = echo.received
    proxy.cut("blackhole")
    live.settimeout(0.5)
    live.sendall(b"lost")  # accepted by the proxy, never delivered
    with pytest.raises(TimeoutError):
        live.recv(10)
    newcomer = dial(proxy)
    newcomer.settimeout(0.5)
    newcomer.sendall(b"also lost")
    with pytest.raises(TimeoutError):
        newcomer.recv(10)
    assert echo.received == received
    proxy.heal()
    live.settimeout(5)
    newcomer.settimeout(5)
    # the streams had holes: both are closed so that their ends start over
    assert closed_by_peer(live)
    assert closed_by_peer(newcomer)
    live.close()
    newcomer.close()
    with dial(proxy) as fresh:
        assert roundtrip(fresh, b"flows again") == b"flows again"


def test_target_down_closes_the_dialer(echo: EchoServer) -> None:
    address = echo.address
    echo.close()
    with LinkProxy(address) as p, dial(p) as s:
        assert closed_by_peer(s)


def test_bad_mode_refused(proxy: LinkProxy) -> None:
    with pytest.raises(ValueError):
        proxy.cut("sideways")

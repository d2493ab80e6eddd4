"""A client connection's request slots: bounded by count and by the bytes the requests hold.

These drive the bookkeeping of ``_ClientConnection`` over a real loopback connection; the node
admits every request through it (``Node._admit``), and the reader waits while it waits.
"""

from __future__ import annotations

import asyncio
import socket

import pytest

from raftkv.protocol.codec import encode
from raftkv.server.node import REPLY_BURST, ClientLimits, _ClientConnection, _ConnectionClosing

pytestmark = pytest.mark.timeout(30)

MiB = 1 << 20


async def _turns(n: int = 20) -> None:
    """Let the event loop run whatever is ready, a few times over."""
    for _ in range(n):
        await asyncio.sleep(0)


async def _with_connection(limits: ClientLimits, body) -> None:
    accepted: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result(writer)

    server = await asyncio.start_server(on_client, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    _, client_writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer = await accepted
        await body(_ClientConnection(writer, limits))
        writer.close()
    finally:
        client_writer.close()
        server.close()
        await server.wait_closed()


def test_requests_wait_for_bytes_and_take_what_is_freed() -> None:
    async def body(conn: _ClientConnection) -> None:
        await conn.take_slot(MiB)
        await conn.take_slot(MiB)
        third = asyncio.ensure_future(conn.take_slot(2 * MiB))  # 4 MiB > 3 MiB: waits
        await _turns()
        assert not third.done()
        assert (conn.inflight_count, conn.request_bytes) == (2, 2 * MiB)
        conn.free_slot(MiB)  # 3 MiB now fit
        await _turns()
        assert third.done() and third.exception() is None
        assert (conn.inflight_count, conn.request_bytes) == (2, 3 * MiB)
        conn.free_slot(MiB)
        conn.free_slot(2 * MiB)
        assert (conn.inflight_count, conn.request_bytes) == (0, 0)

    asyncio.run(_with_connection(ClientLimits(max_request_bytes=3 * MiB), body))


def test_a_request_over_the_byte_budget_is_taken_alone() -> None:
    async def body(conn: _ClientConnection) -> None:
        await conn.take_slot(100)
        big = asyncio.ensure_future(conn.take_slot(5 * MiB))
        await _turns()
        assert not big.done()  # not beside another request
        conn.free_slot(100)
        await _turns()
        assert big.done() and big.exception() is None  # but alone, or it could never be answered
        assert conn.request_bytes == 5 * MiB

    asyncio.run(_with_connection(ClientLimits(max_request_bytes=MiB), body))


def test_the_count_bounds_small_requests() -> None:
    async def body(conn: _ClientConnection) -> None:
        for _ in range(4):
            await conn.take_slot(10)
        fifth = asyncio.ensure_future(conn.take_slot(10))
        await _turns()
        assert not fifth.done()
        conn.free_slot(10)
        await _turns()
        assert fifth.done() and conn.inflight_count == 4

    asyncio.run(_with_connection(ClientLimits(max_inflight=4), body))


def test_closing_wakes_a_waiter_and_returns_its_slot() -> None:
    async def body(conn: _ClientConnection) -> None:
        await conn.take_slot(MiB)
        waiter = asyncio.ensure_future(conn.take_slot(MiB))
        await _turns()
        assert not waiter.done()
        conn.close()
        await _turns()
        assert waiter.done() and isinstance(waiter.exception(), _ConnectionClosing)
        assert (conn.inflight_count, conn.request_bytes) == (1, MiB)  # only the request it holds
        conn.free_slot(MiB)
        await asyncio.wait_for(conn.inflight.acquire(), 1)  # every count slot came back
        assert conn.inflight._value == 1

    asyncio.run(_with_connection(ClientLimits(max_inflight=2, max_request_bytes=MiB), body))


def test_a_waiter_cancelled_gives_its_count_slot_back() -> None:
    async def body(conn: _ClientConnection) -> None:
        await conn.take_slot(MiB)
        waiter = asyncio.ensure_future(conn.take_slot(MiB))
        await _turns()
        waiter.cancel()
        await _turns()
        assert waiter.cancelled()
        assert (conn.inflight_count, conn.request_bytes) == (1, MiB)
        assert conn.inflight._value == 1  # of 2: only the request it holds took one

    asyncio.run(_with_connection(ClientLimits(max_inflight=2, max_request_bytes=MiB), body))


def test_replies_of_one_turn_leave_in_bursts() -> None:
    """Replies queued in one loop turn with ``burst`` (gets answered on arrival) are written every
    REPLY_BURST frames, the rest at the turn's end: the client can decode the first burst while
    the node computes the next.  Without it (puts) the whole turn leaves in one write."""
    async def main() -> None:
        accepted: asyncio.Future = asyncio.get_running_loop().create_future()

        async def on_client(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted.set_result(writer)

        server = await asyncio.start_server(on_client, "127.0.0.1", 0)
        client = socket.create_connection(server.sockets[0].getsockname()[:2], timeout=5)
        client.setblocking(True)  # MSG_DONTWAIT then raises at once when nothing waits
        try:
            conn = _ClientConnection(await accepted, ClientLimits())
            frames = [encode({"id": i, "ok": i}) for i in range(2 * REPLY_BURST + 3)]
            for frame in frames:  # one turn: nothing awaited in between
                conn.charge(frame)
                assert conn.queue(frame, burst=True)
            early = _received(client)
            assert early == frames[:2 * REPLY_BURST]  # two bursts already left, the rest waits
            await _turns()
            assert _received(client) == frames[2 * REPLY_BURST:]  # the turn's end wrote the rest
            for frame in frames:
                conn.charge(frame)
                assert conn.queue(frame)
            assert _received(client) == []  # not a burst: all of it at the turn's end
            await _turns()
            assert _received(client) == frames
            conn.close()
        finally:
            client.close()
            server.close()
            await server.wait_closed()

    asyncio.run(main())


def _received(s: socket.socket) -> list[bytes]:
    """The whole frames waiting in ``s`` now, without blocking."""
    data = b""
    while True:
        try:
            chunk = s.recv(1 << 20, socket.MSG_DONTWAIT)
        except BlockingIOError:
            break
        if not chunk:
            break
        data += chunk
    frames = []
    while data:
        n = 4 + int.from_bytes(data[:4], "big")
        frames.append(data[:n])
        data = data[n:]
    return frames
